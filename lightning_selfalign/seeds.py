"""Mining seed functions from a local Python corpus (default: the running interpreter's standard library).

A seed is a function with a docstring, taken verbatim from real code nobody here wrote. By default every rule is
the reference's (``seed_gathering/`` of bigcode-project/starcoder2-self-align, byte-identical in SelfCodeAlign, so
both presets mine alike; docs/fidelity.md): top-level functions whose docstring is triple-double-quoted, at least
one argument, a ``return`` with a value, at most 150 lines, none of the words ``todo``, ``fixme``, ``bug``
(lower-cased substrings), the imports the function needs added (``autoimport``) and then no ``import X`` /
``from X`` of argparse, os, subprocess, sys, setuptools, distutils, matplotlib or seaborn in its text, no pyright
error, MinHash near-duplicates at Jaccard 0.5 removed, nothing overlapping HumanEval, and, when a model is given,
a docstring the model judges enough to re-implement the function (:mod:`lightning_selfalign.seed_judge`).

Every rule is an option, so this project's earlier, wider mining stays one flag set away (``--methods true
--banned_scope function --banned_imports`` of :data:`WIDE_BANNED_IMPORTS`): judging what a function *uses*
and adding methods yields ~2,100 standard-library seeds instead of a few hundred.

Files are parsed in a process pool; the corpus-wide steps then run over the survivors in corpus order, so the
output is deterministic.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import fingerprint, refuse_directory_output, stable_id, write_jsonl, write_stats

# The reference's lists (seed_gathering/filter_dataset.py), matched as lower-cased substrings of the function text.
REFERENCE_BANNED_WORDS = ("todo", "fixme", "bug")
REFERENCE_BANNED_IMPORTS = ("argparse", "os", "subprocess", "sys", "setuptools", "distutils", "matplotlib", "seaborn")
# This project's wider list: modules whose use makes a task the sandbox cannot check (a named departure).
WIDE_BANNED_IMPORTS = (
    "os", "sys", "subprocess", "shutil", "socket", "signal", "ctypes", "multiprocessing", "threading",
    "asyncio", "tempfile", "pathlib", "glob", "urllib", "http", "ftplib", "smtplib", "requests", "pickle",
    "shelve", "sqlite3", "webbrowser", "tkinter", "_thread", "select", "selectors", "mmap", "resource",
)  # fmt: skip
BANNED_SCOPES = ("text", "function", "module")
DEFAULT_EXCLUDE_DIRS = ("site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__")
# Filters in the order they are applied; the summary lists drops in this order.
FILTERS = (
    "unparseable_file", "no_docstring", "no_arguments", "no_return_value", "too_short", "too_long",
    "banned_word", "banned_import", "unparseable", "type_error", "exact_duplicate", "near_duplicate",
    "benchmark_overlap", "docstring_judge",
)  # fmt: skip


@dataclass(frozen=True)
class SeedFilters:
    """Every filter's setting (the defaults are the reference's); their fingerprint goes into each seed row.

    Attributes:
        min_lines: shortest seed kept, in lines (the reference has no minimum).
        max_lines: longest seed kept, in lines.
        max_chars: longest seed kept, in characters (None: no bound, as the reference).
        banned_words: lower-cased substrings that drop a seed (todo, fixme, bug).
        banned_imports: modules a seed must not import or use; ``banned_scope`` says how that is judged.
        banned_scope: "text": ``import X`` / ``from X`` appears in the lower-cased seed after its imports were
            added (the reference); "function": the function imports the module or reads a module-level name bound
            to it; "module": its file imports the module anywhere.
        methods: also mine methods of top-level classes (dedented); the reference takes top-level functions only.
        double_quoted_docstring: the docstring must be written with triple double quotes (the reference).
        exclude_dirs: directory names skipped under a source directory.
        infer_imports: prepend the imports a seed needs (autoimport, as the reference) before the import and type
            checks; the seed keeps them.
        type_check: drop seeds with a pyright error (basedpyright or pyright; skipped with a note when neither is
            installed).
        near_duplicate_threshold: MinHash Jaccard similarity at which a later seed counts as a near duplicate of
            an earlier one (the reference: 0.5); 1 turns near-duplicate removal off.
        decontaminate: drop seeds overlapping a HumanEval problem (n-gram overlap, docs/fidelity.md).
    """

    min_lines: int = 1
    max_lines: int = 150
    max_chars: int | None = None
    banned_words: tuple[str, ...] = REFERENCE_BANNED_WORDS
    banned_imports: tuple[str, ...] = REFERENCE_BANNED_IMPORTS
    banned_scope: str = "text"
    methods: bool = False
    double_quoted_docstring: bool = True
    exclude_dirs: tuple[str, ...] = DEFAULT_EXCLUDE_DIRS
    infer_imports: bool = True
    type_check: bool = True
    near_duplicate_threshold: float = 0.5
    decontaminate: bool = True

    def __post_init__(self) -> None:  # lists from a config or settings.json become the tuples the fingerprint hashes
        for name in ("banned_words", "banned_imports", "exclude_dirs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def problems(self) -> list[str]:
        """Every invalid setting, named by its flag."""
        found = []
        if self.min_lines < 1:
            found.append(f"--min_lines must be at least 1, got {self.min_lines}")
        if self.max_lines < self.min_lines:
            found.append(f"--max_lines ({self.max_lines}) must be at least --min_lines ({self.min_lines})")
        if self.max_chars is not None and self.max_chars < 1:
            found.append(f"--max_chars must be positive, got {self.max_chars}")
        if self.banned_scope not in BANNED_SCOPES:
            found.append(f"--banned_scope must be one of {', '.join(BANNED_SCOPES)}, got {self.banned_scope!r}")
        if not 0.0 < self.near_duplicate_threshold <= 1.0:
            found.append("--near_duplicate_threshold must be in (0, 1] (1 turns it off), got "
                         f"{self.near_duplicate_threshold}")  # fmt: skip
        return found


def seed_filters(preset: str = "starcoder2-instruct", **given: Any) -> SeedFilters:
    """The preset's seed filters with every option given (not None) in their place. Both presets mine alike:
    ``seed_gathering/`` is byte-identical in the two reference repositories."""
    from lightning_selfalign.presets import check_preset

    check_preset(preset)
    return SeedFilters(**{name: value for name, value in given.items() if value is not None})


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


def double_quoted_docstring(function: ast.FunctionDef, lines: list[str]) -> bool:
    """The function's docstring is written between triple double quotes (the reference's tree-sitter query);
    ``lines`` are its file's lines."""
    node = function.body[0]
    return lines[node.lineno - 1][node.col_offset :].lstrip("rRuU").startswith('"""')


