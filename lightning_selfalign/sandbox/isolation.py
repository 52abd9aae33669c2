"""How a helper process is started for each isolation mode, and which protections that mode gives.

Modes, strongest first:

- ``bwrap``: the helper runs in bubblewrap with every namespace unshared (no network interfaces, own
  PID/IPC/UTS), a minimal read-only view of the host (system programs and libraries, the interpreter's trees, a
  few files of /etc: no home, checkout, /var, /run or /sys), an empty environment, no capabilities; each sample
  then gets its own user + PID + mount namespace (PID 1 of it), a private size-capped tmpfs as /tmp, a fresh /proc.
- ``namespaces``: the same per-sample namespaces and the same minimal read-only view, without bubblewrap: the
  helper unshares user/network/IPC/UTS/mount namespaces itself and pivots into a fresh root holding the same trees
  and files (:func:`namespaces_view`), a few devices and its own /proc.
- ``rlimits``: rlimits, a new session and a scratch dir only: no network or PID isolation, a
  ``setsid`` daemon escapes the kill. Refused unless ``allow_unsafe`` is set.

``auto`` picks the strongest mode whose helper starts and passes its probe here. When the library runs
as root, helpers run as a dedicated unprivileged uid: root would ignore ``RLIMIT_NPROC`` and could write
the host's files; a non-root uid inside a fresh user namespace makes the process cap hold.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lightning_selfalign.errors import UserError

MODES = ("auto", "bwrap", "namespaces", "rlimits")
HELPER = Path(__file__).with_name("helper.py")
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}
# The helper starts with these too, then reduces its environment to SANDBOX_ENV before any sample is forked.
# LD_BIND_NOW: the dynamic linker resolves every symbol of libpython and libc when the helper starts, rather than
# on first call, which in each forked sample meant a symbol search and a copy-on-write fault per newly called
# function (~14 faults a sample).
HELPER_ENV = {**SANDBOX_ENV, "LD_BIND_NOW": "1"}
UID_BASE = 200_000
COMMON = [
    "output drained and capped",
    "stdin from /dev/null",
    "environment reduced to an allowlist",
    "memory cap (RLIMIT_AS)",
    "file-size cap (RLIMIT_FSIZE)",
    "CPU-time cap (RLIMIT_CPU)",
    "wall-clock kill from the helper",
    "forked from a small warm helper",
]
PROTECTIONS = {
    "bwrap": [
        "no network (empty network namespace)",
        "own PID namespace per sample (all its processes die with it)",
        "own IPC namespace per sample (its SysV and POSIX IPC objects die with it)",
        "minimal read-only filesystem view (system, interpreter) and a private size-capped /tmp",
        "process cap (RLIMIT_NPROC, unprivileged uid in its own user namespace)",
        "no capabilities, no new privileges",
        *COMMON,
    ],
    "namespaces": [
        "no network (empty network namespace)",
        "own PID namespace per sample (all its processes die with it)",
        "own IPC namespace per sample (its SysV and POSIX IPC objects die with it)",
        "minimal read-only filesystem view (system, interpreter) and a private size-capped /tmp",
        "process cap (RLIMIT_NPROC, unprivileged uid in its own user namespace)",
        "no capabilities, no new privileges",
        *COMMON,
    ],
    "rlimits": ["process cap (RLIMIT_NPROC) only when started as root", "own session", *COMMON],
}


def sandbox_ids(slot: int) -> tuple[int, int]:
    """(uid, gid) the helper runs as: a dedicated unprivileged uid per slot when root, else our own."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    uid = UID_BASE + (os.getpid() % 10_000) * 64 + slot % 64
    return uid, uid


def helper_config(mode: str, slot: int, scratch_mb: int = 64) -> dict:
    uid, gid = sandbox_ids(slot)
    return {
        "scratch_mb": scratch_mb,
        "namespaces": mode in ("bwrap", "namespaces"),
        "helper_namespaces": mode == "namespaces",
        "uid": uid,
        "gid": gid,
        "env": SANDBOX_ENV,
        "protections": PROTECTIONS[mode],
    }


# What a sample sees of the host besides the interpreter's own trees (python_paths): the system's programs and
# libraries, and the few files of /etc that the dynamic linker, locale and user lookups read. Nothing else: no
# home or checkout (with its .git), no /var or /run (host unix sockets), no /sys, no /opt or /srv.
SYSTEM_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
)


def python_paths(python: str) -> list[str]:
    """What the helper's interpreter needs to read: the interpreter, its prefixes, this package's sandbox."""
    return sorted({os.path.realpath(python), sys.prefix, sys.base_prefix, str(HELPER.parent)})


# The devices a sample may open, in ``namespaces`` mode (bubblewrap's ``--dev`` makes a similar set).
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


def system_view() -> list[str]:
    """bwrap arguments that show the system trees (a merged-/usr symlink as the same symlink) and files, read-only."""
    args: list[str] = []
    for path in SYSTEM_TREES:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--perms", "0755", "--dir", "/etc"]  # bwrap would make it 0700: closed to the unprivileged uid
    for path in SYSTEM_FILES:
        args += ["--ro-bind-try", path, path]
    return args


