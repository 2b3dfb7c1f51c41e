"""What the benchmarks read about processes from Linux's /proc: CPU seconds, children, peak memory.

A process that has gone away reads as 0 (CPU) or is left out (trees, memory): the figures are
taken while the measured processes run, and one that died is the benchmark's log's business.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    """The processes whose command name (``/proc/<pid>/comm``) is ``name``: ``beam.smp``, ``postgres``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
    return found


def _parents() -> dict[int, int]:
    """Every live process's parent: {pid: ppid}."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return parents


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (``hub serve --workers N``: uvicorn's supervisor and its N workers)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of ``pid`` and its live descendants (a child's CPU is not in its parent's /proc/stat)."""
    return sum(cpu_seconds(each) for each in tree(pid))


def _status_mb(pid: int, field: str) -> float | None:
    """A memory line of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``) in MB; None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """The most resident memory the process has had (``VmHWM``), in MB; None when it is gone."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float | None:
    """The resident memory of the process now (``VmRSS``), in MB; None when it is gone."""
    return _status_mb(pid, "VmRSS")
