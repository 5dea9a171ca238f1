"""Image references, parsed exactly as Docker parses them.

Docker reads a name with distribution/reference's ``ParseNormalizedNamed`` and then
adds ``:latest`` with ``TagNameOnly``. This module ports both, and the raw ``Parse``
under them, regex for regex, so ``FROM``/``pull``/``push`` accept and reject the same
strings as ``docker`` and name the same repository. The test vectors are upstream's
(testdata/registry/reference_vectors.json).

Imports builder.errors only.
"""

from __future__ import annotations

import re

import msgspec

from builder.errors import ReferenceError

__all__ = [
    "DEFAULT_REGISTRY", "DIGEST_RE", "TAG_RE", "Reference", "parse_reference", "validate_digest",
]

DEFAULT_REGISTRY = "docker.io"
# Docker Hub's legacy name, still what its auth keys and some old references use.
LEGACY_REGISTRY = "index.docker.io"
# Where Docker Hub's registry API actually answers.
DOCKER_HUB_API = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255

# distribution/reference regexp.go, piece by piece. Go's regexp is RE2 with ASCII
# classes, so every pattern is compiled with re.ASCII and matched with fullmatch
# (Python's `$` would accept a trailing newline).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
# IPv6 in brackets, without zone ids or embedded IPv4 (as upstream).
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")"
_DOMAIN_AND_PORT = _HOST + r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST_PAT = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME

_REFERENCE_RE = re.compile(
    r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST_PAT + r"))?", re.ASCII)
_ANCHORED_NAME_RE = re.compile(
    r"(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")", re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
# TagRegexp and DigestRegexp alone, for names that carry a tag or digest outside a
# reference (buildx's ``oci-layout://DIR:TAG@DIGEST``).
TAG_RE = re.compile(_TAG, re.ASCII)
DIGEST_RE = re.compile(_DIGEST_PAT, re.ASCII)

# OCI image-spec descriptor.md: the digest grammar, then the registered algorithms'
# encodings. Anything else is refused before it reaches a path or a URL (M03).
_OCI_DIGEST_RE = re.compile(
    r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
_ALGORITHMS = {"sha256": 64, "sha512": 128}  # hex characters of each encoding
_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)

# Upstream's error texts (reference.go, go-digest), so messages read like docker's.
ERR_FORMAT = "invalid reference format"
ERR_UPPERCASE = "invalid reference format: repository name must be lowercase"
ERR_EMPTY = "invalid reference format: repository name must have at least one component"
ERR_TOO_LONG = (f"invalid reference format: repository name must not be more than "
                f"{NAME_TOTAL_LENGTH_MAX} characters")
ERR_DIGEST_FORMAT = "invalid checksum digest format"
ERR_DIGEST_LENGTH = "invalid checksum digest length"
ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"


class Reference(msgspec.Struct, frozen=True):
    """A normalised image reference: ``registry/repository[:tag][@digest]``.

    ``repository`` is the path on the registry (``library/busybox``); ``registry`` is
    the domain with any port (``docker.io``, ``127.0.0.1:5000``, ``[::1]:5000``).
    With both a tag and a digest, the digest pins what is fetched.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, e.g. ``docker.io/library/busybox``."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host (and port) that serves the registry API for this reference."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    def familiar(self) -> str:
        """The short form docker prints: ``busybox:latest``, ``127.0.0.1:5000/base:1``."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository
            # Only one level under library/ is an official image (familiarizeName).
            rest = name.removeprefix(OFFICIAL_PREFIX)
            if rest != name and "/" not in rest:
                name = rest
        return name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def validate_digest(digest: str) -> str:
    """Return ``digest`` if it is an OCI digest of a supported algorithm, else raise.

    Checks the order go-digest does (format, algorithm, length, encoding) so the
    error names the first thing wrong. Call it on every digest that came from outside
    (a manifest, an index, a header) before joining it into a path or URL.
    """
    algorithm, sep, encoded = digest.partition(":")
    if not sep or not algorithm or not encoded or not _OCI_DIGEST_RE.fullmatch(digest):
        raise ReferenceError(digest, ERR_DIGEST_FORMAT)
    length = _ALGORITHMS.get(algorithm)
    if length is None:
        raise ReferenceError(digest, ERR_DIGEST_UNSUPPORTED)
    if len(encoded) != length:
        raise ReferenceError(digest, ERR_DIGEST_LENGTH)
    if not _HEX_RE.fullmatch(encoded):
        raise ReferenceError(digest, ERR_DIGEST_FORMAT)
    return digest


