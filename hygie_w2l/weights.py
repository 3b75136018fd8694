"""Weights manager: download (resumable, verified, mirror by mirror), import, verify, list.

The committed ``checkpoints/manifest.json`` names each file with its exact byte size, its
SHA-256, its role and an ordered list of mirrors. Nothing is kept unless both match: a file
whose hash differs is refused, whatever its name or source. Files land in ``checkpoints/``
atomically (``.part`` file, then rename), so an interrupted download resumes with an HTTP
Range request and never leaves a half file under the final name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from hygie_w2l.atomic import atomic_path
from hygie_w2l.errors import HygieError

CHECKPOINTS_DIR = Path("checkpoints")  # official weights: downloaded, imported, looked up
DEFAULT_MANIFEST = CHECKPOINTS_DIR / "manifest.json"


# The official files the code looks for by name (the manifest lists them all).
EXPERT_FILE = "lipsync_expert.pth"  # SyncNet_color, the lip-sync expert
DISC_FILE = "visual_quality_disc.pth"  # Wav2Lip_disc_qual
SYNCNET_V2_FILE = "syncnet_v2.model"  # SyncNet v2 of the LSE-D/LSE-C evaluation


def official_path(name: str) -> Path:
    """Where an official weight file lives (``checkpoints/NAME``)."""
    return CHECKPOINTS_DIR / name


LICENSE_ENV = "HYGIE_ACCEPT_WEIGHTS_LICENSE"
LICENSE_MARKER = ".license-accepted"
CHUNK_BYTES = 1 << 20
TERMS = (
    "The Wav2Lip weights (wav2lip.pth, wav2lip_gan.pth, lipsync_expert.pth, "
    "visual_quality_disc.pth) are released for personal, research and non-commercial use "
    "only; they were trained on LRS2. Use them only on footage of people who consented. "
    "See third_party/WAV2LIP_NOTICE.md.")


class WeightsError(HygieError):
    pass


@dataclasses.dataclass(frozen=True)
class WeightFile:
    name: str
    bytes: int
    sha256: str
    role: str
    architecture: str
    mirrors: tuple[str, ...]


def load_manifest(path: str | Path = DEFAULT_MANIFEST) -> list[WeightFile]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: manifest not found. Run from the project folder or pass "
                           "--manifest checkpoints/manifest.json.")
    from hygie_w2l.storage import read_json

    fix = "Restore it from the project (git checkout checkpoints/manifest.json)."
    entries = read_json(path, {"files": list}, "weights manifest", fix)["files"]
    try:
        return [WeightFile(e["name"], int(e["bytes"]), e["sha256"].lower(), e["role"],
                           e["architecture"], tuple(e["mirrors"])) for e in entries]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WeightsError(f"{path}: a damaged weights manifest ({exc!r}). {fix}") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, spec: WeightFile) -> str | None:
    """None when ``path`` has the manifest's size and hash, else what is wrong."""
    if not path.is_file():
        return "absent"
    size = path.stat().st_size
    if size != spec.bytes:
        return f"size {size} bytes, expected {spec.bytes}"
    digest = sha256_of(path)
    if digest != spec.sha256:
        return f"SHA-256 {digest[:12]}..., expected {spec.sha256[:12]}..."
    return None


# ------------------------------------------------------------------------- licence ----

def license_accepted(dest: Path, flag: bool) -> bool:
    return flag or os.environ.get(LICENSE_ENV) == "1" or (dest / LICENSE_MARKER).exists()


def require_license(dest: Path, flag: bool) -> None:
    """Print the terms; refuse until they are accepted once (flag, variable or marker file)."""
    print(f"Terms: {TERMS}")
    if not license_accepted(dest, flag):
        raise WeightsError("the weights' non-commercial terms above must be accepted first: "
                           f"add --accept-license or set {LICENSE_ENV}=1.")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / LICENSE_MARKER).write_text("accepted\n")


# ----------------------------------------------------------------------- transport ----

