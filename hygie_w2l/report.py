"""The eval report: metrics.json, report.md (the table, notes), opening.png, metrics.png
and worst_frames.png, written atomically into the report folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hygie_w2l.atomic import atomic_path


def write_report(out: Path, metrics: dict[str, Any], openings: dict[str, list[float]],
                 worst: list[tuple[float, np.ndarray]]) -> None:
    _plots(openings, metrics, worst, out)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, default=_json_default))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_report_md(metrics))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


COLUMNS = [("lmd", "LMD ↓", "{:.4f}"), ("opening_r", "opening r ↑", "{:.3f}"),
           ("offset_frames", "offset", "{:d}"), ("psnr_db", "PSNR dB ↑", "{:.2f}"),
           ("ssim", "SSIM ↑", "{:.3f}"), ("sharpness_rel", "sharpness / real", "{:.3f}"),
           ("flicker_rel", "flicker / real", "{:.3f}")]


def _fmt(fmt: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "inf" if v == float("inf") else "n/a"
    return fmt.format(v)


def markdown_table(m: dict[str, Any]) -> str:
    sync = m.get("sync_metric")
    head = [c[1] for c in COLUMNS] + (["sync dist ↓", "sync conf ↑"] if sync else [])
    lines = ["| variant | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, row in m["variants"].items():
        cells = [_fmt(f, row[k]) for k, _, f in COLUMNS]
        if sync:
            s = row["sync"] or {}
            cells += [_fmt("{:.3f}", s.get("distance")), _fmt("{:.3f}", s.get("confidence"))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report_md(m: dict[str, Any]) -> str:
    parts = [f"# Evaluation of {m['checkpoint_arch']} on {m['dataset']}",
             f"Held-out frames {m['frames'][0]}..{m['frames'][1] - 1} ({m['n_frames']} frames), "
             f"reference frame {m['reference_frame']}, blending {m['blend']}.", "",
             markdown_table(m), "",
             "Floor: `template` (the reference mouth pasted, no lip-sync). Ceiling: `real`. "
             "LMD: lip-landmark distance / mouth width. opening r: correlation of the mouth "
             "opening with the real one; offset: the lag that maximises it (0 = in sync). "
             "Sharpness and flicker are relative to the real video (1.0 = as the real one).",
             ""]
    if m.get("sync_metric"):
        parts.append(f"Sync columns: {m['sync_metric']}.")
    for note in m.get("notes", []):
        parts.append(f"- note: {note}")
    if m.get("hd"):
        h = m["hd"]
        parts.append(f"- HD retrieval: library of {h['library_size']} mouths, "
                     f"{h['distinct_entries']} distinct used, median distance "
                     f"{h['median_distance']:.3f} (typical {h['typical_distance']:.3f}).")
    parts += ["", "![mouth opening](opening.png)", "", "![metrics](metrics.png)", "",
              "Worst frames by LMD (real | generated | generated+HD):", "",
              "![worst frames](worst_frames.png)", "",
              "Side by side video: `side_by_side.mp4` (real | generated | generated+HD)."]
    return "\n".join(parts) + "\n"


def _plots(openings: dict[str, list[float]], metrics: dict[str, Any],
           worst: list[tuple[float, np.ndarray]], out: Path) -> None:
    names = list(openings)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.2))
    for n in names:
        ax.plot(openings[n], label=n, lw=2.2 if n == "real" else 1.2)
    ax.set_xlabel("held-out frame")
    ax.set_ylabel("mouth opening (height / width)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    _save_fig(fig, out / "opening.png")
    keys = [("lmd", "LMD (lower is better)"), ("opening_r", "opening r"),
            ("sharpness_rel", "sharpness / real"), ("flicker_rel", "flicker / real")]
    fig, axes = plt.subplots(1, len(keys), figsize=(12, 3))
    for ax, (k, title) in zip(axes, keys, strict=True):
        vals = [metrics["variants"][n][k] for n in names]
        ax.bar(range(len(names)), [v if v is not None and np.isfinite(v) else 0 for v in vals],
               color=["#999", "#3a7", "#37a", "#333"][:len(names)])
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save_fig(fig, out / "metrics.png")
    plt.close("all")
    if worst:
        grid = np.vstack([t for _, t in worst])
        with atomic_path(out / "worst_frames.png") as tmp:
            cv2.imwrite(str(tmp), grid)


def _save_fig(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
