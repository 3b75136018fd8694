import pytest
import torch

from hygie_w2l.models.film_unet import FilmUNet, FilmUNetConfig


@pytest.mark.parametrize("size", [96, 128, 192, 256])
def test_shapes_and_range(size: int) -> None:
    model = FilmUNet(FilmUNetConfig(size_px=size))
    out = model(torch.randn(2, 1, 80, 16), torch.rand(2, 4, size, size))
    assert out.shape == (2, 3, size, size)
    assert out.min() >= 0 and out.max() <= 1


def test_about_two_million_parameters() -> None:
    n = sum(p.numel() for p in FilmUNet().parameters())
    assert 1.5e6 < n < 3e6


def test_starts_as_identity_on_the_masked_input() -> None:
    crop = torch.rand(1, 4, 128, 128)
    out = FilmUNet()(torch.randn(1, 1, 80, 16), crop)
    assert torch.allclose(out, crop[:, :3])


def test_output_depends_on_the_audio_after_a_step() -> None:
    torch.manual_seed(0)
    model = FilmUNet(FilmUNetConfig(size_px=96))
    crop = torch.rand(2, 4, 96, 96)
    mel = torch.randn(2, 1, 80, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = (model(mel, crop) - torch.rand(2, 3, 96, 96)).abs().mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        a = model(mel, crop)
        b = model(mel.flip(0), crop)
    assert not torch.allclose(a, b)


def test_unsupported_size_is_refused() -> None:
    with pytest.raises(ValueError, match="size_px"):
        FilmUNetConfig(size_px=100)
