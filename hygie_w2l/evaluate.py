"""``hygie-w2l eval``: lip-sync and image-quality scores on a dataset's held-out split.

The held-out frames are reconstructed from their own audio exactly as in training: the
generator sees a reference frame of the training split (the most closed mouth, the same for
every frame), the fixed edit mask and the audio; the Wav2Lip generator also sees the frame
with its lower half masked, as the official recipe. Each reconstructed mouth is pasted into
the real frame with the render's blending, then every *variant* of the video is measured the
same way against the real frames:

* ``template``: the reference frame's mouth pasted (no lip-sync): the floor;
* ``generated``: the generator's mouths;
* ``generated+hd``: the same with HD retrieval (when a library is given);
* ``real``: the real frames themselves: the ceiling.

Metrics (formulas in the README): LMD, mouth-opening correlation and its best offset, sync
scores (LSE-D/LSE-C with SyncNet v2 when ``checkpoints/syncnet_v2.model`` exists, else the
fine-tuned expert's, labelled), PSNR and SSIM of the mouth rectangle, sharpness inside the
inner mouth and flicker inside the mouth relative to the real video.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from hygie_w2l.atomic import atomic_path
from hygie_w2l.blend import BlendMode, paste
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.errors import HygieError
from hygie_w2l.face_tracker import FaceMeshDetector
from hygie_w2l.generate import film_inputs, run_generator, wav2lip_inputs
from hygie_w2l.geometry import (
    SquareBox,
    box_affine,
    generator_mask,
    invert,
    polygon_mask,
    warp,
)
from hygie_w2l.landmarks import mouth_opening, mouth_width, outer_inner_rings
from hygie_w2l.lse import SyncScores, expert_scores, syncnet_v2_scores
from hygie_w2l.media import VideoWriter, mux, read_frames
from hygie_w2l.metrics import (
    best_offset,
    laplacian_energy,
    lip_landmark_distance,
    pearson,
    psnr,
    reference_frame,
    region_change,
    ssim,
)
from hygie_w2l.models.checkpoint import Checkpoint, load_checkpoint
from hygie_w2l.retrieval import HDConfig, HDStage, lip_points

VARIANTS = ("template", "generated", "generated+hd", "real")
SYNCNET_V2 = Path("checkpoints/syncnet_v2.model")
OFFICIAL_EXPERT = Path("checkpoints/lipsync_expert.pth")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    blend: BlendMode = "poisson"
    max_frames: int = 250  # of the held-out split, from its start
    hd: HDConfig | None = None
    expert: Path | None = None  # default: the run's expert, else the official one
    syncnet: Path = SYNCNET_V2
    side_by_side: bool = True


# ------------------------------------------------------------------ generation ----

def _generated_crops(ckpt: Checkpoint, data: PreparedDataset, frames: np.ndarray,
                     ref: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(crops, paste mask, frame -> crop matrices) of the generator for ``frames``."""
    from hygie_w2l.audio import mel_window

    mels = np.stack([mel_window(data.mel, int(i), data.fps) for i in frames])
    if ckpt.arch == "film_unet":
        crops = data.array("mouth").take([ref] * len(frames))
        out = run_generator(ckpt.model, film_inputs(crops), mels)
        ms = [data.transforms["mouth"][i] for i in frames]
        return out, generator_mask(out.shape[1]), ms
    faces = data.array("face").take(frames)
    refs = data.array("face").take([ref] * len(frames))
    out = run_generator(ckpt.model, wav2lip_inputs(faces, refs), mels)
    return out, np.zeros(0), [data.transforms["face"][i] for i in frames]


def _wav2lip_mask(data: PreparedDataset, i: int, size: int) -> np.ndarray:
    """The fixed edit region of the mouth crop, seen in frame i's face crop."""
    s = data.array("mouth").shape[1]
    to_face = data.transforms["face"][i] @ np.vstack([invert(data.transforms["mouth"][i]),
                                                       [0, 0, 1]])
    return warp(generator_mask(s), to_face, (size, size))


# ------------------------------------------------------------------- measuring ----

@dataclasses.dataclass
class _Track:
    """Per-frame measurements of one variant."""

    points: list[np.ndarray] = dataclasses.field(default_factory=list)
    opening: list[float] = dataclasses.field(default_factory=list)
    psnr: list[float] = dataclasses.field(default_factory=list)
    ssim: list[float] = dataclasses.field(default_factory=list)
    sharp: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0])
    change: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0])
    faces96: list[np.ndarray] = dataclasses.field(default_factory=list)
    faces224: list[np.ndarray] = dataclasses.field(default_factory=list)
    prev: np.ndarray | None = None


