"""Print the share of lines that are docstrings, per package and for the least documented files.

Usage: ``python .ci/docstring_share.py [FOLDER ...]`` (default: the three packages). Counts
the lines of module, class and function docstrings against all lines of the ``.py`` files.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def docstring_lines(source: str) -> int:
    """Lines taken by the docstrings of the module and of every class and function in it."""
    lines = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
                and first.end_lineno is not None
            ):
                lines += first.end_lineno - first.lineno + 1
    return lines


def main(folders: list[str]) -> None:
    for folder in folders:
        rows = []
        for path in sorted(Path(folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            rows.append((docstring_lines(source), len(source.splitlines()), path))
        doc, total = sum(r[0] for r in rows), sum(r[1] for r in rows)
        print(f"{folder}: {doc}/{total} lines are docstrings = {doc / max(total, 1):.1%}")
        for d, n, path in sorted(rows, key=lambda r: r[0] / max(r[1], 1))[:5]:
            print(f"    {d / max(n, 1):6.1%}  {d:5}/{n:5}  {path}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["genagent_thespian", "backends", "patterns"])
