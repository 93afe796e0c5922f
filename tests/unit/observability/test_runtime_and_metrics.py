"""RES-M6 runtime metrics, the catalogue, bounded merchant labels, multiprocess helpers."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from paycore.config import ConfigError, load_settings
from paycore.payments.metrics import PaymentMetrics
from paycore.platform.observability import metrics as m
from paycore.platform.observability import runtime
from paycore.platform.tasks import TaskSupervisor

pytestmark = pytest.mark.unit


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_event_loop_lag_sees_a_blocked_loop() -> None:
    probe = runtime.EventLoopLag(interval=0.05)
    quiet = await probe.measure()

    async def blocker() -> None:
        await asyncio.sleep(0.01)
        time.sleep(0.2)  # blocks the loop on purpose

    task = asyncio.get_running_loop().create_task(blocker())
    lagged = await probe.measure()
    await task
    assert quiet < 0.1
    assert lagged >= 0.15
    assert _value("event_loop_lag_seconds") == pytest.approx(lagged)


def test_gc_pauses_are_timed_per_generation() -> None:
    runtime.install_gc_callbacks()
    runtime.install_gc_callbacks()  # idempotent
    try:
        runtime.flush_gc_pauses()
        before = _value("python_gc_pause_seconds_count", {"generation": "2"})
        gc.collect()
        # never observed inside the collection (prometheus_client's value lock may be held there:
        # a deadlock in multiprocess mode); the sampler observes the queued pauses
        assert _value("python_gc_pause_seconds_count", {"generation": "2"}) == before
        assert runtime.flush_gc_pauses() >= 1
        assert _value("python_gc_pause_seconds_count", {"generation": "2"}) == before + 1
        assert sum(1 for cb in gc.callbacks if isinstance(cb, runtime._GcTimer)) == 1
    finally:
        runtime.uninstall_gc_callbacks()


def test_the_gc_callback_never_takes_a_metric_lock() -> None:
    """A collection may start while prometheus_client holds a value lock (in multiprocess mode one
    lock serves every metric): a callback that observed there deadlocked a server worker."""
    import threading

    timer = runtime._GcTimer()
    lock = timer.children["2"]._sum._lock  # type: ignore[attr-defined]
    finished = threading.Event()

    def collect() -> None:
        timer("start", {"generation": 2})
        timer("stop", {"generation": 2})
        finished.set()

    with lock:  # as if the collection had interrupted a metric update
        thread = threading.Thread(target=collect, daemon=True)
        thread.start()
        assert finished.wait(2.0), "the GC callback waited for a metric lock"
    assert timer.flush() == 1


async def test_runtime_monitors_are_supervised_and_set_the_task_gauge() -> None:
    supervisor = TaskSupervisor()
    try:
        runtime.start_runtime_monitors(supervisor, sample_interval=0.01)
        assert supervisor.count("event_loop_lag") == 1 and supervisor.count("runtime_metrics") == 1
        await asyncio.sleep(0.05)
        assert _value("asyncio_tasks") >= 2
    finally:
        await supervisor.cancel_all()
        runtime.uninstall_gc_callbacks()
    assert supervisor.count() == 0


def test_catalogue_families_exist() -> None:
    names = m.family_sample_names()
    for name in (
        "payment_transactions_total",
        "payment_amount_cents_total",
        "payment_processing_duration_seconds_bucket",
        "payment_gateway_responses_total",
        "payment_declines_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_retries_total",
        "circuit_breaker_state",
        "epx_circuit_breaker_state",
        "circuit_breaker_transitions_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "db_pool_size",
        "db_pool_idle_connections",
        "db_pool_acquired_connections",
        "db_pool_waiting_acquires",
        "db_pool_acquire_duration_seconds_bucket",
        "db_query_duration_seconds_bucket",
        "ach_returns_total",
        "ach_verifications_total",
        "event_loop_lag_seconds",
        "python_gc_pause_seconds_bucket",
        "asyncio_tasks",
        "feature_flag_enabled",
        "log_messages_total",
        "log_records_dropped_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ):
        assert name in names, name


def test_http_buckets_have_the_slo_edges() -> None:
    assert {0.1, 0.5, 2} <= set(m.HTTP_DURATION._upper_bounds)
    assert 2 in m.PAYMENT_DURATION._upper_bounds  # the latency SLO's `le="2"` bucket


def test_merchant_label_is_bounded_to_the_configured_slugs() -> None:
    metrics = PaymentMetrics(frozenset({"acme"}))
    assert metrics.merchant_label("acme") == "acme"
    assert metrics.merchant_label("globex") == "other"
    before = _value("payment_declines_total", {"payment_type": "card", "category": "hard_decline"})
    metrics.record(
        merchant_slug="globex",
        payment_type="card",
        transaction_type="sale",
        status="declined",
        amount=10050,
        currency="USD",
        duration=0.1,
        decline_category="hard_decline",
    )
    labels = {"merchant": "other", "payment_type": "card", "transaction_type": "sale", "status": "declined"}
    assert _value("payment_transactions_total", labels) >= 1
    assert (
        _value("payment_declines_total", {"payment_type": "card", "category": "hard_decline"}) == before + 1
    )


def test_merchant_labels_setting_is_capped_at_50() -> None:
    slugs = ",".join(f"m{i}" for i in range(50))
    assert (
        len(
            load_settings(
                {"PAYCORE_ENV": "test", "PAYCORE_METRICS_MERCHANT_LABELS": slugs}
            ).metrics_merchant_labels
        )
        == 50
    )
    with pytest.raises(ConfigError, match="PAYCORE_METRICS_MERCHANT_LABELS"):
        load_settings({"PAYCORE_ENV": "test", "PAYCORE_METRICS_MERCHANT_LABELS": slugs + ",one-more"})


def test_dead_workers_live_gauges_are_reaped(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above pid_max on this machine: never alive
    alive = os.getpid()
    for name in (
        f"gauge_livesum_{dead_pid}.db",
        f"gauge_liveall_{dead_pid}.db",
        f"gauge_livesum_{alive}.db",
        f"counter_{dead_pid}.db",
    ):
        (tmp_path / name).write_bytes(b"")
    assert m.reap_dead_processes(str(tmp_path)) == [dead_pid]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f"counter_{dead_pid}.db", f"gauge_livesum_{alive}.db"]  # counters keep counting


def test_clean_multiprocess_dir(tmp_path: Path) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"")
    (tmp_path / "keep.txt").write_text("x")
    m.clean_multiprocess_dir(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_family_sample_names_of_a_registry() -> None:
    registry = CollectorRegistry()
    Counter("demo_things", "x", ["a"], registry=registry)
    names = m.family_sample_names(registry)
    assert {"demo_things_total", "demo_things_created"} <= names


def test_serve_prepares_a_clean_metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    from paycore.commands import prepare_metrics_dir

    methods: list[str] = []
    monkeypatch.setattr(
        multiprocessing, "set_start_method", lambda method, force=False: methods.append(method)
    )
    (tmp_path / "gauge_livesum_1.db").write_bytes(b"")
    (tmp_path / "counter_2.db").write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert prepare_metrics_dir() == str(tmp_path)
    assert list(tmp_path.iterdir()) == []
    # prometheus_client is already imported here: workers must be spawned, not forked
    assert methods == ["spawn"]
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    created = prepare_metrics_dir()  # a fresh directory when none is configured
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == created and os.path.isdir(created)
    os.rmdir(created)


def test_feature_flags_are_exported_with_degraded_mode_applied() -> None:
    normal = load_settings({"PAYCORE_ENV": "test"})
    flags = runtime.export_feature_flags(normal)
    on = ("cb", "merchant_cache", "pm_cache", "compression", "webhooks", "merchant_reporting")
    assert all(flags[k] for k in on) and not flags["detailed_logging"] and not flags["degraded"]
    assert _value("feature_flag_enabled", {"flag": "webhooks"}) == 1
    degraded = load_settings({"PAYCORE_ENV": "test", "PAYCORE_DEGRADED": "true"})
    flags = runtime.export_feature_flags(degraded)
    assert flags["degraded"] and not flags["webhooks"] and not flags["merchant_reporting"]
    assert not flags["detailed_logging"] and flags["cb"]
    assert _value("feature_flag_enabled", {"flag": "webhooks"}) == 0
    assert _value("feature_flag_enabled", {"flag": "degraded"}) == 1
