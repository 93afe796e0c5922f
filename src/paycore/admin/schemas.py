"""Admin API schemas (msgspec Structs)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class FlagOut(msgspec.Struct, kw_only=True):
    name: str
    configured: bool
    override: bool | None
    effective: bool


class FlagList(msgspec.Struct, kw_only=True):
    data: list[FlagOut]
    pid: int


class FlagUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool


class CacheEvictionOut(msgspec.Struct, kw_only=True):
    merchant_id: uuid.UUID
    principals_evicted: int
    propagated: bool
    pid: int


class MerchantOut(msgspec.Struct, kw_only=True):
    """A merchant as cached by the answering process (no secret: the MAC is never read here)."""

    id: uuid.UUID
    slug: str
    name: str
    environment: str
    status: str
    multi_capture: bool
    timezone: str
    source: str  # cache | loaded | database (X-Bypass-Cache: true)
    pid: int


class BreakerOut(msgspec.Struct, kw_only=True):
    name: str
    state: str
    enabled: bool
    forced: str | None
    consecutive_failures: int
    window_calls: int
    window_failures: int
    open_seconds_left: float | None
    probes_admitted: int


class BreakerList(msgspec.Struct, kw_only=True):
    data: list[BreakerOut]
    pid: int


class BreakerCommandOut(msgspec.Struct, kw_only=True):
    breaker: BreakerOut
    action: str
    propagated: bool
    pid: int


class AllocationSiteOut(msgspec.Struct, kw_only=True):
    file: str
    line: int
    size_bytes: int
    count: int


class AllocationGrowthOut(msgspec.Struct, kw_only=True):
    file: str
    line: int
    size_bytes: int
    size_diff_bytes: int
    count_diff: int


class HeapSnapshotOut(msgspec.Struct, kw_only=True):
    pid: int
    taken_at: datetime
    previous_taken_at: datetime | None
    traced_current_bytes: int
    traced_peak_bytes: int
    top: list[AllocationSiteOut]
    growth_since_previous: list[AllocationGrowthOut] | None
