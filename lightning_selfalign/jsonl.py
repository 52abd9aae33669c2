"""JSONL in and out: strict reading with file:line errors, append-and-flush writing, resume, fingerprints.

Every stage writes its output through :class:`JsonlAppender`, which appends one row per line and flushes
it at once, so a killed stage loses at most the row it was writing. On reopening, a torn last line (the
process died mid-write) is cut off; :func:`finished_ids` then tells the stage what to skip.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lightning_selfalign.errors import UserError


def expand_paths(patterns: str | Path | Sequence[str | Path]) -> list[Path]:
    """Paths and glob patterns -> sorted, existing files; a pattern that matches nothing is an error."""
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    files: list[Path] = []
    missing: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            missing.append(pattern)
        files.extend(Path(m) for m in matches)
    if missing:
        raise UserError(f"no such file(s): {', '.join(missing)}")
    return files


def refuse_directory_output(output: str | Path, flag: str = "--output") -> None:
    """An output file named by a folder would fail deep inside a writer: say so first."""
    if Path(output).is_dir():
        raise UserError(f"{flag} {output} is a folder; name the file to write, e.g. {Path(output) / 'out.jsonl'}")


def refuse_output_among_inputs(inputs: str | Path | Sequence[str | Path], output: str | Path) -> None:
    """A stage that appends to (or rewrites) one of its own inputs would skip or lose everything: refuse (and an
    output that is a folder)."""
    refuse_directory_output(output)
    if Path(output).resolve() in {path.resolve() for path in expand_paths(inputs)}:
        raise UserError(f"--output {output} is also an --input file; write to a new file")


def read_jsonl(
    path: str | Path,
    required: Sequence[str] = (),
    allow_empty: bool = False,
    types: dict[str, type | tuple[type, ...]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the rows of one JSONL file, streaming.

    Blank lines are skipped. Raises :class:`UserError` naming ``file:line`` for invalid UTF-8, invalid
    JSON, a line that is not an object, a row missing one of ``required`` or with a field of the wrong type
    (``types``); and for an empty file unless ``allow_empty``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    rows = 0
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{lineno}: invalid UTF-8 at byte {exc.start} of the line") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            absent = [field for field in required if field not in row]
            if absent:
                raise UserError(f"{path}:{lineno}: missing field(s) {', '.join(map(repr, absent))}")
            for field, expected in (types or {}).items():
                if field in row and not isinstance(row[field], expected):
                    wanted = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
                    got = type(row[field]).__name__
                    raise UserError(f"{path}:{lineno}: field {field!r} must be {wanted}, got {got}")
            rows += 1
            yield row
    if rows == 0 and not allow_empty:
        raise UserError(f"{path}: file is empty (no JSON rows)")


def read_jsonl_files(
    patterns: str | Path | Sequence[str | Path], required: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """Rows of every file matched by ``patterns``, in sorted path order."""
    for path in expand_paths(patterns):
        yield from read_jsonl(path, required=required)


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline: the writer was killed while writing it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        size = handle.seek(0, os.SEEK_END)
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            chunk = handle.read(pos - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return
            pos = start
        handle.truncate(0)


def finished_ids(path: str | Path, key: str = "id", check: Callable[[dict[str, Any]], None] | None = None) -> set[str]:
    """Ids already written to an output file (tolerates a torn last line); empty if the file is absent. ``check``
    sees each row in the same pass (to refuse rows written under other settings)."""
    path = Path(path)
    if not path.exists():
        return set()
    _cut_torn_tail(path)
    ids = set()
    for row in read_jsonl(path, required=[key], allow_empty=True):
        if check is not None:
            check(row)
        ids.add(str(row[key]))
    return ids


def write_row(handle: Any, row: dict[str, Any]) -> None:
    """One JSON line to a UTF-8 text ``handle``. Text that UTF-8 cannot hold (a lone surrogate, valid in JSON and in
    Python strings) fails to encode before anything is written; the row is then written \\u-escaped, which reads
    back to the same string: no row is lost to its content, and the usual row is encoded once."""
    try:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    except UnicodeEncodeError:
        handle.write(json.dumps(row) + "\n")


class JsonlAppender:
    """Append rows to a JSONL file, one flushed line each. Use as a context manager.

    The file is opened at the first row, so a run that fails before producing any leaves no empty output behind;
    one that succeeds with no rows still leaves the (empty) file. ``fsync=True`` also forces each line to disk
    (survives a machine crash, not only a killed process).
    """

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        if self.path.exists():
            _cut_torn_tail(self.path)
        self._handle: Any = None
        self.written = 0

    def _open(self) -> Any:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        return self._handle

    def write(self, row: dict[str, Any]) -> None:
        self._open()
        write_row(self._handle, row)
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())
        self.written += 1

    def write_all(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def close(self, create: bool = True) -> None:
        """Close the file; ``create``: leave an empty file if no row was written."""
        if self._handle is None and create:
            self._open()
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(create=exc_type is None)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` to a fresh file (replacing it atomically); returns the row count. If producing the rows
    fails, the temporary file goes and any previous file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for row in rows:
                write_row(handle, row)
                count += 1
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return count


def stats_path(output: str | Path) -> Path:
    """Where a stage's counts go: ``out.jsonl`` -> ``out.stats.json``."""
    output = Path(output)
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".stats.json")


def write_stats(output: str | Path, stats: dict[str, Any]) -> Path:
    """Write a stage's counts (rows in, out, dropped by reason, ...) beside its output."""
    path = stats_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def fingerprint(obj: Any) -> str:
    """Stable 16-hex digest of any JSON-serialisable settings (prompt template, sampling, limits...); text UTF-8
    cannot hold (a lone surrogate) is hashed as its surrogate code unit, as JSON keeps it, not refused."""
    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def stable_id(*parts: Any) -> str:
    """Deterministic row id from its defining parts (e.g. parent id + sample index)."""
    return fingerprint(list(parts))
