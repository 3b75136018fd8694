"""``hygie-w2l render``: a living template video speaks new audio.

reader -> stages -> writer (chain.py): the template's frames (template.py: decoded once to
disk and tracked) with the speech's mel windows (streamed) -> crop (the training recipe,
crops.py) -> generate (batched, generate.py) -> blend (blend.py) -> [HD retrieval, hd.py]
-> encode (media.py). Memory is bounded by the batch size whatever the lengths; the output
lasts exactly as long as the audio; frames without a face, and silent stretches, keep the
template's own mouth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hygie_w2l import __version__
from hygie_w2l.atomic import atomic_path, check_writable, not_an_input
from hygie_w2l.audio import FPS, Samples, StreamedMel, frame_rms, n_video_frames
from hygie_w2l.blend import BlendMode
from hygie_w2l.chain import (
    EncodeStage,
    Frame,
    Stage,
    StageContext,
    Timer,
    opencv_threads,
    reader_batch,
    run_chain,
)
from hygie_w2l.crops import cached_plan
from hygie_w2l.doctor import cpu_seconds, peak_memory_mb
from hygie_w2l.face_tracker import NoFaceError, TrackerConfig
from hygie_w2l.generators import Generator, generator_for
from hygie_w2l.hd import HDConfig, library_for
from hygie_w2l.lip_shapes import read_shapes, sidecar_path
from hygie_w2l.media import DEFAULT_CRF, DEFAULT_PRESET, AudioFile, VideoWriter, X264Preset
from hygie_w2l.models.loaded import Checkpoint
from hygie_w2l.pixels import PixelFormat, frame_shape
from hygie_w2l.template import LoopMode, Template, load_template, template_index, template_info
from hygie_w2l.types import GENERATOR_ARCHS, EngineConfig

STAGES = ("decode", "track", "crop", "generate", "blend", "hd", "lips", "compose", "encode")
SILENCE_HOLD_FRAMES = 3  # pauses shorter than this on each side keep the mouth moving


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    blend: BlendMode = "poisson"
    loop: LoopMode = "pingpong"
    start_s: float = 0.0
    crf: int = DEFAULT_CRF
    preset: X264Preset = DEFAULT_PRESET  # x264 speed/size trade (README: encoder settings)
    engine: EngineConfig = EngineConfig()
    silence_db: float = -50.0  # frames quieter than this (dBFS RMS) keep the template mouth
    preview: bool = False
    hd: HDConfig | None = None  # --hd-retrieval: the mouth library and how to use it
    index: Path | None = None  # --index: the person's mouth library (default: the run's)
    fps: float = FPS
    tracker: TrackerConfig = TrackerConfig()
    template_cache: bool = True  # read (and keep) the template's tracking in the cache
    parallel: bool = True  # stages in threads of their own (chain.run_chain)


def silence_gate(wav: np.ndarray | Samples, n_frames: int, fps: float, threshold_db: float,
                 hold_frames: int = SILENCE_HOLD_FRAMES) -> np.ndarray:
    """(n_frames,) bool, True where the mouth should move. Short pauses (< hold_frames on
    each side) stay voiced, so the mouth does not snap shut between syllables."""
    db = 20 * np.log10(np.maximum(frame_rms(wav, n_frames, fps), 1e-9))
    voiced = db > threshold_db
    if hold_frames > 0 and voiced.any():
        kernel = np.ones(2 * hold_frames + 1)
        voiced = np.convolve(voiced.astype(float), kernel, mode="same") > 0
    return voiced


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
    arch: str = ""  # the generator that drew the mouths
    notes: tuple[str, ...] = ()  # the template cache, several faces ...
    cpu_s: dict[str, float] = dataclasses.field(default_factory=dict)  # own, ffmpeg

    def table(self) -> str:
        lines = [f"{'stage':10s}{'busy s':>10s}{'frames/s':>10s}{'of wall':>10s}"]
        for stage in STAGES:
            if stage not in self.stage_seconds:
                continue
            s = self.stage_seconds.get(stage, 0.0)
            lines.append(f"{stage:10s}{s:10.2f}{self.n_frames / max(s, 1e-9):10.1f}"
                         f"{s / self.total_s:10.0%}")
        lines.append(f"{'wall':10s}{self.total_s:10.2f}{self.n_frames / self.total_s:10.1f}")
        if self.cpu_s:
            lines.append(f"CPU {self.cpu_s['own']:.2f} s own, {self.cpu_s['ffmpeg']:.2f} s "
                         f"ffmpeg: {sum(self.cpu_s.values()) / self.total_s:.2f} cores busy")
        batch = f", batch {self.batch_size}" if self.batch_size else ""
        lines.append(f"peak memory {self.peak_memory_mb:.0f} MB{batch}; {self.arch}: "
                     f"{self.generated} frames "
                     f"generated, {self.silent} silent (template mouth kept), "
                     f"{self.no_face} without a face (passed through)")
        if self.hd is not None:
            h = self.hd
            what = "lips path" if self.arch == "lips" else "HD retrieval"
            lines.append(f"{what}: {h['frames']} mouths from a library of "
                         f"{h['library_size']} ({h['distinct_entries']} distinct, "
                         f"{h['switches']} jumps), median distance "
                         f"{h['median_distance'] or 0:.2f} (typical {h['typical_distance']:.2f})"
                         + (f", {h['missed']} frames without landmarks kept as generated"
                            if h["missed"] else ""))
        if self.engine_note:
            lines.append(self.engine_note)
        lines += [f"note: {n}" for n in self.notes]
        if self.warning:
            lines.append(f"warning: {self.warning}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"], d["preview"] = str(self.out), str(self.preview) if self.preview else None
        d["frames_per_s"] = self.n_frames / self.total_s
        d["busy_share"] = {k: v / self.total_s for k, v in self.stage_seconds.items()}
        return d


def synthetic_tag(checkpoint: str | Path) -> dict[str, str]:
    """The metadata every output carries: its mouth is synthetic, and who made it."""
    return {"comment": "The mouth region of this video is synthetic (lip-sync by hygie-w2l); "
                       "made with the consent of the person shown.",
            "hygie_synthetic_mouth": "1", "hygie_tool": f"hygie-w2l {__version__}",
            "hygie_checkpoint": Path(checkpoint).name}


@dataclasses.dataclass
class _Job:
    """What one render works on, gathered once."""

    template: Template
    speech: AudioFile
    voiced: np.ndarray  # (n_frames,) bool
    n_frames: int
    timer: Timer
    tmp: Path
    counts: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"generated": 0, "no_face": 0, "silent": 0})


def render(face: str | Path, audio: str | Path, checkpoint: str | Path, out: str | Path,
           config: RenderConfig = RenderConfig(), stats: str | Path | None = None
           ) -> RenderSummary:
    started, cpu, timer = time.perf_counter(), cpu_seconds(), Timer()
    out = check_writable(not_an_input(out, face, audio, checkpoint))
    ckpt, generator = _load(checkpoint, config.engine)
    notes = _arrays_note(checkpoint, ckpt)
    with contextlib.ExitStack() as stack:
        stack.enter_context(opencv_threads())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hygie-render-",
                                                                   dir=out.parent)))
        # the speech is decoded and the mouth library opened (FAISS imported) while the
        # template is probed (the set-up has a core to spare): 0.07 s and 0.05 s of a warm
        # render's first 0.45 s
        setup = stack.enter_context(ThreadPoolExecutor(2, "render-setup"))
        library = setup.submit(library_for, config.hd, config.index, generator, checkpoint)
        speech = setup.submit(_speech, audio, config, tmp, timer)
        job = _open(face, library, speech, config, tmp, timer, generator.pixel_format)
        stack.callback(job.template.close)
        config = dataclasses.replace(config, hd=library.result())
        track = job.template.track
        plan = cached_plan(track, generator.crop_config(), job.template.cache)
        context = StageContext(ckpt, Path(checkpoint), plan,
                               StreamedMel(job.speech), job.n_frames, config.blend,
                               config.engine, config.hd, track.pose_deg, timer, config.fps,
                               job.template.cache, keep_source=config.preview)
        mouth = generator.stages(context)
        stack.callback(mouth.close)
        preview = _encode(job, mouth.stages, config, mouth.batch_size, audio, checkpoint, out)
    # after the template's decoder is closed (and waited): its CPU is counted
    return _summarise(out, job, started, cpu, preview, stats, mouth.info(), generator, notes)


def runs_without_torch(checkpoint: str | Path, engine: EngineConfig) -> bool:
    """Whether a render of ``checkpoint`` can skip torch: a lips run with its arrays (the
    render checks that they fit its checkpoint), or an ONNX render whose export of the
    checkpoint file is cached."""
    if sidecar_path(checkpoint).is_file():
        return True
    if engine.engine != "onnx":
        return False
    from hygie_w2l.export import find_export

    return find_export(checkpoint, engine.int8) is not None


def _load(checkpoint: str | Path, engine: EngineConfig = EngineConfig()
          ) -> tuple[Checkpoint | None, Generator]:
    """The checkpoint and its generator, without the checkpoint where it is not needed:
    torch is never imported then (1.5-3 s of a render's process).

    * a lips run's generator from its arrays where they match its checkpoint (lip_shapes.py);
    * an ONNX render's from what its cached export says of the checkpoint (export.py)."""
    shapes = read_shapes(checkpoint)
    if shapes is not None:
        from hygie_w2l.generators.lips import LipsGenerator

        return None, LipsGenerator(shapes)
    if engine.engine == "onnx":
        from hygie_w2l.export import find_export

        found = find_export(checkpoint, engine.int8)
        if found is not None:
            return None, found.generator()
    from hygie_w2l.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint, expect=GENERATOR_ARCHS)
    return ckpt, generator_for(ckpt)


