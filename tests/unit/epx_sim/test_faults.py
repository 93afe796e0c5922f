"""Fault rules: validation, matching, frequency and deterministic sampling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paycore.epx_sim.faults import FaultSet, FaultSpecError, MatchContext

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
CTX = MatchContext("900300", "CCE1", "1234567890", "10.00", "/")


def _fired(faults: FaultSet, n: int, ctx: MatchContext = CTX, mono: float = 0.0) -> list[str | None]:
    out = []
    for _ in range(n):
        d = faults.decide("server_post", ctx, mono, NOW)
        out.append(d.rule.type if d is not None and d.rule is not None else None)
    return out


def test_first_n_then_recovery() -> None:
    faults = FaultSet()
    faults.add({"action": {"type": "http_error", "status": 503}, "frequency": {"first": 2}}, 0.0)
    assert _fired(faults, 4) == ["http_error", "http_error", None, None]


def test_skip_then_fire() -> None:
    faults = FaultSet()
    faults.add({"action": {"type": "process_then_fail"}, "skip": 1, "first": 1}, 0.0)
    assert _fired(faults, 3) == [None, "process_then_fail", None]


def test_match_filters() -> None:
    faults = FaultSet()
    rule = faults.add(
        {
            "action": {"type": "fail_before_process"},
            "match": {"merchant": "900300", "tran_type": ["CCE1", "CCE2"], "tran_nbr": 1234567890},
        },
        0.0,
    )
    assert rule.process is False and rule.action["fail"] == "reset"
    assert _fired(faults, 1) == ["fail_before_process"]
    assert _fired(faults, 1, MatchContext("900300", "CCE9", "1234567890", "1.00")) == [None]
    assert _fired(faults, 1, MatchContext("900301", "CCE1", "1234567890", "1.00")) == [None]
    assert faults.decide("key_exchange", CTX, 0.0, NOW) is None


def test_probability_is_seeded() -> None:
    def run(seed: int) -> list[str | None]:
        faults = FaultSet()
        faults.add({"action": {"type": "http_error"}, "probability": 0.5, "seed": seed}, 0.0)
        return _fired(faults, 50)

    assert run(3) == run(3)
    hits = sum(1 for x in run(3) if x)
    assert 10 < hits < 40


def test_time_bounds() -> None:
    faults = FaultSet()
    faults.add({"action": {"type": "http_error"}, "for_seconds": 5}, 100.0)
    assert _fired(faults, 1, mono=104.0) == ["http_error"]
    assert _fired(faults, 1, mono=106.0) == [None]
    faults = FaultSet()
    window = {"start": (NOW + timedelta(hours=1)).isoformat(), "end": (NOW + timedelta(hours=2)).isoformat()}
    faults.add({"action": {"type": "http_error"}, "frequency": {"window": window}}, 0.0)
    assert faults.decide("server_post", CTX, 0.0, NOW) is None
    assert faults.decide("server_post", CTX, 0.0, NOW + timedelta(minutes=90)) is not None


def test_modifiers_stack_and_first_terminal_wins() -> None:
    faults = FaultSet()
    faults.add({"name": "slow", "action": {"type": "latency", "ms": 100}}, 0.0)
    faults.add({"name": "kv", "action": {"type": "format", "format": "kv"}}, 0.0)
    faults.add({"name": "boom", "action": {"type": "http_error", "status": 502}}, 0.0)
    faults.add({"name": "never", "action": {"type": "http_error", "status": 500}}, 0.0)
    faults.add({"name": "slower", "action": {"type": "latency", "ms": 50}}, 0.0)
    d = faults.decide("server_post", CTX, 0.0, NOW)
    assert d is not None and d.rule is not None
    assert d.rule.name == "boom" and d.name == "boom"
    assert d.fmt == "kv" and d.latency_s == pytest.approx(0.15)


def test_latency_distributions() -> None:
    faults = FaultSet()
    rule = faults.add(
        {"action": {"type": "latency", "distribution": "long_tail", "p50_ms": 10, "p99_ms": 200}}, 0
    )
    samples = sorted(rule.sample_latency() for _ in range(4000))
    assert 0.008 < samples[2000] < 0.0125
    assert 0.12 < samples[3960] < 0.33
    rule = faults.add({"action": {"type": "latency", "distribution": "uniform", "min_ms": 5, "max_ms": 6}}, 0)
    assert all(0.005 <= rule.sample_latency() <= 0.006 for _ in range(100))


@pytest.mark.parametrize(
    "spec",
    [
        {"action": {"type": "nope"}},
        {"action": {"type": "http_error", "status": 200}},
        {"action": {"type": "bad_body", "kind": "weird"}},
        {"action": {"type": "latency"}},
        {"action": {"type": "process_then_fail", "fail": "explode"}},
        {"target": "mars", "action": {"type": "http_error"}},
        {"action": {"type": "http_error"}, "probability": 2},
        {"action": {"type": "http_error"}, "match": {"colour": "red"}},
        {"action": {"type": "format", "format": "json"}},
    ],
)
def test_invalid_rules(spec: dict[str, object]) -> None:
    with pytest.raises(FaultSpecError):
        FaultSet().add(spec, 0.0)


def test_remove_and_replace_by_id() -> None:
    faults = FaultSet()
    faults.add({"id": "x", "action": {"type": "http_error"}}, 0.0)
    faults.add({"id": "x", "action": {"type": "html_error"}}, 0.0)
    assert [r.type for r in faults.rules] == ["html_error"]
    assert faults.remove("x") and not faults.remove("x")
