"""``hygie-w2l render``: a living template video speaks new audio.

Streaming pipeline, one stage per module: template (decode + track, template.py) ->
generator (batched, generate.py) -> blend (blend.py) -> encoder (media.py). Memory is
bounded by the batch size whatever the lengths; the output lasts exactly as long as the
audio; frames without a face, and silent stretches, keep the template's own mouth.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from hygie_w2l import __version__
from hygie_w2l.atomic import atomic_path, check_writable
from hygie_w2l.audio import FPS, MelWindows, Samples, frame_rms, n_video_frames
from hygie_w2l.blend import BlendMode, paste
from hygie_w2l.doctor import peak_memory_mb
from hygie_w2l.errors import HygieError
from hygie_w2l.face_tracker import NoFaceError, TrackerConfig
from hygie_w2l.generate import auto_batch_size, film_inputs, to_uint8, wav2lip_inputs
from hygie_w2l.geometry import (
    SquareBox,
    box_affine,
    generator_mask,
    invert,
    placed_box,
    warp,
)
from hygie_w2l.media import DEFAULT_CRF, AudioFile, VideoWriter, mux
from hygie_w2l.models.checkpoint import Checkpoint, load_checkpoint
from hygie_w2l.retrieval import HDConfig, HDStage
from hygie_w2l.runs import pick_device
from hygie_w2l.template import LoopMode, Template, load_template, template_index

STAGES = ("decode", "track", "generate", "blend", "hd", "encode")
FILM_EDIT_SIZE = 128  # the mouth-crop size of the Wav2Lip paste mask (geometry only)


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    blend: BlendMode = "poisson"
    loop: LoopMode = "pingpong"
    start_s: float = 0.0
    crf: int = DEFAULT_CRF
    device: str = "auto"
    engine: Literal["torch", "onnx"] = "torch"
    int8: bool = False  # with the onnx engine: static 8-bit model calibrated on this render
    batch_size: int = 0  # 0: fitted to the device's free memory (generate.auto_batch_size)
    silence_db: float = -50.0  # frames quieter than this (dBFS RMS) keep the template mouth
    preview: bool = False
    hd: HDConfig | None = None  # --hd-retrieval: the mouth library and how to use it
    fps: float = FPS
    tracker: TrackerConfig = TrackerConfig()


class Timer:
    """Seconds spent per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


@dataclasses.dataclass
class Job:
    """One output frame on its way through the pipeline."""

    k: int
    t: int  # template frame
    frame: np.ndarray
    generate: bool
    crop: np.ndarray | None = None
    m: np.ndarray | None = None  # frame -> crop
    mask: np.ndarray | None = None  # paste mask in crop coordinates


def silence_gate(wav: np.ndarray | Samples, n_frames: int, fps: float, threshold_db: float,
                 hold_frames: int = 3) -> np.ndarray:
    """(n_frames,) bool, True where the mouth should move. Short pauses (< hold_frames on
    each side) stay voiced, so the mouth does not snap shut between syllables."""
    db = 20 * np.log10(np.maximum(frame_rms(wav, n_frames, fps), 1e-9))
    voiced = db > threshold_db
    if hold_frames > 0 and voiced.any():
        kernel = np.ones(2 * hold_frames + 1)
        voiced = np.convolve(voiced.astype(float), kernel, mode="same") > 0
    return voiced


# ----------------------------------------------------------------------- engines ----

