"""Mining seed functions from a local Python corpus (default: the running interpreter's standard library).

A seed is a function with a docstring, taken verbatim from real code nobody here wrote: top-level
functions and (by default) methods of top-level classes, dedented. The filters follow the reference
pipeline: a docstring, at least one argument (``self``/``cls`` do not count), a ``return`` with a value,
length bounds, no TODO/FIXME marker, no use of a configurable list of modules (os, sys, subprocess, ...:
seeds that touch the machine make tasks the sandbox cannot check), the text parses; optionally a pyright
check. Then exact and near duplicates (MinHash) and anything overlapping HumanEval are removed.

Why the defaults differ from the reference: with its rule "the *module* imports a banned module" and
top-level functions only, the standard library yields ~185 seeds (nearly every stdlib module imports
os or sys); judging what the *function* uses, and adding methods, yields ~2,100. Both choices are flags.

Files are parsed in a process pool; dedup and decontamination then run over the survivors in corpus
order, so the output is deterministic.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import fingerprint, refuse_directory_output, stable_id, write_jsonl, write_stats

DEFAULT_BANNED_IMPORTS = (
    "os", "sys", "subprocess", "shutil", "socket", "signal", "ctypes", "multiprocessing", "threading",
    "asyncio", "tempfile", "pathlib", "glob", "urllib", "http", "ftplib", "smtplib", "requests", "pickle",
    "shelve", "sqlite3", "webbrowser", "tkinter", "_thread", "select", "selectors", "mmap", "resource",
)  # fmt: skip
DEFAULT_EXCLUDE_DIRS = ("site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__")
_TODO = re.compile(r"\b(?:TODO|FIXME)\b")
# Filters in the order they are applied; the summary lists drops in this order.
FILTERS = (
    "unparseable_file", "no_docstring", "no_arguments", "no_return_value", "too_short", "too_long",
    "todo_marker", "banned_import", "unparseable", "type_error", "exact_duplicate", "near_duplicate",
    "benchmark_overlap",
)  # fmt: skip


@dataclass(frozen=True)
class SeedFilters:
    """Settings of every filter; their fingerprint goes into each seed row."""

    min_lines: int = 5
    max_lines: int = 150
    max_chars: int = 6000
    banned_imports: tuple[str, ...] = DEFAULT_BANNED_IMPORTS
    methods: bool = True
    banned_scope: str = "function"  # "function": the seed uses a banned module; "module": its file imports one
    exclude_dirs: tuple[str, ...] = DEFAULT_EXCLUDE_DIRS
    near_duplicate_threshold: float = 0.7
    decontaminate: bool = True
    type_check: bool = True


@dataclass
class FileSeeds:
    """What one file yielded: candidate seeds and the count of functions each filter dropped."""

    seeds: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    functions: int = 0


def python_files(sources: Sequence[str | Path], exclude_dirs: Sequence[str]) -> list[tuple[Path, Path]]:
    """``(file, corpus root)`` for every ``.py`` file under the sources, sorted; a bad source is an error."""
    missing = [str(source) for source in sources if not Path(source).exists()]
    if missing:
        raise UserError(f"--source: no such file or directory: {', '.join(missing)}")
    excluded = set(exclude_dirs)
    files: list[tuple[Path, Path]] = []
    for source in map(Path, sources):
        if source.is_file():
            files.append((source, source.parent))
            continue
        for path in sorted(source.rglob("*.py")):
            if not excluded.intersection(path.relative_to(source).parts[:-1]) and path.is_file():
                files.append((path, source))
    if not files:
        raise UserError(f"--source: no .py files under {', '.join(map(str, sources))} (after --exclude_dirs)")
    return files


def _import_bindings(tree: ast.AST) -> dict[str, str]:
    """Name bound -> top-level module, for every import in ``tree`` (``import os.path as p`` -> p: os)."""
    bindings: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bindings[alias.asname or alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                bindings[alias.asname or alias.name] = node.module.split(".")[0]
    return bindings


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every module the tree imports (``os.path`` -> ``os``), wherever the import is."""
    return set(_import_bindings(tree).values())


def uses_banned_module(function: ast.FunctionDef, module_bindings: dict[str, str], banned: set[str]) -> bool:
    """The function imports a banned module itself, or reads a module-level name bound to one."""
    if imported_modules(function) & banned:
        return True
    names = {node.id for node in ast.walk(function) if isinstance(node, ast.Name)}
    return any(module_bindings.get(name) in banned for name in names)