def banned_text(text: str, modules: Sequence[str]) -> bool:
    """The reference's import rule: ``import X`` or ``from X`` as a substring of the lower-cased text (so it also
    matches ``import os.path``, ``import ossaudiodev`` and ``from osgeo``, as the reference does)."""
    lowered = text.lower()
    return any(f"import {module}" in lowered or f"from {module}" in lowered for module in modules)


def function_drop_reason(
    function: ast.FunctionDef, source: str, *, method: bool, banned: bool, quotes_ok: bool, filters: SeedFilters
) -> str | None:
    """The first filter one function fails, or ``None`` to keep it (``quotes_ok``: the docstring's quotes are
    acceptable)."""
    if not ast.get_docstring(function) or not quotes_ok:
        return "no_docstring"
    if not _has_arguments(function, method):
        return "no_arguments"
    if not _returns_value(function):
        return "no_return_value"
    lines = source.count("\n")
    if lines < filters.min_lines:
        return "too_short"
    if lines > filters.max_lines or (filters.max_chars is not None and len(source) > filters.max_chars):
        return "too_long"
    if any(word in source.lower() for word in filters.banned_words):
        return "banned_word"
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
        quotes_ok = not filters.double_quoted_docstring or (
            bool(ast.get_docstring(function)) and double_quoted_docstring(function, lines)
        )
        candidate = function_drop_reason(function, source, method=method, banned=False, quotes_ok=quotes_ok,
                                         filters=filters) is None  # fmt: skip
        if filters.infer_imports and candidate:
            from lightning_selfalign.seed_typing import infer_imports

            source = infer_imports(source)  # only for candidates: autoimport is the slowest step per function
        if filters.banned_scope == "text":
            banned = banned_text(source, filters.banned_imports)
        else:
            banned = module_banned or uses_banned_module(function, bindings, banned_names)
        reason = function_drop_reason(function, source, method=method, banned=banned, quotes_ok=quotes_ok,
                                      filters=filters)  # fmt: skip
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
    """Keep-mask of seeds the type checker reports no error for; all kept (with a note) when none is installed."""
    from lightning_selfalign.seed_typing import type_check, type_checker

    checker = type_checker()
    if checker is None:
        notes.append("no type checker installed (pip install 'lightning-selfalign[seeds]'): type check skipped")
        return [True] * len(seeds)
    mask, checked = type_check([seed["seed"] for seed in seeds], checker)
    notes.extend(checked)
    return mask


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


