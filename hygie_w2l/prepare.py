"""``hygie-w2l prepare``: a person's video becomes a training set.

Stages (each resumable; a re-run skips what is done, a changed source or config rebuilds):
  audio  -> audio.wav (16 kHz mono), mel.npy (80, T)
  track  -> landmarks.npy (N, P, 2), status.npy, boxes.npy (smoothed face boxes), pose.npy
  crops  -> face/ (N, 96, 96, 3), mouth/ (N, S, S, 3), mouth_mask/ (N, S, S),
            hd/ (N, h, w, 3), hd_inner_mask/ (N, h, w): chunked uint8, BGR;
            transforms.npz (frame -> crop 2x3 matrices of each crop: crops.plan_crops,
            the recipe render and eval use too)
  split  -> split.json
and meta.json (source hash, fps, counts, config, versions, stages done).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from hygie_w2l import __version__
from hygie_w2l.atomic import atomic_path, not_an_input, replace_folder, writable_folder
from hygie_w2l.audio import FPS, SAMPLE_RATE_HZ, melspectrogram, window_is_complete
from hygie_w2l.crops import CropConfig, CropPlan, plan_crops
from hygie_w2l.doctor import peak_memory_mb
from hygie_w2l.errors import HygieError, InputFileError, OutputError
from hygie_w2l.face_tracker import NoFaceError, Track, TrackerConfig, track_frames
from hygie_w2l.geometry import (
    BoxCalibration,
    inner_mouth_polygon,
    mouth_mask,
    polygon_mask,
    transform_points,
)
from hygie_w2l.media import MediaInfo, load_audio, probe, read_frames
from hygie_w2l.split import make_split
from hygie_w2l.storage import ChunkWriter, read_json
from hygie_w2l.weights import sha256_of

# 2: eye-anchored boxes, fixed generator mask; 3: the crop recipe (crops.CropConfig) in meta
DATASET_FORMAT_VERSION = 3
STAGES = ("audio", "track", "crops", "split")
PARTIAL_SUFFIX = ".partial"  # a dataset being built, or an interrupted build to resume


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    fps: int = FPS
    crops: CropConfig = CropConfig()
    val_fraction: float = 0.2
    tracker: TrackerConfig = TrackerConfig()


class DatasetError(HygieError):
    pass


def _key(sources: list[Path], config: PrepareConfig) -> tuple[str, dict[str, str]]:
    hashes = {p.name: sha256_of(p) for p in sources}
    blob = json.dumps([DATASET_FORMAT_VERSION, hashes, dataclasses.asdict(config)],
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest(), hashes


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def _existing(out: Path) -> dict[str, Any] | None:
    """The metadata of the dataset already at ``out`` (None: nothing there yet); a folder
    that holds something else, or a file, is refused rather than replaced."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, not a dataset folder. Choose a new --out folder.")
    meta_path = out / "meta.json"
    if meta_path.is_file():
        return read_json(meta_path, {"key": str, "stages": dict}, "dataset's metadata",
                         f"Remove the folder {out} (rm -r) or choose another --out.")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists, is not empty and is not a hygie-w2l dataset. "
                           "Choose a new --out folder.")
    return None


def _staging(out: Path, key: str) -> tuple[Path, dict[str, Any]]:
    """The folder the dataset is built in (``OUT.partial``) and its metadata: resumed when
    it holds an interrupted build of this very dataset, else started afresh."""
    stage = out.with_name(out.name + PARTIAL_SUFFIX)
    meta_path = stage / "meta.json"
    if meta_path.is_file():
        meta = read_json(meta_path, {"key": str, "stages": dict}, "dataset's metadata",
                         f"Remove the folder {stage} (rm -r) and run prepare again.")
        if meta["key"] == key:
            print(f"{stage}: resuming an interrupted prepare")
            return stage, meta
    shutil.rmtree(stage, ignore_errors=True)
    writable_folder(stage)
    return stage, {"key": key, "stages": {}}


def _stage_audio(audio_src: Path, out: Path) -> dict[str, Any]:
    wav = load_audio(audio_src)
    with atomic_path(out / "audio.wav") as tmp:
        sf.write(tmp, wav, SAMPLE_RATE_HZ, subtype="PCM_16", format="WAV")
    mel = melspectrogram(wav)
    _save_npy(out / "mel.npy", mel)
    return {"n_samples": int(wav.size), "duration_s": wav.size / SAMPLE_RATE_HZ,
            "n_mel_frames": int(mel.shape[1])}


