"""The simulator fixtures (also exported for the whole suite from tests/support/sim_fixtures.py)."""

from __future__ import annotations

from tests.support.sim_fixtures import epx_sim, sim_control

__all__ = ["epx_sim", "sim_control"]
