"""Warm helpers and the pool that feeds them.

Each :class:`Helper` is one long-lived sandboxed helper process (see ``helper.py``), started with
``subprocess`` (exec, not a fork of this process's memory). The pool runs one thread per helper: a thread
sends a sample, waits for its verdict with a deadline a little beyond the sample's own timeout, and
replaces the helper when it dies or stops answering (that sample gets ``crash``).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import secrets
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from typing import Any

from lightning_selfalign.errors import UserError
from lightning_selfalign.sandbox.isolation import candidate_modes, helper_command, sandbox_ids
from lightning_selfalign.sandbox.types import ExecutionResult, Limits

START_TIMEOUT_S = 60.0
SLACK_S = 5.0  # the helper enforces the timeout; this only catches a helper that itself hangs


class HelperDied(RuntimeError):
    """The helper process exited or stopped answering."""


class _Spawner:
    """Starts helper processes from one thread that lives as long as this process.

    bwrap's ``--die-with-parent`` (``PR_SET_PDEATHSIG``) fires when the *thread* that forked it exits, so a
    helper started from a pool's worker thread would die with that thread.
    """

    def __init__(self) -> None:
        self._requests: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _serve(self) -> None:
        while True:
            argv, kwargs, reply = self._requests.get()
            try:
                reply.put((True, subprocess.Popen(argv, **kwargs)))
            except BaseException as exc:
                reply.put((False, exc))

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="sandbox-spawner", daemon=True)
                self._thread.start()
        reply: queue.Queue = queue.Queue(maxsize=1)
        self._requests.put((argv, kwargs, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value


_spawner = _Spawner()
_slots = itertools.count()  # every helper of this process gets its own uid (when root)


class Helper:
    """One warm helper process in a given isolation mode."""

    def __init__(self, mode: str, slot: int | None = None) -> None:
        slot = next(_slots) if slot is None else slot
        argv, popen = helper_command(mode, slot)
        self.uid = sandbox_ids(slot)[0]
        self.mode = mode
        self.proc = _spawner.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
        self._buffer = b""
        ready = self._read_line(START_TIMEOUT_S)
        if "ready" not in ready:
            self.close()
            raise HelperDied(ready.get("error", "no ready line"))
        self.protections: list[str] = ready["ready"]

    def _read_line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise HelperDied(f"no answer within {timeout:.0f} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise HelperDied(f"helper exited: {self._stderr_tail()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=2)
            return (self.proc.stderr.read() or b"")[-500:].decode("utf-8", "replace").strip() or "(no stderr)"
        except Exception:
            return "(stderr unavailable)"

    def run(self, code: str, tests: str, limits: Limits) -> ExecutionResult:
        """Execute one sample; raises HelperDied if the helper is gone or hangs."""
        request = {"code": code, "tests": tests, "nonce": secrets.token_hex(16), "limits": asdict(limits)}
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise HelperDied(f"helper exited: {exc}") from None
        reply = self._read_line(limits.timeout_s + SLACK_S)
        return ExecutionResult(**reply)

    def close(self) -> None:
        """Kill the helper and everything under it (bwrap's --die-with-parent and the PID namespaces)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


def start_helper(mode: str, allow_unsafe: bool) -> Helper:
    """The first helper that starts in ``mode`` (or, for ``auto``, in the strongest mode that works)."""
    failures = []
    for candidate in candidate_modes(mode, allow_unsafe):
        try:
            return Helper(candidate)
        except (HelperDied, OSError) as exc:
            failures.append(f"{candidate}: {exc}")
    raise UserError(
        f"no sandbox could start with --isolation {mode} ({'; '.join(failures) or 'not Linux'}). Install bubblewrap "
        "or allow user namespaces; or, knowing generated code then runs unisolated, pass --isolation rlimits "
        "--allow_unsafe true."
    )


class SandboxPool:
    """``workers`` warm helpers in one isolation mode; thread-safe ``run`` and an unordered ``map``."""

    def __init__(self, workers: int = 2, isolation: str = "auto", allow_unsafe: bool = False) -> None:
        if workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        first = start_helper(isolation, allow_unsafe)
        self.mode = first.mode
        self.protections = first.protections
        self.helpers: queue.Queue[Helper] = queue.Queue()
        self.helpers.put(first)
        for _ in range(1, workers):
            self.helpers.put(Helper(self.mode))
        self.workers = workers
        self.replaced = 0

    def run(self, code: str, tests: str, limits: Limits) -> ExecutionResult:
        """Run one sample on a free helper; a helper that dies is replaced and the sample gets ``crash``."""
        helper = self.helpers.get()
        started = time.monotonic()
        try:
            result = helper.run(code, tests, limits)
        except HelperDied as exc:
            helper.close()
            self.replaced += 1
            helper = Helper(self.mode)
            result = ExecutionResult("crash", f"sandbox helper died: {exc}", 0, time.monotonic() - started)
        finally:
            self.helpers.put(helper)
        return result

    def map(self, items: Iterable[Any], limits: Limits, sample: Callable[[Any], tuple[str, str]]) -> Iterator:
        """Yield ``(item, ExecutionResult)`` in completion order; ``sample(item)`` gives (code, tests)."""
        todo: queue.Queue = queue.Queue(maxsize=self.workers * 4)
        done: queue.Queue = queue.Queue()
        stop = object()

        def work() -> None:
            while (item := todo.get()) is not stop:
                try:
                    done.put((item, self.run(*sample(item), limits)))
                except BaseException as exc:  # keep the batch going; report the item as crashed
                    done.put((item, ExecutionResult("crash", f"{type(exc).__name__}: {exc}", 0, 0.0)))

        threads = [threading.Thread(target=work, daemon=True) for _ in range(self.workers)]
        for thread in threads:
            thread.start()
        pending = 0
        for item in items:
            todo.put(item)  # workers never wait on `done`, so this blocks only until one is free
            pending += 1
            while not done.empty():
                pending -= 1
                yield done.get()
        for _ in threads:
            todo.put(stop)
        while pending:
            pending -= 1
            yield done.get()

    def close(self) -> None:
        while not self.helpers.empty():
            self.helpers.get().close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
