"""The published OpenAPI document, fuzzed with schemathesis against a running `paycore serve`.

Schemathesis is an independent implementation: it reads `/openapi.json`, generates valid and
invalid requests for every merchant operation and checks each answer. No input is a 5xx. Every status
is one the document declares. Every body matches its declared schema and content type, including
the RFC 9457 problems. Invalid data is refused, and data the schema calls valid is not refused as
malformed. The run is bounded (`PAYCORE_FUZZ_EXAMPLES` per operation, fixed seed) and goes to
127.0.0.1 only; the admin API is left out (its own credentials)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import serve_api

pytestmark = pytest.mark.e2e

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


def st_binary() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert found, "schemathesis is a dev dependency (pip install -e '.[dev]')"
    return found


@pytest.fixture
async def fuzz_api(clean_db, epx_sim):
    """A server like `api`'s, with the rate limits off: the fuzzer sends thousands of requests."""
    async with serve_api(clean_db, epx_sim, PAYCORE_RATE_LIMIT_ENABLED="false") as served:
        yield served


async def test_schemathesis_finds_no_failure(fuzz_api, tmp_path) -> None:
    api = fuzz_api
    examples = os.environ.get("PAYCORE_FUZZ_EXAMPLES", "15")
    command = [
        st_binary(),
        "run",
        f"{api.url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        examples,
        "--seed",
        "20261127",
        "--exclude-path-regex",
        "^/admin/",
        "--header",
        f"Authorization: Bearer {api.api_key}",
        "--request-timeout",
        "10",
        "--continue-on-failure",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path
    )
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(output)  # the whole report, next to the JUnit one
    assert result.returncode == 0, output[-20000:]