def _returns_value(function: ast.FunctionDef) -> bool:
    """A ``return <value>`` in the function itself (nested functions and lambdas do not count)."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return) and node.value is not None:
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _has_arguments(function: ast.FunctionDef, method: bool) -> bool:
    """At least one argument, not counting a method's ``self``/``cls``."""
    args = function.args
    positional = len(args.posonlyargs) + len(args.args)
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)
    if method and not static:
        positional -= 1
    return bool(positional > 0 or args.kwonlyargs or args.vararg or args.kwarg)


def candidate_functions(tree: ast.Module, methods: bool) -> Iterator[tuple[str, ast.FunctionDef, bool]]:
    """``(qualified name, node, is_method)`` for top-level functions and, if asked, top-level classes' methods."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node, False
        elif methods and isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef):
                    yield f"{node.name}.{member.name}", member, True


def _function_source(lines: list[str], function: ast.FunctionDef) -> str:
    """The function's text with its decorators, as written (a method's dedented to column 0)."""
    start = min([function.lineno] + [decorator.lineno for decorator in function.decorator_list])
    return textwrap.dedent("".join(lines[start - 1 : function.end_lineno])).rstrip() + "\n"


def function_drop_reason(
    function: ast.FunctionDef, source: str, *, method: bool, banned: bool, filters: SeedFilters
) -> str | None:
    """The first filter one function fails, or ``None`` to keep it."""
    if not ast.get_docstring(function):
        return "no_docstring"
    if not _has_arguments(function, method):
        return "no_arguments"
    if not _returns_value(function):
        return "no_return_value"
    lines = source.count("\n")
    if lines < filters.min_lines:
        return "too_short"
    if lines > filters.max_lines or len(source) > filters.max_chars:
        return "too_long"
    if _TODO.search(source):
        return "todo_marker"
    if banned:
        return "banned_import"
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return "unparseable"
    return None


def seeds_of_file(path: Path, root: Path, filters: SeedFilters) -> FileSeeds:
    """Candidate seeds of one file (runs in a worker process)."""
    result = FileSeeds()
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        result.dropped["unparseable_file"] += 1
        return result
    bindings = _import_bindings(tree)
    banned_names = set(filters.banned_imports)
    module_banned = filters.banned_scope == "module" and bool(banned_names.intersection(bindings.values()))
    lines = text.splitlines(keepends=True)
    relative = path.relative_to(root).as_posix()
    for name, function, method in candidate_functions(tree, filters.methods):
        result.functions += 1
        source = _function_source(lines, function)
        banned = module_banned or uses_banned_module(function, bindings, banned_names)
        reason = function_drop_reason(function, source, method=method, banned=banned, filters=filters)
        if reason:
            result.dropped[reason] += 1
            continue
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
        result.seeds.append(
            {"id": stable_id(relative, name, digest), "seed": source, "source": f"{path}:{function.lineno}"}
        )
    return result


def _mine_file(job: tuple[Path, Path, SeedFilters]) -> FileSeeds:
    return seeds_of_file(*job)


def mine_files(files: list[tuple[Path, Path]], filters: SeedFilters, workers: int) -> Iterator[FileSeeds]:
    """Per-file results in file order, from a process pool (in-process when ``workers <= 1``)."""
    jobs = [(path, root, filters) for path, root in files]
    progress = tqdm(total=len(jobs), desc="seeds: files", unit="file", file=sys.stderr, dynamic_ncols=True)
    with progress:
        if workers <= 1:
            for job in jobs:
                yield _mine_file(job)
                progress.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_mine_file, jobs, chunksize=16):
                yield result
                progress.update()


def _keep(seeds: list[dict], mask: Sequence[bool], reason: str, dropped: Counter) -> list[dict]:
    dropped[reason] += sum(1 for keep in mask if not keep)
    return [seed for seed, keep in zip(seeds, mask) if keep]


def type_check_mask(seeds: list[dict], notes: list[str]) -> list[bool]:
    """Keep-mask of seeds pyright reports no error for; all kept (with a note) when pyright is absent."""
    pyright = shutil.which("pyright")
    if pyright is None:
        notes.append("pyright not installed: static type check skipped")
        return [True] * len(seeds)
    with tempfile.TemporaryDirectory(prefix="selfalign-pyright-") as tmp:
        for index, seed in enumerate(seeds):
            Path(tmp, f"seed_{index}.py").write_text(seed["seed"], encoding="utf-8")
        run = subprocess.run([pyright, "--outputjson", tmp], capture_output=True, text=True, check=False)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        notes.append(f"pyright failed (exit {run.returncode}): static type check skipped")
        return [True] * len(seeds)
    failing = {
        Path(diag["file"]).name for diag in report.get("generalDiagnostics", []) if diag.get("severity") == "error"
    }
    notes.append(f"pyright checked {len(seeds)} seeds")
    return [f"seed_{index}.py" not in failing for index in range(len(seeds))]


def identical_source_mask(texts: Sequence[str]) -> list[bool]:
    """Keep-mask dropping repeats of an earlier source (compared after stripping trailing whitespace).

    Stricter than :func:`lightning_selfalign.dedup.exact_duplicate_mask` (which compares lower-cased word
    tokens): seeds keep their exact text, and reworded copies are left to the MinHash step that follows."""
    seen: set[str] = set()
    mask = []
    for text in texts:
        key = "\n".join(line.rstrip() for line in text.strip().splitlines())
        mask.append(key not in seen)
        seen.add(key)
    return mask


def benchmark_overlap_mask(texts: Sequence[str]) -> list[bool]:
    """Keep-mask dropping seeds that overlap a HumanEval problem."""
    from lightning_selfalign.decontamination import Decontaminator

    decontaminator = Decontaminator(benchmarks=("humaneval",))
    return [decontaminator.match(text) is None for text in texts]


def remove_duplicates(seeds: list[dict], filters: SeedFilters, dropped: Counter, notes: list[str]) -> list[dict]:
    """The corpus-wide filters, in order: type check, exact and near duplicates, benchmark overlap."""
    if filters.type_check:
        seeds = _keep(seeds, type_check_mask(seeds, notes), "type_error", dropped)
    seeds = _keep(seeds, identical_source_mask([s["seed"] for s in seeds]), "exact_duplicate", dropped)
    if filters.near_duplicate_threshold < 1.0:
        from lightning_selfalign.dedup import near_duplicate_mask

        mask = near_duplicate_mask([s["seed"] for s in seeds], threshold=filters.near_duplicate_threshold)
        seeds = _keep(seeds, mask, "near_duplicate", dropped)
    if filters.decontaminate:
        seeds = _keep(seeds, benchmark_overlap_mask([s["seed"] for s in seeds]), "benchmark_overlap", dropped)
    return seeds


def mine_seeds(
    sources: Sequence[str | Path] | None = None, filters: SeedFilters | None = None, workers: int | None = None
) -> tuple[list[dict], dict]:
    """Seed rows and the mining statistics (counts kept and dropped per filter) for a corpus."""
    filters = filters or SeedFilters()
    sources = list(sources) if sources else [sysconfig.get_paths()["stdlib"]]
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    files = python_files(sources, filters.exclude_dirs)
    dropped: Counter = Counter()
    notes: list[str] = []
    seeds: list[dict] = []
    functions = 0
    for result in mine_files(files, filters, workers):
        seeds.extend(result.seeds)
        dropped.update(result.dropped)
        functions += result.functions
    seeds = remove_duplicates(seeds, filters, dropped, notes)
    settings = fingerprint({"filters": asdict(filters), "version": 1})
    rows = [
        {"id": s["id"], "parent_id": None, "round": 0, "seed": s["seed"], "source": s["source"], "lang": "python",
         "fingerprint": settings}
        for s in seeds
    ]  # fmt: skip
    stats = {
        "sources": [str(source) for source in sources],
        "files": len(files),
        "functions": functions,
        "kept": len(rows),
        "dropped": {reason: dropped[reason] for reason in FILTERS if dropped[reason]},
        "notes": notes,
        "filters": asdict(filters),
        "fingerprint": settings,
    }
    return rows, stats


def format_summary(stats: dict) -> str:
    """The end-of-run summary: files and functions in, seeds out, drops per filter."""
    lines = [f"seeds: {stats['files']} files, {stats['functions']} functions -> {stats['kept']} seeds"]
    lines += [f"  dropped {reason:<18} {count}" for reason, count in stats["dropped"].items()]
    lines += [f"  note: {note}" for note in stats["notes"]]
    return "\n".join(lines)


def _check_options(min_lines: int, max_lines: int, max_chars: int, threshold: float, workers: int | None) -> None:
    problems = []
    if min_lines < 1:
        problems.append(f"--min_lines must be at least 1, got {min_lines}")
    if max_lines < min_lines:
        problems.append(f"--max_lines ({max_lines}) must be at least --min_lines ({min_lines})")
    if max_chars < 1:
        problems.append(f"--max_chars must be positive, got {max_chars}")
    if not 0.0 < threshold <= 1.0:
        problems.append(f"--near_duplicate_threshold must be in (0, 1] (1 turns it off), got {threshold}")
    if workers is not None and workers < 1:
        problems.append(f"--workers must be at least 1, got {workers}")
    if problems:
        raise UserError("; ".join(problems))


def mine_seeds_command(
    *,
    source: str | list[str] | None = None,
    output: str = "seeds.jsonl",
    min_lines: int = 5,
    max_lines: int = 150,
    max_chars: int = 6000,
    banned_imports: list[str] | None = None,
    banned_scope: Literal["function", "module"] = "function",
    methods: bool = True,
    exclude_dirs: list[str] | None = None,
    near_duplicate_threshold: float = 0.7,
    decontaminate: bool = True,
    type_check: bool = True,
    max_seeds: int | None = None,
    workers: int | None = None,
) -> dict:
    """Mine seed functions (Python functions with docstrings) from a local corpus.

    Writes one row per seed (id, parent_id, round, seed, source "path:line", lang, fingerprint) and the
    counts kept and dropped per filter beside it (``OUT.stats.json``).

    Args:
        source: a directory or .py file, or a list of them (``--source '[DIR1,FILE2]'`` or repeated
            ``--source+ X``); default: the running interpreter's standard library.
        output: the seeds JSONL file to write (replaced).
        min_lines: shortest seed kept, in lines (decorators and docstring included).
        max_lines: longest seed kept, in lines.
        max_chars: longest seed kept, in characters.
        banned_imports: modules a seed must not use (default: os, sys, subprocess, shutil, socket, ...
            see lightning_selfalign.seeds.DEFAULT_BANNED_IMPORTS); ``banned_scope`` says how it is judged.
        banned_scope: "function" drops a function that uses a banned module (imports it or reads a name
            bound to it); "module" drops every function of a file that imports one anywhere (the
            reference's rule; keeps ~4x fewer seeds from the standard library).
        methods: also mine methods of top-level classes (dedented; ``self``/``cls`` is not an argument).
        exclude_dirs: directory names skipped under a source directory (default: site-packages, test,
            tests, idlelib, __pycache__).
        near_duplicate_threshold: MinHash Jaccard similarity at which a later seed counts as a near
            duplicate of an earlier one; 1 turns near-duplicate removal off.
        decontaminate: drop seeds overlapping a HumanEval problem.
        type_check: run pyright over the seeds when it is installed (skipped with a note otherwise).
        max_seeds: keep only the first N seeds (in corpus order), e.g. for a quick trial run.
        workers: processes parsing files (default: the CPU count, at most 8).
    """
    _check_options(min_lines, max_lines, max_chars, near_duplicate_threshold, workers)
    if max_seeds is not None and max_seeds < 1:
        raise UserError(f"--max_seeds must be at least 1 (leave it out to keep every seed), got {max_seeds}")
    refuse_directory_output(output)
    filters = SeedFilters(
        min_lines=min_lines,
        max_lines=max_lines,
        max_chars=max_chars,
        banned_imports=tuple(DEFAULT_BANNED_IMPORTS if banned_imports is None else banned_imports),
        banned_scope=banned_scope,
        methods=methods,
        exclude_dirs=tuple(DEFAULT_EXCLUDE_DIRS if exclude_dirs is None else exclude_dirs),
        near_duplicate_threshold=near_duplicate_threshold,
        decontaminate=decontaminate,
        type_check=type_check,
    )
    sources = [source] if isinstance(source, str) else source
    rows, stats = mine_seeds(sources, filters, workers)
    if max_seeds is not None:
        stats["truncated_to"] = max_seeds
        rows = rows[:max_seeds]
    stats["output"] = str(output)
    write_jsonl(output, rows)
    write_stats(output, stats)
    print(format_summary(stats) + f"\n  wrote {len(rows)} rows to {output}", file=sys.stderr)
    return stats
