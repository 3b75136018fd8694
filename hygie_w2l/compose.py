"""Composing a library mouth into a frame: the real HD patch warped onto a lip contour
(piecewise affine on a Delaunay triangulation of the 40 lip points plus 8 anchors on the
patch border, one cv2.remap), colour-matched on the mask's rim and blended through the inner
mouth (teeth, tongue) or the outer lip hull.

The lips path (:func:`compose_lips`) first moves the frame's own lower face: its lips to the
predicted contour and its jaw and chin after the lower lip, in one piecewise-affine warp, so
an opening mouth drops the chin instead of being a sticker on a still face.

The warps' triangulation and maps are computed by compiled kernels (_kernels.c) where the
package was built with a C compiler, by scipy and numpy otherwise (`hygie-w2l doctor` says
which); the patch is warped and blended only where its mask reaches."""

from __future__ import annotations

import functools
from typing import Literal

import cv2
import numpy as np

from hygie_w2l import native
from hygie_w2l.blend import BlendMode, blend_region
from hygie_w2l.geometry import (
    IDENTITY,
    invert,
    mask_reach,
    outer_ring_affine,
    polygon_mask,
    transform_points,
    translated,
)
from hygie_w2l.landmarks import mesh_connections, mouth_axes
from hygie_w2l.library import lip_points
from hygie_w2l.pixels import (
    align,
    even,
    frame_hw,
    layers_like,
    read_layers,
    shrink,
    subsampling,
    with_layers,
)
from hygie_w2l.types import Affine, Landmarks

Region = Literal["inner", "lips"]  # teeth and tongue only, or the whole mouth
HD_DILATE = 0.02  # the blend mask's growth around its lip ring, in mouth widths
HD_FEATHER = 0.04  # and its soft edge
LIPS_DILATE = 0.06  # the lips path covers the lips' edges too
MAP_STEP_PX = 2  # without the compiled kernel: maps every 2nd pixel (piecewise_affine_maps)
FACE_MAP_STEP_PX = 4  # the lower face's warp is smoother (large triangles): coarser maps
JAW_MARGIN = 0.3  # the lower-face warp's region reaches this far around lips and jaw


def _border_points(patch_hw: tuple[int, int], inset: float = 1.0) -> np.ndarray:
    """Eight points on the canonical patch's edge (anchors for the piecewise warp)."""
    h, w = patch_hw[0] - inset, patch_hw[1] - inset
    xs, ys = (inset, w / 2, w), (inset, h / 2, h)
    return np.array([(x, y) for y in ys for x in xs if not (x == w / 2 and y == h / 2)],
                    np.float32)


