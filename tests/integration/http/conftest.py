from __future__ import annotations

# the whole app in process (middleware, auth, DI, compression) with one sandbox merchant
from tests.integration.payment_methods.conftest import api  # noqa: F401