def corpus_filters(seeds: list[dict], filters: SeedFilters, dropped: Counter, notes: list[str],
                   judge: Any = None) -> list[dict]:  # fmt: skip
    """The corpus-wide filters, in order: type check, exact and near duplicates, benchmark overlap, and the
    docstring judge last (one model call per survivor) when an engine is given."""
    if filters.type_check:
        seeds = _keep(seeds, type_check_mask(seeds, notes), "type_error", dropped)
    seeds = _keep(seeds, identical_source_mask([s["seed"] for s in seeds]), "exact_duplicate", dropped)
    if filters.near_duplicate_threshold < 1.0:
        from lightning_selfalign.dedup import near_duplicate_mask

        mask = near_duplicate_mask([s["seed"] for s in seeds], threshold=filters.near_duplicate_threshold)
        seeds = _keep(seeds, mask, "near_duplicate", dropped)
    if filters.decontaminate:
        seeds = _keep(seeds, benchmark_overlap_mask([s["seed"] for s in seeds]), "benchmark_overlap", dropped)
    if judge is None:
        notes.append("docstring judge not run (no --judge_model)")
    else:
        from lightning_selfalign.seed_judge import judge_seeds

        seeds = _keep(seeds, judge_seeds(seeds, judge), "docstring_judge", dropped)
        notes.append(f"docstring judge: {judge.model} ({judge.name})")
    return seeds


def mine_seeds(
    sources: Sequence[str | Path] | None = None, filters: SeedFilters | None = None, workers: int | None = None,
    judge: Any = None,
) -> tuple[list[dict], dict]:  # fmt: skip
    """Seed rows and the mining statistics (counts kept and dropped per filter) for a corpus; ``judge``: an
    engine (:func:`lightning_selfalign.engines.load_engine`) for the docstring judge, or None to skip it."""
    from lightning_selfalign.seed_typing import can_infer_imports

    filters = filters or SeedFilters()
    notes: list[str] = []
    if filters.infer_imports and not can_infer_imports():
        notes.append("autoimport not installed (pip install 'lightning-selfalign[seeds]'): imports not added")
        filters = replace(filters, infer_imports=False)
    sources = list(sources) if sources else [sysconfig.get_paths()["stdlib"]]
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    files = python_files(sources, filters.exclude_dirs)
    dropped: Counter = Counter()
    seeds: list[dict] = []
    functions = 0
    for result in mine_files(files, filters, workers):
        seeds.extend(result.seeds)
        dropped.update(result.dropped)
        functions += result.functions
    seeds = corpus_filters(seeds, filters, dropped, notes, judge)
    judged = {"judge": judge.model} if judge is not None else {}
    settings = fingerprint({"filters": asdict(filters), "version": 2, **judged})
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


