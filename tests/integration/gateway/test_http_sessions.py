"""API-1 / P2-3: pooled outbound sessions — TLS verification, connection reuse and caps."""

from __future__ import annotations

import asyncio
import ssl
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from paycore.config import load_settings
from paycore.gateway.epx import wire
from paycore.gateway.epx.client import CallTrace, EpxServerPostClient
from paycore.gateway.port import GatewayRequest, MerchantKey
from paycore.platform.http import (
    ClientProfile,
    RequestProbe,
    create_session,
    gateway_profile,
    reporting_profile,
    tls_context,
)
from paycore.platform.resilience.breaker import CircuitBreaker
from tests.integration.gateway.loopback import Pki, ScriptedServer, echo_xml, make_pki, then_after

pytestmark = pytest.mark.integration

MERCHANT = MerchantKey(cust_nbr="9001", merch_nbr="900300", dba_nbr="2", terminal_nbr="77")


def sale() -> GatewayRequest:
    return wire.for_sale(
        merchant=MERCHANT,
        tran_nbr=wire.tran_nbr_for(uuid.uuid4()),
        amount_cents=1000,
        storage_bric="09LMNOPQRSTUVWXYZ012",
        at=datetime.now(UTC),
    )


def client_for(session: aiohttp.ClientSession, url: str) -> EpxServerPostClient:
    breaker = CircuitBreaker(f"test_tls_{uuid.uuid4().hex[:8]}")
    return EpxServerPostClient(
        session, url, breaker, attempt_timeout=2.0, call_timeout=5.0, backoff_base=0.01
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[ScriptedServer]:
    server = await ScriptedServer(ssl_context=pki.server_context, default=echo_xml("00")).start()
    yield server
    await server.close()


def profile(ca_file: Path | None, name: str = "test_tls") -> ClientProfile:
    return ClientProfile(
        name=name,
        limit=50,
        limit_per_host=50,
        keepalive_timeout=90.0,
        connect_timeout=2.0,
        read_timeout=5.0,
        total_timeout=None,
        ca_file=str(ca_file) if ca_file else None,
    )


async def test_gateway_connection_reuse_over_tls(tls_server: ScriptedServer, pki: Pki) -> None:
    async with create_session(profile(pki.ca_file)) as session:
        client = client_for(session, tls_server.url)
        for _ in range(100):
            assert (await client.process(sale())).outcome == "approved"
    assert tls_server.accepted == 1 and len(tls_server.received) == 100
    assert len({r.peer for r in tls_server.received}) == 1


async def test_unknown_ca_is_refused_and_nothing_is_sent(tls_server: ScriptedServer) -> None:
    async with create_session(profile(None)) as session:
        trace = CallTrace()
        result = await client_for(session, tls_server.url).process(sale(), trace=trace)
    assert (result.outcome, result.error_code) == ("failed", "gateway_unreachable")
    assert not trace.may_have_reached_gateway
    assert tls_server.received == []


async def test_host_name_is_verified(tls_server: ScriptedServer, pki: Pki) -> None:
    # Trusted CA, but the certificate does not name the host we verify against: refused.
    async with create_session(profile(pki.ca_file)) as session:
        probe = RequestProbe()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.post(
                tls_server.url,
                data=b"x",
                server_hostname="gateway.example",
                trace_request_ctx=probe,
                allow_redirects=False,
            )
        assert probe.tracked and not probe.headers_sent and probe.provably_not_sent
    assert tls_server.received == []


async def test_tls11_refused(pki: Pki, tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this OpenSSL cannot serve TLS 1.1: {exc}")
    context.load_cert_chain(*_server_files(pki))
    server = await ScriptedServer(ssl_context=context, default=echo_xml("00")).start()
    try:
        async with create_session(profile(pki.ca_file)) as session:
            result = await client_for(session, server.url).process(sale())
        assert (result.outcome, result.error_code) == ("failed", "gateway_unreachable")
        assert server.received == []
    finally:
        await server.close()


def _server_files(pki: Pki) -> tuple[Path, Path]:
    return pki.ca_file.parent / "server.pem", pki.ca_file.parent / "server.key"


def test_tls_context_policy(pki: Pki) -> None:
    context = tls_context(str(pki.ca_file))
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert tls_context().verify_mode is ssl.CERT_REQUIRED


async def test_profiles_follow_the_client_table() -> None:
    settings = load_settings({"PAYCORE_ENV": "test"})
    gateway = gateway_profile(settings)
    assert (gateway.limit, gateway.limit_per_host, gateway.keepalive_timeout) == (50, 50, 90.0)
    assert (gateway.connect_timeout, gateway.read_timeout) == (5.0, 10.0)
    reporting = reporting_profile(settings)
    assert (reporting.limit, reporting.limit_per_host, reporting.keepalive_timeout) == (100, 50, 90.0)
    assert (reporting.connect_timeout, reporting.read_timeout, reporting.total_timeout) == (10.0, 30.0, 30.0)
    async with create_session(gateway) as session:
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert (connector.limit, connector.limit_per_host) == (50, 50)
        assert session.timeout.connect == 5.0 and session.timeout.sock_read == 10.0
        assert session.timeout.total == 10.0


async def test_gateway_connection_cap() -> None:
    settings = load_settings({"PAYCORE_ENV": "test"})
    server = await ScriptedServer(default=then_after(0.2, echo_xml("00"))).start()
    try:
        async with create_session(gateway_profile(settings)) as session:
            client = client_for(session, server.url)
            results = await asyncio.gather(*(client.process(sale()) for _ in range(60)))
        assert all(r.outcome == "approved" for r in results)
        assert server.accepted <= 50
    finally:
        await server.close()