@dataclasses.dataclass
class _Regions:
    """Where the real frame's mouth is: the rectangle and masks every variant is scored in."""

    rect: tuple[int, int, int, int]
    inner: np.ndarray  # inner mouth (teeth, tongue), dilated
    mouth: np.ndarray  # lips and inner mouth, dilated
    width: float


def _regions(lm: np.ndarray, hw: tuple[int, int]) -> _Regions:
    outer, inner = outer_inner_rings(lm)
    width = mouth_width(lm)
    pad = 0.25 * width
    x1, y1 = np.floor(outer.min(0) - pad).astype(int)
    x2, y2 = np.ceil(outer.max(0) + pad).astype(int)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, hw[1]), min(y2, hw[0])
    size = (y2 - y1, x2 - x1)
    d = max(int(round(0.04 * width)), 1)
    return _Regions((x1, y1, x2, y2), polygon_mask(inner - (x1, y1), size, d),
                    polygon_mask(outer - (x1, y1), size, d), width)


class _Measurer:
    def __init__(self, names: list[str], want96: bool, want224: bool) -> None:
        self.detectors = {n: FaceMeshDetector(video=True) for n in names}
        self.tracks = {n: _Track() for n in names}
        self.want96, self.want224 = want96, want224

    def add(self, name: str, frame: np.ndarray, real: np.ndarray, reg: _Regions,
            box: SquareBox) -> None:
        tr = self.tracks[name]
        lm = self.detectors[name].detect(frame)
        n_pts = len(tr.points[0]) if tr.points else 40
        tr.points.append(lip_points(lm) if lm is not None else np.full((n_pts, 2), np.nan))
        tr.opening.append(mouth_opening(lm) if lm is not None else np.nan)
        x1, y1, x2, y2 = reg.rect
        crop, real_crop = frame[y1:y2, x1:x2], real[y1:y2, x1:x2]
        tr.psnr.append(psnr(crop, real_crop))
        tr.ssim.append(ssim(crop, real_crop))
        e, m = laplacian_energy(crop, reg.inner)
        tr.sharp[0] += e
        tr.sharp[1] += m
        if tr.prev is not None:
            e, m = region_change(tr.prev[y1:y2, x1:x2], crop, reg.mouth)
            tr.change[0] += e
            tr.change[1] += m
        tr.prev = frame
        if self.want96:
            tr.faces96.append(warp(frame, box_affine(box, 96), (96, 96)))
        if self.want224:
            tr.faces224.append(warp(frame, box_affine(box, 224), (224, 224)))

    def close(self) -> None:
        for d in self.detectors.values():
            d.close()


# ------------------------------------------------------------------ evaluation ----

@dataclasses.dataclass
class EvalReport:
    out: Path
    metrics: dict[str, Any]

    def table(self) -> str:
        return _markdown_table(self.metrics)


