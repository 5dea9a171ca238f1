"""TLS for registries: certs.d CAs and client certificates, and when plain HTTP is allowed."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from registry_server import RegistryServer, make_ca, make_cert

from builder.errors import RegistryError
from builder.registry.tls import allows_plain_http, certs_dirs, ssl_context_for


def test_registry_ca_from_certs_d(tls_registry: RegistryServer, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PYBUILD_CERTS_D", str(empty))
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen(f"{tls_registry.url}/v2/", timeout=10,
                               context=ssl_context_for(tls_registry.host))
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)

    # The first base has nothing for this host; Docker's layout in the second has ca.crt.
    monkeypatch.setenv("PYBUILD_CERTS_D", f"{tmp_path / 'missing'}:{empty}:"
                                          f"{tls_registry.certs_d}")
    assert certs_dirs(tls_registry.host) == [tls_registry.certs_d / tls_registry.host]
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(f"{tls_registry.url}/v2/", timeout=10,
                               context=ssl_context_for(tls_registry.host))
    assert answered.value.code == 401  # TLS verified; basic auth is next
    answered.value.close()
    # The CA is trusted for that host:port only.
    other = tls_registry.host.rsplit(":", 1)[0] + ":1"
    assert certs_dirs(other) == []


def _mtls_server(certs: Path, ca: tuple[Path, Path]) -> tuple[int, list, threading.Thread]:
    """A one-shot TLS server that requires a client certificate signed by ``ca``."""
    server_crt, server_key = make_cert(certs, "server", ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_crt, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(ca[0])
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list = []

    def serve() -> None:
        with listener:
            listener.settimeout(20)
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    seen.append(tls.getpeercert())
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as err:
                seen.append(err)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], seen, thread


def test_client_certificate_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    certs = tmp_path / "pki"
    ca = make_ca(certs)
    port, seen, thread = _mtls_server(certs, ca)
    host = f"127.0.0.1:{port}"
    hostdir = tmp_path / "certs.d" / host
    hostdir.mkdir(parents=True)
    shutil.copy(ca[0], hostdir / "ca.crt")
    client_crt, client_key = make_cert(certs, "client", ca, usage="clientAuth")
    shutil.copy(client_crt, hostdir / "client.cert")
    shutil.copy(client_key, hostdir / "client.key")
    monkeypatch.setenv("PYBUILD_CERTS_D", str(tmp_path / "certs.d"))

    context = ssl_context_for(host)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.recv(2) == b"ok"
    thread.join(20)
    assert isinstance(seen[0], dict)
    assert seen[0]["subject"] == ((("commonName", "127.0.0.1"),),)


@pytest.mark.parametrize(("files", "message"), [
    ({"client.cert": "x"}, "client certificate without its key client.key"),
    ({"client.key": "x"}, "client key without its certificate client.cert"),
    ({"ca.crt": "not a certificate"}, "ca.crt: cannot load for TLS to"),
])
def test_bad_certs_d_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 files: dict[str, str], message: str) -> None:
    hostdir = tmp_path / "reg.example:5000"
    hostdir.mkdir()
    for name, text in files.items():
        (hostdir / name).write_text(text)
    monkeypatch.setenv("PYBUILD_CERTS_D", str(tmp_path))
    with pytest.raises(RegistryError) as caught:
        ssl_context_for("reg.example:5000")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(hostdir))


@pytest.mark.parametrize("host", ["..", "../etc", "a/b", ".hidden", "x/../..", ""])
def test_hostile_host_names_read_no_directory(tmp_path: Path, host: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ca.crt").write_text("garbage")
    monkeypatch.setenv("PYBUILD_CERTS_D", str(tmp_path / "base"))
    assert certs_dirs(host) == []
    ssl_context_for(host)  # the system CAs only; nothing outside the base is read


def test_default_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYBUILD_CERTS_D", raising=False)
    # Only directories that exist count; a made-up host has none.
    assert certs_dirs("no-such-registry.invalid:5000") == []


@pytest.mark.parametrize(("host", "insecure", "allowed"), [
    ("localhost", [], True),
    ("localhost:5000", [], True),
    ("LOCALHOST:5000", [], True),
    ("127.0.0.1", [], True),
    ("127.0.0.1:5000", [], True),
    ("127.1.2.3:80", [], True),
    ("[::1]:5000", [], True),
    ("::1", [], True),
    ("[::1]", [], True),
    ("128.0.0.1:5000", [], False),
    ("localhost.example.com", [], False),
    ("127.0.0.1.nip.io:5000", [], False),
    ("[::2]:5000", [], False),
    ("registry.example:5000", [], False),
    ("registry.example:5000", ["registry.example:5000"], True),
    ("registry.example:5000", ["http://registry.example:5000/"], True),
    ("Registry.Example:5000", ["registry.example:5000"], True),
    ("registry.example:5001", ["registry.example:5000"], False),
    ("registry.example:5000", ["registry.example"], False),
    ("registry.example", ["registry.example"], True),
    ("10.1.2.3:5000", ["10.0.0.0/8"], True),
    ("11.1.2.3:5000", ["10.0.0.0/8"], False),
    ("[fd00::5]:5000", ["fd00::/8"], True),
    ("registry.example", ["10.0.0.0/8", "bad/cidr"], False),
])
def test_allows_plain_http(host: str, insecure: list[str], allowed: bool) -> None:
    assert allows_plain_http(host, insecure) is allowed