def _stage_track(video: Path, info: MediaInfo, out: Path, config: PrepareConfig
                 ) -> tuple[Track, dict[str, Any]]:
    n_est = int(round(info.duration_s * config.fps))
    track = track_frames(read_frames(video, fps=config.fps, info=info), config.fps,
                         config.tracker, n_frames=n_est)
    if not track.valid.any():
        raise NoFaceError(f"{video}: no face found in any of its {len(track.status)} frames. "
                          "Give a video where one face is clearly visible (frontal, lit, "
                          "at least ~100 px wide).")
    for name, arr in (("landmarks", track.landmarks), ("status", track.status),
                      ("boxes", track.boxes), ("raw_boxes", track.raw_boxes),
                      ("pose", track.pose_deg)):
        _save_npy(out / f"{name}.npy", arr)
    assert track.calibration is not None
    return track, {"n_frames": len(track.status), "report": track.report(),
                   "box_calibration": track.calibration.to_json(),
                   "multi_face_frames": track.multi_face_frames,
                   "missing_ranges": track.missing_ranges()}


def load_track(out: Path, fps: float, meta: dict[str, Any]) -> Track:
    """The tracking stage's results, read back."""
    return Track(np.load(out / "landmarks.npy"), np.load(out / "status.npy"),
                 np.load(out / "raw_boxes.npy"), np.load(out / "boxes.npy"),
                 np.load(out / "pose.npy"), int(meta["track"]["multi_face_frames"]), fps,
                 BoxCalibration.from_json(meta["track"]["box_calibration"]),
                 int(meta["config"]["tracker"].get("face_index", 0)))


def _crop_writers(out: Path, plan: CropPlan) -> dict[str, ChunkWriter]:
    fs, ms = plan.size("face"), plan.size("mouth")
    return {"face": ChunkWriter(out / "face", (*fs, 3)),
            "mouth": ChunkWriter(out / "mouth", (*ms, 3)),
            "mouth_mask": ChunkWriter(out / "mouth_mask", ms),
            "hd": ChunkWriter(out / "hd", (*plan.hd_hw, 3)),
            "hd_inner_mask": ChunkWriter(out / "hd_inner_mask", plan.hd_hw)}


def _crops_of(frame: np.ndarray, lm: np.ndarray, plan: CropPlan, i: int
              ) -> dict[str, np.ndarray]:
    """Frame i's crops (the recipe's matrices) and its lip masks in them, uint8."""
    ms, hd_hw = plan.size("mouth"), plan.hd_hw
    inner = transform_points(inner_mouth_polygon(lm), plan.hd[i])
    return {"face": plan.cut(frame, "face", i), "mouth": plan.cut(frame, "mouth", i),
            "mouth_mask": (mouth_mask(lm, plan.mouth[i], ms) * 255).astype(np.uint8),
            "hd": plan.cut(frame, "hd", i),
            "hd_inner_mask": (polygon_mask(inner, hd_hw) * 255).astype(np.uint8)}


def _stage_crops(video: Path, info: MediaInfo, out: Path, track: Track,
                 config: PrepareConfig) -> dict[str, Any]:
    plan = plan_crops(track, config.crops)
    writers = _crop_writers(out, plan)
    n, valid = len(track.status), track.valid
    frames = read_frames(video, fps=config.fps, info=info)
    for i, frame in enumerate(tqdm(frames, total=n, desc="cropping", unit="frame",
                                   leave=False, disable=None)):
        if i >= n:
            break
        crops = _crops_of(frame, track.landmarks[i], plan, i) if valid[i] else {
            name: np.zeros(w.frame_shape, np.uint8) for name, w in writers.items()}
        for name, w in writers.items():
            w.append(crops[name])
    for w in writers.values():
        w.close()
    counts = {k: w.n_frames for k, w in writers.items()}
    if len(set(counts.values())) != 1 or counts["face"] != n:
        raise DatasetError(f"{video}: decoded {counts['face']} frames while tracking saw {n}; "
                           "the file changed or is damaged. Run prepare again.")
    with atomic_path(out / "transforms.npz") as tmp:
        plan.to_npz(tmp)
    return {"hd_patch_hw": list(plan.hd_hw), "mouth_width_px_median": plan.mouth_width_px}


def _stage_split(out: Path, track: Track, n_mel: int, config: PrepareConfig,
                 video: Path) -> dict[str, Any]:
    mel_stub = np.zeros((1, n_mel), np.float32)
    audio_ok = np.array([window_is_complete(mel_stub, i, config.fps)
                         for i in range(len(track.status))])
    usable_frames = int(np.flatnonzero(audio_ok).max() + 1) if audio_ok.any() else 0
    split = make_split(usable_frames, config.val_fraction, str(video))
    data = dataclasses.asdict(split)
    _write_json(out / "split.json", data)
    return data


