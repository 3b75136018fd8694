"""The template cache: a second render of a template reads its tracking instead of tracking
again; a changed file (same name, new content) or changed settings are tracked again, and
the render says why; `hygie-w2l cache list|clear`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hygie_w2l import crops, template
from hygie_w2l.cache import list_cache
from hygie_w2l.render import RenderConfig, render
from hygie_w2l.template import load_template
from hygie_w2l.types import EngineConfig
from tests.conftest import make_variant, run_cli

CPU = RenderConfig(blend="feather", engine=EngineConfig(device="cpu"))


def _render(face: Path, audio: Path, ckpt: Path, out: Path) -> dict:
    stats = out.with_suffix(".json")
    render(face, audio, ckpt, out, CPU, stats)
    return json.loads(stats.read_text())


def test_a_second_render_reads_the_tracking_and_a_changed_file_is_tracked_again(
        synth_clip, random_film_ckpt: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYGIE_CACHE", str(tmp_path / "cache"))  # not tracked by other tests
    clip, _ = synth_clip
    face = tmp_path / "face.mp4"
    face.write_bytes(clip.read_bytes())
    first = _render(face, clip, random_film_ckpt, tmp_path / "a.mp4")
    planned = []  # the crop matrices too are read back
    plan_of = crops.plan_crops
    monkeypatch.setattr(crops, "plan_crops", lambda *a: planned.append(1) or plan_of(*a))
    second = _render(face, clip, random_film_ckpt, tmp_path / "b.mp4")
    assert planned == []
    assert "tracked (not tracked before) and cached" in " ".join(first["notes"])
    assert "read from the cache" in " ".join(second["notes"])
    # what tracking cost the first time, the second render does not pay
    assert first["stage_seconds"]["track"] > 0.5
    assert second["stage_seconds"].get("track", 0.0) < 0.1 * first["stage_seconds"]["track"]
    assert second["generated"] == first["generated"] > 50
    # the same file name, new content: tracked again, and the render says why
    make_variant(clip, face, lambda f, i: np.roll(f, 12, axis=1))
    third = _render(face, clip, random_film_ckpt, tmp_path / "c.mp4")
    assert "the file changed since it was tracked" in " ".join(third["notes"])
    assert third["stage_seconds"]["track"] > 0.5


def test_the_tracking_is_the_same_whatever_the_frames_are_held_as(
        synth_clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MediaPipe sees swscale's BGR (as prepare's tracker does), whether a template's frames
    are held as BGR or I420: one tracking, cached once for both."""
    monkeypatch.setenv("HYGIE_CACHE", str(tmp_path / "cache"))
    clip, _ = synth_clip
    fresh = load_template(clip, 25, max_frames=30, use_cache=False, pix_fmt="yuv420p")
    fresh.close()
    cached = load_template(clip, 25, max_frames=30, use_cache=True, pix_fmt="bgr24")
    cached.close()
    again = load_template(clip, 25, max_frames=30, use_cache=True, pix_fmt="yuv420p")
    again.close()
    assert "read from the cache" in again.cache_note and again.pix_fmt == "yuv420p"
    np.testing.assert_array_equal(fresh.track.landmarks, cached.track.landmarks)
    np.testing.assert_array_equal(again.track.landmarks, cached.track.landmarks)


def test_cached_tracking_equals_fresh_tracking(synth_clip) -> None:
    """Fewer frames shown than were cached: the gap filling and smoothing are redone on
    that prefix, so the track equals a fresh one of the same frames."""
    clip, _ = synth_clip
    full = load_template(clip, 25, use_cache=True)
    full.close()
    cached = load_template(clip, 25, max_frames=60, use_cache=True)
    fresh = load_template(clip, 25, max_frames=60, use_cache=False)
    try:
        assert "read from the cache" in cached.cache_note and fresh.cache_note == ""
        np.testing.assert_array_equal(cached.track.status, fresh.track.status)
        np.testing.assert_allclose(cached.track.landmarks, fresh.track.landmarks)
        np.testing.assert_allclose(cached.track.boxes, fresh.track.boxes, equal_nan=True)
        # the cached template is decoded by a thread while the render goes on, its frames
        # handed over in memory (all 60 are shown once): they are the fresh ones
        assert cached.n_frames == fresh.n_frames == 60
        for t in (0, 1, 30, 59):
            np.testing.assert_array_equal(cached.frames[t], fresh.frames[t])
    finally:
        cached.close()
        fresh.close()
    # shown more often than it has frames (ping-pong): read back from its file, any order
    again = load_template(clip, 25, max_frames=200, use_cache=True)
    fresh = load_template(clip, 25, max_frames=200, use_cache=False)
    try:
        assert "read from the cache" in again.cache_note
        for t in (fresh.n_frames - 1, 0, 40, 40, 3):
            np.testing.assert_array_equal(again.frames[t], fresh.frames[t])
    finally:
        again.close()
        fresh.close()


