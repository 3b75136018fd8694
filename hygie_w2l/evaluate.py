"""``hygie-w2l eval``: lip-sync and image-quality scores on a dataset's held-out split.

The held-out frames are reconstructed from their own audio through the render's own stages
(chain.py: crop -> generate -> blend -> [HD]): the generator sees a reference frame of the
training split (the most closed mouth, the same for every frame) where a render would see
the template frame, the fixed edit mask and the audio; the Wav2Lip generator also sees the
frame with its lower half masked, as the official recipe. Each reconstructed mouth is pasted
into the real frame with the render's blending, then every *variant* of the video is
measured the same way against the real frames:

* ``template``: the reference frame's mouth pasted (no lip-sync): the floor;
* ``generated``: the generator's mouths;
* ``generated+hd``: the same with HD retrieval (when a library is given);
* ``real``: the real frames themselves: the ceiling.

Metrics (formulas in the README): LMD, mouth-opening correlation and its best offset, sync
scores (LSE-D/LSE-C with SyncNet v2 when ``checkpoints/syncnet_v2.model`` exists, else the
fine-tuned expert's, labelled), PSNR and SSIM of the mouth rectangle, sharpness inside the
inner mouth and flicker inside the mouth relative to the real video. The report (tables,
plots) is written by report.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from hygie_w2l.atomic import not_an_input, writable_folder
from hygie_w2l.audio import ArrayMel
from hygie_w2l.blend import BlendMode, paste
from hygie_w2l.chain import Frame, StageContext, Timer, run_chain
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.errors import HygieError
from hygie_w2l.face_tracker import FaceMeshDetector
from hygie_w2l.generators import Generator, PixelGenerator, generator_for
from hygie_w2l.geometry import (
    FACE_CROP_PX,
    SquareBox,
    box_affine,
    generator_mask,
    polygon_mask,
    warp,
)
from hygie_w2l.hd import HDConfig, HDStage, library_for
from hygie_w2l.landmarks import mouth_opening, mouth_width, outer_inner_rings
from hygie_w2l.library import lip_points
from hygie_w2l.lse import SYNCNET_V2_FACE_PX, SyncScores, expert_scores, syncnet_v2_scores
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
from hygie_w2l.report import write_report
from hygie_w2l.types import GENERATOR_ARCHS, EngineConfig, Image
from hygie_w2l.weights import EXPERT_FILE, SYNCNET_V2_FILE, official_path

VARIANTS = ("template", "generated", "generated+hd", "real")
SIDE_BY_SIDE_MAX_W_PX = 1920
WORST_FRAMES = 8
THUMB_WH = (160, 120)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    blend: BlendMode = "poisson"
    max_frames: int = 250  # of the held-out split, from its start
    hd: HDConfig | None = None
    expert: Path | None = None  # default: the run's expert, else the official one
    syncnet: Path = official_path(SYNCNET_V2_FILE)
    side_by_side: bool = True
    engine: EngineConfig = EngineConfig()


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
            tr.faces96.append(warp(frame, box_affine(box, FACE_CROP_PX), (FACE_CROP_PX,) * 2))
        if self.want224:
            tr.faces224.append(warp(frame, box_affine(box, SYNCNET_V2_FACE_PX),
                                         (SYNCNET_V2_FACE_PX,) * 2))

    def openings(self) -> dict[str, list[float]]:
        return {n: t.opening for n, t in self.tracks.items()}

    def close(self) -> None:
        for d in self.detectors.values():
            d.close()


# ------------------------------------------------------------ openings on a still ----

def held_out_openings(ckpt: Checkpoint, data: PreparedDataset, video: str | Path,
                      frames: Sequence[int], reference: int | None = None,
                      hd: HDConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(generated, real) mouth openings of ``frames``; NaN where MediaPipe finds no face.

    generated: the frames' audio drawn by the checkpoint's generator (its render stages)
    on one still frame, ``reference`` (default: the most closed training frame), as a
    render on a still template would; real: MediaPipe on the real frames.
    Why a still frame and not the real ones: pasting a mouth into the real frame leaves
    the real chin and cheeks around it, and MediaPipe reads the jaw, so the "generated"
    opening would partly be the real one. On one still frame every change of the mouth
    has to come from the audio.
    """
    ref = reference_frame(data) if reference is None else reference
    generator = generator_for(ckpt)
    pictures = _pictures(video, data.fps, {ref, *map(int, frames)})
    context = _context(ckpt, None, data, generator, EvalConfig(hd=hd), Timer())
    mouth = generator.stages(context)
    still = [Frame(k, ref, int(i), pictures[ref], True, source=pictures[ref],
                   landmarks=np.asarray(data.landmarks[ref]),
                   reference=_reference(data, generator, ref)) for k, i in enumerate(frames)]
    batches = [still[a:a + mouth.batch_size] for a in range(0, len(still), mouth.batch_size)]
    gen = np.full(len(frames), np.nan)
    real = np.full(len(frames), np.nan)
    with FaceMeshDetector(video=False) as detector:
        try:
            for done in run_chain(batches, mouth.stages):
                for f in done:
                    lm = detector.detect(f.image)
                    gen[f.k] = mouth_opening(lm) if lm is not None else np.nan
        finally:
            mouth.close()
        for k, i in enumerate(frames):
            lm = detector.detect(pictures[int(i)])
            real[k] = mouth_opening(lm) if lm is not None else np.nan
    return gen, real


