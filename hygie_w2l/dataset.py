"""A prepared dataset read back, and training samples drawn from it.

* :class:`PreparedDataset`: the folder ``hygie-w2l prepare`` wrote, memory-mapped.
* :class:`Sampler`: what every training sampler shares (seeded items, bounded retries);
  each generator's own sampler lives beside it in hygie_w2l/generators/. A sample is a
  tuple of float32 numpy arrays, which torch's DataLoader batches into tensors: nothing
  here imports torch, so a render that only crops and runs an exported model never does.
* :class:`SyncDataset` (expert): 5 consecutive lower-half faces with in-sync or off-sync
  audio. faces (15, 48, 96) float32 in [0, 1] (5 BGR frames stacked on channels, frame
  major, as the official code), mel (1, 80, 16), label (1,) 1.0 in sync / 0.0 off.

Images stay BGR like the official release (it trained on cv2 images). Samples are drawn only
where split.valid_starts allows: no sample reads across the train/validation guard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hygie_w2l.audio import SYNC_T, mel_window
from hygie_w2l.crops import CropConfig, CropPlan
from hygie_w2l.errors import HygieError
from hygie_w2l.face_tracker import STATUS_MISSING
from hygie_w2l.geometry import FACE_CROP_PX, mouth_mask
from hygie_w2l.prepare import DATASET_FORMAT_VERSION
from hygie_w2l.split import Split, valid_starts
from hygie_w2l.storage import ChunkedArray, Schema, read_json

MAX_CONSECUTIVE_FAILURES = 20
META_SCHEMA: Schema = {"format_version": int, "stages": dict, "fps": (int, float), "key": str,
                       "source": str, "config": dict, "crops": dict, "track": dict}


class DatasetVersionError(HygieError):
    pass


class PreparedDataset:
    """A dataset folder written by ``hygie-w2l prepare``, memory-mapped."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        fix = f"Prepare it again: `hygie-w2l prepare VIDEO --out {self.root}`."
        if not meta_path.is_file():
            raise HygieError(f"{self.root}: not a prepared dataset (no meta.json). Run "
                             f"`hygie-w2l prepare VIDEO --out {self.root}` first.")
        self.meta = read_json(meta_path, {"format_version": int, "stages": dict},
                              "dataset's metadata", fix)
        version = self.meta.get("format_version")
        if version != DATASET_FORMAT_VERSION:
            raise DatasetVersionError(
                f"{self.root}: dataset format {version}, this hygie-w2l reads format "
                f"{DATASET_FORMAT_VERSION}. Prepare it again with this version.")
        if not all(self.meta["stages"].get(s) for s in ("audio", "track", "crops", "split")):
            raise HygieError(f"{self.root}: preparation did not finish. Run prepare again "
                             "(it resumes).")
        read_json(meta_path, META_SCHEMA, "dataset's metadata", fix)
        split = read_json(self.root / "split.json", {"train": list, "val": list,
                                                      "guard_frames": int},
                          "dataset's split", fix)
        try:
            self.fps = float(self.meta["fps"])
            self.mel = np.load(self.root / "mel.npy")
            self.landmarks = np.load(self.root / "landmarks.npy", mmap_mode="r")
            self.status = np.load(self.root / "status.npy")
            self.pose = np.load(self.root / "pose.npy")  # (N, 3) yaw, pitch, roll degrees
            self.plan = _load_plan(self.root, self.meta)
            self.split = Split(tuple(split["train"]), tuple(split["val"]),
                               split["guard_frames"])
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            raise HygieError(f"{self.root}: the dataset is damaged ({type(exc).__name__}: "
                             f"{exc}). {fix}") from exc
        self._arrays: dict[str, ChunkedArray] = {}
        self.n_frames = len(self.status)
        self.usable = self.status != STATUS_MISSING
        self.skipped_samples = 0

    def array(self, name: str) -> ChunkedArray:
        if name not in self._arrays:
            self._arrays[name] = ChunkedArray(self.root / name)
        return self._arrays[name]

    def starts(self, split: str) -> np.ndarray:
        return valid_starts(self.split.segment(split), self.usable)

    def mels(self, first: int, n: int) -> np.ndarray:
        """Per-frame (train-aligned) windows of frames first..first+n-1: (n, 1, 80, 16)."""
        return np.stack([mel_window(self.mel, i, self.fps)[None] for i in range(first, first + n)])

    def sync_mel(self, first: int) -> np.ndarray:
        """The 0.2 s of audio under frames first..first+4 (the expert's window): (1, 80, 16)."""
        return mel_window(self.mel, first + 2, self.fps)[None]

    def face_mouth_mask(self, i: int, size_px: int = FACE_CROP_PX) -> np.ndarray:
        return mouth_mask(np.asarray(self.landmarks[i]), self.plan.face[i],
                          (size_px, size_px))


def _load_plan(root: Path, meta: dict[str, Any]) -> CropPlan:
    """The crop matrices prepare stored (crops.plan_crops of the dataset's track)."""
    arrays = np.load(root / "transforms.npz")
    crops = meta["crops"]
    h, w = crops["hd_patch_hw"]
    config = CropConfig(**meta["config"]["crops"])
    return CropPlan(arrays["face"], arrays["mouth"], arrays["hd"], arrays["lips"],
                    (int(h), int(w)), float(crops["mouth_width_px_median"]), config)


class Sampler:
    """Shared: a seeded random generator per item, bounded retries on unreadable samples
    (a map-style dataset for torch's DataLoader)."""

    def __init__(self, data: PreparedDataset, split: str, length: int | None = None,
                 seed: int = 0) -> None:
        self.data, self.split, self.seed = data, split, seed
        self.starts = data.starts(split)
        if len(self.starts) < 2:
            raise HygieError(f"{data.root}: the {split} split has {len(self.starts)} usable "
                             "samples; give a longer video with the face visible.")
        self.length = length or len(self.starts)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng((self.seed, index))
        for _ in range(MAX_CONSECUTIVE_FAILURES):
            start = int(self.starts[rng.integers(len(self.starts))])
            try:
                return self.sample(start, rng)
            except (OSError, ValueError) as exc:  # an unreadable chunk: count, try another
                self.data.skipped_samples += 1
                last = exc
        raise HygieError(f"{self.data.root}: {MAX_CONSECUTIVE_FAILURES} samples in a row could "
                         f"not be read ({last}); the dataset is damaged, prepare it again.")

    def sample(self, start: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def far_start(self, start: int, rng: np.random.Generator) -> int:
        """Another sample start of the split, at least a sync window away from ``start``."""
        far = self.starts[np.abs(self.starts - start) >= 2 * SYNC_T]
        return int(far[rng.integers(len(far))]) if len(far) else int(self.starts[0])


def window(arr: ChunkedArray, start: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float32 in [0, 1]."""
    return (arr.take(range(start, start + SYNC_T)).astype(np.float32) / 255.0).transpose(
        3, 0, 1, 2)


class SyncDataset(Sampler):
    def sample(self, start: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        in_sync = bool(rng.integers(2))
        audio_start = start if in_sync else self.far_start(start, rng)
        frames = self.data.array("face").take(range(start, start + SYNC_T))  # (5, 96, 96, 3)
        faces = np.concatenate(list(frames), axis=2).transpose(2, 0, 1) / 255.0  # (15, 96, 96)
        faces = faces[:, faces.shape[1] // 2:]
        return (faces.astype(np.float32), self.data.sync_mel(audio_start),
                np.array([float(in_sync)], np.float32))
