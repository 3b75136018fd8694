"""Models: the official Wav2Lip trio (clean-room), SyncNet v2 for LSE, and the FiLM U-Net."""

from hygie_w2l.models.film_unet import FilmUNet, FilmUNetConfig
from hygie_w2l.models.syncnet_lse import SyncNetV2_lse
from hygie_w2l.models.wav2lip import SyncNet_color, Wav2Lip, Wav2Lip_disc_qual

__all__ = ["FilmUNet", "FilmUNetConfig", "SyncNetV2_lse", "SyncNet_color", "Wav2Lip",
           "Wav2Lip_disc_qual"]