def test_the_track_and_crop_matrices_are_kept_and_read_back(
        synth_clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a render derives from the detections alone (the track, the crop matrices) is
    kept for the frames it showed: the next render of as many frames reads it back, equal
    to a fresh one; another frame count, a damaged file or a new tracking make it again."""
    monkeypatch.setenv("HYGIE_CACHE", str(tmp_path / "cache"))
    clip, _ = synth_clip
    load_template(clip, 25, max_frames=60).close()  # tracked, and its track kept
    made: list[str] = []
    track_of, plan_of = template.tracks_from_points, crops.plan_crops
    monkeypatch.setattr(template, "tracks_from_points",
                        lambda *a: made.append("track") or track_of(*a))
    monkeypatch.setattr(crops, "plan_crops", lambda *a: made.append("plan") or plan_of(*a))
    kept = load_template(clip, 25, max_frames=60)
    kept.close()
    assert made == [] and "read from the cache" in kept.cache_note
    fresh = load_template(clip, 25, max_frames=60, use_cache=False)
    fresh.close()
    made.clear()
    for name, values in fresh.track.to_arrays().items():
        np.testing.assert_array_equal(kept.track.to_arrays()[name], values)
    assert kept.track.calibration == fresh.track.calibration is not None

    config = crops.CropConfig()
    first = crops.cached_plan(kept.track, config, kept.cache)
    again = crops.cached_plan(kept.track, config, kept.cache)
    assert made == ["plan"]  # the second is read back
    other = crops.cached_plan(kept.track, crops.CropConfig(mouth_ema=0.3), kept.cache)
    assert made == ["plan", "plan"] and not np.array_equal(other.mouth, first.mouth,
                                                           equal_nan=True)
    for kind in ("face", "mouth", "hd", "lips"):
        np.testing.assert_array_equal(again.matrices(kind), first.matrices(kind))
        assert again.matrices(kind).dtype == first.matrices(kind).dtype
    assert (again.hd_hw, again.mouth_width_px) == (first.hd_hw, first.mouth_width_px)
    # another track of as many frames: its own plan, never the one kept of the first
    moved = dataclasses.replace(kept.track, landmarks=kept.track.landmarks + 1)
    assert not np.array_equal(crops.cached_plan(moved, config, kept.cache).lips, first.lips,
                              equal_nan=True)
    crops.cached_plan(kept.track, config, kept.cache)
    assert made.count("plan") == 4
    for kept_file in (tmp_path / "cache" / "templates").glob("*.crops*.npz"):
        kept_file.write_bytes(b"not an npz")
    crops.cached_plan(kept.track, config, kept.cache)  # damaged: made again
    crops.cached_plan(kept.track, config, kept.cache)
    assert made.count("plan") == 5

    load_template(clip, 25, max_frames=40).close()  # another frame count: made again
    assert made[-1] == "track"
    for kept_file in (tmp_path / "cache" / "templates").glob("*.track*.npz"):
        kept_file.write_bytes(b"not an npz")
    load_template(clip, 25, max_frames=40).close()
    assert made.count("track") == 2
    load_template(clip, 25, max_frames=500).close()  # more frames: tracked again
    assert not list((tmp_path / "cache" / "templates").glob("*.crops*.npz"))


def test_cache_list_and_clear(synth_clip, private_cache: Path) -> None:
    load_template(synth_clip[0], 25).close()
    assert any(e.kind == "templates" for e in list_cache())
    listed = run_cli("cache", "list")
    assert listed.returncode == 0 and "templates" in listed.stdout and "MB" in listed.stdout
    cleared = run_cli("cache", "clear", "--kind", "templates")
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert not [e for e in list_cache() if e.kind == "templates"]


def test_a_template_with_cached_tracking_loads_without_mediapipe(synth_clip) -> None:
    """MediaPipe's start-up costs seconds; a render whose tracking is cached skips it."""
    code = ("import sys; from hygie_w2l.template import load_template; "
            "t = load_template(sys.argv[1], 25); n = t.n_frames; t.frames[n - 1]; t.close(); "
            "print(t.cache_note, '|', 'mediapipe' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code, str(synth_clip[0])], text=True,
                           capture_output=True, timeout=300) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[1].stderr[-2000:]
    assert "| True" in runs[0].stdout or "read from the cache" in runs[0].stdout
    assert "read from the cache" in runs[1].stdout and runs[1].stdout.strip().endswith("| False")
