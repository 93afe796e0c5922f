"""A scripted loopback HTTP(S) server for the gateway client tests, plus a throwaway test CA.

The server counts TCP accepts itself (a wrapped protocol factory), so tests can assert "no
connection was opened" and "one connection served 100 requests".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Action = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    path_qs: str
    method: str
    peer: tuple[str, int]

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("ascii"), keep_blank_values=True))


@dataclass
class ScriptedServer:
    """Answers requests with scripted actions, in order; `default` once the script is used up."""

    default: Action | None = None
    ssl_context: ssl.SSLContext | None = None
    script: list[Action] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    accepted: int = 0
    request_seen: asyncio.Event = field(default_factory=asyncio.Event)
    _server: web.Server | None = None
    _listener: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> ScriptedServer:
        self._server = web.Server(self._handle, handler_cancellation=True)
        server = self._server

        def factory() -> asyncio.Protocol:
            self.accepted += 1
            return server()

        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(factory, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host = "localhost" if self.ssl_context else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}/"

    def then(self, *actions: Action) -> ScriptedServer:
        self.script.extend(actions)
        return self

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._server is not None:
            await self._server.shutdown(0.1)
        if self._listener is not None:
            await self._listener.wait_closed()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
        self.received.append(Received(body, dict(request.headers), request.path_qs, request.method, peer))
        self.request_seen.set()
        action = self.script.pop(0) if self.script else self.default
        if action is None:
            return web.Response(status=500, text="no scripted action")
        return await action(request)


# --- actions ---------------------------------------------------------------------------------------
def respond(body: bytes | str, status: int = 200, content_type: str = "text/xml") -> Action:
    data = body.encode() if isinstance(body, str) else body

    async def action(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=data, status=status, content_type=content_type)

    return action


def status(code: int, body: str = "") -> Action:
    return respond(body or f"HTTP {code}", status=code, content_type="text/plain")


def echo_xml(auth_resp: str = "00", text: str = "APPROVED", **extra: str) -> Action:
    """An EPX XML answer echoing the request's TRAN_NBR and AMOUNT (AUTH_AMOUNT = AMOUNT)."""

    async def action(request: web.BaseRequest) -> web.StreamResponse:
        form = dict(parse_qsl((await request.read()).decode("ascii")))
        fields = {
            "AUTH_RESP": auth_resp,
            "AUTH_RESP_TEXT": text,
            "AUTH_GUID": "09TESTBRIC" + form.get("TRAN_NBR", "0")[-10:],
            "AUTH_CODE": "052585" if auth_resp == "00" else "",
            "TRAN_NBR": form.get("TRAN_NBR", ""),
            "AMOUNT": form.get("AMOUNT", ""),
            "AUTH_CARD_TYPE": "V",
        }
        if auth_resp in ("00", "85"):
            fields["AUTH_AMOUNT"] = form.get("AMOUNT", "")
        fields.update(extra)
        inner = "".join(f'<FIELD KEY="{k}">{v}</FIELD>' for k, v in fields.items() if v is not None)
        return web.Response(body=f"<RESPONSE><FIELDS>{inner}</FIELDS></RESPONSE>", content_type="text/xml")

    return action


def hang(seconds: float = 3600.0) -> Action:
    async def action(request: web.BaseRequest) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(text="too late")

    return action


def reset() -> Action:
    """Read the request, then drop the connection without an answer."""

    async def action(request: web.BaseRequest) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(3600)
        return web.Response()

    return action


def then_after(seconds: float, inner: Action) -> Action:
    async def action(request: web.BaseRequest) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await inner(request)

    return action


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- TLS -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext


def make_pki(directory: Path) -> Pki:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paycore test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return Pki(ca_file=ca_file, server_context=context)
