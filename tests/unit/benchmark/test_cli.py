from __future__ import annotations

import pytest

from paycore import bench
from paycore.cli import build_parser

pytestmark = pytest.mark.unit


def _args(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["bench", *argv])


def test_defaults() -> None:
    args = _args()
    assert args.tool == "python"
    assert args.workers == 2
    assert args.concurrency == 64
    assert args.rate is None
    assert args.duration == 20.0
    assert args.warmup == 3.0
    assert args.sim_latency_ms == 20.0
    assert args.overhead == 0.0
    assert args.env == []


def test_flags() -> None:
    args = _args(
        "--workers", "1", "--sim-latency-ms", "0", "--rate", "250", "--env", "A=b=c", "--requests", "100"
    )
    assert args.workers == 1
    assert args.sim_latency_ms == 0.0
    assert args.rate == 250.0
    assert args.env == [("A", "b=c")]
    assert args.requests == 100


@pytest.mark.parametrize(
    "argv",
    [("--workers", "0"), ("--duration", "0"), ("--warmup", "-1"), ("--env", "novalue"), ("--tool", "ab")],
)
def test_rejected_flags(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        _args(*argv)


def test_pool_over_budget_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.run(_args("--workers", "2", "--db-max-conns", "30", "--db-conn-budget", "50")) == 2
    assert "exceed" in capsys.readouterr().out


def test_wrk_refuses_rate_and_request_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.run(_args("--tool", "wrk", "--rate", "100")) == 2
    assert bench.run(_args("--tool", "wrk", "--requests", "100")) == 2


def test_too_long_is_refused() -> None:
    assert bench.run(_args("--duration", "1800", "--warmup", "10")) == 2
