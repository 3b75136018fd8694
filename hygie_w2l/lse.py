"""Lip-sync error LSE-D / LSE-C: the published protocol of SyncNet v2, clean-room.

Pipeline (as the evaluation tool of the Wav2Lip paper, re-implemented from its description):
* audio: 13 MFCCs at 100 Hz (25 ms Hamming-free frames every 10 ms, 26 mel filters, 512-point
  FFT, pre-emphasis 0.97, liftering 22, the first coefficient replaced by the log frame
  energy), 0.2 s windows (20 steps) starting at each video frame (4 steps per frame at 25 fps);
* video: 224-px face crops, 5-frame windows, pixel values 0-255;
* scores: for each video window t and offset o in [-15, 15] the Euclidean distance between the
  lip embedding of t and the audio embedding of t + o; averaged over t per offset, LSE-D is
  the smallest mean distance, the AV offset is where it lies, and LSE-C (confidence) is the
  median of the mean distances minus that minimum.

The same arithmetic, applied to our fine-tuned expert's embeddings, gives the "expert" sync
scores reported when ``syncnet_v2.model`` is absent: labelled as such, not comparable with
published LSE numbers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from hygie_w2l.audio import FPS, SAMPLE_RATE_HZ, SYNC_T

SYNCNET_V2_FACE_PX = 224  # the face crop SyncNet v2 reads
MFCC_RATE_HZ = 100
SYNC_FRAMES = SYNC_T  # video frames per window: 0.2 s
MFCC_STEPS = 20
V_SHIFT = 15


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700 * (10 ** (mel / 2595.0) - 1)


def mfcc(signal: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ, n_cep: int = 13, n_filt: int = 26,
         n_fft: int = 512, win_s: float = 0.025, step_s: float = 0.01, preemph: float = 0.97,
         lifter: int = 22) -> np.ndarray:
    """(T, 13) MFCCs of a mono float signal, T = 1 + ceil((len - win) / step)."""
    from scipy.fft import dct

    x = np.asarray(signal, np.float64)
    x = np.append(x[0], x[1:] - preemph * x[:-1])
    win, step = int(round(win_s * sample_rate)), int(round(step_s * sample_rate))
    n = 1 if len(x) <= win else 1 + int(np.ceil((len(x) - win) / step))
    padded = np.concatenate([x, np.zeros(max((n - 1) * step + win - len(x), 0))])
    idx = np.arange(win)[None, :] + step * np.arange(n)[:, None]
    frames = padded[idx]
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft
    energy = power.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    mel_pts = np.linspace(_hz_to_mel(0), _hz_to_mel(sample_rate / 2), n_filt + 2)
    bins = np.floor((n_fft + 1) * _mel_to_hz(mel_pts) / sample_rate).astype(int)
    bank = np.zeros((n_filt, n_fft // 2 + 1))
    for j in range(n_filt):
        a, b, c = bins[j], bins[j + 1], bins[j + 2]
        bank[j, a:b] = (np.arange(a, b) - a) / max(b - a, 1)
        bank[j, b:c] = (c - np.arange(b, c)) / max(c - b, 1)
    feat = power @ bank.T
    feat = np.log(np.where(feat == 0, np.finfo(float).eps, feat))
    cep = dct(feat, type=2, axis=1, norm="ortho")[:, :n_cep]
    cep *= 1 + (lifter / 2.0) * np.sin(np.pi * np.arange(n_cep) / lifter)
    cep[:, 0] = np.log(energy)
    return cep.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SyncScores:
    offset: int  # frames; 0 when audio and video are in sync
    distance: float  # LSE-D: mean distance at the best offset (lower is better)
    confidence: float  # LSE-C: median - min of the mean distances (higher is better)
    mean_distances: list[float]  # per offset -V_SHIFT..V_SHIFT


def sync_scores(video_emb: np.ndarray, audio_emb: np.ndarray, v_shift: int = V_SHIFT
                ) -> SyncScores:
    """LSE arithmetic on (N, D) embeddings of the same N windows (audio window t under video
    window t). Audio windows outside 0..N-1 are padded with zeros, as the published tool."""
    n = min(len(video_emb), len(audio_emb))
    v = torch.from_numpy(np.asarray(video_emb[:n], np.float32))
    a = torch.nn.functional.pad(torch.from_numpy(np.asarray(audio_emb[:n], np.float32)),
                                (0, 0, v_shift, v_shift))
    dists = torch.stack([torch.nn.functional.pairwise_distance(
        v[[t]].repeat(2 * v_shift + 1, 1), a[t:t + 2 * v_shift + 1]) for t in range(n)])
    mean = dists.mean(0)
    minval, minidx = torch.min(mean, 0)
    return SyncScores(offset=int(v_shift - minidx), distance=float(minval),
                      confidence=float(torch.median(mean) - minval),
                      mean_distances=[float(x) for x in mean])


@torch.no_grad()
def syncnet_v2_scores(model: torch.nn.Module, faces224: np.ndarray, wav: np.ndarray,
                      fps: float = FPS, batch: int = 20) -> SyncScores:
    """faces224 (T, 224, 224, 3) uint8 BGR face crops, wav 16 kHz mono of the same span."""
    cc = mfcc(np.asarray(wav, np.float64) * 32768.0).T  # (13, T_a), int16 scale as the tool
    per_frame = MFCC_RATE_HZ / fps
    n = min(len(faces224) - SYNC_FRAMES, int(cc.shape[1] / per_frame) - SYNC_FRAMES)
    if n < 1:
        raise ValueError("too short for SyncNet windows (needs > 5 frames)")
    v_emb, a_emb = [], []
    model.eval()
    for s in range(0, n, batch):
        ts = range(s, min(s + batch, n))
        clips = np.stack([faces224[t:t + SYNC_FRAMES] for t in ts])  # (B, 5, H, W, 3)
        lip = torch.from_numpy(clips).float().permute(0, 4, 1, 2, 3)
        aud = np.stack([cc[:, int(t * per_frame):int(t * per_frame) + MFCC_STEPS]
                        for t in ts])[:, None]
        v_emb.append(model.forward_lip(lip).numpy())  # type: ignore[operator]
        a_emb.append(model.forward_aud(torch.from_numpy(aud)).numpy())  # type: ignore[operator]
    return sync_scores(np.concatenate(v_emb), np.concatenate(a_emb))


@torch.no_grad()
def expert_scores(expert: torch.nn.Module, faces96: np.ndarray, mel: np.ndarray,
                  first_frame: int, fps: float = FPS, batch: int = 32) -> SyncScores:
    """Our expert (SyncNet_color) on 5-frame windows of 96-px face crops (T, 96, 96, 3) BGR
    of frames first_frame.. and the dataset's mel: the LSE arithmetic on its embeddings."""
    from hygie_w2l.audio import mel_window

    n = len(faces96) - SYNC_FRAMES + 1
    if n < 1:
        raise ValueError("too short for expert windows (needs >= 5 frames)")
    v_emb, a_emb = [], []
    expert.eval()
    for s in range(0, n, batch):
        ts = range(s, min(s + batch, n))
        win = np.stack([np.concatenate(list(faces96[t:t + SYNC_FRAMES]), axis=2)
                        for t in ts]).transpose(0, 3, 1, 2) / 255.0
        faces = torch.from_numpy(win[:, :, win.shape[2] // 2:].astype(np.float32))
        mels = np.stack([mel_window(mel, first_frame + t + 2, fps) for t in ts])[:, None]
        a, v = expert(torch.from_numpy(np.ascontiguousarray(mels)), faces)
        v_emb.append(v.numpy())
        a_emb.append(a.numpy())
    return sync_scores(np.concatenate(v_emb), np.concatenate(a_emb))
