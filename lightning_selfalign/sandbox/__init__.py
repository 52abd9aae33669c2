"""Isolated execution of generated code and its tests.

``execute(code, tests)`` for one-off checks; :func:`lightning_selfalign.sandbox.batch.execute_rows` for
JSONL batches; :class:`SandboxPool` to keep helpers warm across calls. ``isolation.py`` lists what each mode
enables; ``harness.py`` says how a pass is established.

Processes: the pool talks JSON lines to each warm helper (``helper.py``, stdlib only, in bubblewrap, as an
unprivileged uid; ``mounts.py`` sets up its namespaces and filesystem view); the helper compiles and supervises each
sample (``supervision.py``), and a forker it made at start-up forks the sample process (``pool.py`` queues two
samples per helper; ``helper.py`` says why the forker is separate). With the policy on, ``policy.py`` judges the
source before anything runs; ``cgroups.py`` gives each helper a memory cgroup where the host allows one.

Protects against (``bwrap`` mode, the default, and ``namespaces`` mode where bubblewrap is missing; each property
attacked by ``tests/test_sandbox_hostile.py``, ``test_sandbox_policy.py`` and ``test_sandbox_rows.py``): loops, C
calls and ignored signals (wall clock enforced from outside by SIGKILL); fork bombs (process cap that holds for
root); daemons (each sample is PID 1 of its own PID namespace, so everything it started dies with it); memory bombs
(address-space cap per process, and, where a memory cgroup can be made, as on these machines, the helper and all its
samples bounded together, so many processes, ``memfd``s and SysV segments cannot add up past it, and the sample,
first in the OOM killer's order, is the one killed, not its helper; ``protections`` says which mode is active);
output floods (drained, kept up to a bound); stdin reads (/dev/null: EOF); writes to host files (read-only mounts,
and an unprivileged uid); filling the disk (size-capped private tmpfs, file-size cap); network access (an empty
network namespace, no loopback to the host); secret environment variables (allowlist) and other processes (not
visible or not readable); a sample killing its helper (its process group holds only the helper and the forker, each
PID 1 of a namespace above it, which the kernel shields; a scratch tree deeper than the recursion limit is wiped
iteratively); state carried to the next sample (scratch wiped, its own IPC namespace for SysV shared memory,
semaphores and POSIX message queues, the kernel's keyrings closed by a seccomp filter, nothing of its source in the
memory the next sample is forked with: the forker never unmarshals a job and zeroes the buffer it read it into);
``sys.exit``/``os._exit``/``atexit``/``exec``/closed fds passing for success (only the harness report counts);
verdicts gamed without the harness's internals: the code must compile as a module on its own (a trailing
``@decorator`` cannot wrap the tests' ``check``), asserts are counted from the tests' syntax tree (nothing in the
code counts, however its lines break), a report frame with a status word the harness never writes, or a second
report, is an error, a process the sample forked cannot report for it, and the report flushes the streams through
their type, not through a ``flush`` the sample set. With the code policy on (``Limits(policy=True)``; ``selfalign
execute`` and the rounds' filter) the forgeries that need the harness's or the interpreter's internals are refused
before they run, as the verdict ``policy`` (``policy.py``: frames, ``gc``, tracing, ``ctypes``, builtins, signal
handlers, patched modules, an always-equal ``__eq__``, the harness's names). Rows whose text UTF-8 cannot hold (a
lone surrogate) or that hold NULs get a verdict and are written escaped; the batch goes on.

Correct programs pass: the code runs as the module ``main``, as HumanEval's harness runs it, so its ``if __name__ ==
"__main__":`` block (``sys.exit(main())``, ``input()``, ``unittest.main()``) does not run before the tests
(``Limits(run_as_main=True)`` to run it); its source is the real file ``main.py`` in the scratch dir, first on
``sys.path`` (``inspect.getsource``, tracebacks, multiprocessing's spawn); ``sys.executable`` runs, virtualenv
included; the sample is no session leader (``os.setsid()``, ``os.setpgrp()`` work); ``unittest`` tests count (each
test method that passed while the tests ran is one check, a failed one fails the sample; TestCase classes nothing
ran are run after the module).

Does not protect against: kernel exploits (samples share the host kernel: use a VM or gVisor for hostile users);
*reading* what the view shows (in both modes only the system's programs and libraries, the interpreter's trees and a
few files of /etc, read-only: no home, checkout, /var, /run or /sys); total memory beyond processes x the
per-process cap where no memory cgroup can be made, and a sample that lowers its OOM score back (a program it
executes may) can still make the kernel kill its helper when the cgroup is full (``crash``, the helper replaced);
CPU contention between samples (shows up as slower runs or timeouts; timeouts are retried once alone); and, with the
policy off (``selfalign evaluate``), a sample written against this harness: it runs in the harness's interpreter and
can find the check counter or the nonce in memory and forge a pass. The policy cannot see names built at run time
(``getattr(sys, "_get" + "frame")``), and it keeps legitimate programs that use ``signal``, ``ctypes``, ``gc`` or
frames out of the data: that is its price. The verdict filters model output; the isolation, not the verdict, is the
boundary.

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
    """Run ``code``, then ``tests``, as one module in the sandbox (``main``; ``__main__`` with ``run_as_main``); one
    warm helper is kept per process."""
    return _shared_pool(isolation, allow_unsafe).run(code, tests, limits or Limits())