class Engine:
    """Runs the generator on batches: torch on cpu/cuda/mps (BatchNorm folded into the
    convolutions), or ONNX Runtime on the CPU (fp32, or static INT8 calibrated on the first
    batch of the first render with this checkpoint; both cached, see export.cached_export)."""

    def __init__(self, ckpt: Checkpoint, config: RenderConfig, source: str | Path) -> None:
        from hygie_w2l.export import fold_batchnorm

        self.arch, self.source, self.int8 = ckpt.arch, Path(source), config.int8
        self.onnx = config.engine == "onnx"
        self.device = torch.device("cpu") if self.onnx else pick_device(config.device)
        self.model = fold_batchnorm(ckpt.model).to(self.device)
        self.session: Any = None
        self.note = ""  # what the engine did once (export reused, INT8 error), for the summary
        if self.onnx:
            from hygie_w2l.export import _require_onnxruntime

            self._ort = _require_onnxruntime()
        self.batch_size = config.batch_size or self._auto_batch_size(ckpt)
        self.chunk = self.batch_size  # lowered when the device runs out of memory

    def _auto_batch_size(self, ckpt: Checkpoint) -> int:
        from hygie_w2l.export import example_inputs

        mel, inputs = example_inputs(ckpt.arch, self.model)
        return auto_batch_size(self.model, mel, inputs, self.device)

    def __call__(self, inputs: torch.Tensor, mels: np.ndarray) -> np.ndarray:
        """Generated crops of a batch; on a device out of memory, the batch is halved (and
        stays halved for the rest of the render) rather than the render lost."""
        outs, a = [], 0
        while a < len(inputs):
            try:
                outs.append(self._run(inputs[a:a + self.chunk], mels[a:a + self.chunk]))
                a += self.chunk
            except torch.cuda.OutOfMemoryError:
                if self.chunk == 1:
                    raise HygieError("the GPU is out of memory even for one frame: close "
                                     "other GPU programs or render with --device cpu.") from None
                self.chunk = max(1, self.chunk // 2)
                torch.cuda.empty_cache()
                tqdm.write(f"GPU out of memory: generating {self.chunk} frames at a time")
        return np.concatenate(outs)

    def _open_session(self, mel: torch.Tensor, inputs: torch.Tensor) -> None:
        from hygie_w2l.export import cached_export, relative_error

        feeds = {"mel": mel.numpy(), "face": inputs.numpy()}
        path, reused = cached_export(self.model, self.arch, self.source, self.int8, [feeds])
        options = self._ort.SessionOptions()
        # Idle ONNX Runtime threads spin by default, stealing the cores that blending,
        # tracking and the encoder need while the generator waits for its next batch.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = self._ort.InferenceSession(str(path), options,
                                                  providers=["CPUExecutionProvider"])
        self.note = f"ONNX engine: {path}" + (" (cached)" if reused else " (exported)")
        if self.int8:
            with torch.no_grad():
                expected = self.model(mel, inputs).numpy()
            got = self.session.run(None, feeds)[0]
            self.note += (f"; INT8 vs fp32 on the first batch: max error "
                          f"{255 * np.abs(got - expected).max():.1f} levels, relative "
                          f"{relative_error(got, expected):.1e}")

    @torch.no_grad()
    def _run(self, inputs: torch.Tensor, mels: np.ndarray) -> np.ndarray:
        mel = torch.from_numpy(np.ascontiguousarray(mels))[:, None]
        if self.onnx:
            if self.session is None:
                self._open_session(mel, inputs)
            feeds = {i.name: t.numpy() for i, t in zip(self.session.get_inputs(),
                                                       (mel, inputs), strict=True)}
            return to_uint8(torch.from_numpy(self.session.run(None, feeds)[0]))
        out = self.model(mel.to(self.device), inputs.to(self.device))
        return to_uint8(out)


def crop_size(ckpt: Checkpoint) -> int:
    return 96 if ckpt.arch == "wav2lip" else int(ckpt.config["size_px"])


# -------------------------------------------------------------------- pipeline ----

def _crop_job(job: Job, template: Template, arch: str, size: int) -> None:
    """Cut the generator's crop and its paste mask from the template frame (training
    geometry: eye-anchored, smoothed boxes)."""
    track = template.track
    assert track.calibration is not None
    lm = track.landmarks[job.t]
    mouth = placed_box(lm, track.calibration.mouth)
    m_mouth = box_affine(mouth, FILM_EDIT_SIZE if arch == "wav2lip" else size)
    edit = generator_mask(FILM_EDIT_SIZE if arch == "wav2lip" else size)
    if arch == "wav2lip":
        job.m = box_affine(SquareBox.from_array(track.boxes[job.t]), size)
        to_face = job.m @ np.vstack([invert(m_mouth), [0, 0, 1]])
        job.mask = warp(edit, to_face, (size, size))
    else:
        job.m, job.mask = m_mouth, edit
    job.crop = warp(job.frame, job.m, (size, size))


def _batch_inputs(jobs: list[Job], arch: str) -> torch.Tensor:
    crops = np.stack([j.crop for j in jobs])  # type: ignore[misc]
    return wav2lip_inputs(crops, crops) if arch == "wav2lip" else film_inputs(crops)


def _jobs(template: Template, n_frames: int, voiced: np.ndarray, config: RenderConfig
          ) -> Iterator[Job]:
    valid = template.track.valid
    for k in range(n_frames):
        t = template_index(k, template.n_frames, config.loop)
        frame = np.asarray(template.frames[t])
        yield Job(k, t, frame, bool(valid[t] and voiced[k]))



