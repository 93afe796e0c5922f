from __future__ import annotations

import json
from pathlib import Path

import pytest

from paycore.benchmark import stack, wrk
from paycore.benchmark.runner import BenchOptions, sale_body

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def test_lua_script_ships_with_the_package() -> None:
    assert "Idempotency-Key" in wrk.SALE_LUA and "wrk_done" in wrk.SALE_LUA


def test_lua_script_sets_a_unique_idempotency_key_per_request() -> None:
    assert 'wrk.headers["Idempotency-Key"] = prefix .. "-" .. counter' in wrk.SALE_LUA
    assert "thread_id" in wrk.SALE_LUA


DONE = {
    "event": "wrk_done",
    "requests": 1000,
    "duration_us": 5_000_000,
    "errors": {"connect": 0, "read": 1, "write": 0, "status": 3, "timeout": 2},
    "latency_us": {
        "min": 20000,
        "mean": 35000.5,
        "stdev": 1000.0,
        "max": 90000,
        "p50": 30000,
        "p90": 50000,
        "p99": 80000,
        "p999": 89000,
    },
    "statuses": {"201": 997, "402": 3},
}


def test_parse_done_line_among_wrk_output() -> None:
    output = (
        "Running 5s test @ http://127.0.0.1:1\n  1 threads and 64 connections\n" + json.dumps(DONE) + "\n"
    )
    assert wrk.parse_done_line(output)["requests"] == 1000
    with pytest.raises(ValueError):
        wrk.parse_done_line("Running 5s test\n")


def test_summary_from_wrk() -> None:
    load = wrk.summary_from_wrk(DONE, cpu_s=0.25)
    assert load.window_s == 5.0
    assert load.ok == 997
    assert load.tps == pytest.approx(199.4)
    assert load.requests == 1003
    assert load.outcomes == {"201": 997, "402": 3, "connection_error": 1, "timeout": 2}
    assert load.latency_ok is not None
    assert load.latency_ok.p99 == 80.0
    assert load.loadgen_cpu_s == 0.25


def test_with_database_keeps_host_and_query() -> None:
    assert (
        stack.with_database("postgresql://postgres:@/postgres?host=/tmp/pg", "paycore_bench")
        == "postgresql://postgres:@/paycore_bench?host=/tmp/pg"
    )
    assert (
        stack.with_database("postgresql://u:p@127.0.0.1:5432/app?sslmode=disable", "paycore_bench")
        == "postgresql://u:p@127.0.0.1:5432/paycore_bench?sslmode=disable"
    )


@pytest.mark.parametrize(
    ("dsn", "local"),
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres", True),
        ("postgresql://postgres@localhost/postgres", True),
        ("postgresql://postgres@[::1]:5432/postgres", True),
        ("postgresql://postgres:@/postgres?host=/tmp/pgdata", True),
        ("postgresql:///postgres", True),
        ("postgresql://postgres@db.example.com/postgres", False),
        ("postgresql://postgres@10.0.0.5/postgres", False),
    ],
)
def test_is_local_dsn(dsn: str, local: bool) -> None:
    assert stack.is_local_dsn(dsn) is local


def test_server_env_sizes_the_pool_and_lets_extra_win(tmp_path: Path) -> None:
    env = stack.server_env(
        {"PAYCORE_LOG_LEVEL": "debug", "HOME": "/root"},
        database_url="postgresql://x@127.0.0.1/paycore_bench",
        sim_urls={"server_post_url": "http://127.0.0.1:1/", "reporting_url": "http://127.0.0.1:1"},
        workers=2,
        port=8123,
        db_max_conns=25,
        db_conn_budget=50,
        data_dir=tmp_path,
        metrics_dir=tmp_path / "prom",
        extra={"PAYCORE_COMPRESSION_ENABLED": "false"},
    )
    assert env["HOME"] == "/root"
    assert env["PAYCORE_ENV"] == "development"
    assert env["PAYCORE_LOG_LEVEL"] == "warning"
    assert env["PAYCORE_WORKERS"] == "2"
    assert env["PAYCORE_HTTP_HOST"] == "127.0.0.1"
    assert int(env["PAYCORE_WORKERS"]) * int(env["PAYCORE_DB_MAX_CONNS"]) <= int(
        env["PAYCORE_DB_CONN_BUDGET"]
    )
    assert env["PAYCORE_EPX_SERVER_POST_URL"] == "http://127.0.0.1:1/"
    assert env["PAYCORE_NORTH_API_URL"] == "http://127.0.0.1:1"
    assert env["PAYCORE_COMPRESSION_ENABLED"] == "false"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "prom")


def test_server_env_is_valid_settings(tmp_path: Path) -> None:
    from paycore.config import load_settings

    env = stack.server_env(
        {},
        database_url="postgresql://x@127.0.0.1/paycore_bench",
        sim_urls={"server_post_url": "http://127.0.0.1:1/", "reporting_url": "http://127.0.0.1:1"},
        workers=2,
        port=8123,
        db_max_conns=25,
        db_conn_budget=50,
        data_dir=tmp_path,
        metrics_dir=tmp_path,
    )
    settings = load_settings(env)
    assert settings.workers == 2
    assert settings.db_max_conns == 25


@pytest.mark.parametrize(
    ("workers", "budget", "expected"), [(2, 50, 25), (1, 50, 25), (4, 50, 12), (3, 10, 3)]
)
def test_default_pool_size_fits_the_budget(workers: int, budget: int, expected: int) -> None:
    opts = BenchOptions(workers=workers, db_conn_budget=budget)
    assert opts.pool_size() == expected
    assert opts.pool_size() * workers <= budget


def test_sale_body_is_compact_json() -> None:
    assert json.loads(sale_body("TOKEN")) == {"amount": 1050, "currency": "USD", "token": "TOKEN"}
    assert b" " not in sale_body("TOKEN")
