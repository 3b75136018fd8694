"""Lip topology of the MediaPipe face mesh and measures taken on landmark sets.

The lip indices come from MediaPipe's own ``FACEMESH_LIPS`` connections, never from a
hand-written list: its edges form two closed rings (outer and inner lip contour), found here
as the graph's connected components and ordered by walking each ring.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

from hygie_w2l.types import Landmarks


@functools.cache
def mesh_connections() -> ModuleType:
    """MediaPipe's ``face_mesh_connections`` (the mesh topology: lips, eyes, face oval),
    read from the installed wheel without importing the mediapipe package, whose start-up
    (TensorFlow Lite, protobuf: seconds) a render with cached tracking does not need."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("mediapipe is not installed: pip install mediapipe==0.10.21")
    path = (Path(next(iter(spec.submodule_search_locations))) / "python" / "solutions"
            / "face_mesh_connections.py")
    source = importlib.util.spec_from_file_location("hygie_face_mesh_connections", path)
    assert source is not None and source.loader is not None
    module = importlib.util.module_from_spec(source)
    source.loader.exec_module(module)
    return module


@functools.cache
def lip_rings() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The two lip contours as ordered index cycles: (ring_a, ring_b), not yet outer/inner."""
    neighbours: dict[int, list[int]] = {}
    for a, b in mesh_connections().FACEMESH_LIPS:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    rings: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for start in sorted(neighbours):
        if start in seen:
            continue
        ring, prev, cur = [start], -1, start
        while True:
            nxt = next(n for n in neighbours[cur] if n != prev)
            if nxt == start:
                break
            ring.append(nxt)
            prev, cur = cur, nxt
        seen.update(ring)
        rings.append(tuple(ring))
    if len(rings) != 2:
        raise RuntimeError(f"FACEMESH_LIPS should form 2 rings, found {len(rings)}")
    return rings[0], rings[1]


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


IBUG_OUTER_LIPS = tuple(range(48, 60))  # the 68-point (iBUG) layout of face-alignment
IBUG_INNER_LIPS = tuple(range(60, 68))


def outer_inner_rings(landmarks: Landmarks) -> tuple[np.ndarray, np.ndarray]:
    """(outer, inner) lip contours of one face, (K, 2); the inner one encloses less.

    Works on MediaPipe's 478 (or 468) points and on face-alignment's 68.
    """
    landmarks = landmarks[:, :2]
    if len(landmarks) == 68:
        return landmarks[list(IBUG_OUTER_LIPS)], landmarks[list(IBUG_INNER_LIPS)]
    a, b = lip_rings()
    pa, pb = landmarks[list(a)], landmarks[list(b)]
    return (pa, pb) if polygon_area(pa) >= polygon_area(pb) else (pb, pa)


def outer_rings(landmarks: np.ndarray) -> np.ndarray:
    """:func:`outer_inner_rings`' outer contour for the landmarks of N frames: (N, K, 2)."""
    lm = landmarks[..., :2]
    if lm.shape[1] == 68:
        return lm[:, list(IBUG_OUTER_LIPS)]
    a, b = (lm[:, list(ring)] for ring in lip_rings())
    area = [0.5 * np.abs((r[..., 0] * np.roll(r[..., 1], -1, 1)).sum(1)
                         - (r[..., 1] * np.roll(r[..., 0], -1, 1)).sum(1))
            for r in (a.astype(np.float64), b.astype(np.float64))]
    return np.where((area[0] >= area[1])[:, None, None], a, b)


def farthest_pairs(rings: np.ndarray) -> np.ndarray:
    """(N, 2, 2): the two points farthest apart of each ring (N, K, 2), in ring order."""
    d = ((rings[:, :, None] - rings[:, None]) ** 2).sum(-1)  # (N, K, K)
    i, j = np.unravel_index(d.reshape(len(rings), -1).argmax(1), d.shape[1:])
    n = np.arange(len(rings))
    return np.stack([rings[n, i], rings[n, j]], 1)


def mouth_axes_of(outer: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mouth_axes` of N outer rings (N, K, 2): centres, u and v axes, each (N, 2)."""
    centre = outer.mean(axis=1)
    pairs = farthest_pairs(outer)
    pi, pj = pairs[:, 0], pairs[:, 1]
    first = (pi[:, 0] <= pj[:, 0])[:, None]
    left, right = np.where(first, pi, pj), np.where(first, pj, pi)
    u = (right - left) / np.maximum(np.linalg.norm(right - left, axis=1), 1e-6)[:, None]
    return centre, u, np.stack([-u[:, 1], u[:, 0]], 1)


def mouth_axes(outer: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, unit horizontal axis (corner to corner) and unit vertical axis (pointing down
    the image when the face is upright) of a mouth's outer ring (K, 2)."""
    centre, u, v = mouth_axes_of(outer[None])
    return centre[0], u[0], v[0]


def mouth_widths(landmarks: np.ndarray) -> np.ndarray:
    """:func:`mouth_width` of N frames (N, P, 2): (N,)."""
    outer = outer_rings(landmarks)
    _, u, _ = mouth_axes_of(outer)
    proj = np.einsum("nkd,nd->nk", outer, u)
    return proj.max(1) - proj.min(1)


def mouth_width(landmarks: Landmarks) -> float:
    """Corner-to-corner width of the outer lip contour, in pixels."""
    return float(mouth_widths(landmarks[None])[0])


def mouth_opening(landmarks: Landmarks) -> float:
    """Inner-lip height divided by mouth width: 0 for closed lips, about 0.5 wide open.

    Measured along the mouth's own axes, so head roll, position and scale do not change it.
    """
    outer, inner = outer_inner_rings(landmarks)
    _, u, v = mouth_axes(outer)
    height = float((inner @ v).max() - (inner @ v).min())
    width = float((outer @ u).max() - (outer @ u).min())
    return height / max(width, 1e-6)
