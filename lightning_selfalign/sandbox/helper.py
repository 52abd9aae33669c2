"""The warm helper: a small long-lived process that has one isolated child forked per sample.

Runs as a script (``python -I -B -S helper.py CONFIG_JSON``; ``without_site`` gives samples what ``site`` would),
inside bubblewrap when available, and imports only the standard library, so that nothing of the application is
reachable and forking stays cheap. This file holds what the forker and the samples need; the namespaces and mounts
the helper sets up once at start, and the scratch wipe between samples, are in ``mounts.py`` (loaded at once, like
``harness.py``); the per-request work (compiling, supervising, verdicts: ``supervision.py``) is loaded only after the
forker exists.

At start (namespace modes) the helper drops to its unprivileged uid, enters a user namespace of its own (mapped to
that uid, so ``RLIMIT_NPROC`` holds even for root's library), a PID namespace of its own (it is its PID 1), a
session of its own, and a mount namespace with a size-capped tmpfs on /tmp and /dev/shm (without bubblewrap, rooted
in a fresh tmpfs that shows what bubblewrap would: ``mounts.enter_root_view``). It then preloads a few small common
modules and forks the *forker*, a copy of itself that does nothing but fork samples (PID 1 of a PID namespace of its
own, with a seccomp filter that closes the kernel's keyrings): a process that forks has all its pages
write-protected, so every page it writes afterwards faults once, and the helper's own work (JSON, parsing,
compiling) would write hundreds per sample. Per sample the forker gets the compiled program (marshalled; only the
sample unmarshals it, and the forker zeroes its buffer after each sample, so no sample finds an earlier one's source
in the memory it was forked with) and two pipe fds, imports any allowlisted module the source names that it has not
loaded yet (so later samples get it free, while the forker stays as small as the workload allows), unshares a fresh
PID and IPC namespace and forks: the child is PID 1 there, so when it dies the kernel kills every process it
started. The forker hands back its pid with a pidfd of it and, once it has reaped the child, its wait status. The
child makes itself the OOM killer's first choice, sets the rlimits, redirects stdin/stdout/stderr, drops its
capabilities (no-new-privs it inherits from the forker) and runs the harness, with the scratch dir (where the helper
wrote ``main.py``) first on ``sys.path``."""

import _signal
import _socket
import ctypes
import gc
import json
import marshal
import os
import resource
import struct
import sys
import time

CLONE_NEWPID, CLONE_NEWIPC = 0x20000000, 0x08000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
RESULT_FD = 1023
HELPER_MEMORY = 4 << 30
# Imported once, before the forker is made, so each forked sample gets them for free: small and very common.
# Not ``random``: it reseeds itself in every forked child (~40 page faults, ~0.07 ms, per sample); the few samples
# that use it import it themselves (~1.5 ms), which costs less over a batch. Not ``heapq``/``bisect`` either: each C
# extension maps 5 more regions, which every fork and exit pays for (~2 us each), used or not; they are on demand.
PRELOAD = "abc collections collections.abc copy enum functools io itertools json math operator re string struct typing"
PRELOAD = PRELOAD.split()
libc = ctypes.CDLL(None, use_errno=True)
# Made once here, before the forker, not in each sample: resolving the function and building the ctypes arrays in
# a freshly forked child copied ~75 pages (~0.1 ms per sample). Each child uses its own copy-on-write copy.
# The per-sample calls go through a handle that does not save errno: with use_errno every call swaps errno through
# the thread state's dict, which copied ~15 more pages per call after a fork. A failed call is repeated through
# ``libc`` for its errno (each fails the same way again).
_fast = ctypes.CDLL(None)
_capset, _unshare, _setns, _prctl = _fast.capset, _fast.unshare, _fast.setns, _fast.prctl
_CAP_HEADER = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
_CAP_NONE = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: all empty, for both 32-bit words


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


# machine: (its AUDIT_ARCH_*, its numbers of add_key, request_key and keyctl)
SECCOMP_ARCHES = {"x86_64": (0xC000003E, (248, 249, 250)), "aarch64": (0xC00000B7, (217, 218, 219))}
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


