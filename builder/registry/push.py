"""``pybuild push`` and ``build --push``: a store image (or the images of a build for
several platforms, with their index) to a registry.

Blobs first, several at a time: a blob the registry has (HEAD) is skipped, one
in another repository of the same registry is mounted across, the rest are
uploaded (monolithic when small, chunked when big).  The manifest goes up last,
under the tag, only after every blob is confirmed (REL-10).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from builder import interrupt
from builder.errors import PybuildError, RegistryError
from builder.registry.client import OCI_INDEX, OCI_MANIFEST, Repository
from builder.registry.progress import TransferProgress
from builder.registry.pull import open_repository
from builder.registry.reference import Reference, parse_reference
from builder.store.store import Store

if TYPE_CHECKING:
    from builder.image.archive import Attest
    from builder.image.manifest import ImageAnnotations
    from builder.store.exportview import Descriptor
    from builder.store.images import IndexMember

_WORKERS = 4


def push(store: Store, image_id: str, ref: Reference, *, compression: str = "gzip",
         insecure: tuple[str, ...] = (), progress: TransferProgress | None = None,
         annotations: ImageAnnotations | None = None) -> str:
    """Push an image under ``ref``; returns the manifest digest.  ``annotations``
    (``--annotation``): the manifest's; a single manifest has no descriptor to annotate."""
    progress = progress or TransferProgress("quiet", verb="push")
    repo = open_repository(ref, push=True, insecure=insecure)
    try:
        digest = _push_image(store, repo, image_id, ref.tag or ref.digest or "latest",
                             compression, progress, annotations).digest
    finally:
        repo.transport.close()
    progress.message(f"pushed {ref.familiar()}: {digest}")
    return digest


def push_index(store: Store, members: list[IndexMember], ref: Reference, *,
               compression: str = "gzip", insecure: tuple[str, ...] = (),
               progress: TransferProgress | None = None,
               annotations: ImageAnnotations | None = None,
               attest: Attest | None = None) -> str:
    """Push the images of a build for several platforms, each manifest by its digest,
    their attestation manifests (``attest``), then their image index under ``ref`` (as
    buildx pushes a manifest list); returns the index's digest."""
    from builder.image.manifest import image_index
    from builder.platforms import Platform

    progress = progress or TransferProgress("quiet", verb="push")
    repo = open_repository(ref, push=True, insecure=insecure)
    try:
        listed, attested = [], []
        for member in members:
            descriptor = _push_image(store, repo, member.image_id, None, compression,
                                     progress, annotations)
            listed.append((descriptor, Platform.parse(member.platform)))
            made = attest(member, descriptor.digest) if attest is not None else None
            if made is not None:
                stored = [store.put_blob(blob) for blob in (made.layer, made.config)]
                push_blobs(store, repo, [(digest, store.blob_path(digest).stat().st_size,
                                          store.blob_path(digest)) for digest in stored],
                           progress)
                repo.put_manifest(str(made.descriptor["digest"]), made.manifest, OCI_MANIFEST)
                attested.append(made.descriptor)
        digest = repo.put_manifest(ref.tag or ref.digest or "latest",
                                   image_index(listed, attested), OCI_INDEX)
    finally:
        repo.transport.close()
    progress.message(f"pushed {ref.familiar()}: {digest}")
    return digest


def _push_image(store: Store, repo: Repository, image_id: str, tag: str | None,
                compression: str, progress: TransferProgress,
                annotations: ImageAnnotations | None) -> Descriptor:
    """An image's blobs, then its manifest under ``tag`` (None: by its digest)."""
    from builder.image.manifest import manifest_of
    from builder.store.exportview import Descriptor, ExportOptions

    if compression == "none":
        compression = "gzip"  # registries expect compressed layers; Docker pushes gzip
    export = store.export_image(image_id, ExportOptions(compression, verify=False,
                                                        compressed=True))
    config, layers = export.config, export.layers
    blobs = [(layer.descriptor.digest, layer.descriptor.size, layer.blob) for layer in layers]
    blobs.append((image_id, len(config), store.blob_path(image_id)))
    manifest = manifest_of(export, annotations)
    push_blobs(store, repo, blobs, progress)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    pushed = repo.put_manifest(tag or digest, manifest, OCI_MANIFEST)
    return Descriptor(OCI_MANIFEST, pushed, len(manifest))


def push_blobs(store: Store, repo: Repository, blobs: list[tuple[str, int, Path | None]],
               progress: TransferProgress) -> None:
    """Make sure the registry has every blob; skip, mount or upload each."""
    sources = _mount_sources(store, repo)

    def one(digest: str, size: int, path: Path | None) -> None:
        if path is None:
            raise RegistryError(f"{repo.what(digest)}: no blob to upload (uncompressed layer "
                                "without a stored blob)")
        if repo.blob_size(digest) is not None:
            progress.done(digest, "already on the registry")
            return
        for source in sources:
            if repo.mount_blob(digest, source):
                progress.done(digest, f"mounted from {source}")
                return
        progress.start(digest, size)
        repo.upload_blob(digest, size, _opener(path),
                         lambda n: progress.advance(digest, n))
        progress.done(digest, "pushed")

    unique = {digest: (digest, size, path) for digest, size, path in blobs}
    stopping = False  # this push asked the workers to stop (and so clears it)
    try:
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            futures = [pool.submit(one, *args) for args in unique.values()]
            try:
                for future in futures:
                    future.result()
            except BaseException as err:
                if not isinstance(err, Exception):
                    for future in futures:
                        future.cancel()
                    if not interrupt.requested():
                        interrupt.request()  # Ctrl-C: uploads stop at their next read
                        stopping = True
                    repo.transport.abort()  # and one waiting on a stalled registry at once
                raise
    finally:
        if stopping:
            interrupt.clear()
    for digest, size, _ in unique.values():  # confirmed before the manifest refers to them
        there = repo.blob_size(digest)
        if there is None or (there >= 0 and there != size):
            raise RegistryError(f"{repo.what(digest)}: the registry does not have the blob "
                                f"after the upload (size {there}, expected {size})")


def _opener(path: Path) -> Callable[[], BinaryIO]:
    """Open the stored blob for each attempt of an upload.

    Not hashed here: the registry checks the digest of what it receives
    (DIGEST_INVALID), which catches a blob corrupted in the store at no cost.
    """
    return lambda: open(path, "rb")


def _mount_sources(store: Store, repo: Repository) -> list[str]:
    """Other repositories on the same registry that the store has images from."""
    found = []
    for name, _ in store.tags():
        try:
            ref = parse_reference(name, default_tag=None)
        except PybuildError:  # local names need not be references
            continue
        if ref.registry == repo.transport.registry and ref.repository != repo.name:
            found.append(ref.repository)
    return list(dict.fromkeys(found))[:3]
