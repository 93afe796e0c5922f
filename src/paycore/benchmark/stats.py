"""Latency statistics of a run: exact percentiles over every sample, counts by outcome (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final

# Outcomes of a request that got no HTTP status (negative so they never collide with a status code).
TIMEOUT: Final = -1
CONNECTION_ERROR: Final = -2
CLIENT_ERROR: Final = -3
UNFINISHED: Final = -4
OUTCOME_NAMES: Final[Mapping[int, str]] = {
    TIMEOUT: "timeout",
    CONNECTION_ERROR: "connection_error",
    CLIENT_ERROR: "client_error",
    UNFINISHED: "unfinished",
}
# A sale is successful when the API answers 201 (approved).
SUCCESS_STATUS: Final = 201


def outcome_name(code: int) -> str:
    """'201', '402', 'timeout', ... — the key of a request outcome in the report."""
    return OUTCOME_NAMES.get(code, str(code))


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (the smallest sample with at least p % of samples at or below it).

    Exact over all samples, like an HDR histogram at full resolution: `p` in [0, 100];
    `sorted_values` must be sorted ascending and not empty.
    """
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    # rounded first so 99.9 % of 1000 is rank 999, not 1000 by a floating-point hair
    rank = math.ceil(round(p * len(sorted_values) / 100.0, 9))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency of a set of requests, in milliseconds."""

    count: int
    min: float
    mean: float
    stdev: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(latencies_us: Iterable[int]) -> LatencySummary | None:
    """Summary of latencies given in microseconds; None when there are none."""
    values = sorted(latencies_us)
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / n
    ms = 1000.0
    return LatencySummary(
        count=n,
        min=values[0] / ms,
        mean=mean / ms,
        stdev=math.sqrt(variance) / ms,
        p50=percentile(values, 50) / ms,
        p90=percentile(values, 90) / ms,
        p99=percentile(values, 99) / ms,
        p999=percentile(values, 99.9) / ms,
        max=values[-1] / ms,
    )


def outcome_counts(statuses: Iterable[int]) -> dict[str, int]:
    """Requests by outcome: HTTP status as text, or a client-side outcome name; sorted by key."""
    counts: dict[str, int] = {}
    for code in statuses:
        key = outcome_name(code)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True, slots=True)
class Second:
    """One second of the measured window (for the timeline and the plot)."""

    second: int
    requests: int
    ok: int
    p50_ms: float
    p99_ms: float


def timeline(
    start_offsets_us: Sequence[int], latencies_us: Sequence[int], statuses: Sequence[int]
) -> list[Second]:
    """Requests grouped by the second (of the measured window) in which they started."""
    if not len(start_offsets_us) == len(latencies_us) == len(statuses):
        raise ValueError("sample arrays differ in length")
    buckets: dict[int, tuple[list[int], int]] = {}
    for start, latency, status in zip(start_offsets_us, latencies_us, statuses, strict=True):
        second = max(start, 0) // 1_000_000
        values, ok = buckets.get(second, ([], 0))
        values.append(latency)
        buckets[second] = (values, ok + (status == SUCCESS_STATUS))
    out: list[Second] = []
    for second in sorted(buckets):
        values, ok = buckets[second]
        values.sort()
        out.append(
            Second(
                second=second,
                requests=len(values),
                ok=ok,
                p50_ms=percentile(values, 50) / 1000.0,
                p99_ms=percentile(values, 99) / 1000.0,
            )
        )
    return out
