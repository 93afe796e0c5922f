from __future__ import annotations

from pathlib import Path

import pytest

from paycore.benchmark import procfs

pytestmark = pytest.mark.unit

# a granian worker as /proc/<pid>/stat shows it (fields 14/15: utime 1234, stime 567)
STAT = (
    "4242 (python) S 4200 4200 4200 0 -1 4194560 12345 0 0 0 1234 567 0 0 20 0 5 0 "
    "136003 301989888 21000 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0 0 0 0"
)
# a command name with spaces and parentheses: only the last ')' ends it
STAT_ODD_NAME = STAT.replace("(python)", "(my (odd) name)")
STATUS = """Name:\tpython
Umask:\t0022
State:\tS (sleeping)
Pid:\t4242
VmPeak:\t  400000 kB
VmHWM:\t   87040 kB
VmRSS:\t   84000 kB
Threads:\t5
"""
PROC_STAT = """cpu  1000 10 300 5000 200 0 50 0 70 0
cpu0 500 5 150 2500 100 0 25 0 35 0
cpu1 500 5 150 2500 100 0 25 0 35 0
intr 12345
"""


def test_parse_stat_reads_cpu_ticks_and_parent() -> None:
    stat = procfs.parse_stat(STAT)
    assert stat.pid == 4242
    assert stat.comm == "python"
    assert stat.state == "S"
    assert stat.ppid == 4200
    assert stat.utime_ticks == 1234
    assert stat.stime_ticks == 567
    assert stat.cpu_ticks == 1801
    assert stat.num_threads == 5
    assert stat.starttime_ticks == 136003


def test_parse_stat_with_parentheses_in_the_name() -> None:
    stat = procfs.parse_stat(STAT_ODD_NAME)
    assert stat.comm == "my (odd) name"
    assert stat.ppid == 4200
    assert stat.cpu_ticks == 1801


def test_parse_status_kib() -> None:
    assert procfs.parse_status_kib(STATUS, "VmHWM") == 87040
    assert procfs.parse_status_kib(STATUS, "VmRSS") == 84000
    assert procfs.parse_status_kib(STATUS, "VmSwap") is None


def test_parse_machine_cpu_leaves_out_idle_iowait_and_guest() -> None:
    cpu = procfs.parse_machine_cpu(PROC_STAT)
    assert cpu.total == 1000 + 10 + 300 + 5000 + 200 + 0 + 50 + 0
    assert cpu.busy == cpu.total - 5000 - 200


def test_parse_machine_cpu_needs_the_aggregate_line() -> None:
    with pytest.raises(ValueError):
        procfs.parse_machine_cpu("cpu0 1 2 3 4\n")


def _fake_proc(root: Path, processes: dict[int, tuple[int, int, int]]) -> None:
    """pid → (ppid, utime, stime) as /proc/<pid>/stat files."""
    for pid, (ppid, utime, stime) in processes.items():
        text = STAT.replace("4242 (", f"{pid} (").replace(" S 4200 ", f" S {ppid} ")
        text = text.replace(" 1234 567 ", f" {utime} {stime} ")
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(text)
        (root / str(pid) / "status").write_text(STATUS)
    (root / "self").mkdir()
    (root / "loadavg").write_text("1.50 0.75 0.25 2/150 999\n")


def test_readers_on_a_fixture_tree(tmp_path: Path) -> None:
    _fake_proc(
        tmp_path,
        {100: (1, 300, 100), 101: (100, 50, 50), 102: (100, 10, 0), 103: (101, 0, 5), 200: (1, 9, 9)},
    )
    parents = procfs.parent_map(tmp_path)
    assert parents == {100: 1, 101: 100, 102: 100, 103: 101, 200: 1}
    assert procfs.descendants(100, parents) == [101, 102, 103]
    assert procfs.descendants(200, parents) == []
    cpu = procfs.cpu_seconds([100, 101, 999], tmp_path, ticks=100)
    assert cpu == {100: 4.0, 101: 1.0}
    assert procfs.read_status_kib(100, "VmHWM", tmp_path) == 87040
    assert procfs.read_status_kib(999, "VmHWM", tmp_path) is None
    assert procfs.read_stat(999, tmp_path) is None
    assert procfs.read_loadavg(tmp_path) == "1.50 0.75 0.25"


def test_cpu_delta_counts_new_processes_from_zero_and_drops_gone_ones() -> None:
    before = {1: 10.0, 2: 5.0, 3: 1.0}
    after = {1: 12.5, 2: 5.5, 4: 0.25}
    assert procfs.cpu_delta(before, after) == pytest.approx(2.5 + 0.5 + 0.25)


def test_live_process_reads() -> None:
    import os

    stat = procfs.read_stat(os.getpid())
    assert stat is not None
    assert stat.pid == os.getpid()
    assert (procfs.read_status_kib(os.getpid(), "VmRSS") or 0) > 0
    assert procfs.clock_ticks() > 0


def test_thread_cpu_on_a_fixture_tree(tmp_path: Path) -> None:
    task = tmp_path / "100" / "task"
    for tid, name, utime in [(100, "python", 300), (101, "granian-worker", 50), (102, "granian-worker", 25)]:
        (task / str(tid)).mkdir(parents=True)
        text = STAT.replace("4242 (python)", f"{tid} ({name})").replace(" 1234 567 ", f" {utime} 0 ")
        (task / str(tid) / "stat").write_text(text)
    after = procfs.thread_cpu_seconds(100, tmp_path, ticks=100)
    assert after == {100: ("python", 3.0), 101: ("granian-worker", 0.5), 102: ("granian-worker", 0.25)}
    before = {100: ("python", 1.0), 101: ("granian-worker", 0.5)}
    assert procfs.threads_by_name(before, after) == {"python": 2.0, "granian-worker": 0.25}
    assert procfs.thread_cpu_seconds(999, tmp_path) == {}
