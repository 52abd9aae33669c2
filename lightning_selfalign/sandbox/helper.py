"""The warm helper: a small long-lived process that has one isolated child forked per sample.

Runs as a script (``python -I -B -S helper.py CONFIG_JSON``; ``without_site`` gives samples what ``site`` would),
inside bubblewrap when available, and imports only the standard library, so that nothing of the application is
reachable and forking stays cheap. It reads one JSON request per line on stdin and writes one JSON verdict per
line on stdout, one sample at a time, in order (the pool may queue the next request while one runs).

At start (namespace modes) the helper drops to its unprivileged uid, enters a user namespace of its own
(mapped to that uid, so ``RLIMIT_NPROC`` holds even for root's library), a PID namespace of its own (it is
its PID 1) and a mount namespace with a size-capped tmpfs on /tmp and /dev/shm. It then preloads a few small
common modules and forks the *forker*, a copy of itself that does nothing but fork samples: a process that
forks has all its pages write-protected, so every page it writes afterwards faults once, and the helper's own
work (JSON, parsing, compiling) would write hundreds per sample. Per sample the helper compiles the program
(small ones; large ones compile in the child under the clock), and sends it with the two pipe fds to the
forker, which imports any allowlisted module the source names that it has not loaded yet (so later samples get
it free, while the forker stays as small as the workload allows), unshares a fresh PID namespace and forks:
the child is PID 1 there, so when it dies the kernel kills every process it started. The forker hands back its
pid (the helper opens a pidfd of it) and, once it has reaped the child, its wait status. The child sets the
rlimits, redirects stdin/stdout/stderr, drops its capabilities (no-new-privs it inherits from the forker) and runs
the harness.
The helper drains the output, enforces the wall clock from outside with SIGKILL (through the pidfd), wipes the
scratch dirs, and turns the harness report or the exit status into a verdict.
"""

import _signal
import _socket
import ctypes
import gc
import json
import marshal
import os
import re
import resource
import struct
import sys
import time

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x20000, 0x10000000, 0x20000000
CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS = 0x40000000, 0x08000000, 0x04000000
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x4000, 0x40000, 0x2, 0x4
MS_RDONLY, MS_REMOUNT, MS_BIND = 0x1, 0x20, 0x1000
KEPT: set[str] = set()  # entries of the scratch dirs that are read-only mounts of ours: never wiped
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
RESULT_FD = 1023
SCRATCH_DIRS = ("/tmp", "/dev/shm")
HELPER_MEMORY = 4 << 30
COMPILE_HERE_MAX = 32 * 1024  # characters of code + tests
SAMPLE_UID = 1000  # the helper's and the samples' uid inside their user namespace: not root there either
# Imported once, before the forker is made, so each forked sample gets them for free: small and very common.
# Not ``random``: it reseeds itself in every forked child (~40 page faults, ~0.07 ms, per sample); the few samples
# that use it import it themselves (~1.5 ms), which costs less over a batch. Not ``heapq``/``bisect`` either: each C
# extension maps 5 more regions, which every fork and exit pays for (~2 us each), used or not; they are on demand.
PRELOAD = "abc collections collections.abc copy enum functools io itertools json math operator re string struct typing"
PRELOAD = PRELOAD.split()
# Imported into the forker the first time a sample's source names them (then every later sample gets them free).
# Not up front: each MB the forker holds costs every fork and exit (page tables, copy-on-write), used or not; with
# all of these loaded a HumanEval sample cost ~0.7 ms more CPU. Standard modules without import side effects only.
ON_DEMAND = frozenset(
    "array ast base64 binascii bisect calendar cmath contextlib csv dataclasses datetime decimal difflib fractions "
    "graphlib hashlib heapq inspect numbers pickle pprint queue statistics textwrap time unicodedata unittest "
    "zlib".split()
)
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import\b|import[ \t]+([\w., \t]+))", re.MULTILINE)

