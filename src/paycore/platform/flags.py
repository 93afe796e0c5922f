"""Kill switches (RES-11), hot-toggleable: the configured value, an optional override, the effective value.

`PAYCORE_*_ENABLED` give each switch its configured value; an administrator may override a switch at
run time (`PUT /admin/v1/flags/{flag}`, stored in `feature_flag_overrides` and propagated to every
process by NOTIFY). `degraded` on turns `webhooks`, `merchant_reporting` and `detailed_logging` off,
whatever their own values — configured or overridden.

Consumers never read the frozen `Settings` fields: they hold a *switch* (`flags.switch("webhooks")`,
a zero-argument callable) and call it at use time, so an override takes effect on the next call.
`effective_flags` is the pure rule; `FeatureFlags` is the process's current state plus the
`feature_flag_enabled{flag}` gauge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from paycore.platform.observability import metrics as m

if TYPE_CHECKING:
    from paycore.config import Settings

FLAGS: Final = (
    "cb",
    "merchant_cache",
    "pm_cache",
    "compression",
    "rate_limit",
    "webhooks",
    "merchant_reporting",
    "detailed_logging",
    "degraded",
)
DEGRADED: Final = "degraded"
TURNED_OFF_BY_DEGRADED: Final = frozenset({"webhooks", "merchant_reporting", "detailed_logging"})

Switch = Callable[[], bool]


def configured_flags(settings: Settings) -> dict[str, bool]:
    """The switches as the environment sets them (before overrides and before `degraded`)."""
    return {
        "cb": settings.cb_enabled,
        "merchant_cache": settings.merchant_cache_enabled,
        "pm_cache": settings.pm_cache_enabled,
        "compression": settings.compression_enabled,
        "rate_limit": settings.rate_limit_enabled,
        "webhooks": settings.webhooks_enabled,
        "merchant_reporting": settings.merchant_reporting_enabled,
        "detailed_logging": settings.detailed_logging_enabled,
        "degraded": settings.degraded,
    }


def effective_flags(configured: Mapping[str, bool], overrides: Mapping[str, bool]) -> dict[str, bool]:
    """Override wins over configuration; then `degraded` turns its three switches off.
    Overrides of unknown flags are ignored (a newer release may have written them)."""
    values = {name: bool(overrides.get(name, configured[name])) for name in FLAGS}
    if values[DEGRADED]:
        for name in TURNED_OFF_BY_DEGRADED:
            values[name] = False
    return values


@dataclass(frozen=True, slots=True)
class FlagState:
    name: str
    configured: bool
    override: bool | None
    effective: bool


class FeatureFlags:
    """The process's kill switches. Reads are a dict lookup; `apply` replaces every override at once."""

    def __init__(self, configured: Mapping[str, bool]) -> None:
        missing = [name for name in FLAGS if name not in configured]
        if missing:
            raise ValueError(f"configured value missing for {', '.join(missing)}")
        self.configured: dict[str, bool] = {name: bool(configured[name]) for name in FLAGS}
        self.overrides: dict[str, bool] = {}
        self._effective = effective_flags(self.configured, self.overrides)

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureFlags:
        return cls(configured_flags(settings))

    def is_on(self, name: str) -> bool:
        return self._effective[name]

    def switch(self, name: str) -> Switch:
        """A zero-argument reader of one flag's effective value, for a consumer to call at use time."""
        if name not in self._effective:
            raise KeyError(name)
        effective = self._effective  # replaced in place by `apply`, never rebound

        def read() -> bool:
            return effective[name]

        return read

    def apply(self, overrides: Mapping[str, bool]) -> dict[str, bool]:
        """Replace the overrides (unknown names are dropped); returns the flags whose effective value
        changed (new value) and re-exports the gauge."""
        self.overrides = {name: bool(value) for name, value in overrides.items() if name in self.configured}
        new = effective_flags(self.configured, self.overrides)
        changed = {name: value for name, value in new.items() if self._effective[name] != value}
        self._effective.update(new)
        self.export()
        return changed

    def effective(self) -> dict[str, bool]:
        return dict(self._effective)

    def states(self) -> list[FlagState]:
        return [
            FlagState(name, self.configured[name], self.overrides.get(name), self._effective[name])
            for name in FLAGS
        ]

    def export(self) -> dict[str, bool]:
        """`feature_flag_enabled{flag}`: 1 on, 0 off (the effective value)."""
        for name, on in self._effective.items():
            m.FEATURE_FLAG.labels(name).set(1 if on else 0)
        return dict(self._effective)


def constant(value: bool) -> Switch:
    """A switch that never changes (tests, tools)."""

    def read() -> bool:
        return value

    return read
