"""The composition's compiled kernels (hygie_w2l/_kernels.c): the warp maps are the exact
piecewise-affine warp, the triangulation is Delaunay's (or qhull's where it cannot be
trusted), and a composition with them is the composition without them, but where the numpy
maps were off; the mask is only computed where it can reach."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial import Delaunay

from hygie_w2l import compose, native
from hygie_w2l.geometry import mask_reach, polygon_mask


def _warp(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Control points of a warp that is not one affine (src, dst), a fallback, a region."""
    rng = np.random.default_rng(seed)
    dst = np.concatenate([rng.uniform(20, 140, (40, 2)),
                          [(10, 10), (150, 10), (10, 130), (150, 130), (80, 10), (80, 130)]])
    fallback = np.array([[1.0, 0.05, 3.0], [-0.05, 1.0, -2.0]])
    src = dst @ fallback[:, :2].T + fallback[:, 2]
    src[:40] += rng.normal(0, 3, (40, 2)) + 0.002 * (dst[:40] - 80) ** 2
    # (the hull's corners follow the fallback, as the patch's border does: continuous)
    return src, dst, fallback, (6, 4, 158, 140)


def _reference_maps(src: np.ndarray, dst: np.ndarray, fallback: np.ndarray,
                    roi: tuple[int, int, int, int], s: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel centre's source by barycentric coordinates in its triangle (float64)."""
    x1, y1, x2, y2 = roi
    local = dst - (x1, y1)
    tri = compose.delaunay(local)
    h, w = (y2 - y1) // s, (x2 - x1) // s
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) * s + (s - 1) / 2
    p = np.stack([xs.ravel(), ys.ravel()], 1)
    out = (p + (x1, y1)) @ fallback[:, :2].T + fallback[:, 2]  # frame pixels, dst -> src
    for a, b, c in tri:
        t = np.array([local[b] - local[a], local[c] - local[a]]).T
        if abs(np.linalg.det(t)) < 1e-9:
            continue
        lam = np.linalg.solve(t, (p - local[a]).T).T
        inside = (lam >= -1e-9).all(1) & (lam.sum(1) <= 1 + 1e-9)
        out[inside] = src[a] + lam[inside] @ np.array([src[b] - src[a], src[c] - src[a]])
    out = (out - (s - 1) / 2) / s
    return out[:, 0].reshape(h, w), out[:, 1].reshape(h, w)


def test_a_module_built_from_other_sources_is_not_used(kernels, monkeypatch) -> None:
    # a stale build left in place (its functions' arguments changed since): numpy instead
    import importlib

    assert kernels.ABI == native.ABI
    monkeypatch.setattr(kernels, "ABI", native.ABI - 1)
    try:
        assert importlib.reload(native).kernels is None
    finally:
        monkeypatch.undo()
        importlib.reload(native)
    assert native.kernels is not None


def test_the_maps_are_the_exact_piecewise_affine_warp(kernels) -> None:
    for seed in range(3):
        src, dst, fallback, roi = _warp(seed)
        maps = compose.piecewise_affine_maps(src, dst, roi, fallback, subsampling=(1, 2))
        for s, (map_x, map_y) in zip((1, 2), maps, strict=True):
            want_x, want_y = _reference_maps(src, dst, fallback, roi, s)
            assert map_x.shape == want_x.shape and map_x.dtype == np.float32
            assert np.abs(map_x - want_x).max() < 2e-3 and np.abs(map_y - want_y).max() < 2e-3


def test_a_triangle_that_is_not_a_number_or_far_away_covers_nothing(kernels) -> None:
    fallback = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]])
    dst = np.array([[[0.0, 0.0], [np.nan, 4.0], [0.0, 9.0]],
                    [[1e300, 0.0], [-1e300, 5.0], [0.0, 1e300]],
                    [[2.0, 2.0], [9.0, 2.0], [2.0, 9.0]]])
    src = dst.copy()
    src[2] += 1.0  # the last triangle: shifted by one pixel
    map_x, map_y = (np.empty((12, 12), np.float32) for _ in range(2))
    kernels.affine_maps(np.ascontiguousarray(dst[:2]), np.ascontiguousarray(src[:2]), fallback, 12,
                        12, 1, map_x, map_y)
    ys, xs = np.mgrid[0:12, 0:12]
    assert np.array_equal(map_x, xs + 2.0) and np.array_equal(map_y, ys + 3.0)
    kernels.affine_maps(dst, src, fallback, 12, 12, 1, map_x, map_y)
    inside = (xs >= 2) & (ys >= 2) & (xs + ys <= 11)
    assert np.array_equal(map_x[inside], xs[inside] + 1.0)
    assert np.array_equal(map_x[~inside], xs[~inside] + 2.0)


def test_the_numpy_maps_are_the_same_warp_interpolated(kernels, monkeypatch) -> None:
    # the fallback where the kernel is not built: exact inside the triangles, a fraction of
    # a pixel off along their edges (more where a sliver's labels spill over its edges)
    src, dst, fallback, roi = _warp(0)
    # a smooth warp (noise moved the random points against their neighbours: every edge
    # a crease that the interpolation rounds off)
    src[:40] = dst[:40] @ fallback[:, :2].T + fallback[:, 2] + 4 * np.sin(dst[:40] / 30)
    exact = compose.piecewise_affine_maps(src, dst, roi, fallback, 2)[0]
    monkeypatch.setattr(native, "kernels", None)
    coarse = compose.piecewise_affine_maps(src, dst, roi, fallback, 2)[0]
    error = np.hypot(coarse[0] - exact[0], coarse[1] - exact[1])
    assert np.median(error) < 0.01 and np.percentile(error, 95) < 0.5


