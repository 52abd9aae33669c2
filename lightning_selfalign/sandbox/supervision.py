"""The helper's side of each request: compile, hand to the forker, supervise, turn what came back into a verdict.

Loaded by ``helper.py`` (by path, standard library only, like ``harness.py``) after it has made the forker, so none
of this is in the forker's memory, which every sample fork copies. ``serve_requests`` reads one JSON request per line
on stdin and writes one JSON verdict per line on stdout, in order. Per request: compile the instrumented program here
(small ones, the counted tests reused across samples that share them; large ones compile in the child under the
clock), send it with the two pipe fds to the forker, drain the output, enforce the wall clock from outside with SIGKILL
(through a pidfd), wipe the scratch dirs, and turn the harness report or the exit status into a verdict.
"""

import _signal
import _socket
import json
import marshal
import os
import re
import resource
import struct
import sys
import time
from typing import Any

# Replaced by helper.py when it loads this file: the harness and policy modules, and the scratch wipe (a mount concern,
# in mounts.py).
harness: Any = None
policy: Any = None


def wipe_scratch() -> None:
    raise RuntimeError("supervision.py runs as loaded by helper.py, which supplies wipe_scratch")


COMPILE_HERE_MAX = 32 * 1024  # characters of code + tests

# Imported into the forker the first time a sample's source names them (then every later sample gets them free).
# Not up front: each MB the forker holds costs every fork and exit (page tables, copy-on-write), used or not; with
# all of these loaded a HumanEval sample cost ~0.7 ms more CPU. Standard modules without import side effects only.
ON_DEMAND = frozenset(
    "array ast base64 binascii bisect calendar cmath contextlib csv dataclasses datetime decimal difflib fractions "
    "graphlib hashlib heapq inspect numbers pickle pprint queue statistics textwrap time unicodedata unittest "
    "zlib".split()
)
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import\b|import[ \t]+([\w., \t]+))", re.MULTILINE)


_RLIMITS: dict = {}
# Counted, compiled tests by (source, the code's __future__ flags), least recently used first: the samples of one task
# share its tests (pass@k, EvalPlus's suites), and parsing and rewriting them took ~0.35 ms, a third of the helper's
# CPU per HumanEval sample. Nothing of a sample is in them (they depend on those two only; code objects are
# immutable). Bounded by source size (they hold ~5 bytes per character: ~10 MB at the bound), as this memory counts in
# the cgroup the samples share with us; HumanEval's tests are 87 K characters in all.
_TESTS: dict = {}
TESTS_CACHE_CHARS = 2 << 20
_cached_chars = [0]


def rlimit_pairs(limits: dict) -> tuple:
    """``((resource, (soft, hard)), ...)`` for ``limits``, made once per distinct limits by the helper and sent with
    each job, so that the sample only calls ``setrlimit`` (building them in the child copied ~10 more pages)."""
    key = tuple(sorted(limits.items()))
    if key not in _RLIMITS:
        mb = 1 << 20
        caps = (
            (resource.RLIMIT_AS, limits["memory_mb"] * mb),
            (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb),
            (resource.RLIMIT_CPU, int(limits["timeout_s"]) + 2),
            (resource.RLIMIT_NOFILE, limits["open_files"]),
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_NPROC, limits["processes"] + 3),  # the helper, its waiting parent and the forker count too
        )
        _RLIMITS[key] = tuple((which, (value, value)) for which, value in caps)
    return _RLIMITS[key]


def instrument(code: str, tests: str, path: str, trees: tuple) -> tuple:
    """``harness.instrument``, the counted tests taken from the cache (``_TESTS``) or added to it."""
    module = harness.compile_code(code, path, trees[0])
    key = (tests, harness.future_flags(module))
    counted = _TESTS.pop(key, None)  # put back as the most recently used, below
    if counted is None:
        import ast  # here, not at the top: the forker is smaller without it

        counted = harness.compile_tests(trees[1] or ast.parse(tests, harness.TESTS_FILENAME), module)
        _cached_chars[0] += len(tests)
        while _TESTS and _cached_chars[0] > TESTS_CACHE_CHARS:
            oldest = next(iter(_TESTS))
            del _TESTS[oldest]
            _cached_chars[0] -= len(oldest[0])
    _TESTS[key] = counted
    return module, counted