def _http_fetch(url: str, part: Path, total: int, timeout_s: float) -> None:
    """Download ``url`` into ``part``, resuming from its current size with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    if have >= total:
        return  # complete already; the caller verifies it
    request = urllib.request.Request(url, headers={"User-Agent": "hygie-w2l"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if have and response.status != 206:  # the server ignored Range: start again
            have = 0
        with part.open("ab" if have else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=part.name[1:-5],
                leave=False, disable=None) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    got = part.stat().st_size
    if got < total:  # http.client returns b"" on a cut connection instead of raising
        raise ConnectionError(f"connection closed after {got} of {total} bytes")


def _gdrive_fetch(mirror: str, part: Path, timeout_s: float) -> None:
    """``gdrive:FILE_ID`` or ``gdrive-folder:FOLDER_ID/NAME`` through gdown."""
    import gdown

    kind, _, ref = mirror.partition(":")
    if kind == "gdrive":
        if gdown.download(id=ref, output=str(part), quiet=True, resume=True) is None:
            raise OSError("Google Drive refused the download")
        return
    folder, _, name = ref.partition("/")
    with tempfile.TemporaryDirectory() as tmp:
        files = gdown.download_folder(id=folder, output=tmp, quiet=True) or []
        match = [f for f in files if Path(f).name == name]
        if not match:
            raise OSError(f"{name} not in Google Drive folder {folder}")
        shutil.move(match[0], part)


def fetch(mirror: str, part: Path, total: int, timeout_s: float) -> None:
    if mirror.startswith("gdrive"):
        _gdrive_fetch(mirror, part, timeout_s)
    else:
        _http_fetch(mirror, part, total, timeout_s)


# URLError, timeouts and resets are OSErrors; a cut body is an http.client.IncompleteRead.
TRANSIENT = (OSError, http.client.HTTPException)


def _try_mirror(spec: WeightFile, mirror: str, part: Path, timeout_s: float, tries: int,
                log: list[str]) -> bool:
    """Up to ``tries`` attempts on one mirror, resuming; True when the part file verifies."""
    for attempt in range(1, tries + 1):
        try:
            fetch(mirror, part, spec.bytes, timeout_s)
        except TRANSIENT as exc:
            log.append(f"{mirror}: {type(exc).__name__}: {exc} (attempt {attempt})")
            if not part.exists() or part.stat().st_size == 0:
                return False  # nothing came: the mirror is unreachable, try the next one
            continue  # something came before the cut: resume from it
        problem = verify_file(part, spec)
        if problem is None:
            return True
        log.append(f"{mirror}: refused, {problem}")
        part.unlink(missing_ok=True)
        return False
    return False


def download_one(spec: WeightFile, dest: Path, timeout_s: float = 20.0,
                 tries_per_mirror: int = 3) -> Path:
    """Fetch one file into ``dest``, mirror after mirror, verifying size and SHA-256."""
    final = dest / spec.name
    if verify_file(final, spec) is None:
        print(f"ok       {spec.name} (already present, verified)")
        return final
    part = dest / f".{spec.name}.part"
    log: list[str] = []
    for mirror in spec.mirrors:
        if _try_mirror(spec, mirror, part, timeout_s, tries_per_mirror, log):
            with atomic_path(final) as tmp:
                os.replace(part, tmp)
            print(f"ok       {spec.name} from {mirror}")
            return final
    raise WeightsError(_failure_message(spec, dest, log))


def _failure_message(spec: WeightFile, dest: Path, log: list[str]) -> str:
    tried = "\n".join(f"  - {line}" for line in log) or "  (no mirror listed)"
    return (f"{spec.name}: no mirror gave a verified copy ({spec.bytes} bytes, SHA-256 "
            f"{spec.sha256}).\nTried:\n{tried}\nOffline? Download it by hand from one of "
            f"{', '.join(spec.mirrors)} on a connected machine, then run "
            f"`hygie-w2l weights import FOLDER` (it verifies and copies into {dest}/).")


def download(specs: Iterable[WeightFile], dest: Path, accept_license: bool = False,
             timeout_s: float = 20.0) -> list[Path]:
    """Download every file; all failures are reported together at the end."""
    require_license(dest, accept_license)
    done, failures = [], []
    for spec in specs:
        try:
            done.append(download_one(spec, dest, timeout_s))
        except WeightsError as exc:
            failures.append(str(exc))
    if failures:
        raise WeightsError("\n\n".join(failures))
    return done


def import_folder(folder: Path, specs: Iterable[WeightFile], dest: Path) -> list[Path]:
    """Verify and copy files a user downloaded by hand (found by name, or by size and hash)."""
    if not folder.is_dir():
        raise WeightsError(f"{folder}: not a folder. Give the folder holding the .pth files.")
    candidates = [p for p in folder.rglob("*") if p.is_file()]
    imported = []
    for spec in specs:
        by_size = [p for p in candidates if p.stat().st_size == spec.bytes]
        match = next((p for p in by_size if sha256_of(p) == spec.sha256), None)
        if match is None:
            named = folder / spec.name
            if named.exists():
                print(f"REFUSED  {named}: {verify_file(named, spec)}")
            continue
        with atomic_path(dest / spec.name) as tmp:
            shutil.copyfile(match, tmp)
        print(f"imported {match} -> {dest / spec.name}")
        imported.append(dest / spec.name)
    if not imported:
        raise WeightsError(f"{folder}: no file there matches the manifest's sizes and hashes.")
    return imported


def status_table(specs: Iterable[WeightFile], dest: Path, check_hash: bool) -> list[str]:
    rows = []
    for spec in specs:
        path = dest / spec.name
        if not path.exists():
            state = "absent"
        elif check_hash:
            problem = verify_file(path, spec)
            state = "verified" if problem is None else f"BAD ({problem})"
        else:
            state = "present"
        rows.append(f"{spec.name:26s}{spec.bytes / 1e6:8.1f} MB  {spec.role:14s}{state}")
    return rows