libc = ctypes.CDLL(None, use_errno=True)
# Made once here, before the forker, not in each sample: resolving the function and building the ctypes arrays in
# a freshly forked child copied ~75 pages (~0.1 ms per sample). Each child uses its own copy-on-write copy.
# The per-sample calls go through a handle that does not save errno: with use_errno every call swaps errno through
# the thread state's dict, which copied ~15 more pages per call after a fork. A failed call is repeated through
# ``libc`` for its errno (each fails the same way again).
_fast = ctypes.CDLL(None)
_capset, _unshare, _setns = _fast.capset, _fast.unshare, _fast.setns
_CAP_HEADER = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
_CAP_NONE = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty, for both 32-bit words


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_helper_namespaces(config: dict) -> int:
    """Our own user + PID namespace (+ network, IPC, UTS without bubblewrap); we become its PID 1.

    The original process stays behind as a waiting parent. Owning the PID namespace lets us give each
    sample its own nested one (unshare, fork, then setns back); owning the user namespace as a mapped
    non-root uid keeps ``RLIMIT_NPROC`` in force. Returns an fd of our PID namespace.
    """
    flags = CLONE_NEWUSER | CLONE_NEWPID
    if config["helper_namespaces"]:
        flags |= CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # else /proc/self/uid_map belongs to root, not to us
    _check(libc.unshare(flags), "unshare")
    _write_file("/proc/self/setgroups", "deny")
    _write_file("/proc/self/uid_map", f"{SAMPLE_UID} {config['uid']} 1")
    _write_file("/proc/self/gid_map", f"{SAMPLE_UID} {config['gid']} 1")
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    pid = os.fork()  # our PID 1 must exist before the new /proc can be mounted
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    libc.prctl(PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    mount_private_dirs(config["scratch_mb"])
    return os.open("/proc/self/ns/pid", os.O_RDONLY)


def mount_private_dirs(scratch_mb: int) -> None:
    """Our own mount namespace: size-capped tmpfs on /tmp (the samples' scratch) and /dev/shm, our own /proc; what
    this interpreter imports from under them (a virtualenv in /tmp) is bound back read-only."""
    _check(libc.unshare(CLONE_NEWNS), "unshare mount namespace")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    keep = {path: os.open(path, os.O_PATH) for path in paths_under_scratch()}
    opts = f"size={scratch_mb}m,nr_inodes=4096,mode=1777".encode()
    for target in SCRATCH_DIRS:
        if os.path.isdir(target):
            _check(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"mount {target}")
    keep_under_scratch(keep)
    # Refused where the outer /proc has parts covered (bubblewrap as root does that); the outer one then shows
    # only the helper's PID namespace, where a sample can neither signal nor read anything (not dumpable).
    libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV, None)


def paths_under_scratch() -> list[str]:
    """What this interpreter imports from (its prefixes, ``sys.path``: directories or zip files) that lies under a
    scratch dir, outermost only: a checkout or virtualenv in /tmp, as CI and pytest make. Each entry counts both as
    named and as resolved, since a path elsewhere may be a link into /tmp."""
    candidates = set()
    for entry in (*sys.path, sys.prefix, sys.base_prefix):
        if entry:
            candidates.update((os.path.abspath(entry), os.path.realpath(entry)))
    under = [p for p in candidates if os.path.exists(p) and any(p.startswith(s + os.sep) for s in SCRATCH_DIRS)]
    return sorted(p for p in under if not any(p.startswith(q + os.sep) for q in under))


