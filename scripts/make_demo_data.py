"""Write the bundled demo instruction set, mined deterministically from the local Python standard library.

Each row pairs an instruction written from a documented top-level function's name, signature and docstring
with a response that is a one-line lead-in plus the function's source in a fenced block. Functions are picked
by a stable hash of ``module.name`` so the same interpreter version always writes the same file. Lengths are
naturally mixed (a few lines to a few hundred), which is what padding and packing benchmarks need.

    python scripts/make_demo_data.py --output lightning_selfalign/demo/stdlib_sft.jsonl
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

LEAD_INS = (
    "Here is an implementation:",
    "This function does it:",
    "One way to write it:",
    "The following implementation works:",
)


def _first_paragraph(docstring: str) -> str:
    paragraph = textwrap.dedent(docstring).strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _candidates(root: Path, min_chars: int, max_chars: int) -> Iterator[tuple[str, dict[str, str]]]:
    """(stable key, row) for every documented top-level function of a suitable size."""
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in {"test", "tests", "idlelib", "site-packages", "lib2to3"} for part in relative.parts):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        module = ".".join(relative.with_suffix("").parts)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            docstring = ast.get_docstring(node)
            code = ast.get_source_segment(source, node)
            if not docstring or not code or not (min_chars <= len(code) <= max_chars):
                continue
            summary = _first_paragraph(docstring)
            if not 20 <= len(summary) <= 400:
                continue
            signature = f"{node.name}({ast.unparse(node.args)})"
            key = hashlib.sha1(f"{module}.{node.name}".encode()).hexdigest()
            instruction = f"Write a Python function `{signature}` that does the following: {summary}"
            lead_in = LEAD_INS[int(key[:8], 16) % len(LEAD_INS)]
            yield key, {"instruction": instruction, "response": f"{lead_in}\n\n```python\n{code}\n```"}


def make_demo_data(output: Path, rows: int = 700, max_bytes: int = 1_000_000) -> int:
    """Write up to ``rows`` pairs (and at most ``max_bytes``) to ``output``; returns the row count."""
    root = Path(sysconfig.get_paths()["stdlib"])
    picked = sorted(_candidates(root, min_chars=60, max_chars=3000), key=lambda item: item[0])
    lines: list[str] = []
    size = 0
    for _, row in picked:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        if len(lines) >= rows or size + len(line.encode()) > max_bytes:
            break
        lines.append(line)
        size += len(line.encode())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(lines), encoding="utf-8")
    print(f"{len(lines)} rows, {size / 1e6:.2f} MB -> {output} (from {len(picked)} candidates in {root})")
    return len(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("lightning_selfalign/demo/stdlib_sft.jsonl"))
    parser.add_argument("--rows", type=int, default=700, help="how many pairs to write at most")
    parser.add_argument("--max_bytes", type=int, default=1_000_000, help="size cap of the file")
    args = parser.parse_args()
    make_demo_data(args.output, rows=args.rows, max_bytes=args.max_bytes)