def _triangles(t: np.ndarray) -> list[tuple[int, ...]]:
    return sorted(tuple(sorted(row)) for row in t.tolist())


def _is_delaunay(points: np.ndarray, tri: np.ndarray) -> bool:
    """Every point a corner, the triangles counter-clockwise and tiling the hull, and no
    point strictly inside a triangle's circumcircle."""
    a, b, c = (points[tri[:, k]] for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    hull = cv2.contourArea(cv2.convexHull(points.astype(np.float32))) * 2
    if set(tri.ravel()) != set(range(len(points))) or (area <= 0).any():
        return False
    if abs(area.sum() - hull) > 1e-6 * hull:
        return False
    for i, j, k in tri:
        d = points - points[[i, j, k]][:, None]  # (3, n, 2)
        m = np.stack([d[..., 0], d[..., 1], (d ** 2).sum(-1)], -1)  # (3, n, 3)
        det = np.linalg.det(np.transpose(m, (1, 0, 2)))
        det[[i, j, k]] = 0
        if (det > 1e-6 * np.abs(m).max() ** 2).any():
            return False
    return True


def test_the_compiled_delaunay_is_qhulls_and_refuses_what_it_cannot_trust(kernels) -> None:
    rng = np.random.default_rng(2)
    for n in (3, 4, 10, 48, 90):
        points = rng.uniform(0, 300, (n, 2))
        out = np.empty((2 * n, 3), np.int32)
        count = kernels.delaunay(points, out)
        assert count > 0
        assert _triangles(out[:count]) == _triangles(Delaunay(points).simplices)
    # a rectangle's corners and mid-edges (the lower face's anchors), and a grid: points on
    # one circle and three on a line; any of their Delaunay triangulations will do
    grid = np.array([(x, y) for x in range(6) for y in range(5)], np.float64) * 10
    anchors = np.array([(x, y) for y in (0, 50, 99) for x in (0, 60, 119)
                        if (x, y) != (60, 50)], np.float64)
    for points in (grid, np.concatenate([anchors, rng.uniform(20, 80, (30, 2))])):
        out = np.empty((2 * len(points), 3), np.int32)
        count = kernels.delaunay(points, out)
        assert count > 0 and _is_delaunay(points, out[:count])
    # a point twice, or all on one line: not trusted, so qhull (joggled) triangulates
    twice = np.concatenate([rng.uniform(0, 100, (10, 2))] * 2)
    line = np.stack([np.arange(8.0), 2 * np.arange(8.0)], 1)
    for points in (twice, line):
        assert kernels.delaunay(points, np.empty((2 * len(points), 3), np.int32)) == -1
        assert len(compose.delaunay(points)) > 0
    # a point that is not a number: refused, never a crash
    bad = np.array([[0.0, 0.0], [10.0, 0.0], [np.nan, 5.0], [0.0, 10.0]])
    assert kernels.delaunay(bad, np.empty((8, 3), np.int32)) == -1
    with pytest.raises(ValueError):
        kernels.affine_maps(np.zeros((2, 3, 2)), np.zeros((3, 3, 2)), np.zeros((2, 3)), 4, 4,
                            1, np.empty((4, 4), np.float32), np.empty((4, 4), np.float32))


def test_the_mask_is_computed_only_where_it_reaches() -> None:
    rng = np.random.default_rng(3)
    for dilate, feather in ((0, 1), (3, 2), (6, 4), (9, 7)):
        ring = rng.uniform(80, 140, (20, 2)).astype(np.float32)
        whole = polygon_mask(ring, (240, 240), dilate, feather)
        reach = mask_reach(dilate, feather)
        x1, y1 = np.floor(ring.min(0) - reach).astype(int)
        x2, y2 = np.ceil(ring.max(0) + reach).astype(int) + 1
        assert whole[:y1].max() == whole[y2:].max() == 0
        assert whole[:, :x1].max() == whole[:, x2:].max() == 0
        near = polygon_mask(ring - (x1, y1), (y2 - y1, x2 - x1), dilate, feather)
        assert np.array_equal(near, whole[y1:y2, x1:x2])  # the same values, to the bit


def test_a_composition_without_the_kernels_is_the_same_picture(kernels, monkeypatch,
                                                               two_mouths) -> None:
    from hygie_w2l.library import lip_points
    from hygie_w2l.pixels import to_bgr

    frame, lm, patch, patch_points = two_mouths
    lips = lip_points(lm)
    depth = np.clip((lips[:, 1] - lips[:, 1].mean()) / np.ptp(lips[:, 1]), 0, 1)
    target = lips + np.stack([0 * depth, 4 * depth], 1)  # the mouth opens, the chin drops
    i420 = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)
    fast = to_bgr(compose.compose_lips(i420, lm, target, patch, patch_points))
    monkeypatch.setattr(native, "kernels", None)
    slow = to_bgr(compose.compose_lips(i420, lm, target, patch, patch_points))
    before = to_bgr(i420)
    edited = (np.abs(fast.astype(int) - before).max(-1) > 0) | (slow != before).any(-1)
    assert edited.sum() > 500
    diff = (fast.astype(float) - slow)[edited]
    assert 10 * np.log10(255 ** 2 / max((diff ** 2).mean(), 1e-12)) > 40
