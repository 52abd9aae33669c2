"""Warm helpers and the pool that feeds them.

Each :class:`Helper` is one long-lived sandboxed helper process (see ``helper.py``), started with
``subprocess`` (exec, not a fork of this process's memory). ``map`` runs one thread per helper that keeps
``PIPELINE`` samples queued at its helper (the helper runs them one at a time, in order, and starts the next
as soon as it has answered, without waiting for this process), waits for each verdict with a deadline a
little beyond the sample's own timeout, and replaces the helper when it dies or stops answering: the sample it
was running gets ``crash``, the ones queued behind it go to the replacement. Answers carry their sample's
sequence number, so a helper can never hand one sample's verdict to another.
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
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from typing import Any

from lightning_selfalign.errors import UserError
from lightning_selfalign.sandbox.isolation import candidate_modes, helper_command, sandbox_ids
from lightning_selfalign.sandbox.types import ExecutionResult, Limits

START_TIMEOUT_S = 60.0
SLACK_S = 5.0  # the helper enforces the timeout; this only catches a helper that itself hangs
PIPELINE = 2  # samples queued at each helper during map: it never idles waiting for our next request
# Only a request this small is queued behind another: it fits in the helper's stdin pipe (64 KiB) even JSON-escaped,
# so writing it never blocks while the helper may be blocked writing us a large answer (a deadlock otherwise).
PIPELINE_MAX_CHARS = 8 * 1024


def _fits_in_pipe(item: Any, sample: Callable[[Any], tuple[str, str]]) -> bool:
    try:
        return sum(map(len, sample(item))) <= PIPELINE_MAX_CHARS
    except Exception:
        return True  # _submit reports the broken item


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
_sequence = itertools.count()  # numbers every sample sent to a helper; its answer carries the number back


class Helper:
    """One warm helper process in a given isolation mode."""

    def __init__(self, mode: str, slot: int | None = None) -> None:
        slot = next(_slots) if slot is None else slot
        argv, popen = helper_command(mode, slot)
        self.uid = sandbox_ids(slot)[0]
        self.mode = mode
        self.proc = _spawner.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
        self._buffer = b""
        self._sent: deque[int] = deque()  # sequence numbers of the queued samples, oldest first
        ready = self._read_line(START_TIMEOUT_S)
        if "ready" not in ready:
            self.close()
            raise HelperDied(ready.get("error", "no ready line"))
        self.protections: list[str] = ready["ready"]

    def _read_line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        if self.proc.stdout.closed:
            raise HelperDied("helper closed")
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

    def submit(self, code: str, tests: str, limits: Limits) -> None:
        """Queue one sample at the helper (it runs them in order); raises HelperDied if it is gone."""
        seq = next(_sequence)
        request = {"seq": seq, "code": code, "tests": tests, "nonce": secrets.token_hex(16), "limits": asdict(limits)}
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:  # ValueError: closed after it died
            raise HelperDied(f"helper exited: {exc}") from None
        self._sent.append(seq)

    def receive(self, limits: Limits) -> ExecutionResult:
        """The verdict of the oldest queued sample; it started when the previous one was answered, so ``limits``'
        timeout counts from now. Raises HelperDied if the helper is gone, hangs, or answers out of order."""
        if not self._sent:
            raise HelperDied("no sample queued at this helper")
        expected = self._sent.popleft()
        reply = self._read_line(limits.timeout_s + SLACK_S)
        if reply.pop("seq", None) != expected:
            raise HelperDied(f"answer out of order (expected sample {expected})")
        return ExecutionResult(**reply)

    def run(self, code: str, tests: str, limits: Limits) -> ExecutionResult:
        """Execute one sample; raises HelperDied if the helper is gone or hangs."""
        self.submit(code, tests, limits)
        return self.receive(limits)

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
            result = ExecutionResult("crash", f"sandbox helper died: {exc}", 0, time.monotonic() - started)
            helper = self._replace(helper)
        finally:
            self.helpers.put(helper)
        return result

    def map(self, items: Iterable[Any], limits: Limits, sample: Callable[[Any], tuple[str, str]]) -> Iterator:
        """Yield ``(item, ExecutionResult)`` in completion order; ``sample(item)`` gives (code, tests)."""
        todo: queue.Queue = queue.Queue(maxsize=self.workers * 4)
        done: queue.Queue = queue.Queue()
        stop = object()

        def work() -> None:
            helper = self.helpers.get()
            queued: deque = deque()  # items queued at `helper`, the one it is running first
            held = None  # an item too large to queue behind another: sent once the helper is idle
            more = True
            try:
                while more or queued or held is not None:
                    try:
                        while more and held is None and len(queued) < PIPELINE:
                            try:  # wait for new work only when the helper has nothing to do
                                item = todo.get(block=not queued)
                            except queue.Empty:
                                break
                            if item is stop:
                                more = False
                            elif queued and not _fits_in_pipe(item, sample):
                                held = item
                            else:
                                helper = self._submit(helper, queued, item, sample, limits, done)
                        if queued:
                            helper = self._receive(helper, queued, sample, limits, done)
                        elif held is not None:
                            helper, held = self._submit(helper, queued, held, sample, limits, done), None
                    except Exception as exc:  # e.g. no replacement helper starts: answer, keep the batch going
                        while queued:
                            done.put((queued.popleft(), ExecutionResult("crash", f"{type(exc).__name__}: {exc}", 0, 0)))
                        helper = self._fresh(helper)  # it may still hold samples we no longer wait for
            finally:
                self.helpers.put(helper)

        threads = [threading.Thread(target=work, daemon=True) for _ in range(self.workers)]
        for thread in threads:
            thread.start()
        pending, stopped = 0, False
        try:
            for item in items:
                todo.put(item)  # workers never wait on `done`, so this blocks only until one is free
                pending += 1
                while not done.empty():
                    pending -= 1
                    yield done.get()
            for _ in threads:
                todo.put(stop)
            stopped = True
            while pending:
                pending -= 1
                yield done.get()
        finally:  # also when the caller stops early or `items` raises: drop unstarted work, get the helpers back
            while not stopped:
                try:
                    todo.get_nowait()
                except queue.Empty:
                    for _ in threads:
                        todo.put(stop)
                    stopped = True
            for thread in threads:
                thread.join()

    def _submit(self, helper: Helper, queued: deque, item: Any, sample: Callable, limits: Limits, done) -> Helper:
        """Queue ``item`` at ``helper`` and append it to ``queued``; returns the helper (a replacement if it died).
        An item that cannot be sent (it is broken, or no helper starts) is answered ``crash`` here."""
        try:
            code, tests = sample(item)
            try:
                helper.submit(code, tests, limits)
            except HelperDied:  # answer what it had (each read finds its verdict or crashes it), then replace it
                dead = helper
                while queued:
                    helper = self._receive(helper, queued, sample, limits, done)
                if helper is dead:
                    helper = self._replace(helper)
                helper.submit(code, tests, limits)
        except Exception as exc:
            done.put((item, ExecutionResult("crash", f"{type(exc).__name__}: {exc}", 0, 0.0)))
            return helper
        queued.append(item)
        return helper

    def _receive(self, helper: Helper, queued: deque, sample: Callable, limits: Limits, done) -> Helper:
        """Answer the oldest of ``queued``. If the helper died running it, that one is ``crash`` and the ones queued
        behind it (never started: a helper runs one at a time) are queued again at a replacement."""
        item = queued.popleft()
        started = time.monotonic()
        try:
            done.put((item, helper.receive(limits)))
            return helper
        except HelperDied as exc:
            done.put((item, ExecutionResult("crash", f"sandbox helper died: {exc}", 0, time.monotonic() - started)))
        helper = self._replace(helper)
        for waiting in queued:
            helper.submit(*sample(waiting), limits)
        return helper

    def _replace(self, helper: Helper) -> Helper:
        helper.close()
        self.replaced += 1
        return Helper(self.mode)

    def _fresh(self, helper: Helper) -> Helper:
        """A replacement for a helper in an unknown state; the closed one if none starts (its sends then fail)."""
        try:
            return self._replace(helper)
        except Exception:
            return helper

    def close(self) -> None:
        while not self.helpers.empty():
            self.helpers.get().close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
