from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

from hygie_w2l.models.checkpoint import (
    CheckpointError,
    build_model,
    load_checkpoint,
    save_checkpoint,
    save_official_layout,
)
from hygie_w2l.models.film_unet import FilmUNet, FilmUNetConfig


def test_official_layout_loads_strictly_and_round_trips(tmp_path: Path) -> None:
    model = build_model("syncnet_color")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    path = save_official_layout(tmp_path / "lipsync_expert.pth", model, step=1234)
    raw = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in raw["state_dict"])
    assert set(raw) == {"state_dict", "optimizer", "global_step", "global_epoch"}
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "syncnet_color" and ckpt.official and ckpt.step == 1234
    for (k, a), (_, b) in zip(model.state_dict().items(), ckpt.model.state_dict().items(),
                                  strict=True):
        assert torch.equal(a, b), k


def test_bare_state_dict_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "syncnet_v2.model"
    torch.save(build_model("syncnet_v2").state_dict(), path)
    assert load_checkpoint(path, expect="syncnet_v2").arch == "syncnet_v2"


def test_our_checkpoint_describes_itself(tmp_path: Path) -> None:
    model = FilmUNet(FilmUNetConfig(size_px=96, channels=(16, 32, 64, 128), audio_dim=64))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 1, 80, 16), torch.rand(1, 4, 96, 96)).mean().backward()
    opt.step()
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "best.pt", model, "film_unet", step=7, optimizer=opt.state_dict(),
                    meta={"dataset_hash": "abc"})
    ckpt = load_checkpoint(run)  # a run folder means its best.pt
    assert ckpt.arch == "film_unet" and ckpt.step == 7 and not ckpt.official
    assert ckpt.config["size_px"] == 96 and tuple(ckpt.config["channels"]) == (16, 32, 64, 128)
    assert ckpt.meta["dataset_hash"] == "abc" and "torch" in ckpt.meta
    assert ckpt.optimizer is not None and ckpt.optimizer["state"]
    restored = torch.optim.Adam(ckpt.model.parameters())
    restored.load_state_dict(ckpt.optimizer)


def test_shape_mismatch_names_the_first_key(tmp_path: Path) -> None:
    state = build_model("disc_qual").state_dict()
    state["face_encoder_blocks.1.0.conv_block.0.weight"] = torch.zeros(64, 32, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": collections.OrderedDict(state)}, path)
    with pytest.raises(CheckpointError, match=r"face_encoder_blocks\.1\.0\.conv_block\.0\.weight"):
        load_checkpoint(path)


def test_wrong_architecture_is_refused(tmp_path: Path) -> None:
    path = save_official_layout(tmp_path / "disc.pth", build_model("disc_qual"))
    with pytest.raises(CheckpointError, match="disc_qual checkpoint, but wav2lip"):
        load_checkpoint(path, expect="wav2lip")


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    full = save_official_layout(tmp_path / "x.pth", build_model("disc_qual"))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(cut)


class Payload:
    """Stands for anything that needs code to unpickle (a whole module, an exploit)."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("this must never run",))


def test_pickle_with_code_is_refused_not_executed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="needs code to be unpickled"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out
    module_path = tmp_path / "module.pth"
    torch.save(build_model("disc_qual"), module_path)  # a whole serialised module
    with pytest.raises(CheckpointError, match="needs code"):
        load_checkpoint(module_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {"a.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="match no known architecture"):
        load_checkpoint(path)
