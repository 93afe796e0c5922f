"""The few Prometheus text-format samples the bench reads from the server's `/metrics` (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = 0.0


def _parse_labels(text: str) -> dict[str, str]:
    """`a="x",b="y\\"z"` → {'a': 'x', 'b': 'y"z'} (the exposition format's escapes: \\\\, \\", \\n)."""
    labels: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        if i >= n:
            break
        eq = text.index("=", i)
        key = text[i:eq].strip()
        if eq + 1 >= n or text[eq + 1] != '"':
            raise ValueError(f"label {key!r} has no quoted value")
        j = eq + 2
        chars: list[str] = []
        while j < n and text[j] != '"':
            if text[j] == "\\" and j + 1 < n:
                nxt = text[j + 1]
                chars.append("\n" if nxt == "n" else nxt)
                j += 2
            else:
                chars.append(text[j])
                j += 1
        if j >= n:
            raise ValueError("unterminated label value")
        labels[key] = "".join(chars)
        i = j + 1
    return labels


def parse(text: str) -> list[Sample]:
    """Every sample line of a text exposition; comments and malformed lines are skipped."""
    out: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if "{" in line:
                brace = line.index("{")
                close = line.rindex("}")
                name = line[:brace]
                labels = _parse_labels(line[brace + 1 : close])
                rest = line[close + 1 :].split()
            else:
                parts = line.split()
                name, labels, rest = parts[0], {}, parts[1:]
            out.append(Sample(name, labels, float(rest[0])))
        except (ValueError, IndexError):
            continue
    return out


def _matches(sample: Sample, name: str, labels: Mapping[str, str]) -> bool:
    return sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())


def total(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """Sum of the samples named `name` whose labels include `labels`; None when there are none."""
    values = [s.value for s in samples if _matches(s, name, labels)]
    return sum(values) if values else None


def by_label(samples: Iterable[Sample], name: str, *labels: str) -> dict[str, float]:
    """Samples named `name` summed by the values of `labels` (joined with '/')."""
    out: dict[str, float] = {}
    for s in samples:
        if s.name == name:
            key = "/".join(s.labels.get(label, "") for label in labels)
            out[key] = out.get(key, 0.0) + s.value
    return out


def counter_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Growth of counters between two scrapes (a key new in `after` counts from zero)."""
    return {k: max(v - before.get(k, 0.0), 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram's cumulative buckets (upper bound → count), sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made between `earlier` and this one (counters only grow)."""
        before = dict(earlier.buckets)
        return Histogram(
            buckets=tuple((le, max(c - before.get(le, 0.0), 0.0)) for le, c in self.buckets),
            sum=max(self.sum - earlier.sum, 0.0),
            count=max(self.count - earlier.count, 0.0),
        )

    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """`histogram_quantile` as Prometheus computes it: linear within the bucket; an answer in
        the +Inf bucket is the highest finite bound."""
        return bucket_quantile(q, self.buckets)


def histogram(samples: Iterable[Sample], name: str, **labels: str) -> Histogram | None:
    """The histogram `name` summed over every label set that includes `labels`."""
    buckets: dict[float, float] = {}
    total_sum = 0.0
    total_count = 0.0
    seen = False
    for s in samples:
        if s.name == name + "_bucket" and _matches(s, s.name, labels) and "le" in s.labels:
            le = math.inf if s.labels["le"] in ("+Inf", "Inf", "inf") else float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
            seen = True
        elif _matches(s, name + "_sum", labels):
            total_sum += s.value
        elif _matches(s, name + "_count", labels):
            total_count += s.value
    if not seen:
        return None
    return Histogram(tuple(sorted(buckets.items())), total_sum, total_count)


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Quantile `q` (0..1) from cumulative buckets sorted by upper bound."""
    if not buckets:
        return None
    count = buckets[-1][1]
    if count <= 0:
        return None
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower_bound
            in_bucket = cumulative - lower_count
            if in_bucket <= 0:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = le, cumulative
    return lower_bound
