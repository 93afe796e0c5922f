"""RES-M1: background tasks are started through `TaskSupervisor` only. Outside the three modules
that own task creation, `src/paycore` must not call `asyncio.create_task`, `ensure_future` or a
loop's `create_task` (an AST scan, so comments and strings do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[3] / "src" / "paycore"
ALLOWED = {"platform/tasks.py", "middleware.py", "platform/shutdown.py"}
# Separate programs, not the service: the EPX simulator and the load generator run their own loops.
OTHER_PROGRAMS = ("epx_sim/", "benchmark/", "bench.py")
BANNED = {"create_task", "ensure_future"}


def bare_task_calls(source: str) -> list[int]:
    """Line numbers of task creation that bypasses the supervisor."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in BANNED:
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "asyncio"
            and any(alias.name in BANNED for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_every_form() -> None:
    snippet = (
        "import asyncio\n"
        "from asyncio import ensure_future\n"
        "asyncio.create_task(f())\n"
        "asyncio.get_running_loop().create_task(f())\n"
        "ensure_future(f())\n"
        "# asyncio.create_task(in_a_comment())\n"
        "x = 'asyncio.create_task(in_a_string())'\n"
    )
    assert bare_task_calls(snippet) == [2, 3, 4, 5]


def test_no_bare_create_task_in_src() -> None:
    offenders: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in ALLOWED or rel.startswith(OTHER_PROGRAMS):
            continue
        offenders += [f"{rel}:{line}" for line in bare_task_calls(path.read_text())]
    assert offenders == [], f"use container.tasks.spawn(...) instead: {offenders}"
