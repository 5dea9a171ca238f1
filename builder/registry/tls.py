"""TLS for registries: verified by default, extra CAs from ``certs.d``, plain HTTP rarely.

The layout is Docker's (``/etc/docker/certs.d/HOST[:PORT]/``): every ``*.crt`` is a CA
to trust for that registry only (on top of the system CAs), and each ``NAME.cert`` +
``NAME.key`` pair is a client certificate to present. pybuild's own
``/etc/pybuild/certs.d`` is read first; ``PYBUILD_CERTS_D`` (colon-separated) replaces
both base directories.

Imports builder.errors only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Iterable
from pathlib import Path

from builder.errors import RegistryError

__all__ = ["allows_plain_http", "certs_dirs", "ssl_context_for"]

DEFAULT_CERTS_D = ("/etc/pybuild/certs.d", "/etc/docker/certs.d")
# What a registry host (with optional port) may look like before it names a
# directory: no "/", no leading dot, so "../x" or "a/b" never leave the base dir.
_HOST_RE = re.compile(r"[A-Za-z0-9_\[][A-Za-z0-9._:\[\]-]*", re.ASCII)


def certs_dirs(host: str) -> list[Path]:
    """The ``certs.d/HOST`` directories that exist for ``host``, in the order read."""
    if not _HOST_RE.fullmatch(host) or ".." in host:
        return []
    env = os.environ.get("PYBUILD_CERTS_D")
    bases = [b for b in env.split(":") if b] if env is not None else list(DEFAULT_CERTS_D)
    return [Path(base) / host for base in bases if (Path(base) / host).is_dir()]


def ssl_context_for(host: str) -> ssl.SSLContext:
    """A verifying client context for ``host`` (``name[:port]``): system CAs + certs.d."""
    context = ssl.create_default_context()
    for directory in certs_dirs(host):
        names = sorted(p.name for p in directory.iterdir())
        for name in names:
            path = directory / name
            try:
                if name.endswith(".crt"):
                    context.load_verify_locations(cafile=str(path))
                elif name.endswith(".cert"):
                    key = name[: -len(".cert")] + ".key"
                    if key not in names:
                        raise RegistryError(f"{path}: client certificate without its key {key}")
                    context.load_cert_chain(str(path), str(directory / key))
                elif name.endswith(".key") and name[: -len(".key")] + ".cert" not in names:
                    raise RegistryError(f"{path}: client key without its certificate "
                                        f"{name[: -len('.key')]}.cert")
            except (ssl.SSLError, OSError) as err:
                reason = getattr(err, "reason", None) or err.strerror or str(err)
                raise RegistryError(f"{path}: cannot load for TLS to {host}: {reason}") from None
    return context


def _split_host(host: str) -> tuple[str, str | None]:
    """``name:port`` / ``[v6]:port`` / bare ``::1`` -> (name, port or None)."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        rest = host[end + 1:]
        return host[1:end], rest[1:] if rest.startswith(":") else None
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, port
    return host, None  # no port, or an unbracketed IPv6 address


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _is_loopback(name: str) -> bool:
    if name.lower() == "localhost":
        return True
    ip = _ip(name)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        return ip == ipaddress.IPv6Address("::1")
    return ip in ipaddress.IPv4Network("127.0.0.0/8")


def _clean(entry: str) -> str:
    entry = entry.strip()
    for prefix in ("http://", "https://"):
        if entry.lower().startswith(prefix):
            entry = entry[len(prefix):]
    return entry.rstrip("/").lower()


def allows_plain_http(host: str, insecure: Iterable[str]) -> bool:
    """May ``host`` be spoken to over plain HTTP?

    Only loopback (``localhost``, 127.0.0.0/8, ``::1``, any port) or a registry the
    user named with ``--insecure-registry``: an exact ``host[:port]``, or a CIDR such
    as ``10.0.0.0/8`` that an IP-literal host falls in (names are not resolved).
    """
    name, _port = _split_host(host)
    if _is_loopback(name):
        return True
    wanted = host.lower()
    ip = _ip(name)
    for entry in insecure:
        clean = _clean(entry)
        if clean == wanted:
            return True
        if "/" in clean and ip is not None:
            try:
                if ip in ipaddress.ip_network(clean, strict=False):
                    return True
            except ValueError:
                continue
    return False
