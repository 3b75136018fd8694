#!/usr/bin/env python3
"""`make bench`: every benchmark of the project, one after the other. Numbers are printed and
saved under bench_out/; a benchmark never fails on a number (only on a crash)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = ["bench_decode.py", "bench_generator.py", "bench_render.py", "bench_train.py",
           "bench_retrieval.py", "bench_eval.py"]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for script in SCRIPTS:
        print(f"\n== {script}", flush=True)
        if subprocess.run([sys.executable, str(here / script)]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nbenchmarks that crashed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
