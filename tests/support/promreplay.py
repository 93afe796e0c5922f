"""Replay metrics a live paycore exported through the real alert rules with `promtool test rules`.

A chaos scenario scrapes `/metrics` at a few moments (idle, degraded, recovered). Each scrape
becomes a phase of synthetic series: the same metric names and labels, held for some minutes at
promtool's 15 s interval, with `job="paycore"` and an `instance` added as Prometheus would. The
alerts are then evaluated by promtool against `deploy/prometheus/{rules,alerts}.yml`. A renamed
metric or a changed label, or a threshold the real numbers never reach, fails the replay.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = (ROOT / "deploy/prometheus/rules.yml", ROOT / "deploy/prometheus/alerts.yml")
STEP_SECONDS = 15
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?$")
_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def promtool() -> str | None:
    return shutil.which("promtool")


@dataclass
class Replay:
    """Phases of scraped samples (`ChaosStack.metrics()` dicts) and the alerts expected over them."""

    prefixes: tuple[str, ...]
    instance: str = "chaos:8080"
    phases: list[tuple[dict[str, float], int]] = field(default_factory=list)
    expectations: list[tuple[float, str, bool]] = field(default_factory=list)

    def phase(self, scraped: dict[str, float], *, minutes: int) -> float:
        """Hold `scraped` for `minutes`; returns the minute at which this phase starts."""
        start = sum(m for _, m in self.phases)
        self.phases.append((scraped, minutes))
        return float(start)

    def expect(self, at_minute: float, alertname: str, *, firing: bool) -> None:
        self.expectations.append((at_minute, alertname, firing))

    # --- building the promtool test ------------------------------------------------------------
    def _series(self) -> list[dict[str, str]]:
        keys = sorted({k for scraped, _ in self.phases for k in scraped if k.startswith(self.prefixes)})
        out = []
        for key in keys:
            match = _SAMPLE.match(key)
            assert match is not None, key
            labels = match.group("labels") or ""
            extra = f'job="paycore",instance="{self.instance}"'
            series = f"{match.group('name')}{{{labels + ',' if labels else ''}{extra}}}"
            values: list[str] = []
            for scraped, minutes in self.phases:
                value = scraped.get(key)
                text = "_" if value is None else repr(float(value))  # `_`: no sample in that phase
                values.extend([text] * (minutes * 60 // STEP_SECONDS))
            out.append({"series": series, "values": " ".join(values)})
        return out

    def _value_at(self, minute: float, expr_ratio: tuple[str, str]) -> float:
        """acquired/max style ratio of two scraped families at `minute` (for `$value`)."""
        elapsed = 0
        for scraped, minutes in self.phases:
            elapsed += minutes
            if minute < elapsed:
                numerator = sum(v for k, v in scraped.items() if k.split("{")[0] == expr_ratio[0])
                denominator = sum(v for k, v in scraped.items() if k.split("{")[0] == expr_ratio[1])
                return numerator / denominator
        raise ValueError(f"minute {minute} is past the replay")

    def test_file(self, *, value_of: dict[str, tuple[str, str]]) -> dict[str, Any]:
        """The promtool test. `value_of[alertname]` names the two families whose ratio is the
        alert's `$value` (to render its annotations)."""
        alerts = {
            rule["alert"]: rule
            for group in yaml.safe_load(RULE_FILES[1].read_text())["groups"]
            for rule in group["rules"]
            if "alert" in rule
        }
        checks = []
        for minute, name, firing in self.expectations:
            rule = alerts[name]
            expected: list[dict[str, Any]] = []
            if firing:
                value = self._value_at(minute, value_of[name])
                expected.append(
                    {
                        "exp_labels": {**rule.get("labels", {}), "instance": self.instance},
                        "exp_annotations": {
                            k: render(v, instance=self.instance, value=value)
                            for k, v in rule.get("annotations", {}).items()
                        },
                    }
                )
            checks.append({"eval_time": f"{int(minute * 60)}s", "alertname": name, "exp_alerts": expected})
        return {
            "rule_files": [str(p) for p in RULE_FILES],
            "evaluation_interval": f"{STEP_SECONDS}s",
            "tests": [
                {
                    "name": "replay of scraped paycore metrics",
                    "interval": f"{STEP_SECONDS}s",
                    "input_series": self._series(),
                    "alert_rule_test": checks,
                }
            ],
        }

    def run(
        self, directory: Path, *, value_of: dict[str, tuple[str, str]]
    ) -> subprocess.CompletedProcess[str]:
        tool = promtool()
        assert tool is not None, "promtool missing (apt-get install prometheus; .ci/run installs it)"
        path = directory / "replay_test.yml"
        path.write_text(yaml.safe_dump(self.test_file(value_of=value_of), sort_keys=False))
        return subprocess.run([tool, "test", "rules", str(path)], capture_output=True, text=True, check=False)


def render(template: str, *, instance: str, value: float) -> str:
    """The two template forms paycore's pool alerts use; anything else is refused (extend here)."""

    def one(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr == "$labels.instance":
            return instance
        if expr == "$value | humanizePercentage":
            return f"{value * 100:.4g}%"
        raise ValueError(f"cannot render {{{{ {expr} }}}} in a replay")

    return _TEMPLATE.sub(one, template)
