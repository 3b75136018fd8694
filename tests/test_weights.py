"""The real download code against a real HTTP server on 127.0.0.1: Range resume, a slow, a
failing and a corrupting mirror, atomic results, import and verify."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from hygie_w2l import weights
from tests.conftest import run_cli

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    ranges: list[str] = []
    cut_once: set[str] = set()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        kind = self.path.split("/")[1]
        if kind == "fail":
            self.send_error(500)
            return
        if kind == "slow":
            time.sleep(3)
        body = PAYLOAD if kind != "corrupt" else bytes(reversed(PAYLOAD))
        start = 0
        header = self.headers.get("Range")
        if header and kind == "good":
            Handler.ranges.append(header)
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if kind == "good" and self.path not in Handler.cut_once and not header:
            Handler.cut_once.add(self.path)  # the first attempt is cut in the middle
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.ranges, Handler.cut_once = [], set()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _manifest(tmp_path: Path, mirrors: list[str], name: str = "w.pth") -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"files": [{
        "name": name, "bytes": len(PAYLOAD), "sha256": SHA, "role": "generator",
        "architecture": "Wav2Lip", "mirrors": mirrors}]}))
    return path


def test_resumes_after_a_cut_and_skips_bad_mirrors(tmp_path: Path, server: str) -> None:
    manifest = _manifest(tmp_path, [f"{server}/fail/w.pth", f"{server}/corrupt/w.pth",
                                    f"{server}/slow/w.pth", f"{server}/good/w.pth"])
    dest = tmp_path / "ckpt"
    specs = weights.load_manifest(manifest)
    paths = weights.download(specs, dest, accept_license=True, timeout_s=1.0)
    assert paths == [dest / "w.pth"] and (dest / "w.pth").read_bytes() == PAYLOAD
    assert Handler.ranges == [f"bytes={len(PAYLOAD) // 2}-"]  # resumed, not restarted
    assert sorted(p.name for p in dest.iterdir()) == [weights.LICENSE_MARKER, "w.pth"]


def test_a_corrupted_copy_is_refused(tmp_path: Path, server: str) -> None:
    manifest = _manifest(tmp_path, [f"{server}/corrupt/w.pth"])
    with pytest.raises(weights.WeightsError, match="refused, SHA-256") as info:
        weights.download(weights.load_manifest(manifest), tmp_path, accept_license=True)
    assert "weights import" in str(info.value)
    assert not (tmp_path / "w.pth").exists()
    assert not list(tmp_path.glob(".w.pth*"))


def test_the_licence_must_be_accepted_once(tmp_path: Path, server: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(weights.LICENSE_ENV, raising=False)
    manifest = _manifest(tmp_path, [f"{server}/good/w.pth"])
    specs = weights.load_manifest(manifest)
    with pytest.raises(weights.WeightsError, match="must be accepted"):
        weights.download(specs, tmp_path / "d")
    monkeypatch.setenv(weights.LICENSE_ENV, "1")
    weights.download(specs, tmp_path / "d")
    monkeypatch.delenv(weights.LICENSE_ENV)
    weights.download(specs, tmp_path / "d")  # accepted once: remembered


def test_import_and_verify(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, [])
    hand = tmp_path / "downloads"
    hand.mkdir()
    (hand / "renamed-by-browser.pth").write_bytes(PAYLOAD)
    dest = tmp_path / "ckpt"
    dest.mkdir()
    assert weights.import_folder(hand, weights.load_manifest(manifest), dest) == [dest / "w.pth"]
    run = run_cli("weights", "--manifest", str(manifest), "--dest", str(dest), "verify")
    assert run.returncode == 0 and "verified" in run.stdout
    (dest / "w.pth").write_bytes(PAYLOAD[:-1] + b"\x00")
    run = run_cli("weights", "--manifest", str(manifest), "--dest", str(dest), "verify")
    assert run.returncode == 1 and "BAD (SHA-256" in run.stdout


def test_offline_download_fails_fast_naming_files_mirrors_and_import(tmp_path: Path) -> None:
    repo_manifest = Path(__file__).resolve().parents[1] / "checkpoints" / "manifest.json"
    start = time.monotonic()
    # Port 9 on loopback refuses at once: the same path as an offline machine's DNS failure.
    manifest = _manifest(tmp_path, ["http://127.0.0.1:9/w.pth"])
    run = run_cli("weights", "--manifest", str(manifest), "--dest", str(tmp_path / "d"),
                  "download", "--accept-license")
    assert run.returncode == 2 and time.monotonic() - start < 30
    assert "w.pth" in run.stderr and "127.0.0.1:9" in run.stderr
    assert "weights import" in run.stderr
    specs = weights.load_manifest(repo_manifest)
    assert {s.name for s in specs} >= {"wav2lip.pth", "wav2lip_gan.pth", "lipsync_expert.pth",
                                       "visual_quality_disc.pth", "syncnet_v2.model"}
    assert all(len(s.sha256) == 64 and s.bytes > 0 and s.mirrors for s in specs)