def new_imports(code: str, tests: str, imported: set[str]) -> list[str]:
    """The ON_DEMAND modules the source imports (by a line scan: a miss only means the sample imports it itself)
    that the forker has not loaded yet; they are added to ``imported``."""
    names = []
    for source in (code, tests):
        for from_name, import_names in _IMPORT_LINE.findall(source):
            for name in [from_name] if from_name else import_names.split(","):
                name = name.split(" as ")[0].strip().split(".")[0]
                if name in ON_DEMAND and name not in imported:
                    imported.add(name)
                    names.append(name)
    return names


def start_sample(job: dict, imports: list, config: dict, output_w: int, result_w: int) -> tuple[int, int]:
    """Have the forker start a sample; returns (pid, pidfd), the pid as the forker sees it, the pidfd opened by the
    forker before it reaps the sample (with namespaces the forker is PID 1 of a namespace of its own, so the pid
    means nothing here; without, leftovers of the sample could fork onto it once reaped)."""
    # The forker reads the imports; only the sample reads the rest, as one tuple (each object it makes costs it pages).
    sample = (job["nonce"], job["program"] or job["source"], job["scratch"], job["rlimits"], job["as_main"])
    head, blob = marshal.dumps(imports), marshal.dumps(sample)
    forker = config["forker"]
    fds = (_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("2i", output_w, result_w))
    forker.sendmsg([struct.pack("<QQ", len(head), len(blob)), head, blob], [fds])
    reply, ancillary, _, _ = forker.recvmsg(8, _socket.CMSG_SPACE(4))
    if len(reply) != 8 or not ancillary or len(ancillary[0][2]) != 4:
        raise RuntimeError("the forker died")
    return struct.unpack("<q", reply)[0], struct.unpack("i", ancillary[0][2])[0]


def _receive_exactly(sock: _socket.socket, size: int) -> bytes:
    reply = b""
    while len(reply) < size:
        chunk = sock.recv(size - len(reply))
        if not chunk:
            raise RuntimeError("the forker died")
        reply += chunk
    return reply


def wait_sample(config: dict) -> tuple[int, float, int]:
    """The sample's wait status, the forker's CPU seconds for it (fork, sample, reaping) and the page faults of the
    sample's processes, once the forker has reaped it."""
    return struct.unpack("<qdq", _receive_exactly(config["forker"], 24))


def kill_sample(pid: int, pidfd: int | None, config: dict) -> None:
    """SIGKILL to PID 1 ends its whole namespace; without one only the process group can be found."""
    try:
        if pidfd is not None:
            _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
    except OSError:
        pass
    if not config["namespaces"]:
        try:
            os.killpg(pid, _signal.SIGKILL)
        except OSError:
            pass


def _drain(fd: int, keep: bytearray, bound: int) -> bool:
    """Read what is available; keep up to ``bound`` bytes. False at end of file, or when a non-blocking fd has
    nothing now (a process that escaped the kill, possible only without a PID namespace, may hold it open)."""
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        return False
    if len(keep) < bound:
        keep += chunk[: bound - len(keep)]
    return bool(chunk)


def supervise(pid: int, pidfd: int | None, output_r: int, result_r: int, started: float, job: dict, config: dict):
    """Drain output and results until the sample exits or the wall clock (from ``started``) runs out, then kill it.

    Returns (output, result frames, wait status, timed out, (the forker's CPU seconds, the sample's page faults))."""
    from select import select  # here, not at the top: only the helper needs it, and the forker is smaller without it

    deadline = started + job["limits"]["timeout_s"]
    output, result = bytearray(), bytearray()
    bound = job["limits"]["output_kb"] * 1024
    forker = config["forker"].fileno()  # readable when the forker has reaped the sample
    open_fds = [output_r, result_r, forker]
    timed_out = False
    while forker in open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            kill_sample(pid, pidfd, config)
            timed_out = True
            break
        ready, _, _ = select(open_fds, [], [], remaining)
        for fd in ready:
            if fd == forker:
                open_fds.remove(forker)
            elif not _drain(fd, output if fd == output_r else result, bound if fd == output_r else 1 << 20):
                open_fds.remove(fd)
    status, forker_cpu, faults = wait_sample(config)
    if config["namespaces"]:
        wipe_scratch()
    else:
        kill_sample(pid, pidfd, config)  # leftovers in its process group
        import shutil

        shutil.rmtree(job["scratch"], ignore_errors=True)
    for fd, keep, limit in ((output_r, output, bound), (result_r, result, 1 << 20)):
        os.set_blocking(fd, False)
        while _drain(fd, keep, limit):
            pass
    return bytes(output), bytes(result), status, timed_out, (forker_cpu, faults)


