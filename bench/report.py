"""Print the results in ``bench/results/*.json`` as Markdown tables (for docs/performance.md).

Usage: ``python bench/report.py [results-dir]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("overhead", "throughput", "scale", "recovery", "durability", "streaming")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(directory: Path) -> str:
    """Return one Markdown table per benchmark found in ``directory``."""
    parts = []
    for name in ORDER:
        path = directory / f"{name}.json"
        if not path.exists():
            continue
        document = json.loads(path.read_text())
        env = document["environment"]
        parts.append(
            f"### {name}\n\n{document['seconds']:.0f} s, {env['time_utc']}, commit "
            f"{env['commit']}, load average {env['loadavg'][0]:.1f}\n"
        )
        parts.append("| figure | value | floor | ratio | target | verdict | n |")
        parts.append("|---|---:|---:|---:|---|---|---:|")
        for figure in document["figures"]:
            if figure["skipped"]:
                parts.append(
                    f"| {figure['label']} | - | - | - | {figure['target']} | "
                    f"skipped: {figure['skipped']} | 0 |"
                )
                continue
            unit = figure["unit"]
            verdict = {True: "met", False: "**missed**", None: ""}[figure["met"]]
            parts.append(
                f"| {figure['label']} | {_num(figure['value'])} {unit} | "
                f"{_num(figure['floor'])} {unit} ({figure['floor_label']}) | "
                f"{figure['ratio']:.2f}x | {figure['target']} | {verdict} | {figure['samples']} |"
            )
        for note in document["notes"]:
            parts.append(f"\nNote: {note}")
        parts.append("")
    return "\n".join(parts)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results"
    print(markdown(target))