def deny_keyrings() -> None:
    """A seccomp filter, installed once in the forker and so inherited by every sample: the kernel's keyrings
    (``add_key``, ``request_key``, ``keyctl``) fail with EPERM, and so does every call through another ABI (x32,
    32-bit), where those have other numbers. Keyrings are not namespaced: a key one sample stored, the next could
    read. Nothing is installed on other machines, or where seccomp is refused; the probe reports which."""
    arch = SECCOMP_ARCHES.get(os.uname().machine)
    if arch is None:
        return
    audit_arch, numbers = arch
    load, equal, at_least, give = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, deny, n = 0x7FFF0000, 0x00050000 | 1, len(numbers)  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    program = [
        (load, 0, 0, 4),  # seccomp_data.arch
        (equal, 0, n + 3, audit_arch),
        (load, 0, 0, 0),  # seccomp_data.nr
        (at_least, n + 1, 0, 0x40000000),  # x32 calls on x86_64
        *((equal, n - k, 0, number) for k, number in enumerate(numbers)),
        (give, 0, 0, allow),
        (give, 0, 0, deny),
    ]

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*program)
    libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(Program(len(program), filters)), 0, 0)


OOM_SCORE_ADJ = b"/proc/self/oom_score_adj"  # bytes: opening it makes no str in the child


def volunteer_for_oom_kill() -> None:
    """Make this sample the kernel's first choice when its helper's memory cgroup is full (``oom_score_adj`` 1000,
    which any process may raise its own to). Memory no process maps (a ``memfd`` filled with ``fallocate``) counts for
    nobody's size, so the largest process, the helper or the forker, would be killed instead; killing the sample, PID 1
    of its namespace, ends every process it started and closes the files that held that memory.

    /proc/self belongs to root while we are not dumpable (as the forker made us), so we are dumpable for this one write
    only: five calls. Best effort: the probe reports whether it held."""
    _prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        fd = os.open(OOM_SCORE_ADJ, os.O_WRONLY)
        try:
            os.write(fd, b"1000")
        finally:
            os.close(fd)
    except OSError:
        pass
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def drop_capabilities() -> None:
    """No effective, permitted or inheritable capabilities.

    The bounding set is left alone (dropping it costs 41 calls per sample): with no-new-privs (set once in the
    forker, inherited) and a non-root uid, exec cannot raise capabilities back, so an empty permitted set stays
    empty.
    """
    if _capset(_CAP_HEADER, _CAP_NONE):
        _check(libc.capset(_CAP_HEADER, _CAP_NONE), "capset")


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


def run_sample_process(payload: memoryview, config: dict, output_w: int, result_w: int) -> None:
    """The forked sample (PID 1 of its own namespace when namespaces are on): lock down, run the harness.

    Every page a fresh child writes is copied, so this path is kept to few calls and no new objects: the rlimit
    pairs come ready-made, its /dev/null is opened by the forker, and with namespaces the working directory (/tmp,
    private to the helper's mount namespace) is the forker's own. The job is unmarshalled here, from ``payload`` (in
    the forker's buffer): the forker's own memory never holds it, so no later sample finds it there."""
    nonce = ""
    volunteer_for_oom_kill()  # first: the sample's own memory is not allocated yet
    try:
        nonce, program, scratch, rlimits, as_main = marshal.loads(payload)
        if not config["namespaces"]:  # with them, the helper (its PID namespace's init) dies if the forker does
            libc.prctl(PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0)
            os.setsid()  # a process group of its own, which the helper kills with it
        if scratch:
            os.chdir(scratch)
        redirect_fds(config["devnull"], output_w, result_w)
        setrlimit = resource.setrlimit
        for which, pair in rlimits:
            setrlimit(which, pair)
        drop_capabilities()  # the environment is already the allowlist: set_environment ran before the forker was made
    except BaseException as exc:
        os.write(result_w, f"\nSELFALIGN-SETUP {nonce} {type(exc).__name__}: {exc}\n".encode())
        os._exit(124)
    if scratch:  # where main.py is, as for ``python main.py`` (with namespaces the forker put /tmp there)
        sys.path.insert(0, scratch)
    module = config.get("main") or harness.prepare_main(os.getcwd())
    harness.name_module(module, as_main)
    harness.run(program, nonce, RESULT_FD, module)


