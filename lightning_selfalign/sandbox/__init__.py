"""Isolated execution of generated code and its tests.

``execute(code, tests)`` for one-off checks; :func:`lightning_selfalign.sandbox.batch.execute_rows` for
JSONL batches. See ``isolation.py`` for what each mode protects against and ``harness.py`` for how a pass
is established.

What this protects against: generated code that loops, forks, allocates, prints, writes files, opens
sockets, reads the environment, exits early or kills processes, by mistake or on purpose (in ``bwrap``
mode). What it does not: kernel exploits (samples share the host kernel; use VMs or gVisor for that);
CPU contention between samples (it only shows up as slower runs or timeouts); and a sample written
specifically against this harness: code that runs in the same interpreter as the harness can find the
check counter or the nonce in memory and forge a pass. The verdict filters model output; the isolation,
not the verdict, is the security boundary.
"""

from __future__ import annotations

import atexit
import threading

from lightning_selfalign.sandbox.pool import SandboxPool
from lightning_selfalign.sandbox.types import ExecutionResult, Limits, Verdict

__all__ = ["ExecutionResult", "Limits", "SandboxPool", "Verdict", "execute"]

_shared: dict[tuple[str, bool], SandboxPool] = {}
_lock = threading.Lock()


def _shared_pool(isolation: str, allow_unsafe: bool) -> SandboxPool:
    with _lock:
        key = (isolation, allow_unsafe)
        if key not in _shared:
            _shared[key] = SandboxPool(workers=1, isolation=isolation, allow_unsafe=allow_unsafe)
            atexit.register(_shared[key].close)
        return _shared[key]


def execute(
    code: str, tests: str, limits: Limits | None = None, isolation: str = "auto", allow_unsafe: bool = False
) -> ExecutionResult:
    """Run ``code`` + ``tests`` as one ``__main__`` module in the sandbox; one warm helper is kept per process."""
    return _shared_pool(isolation, allow_unsafe).run(code, tests, limits or Limits())