def keep_under_scratch(keep: dict[str, int]) -> None:
    """Bind each path of ``keep`` (held open by its fd from before the scratch tmpfs covered it) back, read-only.

    Each first directory under a scratch dir that leads to one is a mount of its own (a small tmpfs holding the
    way down, made read-only once its paths are bound; or the bound path itself), so a sample can neither write
    there nor rename it away from later samples, and ``wipe_scratch`` leaves it alone (``KEPT``)."""
    tops: dict[str, list[str]] = {}
    for path in keep:
        scratch = next(s for s in SCRATCH_DIRS if path.startswith(s + os.sep))
        tops.setdefault(os.path.join(scratch, os.path.relpath(path, scratch).split(os.sep)[0]), []).append(path)
    for top, paths in tops.items():
        if paths != [top]:
            os.mkdir(top, 0o755)
            _check(libc.mount(b"tmpfs", top.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755"), top)
        for path in paths:
            source = f"/proc/self/fd/{keep[path]}"
            if os.path.isdir(source):
                os.makedirs(path, 0o755, exist_ok=True)
            else:  # a zip on sys.path: a file to bind onto
                os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            _check(libc.mount(source.encode(), path.encode(), None, MS_BIND | MS_REC, None), f"bind {path}")
            os.close(keep[path])
            make_read_only(path)
        if paths != [top]:
            _check(libc.mount(None, top.encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None), top)
        KEPT.add(top)


def make_read_only(path: str) -> None:
    """Remount read-only every mount at or under ``path`` (a recursive bind brings the ones inside it along)."""
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    prefix = os.fsencode(path)
    for point in points:  # mountinfo escapes space, tab, newline and backslash as \ooo
        point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), point)
        if point != prefix and not point.startswith(prefix + b"/"):
            continue
        flags = os.statvfs(point).f_flag
        if flags & os.ST_RDONLY:  # bubblewrap's binds are read-only already; a host path is not
            continue
        # A remount must repeat the flags that a more privileged namespace locked (these ST_* equal their MS_*).
        locked = flags & (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME)
        remount = MS_REMOUNT | MS_BIND | MS_RDONLY | locked
        _check(libc.mount(None, point, None, remount, None), f"read-only {os.fsdecode(point)}")


def wipe_scratch() -> None:
    """Remove what the last sample left in the scratch dirs, so the next one starts empty (and writable: the
    samples' uid owns them and could have changed their mode)."""
    import shutil  # here, not at the top: only the helper needs it, and the forker is smaller without it

    for target in SCRATCH_DIRS:
        os.chmod(target, 0o1777)
        with os.scandir(target) as entries:
            for entry in entries:
                if entry.path in KEPT:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)


def drop_capabilities() -> None:
    """No effective, permitted or inheritable capabilities.

    The bounding set is left alone (dropping it costs 41 calls per sample): with no-new-privs (set once in the
    forker, inherited) and a non-root uid, exec cannot raise capabilities back, so an empty permitted set stays
    empty.
    """
    if _capset(_CAP_HEADER, _CAP_NONE):
        _check(libc.capset(_CAP_HEADER, _CAP_NONE), "capset")


_RLIMITS: dict = {}


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


def redirect_fds(devnull: int, output_w: int, result_w: int) -> None:
    """stdin from /dev/null (``devnull``, opened for this sample by the forker), stdout+stderr to the drained output
    pipe, the result pipe at RESULT_FD; close the rest."""
    dup2 = os.dup2
    dup2(devnull, 0)
    dup2(output_w, 1)
    dup2(output_w, 2)
    dup2(result_w, RESULT_FD, False)
    os.closerange(3, RESULT_FD)
    os.closerange(RESULT_FD + 1, 65536)


def run_sample_process(job: dict, config: dict, output_w: int, result_w: int) -> None:
    """The forked sample (PID 1 of its own namespace when namespaces are on): lock down, run the harness.

    Every page a fresh child writes is copied, so this path is kept to few calls and no new objects: the rlimit
    pairs come ready-made, its /dev/null is opened by the forker, and with namespaces the working directory (/tmp,
    private to the helper's mount namespace) is the forker's own."""
    try:
        if not config["namespaces"]:  # with them, the helper (its PID namespace's init) dies if the forker does
            libc.prctl(PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0)
        os.setsid()
        if job["scratch"]:
            os.chdir(job["scratch"])
        redirect_fds(config["devnull"], output_w, result_w)
        setrlimit = resource.setrlimit
        for which, pair in job["rlimits"]:
            setrlimit(which, pair)
        drop_capabilities()  # the environment is already the allowlist: set_environment ran before the forker was made
    except BaseException as exc:
        os.write(result_w, f"\nSELFALIGN-SETUP {job['nonce']} {type(exc).__name__}: {exc}\n".encode())
        os._exit(124)
    program = marshal.loads(job["program"]) if job["program"] else (job["code"], job["tests"])
    harness.run(program, job["nonce"], RESULT_FD, config.get("main"))