def piecewise_affine_maps(src_pts: np.ndarray, dst_pts: np.ndarray,
                          roi: tuple[int, int, int, int], fallback: Affine,
                          step: int = MAP_STEP_PX, subsampling: tuple[int, ...] = (1,)
                          ) -> list[tuple[np.ndarray, np.ndarray]]:
    """cv2.remap maps over ``roi`` (x1, y1, x2, y2 in destination pixels) that take each
    destination pixel inside the Delaunay triangulation of ``dst_pts`` to its source
    position (affine per triangle); elsewhere the ``fallback`` (dst -> src) matrix. One
    (map_x, map_y) per ``subsampling`` s (pixels.py's layers): the same maps for pictures
    s times smaller each side, source and destination (s = 2 needs even corners).

    The compiled kernel (_kernels.c) computes every pixel's position exactly. Without it
    (a machine that had no C compiler) the maps are computed every ``step`` pixels and
    interpolated (bilinear) in between: a piecewise-affine map is continuous, so this is
    exact inside the triangles and off along their edges (a fraction of a pixel; more by a
    sliver, whose labels spill past its edges), for a quarter of the work at ``step`` 2."""
    x1, y1, x2, y2 = roi
    local = (dst_pts - (x1, y1)).astype(np.float64)
    tri = delaunay(local)
    outside = translated(fallback, (x1, y1))
    h, w = y2 - y1, x2 - x1
    corners, sources = local[tri], src_pts[tri].astype(np.float64)
    if native.kernels is not None:
        exact, fallback64 = [], np.ascontiguousarray(outside, np.float64)
        for s in subsampling:
            assert s == 1 or (h % s == 0 and w % s == 0)
            map_x, map_y = (np.empty((h // s, w // s), np.float32) for _ in range(2))
            native.kernels.affine_maps(corners, sources, fallback64, h, w, s, map_x, map_y)
            exact.append((map_x, map_y))
        return exact
    mats = np.concatenate([outside[None], _triangle_affines(corners, sources, outside)])
    return _coarse_maps(corners, mats.astype(np.float32), (h, w), step, subsampling)


def delaunay(points: np.ndarray) -> np.ndarray:
    """The Delaunay triangles (T, 3) of (n, 2) points: by the compiled kernel where it
    was built and its result checks out (a triangulation of the points' hull with every
    point a corner), else by qhull (scipy; joggled, so that it always gives one). Points
    on one circle (a rectangle's corners) have several; either kernel may give any."""
    if native.kernels is not None:
        out = np.empty((2 * len(points), 3), np.int32)
        n = native.kernels.delaunay(np.ascontiguousarray(points, np.float64), out)
        if n > 0:
            return out[:n]
    from scipy.spatial import Delaunay

    return Delaunay(points, qhull_options="QJ").simplices


def _coarse_maps(corners: np.ndarray, mats: np.ndarray, hw: tuple[int, int], step: int,
                 subsampling: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`piecewise_affine_maps` without the compiled kernel: the maps every ``step``
    pixels (triangle n + 1 of ``corners`` (T, 3, 2) taking ``mats[n + 1]``, the rest
    ``mats[0]``), interpolated in between."""
    h, w = hw
    # the coarse grid: pixel centres step * i + (step - 1) / 2, i from -1 to one past the
    # last: samples beyond the edges, so the interpolation there is not clamped (that
    # moved the edge pixels by up to (step - 1) / 2 + 1: a seam where a warp meets the frame)
    hs, ws = -(-h // step) + 2, -(-w // step) + 2
    first = (step - 1) / 2 - step
    labels = np.zeros((hs, ws), np.int32)
    fixed = np.round((corners - first) / step * 16).astype(np.int32)  # 4 bits sub-px
    for n, triangle in enumerate(fixed, start=1):
        cv2.fillConvexPoly(labels, triangle, (n,), shift=4)
    xs = (np.arange(ws, dtype=np.float32) * step + first)[None]
    ys = (np.arange(hs, dtype=np.float32) * step + first)[:, None]
    m = mats[labels]
    coarse = (m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2],
              m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2])
    return [_dense(coarse, step, s, (h, w)) for s in subsampling]


def _dense(coarse: tuple[np.ndarray, np.ndarray], step: int, s: int, hw: tuple[int, int]
           ) -> tuple[np.ndarray, np.ndarray]:
    """Coarse maps (values in full-resolution pixels, every ``step``-th pixel from one
    sample before the first pixel) as the maps of every pixel of a picture subsampled ``s``
    times: a pixel i there is centred on s * i + (s - 1) / 2 here, which is where the coarse
    grid's samples lie when s = step."""
    assert step % s == 0 and (s == 1 or (hw[0] % s == 0 and hw[1] % s == 0))
    h, w, up = hw[0] // s, hw[1] // s, step // s
    dense = []
    for c in coarse:
        if s > 1:
            c = (c - (s - 1) / 2) / s
        if up > 1:  # cv2.resize aligns pixel centres, as the coarse grid's
            c = cv2.resize(c, (c.shape[1] * up, c.shape[0] * up), interpolation=cv2.INTER_LINEAR)
        dense.append(np.ascontiguousarray(c[up:up + h, up:up + w]))
    return dense[0], dense[1]


def _triangle_affines(d: np.ndarray, s: np.ndarray, degenerate: Affine) -> np.ndarray:
    """(T, 2, 3) affines taking each triangle's corners ``d`` (T, 3, 2) to ``s``; in closed
    form: with edge vectors D = [d1 - d0, d2 - d0] and S likewise, A = S D^-1 and
    t = s0 - A d0 (LAPACK's batched solve costs more in thread start-up than this whole
    function). Flat triangles get ``degenerate``."""
    de, se = d[:, 1:] - d[:, :1], s[:, 1:] - s[:, :1]  # (T, 2 edges, 2)
    det = de[:, 0, 0] * de[:, 1, 1] - de[:, 1, 0] * de[:, 0, 1]
    flat = np.abs(det) < 1e-6
    det[flat] = 1.0
    inv = np.stack([np.stack([de[:, 1, 1], -de[:, 1, 0]], -1),
                    np.stack([-de[:, 0, 1], de[:, 0, 0]], -1)], 1) / det[:, None, None]
    a = np.einsum("tek,tei->tki", se, inv)  # (T, 2, 2): row k of A
    t = s[:, 0] - np.einsum("tki,ti->tk", a, d[:, 0])
    out = np.concatenate([a, t[:, :, None]], axis=2)
    out[flat] = degenerate
    return out


def compose(frame: np.ndarray, lips: np.ndarray, patch: np.ndarray, patch_points: np.ndarray,
            strength: float = 1.0, region: Region = "inner", mode: BlendMode = "poisson",
            dilate: float = HD_DILATE) -> np.ndarray:
    """A copy of ``frame`` (BGR or I420: pixels.py) whose inner mouth (``region`` "inner":
    teeth, tongue) or whole mouth ("lips") is the library ``patch`` (BGR, canonical frame,
    its lip points ``patch_points`` (40, 2)) warped onto the lip contour ``lips`` (40, 2)
    of the frame, blended by ``strength``; ``dilate``: the mask's growth, in mouth widths.
    Only the region the mouth reaches is read, edited (in the frame's own planes) and
    written back."""
    if strength <= 0:
        return frame
    src, dst, m = _patch_points(lips, patch, patch_points)
    roi = _roi(dst, frame_hw(frame))
    if roi is None:
        return frame
    roi = align(roi, frame)
    o = np.array(roi[:2], np.float64)
    done = _compose(read_layers(frame, roi), subsampling(frame), lips - o,
                    layers_like(patch, frame), (src, dst - o, translated(m, o)), strength,
                    region, mode, dilate)
    return with_layers(frame, roi, done)


def _compose(layers: list[np.ndarray], subs: tuple[int, ...], lips: np.ndarray,
             patch: list[np.ndarray], control: tuple[np.ndarray, np.ndarray, Affine],
             strength: float, region: Region, mode: BlendMode, dilate: float
             ) -> list[np.ndarray]:
    """:func:`compose` on a region's layers (pixels.py; ``subs``: their subsampling), the
    patch's likewise, with the patch warp's control points (:func:`_patch_points`) given."""
    src, dst, m = control
    hw = (layers[0].shape[0], layers[0].shape[1])
    roi = _roi(dst, hw)
    if roi is None:
        return layers
    if max(subs) > 1:
        roi = even(roi, hw)
    x1, y1, x2, y2 = roi
    half = len(lips) // 2
    outer, inner = lips[:half], lips[half:]
    ring = (outer if region == "lips" else inner).astype(np.float32)
    width = float(np.ptp(outer[:, 0]))
    dilate_px, feather_px = int(round(dilate * width)), max(int(round(HD_FEATHER * width)), 1)
    # the patch is warped and blended only where the mask reaches, not over the whole patch
    # (0.31-0.48 of its area on talk_selfie_24s)
    near = _roi(ring - (x1, y1), (y2 - y1, x2 - x1), mask_reach(dilate_px, feather_px))
    if near is None:
        return layers
    if max(subs) > 1:
        near = even(near, (y2 - y1, x2 - x1))
    x1, y1, x2, y2 = x1 + near[0], y1 + near[1], x1 + near[2], y1 + near[3]
    roi = (x1, y1, x2, y2)
    mask = polygon_mask(ring - (x1, y1), (y2 - y1, x2 - x1), dilate_px, feather_px)
    if mask.max() < 0.05:
        return layers
    maps = piecewise_affine_maps(src, dst, roi, m, MAP_STEP_PX, subs)
    done = []
    for layer, image, s, (map_x, map_y) in zip(layers, patch, subs, maps, strict=True):
        # cubic: bilinear resampling alone took 23 % of the inner mouth's detail (measured,
        # Laplacian energy on talk_selfie_24s: 0.56 -> 0.73 of the real video's with cubic)
        warped = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REPLICATE)
        done.append(blend_region(layer, warped, shrink(mask, s) * float(strength),
                                 (x1 // s, y1 // s), mode))
    return done


def _patch_points(lips: np.ndarray, patch: np.ndarray, patch_points: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, Affine]:
    """The patch warp's control points (src: in the patch, dst: in the frame: the lips
    and the patch's border around them) and its frame -> patch matrix for elsewhere."""
    patch_hw = (patch.shape[0], patch.shape[1])
    m = outer_ring_affine(lips[:len(lips) // 2], patch_hw)  # frame -> canonical
    border = _border_points(patch_hw)
    dst = np.concatenate([lips, transform_points(border, invert(m))])
    src = np.concatenate([patch_points, border])
    return src, dst, m


def _roi(points: np.ndarray, hw: tuple[int, ...], margin: float = 0.0
         ) -> tuple[int, int, int, int] | None:
    """The points' bounding box (grown by ``margin`` px) clipped to the frame; None when
    it is too small to work on."""
    h, w = hw[0], hw[1]
    x1, y1 = np.floor(points.min(0) - margin).astype(int)
    x2, y2 = np.ceil(points.max(0) + margin).astype(int) + 1
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    return None if x2 - x1 < 4 or y2 - y1 < 4 else (int(x1), int(y1), int(x2), int(y2))


# ------------------------------------------------------------------- the jaw ----

@functools.cache
def jaw_indices(n_points: int) -> np.ndarray:
    """The face outline's landmarks (MediaPipe's FACEMESH_FACE_OVAL; iBUG: the jaw 0..16)."""
    ids = np.arange(17) if n_points == 68 else np.array(
        sorted({i for edge in mesh_connections().FACEMESH_FACE_OVAL for i in edge}))
    ids.flags.writeable = False  # shared by every caller
    return ids


def move_jaw(landmarks: Landmarks, lips: np.ndarray, target: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) of the face outline below the mouth: each point follows the bottom of the
    lower lip (``lips`` -> ``target``, (40, 2) frame pixels) by a weight that is 1 at the
    chin and 0 at the height of the mouth corners, as a jaw hinges."""
    jaw = landmarks[jaw_indices(len(landmarks))][:, :2].astype(np.float64)
    outer = lips[:len(lips) // 2]
    centre, _, v = mouth_axes(outer)
    bottom = int(np.argmax(outer @ v))
    shift = target[bottom] - lips[bottom]
    depth = (jaw - centre) @ v
    below = depth > 0
    chin = max(float(depth.max()), 1e-6)
    weight = np.clip(depth[below] / chin, 0.0, 1.0)[:, None]
    return jaw[below], jaw[below] + weight * shift


def warp_lower_face(layers: list[np.ndarray], subs: tuple[int, ...],
                    lips: np.ndarray, target: np.ndarray, jaw: tuple[np.ndarray, np.ndarray],
                    roi: tuple[int, int, int, int]) -> list[np.ndarray]:
    """A copy of a region's ``layers`` (pixels.py; ``subs``: their subsampling) whose lips
    move from ``lips`` to ``target`` (40, 2) and whose jaw and chin follow (``jaw``:
    :func:`move_jaw`'s points): one piecewise-affine warp of ``roi`` (even corners for
    subsampled layers), fixed on its border so it joins the rest without a seam."""
    x1, y1, x2, y2 = roi
    anchors = np.array([(x, y) for y in (y1, (y1 + y2) / 2, y2 - 1)
                        for x in (x1, (x1 + x2) / 2, x2 - 1)
                        if not (x == (x1 + x2) / 2 and y == (y1 + y2) / 2)], np.float64)
    src = np.concatenate([lips, jaw[0], anchors])
    dst = np.concatenate([target, jaw[1], anchors])
    maps = piecewise_affine_maps(src, dst, roi, IDENTITY, FACE_MAP_STEP_PX, subs)
    warped = []
    for layer, s, (map_x, map_y) in zip(layers, subs, maps, strict=True):
        out = layer.copy()
        out[y1 // s:y2 // s, x1 // s:x2 // s] = cv2.remap(layer, map_x, map_y, cv2.INTER_LINEAR,
                                                          borderMode=cv2.BORDER_REPLICATE)
        warped.append(out)
    return warped


def compose_lips(frame: np.ndarray, landmarks: Landmarks, target: np.ndarray,
                 patch: np.ndarray, patch_points: np.ndarray, strength: float = 1.0,
                 mode: BlendMode = "poisson") -> np.ndarray:
    """The lips path's picture: a copy of ``frame`` (BGR or I420: pixels.py) whose lower
    face is warped so its lips take the ``target`` contour (40, 2) and its chin follows,
    then the library mouth (lips, teeth, tongue: ``patch`` with its points) composed onto
    that contour; ``strength`` fades both (0: the frame as it was). Only the region the two
    reach is read, edited (in the frame's own planes: no colour conversion) and written
    back."""
    if strength <= 0:
        return frame
    lips = lip_points(landmarks)
    if strength < 1:
        target = lips + strength * (target - lips)
    jaw = move_jaw(landmarks, lips, target)
    hw = frame_hw(frame)
    width = float(np.ptp(lips[:len(lips) // 2, 0]))
    face = _roi(np.concatenate([lips, target, *jaw]), hw, JAW_MARGIN * width)
    src, dst, m = _patch_points(target, patch, patch_points)
    mouth = _roi(dst, hw)
    if face is None or mouth is None:
        return frame
    roi = align((min(face[0], mouth[0]), min(face[1], mouth[1]),
                 max(face[2], mouth[2]), max(face[3], mouth[3])), frame)
    o = np.array(roi[:2], np.float64)
    local = (face[0] - roi[0], face[1] - roi[1], face[2] - roi[0], face[3] - roi[1])
    layers, subs = read_layers(frame, roi), subsampling(frame)
    if max(subs) > 1:
        local = even(local, (roi[3] - roi[1], roi[2] - roi[0]))
    layers = warp_lower_face(layers, subs, lips - o, target - o, (jaw[0] - o, jaw[1] - o),
                             local)
    layers = _compose(layers, subs, target - o, layers_like(patch, frame),
                      (src, dst - o, translated(m, o)), strength, "lips", mode, LIPS_DILATE)
    return with_layers(frame, roi, layers)
