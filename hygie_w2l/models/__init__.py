"""Models: the official Wav2Lip trio (clean-room), SyncNet v2 for LSE, and the FiLM U-Net,
one module each (imported where used: each imports torch, which a lips render never needs).
"""