@dataclasses.dataclass(frozen=True)
class RenderSummary:
    out: Path
    n_frames: int
    duration_s: float
    generated: int
    no_face: int
    silent: int
    stage_seconds: dict[str, float]
    total_s: float
    peak_memory_mb: float
    preview: Path | None
    hd: dict[str, Any] | None = None  # HD retrieval: chosen library entry per frame, etc.
    warning: str | None = None
    batch_size: int = 0  # frames per generator call (the last one used)
    engine_note: str = ""  # ONNX: the model used (exported or cached), INT8 error

    def table(self) -> str:
        lines = [f"{'stage':10s}{'seconds':>10s}{'frames/s':>10s}"]
        for stage in STAGES:
            if stage == "hd" and self.hd is None:
                continue
            s = self.stage_seconds.get(stage, 0.0)
            lines.append(f"{stage:10s}{s:10.2f}{self.n_frames / max(s, 1e-9):10.1f}")
        lines.append(f"{'total':10s}{self.total_s:10.2f}{self.n_frames / self.total_s:10.1f}")
        lines.append(f"peak memory {self.peak_memory_mb:.0f} MB, batch {self.batch_size}; "
                     f"{self.generated} frames "
                     f"generated, {self.silent} silent (template mouth kept), "
                     f"{self.no_face} without a face (passed through)")
        if self.hd is not None:
            h = self.hd
            lines.append(f"HD retrieval: {h['frames']} mouths from a library of "
                         f"{h['library_size']} ({h['distinct_entries']} distinct, "
                         f"{h['switches']} jumps), median distance "
                         f"{h['median_distance'] or 0:.2f} (typical {h['typical_distance']:.2f})"
                         + (f", {h['missed']} frames without landmarks kept as generated"
                            if h["missed"] else ""))
        if self.engine_note:
            lines.append(self.engine_note)
        if self.warning:
            lines.append(f"warning: {self.warning}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"], d["preview"] = str(self.out), str(self.preview) if self.preview else None
        d["frames_per_s"] = self.n_frames / self.total_s
        return d


def _generate(batch: list[Job], engine: Engine, mel: MelWindows, timer: Timer
              ) -> np.ndarray | None:
    """The batch's generated crops (runs in the generator thread)."""
    todo = [j for j in batch if j.generate]
    if not todo:
        return None
    since = time.perf_counter()
    mels = mel([j.k for j in todo])
    generated = engine(_batch_inputs(todo, engine.arch), mels)
    timer.add("generate", since)
    return generated


def _paste_all(batch: list[Job], generated: np.ndarray | None, config: RenderConfig,
               timer: Timer) -> None:
    since = time.perf_counter()
    todo = [j for j in batch if j.generate]
    for job, out in zip(todo, generated if generated is not None else [], strict=True):
        assert job.mask is not None and job.m is not None
        job.frame = paste(job.frame, out, job.mask, job.m, config.blend)
    timer.add("blend", since)


def _metadata(checkpoint: str | Path) -> dict[str, str]:
    return {"comment": "The mouth region of this video is synthetic (lip-sync by hygie-w2l); "
                       "made with the consent of the person shown.",
            "hygie_synthetic_mouth": "1", "hygie_tool": f"hygie-w2l {__version__}",
            "hygie_checkpoint": Path(checkpoint).name}


def render(face: str | Path, audio: str | Path, checkpoint: str | Path, out: str | Path,
           config: RenderConfig = RenderConfig(), stats: str | Path | None = None
           ) -> RenderSummary:
    started = time.perf_counter()
    out = check_writable(out)
    if config.int8 and config.engine != "onnx":
        raise HygieError("--int8 quantises the ONNX engine's weights: add --engine onnx.")
    hd = HDStage(config.hd, config.blend) if config.hd is not None else None
    ckpt = load_checkpoint(checkpoint, expect=("wav2lip", "film_unet"))
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="hygie-render-", dir=out.parent) as tmp:
        since = time.perf_counter()
        speech = AudioFile(audio, tmp)  # streamed: memory does not grow with its length
        n_frames = n_video_frames(speech.n_samples, config.fps)
        voiced = silence_gate(speech, n_frames, config.fps, config.silence_db)
        timer.add("decode", since)
        template = load_template(face, config.fps, config.start_s, config.tracker,
                                 max_frames=n_frames)
        for stage, seconds in template.seconds.items():
            timer.seconds[stage] += seconds
        try:
            if not template.track.valid.any():
                raise NoFaceError(f"{face}: no face found in the template. Give a video or "
                                  "photo where the face is clearly visible.")
            return _render_frames(template, ckpt, MelWindows(speech, config.fps), voiced,
                                  n_frames, audio, checkpoint, out, config, timer, started,
                                  stats, hd, Path(tmp))
        finally:
            template.close()
            if hd is not None:
                hd.close()


