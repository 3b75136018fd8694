"""The one crop recipe: a track (landmarks per frame) -> every crop's frame -> crop matrix.

``prepare`` (training crops), ``render`` (the template's crops) and ``eval`` (held-out
frames) all call :func:`plan_crops`, so the generator is fed at render exactly the crops it
saw in training: the same eye-anchored boxes, smoothed over time the same way.

* face: the Wav2Lip face crop, ``face_px`` square on the One-Euro smoothed face box;
* mouth: the FiLM U-Net mouth crop, ``mouth_px`` square on the eye-placed lip box, smoothed
  by a zero-phase EMA (forwards then backwards: no lag);
* hd: the native-resolution mouth patch in the canonical mouth frame (a similarity that
  puts this frame's mouth corners at fixed points; ``hd_hw`` follows the video's median
  mouth width), for the mouth library;
* lips: the same canonical frame placed from the skull instead (the video's median
  corners relative to the eyes and nose, smoothed like the mouth box), so it does not move
  when this frame's mouth opens, narrows or drops: the frame in which lip shapes predicted
  from audio are placed into a template.

Matrices are (N, 2, 3) float64, NaN where the frame has no face (the geometry of each crop
is in geometry.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from hygie_w2l.cache import digest
from hygie_w2l.face_tracker import Track
from hygie_w2l.geometry import (
    FACE_CROP_PX,
    BoxCalibration,
    MouthAnchor,
    SquareBox,
    box_affine,
    corner_affines,
    hd_affines,
    hd_patch_size,
    placed_boxes,
    warp,
    warp_interpolation,
)
from hygie_w2l.landmarks import mouth_widths
from hygie_w2l.pixels import warp_affine
from hygie_w2l.types import CropKind, Image

MOUTH_CROP_PX = 128  # the FiLM U-Net's default mouth crop


@dataclasses.dataclass(frozen=True)
class CropConfig:
    face_px: int = FACE_CROP_PX
    mouth_px: int = MOUTH_CROP_PX
    mouth_ema: float = 0.6  # weight of the previous mouth box (zero-phase EMA); 0: none


@dataclasses.dataclass(frozen=True)
class CropPlan:
    """Per-frame frame -> crop matrices of every crop kind, and the crops' sizes."""

    face: np.ndarray  # (N, 2, 3) float64, NaN where no face
    mouth: np.ndarray
    hd: np.ndarray
    lips: np.ndarray
    hd_hw: tuple[int, int]  # (h, w) of the HD patch
    mouth_width_px: float  # median corner-to-corner width over the video's faces
    config: CropConfig = CropConfig()

    def __len__(self) -> int:
        return len(self.face)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The plan as named arrays (kept in the template cache), its config aside."""
        return {"face": self.face, "mouth": self.mouth, "hd": self.hd, "lips": self.lips,
                "sizes": np.array([*self.hd_hw, self.mouth_width_px], np.float64)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], config: CropConfig) -> CropPlan:
        """:meth:`to_arrays` read back (KeyError, ValueError: not a plan's)."""
        h, w, width = (float(v) for v in a["sizes"])
        if not (len(a["face"]) == len(a["mouth"]) == len(a["hd"]) == len(a["lips"])):
            raise ValueError("a crop plan's arrays disagree on its length")
        return cls(a["face"], a["mouth"], a["hd"], a["lips"], (int(h), int(w)), width, config)

    def matrices(self, kind: CropKind) -> np.ndarray:
        return {"face": self.face, "mouth": self.mouth, "hd": self.hd, "lips": self.lips}[kind]

    def size(self, kind: CropKind) -> tuple[int, int]:
        """(h, w) of a crop of ``kind``."""
        if kind in ("hd", "lips"):
            return self.hd_hw
        side = self.config.face_px if kind == "face" else self.config.mouth_px
        return side, side

    def cut(self, image: Image, kind: CropKind, i: int) -> Image:
        """Frame ``i``'s crop of ``kind`` (BGR) from its picture ``image`` (BGR, or I420:
        only the part the crop reads is converted, pixels.py)."""
        if image.ndim == 3:
            return warp(image, self.matrices(kind)[i], self.size(kind))
        m, (h, w) = self.matrices(kind)[i], self.size(kind)
        return warp_affine(image, m, (w, h), warp_interpolation(m))

    def with_config(self, config: CropConfig) -> CropPlan:
        """The same boxes cut at another crop size (a crop matrix scales with its size);
        the smoothing, a property of the boxes, stays what it was."""
        return dataclasses.replace(
            self, face=self.face * (config.face_px / self.config.face_px),
            mouth=self.mouth * (config.mouth_px / self.config.mouth_px),
            config=dataclasses.replace(config, mouth_ema=self.config.mouth_ema))

    def to_npz(self, path: Path) -> None:
        np.savez(path, face=self.face, mouth=self.mouth, hd=self.hd, lips=self.lips)


def zero_phase_ema(values: np.ndarray, alpha: float) -> np.ndarray:
    """(N, k) rows EMA-smoothed forwards then backwards (no lag); a NaN row (no face)
    restarts the filter and stays NaN."""
    out = np.array(values, np.float64)
    for order in (range(len(out)), range(len(out) - 1, -1, -1)):
        prev = None
        for i in order:
            if np.isnan(out[i]).any():
                prev = None
                continue
            out[i] = out[i] if prev is None else alpha * prev + (1 - alpha) * out[i]
            prev = out[i]
    return out


def smooth_mouth_boxes(landmarks: np.ndarray, valid: np.ndarray, alpha: float,
                       calibration: BoxCalibration) -> np.ndarray:
    """(N, 3) mouth boxes (cx, cy, side) placed on the eyes, EMA-smoothed forwards then
    backwards (no lag); NaN where invalid."""
    raw = np.full((len(landmarks), 3), np.nan)
    idx = np.flatnonzero(valid)
    raw[idx] = placed_boxes(landmarks[idx], calibration.mouth)
    return zero_phase_ema(raw, alpha)


def anchored_lips(landmarks: np.ndarray, valid: np.ndarray, alpha: float,
                  patch_hw: tuple[int, int]) -> np.ndarray:
    """(N, 2, 3) frame -> canonical mouth frame matrices placed from the skull (the video's
    median corners relative to the eyes and nose), the corners smoothed like the mouth
    box."""
    anchor = MouthAnchor.calibrate(landmarks, valid)
    idx = np.flatnonzero(valid)
    corners = np.full((len(landmarks), 4), np.nan)
    corners[idx] = np.concatenate(anchor.place(landmarks[idx]), axis=1)
    corners = zero_phase_ema(corners, alpha)
    out = np.full((len(landmarks), 2, 3), np.nan)
    out[idx] = corner_affines(corners[idx, :2], corners[idx, 2:], patch_hw)
    return out


def cached_plan(track: Track, config: CropConfig, store: DerivedStore | None) -> CropPlan:
    """:func:`plan_crops`, read back from ``store`` (a template's cache) when the last render
    of as many frames of it (the same track: cache.py) made it with the same config, and kept
    there otherwise (one plan per config: the last one made)."""
    settings = json.dumps(dataclasses.asdict(config), sort_keys=True)
    name = f"crops{PLAN_CACHE_VERSION}-{digest(settings)[:12]}"
    source = digest(*track.to_arrays().values(), name)  # the track it was made of
    kept = store.derived(name, source) if store is not None else None
    if kept is not None:
        with contextlib.suppress(KeyError, ValueError, TypeError, IndexError):
            return CropPlan.from_arrays(kept, config)
    plan = plan_crops(track, config)
    if store is not None:
        store.save_derived(name, source, plan.to_arrays())
    return plan


PLAN_CACHE_VERSION = 1  # bump when plan_crops changes what it computes


class DerivedStore(Protocol):
    """Where results derived from a template's tracking are kept (cache.TemplateCache)."""

    def derived(self, name: str, source: str) -> dict[str, np.ndarray] | None: ...

    def save_derived(self, name: str, source: str, arrays: dict[str, np.ndarray]) -> None: ...


def plan_crops(track: Track, config: CropConfig = CropConfig()) -> CropPlan:
    """Every crop matrix of every frame of ``track`` (the single recipe, smoothing included)."""
    n, valid, lm = len(track.status), track.valid, track.landmarks
    face, mouth, hd = (np.full((n, 2, 3), np.nan) for _ in range(3))
    if not valid.any() or track.calibration is None:
        return CropPlan(face, mouth, hd, hd.copy(), (8, 8), float("nan"), config)
    idx = np.flatnonzero(valid)
    width = float(np.median(mouth_widths(lm[idx])))
    hd_hw = hd_patch_size(width)
    boxes = smooth_mouth_boxes(lm, valid, config.mouth_ema, track.calibration)
    for i in idx:
        face[i] = box_affine(SquareBox.from_array(track.boxes[i]), config.face_px)
        mouth[i] = box_affine(SquareBox.from_array(boxes[i]), config.mouth_px)
    hd[idx] = hd_affines(lm[idx], hd_hw)
    lips = anchored_lips(lm, valid, config.mouth_ema, hd_hw)
    return CropPlan(face, mouth, hd, lips, hd_hw, width, config)