def bwrap_prefix(as_root: bool, python: str) -> list[str]:
    """bubblewrap arguments: a minimal filesystem view (:func:`system_view`, the interpreter's trees, a private
    /tmp, fresh /proc and /dev), every namespace unshared, no capabilities, an empty environment. As root: no user
    namespace (the helper drops to its own uid, keeping only CAP_SETUID/CAP_SETGID to do so)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError("bwrap not found (Debian/Ubuntu: apt-get install bubblewrap)")
    if as_root:
        unshare = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        caps = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        unshare, caps = ["--unshare-all"], ["--cap-drop", "ALL"]
    args = [bwrap, *unshare, "--die-with-parent", "--new-session", *system_view()]
    args += ["--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev", *caps, "--clearenv"]
    args += bind_read_only([python, *python_paths(python)])
    for name, value in HELPER_ENV.items():
        args += ["--setenv", name, value]
    return args + ["--chdir", "/tmp"]


def unshown(paths: list[str]) -> list[str]:
    """``paths``, absolute, that the system view does not already show, outermost only, sorted (parents first)."""
    shown = tuple(tree + os.sep for tree in SYSTEM_TREES if os.path.isdir(tree) and not os.path.islink(tree))
    wanted = sorted({os.path.abspath(p) for p in paths if not os.path.abspath(p).startswith(shown)})
    return [p for p in wanted if not any(p.startswith(q + os.sep) for q in wanted if q != p)]


def bind_read_only(paths: list[str]) -> list[str]:
    """bwrap arguments that bind ``paths`` read-only at the same place, outermost first, each missing parent made
    0755 so the unprivileged uid can traverse it (under /root, or under the sandbox's private /tmp: a checkout or
    virtualenv in /tmp, as CI or pytest's tmp_path makes). Paths the system view already shows are skipped."""
    args: list[str] = []
    made = {"/", "/tmp"}
    for path in unshown(paths):
        parent, chain = os.path.dirname(path), []
        while parent not in made:
            chain.insert(0, parent)
            parent = os.path.dirname(parent)
        for directory in chain:
            args += ["--perms", "0755", "--dir", directory]
            made.add(directory)
        args += ["--ro-bind", path, path]
    return args


def namespaces_view(python: str) -> dict:
    """What the helper mounts as its root in ``namespaces`` mode (``mounts.enter_root_view``): what bubblewrap shows
    (:func:`system_view` and the interpreter's trees), read-only, and :data:`DEVICES`. ``links``: the merged-/usr
    symlinks, kept as symlinks; ``binds``: trees and files bound at the same place (missing ones skipped)."""
    links = {path: os.readlink(path) for path in SYSTEM_TREES if os.path.islink(path)}
    trees = [path for path in SYSTEM_TREES if os.path.isdir(path) and path not in links]
    binds = [*trees, *SYSTEM_FILES, *unshown([python, *python_paths(python)])]
    return {"links": links, "binds": binds, "devices": list(DEVICES)}


@functools.cache
def isolated_sys_path(python: str) -> list[str] | None:
    """``sys.path`` of ``python -I`` with ``site`` (site-packages and what their .pth files add), asked once; None
    if that fails. The helper then runs with ``-S`` and sets this itself: importing ``site`` and running the .pth
    hooks made it ~0.75 MB larger, and every sample fork pays for each page it holds (~0.3 ms per sample)."""
    argv = [python, "-I", "-B", "-c", "import json, sys; print(json.dumps(sys.path))"]
    try:
        done = subprocess.run(argv, capture_output=True, check=True, env=dict(SANDBOX_ENV), cwd="/", timeout=60)
        return json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None  # the helper imports site itself, as it did before


def helper_command(
    mode: str, slot: int, python: str | None = None, oom_events: int | None = None
) -> tuple[list[str], dict]:
    """The argv that starts one helper in ``mode``, and its ``subprocess.Popen`` keyword arguments; ``oom_events``:
    an open fd of the file of the helper's memory cgroup that counts its OOM kills (see ``cgroups.py``), if it has
    one, passed down to the helper (the file itself is not in its filesystem view)."""
    python = python or sys.executable
    as_root = os.geteuid() == 0
    config = helper_config(mode, slot)
    config["oom_events"] = oom_events
    config["sys_path"] = isolated_sys_path(python)
    no_site = ["-S"] if config["sys_path"] is not None else []
    argv = [python, "-I", "-B", *no_site, str(HELPER), json.dumps(config)]
    popen: dict = {"env": dict(HELPER_ENV), "cwd": "/", "start_new_session": True}
    if oom_events is not None:
        popen["pass_fds"] = (oom_events,)
    if mode == "bwrap":
        argv = bwrap_prefix(as_root, python) + argv
        config["drop_to_uid"] = as_root
        argv[-1] = json.dumps(config)
    elif mode == "namespaces":
        config["view"] = namespaces_view(python)
        argv[-1] = json.dumps(config)
    if mode != "bwrap" and as_root:
        popen.update(user=config["uid"], group=config["gid"], extra_groups=[])
    return argv, popen


def check_mode(mode: str, allow_unsafe: bool) -> None:
    """Raise a UserError naming the fix for an unknown or unsafe mode."""
    if mode not in MODES:
        raise UserError(f"--isolation {mode!r} is not one of {', '.join(MODES)}")
    if mode == "rlimits" and not allow_unsafe:
        raise UserError(
            "--isolation rlimits gives no network, PID or filesystem isolation; generated code could reach the "
            "network and the host's files. Add --allow_unsafe true to run anyway, or use a Linux host with "
            "bubblewrap or user namespaces (--isolation auto)."
        )


def candidate_modes(mode: str, allow_unsafe: bool) -> list[str]:
    """Modes to try in order: the named one, or for ``auto`` the strong ones (rlimits only if unsafe is allowed)."""
    check_mode(mode, allow_unsafe)
    if mode != "auto":
        return [mode]
    if not sys.platform.startswith("linux"):
        return ["rlimits"] if allow_unsafe else []
    return ["bwrap", "namespaces"] + (["rlimits"] if allow_unsafe else [])