def _arrays_note(checkpoint: str | Path, ckpt: Checkpoint | None) -> tuple[str, ...]:
    """A lips checkpoint read through torch says how to spare the next render that."""
    if ckpt is None or ckpt.arch != "lips":
        return ()
    return (f"{checkpoint}: no lips arrays beside it (a run written before them), so torch "
            "was imported to read it (2 s); `hygie-w2l train DATASET --arch lips --out RUN "
            "--resume` writes them",)


def _speech(audio: str | Path, config: RenderConfig, tmp: Path, timer: Timer
            ) -> tuple[AudioFile, int, np.ndarray]:
    """Decode the speech (streamed to disk), count the frames it lasts, gate its silences."""
    with timer("decode"):
        speech = AudioFile(audio, tmp)  # streamed: memory does not grow with its length
        n_frames = n_video_frames(speech.n_samples, config.fps)
        return speech, n_frames, silence_gate(speech, n_frames, config.fps, config.silence_db)


def _open(face: str | Path, library: Future[HDConfig | None],
          speech: Future[tuple[AudioFile, int, np.ndarray]], config: RenderConfig, tmp: Path,
          timer: Timer, pix_fmt: PixelFormat) -> _Job:
    """The mouth ``library`` (being opened) and the ``speech`` (being decoded: :func:`_speech`)
    and the template: probed meanwhile, then decoded and tracked (as many frames as will be
    shown, held as ``pix_fmt`` where it can be). A bad library is reported first, then a bad
    speech file, then a bad template, as when each followed the other, and before the
    template is tracked."""
    try:
        info = template_info(face)
    except Exception:
        library.result()  # their own errors, if any, first
        speech.result()
        raise
    library.result()
    audio, n_frames, voiced = speech.result()
    template = load_template(face, config.fps, config.start_s, config.tracker,
                             max_frames=n_frames, use_cache=config.template_cache,
                             pix_fmt=pix_fmt, info=info)
    if not template.track.valid.any():
        template.close()
        raise NoFaceError(f"{face}: no face found in the template. Give a video or photo "
                          "where the face is clearly visible.")

    return _Job(template, audio, voiced, n_frames, timer, tmp)


