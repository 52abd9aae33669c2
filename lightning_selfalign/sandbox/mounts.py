"""The helper's namespaces and filesystem view, set up once when it starts (namespace modes): its own user, PID and
mount namespaces (``enter_helper_namespaces``), size-capped tmpfs scratch dirs on /tmp and /dev/shm with what the
interpreter needs from under them bound back read-only (``mount_private_dirs``), and, without bubblewrap, a fresh
read-only root showing only what bubblewrap would (``enter_root_view``); then, between samples, the scratch wipe
(``wipe_scratch``, which ``supervision.py`` calls).

Standard library only, loaded by ``helper.py`` by path (like ``harness.py``) when it starts, before any of these mounts
covers the package directory. Nothing here runs in the forker or in a sample."""

import _signal
import os
import re
import sys
from typing import Any

# Replaced by helper.py when it loads this file: its libc handle, its error check, and the flags it shares with the
# forker and the samples.
libc: Any = None
CLONE_NEWPID: Any = None
CLONE_NEWIPC: Any = None
PR_SET_PDEATHSIG: Any = None
PR_SET_DUMPABLE: Any = None


def _check(ret: int, what: str) -> None:
    raise RuntimeError("mounts.py runs as loaded by helper.py, which supplies _check")


CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWUTS = 0x20000, 0x10000000, 0x40000000, 0x04000000
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 0x4000, 0x40000, 0x2, 0x4
MS_RDONLY, MS_REMOUNT, MS_BIND = 0x1, 0x20, 0x1000
KEPT: set[str] = set()  # entries of the scratch dirs that are read-only mounts of ours: never wiped
SCRATCH_DIRS = ("/tmp", "/dev/shm")
SAMPLE_UID = 1000  # the helper's and the samples' uid inside their user namespace: not root there either


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
    mount_private_dirs(config["scratch_mb"], config.get("view"))
    return os.open("/proc/self/ns/pid", os.O_RDONLY)


def mount_private_dirs(scratch_mb: int, view: dict | None) -> None:
    """Our own mount namespace (rooted in ``view`` without bubblewrap, see ``enter_root_view``): size-capped tmpfs on
    /tmp (the samples' scratch) and /dev/shm, our own /proc; what this interpreter imports from under them (a
    virtualenv in /tmp) is bound back read-only."""
    _check(libc.unshare(CLONE_NEWNS), "unshare mount namespace")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    if view is not None:
        enter_root_view(view)
    else:
        # Refused where the outer /proc has parts covered (bubblewrap as root does that); the outer one then shows
        # only the helper's PID namespace, where a sample can neither signal nor read anything (not dumpable).
        libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV, None)
    keep = {path: os.open(path, os.O_PATH) for path in paths_under_scratch()}
    opts = f"size={scratch_mb}m,nr_inodes=4096,mode=1777".encode()
    for target in SCRATCH_DIRS:
        if os.path.isdir(target):
            _check(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"mount {target}")
    keep_under_scratch(keep)


NEW_ROOT = "/tmp"  # where the fresh root is built before we pivot into it: a directory every host has
DEV_LINKS = {  # as bubblewrap's --dev makes them
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
# machine: its number of pivot_root (glibc has no wrapper); elsewhere we chroot (samples hold no capability to leave it)
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
MNT_DETACH = 2


def enter_root_view(view: dict) -> None:
    """Without bubblewrap: a fresh tmpfs becomes our root, holding only what ``view`` names (``isolation.
    namespaces_view``: what bubblewrap shows), bound read-only, its devices, a /proc of our PID namespace and the
    mount points of the scratch dirs; then the root itself is made read-only. No home, checkout, /var, /run or
    /sys: a host unix socket or a ``.git`` is not there to reach."""
    sources = {path: os.open(path, os.O_PATH) for path in (*view["binds"], *view["devices"]) if os.path.exists(path)}
    root = NEW_ROOT  # the host's /tmp is covered from here on: each source is reached through its fd
    _check(libc.mount(b"tmpfs", root.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=0755"), "mount root")
    for path, target in view["links"].items():
        os.symlink(target, root + path)
    for path, fd in sources.items():
        bind_fd(fd, root + path, read_only=path not in view["devices"])
    for directory in ("tmp", "dev/shm", "proc"):
        os.makedirs(os.path.join(root, directory), 0o755, exist_ok=True)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"{root}/dev/{name}")
    proc = f"{root}/proc".encode()
    if libc.mount(b"proc", proc, b"proc", MS_NOSUID | MS_NODEV, None):  # refused where the outer one has parts covered
        _check(libc.mount(b"/proc", proc, None, MS_BIND | MS_REC, None), "bind /proc")
    os.chdir(root)
    pivot = PIVOT_ROOT.get(os.uname().machine)
    if pivot is not None:  # the old root goes on top of the new one, and is detached from there
        _check(libc.syscall(pivot, b".", b"."), "pivot_root")
        _check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    else:
        _check(libc.chroot(b"."), "chroot")
    os.chdir("/")
    _check(libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None), "read-only /")


def paths_under_scratch() -> list[str]:
    """What this interpreter imports from (its prefixes, ``sys.path``: directories or zip files) and runs from (its
    virtualenv, whole, for samples that start ``sys.executable``) that lies under a scratch dir, outermost only: a
    checkout or virtualenv in /tmp, as CI and pytest make. Each entry counts both as named and as resolved, since a
    path elsewhere may be a link into /tmp."""
    executable = os.path.dirname(os.path.abspath(sys.executable))
    venv = os.path.dirname(executable)
    candidates = set()
    for entry in (*sys.path, sys.prefix, sys.base_prefix, venv if os.path.exists(venv + "/pyvenv.cfg") else executable):
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
            bind_fd(keep[path], path)
        if paths != [top]:
            _check(libc.mount(None, top.encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None), top)
        KEPT.add(top)


def bind_fd(fd: int, path: str, read_only: bool = True) -> None:
    """Bind what ``fd`` (an ``O_PATH`` fd, closed here) opens at ``path``, with what is mounted inside it, read-only
    unless told (a device stays writable), making the directory, or the empty file a file is bound onto."""
    source = f"/proc/self/fd/{fd}"
    if os.path.isdir(source):
        os.makedirs(path, 0o755, exist_ok=True)
    else:  # a file: a zip on sys.path, a file of /etc, a device
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    _check(libc.mount(source.encode(), path.encode(), None, MS_BIND | MS_REC, None), f"bind {path}")
    os.close(fd)
    if read_only:
        make_read_only(path)


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
    for target in SCRATCH_DIRS:
        os.chmod(target, 0o1777)
        with os.scandir(target) as entries:
            for entry in entries:
                if entry.path in KEPT:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    remove_tree(entry.path)
                else:
                    os.unlink(entry.path)


def remove_tree(top: str) -> None:
    """``shutil.rmtree`` without recursion (a sample can leave a tree deeper than Python's recursion limit) and
    without following links; what cannot be removed is left (the tmpfs is the sample's, sized and private)."""
    stack, stuck = [top], set()
    while stack:
        path = stack[-1]
        try:
            os.chmod(path, 0o700)
            with os.scandir(path) as entries:
                children = list(entries)
        except OSError:
            children = []
        subdirs = [e.path for e in children if e.path not in stuck and e.is_dir(follow_symlinks=False)]
        for entry in children:
            if not entry.is_dir(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
        if subdirs:
            stack.extend(subdirs)
            continue
        stack.pop()
        try:
            os.rmdir(path)
        except OSError:
            stuck.add(path)