def _find_expert(checkpoint: Path, explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    ckpt = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for candidate in (ckpt.parent / "expert", OFFICIAL_EXPERT):
        if (candidate / "best.pt").is_file() if candidate.is_dir() else candidate.is_file():
            return candidate
    return None


def evaluate(dataset: str | Path, checkpoint: str | Path, out: str | Path,
             config: EvalConfig = EvalConfig()) -> EvalReport:
    started = time.perf_counter()
    data = PreparedDataset(dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(checkpoint, expect=("wav2lip", "film_unet"))
    a, b = data.split.val
    frames = np.arange(a, b)[np.asarray(data.usable)[a:b]]
    if len(frames) < 10:
        raise HygieError(f"{dataset}: only {len(frames)} usable held-out frames; prepare a "
                         "longer video (the last 20 % is held out).")
    # a contiguous run from the start of the split (flicker and offsets need neighbours)
    breaks = np.flatnonzero(np.diff(frames) != 1)
    frames = frames[:breaks[0] + 1] if len(breaks) else frames
    frames = frames[:config.max_frames]
    notes: list[str] = []
    hd = HDStage(config.hd, config.blend) if config.hd is not None else None
    if hd is not None:
        notes += _library_notes(hd, data)
    ref = reference_frame(data)
    gen, gen_mask, gen_ms = _generated_crops(ckpt, data, frames, ref)
    tmpl_crop = data.array("mouth")[ref]
    tmpl_mask = generator_mask(tmpl_crop.shape[0])
    expert_path = _find_expert(Path(checkpoint), config.expert)
    use_syncnet = config.syncnet.is_file()
    names = [v for v in VARIANTS if v != "generated+hd" or hd is not None]
    meas = _Measurer(names, want96=expert_path is not None and not use_syncnet,
                     want224=use_syncnet)
    side = None
    worst: list[tuple[float, np.ndarray]] = []
    wanted = {int(f): k for k, f in enumerate(frames)}
    pending: dict[int, dict[str, Any]] = {}
    video = data.meta["source"]
    try:
        reader = read_frames(video, fps=data.fps)
        bar = tqdm(total=len(frames), desc="eval", unit="frame", disable=None)
        for i, real in enumerate(reader):
            if i > frames[-1]:
                break
            if i not in wanted:
                continue
            k = wanted[i]
            lm_real = np.asarray(data.landmarks[i])
            mask = gen_mask if ckpt.arch == "film_unet" else _wav2lip_mask(data, i, 96)
            variants = {"real": real,
                        "template": paste(real, tmpl_crop, tmpl_mask,
                                          data.transforms["mouth"][i], config.blend),
                        "generated": paste(real, gen[k], mask, gen_ms[k], config.blend)}
            pending[k] = {"variants": variants, "real": real, "lm": lm_real, "i": i}
            ready = [k]
            if hd is not None:
                ready = []
                for kk, frame in hd.push(k, variants["generated"], True):
                    pending[kk]["variants"]["generated+hd"] = frame
                    ready.append(kk)
            for kk in ready:
                item = pending.pop(kk)
                side = _measure_frame(item, meas, names, data, out, side, worst, config)
            bar.update(1)
        if hd is not None:
            for kk, frame in hd.finish():
                item = pending.pop(kk)
                item["variants"]["generated+hd"] = frame
                side = _measure_frame(item, meas, names, data, out, side, worst, config)
        bar.close()
    finally:
        meas.close()
        if hd is not None:
            hd.close()
    metrics = _score(meas, names, data, frames, ckpt, expert_path, use_syncnet, config, notes)
    metrics["hd"] = {k: v for k, v in hd.summary().items() if k != "per_frame"} \
        if hd is not None else None
    metrics["seconds"] = time.perf_counter() - started
    if side is not None:
        side.close()
        start_s = float(frames[0]) / data.fps
        mux(out / ".side_by_side.video.mp4", data.root / "audio.wav", out / "side_by_side.mp4",
            {"comment": "real | generated | generated+HD (hygie-w2l eval); the mouth of the "
                        "right panels is synthetic", "hygie_synthetic_mouth": "1"},
            audio_start_s=start_s)
        (out / ".side_by_side.video.mp4").unlink()
    _plots(meas, names, metrics, worst, out)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, default=_json_default))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_report_md(metrics))
    return EvalReport(out, metrics)


def _library_notes(hd: HDStage, data: PreparedDataset) -> list[str]:
    mine = str(data.root.resolve())
    for d in hd.library.meta["datasets"]:
        if d["path"] == mine and hd.library.meta["config"]["split"] != "train":
            return [f"the HD library {hd.config.index} holds this dataset's held-out frames "
                    "(built with --split all): its scores are optimistic."]
    return []


