"""The HD render stage: the person's own real high-resolution mouths replace blurry
generated ones.

The descriptor of each *generated* mouth (MediaPipe landmarks on the pasted-back frame)
finds its k nearest real mouths in the library (library.py); the temporal pass
(temporal.py) picks one per frame; compose.py warps it onto the generated lip contour and
blends the inner mouth (teeth, tongue; with ``lips`` the lips too) into the frame.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from hygie_w2l.blend import BlendMode
from hygie_w2l.chain import Frame, Timer
from hygie_w2l.compose import compose
from hygie_w2l.errors import HygieError
from hygie_w2l.library import IndexError_, MouthLibrary, describe_frame
from hygie_w2l.temporal import TemporalChooser
from hygie_w2l.types import Landmarks


@dataclasses.dataclass
class _Waiting:
    """A frame held by the HD stage until the temporal pass has chosen its mouth."""

    frame: Frame
    landmarks: Landmarks | None  # the generated mouth's landmarks (None: passed through)
    choice: tuple[int, float] | None = None  # (library entry, distance)


def default_library(checkpoint: str | Path, root: str | Path = "retrieval") -> Path:
    """The library for a checkpoint when --index is not given: retrieval/NAME for the run
    folder NAME holding it (runs/NAME/generator/best.pt), else the only library there."""
    root, ckpt = Path(root), Path(checkpoint).resolve()
    for part in (ckpt, *ckpt.parents):
        candidate = root / part.name
        if part.name and (candidate / "meta.json").is_file():
            return candidate
    libraries = sorted(p.parent for p in root.glob("*/meta.json"))
    if len(libraries) == 1:
        return libraries[0]
    found = ", ".join(map(str, libraries)) or "none"
    raise IndexError_(f"--hd-retrieval: no mouth library found for {checkpoint} (libraries in "
                      f"{root}/: {found}). Build one with `hygie-w2l index runs/NAME/dataset "
                      "--out retrieval/NAME` and pass --index retrieval/NAME.")


@dataclasses.dataclass(frozen=True)
class HDConfig:
    index: Path
    strength: float = 1.0  # 0: generated pixels only, 1: retrieved pixels only
    lips: bool = False  # replace the lips too, not only teeth and tongue
    k: int = 8  # candidates per frame for the temporal pass
    lag: int = 8  # frames of look-ahead of the temporal pass
    switch_cost: float = 0.15  # descriptor units
    follow_bonus: float = 0.05
    far_factor: float = 2.0  # warn when distances exceed this x the library's typical one


class HDStage:
    """The render stage between blending and encoding: frames go in in order and come out
    in order, ``lag`` frames later, with their inner mouth replaced by a real HD one."""

    def __init__(self, config: HDConfig, mode: BlendMode, timer: Timer) -> None:
        from hygie_w2l.face_tracker import FaceMeshDetector

        if not 0.0 <= config.strength <= 1.0:
            raise HygieError(f"--hd-strength {config.strength}: give a value from 0 to 1.")
        self.config, self.mode, self.timer = config, mode, timer
        self.library = MouthLibrary(config.index)
        self.chooser = TemporalChooser(self.library.follows(), config.lag, config.switch_cost,
                                       config.follow_bonus)
        self.detector = FaceMeshDetector(video=True)
        self.queue: deque[_Waiting] = deque()
        self.records: list[dict[str, Any]] = []
        self.missed = 0  # generated frames where MediaPipe found no face: left as generated

    def push(self, frames: list[Frame]) -> list[Frame]:
        with self.timer("hd"):
            for f in frames:
                self._push_one(f)
            return self._ready()

    def finish(self) -> list[Frame]:
        with self.timer("hd"):
            self._assign(self.chooser.flush())
            return self._ready()

    def close(self) -> None:
        self.detector.close()

    def _push_one(self, f: Frame) -> None:
        lm = self.detector.detect(f.image) if f.active else None
        if f.active and lm is None:
            self.missed += 1
        if lm is None:
            self._assign(self.chooser.flush())
            self.queue.append(_Waiting(f, None))
            return
        shape, pixels, _ = describe_frame(f.image, lm, self.library.patch_hw)
        d, ids = self.library.search(self.library.space(shape[None], pixels[None]),
                                     self.config.k)
        self.queue.append(_Waiting(f, lm))
        self._assign(self.chooser.push(d[0], ids[0]))

    def _assign(self, choices: list[tuple[int, float]]) -> None:
        waiting = (w for w in self.queue if w.landmarks is not None and w.choice is None)
        for choice, w in zip(choices, waiting, strict=False):
            w.choice = choice

    def _ready(self) -> list[Frame]:
        out = []
        while self.queue and (self.queue[0].landmarks is None
                              or self.queue[0].choice is not None):
            w = self.queue.popleft()
            if w.landmarks is not None and w.choice is not None:
                self._compose(w.frame, w.landmarks, *w.choice)
            out.append(w.frame)
        return out

    def _compose(self, f: Frame, lm: Landmarks, j: int, dist: float) -> None:
        f.image = compose(f.image, lm, self.library.patches[j], self.library.points[j],
                          self.config.strength, self.config.lips, self.mode)
        src = self.library.sources[j]
        self.records.append({"frame": f.k, "entry": j, "distance": round(dist, 4),
                             "source": [int(src[0]), int(src[1])]})

    def summary(self) -> dict[str, Any]:
        d = np.array([r["distance"] for r in self.records])
        entries = [r["entry"] for r in self.records]
        typical = self.library.typical_distance
        far = int((d > self.config.far_factor * typical).sum()) if len(d) else 0
        return {"index": str(self.config.index), "frames": len(self.records),
                "missed": self.missed, "library_size": len(self.library),
                "median_distance": float(np.median(d)) if len(d) else None,
                "typical_distance": typical, "far_frames": far,
                "distinct_entries": len(set(entries)),
                "switches": int(sum(a != b and b != a + 1 for a, b in
                                    zip(entries, entries[1:], strict=False))),
                "per_frame": self.records}

    def warning(self) -> str | None:
        s = self.summary()
        if s["frames"] and s["far_frames"] > 0.25 * s["frames"]:
            return (f"HD retrieval: {s['far_frames']} of {s['frames']} frames found no close "
                    f"real mouth (distance > {self.config.far_factor:g} x the library's typical "
                    f"{s['typical_distance']:.2f}); the library is too small for this audio: "
                    "index a longer video of the person (hygie-w2l index DATASET ...).")
        return None
