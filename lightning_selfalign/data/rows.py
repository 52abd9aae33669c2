"""Training rows -> chat conversations, validated strictly and streamed into a memory-mapped Arrow file.

Three row shapes are accepted, each becoming the ``messages`` the chat template renders:

- ``instruction`` + ``response`` (what ``selfalign curate`` writes);
- ``messages``: a list of ``{"role": "user" | "assistant", "content": str}`` with at least one assistant turn;
- ``prompt`` + ``completion``.

Validation goes through :func:`lightning_selfalign.jsonl.read_jsonl` (file:line errors for invalid UTF-8,
malformed JSON, empty files) and adds file:line errors for a missing or mistyped field. Rows are written in
chunks, so half a million rows never sit in memory as Python objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import expand_paths, fingerprint, read_jsonl

ROLES = ("user", "assistant")
SHAPES = "'instruction'+'response', 'messages', or 'prompt'+'completion'"
_CHUNK_ROWS = 2000


def _require_strings(row: dict[str, Any], fields: Sequence[str], where: str) -> list[str]:
    absent = [field for field in fields if field not in row]
    if absent:
        raise UserError(f"{where}: missing field(s) {', '.join(map(repr, absent))} (rows need {SHAPES})")
    for field in fields:
        if not isinstance(row[field], str):
            raise UserError(f"{where}: field {field!r} must be a string, got {type(row[field]).__name__}")
    return [row[field] for field in fields]


def _checked_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} objects")
    checked = []
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise UserError(f"{where}: messages[{turn}] needs 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise UserError(f"{where}: messages[{turn}].role is {role!r}; the chat template knows only {ROLES}")
        if not isinstance(content, str):
            raise UserError(f"{where}: messages[{turn}].content must be a string, got {type(content).__name__}")
        checked.append({"role": role, "content": content})
    if not any(message["role"] == "assistant" for message in checked):
        raise UserError(f"{where}: field 'messages' has no assistant turn, so nothing would be trained on")
    return checked


def conversation_of(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    """The chat messages of one training row; ``where`` (``file:line``) names it in errors."""
    if "messages" in row:
        return _checked_messages(row["messages"], where)
    if "instruction" in row or "response" in row:
        instruction, response = _require_strings(row, ("instruction", "response"), where)
    elif "prompt" in row or "completion" in row:
        instruction, response = _require_strings(row, ("prompt", "completion"), where)
    else:
        raise UserError(f"{where}: missing field(s): rows need {SHAPES}; found {sorted(row)[:8]}")
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]


def source_key(patterns: str | Sequence[str]) -> tuple[list[Path], str]:
    """The files ``patterns`` match now, and a digest of their paths, sizes and modification times.

    The digest changes when a file is added, removed or rewritten, which is how a reload notices new data.
    """
    files = expand_paths(patterns)
    if not files:
        raise UserError("--data.train_files names no file: there is nothing to train on")
    stamps = []
    for path in files:
        stat = path.stat()
        stamps.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return files, fingerprint(stamps)


def _conversations(files: Sequence[Path]) -> Iterator[dict[str, Any]]:
    for path in files:
        # read_jsonl skips blank lines, so count lines ourselves to name the right one in errors.
        for lineno, row in _numbered(read_jsonl(path), path):
            yield {"messages": conversation_of(row, f"{path}:{lineno}"), "source": f"{path}:{lineno}"}


def _numbered(rows: Iterator[dict[str, Any]], path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Pair each row with its 1-based line number (blank lines are skipped by ``read_jsonl``)."""
    with path.open("rb") as handle:
        lines = (n for n, raw in enumerate(handle, start=1) if raw.decode("utf-8", "replace").strip())
        for row in rows:
            yield next(lines), row


def write_conversations(files: Sequence[Path], output: Path) -> int:
    """Validate every row of ``files`` and stream their conversations to an Arrow file; returns the row count."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("messages", pa.list_(message)), ("source", pa.string())])
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f"{output.name}.{os.getpid()}.partial")
    count = 0
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in _conversations(files):
            chunk.append(row)
            if len(chunk) == _CHUNK_ROWS:
                writer.write_batch(pa.RecordBatch.from_pylist(chunk, schema=schema))
                count += len(chunk)
                chunk = []
        if chunk:
            writer.write_batch(pa.RecordBatch.from_pylist(chunk, schema=schema))
            count += len(chunk)
    # Atomic rename: other ranks (or a concurrent run) either see the whole file or none.
    os.replace(partial, output)
    return count
