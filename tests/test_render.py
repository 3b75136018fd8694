"""Rendering: real templates and speech, both checkpoint kinds, exact durations, untouched
pixels outside the mouth, and bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from hygie_w2l import media
from hygie_w2l.errors import HygieError
from hygie_w2l.geometry import box_affine, generator_mask, invert, placed_box, warp
from hygie_w2l.models.checkpoint import build_model, save_checkpoint, save_official_layout
from hygie_w2l.render import RenderConfig, render, silence_gate
from hygie_w2l.template import load_template, template_index
from hygie_w2l.types import GENERATOR_ARCHS, EngineConfig
from tests.conftest import make_variant, run_cli

CPU = EngineConfig(device="cpu")


@pytest.fixture(scope="module")
def film_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("film_unet", {"size_px": 96, "channels": (8, 16, 32, 64, 128)})
    torch.nn.init.normal_(model.head.weight, std=0.05)  # draw something, not the identity
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "film.pt", model, "film_unet")


@pytest.fixture(scope="module")
def wav2lip_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_official_layout(tmp_path_factory.mktemp("ck") / "wav2lip.pth",
                                build_model("wav2lip"))


def test_pingpong_and_wrap_indices() -> None:
    assert [template_index(k, 4, "pingpong") for k in range(9)] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert [template_index(k, 3, "wrap") for k in range(5)] == [0, 1, 2, 0, 1]
    assert template_index(17, 1, "pingpong") == 0


def test_the_registry_names_each_generator_by_its_own_arch() -> None:
    """Its entries are module:class strings, imported when asked for (a lips render imports
    no image generator): a typo there shows only here."""
    from hygie_w2l.generators import cli_name, generator_class

    for arch in GENERATOR_ARCHS:
        assert generator_class(arch).arch == arch
    with pytest.raises(HygieError, match="unknown generator"):
        generator_class(cli_name("film_unet"))


def test_silence_keeps_the_template_mouth() -> None:
    wav = np.zeros(16000 * 2, np.float32)
    wav[8000:16000] = 0.3 * np.sin(np.arange(8000) * 0.2)
    voiced = silence_gate(wav, 50, 25, -50.0, hold_frames=2)
    assert not voiced[:10].any() and voiced[14:24].all() and not voiced[30:].any()


def _duration(path: Path) -> float:
    return media.probe(path).duration_s


def test_feather_leaves_everything_outside_the_mouth_untouched(synth_clip, film_ckpt: Path,
                                                                tmp_path: Path) -> None:
    clip, _ = synth_clip
    out = tmp_path / "out.mp4"
    summary = render(clip, clip, film_ckpt, out, RenderConfig(blend="feather", engine=CPU))
    assert summary.generated > 50 and summary.no_face == 0
    info = media.probe(out)
    assert (info.video_codec, info.audio_streams[0].codec) == ("h264", "aac")
    assert abs(info.duration_s - _duration(clip)) <= 1 / 25 + 0.03
    assert media.read_metadata(out)["hygie_synthetic_mouth"] == "1"
    template = load_template(clip, 25)
    try:
        size = 96
        changed = 0.0
        assert info.n_frames == summary.n_frames  # every rendered frame is in the file
        for k, (a, b) in enumerate(zip(media.read_frames(clip), media.read_frames(out),
                                       strict=False)):
            lm = template.track.landmarks[k]
            m = box_affine(placed_box(lm, template.track.calibration.mouth), size)
            region = warp(generator_mask(size), invert(m), a.shape[:2])
            outside = cv2.dilate((region > 0.002).astype(np.uint8), np.ones((9, 9))) == 0
            diff = np.abs(a.astype(int) - b.astype(int)).mean(-1)  # per channel, 0..255
            assert diff[outside].mean() < 2.0, k  # only the re-encoding's rounding
            assert np.percentile(diff[outside], 99) < 8, k
            changed = max(changed, float(diff[~outside].mean()))
        assert changed > 4  # and the mouth did change
    finally:
        template.close()


def test_real_template_pingpongs_under_longer_speech(real_data: Path, wav2lip_ckpt: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "office.mp4"
    stats = tmp_path / "stats.json"
    run = run_cli("render", "--face", str(real_data / "talk_office_5s.mp4"), "--audio",
                  str(real_data / "speech_radio_8s.wav"), "--checkpoint", str(wav2lip_ckpt),
                  "--out", str(out), "--stats", str(stats), "--preview", "--device", "cpu")
    assert run.returncode == 0, run.stderr[-2000:]
    assert abs(_duration(out) - 8.0) <= 1 / 25 + 0.03
    data = json.loads(stats.read_text())
    assert data["n_frames"] == 200 and set(data["stage_seconds"]) >= {
        "decode", "track", "generate", "blend", "encode"}
    cpu = data["cpu_s"]  # the render's own CPU and its ffmpeg processes' (decode, x264)
    assert cpu["own"] > 0 and cpu["ffmpeg"] > 0
    assert sum(cpu.values()) <= (os.cpu_count() or 1) * data["total_s"] * 1.05
    assert "frames/s" in run.stdout and "cores busy" in run.stdout
    assert out.with_name("office.preview.mp4").exists()


def test_still_image_with_mp3_speech(real_data: Path, synth_clip, film_ckpt: Path,
                                     tmp_path: Path) -> None:
    clip, _ = synth_clip
    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), next(media.read_frames(clip)))
    speech = tmp_path / "speech.mp3"
    media.run_ffmpeg(["-v", "error", "-i", str(real_data / "speech_abstract_33s.mp3"), "-t",
                      "6", "-y", str(speech)], "cut")
    out = tmp_path / "still.mp4"
    summary = render(photo, speech, film_ckpt, out, RenderConfig(engine=CPU))
    assert abs(_duration(out) - _duration(speech)) <= 1 / 25 + 0.03
    assert summary.generated + summary.silent == summary.n_frames


def test_frames_without_a_face_pass_through_and_are_counted(synth_clip, film_ckpt: Path,
                                                            tmp_path: Path) -> None:
    clip, _ = synth_clip
    gaps = make_variant(clip, tmp_path / "gaps.mp4",
                        lambda f, i: np.full_like(f, 70) if 40 <= i < 60 else f)
    summary = render(gaps, clip, film_ckpt, tmp_path / "o.mp4",
                     RenderConfig(blend="feather", engine=CPU))
    assert summary.no_face == 20


def test_bad_inputs_exit_2_with_the_file_named(synth_clip, film_ckpt: Path,
                                               tmp_path: Path) -> None:
    clip, _ = synth_clip
    blank = make_variant(clip, tmp_path / "noface.mp4", lambda f, i: np.full_like(f, 90))
    corrupt = tmp_path / "speech.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 10)
    readonly = tmp_path / "ro.mp4"
    readonly.write_bytes(b"x")
    readonly.chmod(0o444)
    cases = [(blank, clip, tmp_path / "a.mp4", "noface.mp4: no face found"),
             (clip, corrupt, tmp_path / "b.mp4", "speech.wav"),
             (clip, clip, tmp_path / "missing" / "c.mp4", "does not exist"),
             (clip, clip, tmp_path, "is a folder"),
             (clip, clip, readonly, "ro.mp4: the file exists and is read-only")]
    for face, audio, out, message in cases:
        run = run_cli("render", "--face", str(face), "--audio", str(audio), "--checkpoint",
                      str(film_ckpt), "--out", str(out), "--device", "cpu")
        assert run.returncode == 2 and message in run.stderr, (message, run.stderr[-500:])
    assert readonly.read_bytes() == b"x"  # left as it was


def test_a_wrong_checkpoint_is_refused(synth_clip, tmp_path: Path) -> None:
    clip, _ = synth_clip
    expert = save_official_layout(tmp_path / "expert.pth", build_model("syncnet_color"))
    run = run_cli("render", "--face", str(clip), "--audio", str(clip), "--checkpoint",
                  str(expert), "--out", str(tmp_path / "o.mp4"))
    assert run.returncode == 2 and "syncnet_color checkpoint" in run.stderr
    sf.write(tmp_path / "x.wav", np.zeros(100, np.float32), 16000)


_HOUR_PROBE = """
import sys
import numpy as np
from hygie_w2l.audio import MelWindows, n_video_frames
from hygie_w2l.doctor import peak_memory_mb
from hygie_w2l.media import AudioFile
from hygie_w2l.render import silence_gate
base = peak_memory_mb()
speech = AudioFile(sys.argv[1], sys.argv[2])
n = n_video_frames(speech.n_samples)
voiced = silence_gate(speech, n, 25, -50.0)
mel = MelWindows(speech)
for start in (0, n // 2, n - 16):
    assert np.isfinite(mel(list(range(start, start + 16)))).all()
grown = peak_memory_mb() - base
print(n, int(voiced.sum()), f"{grown:.0f}")
"""


def test_hour_long_speech_is_streamed_with_flat_memory(tmp_path: Path) -> None:
    """Decoded whole, this hour grows the process by ~2.9 GB (230 MB of samples, a 92 MB mel
    and the float64/complex STFT on the way, measured); streamed, by ~20 MB."""
    from hygie_w2l.media import ffmpeg_exe

    speech = tmp_path / "hour.wav"  # 61 min of 8-kHz noise bursts (59 MB on disk)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "anoisesrc=d=3660:r=8000:a=0.1,volume='lt(mod(t,4),3)':eval=frame",
                    "-c:a", "pcm_s16le", str(speech)], check=True)
    run = subprocess.run([sys.executable, "-c", _HOUR_PROBE, str(speech), str(tmp_path)],
                         capture_output=True, text=True, check=True)
    n_frames, n_voiced, grown_mb = map(int, run.stdout.split())
    assert n_frames == 3660 * 25
    assert 0.6 < n_voiced / n_frames < 0.9  # the bursts are found: 3 s of every 4
    assert grown_mb < 150, f"the audio front end grew the process by {grown_mb} MB"


def test_batch_size_fits_the_free_memory(wav2lip_ckpt: Path) -> None:
    from hygie_w2l.generate import BATCH_CAP, MEMORY_SHARE, activation_bytes, auto_batch_size
    from hygie_w2l.models.checkpoint import load_checkpoint

    model = load_checkpoint(wav2lip_ckpt).model.eval()
    cpu = torch.device("cpu")
    one = activation_bytes(model, torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96))
    two = activation_bytes(model, torch.zeros(2, 1, 80, 16), torch.zeros(2, 6, 96, 96))
    assert two == 2 * one and 20 * 2**20 < one < 200 * 2**20  # Wav2Lip: ~51 MB per frame

    def fitted(free: float) -> int:
        return auto_batch_size(model, torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96),
                               cpu, free_bytes=int(free))

    assert fitted(1e12) == BATCH_CAP["cpu"]
    assert fitted(3.5 * one / MEMORY_SHARE["cpu"]) == 3
    assert fitted(one) == 1  # never 0


def test_out_of_memory_halves_the_batch_instead_of_failing(film_ckpt: Path,
                                                          tmp_path: Path) -> None:
    from hygie_w2l.generate import Engine
    from hygie_w2l.generators import generator_for
    from hygie_w2l.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(film_ckpt)
    engine = Engine(ckpt, generator_for(ckpt), EngineConfig(batch_size=8))
    real = engine.model
    calls: list[int] = []

    class SmallDevice(torch.nn.Module):  # a device that holds at most 2 frames
        def forward(self, mel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            calls.append(len(x))
            if len(x) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return real(mel, x)

    engine.model = SmallDevice()
    inputs = np.random.default_rng(1).random((7, 4, 96, 96), np.float32)
    mels = np.random.default_rng(0).standard_normal((7, 80, 16)).astype(np.float32)
    out = engine(inputs, mels)
    assert out.shape == (7, 96, 96, 3) and engine.chunk == 2
    assert calls[:3] == [7, 4, 2] and max(calls[3:]) <= 2
    engine.model, engine.chunk = real, 8
    whole = engine(inputs, mels).astype(int)  # the same frames as in one batch (+-1 rounding)
    assert np.abs(out.astype(int) - whole).max() <= 1


def test_the_onnx_engine_runs_a_batch_in_parts_at_once_with_the_same_frames(
        film_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    from hygie_w2l.generate import Engine
    from hygie_w2l.generators import generator_for
    from hygie_w2l.models.checkpoint import load_checkpoint

    monkeypatch.setenv("HYGIE_CACHE", str(tmp_path / "cache"))
    ckpt = load_checkpoint(film_ckpt)
    inputs = np.random.default_rng(1).random((7, 4, 96, 96), np.float32)
    mels = np.random.default_rng(0).standard_normal((7, 80, 16)).astype(np.float32)
    torch_out = Engine(ckpt, generator_for(ckpt), CPU)(inputs, mels).astype(int)
    outs = {}
    for threads in (1, 3):
        engine = Engine(ckpt, generator_for(ckpt), EngineConfig(engine="onnx", threads=threads),
                        source=film_ckpt)
        outs[threads] = engine(inputs, mels).astype(int)
        assert engine.parts == threads and (engine.pool is not None) == (threads > 1)
    assert (outs[1] == outs[3]).all()  # parts of 3, 2 and 2 frames: the frames of one run
    assert np.abs(outs[3] - torch_out).max() <= 1


def test_an_export_record_is_trusted_only_when_it_is_whole_and_fits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """find_export runs before the checkpoint is read: a record that names no image
    generator, or another generator than the checkpoint's, or a missing checkpoint, means
    no cached export (the checkpoint is then loaded, and says what is wrong with it)."""
    import json as json_module

    from hygie_w2l.export import _cache_paths, find_export
    from hygie_w2l.generators import generator_class

    monkeypatch.setenv("HYGIE_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "film.pt"
    ckpt.write_bytes(b"weights")
    fp32, _, record = _cache_paths(ckpt, int8=False)
    fp32.parent.mkdir(parents=True)
    fp32.write_bytes(b"onnx")

    def found(**meta: object) -> object:
        record.write_text(json_module.dumps({"arch": "film_unet", "crop_px": 96,
                                             "sample_bytes": 1000, **meta}))
        return find_export(ckpt, int8=False)

    export = found()
    assert export is not None and export.generator().crop_px == 96
    assert export.serves(generator_class("film_unet")(96))
    assert not export.serves(generator_class("film_unet")(128))
    assert not export.serves(generator_class("wav2lip")())
    assert found(arch="lips") is None  # no ONNX engine: not a crash later
    assert found(arch="nope") is None and found(crop_px=0) is None
    assert found(crop_px="x") is None and find_export(tmp_path / "nope.pt", False) is None
    assert find_export(ckpt, int8=True) is None  # INT8 needs its own model and note


@pytest.mark.slow
def test_a_cached_onnx_export_renders_without_torch(synth_clip, random_film_ckpt: Path,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The first ONNX render of a checkpoint file exports it (with torch); later ones read
    the generator's arch, crop and batch size beside the export and never import torch
    (1.5-3 s of a render's process on 2 cores), for the same video. A damaged record of the
    export, or a changed checkpoint file (same name, new content), is exported again."""
    pytest.importorskip("onnxruntime")
    template, _ = synth_clip
    ckpt = tmp_path / "film.pt"
    ckpt.write_bytes(random_film_ckpt.read_bytes())
    code = ("import sys; from hygie_w2l.cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(rc)")

    def onnx_render(name: str) -> tuple[str, bool]:
        """(how the engine got its model: exported or cached, whether torch was imported)"""
        run = subprocess.run(
            [sys.executable, "-c", code, "render", "--face", str(template), "--audio",
             str(template), "--checkpoint", str(ckpt), "--engine", "onnx", "--blend",
             "feather", "--crf", "0", "--out", str(tmp_path / f"{name}.mp4")],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "HYGIE_CACHE": str(tmp_path / "cache")})
        assert run.returncode == 0, run.stderr[-2000:]
        note = next(line for line in run.stdout.splitlines() if "ONNX engine" in line)
        how = "exported" if "(exported)" in note else "cached" if "(cached)" in note else note
        return how, run.stdout.splitlines()[-1] == "torch imported: True"

    def frames(name: str) -> np.ndarray:
        return np.stack(list(media.read_frames(tmp_path / f"{name}.mp4")))

    assert onnx_render("first") == ("exported", True)
    assert onnx_render("second") == ("cached", False)
    np.testing.assert_array_equal(frames("first"), frames("second"))
    from hygie_w2l.cache import list_cache

    monkeypatch.setenv("HYGIE_CACHE", str(tmp_path / "cache"))
    exports = [e for e in list_cache() if e.kind == "onnx"]
    assert len(exports) == 2 and {e.source for e in exports} == {str(ckpt.resolve())}
    (record,) = (tmp_path / "cache" / "onnx").glob("*.json")
    record.write_text('{"arch": "film_unet"}')  # cut short: exported again, not trusted
    assert onnx_render("third") == ("exported", True)
    model = build_model("film_unet", {"size_px": 96, "channels": (8, 16, 32, 64, 128)})
    save_checkpoint(ckpt, model, "film_unet")  # other weights, same name
    assert onnx_render("fourth") == ("exported", True)
    assert np.abs(frames("fourth").astype(int) - frames("third")).max() > 10


