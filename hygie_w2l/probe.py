"""``hygie-w2l probe VIDEO --out probe.png``: is this video good for training?

Tracks the whole video and draws a contact sheet of a few frames with the landmarks, the lip
hull, the face crop box and the mouth mask; prints detection rate, face size, head-pose range
and frame rate, with warnings for a small face or a head that turns too far.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from hygie_w2l.atomic import atomic_path
from hygie_w2l.audio import FPS
from hygie_w2l.errors import OutputError
from hygie_w2l.face_tracker import Track, TrackerConfig, track_frames
from hygie_w2l.geometry import FACE_CROP_PX, IDENTITY, SquareBox, box_affine, mouth_mask, warp
from hygie_w2l.landmarks import outer_inner_rings
from hygie_w2l.media import probe as probe_media
from hygie_w2l.media import read_frames

MIN_FACE_PX = FACE_CROP_PX  # below this the 96-px crop is upsampled: blurry mouths
MAX_YAW_DEG = 35.0
MAX_PITCH_DEG = 25.0
SHEET_TILE_PX = 360


@dataclasses.dataclass(frozen=True)
class ProbeReport:
    detection_rate: float
    face_px_median: float
    pose_range_deg: dict[str, tuple[float, float]]
    fps: float
    n_frames: int
    warnings: list[str]
    track_report: str

    def text(self) -> str:
        pose = ", ".join(f"{k} {a:+.0f}..{b:+.0f} deg" for k, (a, b) in
                         self.pose_range_deg.items())
        lines = [f"{self.n_frames} frames at {self.fps:g} fps; {self.track_report}",
                 f"face size {self.face_px_median:.0f} px (median box side); head pose {pose}"]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _warnings(track: Track, face_px: float) -> list[str]:
    out = []
    if face_px < MIN_FACE_PX:
        out.append(f"the face is small ({face_px:.0f} px < {MIN_FACE_PX} px): mouths will be "
                   "blurry; film closer or at a higher resolution")
    yaw, pitch = np.nanmax(np.abs(track.pose_deg[:, 0])), np.nanmax(np.abs(track.pose_deg[:, 1]))
    if yaw > MAX_YAW_DEG:
        out.append(f"the head turns up to {yaw:.0f} deg sideways (> {MAX_YAW_DEG:.0f}): "
                   "profile frames sync poorly; prefer a frontal take")
    if pitch > MAX_PITCH_DEG:
        out.append(f"the head tilts up to {pitch:.0f} deg up/down (> {MAX_PITCH_DEG:.0f})")
    if track.missing_ranges():
        out.append("some frames have no face (see above); they are skipped in training")
    return out


def draw_overlay(frame: np.ndarray, landmarks: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The frame with landmarks (dots), lip rings, the face crop box and the mouth mask."""
    out = frame.copy()
    mask = mouth_mask(landmarks, IDENTITY, (frame.shape[0], frame.shape[1]))
    out[mask > 0.5] = (0.5 * out[mask > 0.5] + [0, 0, 127]).astype(np.uint8)
    for x, y in landmarks.astype(int):
        cv2.circle(out, (int(x), int(y)), 1, (0, 255, 0), -1)
    for ring, colour in zip(outer_inner_rings(landmarks), ((255, 0, 255), (255, 255, 0)),
                            strict=True):
        cv2.polylines(out, [np.round(ring).astype(np.int32)], True, colour, 1)
    x1, y1, x2, y2 = SquareBox.from_array(box).xyxy()
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 255), 2)
    return out


def _tile(frame: np.ndarray, caption: str) -> np.ndarray:
    h, w = frame.shape[:2]
    s = SHEET_TILE_PX / max(h, w)
    small = cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    tile = np.zeros((SHEET_TILE_PX, SHEET_TILE_PX, 3), np.uint8)
    tile[:small.shape[0], :small.shape[1]] = small
    cv2.putText(tile, caption, (6, SHEET_TILE_PX - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def probe_video(video: str | Path, out_png: str | Path, n_tiles: int = 6, fps: float = FPS,
                config: TrackerConfig = TrackerConfig()) -> ProbeReport:
    info = probe_media(video)
    track = track_frames(read_frames(video, fps=fps, info=info), fps, config,
                         n_frames=int(round(info.duration_s * fps)))
    n = len(track.status)
    picks = set(np.linspace(0, n - 1, n_tiles).round().astype(int).tolist())
    tiles = []
    for i, frame in enumerate(read_frames(video, fps=fps, info=info)):
        if i in picks:
            caption = f"{i / fps:.2f} s  {'face' if track.valid[i] else 'NO FACE'}"
            if track.valid[i]:
                drawn = draw_overlay(frame, track.landmarks[i], track.boxes[i])
                cx, cy, side = track.boxes[i]
                zoom = warp(drawn, box_affine(SquareBox(cx, cy, 1.5 * side), SHEET_TILE_PX),
                            (SHEET_TILE_PX, SHEET_TILE_PX))
            else:
                drawn, zoom = frame, np.zeros((SHEET_TILE_PX, SHEET_TILE_PX, 3), np.uint8)
            tiles.append(np.hstack([_tile(drawn, caption), zoom]))
    cols = 2
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)])
    with atomic_path(out_png) as tmp:
        if not cv2.imwrite(str(tmp), sheet):
            raise OutputError(f"{out_png}: could not write the image; use a .png or .jpg name.")
    valid = track.valid
    sides = track.boxes[valid, 2] if valid.any() else np.array([0.0])
    pose = {name: (float(np.nanmin(track.pose_deg[:, k])), float(np.nanmax(track.pose_deg[:, k])))
            if valid.any() else (0.0, 0.0) for k, name in enumerate(("yaw", "pitch", "roll"))}
    face_px = float(np.median(sides))
    return ProbeReport(float(valid.mean()), face_px, pose, fps, n,
                       _warnings(track, face_px) if valid.any() else
                       ["no face found in any frame"], track.report())
