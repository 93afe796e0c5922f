"""CPU time and memory of processes, read from Linux `/proc`.

The parsers are pure (they take the file's text); the readers take the `/proc` root as a parameter
so tests can point them at fixtures. A process that has gone away reads as None, never raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")


def clock_ticks() -> int:
    """Kernel clock ticks per second (the unit of utime/stime in /proc/<pid>/stat)."""
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    utime_ticks: int
    stime_ticks: int
    num_threads: int
    starttime_ticks: int

    @property
    def cpu_ticks(self) -> int:
        return self.utime_ticks + self.stime_ticks


def parse_stat(text: str) -> ProcStat:
    """Parse `/proc/<pid>/stat`. The command name may hold spaces and parentheses: it ends at the
    last ')'."""
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    pid = int(text[:open_paren].strip())
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); field N of proc(5) is rest[N - 3]
    return ProcStat(
        pid=pid,
        comm=comm,
        state=rest[0],
        ppid=int(rest[1]),
        utime_ticks=int(rest[11]),
        stime_ticks=int(rest[12]),
        num_threads=int(rest[17]),
        starttime_ticks=int(rest[19]),
    )


def parse_status_kib(text: str, key: str) -> int | None:
    """A `kB` line of `/proc/<pid>/status` (VmHWM, VmRSS, ...) in KiB; None when absent."""
    prefix = key + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            parts = line[len(prefix) :].split()
            return int(parts[0]) if parts else None
    return None


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """The aggregate `cpu` line of `/proc/stat`, in ticks."""

    busy: int
    total: int


def parse_machine_cpu(text: str) -> MachineCpu:
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
            # counted in user/nice, so only the first eight fields add up to the total
            first = values[:8]
            idle = first[3] + (first[4] if len(first) > 4 else 0)
            total = sum(first)
            return MachineCpu(busy=total - idle, total=total)
    raise ValueError("no aggregate cpu line in /proc/stat")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def read_stat(pid: int, root: Path = PROC) -> ProcStat | None:
    text = _read(root / str(pid) / "stat")
    if text is None:
        return None
    try:
        return parse_stat(text)
    except (ValueError, IndexError):
        return None


def read_status_kib(pid: int, key: str, root: Path = PROC) -> int | None:
    text = _read(root / str(pid) / "status")
    return None if text is None else parse_status_kib(text, key)


def read_machine_cpu(root: Path = PROC) -> MachineCpu | None:
    text = _read(root / "stat")
    return None if text is None else parse_machine_cpu(text)


def read_loadavg(root: Path = PROC) -> str:
    """The 1, 5 and 15 minute load averages as text ('' when unreadable)."""
    text = _read(root / "loadavg")
    return " ".join(text.split()[:3]) if text else ""


def parent_map(root: Path = PROC) -> dict[int, int]:
    """pid → ppid of every process visible under `root`."""
    out: dict[int, int] = {}
    try:
        entries = list(root.iterdir())
    except OSError:
        return out
    for entry in entries:
        if entry.name.isdigit():
            stat = read_stat(int(entry.name), root)
            if stat is not None:
                out[stat.pid] = stat.ppid
    return out


def descendants(pid: int, parents: Mapping[int, int]) -> list[int]:
    """Every descendant of `pid` (children first, then theirs), given a pid → ppid map."""
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    out: list[int] = []
    queue = sorted(children.get(pid, []))
    while queue:
        current = queue.pop(0)
        out.append(current)
        queue.extend(sorted(children.get(current, [])))
    return out


def cpu_seconds(pids: Iterable[int], root: Path = PROC, ticks: int | None = None) -> dict[int, float]:
    """user+system CPU seconds of each live process in `pids` (gone processes are left out)."""
    hz = ticks or clock_ticks()
    out: dict[int, float] = {}
    for pid in pids:
        stat = read_stat(pid, root)
        if stat is not None:
            out[pid] = stat.cpu_ticks / hz
    return out


def thread_cpu_seconds(pid: int, root: Path = PROC, ticks: int | None = None) -> dict[int, tuple[str, float]]:
    """tid → (thread name, user+system CPU seconds) of each thread of `pid`."""
    hz = ticks or clock_ticks()
    out: dict[int, tuple[str, float]] = {}
    try:
        entries = list((root / str(pid) / "task").iterdir())
    except OSError:
        return out
    for entry in entries:
        text = _read(entry / "stat") if entry.name.isdigit() else None
        if text is None:
            continue
        try:
            stat = parse_stat(text)
        except (ValueError, IndexError):
            continue
        out[stat.pid] = (stat.comm, stat.cpu_ticks / hz)
    return out


def threads_by_name(
    before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two `thread_cpu_seconds` snapshots, summed by thread name."""
    out: dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        spent = seconds - (before[tid][1] if tid in before else 0.0)
        if spent > 0:
            out[name] = out.get(name, 0.0) + spent
    return out


def cpu_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds spent between two snapshots by the processes present in `after`.

    A process that started between the snapshots counts from zero; one that went away is lost
    (its CPU cannot be read any more), which the caller notes.
    """
    return sum(max(after[pid] - before.get(pid, 0.0), 0.0) for pid in after)