def _frames(job: _Job, config: RenderConfig, batch_size: int) -> Iterator[list[Frame]]:
    """The reader: template frames in output order, in batches, counted."""
    valid, batch = job.template.track.valid, []
    for k in range(job.n_frames):
        t = template_index(k, job.template.n_frames, config.loop)
        image = np.asarray(job.template.frames[t])  # the template's decoder times this
        active = bool(valid[t] and job.voiced[k])
        job.counts["generated" if active else "silent" if valid[t] else "no_face"] += 1
        batch.append(Frame(k, t, k, image, active, source=image,
                           landmarks=job.template.track.landmarks[t]))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode(job: _Job, stages: list[Stage], config: RenderConfig, batch_size: int,
            audio: str | Path, checkpoint: str | Path, out: Path) -> Path | None:
    """Run the chain into the encoder(s), which mux the speech in, tagged; each output
    appears (atomically) once complete."""
    (h, w), pix_fmt = job.template.hw, job.template.pix_fmt
    tag = synthetic_tag(checkpoint)
    preview = out.with_name(out.stem + ".preview.mp4") if config.preview else None
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(VideoWriter(
            stack.enter_context(atomic_path(out)), w, h, config.fps, config.crf, config.preset,
            pix_fmt, audio, tag))
        side = None if preview is None else stack.enter_context(VideoWriter(
            stack.enter_context(atomic_path(preview)), 2 * w, h, config.fps, config.crf,
            config.preset, audio=audio, metadata=tag))
        bar = tqdm(total=job.n_frames, desc="render", unit="frame", disable=None)
        per_batch, queued = reader_batch(batch_size, int(np.prod(frame_shape(h, w, pix_fmt))))
        for done in run_chain(_frames(job, config, per_batch),
                              [*stages, EncodeStage(writer, side, job.timer)],
                              config.parallel, queued):
            bar.update(len(done))
        bar.close()
        with job.timer("encode"):  # x264's last frames
            writer.close()
            if side is not None:
                side.close()
    return preview


def _notes(job: _Job) -> tuple[str, ...]:
    """What the summary says of the template: its cache, several faces in it."""
    t = job.template
    faces = [t.track.report().splitlines()[-1]] if t.track.multi_face_frames else []
    return tuple(n for n in (t.cache_note, *faces) if n)


def _summarise(out: Path, job: _Job, started: float, cpu: tuple[float, float],
               preview: Path | None,
               stats: str | Path | None, info: dict[str, Any], generator: Generator,
               notes: tuple[str, ...] = ()) -> RenderSummary:
    c = job.counts
    for stage, seconds in job.template.seconds.items():  # decode (and track, when cold)
        job.timer.add(stage, seconds)
    summary = RenderSummary(out, job.n_frames, job.n_frames / FPS, c["generated"],
                            c["no_face"], c["silent"], dict(job.timer.seconds),
                            time.perf_counter() - started, peak_memory_mb(), preview,
                            info.get("hd"), info.get("warning"), info.get("batch_size", 0),
                            info.get("engine_note", ""), generator.arch, _notes(job) + notes,
                            dict(zip(("own", "ffmpeg"), np.subtract(cpu_seconds(), cpu),
                                     strict=True)))
    if stats is not None:
        with atomic_path(stats) as tmp:
            tmp.write_text(json.dumps(summary.to_json(), indent=1))
    return summary