def _pictures(video: str | Path, fps: float, wanted: set[int]) -> dict[int, Image]:
    """The frames ``wanted`` of a video (at ``fps``), by index."""
    out: dict[int, Image] = {}
    for i, frame in enumerate(read_frames(video, fps=fps)):
        if i in wanted:
            out[i] = frame
        if i >= max(wanted):
            break
    return out


def _reference(data: PreparedDataset, generator: Generator, ref: int) -> Image | None:
    """A pixel generator's reference crop: frame ``ref``'s crop at the generator's size."""
    if not isinstance(generator, PixelGenerator):
        return None
    reference = data.array(generator.crop_kind)[ref]
    if reference.shape[0] != generator.crop_px:
        reference = cv2.resize(reference, (generator.crop_px,) * 2,
                               interpolation=cv2.INTER_AREA)
    return reference


def _context(ckpt: Checkpoint, source: Path | None, data: PreparedDataset,
             generator: Generator, config: EvalConfig, timer: Timer) -> StageContext:
    """The render stages' inputs for a dataset's frames and its own speech."""
    return StageContext(ckpt, source, data.plan.with_config(generator.crop_config()),
                        ArrayMel(data.mel), data.n_frames, config.blend, config.engine,
                        config.hd, data.pose, timer, data.fps)


# ------------------------------------------------------------------ evaluation ----

@dataclasses.dataclass
class EvalReport:
    out: Path
    metrics: dict[str, Any]

    def table(self) -> str:
        from hygie_w2l.report import markdown_table

        return markdown_table(self.metrics)


