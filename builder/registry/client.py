"""The OCI distribution API for one repository: manifests, blobs, uploads.

Everything a registry sends is checked before it is used: a manifest fetched
by digest must hash to that digest (M01), documents are bounded (M06), parsed
strictly (duplicate keys and NaN refused, M05) and must not be ambiguous
(M04); blobs are hashed while they stream into the store and land only when
size and digest match (M02); every digest is validated before it goes into a
URL or a path (M03).
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

from builder.errors import DigestMismatch, RegistryError
from builder.registry.transport import MAX_DOCUMENT, Response, Transport
from builder.store.ingest import Ingest
from builder.store.store import Store, check_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
_CHUNK = 1 << 20
_MONOLITHIC_MAX = 32 << 20  # bigger blobs go up in chunks


class Manifest(msgspec.Struct, frozen=True):
    """A manifest or index exactly as received, with its digest and parsed form."""

    data: bytes
    media_type: str
    digest: str
    doc: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def parse_document(data: bytes, what: str) -> dict[str, Any]:
    """Strict JSON: no duplicate keys, no NaN/Infinity, an object at the top (M05)."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate keys")
        return dict(pairs)

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        doc = json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (ValueError, RecursionError) as err:
        raise RegistryError(f"{what}: not a valid JSON document: {err}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what}: not a JSON object")
    return doc


def manifest_media_type(doc: dict[str, Any], header: str, what: str) -> str:
    """The document's type, refusing ambiguity and disagreement with Content-Type (M04)."""
    declared = doc.get("mediaType")
    header = header.split(";", 1)[0].strip()
    has_manifests = "manifests" in doc
    has_layers = "layers" in doc or "config" in doc
    if has_manifests and has_layers:
        raise RegistryError(f"{what}: ambiguous document (both 'manifests' and 'layers')")
    if declared is not None and not isinstance(declared, str):
        raise RegistryError(f"{what}: mediaType is not a string")
    kind = declared or (header if header in INDEX_TYPES + MANIFEST_TYPES else None)
    if kind is None:
        kind = OCI_INDEX if has_manifests else OCI_MANIFEST
    if declared and header in INDEX_TYPES + MANIFEST_TYPES and header != declared:
        raise RegistryError(f"{what}: mediaType {declared} contradicts Content-Type {header}")
    if (kind in INDEX_TYPES and has_layers) or (kind in MANIFEST_TYPES and has_manifests):
        raise RegistryError(f"{what}: mediaType {kind} does not match its content")
    if kind not in INDEX_TYPES + MANIFEST_TYPES:
        raise RegistryError(f"{what}: unsupported manifest type {kind} (schema 1 and "
                            "artifacts other than pybuild's cache are not supported)")
    return kind


