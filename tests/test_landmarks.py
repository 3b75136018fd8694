import numpy as np
import pytest

from hygie_w2l import landmarks


def test_lip_rings_come_from_facemesh_lips() -> None:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LIPS

    a, b = landmarks.lip_rings()
    assert len(a) == len(b) == 20
    assert set(a) | set(b) == {i for e in FACEMESH_LIPS for i in e}
    for ring in (a, b):  # consecutive indices of a ring are connected in FACEMESH_LIPS
        edges = {frozenset(e) for e in FACEMESH_LIPS}
        assert all(frozenset((ring[i], ring[(i + 1) % len(ring)])) in edges
                   for i in range(len(ring)))


def _mouth(open_px: float) -> np.ndarray:
    """A synthetic 478-point set whose lip rings are ellipses (other points at the centre)."""
    a, b = landmarks.lip_rings()
    pts = np.zeros((478, 2), np.float32)
    for ring, (rx, ry) in ((a, (40.0, 20.0 + open_px / 2)), (b, (30.0, open_px / 2 + 0.5))):
        t = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
        pts[list(ring)] = np.c_[100 + rx * np.cos(t), 100 + ry * np.sin(t)]
    return pts


def test_opening_grows_with_the_gap_and_ignores_pose_and_scale() -> None:
    closed, opened = landmarks.mouth_opening(_mouth(0)), landmarks.mouth_opening(_mouth(20))
    assert closed < 0.05 and opened == pytest.approx(20.5 / 80, rel=0.05)
    pts = _mouth(20)
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (pts - 100) @ rot.T * 2.5 + [300, -40]
    assert landmarks.mouth_opening(moved) == pytest.approx(opened, rel=0.03)
    assert landmarks.mouth_width(moved) == pytest.approx(2.5 * 80, rel=0.03)


def test_68_point_layout_is_supported() -> None:
    pts = np.zeros((68, 2), np.float32)
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    pts[48:60] = np.c_[40 * np.cos(t), 20 * np.sin(t)]
    t = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    pts[60:68] = np.c_[30 * np.cos(t), 8 * np.sin(t)]
    outer, inner = landmarks.outer_inner_rings(pts)
    assert len(outer) == 12 and len(inner) == 8
    assert landmarks.mouth_opening(pts) == pytest.approx(16 / 80, rel=0.05)


def test_mesh_topology_is_mediapipe_s_own_read_without_importing_it() -> None:
    from mediapipe.python.solutions import face_mesh_connections as mp_mesh

    from hygie_w2l.landmarks import mesh_connections

    for name in ("FACEMESH_LIPS", "FACEMESH_LEFT_EYE", "FACEMESH_RIGHT_EYE",
                 "FACEMESH_FACE_OVAL"):
        assert getattr(mesh_connections(), name) == getattr(mp_mesh, name)