def _find_expert(checkpoint: Path, explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    ckpt = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for candidate in (ckpt.parent / "expert", official_path(EXPERT_FILE)):
        if (candidate / "best.pt").is_file() if candidate.is_dir() else candidate.is_file():
            return candidate
    return None


def held_out_frames(data: PreparedDataset, max_frames: int) -> np.ndarray:
    """A contiguous run of usable held-out frames from the start of the validation split
    (flicker and offsets need neighbours), at most ``max_frames``."""
    a, b = data.split.val
    frames = np.arange(a, b)[np.asarray(data.usable)[a:b]]
    if len(frames) < 10:
        raise HygieError(f"{data.root}: only {len(frames)} usable held-out frames; prepare a "
                         "longer video (the last 20 % is held out).")
    breaks = np.flatnonzero(np.diff(frames) != 1)
    frames = frames[:breaks[0] + 1] if len(breaks) else frames
    return frames[:max_frames]


def evaluate(dataset: str | Path, checkpoint: str | Path, out: str | Path,
             config: EvalConfig = EvalConfig()) -> EvalReport:
    """Score ``checkpoint`` on the held-out split of ``dataset``; the report goes to the
    folder ``out`` (a folder this call created is removed again if it fails)."""
    started = time.perf_counter()
    data = PreparedDataset(dataset)
    out = not_an_input(out, dataset, checkpoint, data.meta["source"])
    ckpt = load_checkpoint(checkpoint, expect=GENERATOR_ARCHS)
    generator = generator_for(ckpt)
    config = dataclasses.replace(config, hd=library_for(config.hd, None, generator,
                                                        checkpoint))
    frames = held_out_frames(data, config.max_frames)
    created = not out.exists()
    writable_folder(out)
    try:
        metrics = _measure(data, ckpt, Path(checkpoint), generator, frames, out, config,
                           started)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return EvalReport(out, metrics)


def _measure(data: PreparedDataset, ckpt: Checkpoint, source: Path, generator: Generator,
             frames: np.ndarray, out: Path, config: EvalConfig, started: float
             ) -> dict[str, Any]:
    """The held-out frames through the generator's render stages, every variant measured;
    the report written into ``out``."""
    timer = Timer()
    mouth = generator.stages(_context(ckpt, source, data, generator, config, timer))
    expert_path = _find_expert(source, config.expert)
    use_syncnet = config.syncnet.is_file()
    hd = mouth.stages[-1] if isinstance(mouth.stages[-1], HDStage) else None
    names = [v for v in VARIANTS if v != "generated+hd" or hd is not None]
    sink = _Sink(names, data, out, config, want96=expert_path is not None and not use_syncnet,
                 want224=use_syncnet)
    stages = [s for s in mouth.stages if s is not hd] + [_Keep("generated", sink)]
    try:
        bar = tqdm(total=len(frames), desc="eval", unit="frame", disable=None)
        reference = _reference(data, generator, reference_frame(data))
        for done in run_chain(_held_out(data, frames, reference, mouth.batch_size),
                              stages + ([hd] if hd is not None else [])):
            for f in done:
                sink.add(f)
            bar.update(len(done))
        bar.close()
    finally:
        mouth.close()
        sink.close()
    notes = _library_notes(config.hd, data) if config.hd is not None else []
    metrics = _score(sink.meas, names, data, frames, ckpt.arch, expert_path, use_syncnet,
                     config, notes)
    library = mouth.info().get("hd")
    metrics["hd"] = {k: v for k, v in library.items() if k != "per_frame"} if library else None
    metrics["seconds"] = time.perf_counter() - started
    sink.write_video(frames)
    write_report(out, metrics, sink.meas.openings(), sink.worst)
    return metrics


def _held_out(data: PreparedDataset, frames: np.ndarray, reference: Image | None,
              batch_size: int) -> Iterator[list[Frame]]:
    """The reader: held-out frames of the source video, each showing its own speech, with
    the reference crop a render would take from its template (here the most closed
    training mouth)."""
    wanted = {int(f): k for k, f in enumerate(frames)}
    batch: list[Frame] = []
    for i, real in enumerate(read_frames(data.meta["source"], fps=data.fps)):
        if i > frames[-1]:
            break
        if i in wanted:
            batch.append(Frame(wanted[i], i, i, real, True, source=real,
                               landmarks=np.asarray(data.landmarks[i]), reference=reference))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Keep:
    """A stage that hands each frame's current picture to the sink as one variant."""

    def __init__(self, name: str, sink: _Sink) -> None:
        self.name, self.sink = name, sink

    def push(self, frames: list[Frame]) -> list[Frame]:
        for f in frames:
            self.sink.kept[f.k] = {self.name: f.image}
        return frames

    def finish(self) -> list[Frame]:
        return []


def _library_notes(hd: HDConfig, data: PreparedDataset) -> list[str]:
    mine = str(data.root.resolve())
    meta = json.loads((hd.library / "meta.json").read_text())
    for d in meta["datasets"]:
        if d["path"] == mine and meta["config"]["split"] != "train":
            return [f"the mouth library {hd.index} holds this dataset's held-out frames "
                    "(built with --split all): its scores are optimistic."]
    return []


class _Sink:
    """The end of the eval chain: every variant of a frame measured against the real one,
    the side-by-side video and the worst frames kept."""

    def __init__(self, names: list[str], data: PreparedDataset, out: Path,
                 config: EvalConfig, want96: bool, want224: bool) -> None:
        self.names, self.data, self.out, self.config = names, data, out, config
        self.meas = _Measurer(names, want96, want224)
        self.kept: dict[int, dict[str, Image]] = {}
        self.worst: list[tuple[float, np.ndarray]] = []
        self.side: VideoWriter | None = None
        ref = reference_frame(data)
        self.template = data.array("mouth")[ref]
        self.template_mask = generator_mask(self.template.shape[0])
        self.boxes = np.load(data.root / "boxes.npy", mmap_mode="r")

    def add(self, f: Frame) -> None:
        real = f.source
        assert real is not None and f.landmarks is not None
        variants = {"real": real, **self.kept.pop(f.k),
                    "template": paste(real, self.template, self.template_mask,
                                      self.data.plan.mouth[f.t], self.config.blend)}
        if "generated+hd" in self.names:
            variants["generated+hd"] = f.image
        reg = _regions(f.landmarks, (real.shape[0], real.shape[1]))
        box = SquareBox.from_array(self.boxes[f.t])
        for name in self.names:
            self.meas.add(name, variants[name], real, reg, box)
        panels = [variants[n] for n in ("real", "generated", "generated+hd")
                  if n in self.names]
        if self.config.side_by_side:
            self._side_by_side(np.hstack(panels))
        self._keep_worst(panels, reg)

    def _side_by_side(self, tile: np.ndarray) -> None:
        scale = min(1.0, SIDE_BY_SIDE_MAX_W_PX / tile.shape[1])
        if scale < 1:
            tile = cv2.resize(tile, (int(tile.shape[1] * scale) // 2 * 2,
                                     int(tile.shape[0] * scale) // 2 * 2),
                              interpolation=cv2.INTER_AREA)
        if self.side is None:
            self.side = VideoWriter(self.out / ".side_by_side.video.mp4", tile.shape[1],
                                    tile.shape[0], self.data.fps)
        self.side.write(tile)

    def _keep_worst(self, panels: list[Image], reg: _Regions) -> None:
        gen_pts = self.meas.tracks["generated"].points[-1]
        real_pts = self.meas.tracks["real"].points[-1]
        err = float(np.nanmean(np.linalg.norm(gen_pts - real_pts, axis=-1))) / reg.width
        x1, y1, x2, y2 = reg.rect
        thumb = np.hstack([cv2.resize(p[y1:y2, x1:x2], THUMB_WH) for p in panels])
        self.worst.append((err if np.isfinite(err) else np.inf, thumb))
        self.worst.sort(key=lambda t: -t[0])
        del self.worst[WORST_FRAMES:]

    def write_video(self, frames: np.ndarray) -> None:
        """side_by_side.mp4: the panels with the held-out audio, tagged synthetic."""
        if self.side is None:
            return
        self.side.close()
        self.side = None
        video = self.out / ".side_by_side.video.mp4"
        mux(video, self.data.root / "audio.wav", self.out / "side_by_side.mp4",
            {"comment": "real | generated | generated+HD (hygie-w2l eval); the mouth of the "
                        "right panels is synthetic", "hygie_synthetic_mouth": "1"},
            audio_start_s=float(frames[0]) / self.data.fps)
        video.unlink()

    def close(self) -> None:
        self.meas.close()


def _score(meas: _Measurer, names: list[str], data: PreparedDataset, frames: np.ndarray,
           arch: str, expert_path: Path | None, use_syncnet: bool, config: EvalConfig,
           notes: list[str]) -> dict[str, Any]:
    real = meas.tracks["real"]
    real_pts = np.stack(real.points)
    widths = np.array([float(np.ptp(p[:20, 0])) if np.isfinite(p).all() else np.nan
                       for p in real_pts])
    real_open = np.array(real.opening)
    real_sharp = real.sharp[0] / max(real.sharp[1], 1e-9)
    real_flicker = real.change[0] / max(real.change[1], 1e-9)
    sync_label, sync = _sync(meas, names, data, frames, expert_path,
                             config.syncnet if use_syncnet else None)
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
    return {"dataset": str(data.root), "checkpoint_arch": arch,
            "frames": [int(frames[0]), int(frames[-1]) + 1], "n_frames": len(frames),
            "reference_frame": reference_frame(data), "blend": config.blend,
            "sync_metric": sync_label, "variants": rows, "notes": notes,
            "openings": {n: [None if np.isnan(x) else round(float(x), 4)
                             for x in meas.tracks[n].opening] for n in names}}


def _sync(meas: _Measurer, names: list[str], data: PreparedDataset, frames: np.ndarray,
          expert_path: Path | None, syncnet: Path | None
          ) -> tuple[str | None, dict[str, SyncScores]]:
    """Sync scores per variant: LSE with SyncNet v2 when ``syncnet`` is given, else the
    expert's (same arithmetic, not comparable with published LSE), else none."""
    out: dict[str, SyncScores] = {}
    if syncnet is not None:
        model = load_checkpoint(syncnet, expect="syncnet_v2").model
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
