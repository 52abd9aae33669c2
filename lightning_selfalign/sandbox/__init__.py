"""Isolated execution of generated code and its tests.

``execute(code, tests)`` for one-off checks; :func:`lightning_selfalign.sandbox.batch.execute_rows` for
JSONL batches; :class:`SandboxPool` to keep helpers warm across calls. ``isolation.py`` lists what each mode
enables; ``harness.py`` says how a pass is established.

Processes: the pool talks JSON lines to each warm helper (``helper.py``, stdlib only, in bubblewrap, as an
unprivileged uid); the helper compiles and supervises each sample (``supervision.py``), and a forker it made at
start-up forks the sample process (``pool.py`` queues two samples per helper; ``helper.py`` says why the forker is
separate).

Protects against (default ``bwrap`` mode, each property attacked by ``tests/test_sandbox_hostile.py``):
loops, C calls and ignored signals (wall clock enforced from outside by SIGKILL); fork bombs (process cap
that holds for root); daemons (each sample is PID 1 of its own PID namespace, so everything it started
dies with it); memory bombs (address-space cap per process); output floods (drained, kept up to a bound);
stdin reads (/dev/null); writes to host files (read-only mounts, and an unprivileged uid); filling the disk
(size-capped private tmpfs, file-size cap); network access (an empty network namespace, no loopback to the
host); secret environment variables (allowlist) and other processes (not visible or not readable);
``sys.exit``/``os._exit``/``atexit``/``exec``/closed fds passing for success (only the harness report counts);
verdicts gamed without the harness's internals: code that compiles only when joined to its tests (a trailing
``@decorator`` wrapping the tests' ``check``) is an error, lone carriage returns cannot shift where the counted
tests begin, a report frame with a status word the harness never writes is an error, and a process the sample
forked cannot report for it; a scratch tree deeper than the recursion limit (the wipe is iterative); text UTF-8
cannot hold (a lone surrogate) in a row's source or result (written escaped, the batch goes on). Samples run as the
module ``main``, as HumanEval's harness runs them, so a correct program's ``if __name__ == "__main__":`` block
(``sys.exit(main())``, ``input()``) does not run before the tests (``Limits(run_as_main=True)`` to run it).
Each sample has its own IPC namespace: SysV shared memory, semaphores and POSIX message queues a sample leaves die
with it (keyrings are not namespaced and still are not covered).

Does not protect against: kernel exploits (samples share the host kernel: use a VM or gVisor for hostile
users); *reading* files an unprivileged uid may read (the view of ``/`` is read-only, not empty; as root,
directories like /root are hidden); total memory beyond processes x the per-process cap; CPU contention
between samples (shows up as slower runs or timeouts; timeouts are retried once alone); and a sample written
against this harness: it runs in the harness's interpreter and can find the check counter or the nonce in
memory and forge a pass. The verdict filters model output; the isolation, not the verdict, is the boundary.

Samples get a private, empty ``/tmp``; an interpreter, virtualenv or checkout under the host's ``/tmp`` (as CI and
pytest make) is bound back into it read-only, as its own mount, so samples import from it as from anywhere else.
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
    """Run ``code`` + ``tests`` as one module in the sandbox (``main``; ``__main__`` with ``run_as_main``); one warm
    helper is kept per process."""
    return _shared_pool(isolation, allow_unsafe).run(code, tests, limits or Limits())
