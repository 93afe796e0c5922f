"""pytest fixtures for the EPX simulator. Import them into a conftest:

    from tests.support.sim_fixtures import epx_sim, sim_control  # noqa: F401

* `epx_sim` (session): one simulator subprocess per xdist worker, on free ports. Imported into
  several conftests, it is still one process (shared, stopped when its last user finishes).
* `sim_control` (function): a `SimControl` for the test. Before and after each test it clears the
  fault rules and restores settings, the simulated clock and the main listener; the ledger and the
  simulator's transactions are kept (tests use unique TRAN_NBRs). A simulator killed by a test is
  restarted (its state is then empty).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.sim import SimControl, SimProcess, start_simulator

_shared: SimProcess | None = None
_users = 0


@pytest.fixture(scope="session")
def epx_sim() -> Iterator[SimProcess]:
    global _shared, _users
    if _shared is None:
        _shared = start_simulator(latency_ms=0, seed=1)
    elif not _shared.alive():
        _shared.restart()
    sim = _shared
    _users += 1
    try:
        yield sim
    finally:
        _users -= 1
        if _users == 0:
            sim.close()
            _shared = None


@pytest.fixture
async def sim_control(epx_sim: SimProcess) -> AsyncIterator[SimControl]:
    if not epx_sim.alive():
        epx_sim.restart()
    async with SimControl(epx_sim.control_url) as control:
        await control.reset_test_state()
        yield control
        if epx_sim.alive():
            await control.reset_test_state()