def mine_seeds_command(
    *,
    source: str | list[str] | None = None,
    output: str = "seeds.jsonl",
    preset: Literal["starcoder2-instruct", "selfcodealign"] = "starcoder2-instruct",
    min_lines: int | None = None,
    max_lines: int | None = None,
    max_chars: int | None = None,
    banned_words: list[str] | None = None,
    banned_imports: list[str] | None = None,
    banned_scope: Literal["text", "function", "module"] | None = None,
    methods: bool | None = None,
    double_quoted_docstring: bool | None = None,
    exclude_dirs: list[str] | None = None,
    infer_imports: bool | None = None,
    type_check: bool | None = None,
    near_duplicate_threshold: float | None = None,
    decontaminate: bool | None = None,
    judge_model: str | None = None,
    judge_engine: Literal["hf", "vllm", "openai"] = "hf",
    judge_base_url: str | None = None,
    max_seeds: int | None = None,
    workers: int | None = None,
) -> dict:
    """Mine seed functions (Python functions with docstrings) from a local corpus.

    Writes one row per seed (id, parent_id, round, seed, source "path:line", lang, fingerprint) and the
    counts kept and dropped per filter beside it (``OUT.stats.json``). Every filter left unset takes the
    preset's value: the reference's seed rules (docs/fidelity.md), the same for both presets.

    Args:
        source: a directory or .py file, or a list of them (``--source '[DIR1,FILE2]'`` or repeated
            ``--source+ X``); default: the running interpreter's standard library.
        output: the seeds JSONL file to write (replaced).
        preset: starcoder2-instruct or selfcodealign (their seed rules are the same).
        min_lines: shortest seed kept, in lines (reference: no minimum).
        max_lines: longest seed kept, in lines (reference: 150).
        max_chars: longest seed kept, in characters (reference: no bound).
        banned_words: lower-cased substrings that drop a seed (reference: todo, fixme, bug).
        banned_imports: modules a seed must not import (reference: argparse, os, subprocess, sys, setuptools,
            distutils, matplotlib, seaborn; a wider list: lightning_selfalign.seeds.WIDE_BANNED_IMPORTS).
        banned_scope: how a banned module is found: "text" (reference): ``import X``/``from X`` in the
            lower-cased seed after its imports were added; "function": the function imports or uses it;
            "module": its file imports it anywhere.
        methods: also mine methods of top-level classes (reference: top-level functions only).
        double_quoted_docstring: require a triple-double-quoted docstring (reference: yes).
        exclude_dirs: directory names skipped under a source directory (default: site-packages, test,
            tests, idlelib, __pycache__).
        infer_imports: add the imports each seed needs (autoimport) before the checks (reference: yes).
        type_check: drop seeds with a pyright error (basedpyright or pyright; reference: yes).
        near_duplicate_threshold: MinHash Jaccard similarity at which a later seed counts as a near
            duplicate of an earlier one (reference: 0.5); 1 turns near-duplicate removal off.
        decontaminate: drop seeds overlapping a HumanEval problem.
        judge_model: a base model (folder or Hub name) that judges whether each docstring alone is enough
            to re-implement its function (the reference: the base model itself); left out, no judge runs.
        judge_engine: the judge's engine: hf, vllm, or openai (a served model named judge_model).
        judge_base_url: server URL for --judge_engine openai, e.g. http://127.0.0.1:8000/v1.
        max_seeds: keep only the first N seeds (in corpus order), e.g. for a quick trial run.
        workers: processes parsing files (default: the CPU count, at most 8).
    """
    filters = seed_filters(
        preset, min_lines=min_lines, max_lines=max_lines, max_chars=max_chars, banned_words=banned_words,
        banned_imports=banned_imports, banned_scope=banned_scope, methods=methods,
        double_quoted_docstring=double_quoted_docstring, exclude_dirs=exclude_dirs, infer_imports=infer_imports,
        type_check=type_check, near_duplicate_threshold=near_duplicate_threshold, decontaminate=decontaminate,
    )  # fmt: skip
    problems = filters.problems()
    if workers is not None and workers < 1:
        problems.append(f"--workers must be at least 1, got {workers}")
    if max_seeds is not None and max_seeds < 1:
        problems.append(f"--max_seeds must be at least 1 (leave it out to keep every seed), got {max_seeds}")
    if judge_engine == "openai" and judge_model and not judge_base_url:
        problems.append("--judge_engine openai needs --judge_base_url")
    if problems:
        raise UserError("; ".join(problems))
    refuse_directory_output(output)
    judge = None
    if judge_model:
        from lightning_selfalign.engines import EngineOptions, load_engine

        judge = load_engine(judge_engine, judge_model, EngineOptions(base_url=judge_base_url))
    sources = [source] if isinstance(source, str) else source
    try:
        rows, stats = mine_seeds(sources, filters, workers, judge)
    finally:
        if judge is not None:
            judge.close()
    if max_seeds is not None:
        stats["truncated_to"] = max_seeds
        rows = rows[:max_seeds]
    stats["output"] = str(output)
    stats["preset"] = preset
    write_jsonl(output, rows)
    write_stats(output, stats)
    print(format_summary(stats) + f"\n  wrote {len(rows)} rows to {output}", file=sys.stderr)
    return stats