class Repository:
    """One repository on one registry."""

    def __init__(self, transport: Transport, name: str, *, push: bool = False):
        self.transport = transport
        self.name = name
        self.scope = f"repository:{name}:pull" + (",push" if push else "")

    def what(self, ref: str = "") -> str:
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"{self.transport.registry}/{self.name}" + (f"{sep}{ref}" if ref else "")

    # -- manifests -----------------------------------------------------------
    def get_manifest(self, ref: str) -> Manifest:
        """Fetch a manifest or index by tag or digest, verified and parsed."""
        if ref.startswith("sha256:"):
            check_digest(ref)
        what = self.what(ref)
        response = self.transport.request("GET", f"/v2/{self.name}/manifests/{ref}",
                                          scope=self.scope, what=what,
                                          headers={"Accept": ACCEPT})
        data = response.read_bounded(MAX_DOCUMENT, what)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"{what}: the registry sent a manifest whose digest is "
                                f"{digest}")
        doc = parse_document(data, what)
        kind = manifest_media_type(doc, response.header("Content-Type"), what)
        return Manifest(data, kind, digest, doc)

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> str:
        what = self.what(ref)
        self.transport.request("PUT", f"/v2/{self.name}/manifests/{ref}", scope=self.scope,
                               what=what, headers={"Content-Type": media_type,
                                                   "Content-Length": str(len(data))},
                               body=data, ok=(200, 201, 202))
        return "sha256:" + hashlib.sha256(data).hexdigest()

    # -- blobs ---------------------------------------------------------------
    def blob_size(self, digest: str) -> int | None:
        """The blob's size if the registry has it (HEAD), else None."""
        response = self.transport.request("HEAD", f"/v2/{self.name}/blobs/{check_digest(digest)}",
                                          scope=self.scope, what=self.what(digest),
                                          ok=(200, 404))
        response.raw.read()
        if response.status == 404:
            return None
        length = response.header("Content-Length")
        return int(length) if length.isdigit() else -1

    def fetch_document(self, digest: str, limit: int = MAX_DOCUMENT) -> bytes:
        """A small blob (an image config), verified against its digest."""
        what = self.what(check_digest(digest))
        response = self.transport.request("GET", f"/v2/{self.name}/blobs/{digest}",
                                          scope=self.scope, what=what)
        data = response.read_bounded(limit, what)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(f"{what}: blob content does not match its digest")
        return data

    def fetch_blob(self, store: Store, digest: str, size: int | None,
                   on_bytes: Callable[[int], None] = lambda n: None) -> int:
        """Stream a blob into the store, continuing an interrupted download (Range).

        Returns how many bytes an earlier, interrupted download had already fetched.
        """
        what = self.what(check_digest(digest))
        with Ingest(store, digest, size) as ingest:
            resumed = ingest.offset
            if ingest.done:
                return 0
            for attempt in range(3):
                headers = {"Range": f"bytes={ingest.offset}-"} if ingest.offset else {}
                response = self.transport.request(
                    "GET", f"/v2/{self.name}/blobs/{digest}", scope=self.scope, what=what,
                    headers=headers, ok=(200, 206))
                if response.status == 200 and ingest.offset:
                    ingest.restart()  # the server ignored the range: start over
                on_bytes(ingest.offset)
                try:
                    for chunk in response.chunks(_CHUNK):
                        ingest.write(chunk)
                        on_bytes(len(chunk))
                    if size is not None and ingest.offset < size:
                        # http.client ends a body cut short without an error.
                        raise ConnectionError(f"connection closed after {ingest.offset} of "
                                              f"{size} bytes")
                except (OSError, ValueError, http.client.HTTPException) as err:
                    # A dropped connection: continue from where it stopped.
                    response.close()
                    self.transport.close()
                    if attempt == 2:
                        raise RegistryError(f"{what}: download failed: {err}") from None
                    continue
                except DigestMismatch as err:  # the store's class, named with the blob
                    err.within(what)
                    raise
                try:
                    ingest.commit()
                except DigestMismatch as err:
                    err.within(f"{what}: corrupt blob from the registry")
                    raise
                return resumed
        return resumed

    def mount_blob(self, digest: str, source_repo: str) -> bool:
        """Ask the registry to link a blob from another repository; True if it did."""
        response = self.transport.request(
            "POST", f"/v2/{self.name}/blobs/uploads/?mount={digest}&from={source_repo}",
            scope=f"{self.scope} repository:{source_repo}:pull", what=self.what(digest),
            headers={"Content-Length": "0"}, body=b"", ok=(201, 202))
        response.raw.read()
        if response.status == 201:
            return True
        self._cancel(response.header("Location"))
        return False

    def upload_blob(self, digest: str, size: int, open_blob: Callable[[], BinaryIO],
                    on_bytes: Callable[[int], None] = lambda n: None) -> None:
        """Upload a blob: monolithic when small, in chunks when big; verified by the server."""
        what = self.what(check_digest(digest))
        response = self.transport.request(
            "POST", f"/v2/{self.name}/blobs/uploads/", scope=self.scope, what=what,
            headers={"Content-Length": "0"}, body=b"", ok=(202,))
        response.raw.read()
        location = self._location(response, what)
        if size <= _MONOLITHIC_MAX:
            self._put_upload(location, digest, size, open_blob, what)
            on_bytes(size)
            return
        offset = 0
        chunk_size = max(_MONOLITHIC_MAX, int(response.header("OCI-Chunk-Min-Length") or 0))
        while offset < size:
            length = min(chunk_size, size - offset)

            def chunk(start: int = offset, length: int = length) -> BinaryIO:
                return _Window(open_blob(), start, length)  # type: ignore[return-value]

            response = self.transport.request(
                "PATCH", location, scope=self.scope, what=what,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(length),
                         "Content-Range": f"{offset}-{offset + length - 1}"},
                body=chunk, ok=(202,), retry=False)
            response.raw.read()
            location = self._location(response, what)
            offset += length
            on_bytes(length)
        self._put_upload(location, digest, 0, lambda: _Window(open_blob(), 0, 0), what)  # type: ignore[arg-type,return-value]

    def _put_upload(self, location: str, digest: str, size: int,
                    open_blob: Callable[[], BinaryIO], what: str) -> None:
        separator = "&" if "?" in location else "?"
        response = self.transport.request(
            "PUT", f"{location}{separator}digest={digest}", scope=self.scope, what=what,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=open_blob, ok=(201, 204))
        response.raw.read()

    def _location(self, response: Response, what: str) -> str:
        location = response.header("Location")
        if not location:
            raise RegistryError(f"{what}: the registry gave no upload location")
        if location.startswith("/"):
            location = self.transport.url(location)
        return location

    def _cancel(self, location: str) -> None:
        if not location:
            return
        try:
            if location.startswith("/"):
                location = self.transport.url(location)
            self.transport.request("DELETE", location, scope=self.scope, what=self.name,
                                   ok=(202, 204, 404, 405), retry=False).raw.read()
        except RegistryError:
            pass  # an abandoned session expires on the server; nothing depends on it


class _Window:
    """``length`` bytes of a file from ``start``: one chunk of a chunked upload."""

    def __init__(self, source: BinaryIO, start: int, length: int):
        self.source = source
        self.left = length
        source.seek(start)

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.source.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.source.close()