def fork_sample(job: dict, config: dict, output_w: int, result_w: int) -> int:
    """Fork the sample process; with namespaces it is PID 1 of a fresh PID namespace."""
    if config["namespaces"] and _unshare(CLONE_NEWPID):
        _check(libc.unshare(CLONE_NEWPID), "unshare PID namespace")
    pid = os.fork()
    if pid == 0:
        run_sample_process(job, config, output_w, result_w)
    if config["namespaces"] and _setns(config["pid_ns_fd"], CLONE_NEWPID):
        _check(libc.setns(config["pid_ns_fd"], CLONE_NEWPID), "setns back to our PID namespace")
    return pid


def start_forker(config: dict) -> _socket.socket:
    """Fork the forker: a copy of this process, made right after the preloads, that only forks samples.

    Forking write-protects every private page of the forking process, so each page it writes afterwards faults
    once (about 1.3 us here). The helper writes hundreds of pages per sample (parsing, compiling, JSON); the
    forker only a few, as its memory stays as it was at this fork. Returns our end of its socket."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        ours.close()
        try:
            serve_forks(theirs, config)
        finally:
            os._exit(0)
    theirs.close()
    return ours


_FDS_SPACE = _socket.CMSG_SPACE(struct.calcsize("2i"))


def _receive_job(sock: _socket.socket, buffer: bytearray) -> tuple[dict | None, tuple[int, ...]]:
    """One job (length-prefixed marshal) and the two pipe fds sent with it; (None, fds) when the helper is gone.

    Read into ``buffer``, which lives as long as the forker: every page the forker writes after a fork faults
    once, so it reuses the same memory rather than allocating (and freeing) new buffers per sample."""
    header, ancillary, _, _ = sock.recvmsg(8, _FDS_SPACE)
    fds = struct.unpack("2i", ancillary[0][2]) if ancillary and len(ancillary[0][2]) == 8 else ()
    if len(fds) != 2:
        return None, fds
    while len(header) < 8:
        chunk = sock.recv(8 - len(header))
        if not chunk:
            return None, fds
        header += chunk
    length = struct.unpack("<Q", header)[0]
    # A job larger than the buffer (a huge source) gets memory of its own, freed after it: a buffer grown to fit it
    # would stay that large and make every later fork copy its pages.
    view, got = memoryview(buffer if length <= len(buffer) else bytearray(length)), 0
    while got < length:
        count = sock.recv_into(view[got:length])
        if not count:
            return None, fds
        got += count
    return marshal.loads(view[:length]), fds


def preload(names: list[str]) -> None:
    """Import standard modules here, once, so forked samples find them loaded; then keep the collector off them."""
    for name in names:
        try:
            __import__(name)
        except Exception:  # the sample then meets the same error itself
            pass
    gc.freeze()  # forked samples then never copy these pages just to run the collector over them


def set_environment(config: dict) -> None:
    """Reduce the environment to the allowlist, here rather than in every sample: clearing and refilling
    ``os.environ`` in a freshly forked child runs enough of ``os.py`` to copy ~60 pages (~0.1 ms per sample)."""
    os.environ.clear()
    os.environ.update(config["env"])


def serve_forks(sock: _socket.socket, config: dict) -> None:
    """The forker's loop: per job, fork the sample, send back its pid, reap it and send its exit status
    with the CPU the fork, the sample and the reaping took. Sets no-new-privs first, once, for every sample."""
    libc.prctl(PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # once, here: every sample inherits it
    if config["namespaces"]:
        os.chdir("/tmp")  # every sample's working directory: its scratch, private to the helper's mount namespace
        config["main"] = harness.prepare_main("/tmp")  # and every sample's untouched __main__
    buffer = bytearray(1 << 16)
    gc.freeze()
    while True:
        job, fds = _receive_job(sock, buffer)
        if job is None:
            return
        cpu_started = time.process_time()
        if job["imports"]:
            preload(job["imports"])
            set_environment(config)  # in case an import changed it
        # A /dev/null of its own for each sample's stdin: one shared open file would carry a sample's flock or
        # F_SETFL flags to the next (and the lock to the host's /dev/null).
        config["devnull"] = os.open(os.devnull, os.O_RDONLY)
        pid = fork_sample(job, config, *fds)
        for fd in (*fds, config["devnull"]):
            os.close(fd)
        if config["namespaces"]:
            sock.sendall(struct.pack("<q", pid))  # the helper opens its own pidfd of it (see start_sample)
        else:  # leftovers of a sample could reuse its pid once reaped: a pidfd now, before we reap it
            pidfd = os.pidfd_open(pid)
            sock.sendmsg([struct.pack("<q", pid)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", pidfd))])
            os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)  # the sample's CPU comes with it: no getrusage calls
        cpu = time.process_time() - cpu_started + usage.ru_utime + usage.ru_stime
        sock.sendall(struct.pack("<qdq", status, cpu, usage.ru_minflt))


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


def start_sample(job: dict, config: dict, output_w: int, result_w: int) -> tuple[int, int | None]:
    """Have the forker start a sample; returns (pid, pidfd), the pidfd None when the sample has already been reaped.

    With namespaces the pidfd is opened here from the pid (no fd passing): the pid cannot have been reused in
    between, since only the forker forks in our PID namespace, not before our next job, and a sample's own
    processes are gone before the forker can reap it (it is PID 1 of theirs). Without namespaces the forker sends
    one it opened before reaping: leftovers of the sample could otherwise fork onto its pid."""
    blob = marshal.dumps(job)
    forker = config["forker"]
    fds = (_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("2i", output_w, result_w))
    forker.sendmsg([struct.pack("<Q", len(blob)), blob], [fds])
    if not config["namespaces"]:
        reply, ancillary, _, _ = forker.recvmsg(8, _socket.CMSG_SPACE(4))
        if len(reply) != 8 or not ancillary or len(ancillary[0][2]) != 4:
            raise RuntimeError("the forker died")
        return struct.unpack("<q", reply)[0], struct.unpack("i", ancillary[0][2])[0]
    pid = struct.unpack("<q", _receive_exactly(forker, 8))[0]
    try:
        return pid, os.pidfd_open(pid)
    except ProcessLookupError:
        return pid, None


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
    """The harness report and setup errors; anything without this sample's nonce is ignored."""
    frames: dict = {}
    for kind in ("REPORT", "SETUP"):
        marker = f"\nSELFALIGN-{kind} {nonce} ".encode()
        at = result.find(marker)
        if at < 0:
            continue
        body = result[at + len(marker) :]
        if kind == "REPORT":
            header, _, rest = body.partition(b"\n")
            status, checks, length = header.decode().split()
            frames[kind] = (status, int(checks), rest[: int(length)].decode("utf-8", "replace"))
        else:
            frames[kind] = body.split(b"\n", 1)[0].decode("utf-8", "replace")
    return frames


