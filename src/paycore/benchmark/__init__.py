"""`paycore bench`: the load benchmark (roadmap §5.1).

Modules:
- `stats`: exact latency percentiles and per-status counts (pure).
- `procfs`: CPU and memory of processes from `/proc` (parsers are pure, readers take a root path).
- `promtext`: the few Prometheus text-format samples the bench scrapes from `/metrics` (pure).
- `report`: the JSON report, the comparison with the previous report, the human summary (pure).
- `loadgen`: the asyncio/aiohttp load generator, run as its own process.
- `wrk`: the optional `wrk` driver (Lua script with unique idempotency keys).
- `stack`: starts and stops the simulator, PostgreSQL and `paycore serve` for a run.
- `runner`: one benchmark run end to end.
"""