@dataclasses.dataclass(frozen=True)
class PrepareSummary:
    out: Path
    meta: dict[str, Any]
    skipped: bool  # everything was already done

    def text(self) -> str:
        m = self.meta
        lines = [f"dataset {self.out}: {m['n_frames']} frames at {m['fps']} fps, "
                 f"audio {m['audio']['duration_s']:.2f} s",
                 m["track"]["report"],
                 f"split: train frames {m['split']['train']}, validation {m['split']['val']}"
                 f" (guard {m['split']['guard_frames']} frames)"]
        for stage, t in m.get("timings_s", {}).items():
            lines.append(f"  {stage:6s} {t:7.1f} s  ({m['n_frames'] / max(t, 1e-9):.1f} "
                         "frames/s)")
        if "peak_memory_mb" in m:
            lines.append(f"peak memory {m['peak_memory_mb']:.0f} MB")
        return "\n".join(lines)


def prepare(video: str | Path, out: str | Path, audio: str | Path | None = None,
            config: PrepareConfig = PrepareConfig()) -> PrepareSummary:
    """Turn ``video`` (+ ``audio``, else its own sound) into a dataset folder ``out``.

    The dataset is built in ``OUT.partial`` and put at ``out`` only once complete, so a
    failed prepare leaves an existing dataset as it was; an error removes the partial
    folder, an interruption keeps it and the same command resumes it."""
    video, out = Path(video), not_an_input(out, video, audio)
    existing = _existing(out)
    info = probe(video)
    if not info.has_video:
        raise InputFileError(video, "has no video stream", "Give the video of the person.")
    if info.truncated:
        raise InputFileError(video, f"is truncated: it ends before its own index says (only "
                             f"{info.n_frames} of ~{round(info.duration_s * info.fps)} frames "
                             "can be read)", "Re-export or re-download it whole.")
    audio_src = Path(audio) if audio else video
    if audio is None and not info.has_audio:
        raise InputFileError(video, "has no audio stream",
                             "Give the person's speech with --audio speech.wav.")
    make_split(int(info.duration_s * config.fps), config.val_fraction, str(video))  # fail early
    sources = [video] if audio_src == video else [video, audio_src]
    key, hashes = _key(sources, config)
    if existing is not None and existing["key"] == key and \
            all(s in existing["stages"] for s in STAGES):
        return PrepareSummary(out, existing, skipped=True)
    if existing is not None:
        print(f"{out}: source or config changed since it was prepared; rebuilding (the "
              "old dataset stays until the new one is complete)")
    stage, meta = _staging(out, key)
    meta.update({"format_version": DATASET_FORMAT_VERSION, "source": str(video),
                 "audio_source": str(audio_src), "source_sha256": hashes, "fps": config.fps,
                 "config": dataclasses.asdict(config),
                 "versions": _versions(), "source_info": {
                     "width": info.width, "height": info.height, "fps": info.fps,
                     "variable_frame_rate": info.variable_frame_rate,
                     "rotation_deg": info.rotation_deg}})
    try:
        _run_stages(video, audio_src, info, stage, meta, config)
    except HygieError:
        shutil.rmtree(stage, ignore_errors=True)  # nothing of a failed prepare remains
        raise
    except KeyboardInterrupt:
        print(f"prepare stopped: the work done is kept in {stage}; run the same command to "
              "resume it.", file=sys.stderr)
        raise
    replace_folder(stage, out)
    return PrepareSummary(out, meta, skipped=False)


def _run_stages(video: Path, audio_src: Path, info: MediaInfo, out: Path,
                meta: dict[str, Any], config: PrepareConfig) -> None:
    """Each stage not done yet, its results and the metadata written as it ends."""
    timings = meta.setdefault("timings_s", {})
    track = None
    for stage in STAGES:
        if stage in meta["stages"]:
            continue
        start = time.perf_counter()
        if stage == "audio":
            meta["audio"] = _stage_audio(audio_src, out)
        elif stage == "track":
            track, meta["track"] = _stage_track(video, info, out, config)
            meta["n_frames"] = meta["track"]["n_frames"]
        else:
            track = track or load_track(out, config.fps, meta)
            if stage == "crops":
                meta["crops"] = _stage_crops(video, info, out, track, config)
            else:
                meta["split"] = _stage_split(out, track, meta["audio"]["n_mel_frames"],
                                             config, video)
        timings[stage] = time.perf_counter() - start
        meta["stages"][stage] = True
        meta["peak_memory_mb"] = peak_memory_mb()
        _write_json(out / "meta.json", meta)


def _versions() -> dict[str, str]:
    import cv2
    import mediapipe
    import torch

    return {"hygie_w2l": __version__, "dataset_format": str(DATASET_FORMAT_VERSION),
            "mediapipe": mediapipe.__version__, "opencv": cv2.__version__,
            "torch": str(torch.__version__), "numpy": np.__version__}
