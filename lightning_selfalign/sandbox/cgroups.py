"""A memory cgroup per helper, where this host lets us make one: the helper, its forker and every sample it runs are
bounded together, whatever holds the memory (processes, their tmpfs files, ``memfd``s, SysV segments), which the
per-process cap (``RLIMIT_AS``) alone does not bound.

Used where this process's own memory cgroup (v1 memory controller, or v2 with memory delegated to its children) is
writable, as it is for root on these machines; elsewhere helpers run with the per-process cap only, and the pool's
``protections`` say which mode is active. When the group is full the kernel kills the sample (verdict ``memory``, from
the group's OOM-kill count, which the helper reads through an fd the pool passes it): each sample raises its own
``oom_score_adj`` to 1000 before it runs (``helper.volunteer_for_oom_kill``), so the kernel picks it even when what
fills the group is memory no process maps (``memfd``s filled with ``fallocate``), which would otherwise make the
largest process, the helper, the victim. A sample that sets its score back (any process may lower its own to where it
started, and a program it executes owns its /proc/self again) can still cost its helper: verdict ``crash``, the helper
replaced, memory bounded either way.
"""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
# Above the per-sample cap: the helper and its forker (~30 MB), the size-capped /tmp and /dev/shm of the samples
# (64 MB each), and slack for the page cache of what samples read.
HEADROOM_MB = 384


def _parent() -> tuple[Path, str] | None:
    """(this process's memory cgroup, "v1" or "v2") when we may make groups under it, else None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = ROOT / "memory" / path.lstrip("/")
            if (directory / "memory.limit_in_bytes").exists() and os.access(directory, os.W_OK):
                return directory, "v1"
    for line in lines:
        if line.startswith("0::"):
            for root in (ROOT, ROOT / "unified"):
                directory = root / line[3:].lstrip("/")
                try:
                    delegated = "memory" in (directory / "cgroup.subtree_control").read_text().split()
                except OSError:
                    continue
                if delegated and os.access(directory, os.W_OK):
                    return directory, "v2"
    return None


class MemoryCgroup:
    """One helper's memory cgroup: ``join_argv`` starts the helper in it, ``limit`` bounds it, ``remove`` ends it."""

    def __init__(self, directory: Path, version: str) -> None:
        self.directory, self.version = directory, version
        self.limit_mb = 0
        self.oom_events = str(directory / ("memory.oom_control" if version == "v1" else "memory.events"))

    @classmethod
    def create(cls, name: str, uid: int | None = None) -> MemoryCgroup | None:
        """A fresh group named ``name`` under ours (its ``cgroup.procs`` given to ``uid``), or None where we cannot."""
        parent = _parent()
        if parent is None:
            return None
        _remove_orphans(parent[0])
        directory = parent[0] / name
        try:
            directory.mkdir()
            if uid is not None:
                os.chown(directory / "cgroup.procs", uid, -1)
        except OSError:
            return None
        atexit.register(_remove, directory)
        return cls(directory, parent[1])

    def join_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run by a shell that first moves itself into this group (every process it starts then stays
        there): the helper must be in it from its first instruction, before it forks anything."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.directory / "cgroup.procs"), *argv]

    def limit(self, mb: int) -> None:
        """Bound the group at ``mb`` MB of memory, swap included (lowering a limit below what it holds may fail: the
        old one then stays)."""
        if mb == self.limit_mb:
            return
        size = str(mb << 20)
        if self.version == "v1":
            files = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            if mb < self.limit_mb:  # memsw may never be below the memory limit
                files.reverse()
            values = [size, size]
        else:
            files, values = ["memory.max", "memory.swap.max"], [size, "0"]
        for file, value in zip(files, values):
            path = self.directory / file
            if path.exists():
                try:
                    path.write_text(value)
                except OSError:
                    pass
        self.limit_mb = mb

    def describe(self) -> str:
        return f"memory of a helper and all its samples bounded together (cgroup {self.version}, {self.limit_mb} MB)"

    def remove(self) -> None:
        """Remove the group if it is empty now; else at exit (its processes die a moment after the helper, by their
        parent-death signal)."""
        _remove(self.directory, tries=1)


def _remove_orphans(parent: Path) -> None:
    """Remove the groups that processes killed before their exit handlers ran left behind (empty by now)."""
    for name in os.listdir(parent):  # not Path.glob: it finds nothing in cgroupfs
        pid = name.split("-")[1] if name.startswith("selfalign-") and name.count("-") == 2 else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _remove(parent / name, tries=1)


def _remove(directory: Path, tries: int = 20) -> None:
    for attempt in range(tries):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt + 1 < tries:
                time.sleep(0.05)
