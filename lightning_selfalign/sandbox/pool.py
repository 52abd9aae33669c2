"""Warm helpers and the pool that feeds them.

Each :class:`Helper` is one long-lived sandboxed helper process (see ``helper.py``), started with
``subprocess`` (exec, not a fork of this process's memory). ``map`` drives all helpers from the calling thread:
it keeps ``PIPELINE`` samples queued at each (a helper runs them one at a time, in order, and starts the next
as soon as it has answered, without waiting for this process), waits on all their answers with one ``select``
and a deadline a little beyond the sample's own timeout, and replaces a helper that dies or stops answering:
the sample it was running gets ``crash``, the ones queued behind it go to the replacement. Answers carry their sample's
sequence number, so a helper can never hand one sample's verdict to another.
"""

from __future__ import annotations

import functools
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
from lightning_selfalign.sandbox.cgroups import HEADROOM_MB, MemoryCgroup
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


@functools.lru_cache(maxsize=16)
def _fields(limits: Limits) -> dict:
    """``asdict(limits)``, made once per distinct limits (asdict deep-copies: it was a tenth of our CPU per sample)."""
    return asdict(limits)


_spawner = _Spawner()
_slots = itertools.count()  # every helper of this process gets its own uid (when root)
_sequence = itertools.count()  # numbers every sample sent to a helper; its answer carries the number back


class Helper:
    """One warm helper process in a given isolation mode, in a memory cgroup of its own where one can be made."""

    def __init__(self, mode: str, slot: int | None = None) -> None:
        slot = next(_slots) if slot is None else slot
        self.uid = sandbox_ids(slot)[0]
        self.mode = mode
        self.cgroup = MemoryCgroup.create(f"selfalign-{os.getpid()}-{slot}", self.uid if os.geteuid() == 0 else None)
        oom_events = os.open(self.cgroup.oom_events, os.O_RDONLY) if self.cgroup else None
        argv, popen = helper_command(mode, slot, oom_events=oom_events)
        if self.cgroup:
            self.cgroup.limit(Limits().memory_mb + HEADROOM_MB)
            argv = self.cgroup.join_argv(argv)
        try:
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
            self.proc = _spawner.popen(argv, **pipes, **popen)
        finally:
            if oom_events is not None:
                os.close(oom_events)  # the helper has its own copy
        self.fileno = self.proc.stdout.fileno()
        self._buffer = b""
        self._sent: deque[int] = deque()  # sequence numbers of the queued samples, oldest first
        ready = self._read_line(START_TIMEOUT_S)
        if "ready" not in ready:
            self.close()
            raise HelperDied(ready.get("error", "no ready line"))
        memory = self.cgroup.describe() if self.cgroup else "memory bounded per process only (no memory cgroup here)"
        self.protections: list[str] = [*ready["ready"], memory]

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
        if self.cgroup:
            self.cgroup.limit(limits.memory_mb + HEADROOM_MB)
        request = {"seq": seq, "code": code, "tests": tests, "nonce": secrets.token_hex(16), "limits": _fields(limits)}
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
        return self._answer(self._read_line(limits.timeout_s + SLACK_S))

    def answers(self) -> Iterator[ExecutionResult]:
        """The verdicts that have arrived, oldest first, after one read (call it when ``fileno`` is readable).
        Raises HelperDied, after the verdicts before it, if the helper is gone or answers out of order."""
        chunk = os.read(self.fileno, 1 << 20)
        if not chunk:
            raise HelperDied(f"helper exited: {self._stderr_tail()}")
        self._buffer += chunk
        while b"\n" in self._buffer and self._sent:
            line, _, self._buffer = self._buffer.partition(b"\n")
            yield self._answer(json.loads(line))

    def _answer(self, reply: dict) -> ExecutionResult:
        expected = self._sent.popleft()
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
        if self.cgroup:
            self.cgroup.remove()


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


class _Slot:
    """One helper during ``map``: the items queued at it (the first one running) and one held back until it is idle."""

    def __init__(self, helper: Helper) -> None:
        self.helper = helper
        self.queued: deque = deque()
        self.held: Any = None
        self.since = time.monotonic()  # when the first queued item started running