def _signal_name(number: int) -> str:
    import signal  # here, not at the top: only the helper needs the names, and the forker is smaller without them

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def verdict_of(frames: dict, status: int, timed_out: bool, output: bytes, limits: dict) -> tuple[str, str, int]:
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
    job = {"nonce": request["nonce"], "limits": request["limits"], "program": b"", "code": "", "tests": ""}
    if len(request["code"]) + len(request["tests"]) <= COMPILE_HERE_MAX:
        # Compiled here, where memory is already private: in the child every touched page would be copied.
        # Larger sources compile in the child, under the wall clock, so none can stall the helper.
        try:
            job["program"] = marshal.dumps(harness.instrument(request["code"], request["tests"]))
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            return _response("error", harness.describe(exc), 0, started, cpu_started, b"")
    else:
        job.update(code=request["code"], tests=request["tests"])
    job["scratch"] = "" if config["namespaces"] else _private_dir()
    job["rlimits"] = rlimit_pairs(request["limits"])
    job["imports"] = new_imports(request["code"], request["tests"], config["imported"])
    output_r, output_w = os.pipe()
    result_r, result_w = os.pipe()
    try:
        pid, pidfd = start_sample(job, config, output_w, result_w)
    finally:
        os.close(output_w)
        os.close(result_w)
    try:
        output, result, status, timed_out, forker = supervise(pid, pidfd, output_r, result_r, started, job, config)
    finally:
        if pidfd is not None:
            os.close(pidfd)
        os.close(output_r)
        os.close(result_r)
    frames = _parse_frames(result, request["nonce"])
    verdict, reason, tests_run = verdict_of(frames, status, timed_out, output, request["limits"])
    return _response(verdict, reason, tests_run, started, cpu_started, output, forker)