@pytest.mark.slow
def test_int8_onnx_engine_is_calibrated_once_then_cached(synth_clip, wav2lip_ckpt: Path,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("HYGIE_CACHE", str(tmp_path / "cache"))
    clip, _ = synth_clip
    speech = tmp_path / "speech.wav"
    sf.write(speech, media.load_audio(clip)[:2 * 16000], 16000)
    # lossless x264 (crf 0): lossy encoding alone moves the mean by 0.3-0.5 levels, chaotically
    config = RenderConfig(blend="feather", crf=0, engine=EngineConfig(engine="onnx", int8=True))
    first = render(clip, speech, wav2lip_ckpt, tmp_path / "a.mp4", config)
    assert "(exported)" in first.engine_note and "INT8 vs fp32" in first.engine_note
    error_levels = float(first.engine_note.split("max error ")[1].split(" levels")[0])
    assert error_levels < 3.0
    assert len(list((tmp_path / "cache" / "onnx").glob("*.int8.onnx"))) == 1
    second = render(clip, speech, wav2lip_ckpt, tmp_path / "b.mp4", config)
    assert "(cached)" in second.engine_note and second.generated == first.generated > 40
    torch_run = render(clip, speech, wav2lip_ckpt, tmp_path / "c.mp4",
                       RenderConfig(blend="feather", crf=0))
    a = np.stack(list(media.read_frames(tmp_path / "a.mp4"))).astype(int)
    c = np.stack(list(media.read_frames(tmp_path / "c.mp4"))).astype(int)
    assert torch_run.generated == first.generated
    assert np.abs(a - c).mean() < 0.1  # the same video, in 8 bits (measured: 0.02)
