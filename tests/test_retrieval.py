"""HD retrieval: descriptors invariant to where the mouth is, the temporal pass, the library
on disk (round trip, version refusal), the piecewise-affine composition and the render hook."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hygie_w2l import media
from hygie_w2l.compose import compose
from hygie_w2l.face_tracker import FaceMeshDetector
from hygie_w2l.geometry import hd_affine, hd_patch_size, polygon_mask, transform_points
from hygie_w2l.hd import HDConfig, default_library
from hygie_w2l.landmarks import mouth_width, outer_inner_rings
from hygie_w2l.library import (
    IndexConfig,
    IndexError_,
    MouthLibrary,
    appearance_pixels,
    build_index,
    canonical_mouth,
    lip_points,
    shape_code,
)
from hygie_w2l.render import RenderConfig, render
from hygie_w2l.temporal import TemporalChooser, viterbi
from hygie_w2l.types import EngineConfig
from tests.conftest import run_cli

CPU = EngineConfig(device="cpu")


@pytest.fixture(scope="module")
def library(synth_dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lib") / "person"
    build_index([synth_dataset], out)
    return out


def _frame_and_landmarks(clip: Path, index: int = 30) -> tuple[np.ndarray, np.ndarray]:
    frame = next(f for i, f in enumerate(media.read_frames(clip, fps=25)) if i == index)
    with FaceMeshDetector(video=False) as det:
        lm = det.detect(frame)
    assert lm is not None
    return frame, lm


def describe_frame(frame: np.ndarray, lm: np.ndarray, hw: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(shape code, appearance pixels) of the mouth in a frame, as the HD stage queries."""
    patch, points = canonical_mouth(frame, lm, hw)
    return shape_code(points, hw), appearance_pixels(patch)


def test_descriptor_ignores_where_the_mouth_is(synth_clip) -> None:
    frame, lm = _frame_and_landmarks(synth_clip[0])
    hw = hd_patch_size(mouth_width(lm))
    shape, pixels = describe_frame(frame, lm, hw)
    h, w = frame.shape[:2]
    for angle, scale, shift in [(0, 1.0, (17, -9)), (0, 1.4, (0, 0)), (8, 0.8, (5, 12))]:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        m[:, 2] += shift
        moved = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        s2, p2 = describe_frame(moved, transform_points(lm, m), hw)
        assert np.abs(s2 - shape).max() < 1e-4, (angle, scale, shift)
        assert np.corrcoef(p2, pixels)[0, 1] > 0.97, (angle, scale, shift)
    # and a different mouth shape does change it
    opened = lm.copy()
    _, inner = outer_inner_rings(lm)
    lower = [i for i in range(len(lm)) if any((lm[i] == p).all() for p in inner)
             and lm[i, 1] > inner[:, 1].mean()]
    opened[lower, 1] += 0.2 * mouth_width(lm)
    s3, _ = describe_frame(frame, opened, hw)
    assert np.abs(s3 - shape).max() > 0.05


def test_temporal_pass_prefers_consecutive_library_frames_when_costs_tie() -> None:
    follows = np.ones(100, bool)
    # every frame has the same three candidate distances; only one candidate chain plays
    # the library forward (10, 11, 12, ...)
    ids = np.array([[50 + t * 3, 10 + t, 80 - t] for t in range(6)])
    costs = np.ones(ids.shape)
    path = viterbi(costs, ids, follows, switch_cost=0.2, follow_bonus=0.05)
    assert [int(ids[t, p]) for t, p in enumerate(path)] == [10, 11, 12, 13, 14, 15]
    # where the library has a cut (entry 12 does not follow 11), the chain is not rewarded
    follows[11] = False
    path = viterbi(costs, ids, follows, switch_cost=0.2, follow_bonus=0.05)
    assert [int(ids[t, p]) for t, p in enumerate(path)][3:] == [13, 14, 15]


def test_temporal_pass_does_not_flicker_between_near_ties() -> None:
    ids = np.tile([[3, 70]], (10, 1))
    costs = np.array([[0.50, 0.52] if t % 2 else [0.52, 0.50] for t in range(10)])
    path = viterbi(costs, ids, np.zeros(100, bool), switch_cost=0.1, follow_bonus=0.0)
    assert len(set(ids[np.arange(10), path])) == 1
    # the online version with a short look-ahead decides the same sequence
    chooser = TemporalChooser(np.zeros(100, bool), lag=3, switch_cost=0.1, follow_bonus=0.0)
    chosen = [c for t in range(10) for c, _ in chooser.push(costs[t], ids[t])]
    chosen += [c for c, _ in chooser.flush()]
    assert len(chosen) == 10 and len(set(chosen)) == 1