def _response(
    verdict: str,
    reason: str,
    tests_run: int,
    started: float,
    cpu_started: float,
    output: bytes,
    forker: tuple[float, int] = (0.0, 0),
) -> dict:
    """The response row; ``cpu_s`` is our CPU since ``cpu_started`` plus the forker's (fork, sample, reaping),
    ``page_faults`` the sample's processes' (what a fork-per-sample design pays most for, and a count, not a time)."""
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
    code = "import os\nassert os.getpid() == 1, 'not PID 1 of its own namespace'" if config["namespaces"] else ""
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
    return config["protections"]


def without_site(config: dict) -> None:
    """What ``site`` would have given samples, without importing it (``-S``): its search path, found once by the
    pool, and the ``exit``/``quit``/``help``/``copyright``/``credits``/``license`` builtins. ``site`` and the
    ``.pth`` hooks it runs would import ~20 modules (pathlib, urllib, ipaddress, ...) that every fork would copy."""
    if not sys.flags.no_site:
        return
    sys.path[:] = config["sys_path"]
    import _sitebuiltins
    import builtins

    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    builtins.help = _sitebuiltins._Helper()
    builtins.copyright = _sitebuiltins._Printer("copyright", sys.copyright)
    builtins.credits = _sitebuiltins._Printer("credits", "See https://www.python.org/psf/ for credits.")
    here = os.path.dirname(os.__file__)
    license_files = ["LICENSE.txt", "LICENSE"]
    builtins.license = _sitebuiltins._Printer(
        "license", "See https://www.python.org/psf/license/", license_files, [os.path.join(here, os.pardir), here]
    )


def serve(config: dict) -> None:
    """Answer requests on stdin until it closes."""
    without_site(config)
    if config.get("drop_to_uid"):
        os.setgroups([])
        os.setresgid(config["gid"], config["gid"], config["gid"])
        os.setresuid(config["uid"], config["uid"], config["uid"])
    libc.prctl(PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # samples of the same uid cannot ptrace or read us
    # Compiling a hostile source happens here: a cap turns a parser blow-up into MemoryError, not a dead helper.
    resource.setrlimit(resource.RLIMIT_AS, (HELPER_MEMORY, HELPER_MEMORY))
    out = sys.stdout
    try:
        if config["namespaces"]:
            config["pid_ns_fd"] = enter_helper_namespaces(config)
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
        set_environment(config)
        preload(PRELOAD)
        config["forker"], config["imported"] = start_forker(config), set()
        ready = {"ready": probe(config)}
    except Exception as exc:
        ready = {"error": f"{type(exc).__name__}: {exc}"}
    out.write(json.dumps(ready) + "\n")
    out.flush()
    if "error" in ready:
        return
    for line in sys.stdin:
        request = json.loads(line)
        response = execute_request(request, config)
        response["seq"] = request["seq"]  # lets the pool check each answer belongs to the sample it expects
        out.write(json.dumps(response) + "\n")
        out.flush()


def _load_harness():
    """harness.py, by path (this script is not in a package); without importlib.util, which the forker need not hold."""
    import types

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness.py")
    module = types.ModuleType("_selfalign_harness")
    module.__file__ = path
    with open(path, "rb") as source:
        exec(compile(source.read(), path, "exec", dont_inherit=True), module.__dict__)
    return module


harness = _load_harness()

if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