def _parse_frames(result: bytes, nonce: str) -> dict:
    """The harness report and setup errors; anything without this sample's nonce is ignored. The harness reports
    once, so a second report is a forgery and the verdict an error, whatever either says."""
    frames: dict = {}
    for kind in ("REPORT", "SETUP"):
        marker = f"\nSELFALIGN-{kind} {nonce} ".encode()
        at = result.find(marker)
        if at < 0:
            continue
        body = result[at + len(marker) :]
        if kind == "REPORT" and body.find(marker) >= 0:
            frames[kind] = ("error", 0, "more than one harness report: the sample wrote one, the harness did not")
        elif kind == "REPORT":
            frames[kind] = _report_frame(body)
        else:
            frames[kind] = body.split(b"\n", 1)[0].decode("utf-8", "replace")
    return frames


REPORTED = ("ok", "fail", "error", "memory")  # the status words the harness writes (harness.classify)


def _report_frame(body: bytes) -> tuple[str, int, str]:
    """(status, checks, reason) of a report frame; a frame the harness could not have written is an error."""
    header, _, rest = body.partition(b"\n")
    fields = header.decode("ascii", "replace").split()
    if len(fields) != 3 or fields[0] not in REPORTED or not fields[1].isdigit() or not fields[2].isdigit():
        return "error", 0, f"a malformed harness report ({header[:80]!r}): the sample wrote it, the harness did not"
    status, checks, length = fields
    return status, int(checks), rest[: int(length)].decode("utf-8", "replace")


def _signal_name(number: int) -> str:
    import signal  # here, not at the top: only the helper needs the names, and the forker is smaller without them

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def oom_kills(config: dict) -> int:
    """How many processes the kernel has killed for the memory cgroup of this helper (0 without one), read through
    the fd of its events file that the pool passed us (the file is not in our filesystem view)."""
    if config.get("oom_events") is None:
        return 0
    try:
        events = os.pread(config["oom_events"], 4096, 0).splitlines()
        return next((int(line.split()[1]) for line in events if line.startswith(b"oom_kill ")), 0)
    except (OSError, ValueError, IndexError):
        return 0


def verdict_of(
    frames: dict, status: int, timed_out: bool, output: bytes, limits: dict, config: dict
) -> tuple[str, str, int]:
    """(verdict, reason, tests_run) from what came back: a harness report wins over an exit status."""
    if "REPORT" in frames:
        kind, checks, reason = frames["REPORT"]
        if kind == "ok":
            return ("pass", "", checks) if checks > 0 else ("no_tests", "the tests executed no assert", 0)
        return kind, reason, checks
    if timed_out:
        return "timeout", f"no result within {limits['timeout_s']:g} s (wall clock)", 0
    if "SETUP" in frames:
        return "crash", f"sandbox setup failed: {frames['SETUP']}", 0
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == _signal.SIGXCPU:
            return "timeout", f"CPU time limit ({_signal_name(sig)})", 0
        if sig == _signal.SIGXFSZ:
            return "error", f"file size limit exceeded ({_signal_name(sig)})", 0
        if sig == _signal.SIGKILL and config.get("oom_events") is not None:
            before, config["oom_kills"] = config.get("oom_kills", 0), oom_kills(config)
            if config["oom_kills"] > before:
                return "memory", "killed at the memory limit of its helper's cgroup", 0
        tail = output[-300:].decode("utf-8", "replace").strip()
        return "crash", f"killed by {_signal_name(sig)}" + (f": {tail}" if tail else ""), 0
    return "error", f"the process exited (status {os.WEXITSTATUS(status)}) before the tests finished", 0


def _private_dir() -> str:
    """A fresh scratch dir for a sample that has no mount namespace of its own."""
    import tempfile  # here, not at the top: only the helper needs it, and the forker is smaller without it

    return tempfile.mkdtemp(prefix="selfalign-sample-")


