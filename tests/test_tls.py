"""HTTPS for ``tongbao serve`` (SEC-2): a real server process with a self-signed
certificate and two worker processes speaks TLS 1.2 and 1.3 only, and refuses
older protocols and plain HTTP; a broken TLS set-up is refused at start-up,
before anything is served.

One server (with workers, the harder case: each worker process rebuilds the
TLS context from the picklable :class:`TlsFiles`) keeps this file near 10 s;
the single-process path shares all of ``serve``'s TLS options and is checked
through uvicorn's own configuration loading."""

from __future__ import annotations

import base64
import contextlib
import os
import pickle
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tongbao import errors
from tongbao.api.hardening import TlsFiles, server_tls_context, tls_files
from tongbao.config import Settings

from .test_cli import invoke

# The installed command, next to the interpreter running the tests.
TONGBAO = Path(sys.executable).parent / "tongbao"


@dataclass(frozen=True)
class KeyPair:
    certfile: Path
    keyfile: Path


def make_key_pair(where: Path, name: str = "server") -> KeyPair:
    """A self-signed certificate for ``localhost`` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = KeyPair(where / f"{name}.crt", where / f"{name}.key")
    pair.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.keyfile.chmod(0o600)
    return pair


def client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that speaks exactly ``version``. For TLS 1.1 it also lowers its
    own OpenSSL security level, so that a refusal can only be the server's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed; the protocol is under test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, rightly
        if version < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = ssl.TLSVersion.TLSv1
        else:
            context.minimum_version = version
        context.maximum_version = version
    return context


def https_get(port: int, version: ssl.TLSVersion, path: str = "/healthz") -> tuple[str, bytes]:
    """(negotiated protocol, raw HTTP response) of one GET over TLS ``version``."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client_context(version).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := tls.recv(65536):
            response += chunk
        return str(tls.version()), response


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_environment(database: Path, workers: int, **extra: str) -> dict[str, str]:
    """The environment of a ``tongbao serve`` process of a test: no stray TONGBAO_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAO_")}
    env.update(
        TONGBAO_DATABASE_URL=f"sqlite:///{database}",
        TONGBAO_ENV="test",
        TONGBAO_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
        TONGBAO_HTTP_WORKERS=str(workers),
        **extra,
    )
    return env


def server_environment(database: Path, pair: KeyPair, workers: int) -> dict[str, str]:
    return serve_environment(
        database,
        workers,
        TONGBAO_LOG_JSON="false",
        TONGBAO_TLS_CERTFILE=str(pair.certfile),
        TONGBAO_TLS_KEYFILE=str(pair.keyfile),
        COLUMNS="250",
    )


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_key_pair(tmp_path_factory.mktemp("tls"))


@contextlib.contextmanager
def serving(where: Path, template: Path, pair: KeyPair, *, workers: int) -> Iterator[Server]:
    database = where / "tongbao.db"
    shutil.copy(template, database)
    port, log = free_port(), where / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(TONGBAO), "serve", "--port", str(port), "--no-background"],
            env=server_environment(database, pair, workers),
            cwd=where,  # no stray .env; var/ files land here
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(port, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}:\n{server.output()}")
            try:
                if b" 200 " in https_get(port, ssl.TLSVersion.TLSv1_3)[1].split(b"\r\n")[0]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve did not answer over HTTPS within 60 s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def status_line(response: bytes) -> bytes:
    return response.split(b"\r\n", 1)[0]


def headers_of(response: bytes) -> dict[str, str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


def plain_http_get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := plain.recv(65536):
                response += chunk
        return response


def test_serve_speaks_https_with_tls_1_2_or_newer_only(
    tmp_path: Path, sqlite_template: Path, key_pair: KeyPair
) -> None:
    """SEC-2: ``tongbao serve`` with two workers: TLS 1.2 and 1.3 clients get the
    API over HTTPS with HSTS; a TLS 1.1 client gets no connection from any
    worker; plain HTTP gets no answer, not even the health check; the start
    banner names the https URL.

    One test, one server: starting ``serve`` with workers costs seconds."""
    with serving(tmp_path, sqlite_template, key_pair, workers=2) as server:
        for version, expected in [
            (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
            (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
        ]:
            negotiated, response = https_get(server.port, version)
            assert negotiated == expected
            assert status_line(response) == b"HTTP/1.1 200 OK", response
            assert b'"status":"ok"' in response
            assert headers_of(response)["strict-transport-security"].startswith("max-age=")

        for _ in range(6):  # connections are spread over the workers
            with pytest.raises(ssl.SSLError):
                https_get(server.port, ssl.TLSVersion.TLSv1_1)

        response = plain_http_get(server.port)
        assert b"200 OK" not in response
        assert b'"status"' not in response
        # ... and the server is still up for proper clients.
        assert status_line(https_get(server.port, ssl.TLSVersion.TLSv1_3)[1]) == b"HTTP/1.1 200 OK"

        assert f"https://127.0.0.1:{server.port}/v1" in server.output()
        assert f"http://127.0.0.1:{server.port}" not in server.output()


def test_single_process_uvicorn_uses_the_same_context(key_pair: KeyPair) -> None:
    """SEC-2: the ``ssl_context_factory`` ``serve`` hands uvicorn survives the
    trip to a worker process (pickling) and yields the TLS 1.2+ context."""
    import uvicorn  # noqa: PLC0415

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called")

    factory = pickle.loads(
        pickle.dumps(TlsFiles(key_pair.certfile, key_pair.keyfile).uvicorn_factory())
    )
    config = uvicorn.Config(app, ssl_context_factory=factory)
    config.load()
    assert config.ssl is not None
    assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert handshake(config.ssl, client_context(ssl.TLSVersion.TLSv1_3)) == "TLSv1.3"


# --- the server context itself, handshaking in memory --------------------------------


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """Run a TLS handshake between two contexts without sockets; the version agreed."""
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    for _ in range(10):
        for side, sent, received in (
            (client_side, client_out, server_in),
            (server_side, server_out, client_in),
        ):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
            if data := sent.read():
                received.write(data)
        if client_side.version() and server_side.version():
            return str(client_side.version())
    raise AssertionError("the handshake did not finish")


def test_minimum_version_setting_is_enforced_by_the_server(key_pair: KeyPair) -> None:
    """SEC-2: TONGBAO_TLS_MIN_VERSION=TLSv1.3 refuses TLS 1.2; the default
    (TLS 1.2) accepts it and refuses TLS 1.1; TLS 1.3 is chosen when both can."""
    strict = server_tls_context(TlsFiles(key_pair.certfile, key_pair.keyfile, "TLSv1.3"))
    with pytest.raises(ssl.SSLError):
        handshake(strict, client_context(ssl.TLSVersion.TLSv1_2))
    assert handshake(strict, client_context(ssl.TLSVersion.TLSv1_3)) == "TLSv1.3"

    default = server_tls_context(TlsFiles(key_pair.certfile, key_pair.keyfile))
    assert default.minimum_version == ssl.TLSVersion.TLSv1_2
    assert handshake(default, client_context(ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        handshake(default, client_context(ssl.TLSVersion.TLSv1_1))
    either = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    either.check_hostname, either.verify_mode = False, ssl.CERT_NONE
    assert handshake(default, either) == "TLSv1.3"


# --- refusals at start-up ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("only_cert", "TONGBAO_TLS_CERTFILE is set but TONGBAO_TLS_KEYFILE is not"),
        ("only_key", "TONGBAO_TLS_KEYFILE is set but TONGBAO_TLS_CERTFILE is not"),
        ("missing_file", "cannot read TLS file"),
        ("foreign_key", "the private key does not belong to the certificate"),
        ("not_pem", "not a PEM certificate"),
    ],
)
def test_serve_refuses_a_broken_tls_setup_before_serving(
    tmp_path: Path, key_pair: KeyPair, setting: str, message: str
) -> None:
    """SEC-2: a half or broken TLS set-up stops ``serve`` with one clear line —
    it never falls back to plain HTTP, and it stops before touching the database."""
    other = make_key_pair(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cert, key = {
        "only_cert": (key_pair.certfile, None),
        "only_key": (None, key_pair.keyfile),
        "missing_file": (key_pair.certfile, tmp_path / "nowhere.key"),
        "foreign_key": (key_pair.certfile, other.keyfile),
        "not_pem": (garbage, key_pair.keyfile),
    }[setting]
    database = tmp_path / "never.db"
    # Settings read `.env` in the working directory, as an operator would set them.
    (tmp_path / ".env").write_text(
        (f"TONGBAO_TLS_CERTFILE={cert}\n" if cert else "")
        + (f"TONGBAO_TLS_KEYFILE={key}\n" if key else "")
    )
    result = invoke(f"sqlite:///{database}", "serve", "--port", str(free_port()), cwd=tmp_path)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: configuration_error: "), result.stderr
    assert message in result.stderr
    assert not database.exists()


def test_tls_files_follow_the_settings(key_pair: KeyPair) -> None:
    """SEC-2: no TLS files means plain HTTP; both give HTTPS at the configured minimum."""
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    assert tls_files(plain) is None
    both = Settings(
        _env_file=None,  # type: ignore[call-arg]
        tls_certfile=key_pair.certfile,
        tls_keyfile=key_pair.keyfile,
        tls_min_version="TLSv1.3",
    )
    assert tls_files(both) == TlsFiles(key_pair.certfile, key_pair.keyfile, "TLSv1.3")
    with pytest.raises(errors.ConfigurationError):
        tls_files(Settings(_env_file=None, tls_keyfile=key_pair.keyfile))  # type: ignore[call-arg]