def _measure_frame(item: dict[str, Any], meas: _Measurer, names: list[str],
                   data: PreparedDataset, out: Path, side: VideoWriter | None,
                   worst: list[tuple[float, np.ndarray]], config: EvalConfig
                   ) -> VideoWriter | None:
    real, i = item["real"], item["i"]
    reg = _regions(item["lm"], real.shape[:2])
    box = _face_box(data, i)
    for name in names:
        meas.add(name, item["variants"][name], real, reg, box)
    panels = [item["variants"][n] for n in ("real", "generated", "generated+hd") if n in names]
    if config.side_by_side:
        tile = np.hstack(panels)
        scale = min(1.0, 1920 / tile.shape[1])
        if scale < 1:
            tile = cv2.resize(tile, (int(tile.shape[1] * scale) // 2 * 2,
                                     int(tile.shape[0] * scale) // 2 * 2),
                              interpolation=cv2.INTER_AREA)
        if side is None:
            side = VideoWriter(out / ".side_by_side.video.mp4", tile.shape[1], tile.shape[0],
                               data.fps)
        side.write(tile)
    gen_pts, real_pts = meas.tracks["generated"].points[-1], meas.tracks["real"].points[-1]
    err = float(np.nanmean(np.linalg.norm(gen_pts - real_pts, axis=-1))) / reg.width
    x1, y1, x2, y2 = reg.rect
    thumb = np.hstack([cv2.resize(p[y1:y2, x1:x2], (160, 120)) for p in panels])
    worst.append((err if np.isfinite(err) else np.inf, thumb))
    worst.sort(key=lambda t: -t[0])
    del worst[8:]
    return side


def _face_box(data: PreparedDataset, i: int) -> SquareBox:
    return SquareBox.from_array(np.load(data.root / "boxes.npy", mmap_mode="r")[i])


def _score(meas: _Measurer, names: list[str], data: PreparedDataset, frames: np.ndarray,
           ckpt: Checkpoint, expert_path: Path | None, use_syncnet: bool, config: EvalConfig,
           notes: list[str]) -> dict[str, Any]:
    real = meas.tracks["real"]
    real_pts = np.stack(real.points)
    widths = np.array([float(np.ptp(p[:20, 0])) if np.isfinite(p).all() else np.nan
                       for p in real_pts])
    real_open = np.array(real.opening)
    real_sharp = real.sharp[0] / max(real.sharp[1], 1e-9)
    real_flicker = real.change[0] / max(real.change[1], 1e-9)
    sync_label, sync = _sync(meas, names, data, frames, expert_path, use_syncnet)
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        tr = meas.tracks[name]
        opening = np.array(tr.opening)
        off, r_best = best_offset(opening, real_open)
        sharp = tr.sharp[0] / max(tr.sharp[1], 1e-9)
        flick = tr.change[0] / max(tr.change[1], 1e-9)
        finite_psnr = [p for p in tr.psnr if np.isfinite(p)]
        rows[name] = {
            "lmd": lip_landmark_distance(np.stack(tr.points), real_pts, widths),
            "opening_r": pearson(opening, real_open),
            "offset_frames": off, "opening_r_at_offset": r_best,
            "psnr_db": float(np.mean(finite_psnr)) if finite_psnr else float("inf"),
            "ssim": float(np.mean(tr.ssim)),
            "sharpness_rel": sharp / real_sharp if real_sharp > 0 else float("nan"),
            "flicker_rel": flick / real_flicker if real_flicker > 0 else float("nan"),
            "opening_std": float(np.nanstd(opening)),
            "sync": dataclasses.asdict(sync[name]) if name in sync else None}
        if rows[name]["sync"]:
            rows[name]["sync"].pop("mean_distances")
    if not use_syncnet:
        notes.append(f"{config.syncnet} is absent: LSE-D/LSE-C (SyncNet v2) not computed; "
                     + (f"sync scores are the fine-tuned expert's ({expert_path}), same "
                        "arithmetic, not comparable with published LSE."
                        if expert_path else "no expert found either (--expert), so no sync "
                        "score."))
    return {"dataset": str(data.root), "checkpoint_arch": ckpt.arch,
            "frames": [int(frames[0]), int(frames[-1]) + 1], "n_frames": len(frames),
            "reference_frame": reference_frame(data), "blend": config.blend,
            "sync_metric": sync_label, "variants": rows, "notes": notes,
            "openings": {n: [None if np.isnan(x) else round(float(x), 4)
                             for x in meas.tracks[n].opening] for n in names}}


def _sync(meas: _Measurer, names: list[str], data: PreparedDataset, frames: np.ndarray,
          expert_path: Path | None, use_syncnet: bool) -> tuple[str | None,
                                                                dict[str, SyncScores]]:
    out: dict[str, SyncScores] = {}
    if use_syncnet:
        model = load_checkpoint(SYNCNET_V2, expect="syncnet_v2").model
        import soundfile as sf

        wav, sr = sf.read(data.root / "audio.wav", dtype="float32")
        hop = sr / data.fps
        seg = wav[int(frames[0] * hop):int((frames[-1] + 1) * hop)]
        for n in names:
            out[n] = syncnet_v2_scores(model, np.stack(meas.tracks[n].faces224), seg, data.fps)
        return "LSE (SyncNet v2)", out
    if expert_path is None:
        return None, out
    expert = load_checkpoint(expert_path, expect="syncnet_color").model
    for n in names:
        out[n] = expert_scores(expert, np.stack(meas.tracks[n].faces96), data.mel,
                               int(frames[0]), data.fps)
    return f"expert sync (our fine-tuned expert {expert_path}; not LSE)", out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


# ------------------------------------------------------------------- reporting ----

COLUMNS = [("lmd", "LMD ↓", "{:.4f}"), ("opening_r", "opening r ↑", "{:.3f}"),
           ("offset_frames", "offset", "{:d}"), ("psnr_db", "PSNR dB ↑", "{:.2f}"),
           ("ssim", "SSIM ↑", "{:.3f}"), ("sharpness_rel", "sharpness / real", "{:.3f}"),
           ("flicker_rel", "flicker / real", "{:.3f}")]


def _fmt(fmt: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "inf" if v == float("inf") else "n/a"
    return fmt.format(v)


def _markdown_table(m: dict[str, Any]) -> str:
    sync = m.get("sync_metric")
    head = [c[1] for c in COLUMNS] + (["sync dist ↓", "sync conf ↑"] if sync else [])
    lines = ["| variant | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, row in m["variants"].items():
        cells = [_fmt(f, row[k]) for k, _, f in COLUMNS]
        if sync:
            s = row["sync"] or {}
            cells += [_fmt("{:.3f}", s.get("distance")), _fmt("{:.3f}", s.get("confidence"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report_md(m: dict[str, Any]) -> str:
    parts = [f"# Evaluation of {m['checkpoint_arch']} on {m['dataset']}",
             f"Held-out frames {m['frames'][0]}..{m['frames'][1] - 1} ({m['n_frames']} frames), "
             f"reference frame {m['reference_frame']}, blending {m['blend']}.", "",
             _markdown_table(m), "",
             "Floor: `template` (the reference mouth pasted, no lip-sync). Ceiling: `real`. "
             "LMD: lip-landmark distance / mouth width. opening r: correlation of the mouth "
             "opening with the real one; offset: the lag that maximises it (0 = in sync). "
             "Sharpness and flicker are relative to the real video (1.0 = as the real one).",
             ""]
    if m.get("sync_metric"):
        parts.append(f"Sync columns: {m['sync_metric']}.")
    for note in m.get("notes", []):
        parts.append(f"- note: {note}")
    if m.get("hd"):
        h = m["hd"]
        parts.append(f"- HD retrieval: library of {h['library_size']} mouths, "
                     f"{h['distinct_entries']} distinct used, median distance "
                     f"{h['median_distance']:.3f} (typical {h['typical_distance']:.3f}).")
    parts += ["", "![mouth opening](opening.png)", "", "![metrics](metrics.png)", "",
              "Worst frames by LMD (real | generated | generated+HD):", "",
              "![worst frames](worst_frames.png)", "",
              "Side by side video: `side_by_side.mp4` (real | generated | generated+HD)."]
    return "\n".join(parts) + "\n"


def _plots(meas: _Measurer, names: list[str], metrics: dict[str, Any],
           worst: list[tuple[float, np.ndarray]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.2))
    for n in names:
        ax.plot(meas.tracks[n].opening, label=n, lw=2.2 if n == "real" else 1.2)
    ax.set_xlabel("held-out frame")
    ax.set_ylabel("mouth opening (height / width)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _save_fig(fig, out / "opening.png")
    keys = [("lmd", "LMD (lower is better)"), ("opening_r", "opening r"),
            ("sharpness_rel", "sharpness / real"), ("flicker_rel", "flicker / real")]
    fig, axes = plt.subplots(1, len(keys), figsize=(12, 3))
    for ax, (k, title) in zip(axes, keys, strict=True):
        vals = [metrics["variants"][n][k] for n in names]
        ax.bar(range(len(names)), [v if v is not None and np.isfinite(v) else 0 for v in vals],
               color=["#999", "#3a7", "#37a", "#333"][:len(names)])
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save_fig(fig, out / "metrics.png")
    plt.close("all")
    if worst:
        grid = np.vstack([t for _, t in worst])
        with atomic_path(out / "worst_frames.png") as tmp:
            cv2.imwrite(str(tmp), grid)


def _save_fig(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