def execute_request(request: dict, config: dict) -> dict:
    """Run one sample in a fresh isolated child; returns the response row."""
    started, cpu_started = time.monotonic(), time.process_time()
    code, tests, limits = harness.normalized(request["code"]), harness.normalized(request["tests"]), request["limits"]
    trees = (None, None)
    if limits.get("policy"):
        trees = policy.parse(code, tests)
        refused = policy.check(code, tests, trees)
        if refused is not None:
            return _response("policy", refused, 0, started, cpu_started, b"")
    scratch = "" if config["namespaces"] else _private_dir()
    path = os.path.join(scratch or "/tmp", harness.FILENAME)
    job = {"nonce": request["nonce"], "limits": limits, "program": (), "source": (), "scratch": scratch}
    job["as_main"] = bool(limits.get("run_as_main"))
    if len(code) + len(tests) <= COMPILE_HERE_MAX:
        # Compiled here, where memory is already private: in the child every touched page would be copied.
        # Larger sources compile in the child, under the wall clock, so none can stall the helper.
        try:
            job["program"] = instrument(code, tests, path, trees)
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            return _response("error", harness.describe(exc), 0, started, cpu_started, b"", scratch=scratch)
    else:
        job["source"] = (code, tests, path)
    _write_module(path, code)
    job["rlimits"] = rlimit_pairs(limits)
    imports = new_imports(code, tests, config["imported"])
    output_r, output_w = os.pipe()
    result_r, result_w = os.pipe()
    try:
        pid, pidfd = start_sample(job, imports, config, output_w, result_w)
    finally:
        os.close(output_w)
        os.close(result_w)
    try:
        output, result, status, timed_out, forker = supervise(pid, pidfd, output_r, result_r, started, job, config)
    finally:
        os.close(pidfd)
        os.close(output_r)
        os.close(result_r)
    frames = _parse_frames(result, request["nonce"])
    verdict, reason, tests_run = verdict_of(frames, status, timed_out, output, limits, config)
    return _response(verdict, reason, tests_run, started, cpu_started, output, forker)


def _write_module(path: str, code: str) -> None:
    """The code as the module file it runs as, for ``inspect.getsource``, tracebacks and multiprocessing's spawn
    (its children import it); the scratch wipe removes it with the rest. Where it cannot be written the sample runs
    without it (those uses then fail as they did before there was a file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except OSError:
        return
    try:
        os.write(fd, code.encode("utf-8", "surrogatepass"))
    except OSError:
        pass
    finally:
        os.close(fd)


def _response(
    verdict: str,
    reason: str,
    tests_run: int,
    started: float,
    cpu_started: float,
    output: bytes,
    forker: tuple[float, int] = (0.0, 0),
    scratch: str = "",
) -> dict:
    """The response row; ``cpu_s`` is our CPU since ``cpu_started`` plus the forker's (fork, sample, reaping),
    ``page_faults`` the sample's processes' (what a fork-per-sample design pays most for, and a count, not a time).
    ``scratch``: a private dir made for a sample that never ran, removed here."""
    if scratch:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "verdict": verdict,
        "reason": reason[:2000],
        "tests_run": tests_run,
        "duration_s": round(time.monotonic() - started, 4),
        "output": output.decode("utf-8", "replace"),
        "cpu_s": round(time.process_time() - cpu_started + forker[0], 5),
        "page_faults": forker[1],
    }


def probe(config: dict) -> list[str]:
    """Check the per-sample isolation works here before promising it; returns the active protections."""
    code = "import os\nassert os.getpid() == 1, 'not PID 1 of its own namespace'\n" if config["namespaces"] else ""
    code += "print(*(line for line in open('/proc/self/status') if line.startswith('Seccomp:')))\n"
    code += "print('oom_score_adj', open('/proc/self/oom_score_adj').read())"
    config["oom_kills"] = oom_kills(config)
    request = {
        "code": code,
        "tests": "assert True",
        "nonce": "probe",
        "limits": {
            "timeout_s": 10,
            "memory_mb": 512,
            "processes": 8,
            "file_size_mb": 1,
            "open_files": 64,
            "output_kb": 4,
        },
    }
    response = execute_request(request, config)
    if response["verdict"] != "pass":
        raise RuntimeError(f"probe sample failed: {response['verdict']}: {response['reason']} {response['output']}")
    keyrings = "no keyrings (seccomp filter)" if "Seccomp:\t2" in response["output"] else "keyrings not blocked"
    first = "oom_score_adj 1000" in response["output"]
    oom = "OOM killer picks the sample first (oom_score_adj 1000)" if first else "OOM killer may pick the helper"
    return [*config["protections"], keyrings, oom]


def serve_requests(config: dict) -> None:
    """Answer requests on stdin until it closes."""
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        response = execute_request(request, config)
        response["seq"] = request["seq"]  # lets the pool check each answer belongs to the sample it expects
        out.write(json.dumps(response) + "\n")
        out.flush()
