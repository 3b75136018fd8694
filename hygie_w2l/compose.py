"""Composing a library mouth into a frame: the real HD patch warped onto a lip contour
(piecewise affine on a Delaunay triangulation of the 40 lip points plus 8 anchors on the
patch border, one cv2.remap), colour-matched on the mask's rim and blended through the inner
mouth (teeth, tongue) or, with ``lips``, the outer lip hull."""

from __future__ import annotations

import cv2
import numpy as np

from hygie_w2l.blend import BlendMode, blend_region
from hygie_w2l.geometry import hd_affine, invert, polygon_mask, transform_points
from hygie_w2l.landmarks import outer_inner_rings
from hygie_w2l.library import lip_points
from hygie_w2l.types import Affine, Landmarks


def _border_points(patch_hw: tuple[int, int], inset: float = 1.0) -> np.ndarray:
    """Eight points on the canonical patch's edge (anchors for the piecewise warp)."""
    h, w = patch_hw[0] - inset, patch_hw[1] - inset
    xs, ys = (inset, w / 2, w), (inset, h / 2, h)
    return np.array([(x, y) for y in ys for x in xs if not (x == w / 2 and y == h / 2)],
                    np.float32)


def piecewise_affine_map(src_pts: np.ndarray, dst_pts: np.ndarray, roi: tuple[int, int, int, int],
                         fallback: Affine) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps over ``roi`` (x1, y1, x2, y2 in destination pixels) that take each
    destination pixel inside the Delaunay triangulation of ``dst_pts`` to its source
    position (affine per triangle); elsewhere the ``fallback`` (dst -> src) matrix."""
    from scipy.spatial import Delaunay

    x1, y1, x2, y2 = roi
    local = dst_pts - (x1, y1)
    tri = Delaunay(local, qhull_options="QJ").simplices
    labels = np.zeros((y2 - y1, x2 - x1), np.int32)
    mats = [fallback + np.array([[0, 0, fallback[0, 0] * x1 + fallback[0, 1] * y1],
                                 [0, 0, fallback[1, 0] * x1 + fallback[1, 1] * y1]])]
    for n, (a, b, c) in enumerate(tri, start=1):
        d = local[[a, b, c]].astype(np.float64)
        s = src_pts[[a, b, c]].astype(np.float64)
        lhs = np.hstack([d, np.ones((3, 1))])
        if abs(np.linalg.det(lhs)) < 1e-6:
            mats.append(mats[0])
        else:
            mats.append(np.linalg.solve(lhs, s).T)
        cv2.fillConvexPoly(labels, np.round(d).astype(np.int32), (n,))
    mats_a = np.stack(mats).astype(np.float32)  # (T+1, 2, 3)
    ys, xs = np.mgrid[0:y2 - y1, 0:x2 - x1].astype(np.float32)
    m = mats_a[labels]
    map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
    map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
    return map_x, map_y


def compose(frame: np.ndarray, landmarks: Landmarks, patch: np.ndarray,
            patch_points: np.ndarray, strength: float = 1.0, lips: bool = False,
            mode: BlendMode = "poisson") -> np.ndarray:
    """A copy of ``frame`` whose inner mouth (and lips, with ``lips``) is the library
    ``patch`` (canonical frame, lip points ``patch_points``) warped onto the lip contour
    ``landmarks`` of the frame."""
    if strength <= 0:
        return frame
    patch_hw = (patch.shape[0], patch.shape[1])
    m = hd_affine(landmarks, patch_hw)  # frame -> canonical
    border = _border_points(patch_hw)
    dst = np.concatenate([lip_points(landmarks), transform_points(border, invert(m))])
    src = np.concatenate([patch_points, border])
    h, w = frame.shape[:2]
    x1, y1 = np.floor(dst.min(0)).astype(int)
    x2, y2 = np.ceil(dst.max(0)).astype(int) + 1
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return frame
    map_x, map_y = piecewise_affine_map(src, dst, (x1, y1, x2, y2), m)
    warped = cv2.remap(patch, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    outer, inner = outer_inner_rings(landmarks)
    ring = (outer if lips else inner).astype(np.float32) - (x1, y1)
    width = float(np.ptp(outer[:, 0]))
    mask = polygon_mask(ring, (y2 - y1, x2 - x1), dilate_px=int(round(0.02 * width)),
                        feather_px=max(int(round(0.04 * width)), 1))
    if mask.max() < 0.05:
        return frame
    return blend_region(frame, warped, mask * float(strength), (x1, y1), mode)