def _render_frames(template: Template, ckpt: Checkpoint, mel: MelWindows, voiced: np.ndarray,
                   n_frames: int, audio: str | Path, checkpoint: str | Path, out: Path,
                   config: RenderConfig, timer: Timer, started: float,
                   stats: str | Path | None, hd: HDStage | None, tmp: Path) -> RenderSummary:
    size = crop_size(ckpt)
    h, w = template.frames.shape[1], template.frames.shape[2]
    counts = {"generated": 0, "no_face": 0, "silent": 0}
    engine = Engine(ckpt, config, checkpoint)
    video = tmp / "video.mp4"
    writer = VideoWriter(video, w, h, config.fps, crf=config.crf)
    side = VideoWriter(tmp / "preview.mp4", 2 * w, h, config.fps, crf=config.crf) \
        if config.preview else None
    bar = tqdm(total=n_frames, desc="render", unit="frame", disable=None)
    out_stage = _Output(writer, side, template, bar, timer, hd)
    # The generator runs in its own thread on batch b while this one crops batch b+1
    # and blends/encodes batch b-1 (torch and ONNX Runtime release the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: tuple[list[Job], Future] | None = None
        for batch in _batches(template, n_frames, voiced, config, engine.batch_size):
            since = time.perf_counter()
            for job in batch:
                if job.generate:
                    _crop_job(job, template, ckpt.arch, size)
                    counts["generated"] += 1
                else:
                    counts["no_face" if not template.track.valid[job.t] else "silent"] += 1
            timer.add("blend", since)
            future = pool.submit(_generate, batch, engine, mel, timer)
            if pending is not None:
                _paste_all(pending[0], pending[1].result(), config, timer)
                out_stage.write(pending[0])
            pending = (batch, future)
        if pending is not None:
            _paste_all(pending[0], pending[1].result(), config, timer)
            out_stage.write(pending[0])
        out_stage.finish()
    bar.close()
    since = time.perf_counter()
    writer.close()
    mux(video, audio, out, _metadata(checkpoint))
    preview = None
    if side is not None:
        side.close()
        preview = out.with_name(out.stem + ".preview.mp4")
        mux(tmp / "preview.mp4", audio, preview, _metadata(checkpoint))
    timer.add("encode", since)
    return _summarise(out, n_frames, counts, timer, started, preview, stats, hd, engine)


def _batches(template: Template, n_frames: int, voiced: np.ndarray, config: RenderConfig,
             size: int) -> Iterator[list[Job]]:
    batch: list[Job] = []
    for job in _jobs(template, n_frames, voiced, config):
        batch.append(job)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Output:
    """The end of the pipeline: the HD stage (when on), then the encoder(s), in order."""

    def __init__(self, writer: VideoWriter, side: VideoWriter | None, template: Template,
                 bar: tqdm, timer: Timer, hd: HDStage | None) -> None:
        self.writer, self.side, self.template = writer, side, template
        self.bar, self.timer, self.hd = bar, timer, hd

    def write(self, batch: list[Job]) -> None:
        if self.hd is None:
            self._encode(batch)
            return
        since = time.perf_counter()
        ready = []
        for job in batch:
            for done, frame in self.hd.push(job, job.frame, job.generate):
                done.frame = frame
                ready.append(done)
        self.timer.add("hd", since)
        self._encode(ready)

    def finish(self) -> None:
        if self.hd is not None:
            since = time.perf_counter()
            ready = []
            for done, frame in self.hd.finish():
                done.frame = frame
                ready.append(done)
            self.timer.add("hd", since)
            self._encode(ready)

    def _encode(self, jobs: list[Job]) -> None:
        since = time.perf_counter()
        for job in jobs:
            self.writer.write(job.frame)
            if self.side is not None:
                self.side.write(np.hstack([np.asarray(self.template.frames[job.t]), job.frame]))
        self.timer.add("encode", since)
        self.bar.update(len(jobs))


def _summarise(out: Path, n_frames: int, counts: dict[str, int], timer: Timer,
               started: float, preview: Path | None, stats: str | Path | None,
               hd: HDStage | None, engine: Engine) -> RenderSummary:
    seconds = dict(timer.seconds)
    summary = RenderSummary(out, n_frames, n_frames / FPS, counts["generated"],
                            counts["no_face"], counts["silent"], seconds,
                            time.perf_counter() - started,
                            peak_memory_mb(), preview,
                            hd.summary() if hd is not None else None,
                            hd.warning() if hd is not None else None, engine.chunk,
                            engine.note)
    if stats is not None:
        with atomic_path(stats) as tmp:
            tmp.write_text(json.dumps(summary.to_json(), indent=1))
    return summary