def test_library_round_trips_and_finds_its_own_mouths(library: Path, synth_dataset: Path
                                                      ) -> None:
    lib = MouthLibrary(library)
    meta = json.loads((library / "meta.json").read_text())
    assert len(lib) == meta["n_entries"] > 20
    assert meta["config"]["split"] == "train"
    train_end = json.loads((synth_dataset / "split.json").read_text())["train"][1]
    assert lib.sources[:, 1].max() < train_end  # held-out frames never enter
    descriptors = np.load(library / "library.npz")["descriptors"]
    d, ids = lib.search(descriptors[:10], k=3)
    assert (ids[:, 0] == np.arange(10)).all() and np.allclose(d[:, 0], 0, atol=1e-3)
    assert meta["tuning"] and meta["appearance_weight"] in [float(w) for w in meta["tuning"]]
    assert lib.patches[0].shape == (*lib.patch_hw, 3)


def test_a_library_of_another_version_is_refused(library: Path, tmp_path: Path) -> None:
    import shutil

    for key, value, words in [("dataset_format", 1, "datasets of format 1"),
                              ("format_version", 99, "library format 99")]:
        copy = tmp_path / key
        shutil.copytree(library, copy)
        meta = json.loads((copy / "meta.json").read_text())
        meta[key] = value
        (copy / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(IndexError_, match=words):
            MouthLibrary(copy)
    (tmp_path / "dataset_format" / "index.faiss").write_bytes(b"garbage")
    meta = json.loads((library / "meta.json").read_text())
    (tmp_path / "dataset_format" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexError_, match="damaged"):
        MouthLibrary(tmp_path / "dataset_format")
    with pytest.raises(IndexError_, match="not a mouth library"):
        MouthLibrary(tmp_path)


def test_compose_puts_a_mouth_back_where_it_came_from(synth_clip) -> None:
    frame, lm = _frame_and_landmarks(synth_clip[0], 40)
    hw = hd_patch_size(mouth_width(lm))
    m = hd_affine(lm, hw)
    patch = cv2.warpAffine(frame, m, (hw[1], hw[0]), flags=cv2.INTER_LINEAR)
    pts = transform_points(lip_points(lm), m)
    blank = frame.copy()
    outer, inner = outer_inner_rings(lm)
    cv2.fillPoly(blank, [np.round(outer).astype(np.int32)], (0, 0, 0))
    out = compose(blank, lip_points(lm), patch, pts, region="lips", mode="feather")
    hull = polygon_mask(outer, frame.shape[:2]) > 0.5
    err = np.abs(out.astype(int) - frame.astype(int))[hull].mean()
    assert err < 8, err  # the mouth is back (blank is ~100 levels away)
    far = polygon_mask(outer, frame.shape[:2], dilate_px=int(0.3 * mouth_width(lm))) == 0
    assert (out[far] == blank[far]).all()
    assert (compose(blank, lip_points(lm), patch, pts, strength=0.0) == blank).all()


def test_index_cli_and_render_with_hd_retrieval(synth_clip, synth_dataset: Path,
                                                 random_film_ckpt: Path, tmp_path: Path) -> None:
    lib = tmp_path / "retrieval" / "person"
    r = run_cli("index", str(synth_dataset), "--out", str(lib))
    assert r.returncode == 0, r.stderr
    assert "mouths kept" in r.stdout and "w_app" in r.stdout
    assert default_library(tmp_path / "runs" / "person" / "generator",
                           tmp_path / "retrieval") == lib
    clip, _ = synth_clip
    out, stats = tmp_path / "hd.mp4", tmp_path / "stats.json"
    summary = render(clip, clip, random_film_ckpt, out,
                     RenderConfig(engine=CPU, hd=HDConfig(index=lib)), stats)
    hd = json.loads(stats.read_text())["hd"]
    assert hd["frames"] + hd["missed"] == summary.generated > 50
    assert len(hd["per_frame"]) == hd["frames"] and hd["distinct_entries"] >= 1
    assert media.probe(out).n_frames == summary.n_frames
    plain = tmp_path / "plain.mp4"
    render(clip, clip, random_film_ckpt, plain, RenderConfig(engine=CPU))
    a, b = (np.stack(list(media.read_frames(p))) for p in (plain, out))
    assert np.abs(a.astype(int) - b.astype(int)).max() > 30  # the inner mouths changed
    r = run_cli("render", "--face", str(clip), "--audio", str(clip), "--checkpoint",
                str(random_film_ckpt), "--out", str(tmp_path / "x.mp4"), "--hd-retrieval",
                "--index", str(tmp_path))
    assert r.returncode == 2 and "not a mouth library" in r.stderr


def test_index_refuses_a_bad_split_and_a_missing_dataset(tmp_path: Path) -> None:
    r = run_cli("index", str(tmp_path / "nothing"), "--out", str(tmp_path / "lib"))
    assert r.returncode == 2 and "not a prepared dataset" in r.stderr
    with pytest.raises(Exception, match="train or all"):
        build_index([tmp_path], tmp_path / "lib", IndexConfig(split="val"))
