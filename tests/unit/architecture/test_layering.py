"""House rules that keep the layout honest (design.md §3, CRITICAL-5)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from paycore.platform.db import Query, Tier

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[3] / "src" / "paycore"
DB_METHODS = {"fetch", "fetchrow", "fetchval", "execute", "executemany", "copy_records_to_table"}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("epx_sim/", "benchmark/")):
            continue  # the simulator and the load generator are programs of their own, not the service
        yield rel, ast.parse(path.read_text(), filename=str(path))


def test_no_raw_sql_outside_the_database_platform():
    """Statements run only as named, tiered `Query` objects; raw SQL strings only in platform/db."""
    offenders = []
    for rel, tree in _modules():
        if rel.startswith("platform/db/"):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in DB_METHODS
                and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
                and (not isinstance(node.args[0], ast.Constant) or isinstance(node.args[0].value, str))
            ):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []


def test_every_repository_query_has_a_unique_name_and_a_tier():
    import importlib

    names: dict[str, str] = {}
    for rel, _ in _modules():
        if not rel.endswith("repository.py"):
            continue
        module = importlib.import_module("paycore." + rel[:-3].replace("/", "."))
        for attr, value in vars(module).items():
            if isinstance(value, Query):
                assert isinstance(value.tier, Tier), f"{rel}:{attr}"
                assert value.name not in names, (
                    f"{value.name} declared twice ({names.get(value.name)}, {rel})"
                )
                names[value.name] = rel
    assert len(names) > 10


def test_pure_modules_do_no_io():
    """model.py files and kernel/ import no framework, driver or clock reader."""
    banned = {"asyncpg", "aiohttp", "litestar", "granian", "structlog", "httpx", "requests", "socket"}
    offenders = []
    for rel, tree in _modules():
        if not (rel.endswith("model.py") or rel.startswith("kernel/")):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                offenders += [f"{rel}:{node.lineno} {m}" for m in mods if m.split(".")[0] in banned]
    assert offenders == []