_END = object()


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
        """Yield ``(item, ExecutionResult)`` in completion order; ``sample(item)`` gives (code, tests).

        One thread drives every helper: it keeps ``PIPELINE`` samples queued at each and waits on all of their
        answers with one ``select`` (a thread per helper cost more in queue hand-offs and switches than the
        dispatching itself). A helper that dies or stops answering is replaced: the sample it was running gets
        ``crash``, the ones queued behind it (never started) go to the replacement."""
        slots = [_Slot(self.helpers.get()) for _ in range(self.workers)]
        feed, more = iter(items), True
        try:
            while True:
                answered: list = []
                for slot in slots:
                    more = self._fill(slot, feed, more, sample, limits, answered)
                busy = [slot for slot in slots if slot.queued]
                if busy:
                    self._collect(busy, sample, limits, answered)
                yield from answered
                if not busy and not answered and not more:
                    return
        finally:  # also when the caller stops early or `items` raises: settle what is queued, give the helpers back
            for slot in slots:
                try:
                    while slot.queued:
                        self._answer_oldest(slot, sample, limits, [])
                except Exception:
                    slot.helper = self._fresh(slot.helper)
                self.helpers.put(slot.helper)

    def _fill(self, slot: _Slot, feed: Iterator, more: bool, sample: Callable, limits: Limits, answered: list) -> bool:
        """Queue items at ``slot`` up to ``PIPELINE`` (a large one only once it is idle); False once ``feed`` ends."""
        while more and slot.held is None and len(slot.queued) < PIPELINE:
            item = next(feed, _END)
            if item is _END:
                more = False
            elif slot.queued and not _fits_in_pipe(item, sample):
                slot.held = item
            else:
                self._submit(slot, item, sample, limits, answered)
        if not slot.queued and slot.held is not None:
            item, slot.held = slot.held, None
            self._submit(slot, item, sample, limits, answered)
        return more

    def _submit(self, slot: _Slot, item: Any, sample: Callable, limits: Limits, answered: list) -> None:
        """Queue ``item`` at the slot's helper (a replacement if it died). An item that cannot be sent (it is broken,
        or no helper starts) is answered ``crash`` here."""
        try:
            code, tests = sample(item)
            try:
                slot.helper.submit(code, tests, limits)
            except HelperDied:  # answer what it had (each read finds its verdict or crashes it), then replace it
                dead = slot.helper
                while slot.queued:
                    self._answer_oldest(slot, sample, limits, answered)
                if slot.helper is dead:
                    slot.helper = self._replace(slot.helper)
                slot.helper.submit(code, tests, limits)
        except Exception as exc:
            answered.append((item, ExecutionResult("crash", f"{type(exc).__name__}: {exc}", 0, 0.0)))
            return
        if not slot.queued:
            slot.since = time.monotonic()
        slot.queued.append(item)

    def _collect(self, busy: list[_Slot], sample: Callable, limits: Limits, answered: list) -> None:
        """Wait until some helper answers or the first one is overdue; answer what came, replace what failed."""
        patience = limits.timeout_s + SLACK_S  # the helper enforces the timeout; this only catches one that hangs
        wait = min(slot.since for slot in busy) + patience - time.monotonic()
        by_fd = {slot.helper.fileno: slot for slot in busy}
        ready = select.select(list(by_fd), [], [], max(0.0, wait))[0]
        for fd in ready:
            slot = by_fd[fd]
            try:
                for result in slot.helper.answers():
                    answered.append((slot.queued.popleft(), result))
                    slot.since = time.monotonic()  # the next queued sample started when this answer was sent
            except HelperDied as exc:
                self._helper_failed(slot, exc, sample, limits, answered)
        now = time.monotonic()
        for slot in busy:
            if slot.queued and now - slot.since >= patience:
                self._helper_failed(slot, HelperDied(f"no answer within {patience:.0f} s"), sample, limits, answered)

    def _answer_oldest(self, slot: _Slot, sample: Callable, limits: Limits, answered: list) -> None:
        """Wait for the verdict of the oldest queued item."""
        try:
            answered.append((slot.queued[0], slot.helper.receive(limits)))
            slot.queued.popleft()
        except HelperDied as exc:
            self._helper_failed(slot, exc, sample, limits, answered)

    def _helper_failed(self, slot: _Slot, exc: HelperDied, sample: Callable, limits: Limits, answered: list) -> None:
        """The oldest queued item (the one running) is ``crash``; the rest go to a replacement helper. If that
        fails too, they are ``crash`` as well and the slot gets whatever helper can be had."""
        crash = ExecutionResult("crash", f"sandbox helper died: {exc}", 0, time.monotonic() - slot.since)
        answered.append((slot.queued.popleft(), crash))
        try:
            slot.helper = self._replace(slot.helper)
            slot.since = time.monotonic()
            for waiting in slot.queued:
                slot.helper.submit(*sample(waiting), limits)
        except Exception as failure:  # e.g. no replacement helper starts: answer, keep the batch going
            crash = ExecutionResult("crash", f"{type(failure).__name__}: {failure}", 0, 0)
            while slot.queued:
                answered.append((slot.queued.popleft(), crash))
            slot.helper = self._fresh(slot.helper)  # it may still hold samples we no longer wait for

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
