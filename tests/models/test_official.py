"""The clean-room models equal the official ones: names, order, shapes and forward outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hygie_w2l.models.checkpoint import build_model
from tests.conftest import TESTS_DATA

REF_KEYS = json.loads((TESTS_DATA / "wav2lip_official_state_dicts.json").read_text())
REF_OUT = np.load(TESTS_DATA / "wav2lip_forward_reference.npz")
ARCH = {"Wav2Lip": ("wav2lip", 1), "SyncNet_color": ("syncnet_color", 2),
        "Wav2Lip_disc_qual": ("disc_qual", 3), "SyncNetV2_lse": ("syncnet_v2", 4)}


def fill_deterministically(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The filling rule of ../shared/reference/README.md, in the official key order."""
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for key, value in state.items():
        shape = tuple(value.shape)
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            arr = 1 + 0.1 * np.abs(rng.standard_normal(shape))
        elif key.endswith("running_mean"):
            arr = 0.1 * rng.standard_normal(shape)
        elif len(shape) >= 2:
            arr = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        elif "conv_block" in key and ".1.weight" in key:
            arr = 1 + 0.1 * rng.standard_normal(shape)
        else:
            arr = 0.1 * rng.standard_normal(shape)
        state[key] = torch.from_numpy(np.asarray(arr, np.float64).astype(np.float32))
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("name", list(ARCH))
def test_state_dict_keys_order_and_shapes_equal_the_official(name: str) -> None:
    model = build_model(ARCH[name][0])
    mine = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in model.state_dict().items()]
    assert mine == REF_KEYS[name]["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == REF_KEYS[name]["num_params"]


def _model(name: str) -> torch.nn.Module:
    arch, seed = ARCH[name]
    return fill_deterministically(build_model(arch), seed)


def _t(key: str) -> torch.Tensor:
    return torch.from_numpy(REF_OUT[key])


def _close(actual: torch.Tensor, key: str) -> None:
    np.testing.assert_allclose(actual.numpy(), REF_OUT[key], rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_wav2lip_forward_equals_the_reference() -> None:
    _close(_model("Wav2Lip")(_t("gen_mel"), _t("gen_face")), "gen_out")


@torch.no_grad()
def test_wav2lip_accepts_5d_sequences_time_major() -> None:
    model = _model("Wav2Lip")
    mel = _t("gen_mel")  # (2, 1, 80, 16)
    face = _t("gen_face")  # (2, 6, 96, 96)
    # A sequence of T=2 for one clip: frames 0 and 1 are the two reference samples.
    out = model(mel[None], face.permute(1, 0, 2, 3)[None])  # (1, 3, 2, 96, 96)
    assert out.shape == (1, 3, 2, 96, 96)
    _close(out[0].permute(1, 0, 2, 3), "gen_out")


@torch.no_grad()
def test_syncnet_forward_equals_the_reference() -> None:
    audio, face = _model("SyncNet_color")(_t("sync_mel"), _t("sync_face"))
    _close(audio, "sync_audio_emb")
    _close(face, "sync_face_emb")
    assert torch.allclose(audio.norm(dim=1), torch.ones(2), atol=1e-5)


@torch.no_grad()
def test_disc_forward_equals_the_reference() -> None:
    _close(_model("Wav2Lip_disc_qual")(_t("disc_face")), "disc_out")


@torch.no_grad()
def test_syncnet_v2_forward_equals_the_reference() -> None:
    model = _model("SyncNetV2_lse")
    _close(model.forward_aud(_t("lse_mfcc")), "lse_aud_feat")
    _close(model.forward_lip(_t("lse_lip")), "lse_lip_feat")
