"""Fault rules (epx-protocol.md §10.3): which requests misbehave, how, and how often.

A rule is JSON:

    {"name": "ptf-503", "target": "server_post",
     "match": {"merchant": "900300", "tran_type": ["CCE1", "CCE2"], "tran_nbr": 1234567890,
               "amount": "10.00", "path": "/"},
     "action": {"type": "process_then_fail", "fail": 503},
     "frequency": {"probability": 0.5, "first": 3, "skip": 0, "for_seconds": 10,
                   "window": {"start": "...Z", "end": "...Z"}},
     "seed": 7}

Rules are evaluated in insertion order. `latency` and `format` actions are modifiers: every firing
one applies. The first firing rule with any other action is the request's fault. Pure apart from the
monotonic time passed in; sampling uses a per-rule seeded RNG.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from paycore.epx_sim.wire import BAD_BODY_KINDS, RESPONSE_FORMATS

TARGETS: Final = frozenset(
    {"server_post", "key_exchange", "browser_post", "redirect", "north", "ach_returns", "reporting", "any"}
)
MODIFIERS: Final = frozenset({"latency", "format"})
FAIL_MODES: Final = frozenset({"hang", "reset", "close", "refuse"})
# action type -> whether the gateway processes the request by default
ACTIONS: Final[dict[str, bool]] = {
    "latency": True,
    "format": True,
    "timeout": False,
    "process_then_fail": True,
    "fail_before_process": False,
    "http_error": False,
    "html_error": False,
    "slow_body": True,
    "bad_body": True,
    "bp_error_page": False,
    "bp_decline": False,
    "bp_140": False,
    "bp_tamper": True,
    "bp_duplicate": True,
    "bp_get": True,
    "north_status": False,
    "north_page_cap": False,
}
_Z99: Final = 2.3263478740408408  # standard normal quantile of 0.99


class FaultSpecError(ValueError):
    """An invalid rule (answered with HTTP 400 by the control API)."""


@dataclass(slots=True)
class MatchContext:
    merchant: str | None = None
    tran_type: str | None = None
    tran_nbr: str | None = None
    amount: str | None = None
    path: str = "/"


@dataclass(slots=True, eq=False)
class FaultRule:
    id: str
    name: str
    target: str
    match: dict[str, frozenset[str]]
    action: dict[str, Any]
    probability: float | None
    first: int | None
    skip: int
    for_seconds: float | None
    window_start: datetime | None
    window_end: datetime | None
    seed: int
    created_mono: float
    rng: random.Random
    spec: dict[str, Any]
    matches: int = 0
    fired: int = 0

    @property
    def type(self) -> str:
        return str(self.action["type"])

    @property
    def process(self) -> bool:
        """Whether the gateway commits the request before misbehaving."""
        default = ACTIONS[self.type]
        if self.type == "timeout" and self.action.get("after_s") is not None:
            default = True  # a late answer: processed on arrival, answered after `after_s`
        return bool(self.action.get("process", default))

    def to_json(self) -> dict[str, Any]:
        return {**self.spec, "id": self.id, "name": self.name, "matches": self.matches, "fired": self.fired}

    def sample_latency(self) -> float:
        """Seconds of added latency for a `latency` action."""
        a = self.action
        dist = a.get("distribution", "fixed")
        if dist == "uniform":
            return self.rng.uniform(float(a["min_ms"]), float(a["max_ms"])) / 1000.0
        if dist == "long_tail":
            p50 = float(a["p50_ms"])
            p99 = float(a["p99_ms"])
            sigma = math.log(p99 / p50) / _Z99
            return self.rng.lognormvariate(math.log(p50), sigma) / 1000.0
        return float(a.get("ms", 0.0)) / 1000.0


@dataclass(slots=True)
class FaultDecision:
    latency_s: float = 0.0
    rule: FaultRule | None = None
    fmt: str | None = None
    names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        if self.rule is not None:
            return self.rule.name
        return self.names[0] if self.names else None


def _as_set(value: Any) -> frozenset[str]:
    if isinstance(value, list | tuple | set | frozenset):
        return frozenset(str(v) for v in value)
    return frozenset({str(value)})


def _parse_time(value: Any) -> datetime:
    text = str(value).replace("Z", "+00:00")
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise FaultSpecError("window times must carry a time zone (e.g. ...Z)")
    return at


def _check_action(action: Any) -> dict[str, Any]:
    if not isinstance(action, dict) or "type" not in action:
        raise FaultSpecError("action must be an object with a 'type'")
    kind = action["type"]
    if kind not in ACTIONS:
        raise FaultSpecError(f"unknown action type {kind!r}; expected one of {sorted(ACTIONS)}")
    a = dict(action)
    if kind == "latency":
        dist = a.get("distribution", "fixed")
        need = {"fixed": ("ms",), "uniform": ("min_ms", "max_ms"), "long_tail": ("p50_ms", "p99_ms")}.get(
            dist
        )
        if need is None:
            raise FaultSpecError("latency distribution must be fixed, uniform or long_tail")
        for key in need:
            if not isinstance(a.get(key), int | float) or a[key] < 0:
                raise FaultSpecError(f"latency {dist} needs a non-negative number {key!r}")
        if dist == "long_tail" and not 0 < a["p50_ms"] <= a["p99_ms"]:
            raise FaultSpecError("long_tail needs 0 < p50_ms <= p99_ms")
        if dist == "uniform" and a["min_ms"] > a["max_ms"]:
            raise FaultSpecError("uniform needs min_ms <= max_ms")
    elif kind == "format":
        if a.get("format") not in RESPONSE_FORMATS:
            raise FaultSpecError(f"format must be one of {RESPONSE_FORMATS}")
    elif kind in ("process_then_fail", "fail_before_process"):
        fail = a.get("fail", "reset" if kind == "fail_before_process" else 503)
        if not (fail in FAIL_MODES or (isinstance(fail, int) and 400 <= fail <= 599)):
            raise FaultSpecError("fail must be hang, reset, close, refuse or an HTTP status 400-599")
        a["fail"] = fail
    elif kind == "http_error":
        status = a.get("status", 503)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise FaultSpecError("http_error needs an HTTP status 400-599")
        a["status"] = status
    elif kind == "bad_body":
        if a.get("kind") not in BAD_BODY_KINDS:
            raise FaultSpecError(f"bad_body kind must be one of {sorted(BAD_BODY_KINDS)}")
    elif kind == "slow_body":
        rate = a.get("bytes_per_s", 1)
        if not isinstance(rate, int | float) or rate <= 0:
            raise FaultSpecError("slow_body bytes_per_s must be positive")
    elif kind == "bp_tamper":
        if not a.get("field") and a.get("mac", "keep") == "keep":
            raise FaultSpecError("bp_tamper needs a 'field' to change or a 'mac' mode (drop, bad)")
        if a.get("mac", "keep") not in ("keep", "drop", "bad", "recompute"):
            raise FaultSpecError("bp_tamper mac must be keep, drop, bad or recompute")
    elif kind == "north_page_cap" and (not isinstance(a.get("cap"), int) or a["cap"] < 0):
        raise FaultSpecError("north_page_cap needs a non-negative integer 'cap'")
    for key in ("after_s",):
        if key in a and (not isinstance(a[key], int | float) or a[key] < 0):
            raise FaultSpecError(f"{key} must be a non-negative number")
    if "process" in a and not isinstance(a["process"], bool):
        raise FaultSpecError("process must be true or false")
    return a


class FaultSet:
    """The active rules."""

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self.rules: list[FaultRule] = []
        self._next_id = 0

    def clear(self) -> None:
        self.rules = []

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def add(self, spec: Any, mono_now: float) -> FaultRule:
        if not isinstance(spec, dict):
            raise FaultSpecError("a fault rule is a JSON object")
        self._next_id += 1
        rule_id = str(spec.get("id") or f"f{self._next_id}")
        target = spec.get("target", "server_post")
        if target not in TARGETS:
            raise FaultSpecError(f"unknown target {target!r}; expected one of {sorted(TARGETS)}")
        action = _check_action(spec.get("action"))
        match_spec = spec.get("match") or {}
        if not isinstance(match_spec, dict):
            raise FaultSpecError("match must be an object")
        unknown = set(match_spec) - {"merchant", "tran_type", "tran_nbr", "amount", "path"}
        if unknown:
            raise FaultSpecError(f"unknown match keys {sorted(unknown)}")
        match = {k: _as_set(v) for k, v in match_spec.items() if v is not None}
        if "tran_nbr" in match:
            match["tran_nbr"] = frozenset(_strip_zeros(v) for v in match["tran_nbr"])
        freq = dict(spec.get("frequency") or {})
        for key in ("probability", "first", "skip", "for_seconds", "window"):
            if key in spec and key not in freq:
                freq[key] = spec[key]
        probability = freq.get("probability")
        if probability is not None and not (isinstance(probability, int | float) and 0 <= probability <= 1):
            raise FaultSpecError("probability must be between 0 and 1")
        first = freq.get("first")
        if first is not None and (not isinstance(first, int) or first < 0):
            raise FaultSpecError("first must be a non-negative integer")
        skip = freq.get("skip", 0)
        if not isinstance(skip, int) or skip < 0:
            raise FaultSpecError("skip must be a non-negative integer")
        for_seconds = freq.get("for_seconds")
        if for_seconds is not None and (not isinstance(for_seconds, int | float) or for_seconds < 0):
            raise FaultSpecError("for_seconds must be a non-negative number")
        window = freq.get("window")
        start = end = None
        if window is not None:
            if not isinstance(window, dict):
                raise FaultSpecError("window must be an object with start and/or end")
            try:
                start = _parse_time(window["start"]) if window.get("start") else None
                end = _parse_time(window["end"]) if window.get("end") else None
            except ValueError as exc:
                raise FaultSpecError(f"invalid window time: {exc}") from None
        seed = spec.get("seed")
        if seed is None:
            seed = self.seed * 1_000_003 + self._next_id
        if not isinstance(seed, int):
            raise FaultSpecError("seed must be an integer")
        rule = FaultRule(
            id=rule_id,
            name=str(spec.get("name") or f"{action['type']}-{rule_id}"),
            target=target,
            match=match,
            action=action,
            probability=None if probability is None else float(probability),
            first=first,
            skip=skip,
            for_seconds=None if for_seconds is None else float(for_seconds),
            window_start=start,
            window_end=end,
            seed=seed,
            created_mono=mono_now,
            rng=random.Random(seed),
            spec={**spec, "id": rule_id, "action": action, "target": target},
        )
        self.rules = [r for r in self.rules if r.id != rule_id]
        self.rules.append(rule)
        return rule

    def decide(
        self, target: str, ctx: MatchContext, mono_now: float, sim_now: datetime
    ) -> FaultDecision | None:
        """The faults that fire for one request (None: behave normally)."""
        decision: FaultDecision | None = None
        for rule in self.rules:
            if rule.target not in (target, "any"):
                continue
            if not _matches(rule.match, ctx):
                continue
            is_modifier = rule.type in MODIFIERS
            if not is_modifier and decision is not None and decision.rule is not None:
                continue  # a terminal fault is already chosen; later terminal rules do not count
            rule.matches += 1
            if not _fires(rule, mono_now, sim_now):
                continue
            rule.fired += 1
            if decision is None:
                decision = FaultDecision()
            decision.names.append(rule.name)
            if rule.type == "latency":
                decision.latency_s += rule.sample_latency()
            elif rule.type == "format":
                decision.fmt = str(rule.action["format"])
            else:
                decision.rule = rule
        return decision


def _matches(match: dict[str, frozenset[str]], ctx: MatchContext) -> bool:
    for key, allowed in match.items():
        if key == "merchant":
            value = ctx.merchant
        elif key == "tran_type":
            value = ctx.tran_type
        elif key == "tran_nbr":
            value = None if ctx.tran_nbr is None else _strip_zeros(ctx.tran_nbr)
        elif key == "amount":
            value = ctx.amount
        else:
            value = ctx.path
            if value is not None and any(a.endswith("*") and value.startswith(a[:-1]) for a in allowed):
                continue
        if value is None or value not in allowed:
            return False
    return True


def _strip_zeros(text: str) -> str:
    return text.lstrip("0") or "0"


def _fires(rule: FaultRule, mono_now: float, sim_now: datetime) -> bool:
    if rule.matches <= rule.skip:
        return False
    if rule.first is not None and rule.fired >= rule.first:
        return False
    if rule.for_seconds is not None and mono_now - rule.created_mono > rule.for_seconds:
        return False
    if rule.window_start is not None and sim_now < rule.window_start:
        return False
    if rule.window_end is not None and sim_now >= rule.window_end:
        return False
    return rule.probability is None or rule.rng.random() < rule.probability
