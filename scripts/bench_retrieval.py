#!/usr/bin/env python3
"""HD retrieval at scale: FAISS build and per-frame query + temporal-pass cost for libraries
of 1k, 10k and 100k mouths (100k = one hour of video at 25 fps), and the per-frame cost of
composing a chosen patch into a 720p frame.

The descriptors are the real ones of a library built from $HYGIE_TEST_DATA/talk_selfie_24s.mp4
(training split), resampled with small noise to reach each size: the search cost depends
on the count and the dimension, not on which mouths they are.
Writes bench_out/retrieval.json and prints a table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hygie_w2l.compose import compose  # noqa: E402
from hygie_w2l.library import (  # noqa: E402
    MouthLibrary,
    build_index,
    lip_points,
    make_faiss_index,
)
from hygie_w2l.prepare import prepare  # noqa: E402
from hygie_w2l.temporal import TemporalChooser  # noqa: E402


def main() -> int:
    data = Path(os.environ.get("HYGIE_TEST_DATA", "../shared/data"))
    clip = data / "talk_selfie_24s.mp4"
    out_dir = Path("bench_out")
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ds, lib_dir = Path(tmp) / "ds", Path(tmp) / "lib"
        prepare(clip, ds)
        t0 = time.perf_counter()
        build_index([ds], lib_dir)
        real_build = time.perf_counter() - t0
        lib = MouthLibrary(lib_dir)
        base = np.load(lib_dir / "library.npz")["descriptors"]
        rng = np.random.default_rng(0)
        rows = []
        queries = base[rng.integers(len(base), size=500)] + rng.normal(0, 0.05, (500,
                                                                               base.shape[1]))
        for n in (1_000, 10_000, 100_000):
            desc = (base[rng.integers(len(base), size=n)]
                    + rng.normal(0, 0.05, (n, base.shape[1]))).astype(np.float32)
            t0 = time.perf_counter()
            index = make_faiss_index(desc)
            build = time.perf_counter() - t0
            if hasattr(index, "hnsw"):
                index.hnsw.efSearch = 64
            t0 = time.perf_counter()
            for q in queries:  # one frame at a time, as render queries
                index.search(q[None].astype(np.float32), 8)
            query_ms = (time.perf_counter() - t0) / len(queries) * 1e3
            d, ids = index.search(queries.astype(np.float32), 8)
            chooser = TemporalChooser(np.ones(n, bool))
            t0 = time.perf_counter()
            for row_d, row_i in zip(d, ids, strict=True):
                chooser.push(np.sqrt(row_d), row_i)
            chooser.flush()
            dp_ms = (time.perf_counter() - t0) / len(queries) * 1e3
            rows.append({"entries": n, "index": type(index).__name__, "build_s": build,
                         "query_ms_per_frame": query_ms, "temporal_pass_ms_per_frame": dp_ms})
        # composing: one real patch onto a real 720p frame, Poisson and feather
        from hygie_w2l.dataset import PreparedDataset
        from hygie_w2l.media import read_frames

        d = PreparedDataset(ds)
        frames = [f for i, f in enumerate(read_frames(clip, fps=25)) if i < 50]
        compose_ms = {}
        for mode in ("poisson", "feather"):
            t0 = time.perf_counter()
            for i, frame in enumerate(frames):
                j = i % len(lib)
                compose(frame, lip_points(np.asarray(d.landmarks[i])), lib.patches[j],
                        lib.points[j], mode=mode)
            compose_ms[mode] = (time.perf_counter() - t0) / len(frames) * 1e3
    result = {"machine_cpus": os.cpu_count(), "real_library": {
        "entries": len(lib), "build_s": real_build, "dims": int(base.shape[1])},
        "scale": rows, "compose_ms_per_frame_720p": compose_ms}
    (out_dir / "retrieval.json").write_text(json.dumps(result, indent=1))
    print(f"real library from talk_selfie_24s: {len(lib)} mouths, {base.shape[1]} dims, "
          f"built in {real_build:.1f} s (incl. tuning)")
    print(f"{'entries':>8s} {'index':>14s} {'build s':>8s} {'query ms':>9s} {'DP ms':>7s}")
    for r in rows:
        print(f"{r['entries']:8d} {r['index']:>14s} {r['build_s']:8.2f} "
              f"{r['query_ms_per_frame']:9.3f} {r['temporal_pass_ms_per_frame']:7.3f}")
    print("compose per 720p frame: " + ", ".join(f"{k} {v:.1f} ms" for k, v in
                                                 compose_ms.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