def parse_raw(text: str) -> tuple[str, str, str | None, str | None]:
    """distribution/reference ``Parse``: (domain or "", path, tag, digest); no defaults.

    Exposed for the upstream test vectors; callers want :func:`parse_reference`.
    """
    if not text:
        raise ReferenceError(text, ERR_EMPTY)
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        lowered = text.lower()
        if lowered != text and _REFERENCE_RE.fullmatch(lowered):
            raise ReferenceError(text, ERR_UPPERCASE)
        raise ReferenceError(text, ERR_FORMAT)
    name, tag, digest = match.groups()
    name_match = _ANCHORED_NAME_RE.fullmatch(name)
    assert name_match is not None  # the reference pattern embeds the name pattern
    domain, path = name_match.group(1) or "", name_match.group(2)
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise ReferenceError(text, ERR_TOO_LONG)
    if digest is not None:
        _check_reference_digest(text, digest)
    return domain, path, tag, digest


def _check_reference_digest(text: str, digest: str) -> None:
    try:
        validate_digest(digest)
    except ReferenceError as err:
        raise ReferenceError(text, err.reason) from None


def _split_docker_domain(name: str) -> tuple[str, str]:
    """normalize.go ``splitDockerDomain``: which part of ``name`` is a registry."""
    maybe_domain, slash, rest = name.partition("/")
    if not slash:
        # A single component ("ubuntu", "ubuntu:22.04", even "localhost") is a
        # Docker Hub official image; "host:port" alone is a name and a tag.
        return DEFAULT_REGISTRY, OFFICIAL_PREFIX + name
    if maybe_domain == "localhost":
        domain, remote = maybe_domain, rest
    elif maybe_domain == LEGACY_REGISTRY:
        domain, remote = DEFAULT_REGISTRY, rest
    elif "." in maybe_domain or ":" in maybe_domain:
        domain, remote = maybe_domain, rest
    elif maybe_domain.lower() != maybe_domain:
        # Uppercase is never valid in a path, so an uppercase first part is a host.
        domain, remote = maybe_domain, rest
    else:
        domain, remote = DEFAULT_REGISTRY, name
    if domain == DEFAULT_REGISTRY and "/" not in remote:
        remote = OFFICIAL_PREFIX + remote
    return domain, remote


def parse_reference(text: str, default_tag: str | None = "latest") -> Reference:
    """Parse an image reference as ``docker pull`` does.

    ``busybox`` -> ``docker.io/library/busybox:latest``; ``127.0.0.1:5000/base:1``
    keeps its registry; a digest is kept beside any tag. ``default_tag`` is added
    only when there is neither tag nor digest (Docker's ``TagNameOnly``); pass None
    to keep a bare name bare.
    """
    if _IDENTIFIER_RE.fullmatch(text):
        raise ReferenceError(text, f"invalid repository name ({text}), "
                                   "cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(text)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise ReferenceError(
            text, f"invalid reference format: repository name ({remote}) must be lowercase")
    try:
        registry, path, tag, digest = parse_raw(f"{domain}/{remainder}")
    except ReferenceError as err:
        raise ReferenceError(text, err.reason) from None  # name what the user wrote
    if not registry:
        # "foo_bar.com/x": looks like a host, but no hostname has "_", so upstream
        # parses it as a path with no domain at all. There is no registry to ask.
        raise ReferenceError(text, f"invalid reference format: {domain!r} is not a valid "
                                   "registry host name")
    if tag is None and digest is None and default_tag is not None:
        tag = default_tag
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)
