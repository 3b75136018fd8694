#!/usr/bin/env python3
"""Decode throughput of the streaming reader (frames/s at 25 fps) and audio decoding time on
the real clips of $HYGIE_TEST_DATA. Writes bench_out/decode.json."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hygie_w2l.doctor import peak_memory_mb
from hygie_w2l.media import load_audio, probe, read_frames


def main() -> None:
    folder = Path(os.environ.get("HYGIE_TEST_DATA", "../shared/data"))
    if not folder.is_dir():
        print(f"skipped: {folder} not found (set HYGIE_TEST_DATA)")
        return
    rows = []
    for clip in sorted(folder.glob("*.mp4")):
        info = probe(clip)
        start = time.perf_counter()
        n = sum(1 for _ in read_frames(clip, fps=25, info=info))
        decode_s = time.perf_counter() - start
        audio_s = float("nan")
        if info.has_audio:
            start = time.perf_counter()
            load_audio(clip)
            audio_s = time.perf_counter() - start
        rows.append({"clip": clip.name, "size": f"{info.width}x{info.height}", "frames": n,
                     "decode_fps": n / decode_s, "audio_decode_s": audio_s})
    peak_mb = peak_memory_mb()
    print("| clip | size | frames at 25 fps | decode frames/s | audio decode s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clip']} | {r['size']} | {r['frames']} | {r['decode_fps']:.0f} | "
              f"{r['audio_decode_s']:.2f} |")
    print(f"peak memory of this process: {peak_mb:.0f} MB")
    out = Path("bench_out/decode.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "peak_mb": peak_mb}, indent=1))


if __name__ == "__main__":
    main()
