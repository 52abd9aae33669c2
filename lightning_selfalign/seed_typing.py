"""Imports added to seed functions, then a static type check: the reference's ``high_quality_subset.py`` step.

A seed is a function cut out of its file, so the names its module imported are undefined in it. The reference
first adds the imports a function needs (the ``autoimport`` package, 10 s per function, the original text kept
when it fails), then runs pyright over the functions and drops every one with an error (warnings do not count).
A function that calls a helper of its own module stays undefined after both steps and is dropped: seeds must
stand alone.

Both tools install from the package index with everything they need (``pip install 'lightning-selfalign[seeds]'``:
``autoimport`` and ``basedpyright``, a pyright build that ships its own Node.js), so nothing is downloaded at run
time. Either may be missing; the step is then skipped and the run's statistics say so. This is the only module
that imports ``autoimport``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

INFER_IMPORTS_SECONDS = 10  # the reference's SIGALRM per function
TYPE_CHECK_BATCH = 250  # functions per checker run, as the reference
TYPE_CHECK_SECONDS = 300  # per batch (the reference: 120 s; a cold start on 2 cores can take longer)
# pyright's own default rules ("standard"); basedpyright would otherwise apply its stricter "recommended" set.
CHECKER_CONFIG = {"typeCheckingMode": "standard", "reportMissingModuleSource": "none"}
CHECKERS = ("basedpyright", "pyright")


def can_infer_imports() -> bool:
    return importlib.util.find_spec("autoimport") is not None


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout


def infer_imports(source: str) -> str:
    """``source`` with the imports its free names need prepended (autoimport); unchanged where that fails or takes
    longer than ``INFER_IMPORTS_SECONDS`` (an alarm: call it from a process's main thread, as the miners do)."""
    import autoimport

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(INFER_IMPORTS_SECONDS)
    try:
        fixed = autoimport.fix_code(source)
    except Exception:  # _Timeout, or anything autoimport raises on odd code: keep the function as written
        return source
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return fixed if fixed.strip() else source


def type_checker() -> str | None:
    """The checker's executable: basedpyright or pyright on PATH or beside this interpreter, else None."""
    for name in CHECKERS:
        found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if found:
            return found
    return None


def type_check(sources: Sequence[str], checker: str) -> tuple[list[bool], list[str]]:
    """Keep-mask (True: no error) over ``sources``, each checked as its own module, and notes on what ran.

    A batch whose checker run fails keeps its functions and says so in the notes (the reference dropped all 250).
    """
    keep, notes, failed = [True] * len(sources), [], 0
    for start in range(0, len(sources), TYPE_CHECK_BATCH):
        batch = sources[start : start + TYPE_CHECK_BATCH]
        errors = _batch_errors(batch, checker)
        if errors is None:
            failed += len(batch)
            continue
        for offset in errors:
            keep[start + offset] = False
    checked = len(sources) - failed
    notes.append(f"type check ({Path(checker).name}): {checked} seeds checked")
    if failed:
        notes.append(f"type check failed on {failed} seeds (kept unchecked)")
    return keep, notes


def _batch_errors(batch: Sequence[str], checker: str) -> set[int] | None:
    """Indices in ``batch`` with at least one error, or None when the checker did not report."""
    with tempfile.TemporaryDirectory(prefix="selfalign-typecheck-") as tmp:
        for index, source in enumerate(batch):
            Path(tmp, f"seed_{index}.py").write_text(source, encoding="utf-8")
        Path(tmp, "pyrightconfig.json").write_text(json.dumps(CHECKER_CONFIG), encoding="utf-8")
        try:
            run = subprocess.run([checker, "--outputjson"], cwd=tmp, capture_output=True, text=True,
                                 timeout=TYPE_CHECK_SECONDS, check=False)  # fmt: skip
            report = json.loads(run.stdout)
        except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError):
            return None
    return {
        int(Path(diagnostic["file"]).stem.removeprefix("seed_"))
        for diagnostic in report.get("generalDiagnostics", [])
        if diagnostic.get("severity") == "error" and Path(diagnostic["file"]).stem.startswith("seed_")
    }
