"""The one crop recipe: render cuts exactly the crops prepare stored for the same video,
and the mouth crop is smoothed over time in both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hygie_w2l import render as render_module
from hygie_w2l.crops import CropConfig, CropPlan, cached_plan, plan_crops
from hygie_w2l.dataset import PreparedDataset
from hygie_w2l.render import RenderConfig, render
from hygie_w2l.template import load_template
from hygie_w2l.types import EngineConfig


def test_render_computes_the_matrices_prepare_stored(synth_dataset: Path, random_film_ckpt: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = PreparedDataset(synth_dataset)
    seen: list[CropPlan] = []

    def recorded(*args: object, **kwargs: object) -> CropPlan:
        plan = cached_plan(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(plan)
        return plan

    monkeypatch.setattr(render_module, "cached_plan", recorded)  # made, or read back
    video = Path(data.meta["source"])
    render(video, video, random_film_ckpt, tmp_path / "o.mp4",
           RenderConfig(blend="feather", engine=EngineConfig(device="cpu")))
    (plan,) = seen
    assert plan.config == data.plan.config  # the FiLM U-Net of 96 px on a 96-px dataset
    n = len(data.plan)
    assert len(plan) == n and plan.hd_hw == data.plan.hd_hw
    for kind in ("face", "mouth", "hd", "lips"):
        np.testing.assert_allclose(plan.matrices(kind), data.plan.matrices(kind), atol=1e-9,
                                   equal_nan=True, err_msg=kind)


def test_the_mouth_crop_is_smoothed_in_time(synth_clip) -> None:
    template = load_template(synth_clip[0], 25)
    try:
        smooth = plan_crops(template.track, CropConfig())
        raw = plan_crops(template.track, CropConfig(mouth_ema=0.0))
    finally:
        template.close()

    def jitter(m: np.ndarray) -> float:  # frame-to-frame change of the crop's translation
        return float(np.abs(np.diff(m[:, :, 2], axis=0)).mean())

    assert jitter(smooth.mouth) < 0.8 * jitter(raw.mouth)
    np.testing.assert_allclose(smooth.face, raw.face)  # the face box has its own filter
    resized = smooth.with_config(CropConfig(mouth_px=256))
    box = np.linalg.inv(np.vstack([resized.mouth[5], [0, 0, 1]])) @ [256, 256, 1]
    box0 = np.linalg.inv(np.vstack([smooth.mouth[5], [0, 0, 1]])) @ [128, 128, 1]
    np.testing.assert_allclose(box, box0)  # the same box, cut at another size
