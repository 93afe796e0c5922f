"""LOG-2: every statement that writes `outbox_events` stores the originating request id — it names
its columns through `paycore.platform.outbox.OUTBOX_COLUMNS` and binds one value per column."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from paycore.platform.db import Query
from paycore.platform.outbox import OUTBOX_COLUMNS

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[3] / "src" / "paycore"
_INSERT = re.compile(r"INSERT\s+INTO\s+outbox_events\b", re.IGNORECASE)
WRITERS = {
    "paycore.payments.repository",
    "paycore.payment_methods.repository",
    "paycore.checkout.repository",
    "paycore.disputes.repository",
    "paycore.subscriptions.repository",
}


def test_every_source_file_that_inserts_events_is_known():
    found = set()
    for path in SRC.rglob("*.py"):
        if _INSERT.search(path.read_text()):
            found.add("paycore." + path.relative_to(SRC).with_suffix("").as_posix().replace("/", "."))
    assert found == WRITERS


def test_every_outbox_insert_writes_the_request_id():
    statements = []
    for name in sorted(WRITERS):
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, Query) and _INSERT.search(value.sql):
                statements.append(value)
    assert len(statements) >= 10  # payments 1, payment methods 6, checkout, disputes, subscriptions
    for query in statements:
        sql = query.sql
        assert f"INSERT INTO outbox_events ({OUTBOX_COLUMNS})" in sql, query.name
        assert OUTBOX_COLUMNS.endswith("request_id")