def fork_sample(payload: memoryview, config: dict, output_w: int, result_w: int) -> int:
    """Fork the sample process; with namespaces it is PID 1 of a fresh PID namespace, in a fresh IPC namespace (the
    forker moves into it, so the SysV memory, semaphores and POSIX message queues a sample leaves die with it).

    With namespaces the sample stays in the helper's session and process group, so that it is no session leader
    (``os.setsid()`` works) and needs no group of its own: the forker and the helper, the only other members, are
    each PID 1 of a PID namespace above the sample's, so the kernel drops its signals to them."""
    if config["namespaces"] and _unshare(CLONE_NEWPID | CLONE_NEWIPC):
        _check(libc.unshare(CLONE_NEWPID | CLONE_NEWIPC), "unshare PID and IPC namespaces")
    pid = os.fork()
    if pid == 0:
        run_sample_process(payload, config, output_w, result_w)
    if config["namespaces"] and _setns(config["pid_ns_fd"], CLONE_NEWPID):
        _check(libc.setns(config["pid_ns_fd"], CLONE_NEWPID), "setns back to our PID namespace")
    return pid


def start_forker(config: dict) -> _socket.socket:
    """Fork the forker: a copy of this process, made right after the preloads, that only forks samples.

    Forking write-protects every private page of the forking process, so each page it writes afterwards faults
    once (about 1.3 us here). The helper writes hundreds of pages per sample (parsing, compiling, JSON); the
    forker only a few, as its memory stays as it was at this fork. With namespaces the forker is PID 1 of a PID
    namespace of its own (see ``fork_sample``). Returns our end of its socket."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    if config["namespaces"]:
        _check(libc.unshare(CLONE_NEWPID), "unshare the forker's PID namespace")
    pid = os.fork()
    if pid == 0:
        ours.close()
        try:
            serve_forks(theirs, config)
        finally:
            os._exit(0)
    if config["namespaces"]:
        _check(libc.setns(config["pid_ns_fd"], CLONE_NEWPID), "setns back to our PID namespace")
    theirs.close()
    return ours


_FDS_SPACE = _socket.CMSG_SPACE(struct.calcsize("2i"))


def _receive_job(sock: _socket.socket, buffer: bytearray) -> tuple[list, memoryview | None, memoryview, tuple]:
    """One job and the two pipe fds sent with it: (the modules to import first, the rest of the job still marshalled,
    the part of the buffer the job fills, fds); a None payload when the helper is gone. The job is two marshals after
    their lengths: the imports, for us, and the payload, which only the sample unmarshals (``run_sample_process``).

    Read into ``buffer``, which lives as long as the forker: every page the forker writes after a fork faults
    once, so it reuses the same memory rather than allocating (and freeing) new buffers per sample. The caller zeroes
    it after each sample (``_wipe``)."""
    header, ancillary, _, _ = sock.recvmsg(16, _FDS_SPACE)
    fds = struct.unpack("2i", ancillary[0][2]) if ancillary and len(ancillary[0][2]) == 8 else ()
    if len(fds) != 2:
        return [], None, memoryview(b""), fds
    while len(header) < 16:
        chunk = sock.recv(16 - len(header))
        if not chunk:
            return [], None, memoryview(b""), fds
        header += chunk
    head, body = struct.unpack("<QQ", header)
    length = head + body
    # A job larger than the buffer (a huge source) gets memory of its own, freed after it: a buffer grown to fit it
    # would stay that large and make every later fork copy its pages.
    view, got = memoryview(buffer if length <= len(buffer) else bytearray(length)), 0
    while got < length:
        count = sock.recv_into(view[got:length])
        if not count:
            return [], None, view[:length], fds
        got += count
    return marshal.loads(view[:head]), view[head:length], view[:length], fds


def _wipe(job: memoryview) -> None:
    """Zero the buffer a job was read into, before the next job is: the next sample forked must not find this one's
    source there (the pages fault here rather than in the next read, so this costs no extra faults)."""
    job[:] = _ZEROS[: job.nbytes] if job.nbytes <= len(_ZEROS) else bytes(job.nbytes)
    job.release()


_ZEROS = memoryview(bytes(1 << 16))


def preload(names: list[str]) -> None:
    """Import standard modules here, once, so forked samples find them loaded; then keep the collector off them.
    Never from the scratch dir, where the last sample could have left a module of that name."""
    path = sys.path[:]
    sys.path[:] = [entry for entry in path if entry != "/tmp"]
    for name in names:
        try:
            __import__(name)
        except Exception:  # the sample then meets the same error itself
            pass
    sys.path[:] = path
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
    deny_keyrings()
    if config["namespaces"]:
        os.close(config["pid_ns_fd"])
        config["pid_ns_fd"] = os.open("/proc/self/ns/pid", os.O_RDONLY)  # ours, where samples' namespaces nest
        os.chdir("/tmp")  # every sample's working directory: its scratch, private to the helper's mount namespace
        config["main"] = harness.prepare_main("/tmp")  # and every sample's untouched __main__
        sys.path.insert(0, "/tmp")  # where main.py is, as for ``python main.py`` (spawn's children import it)
    buffer = bytearray(1 << 16)
    gc.freeze()
    while True:
        imports, payload, used, fds = _receive_job(sock, buffer)
        if payload is None:
            return
        cpu_started = time.process_time()
        if imports:
            preload(imports)
            set_environment(config)  # in case an import changed it
        # A /dev/null of its own for each sample's stdin: one shared open file would carry a sample's flock or
        # F_SETFL flags to the next (and the lock to the host's /dev/null).
        config["devnull"] = os.open(os.devnull, os.O_RDONLY)
        pid = fork_sample(payload, config, *fds)
        for fd in (*fds, config["devnull"]):
            os.close(fd)
        pidfd = os.pidfd_open(pid)  # for the helper, before we reap the sample (see start_sample)
        sock.sendmsg([struct.pack("<q", pid)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", pidfd))])
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)  # the sample's CPU comes with it: no getrusage calls
        payload.release()
        _wipe(used)
        cpu = time.process_time() - cpu_started + usage.ru_utime + usage.ru_stime
        sock.sendall(struct.pack("<qdq", status, cpu, usage.ru_minflt))


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
            config["pid_ns_fd"] = mounts.enter_helper_namespaces(config)
            os.setsid()  # a session of our own for us, the forker and the samples (see fork_sample)
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
        set_environment(config)
        preload(PRELOAD)
        config["forker"], config["imported"] = start_forker(config), set()
        # Only now: none of the per-request code (nor the garbage of compiling it) is in the forker's memory.
        policy = _load_script("policy.py", POLICY_SOURCE)
        supervision = _load_script(
            "supervision.py", SUPERVISION_SOURCE, harness=harness, policy=policy, wipe_scratch=mounts.wipe_scratch
        )
        ready = {"ready": supervision.probe(config)}
    except Exception as exc:
        ready = {"error": f"{type(exc).__name__}: {exc}"}
    out.write(json.dumps(ready) + "\n")
    out.flush()
    if "error" not in ready:
        supervision.serve_requests(config)


def _read_source(name: str) -> bytes:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), name), "rb") as source:
        return source.read()


def _load_script(name: str, source: bytes, **names: object):
    """Run ``source`` (the file ``name`` beside this one) as a module, then set ``names`` in it (over its
    placeholders): this script is not in a package, and the forker need not hold ``importlib``."""
    import types

    module = types.ModuleType(f"_selfalign_{name[:-3]}")
    module.__file__ = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    exec(compile(source, module.__file__, "exec", dont_inherit=True), module.__dict__)
    module.__dict__.update(names)
    return module


harness = _load_script("harness.py", _read_source("harness.py"))
mounts = _load_script(
    "mounts.py",
    _read_source("mounts.py"),
    libc=libc,
    _check=_check,
    CLONE_NEWPID=CLONE_NEWPID,
    CLONE_NEWIPC=CLONE_NEWIPC,
    PR_SET_PDEATHSIG=PR_SET_PDEATHSIG,
    PR_SET_DUMPABLE=PR_SET_DUMPABLE,
)
# Read now, while the package is visible (a checkout under /tmp is covered once the scratch tmpfs is mounted), and
# compiled only after the forker is made.
SUPERVISION_SOURCE, POLICY_SOURCE = _read_source("supervision.py"), _read_source("policy.py")

if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
