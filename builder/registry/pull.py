"""``pybuild pull`` and the implicit pull of ``FROM``: a registry image into the store.

Index → platform's manifest → config → layers.  Layers already in the store
(by chain ID) are never fetched; the others download several at a time into
``ingest/`` (resumable, verified), and each is decompressed once to check its
diff_id against the config's.  They are recorded in order as *packed* layers:
as in BuildKit, a layer's files are extracted only when a build step or an
export first needs them (``Store.unpack``).  Nothing is tagged until every
layer is in, so an interrupted pull leaves no image, only blobs that the next
pull reuses.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import msgspec

from builder import interrupt, limits
from builder.errors import LayerError, PybuildError, RegistryError
from builder.platforms import Platform
from builder.registry.client import Manifest, Repository, parse_document
from builder.registry.progress import TransferProgress
from builder.registry.reference import Reference, validate_digest
from builder.registry.transport import Transport
from builder.store.store import LayerBlobRecord, Store, TmpDir, chain_id_of

_WORKERS = 4
_Fetched = tuple[int, str, int, TmpDir | None]  # resumed bytes, diff_id, tar size, work dir
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
}
CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json",
                "application/vnd.docker.container.image.v1+json")


class Pulled(msgspec.Struct, frozen=True):
    image_id: str
    manifest_digest: str
    names: list[str]


def open_repository(ref: Reference, *, push: bool = False,
                    insecure: tuple[str, ...] = ()) -> Repository:
    return Repository(Transport(ref.registry, ref.api_host, insecure=insecure),
                      ref.repository, push=push)


def select_platform(index: Manifest, platform: Platform, what: str) -> dict[str, Any]:
    """The index entry that serves ``platform`` best, ranked as containerd's
    ``platforms.Only`` ranks them (exact first; ``linux/amd64`` then takes
    ``linux/386``); a clear error lists what the index offers."""
    entries = index.doc.get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"{what}: index without a 'manifests' list")
    offered = []
    best: tuple[int, dict[str, Any]] | None = None
    for entry in entries:
        plat = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(plat, dict):
            continue
        found = Platform.from_config(plat)
        if found is None:
            continue
        offered.append("/".join(str(plat.get(k)) for k in ("os", "architecture", "variant")
                                if plat.get(k)))  # as the index words it
        rank = platform.rank(found)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, entry)
    if best is None:
        raise RegistryError(f"{what}: no image for platform {platform} "
                            f"(the index offers {', '.join(offered) or 'none'})")
    return best[1]


def pull(store: Store, ref: Reference, *, platform: Platform, insecure: tuple[str, ...] = (),
         progress: TransferProgress | None = None, unpack: bool = False,
         keep_other_platforms: bool = False) -> Pulled:
    """Pull ``ref`` for ``platform`` into the store and tag it; returns the image ID.

    ``unpack``: extract each layer as soon as it is downloaded, while the others still
    download (a build that pulls its base needs the files next); else they stay packed.
    ``keep_other_platforms``: a name that already names an image of another platform
    keeps it (a build for arm64 does not take ``busybox`` away from the amd64 image;
    a pulled name holds one image; only a build for several platforms names several).
    """
    what = ref.familiar()
    repo = open_repository(ref, insecure=insecure)
    progress = progress or TransferProgress("quiet")
    try:
        manifest = repo.get_manifest(ref.digest or ref.tag or "latest")
        if manifest.is_index:
            entry = select_platform(manifest, platform, what)
            manifest = repo.get_manifest(_digest(entry.get("digest"), what))
            if manifest.is_index:
                raise RegistryError(f"{what}: an index inside an index is not supported")
        image_id = _pull_image(store, repo, manifest, what, progress, unpack)
    finally:
        repo.transport.close()
    names = []
    if ref.tag and not ref.digest:
        names.append(msgspec.structs.replace(ref, digest=None).familiar())
    names.append(msgspec.structs.replace(ref, tag=None, digest=manifest.digest).familiar())
    if ref.digest and ref.digest != manifest.digest:
        # Pinned by an index digest: remember that name too.
        names.append(msgspec.structs.replace(ref, tag=None).familiar())
    for name in names:
        if keep_other_platforms and _names_other_platform(store, name, image_id, platform):
            continue
        store.tag(name, image_id)
    progress.message(f"pulled {what}: {image_id}")
    return Pulled(image_id, manifest.digest, names)


def _names_other_platform(store: Store, name: str, image_id: str, platform: Platform) -> bool:
    current = store.resolve_image(name)
    if current is None or current == image_id:
        return False
    offered = Platform.from_config(store.image_config(current))
    return offered is not None and platform.rank(offered) is None


def _digest(value: object, what: str) -> str:
    """A digest from registry content, validated before any path or URL use (M03)."""
    try:
        return validate_digest(str(value))
    except PybuildError:
        raise RegistryError(f"{what}: invalid digest {str(value)[:80]!r} in the registry's "
                            "answer") from None


def _pull_image(store: Store, repo: Repository, manifest: Manifest, what: str,
                progress: TransferProgress, unpack: bool) -> str:
    doc = manifest.doc
    config_desc = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config_desc, dict) or not isinstance(layers, list):
        raise RegistryError(f"{what}: manifest {manifest.digest} has no config or layers")
    if config_desc.get("mediaType") not in CONFIG_TYPES:
        raise RegistryError(f"{what}: config media type {config_desc.get('mediaType')!r} "
                            "is not an image config")
    config_digest = _digest(config_desc.get("digest"), what)
    config = store.read_blob(config_digest) if store.has_blob(config_digest) else \
        repo.fetch_document(config_digest)
    diff_ids = parse_document(config, f"{what}: config {config_digest}").get("rootfs")
    diff_ids = diff_ids.get("diff_ids") if isinstance(diff_ids, dict) else None
    if not isinstance(diff_ids, list):
        raise RegistryError(f"{what}: config {config_digest} has no rootfs.diff_ids list")
    diff_ids = [_digest(d, what) for d in diff_ids]
    max_layers = limits.get().max_layers
    if len(layers) > max_layers:  # X08: refuse before fetching anything
        raise RegistryError(f"{what}: {len(layers)} layers, more than the limit of "
                            f"{max_layers} (raise it with {limits.env_name('max_layers')})")
    if len(diff_ids) != len(layers):
        raise RegistryError(f"{what}: config lists {len(diff_ids)} layers, the manifest "
                            f"{len(layers)}")
    descriptors = [_layer_descriptor(layer, what) for layer in layers]

    chain_ids: list[str] = []
    parent: str | None = None
    for diff_id in diff_ids:
        parent = chain_id_of(parent, diff_id)
        chain_ids.append(parent)
    missing = [i for i, chain in enumerate(chain_ids) if not store.has_layer(chain)]
    for i in range(len(chain_ids)):
        if i not in missing:
            progress.done(descriptors[i][0], "already in the store")

    # Layers download several at a time; each verified blob's diff_id is checked by
    # decompressing it once (M09), and the layer is recorded in order, packed: its files
    # are extracted when a build or an export first needs them (Store.unpack).  With
    # ``unpack``, that decompression extracts it too.
    if missing:
        _transfer(store, repo, descriptors, missing, chain_ids, diff_ids, what, progress,
                  unpack)
    store.put_blob(config, expected=config_digest)
    image_id = store.put_image(config, chain_ids[-1] if chain_ids else None)
    return image_id


def _layer_descriptor(layer: Any, what: str) -> tuple[str, int, str]:
    if not isinstance(layer, dict):
        raise RegistryError(f"{what}: a layer descriptor is not an object")
    media_type = layer.get("mediaType")
    if media_type not in LAYER_TYPES:
        # Foreign (non-distributable) layers and unknown types are refused: their
        # 'urls' would send us to hosts the user never named (M07, M10).
        raise RegistryError(f"{what}: unsupported layer media type {media_type!r}")
    size = layer.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{what}: layer has an invalid size {size!r}")
    return _digest(layer.get("digest"), what), size, LAYER_TYPES[media_type]


def _transfer(store: Store, repo: Repository, descriptors: list[tuple[str, int, str]],
              missing: list[int], chain_ids: list[str], diff_ids: list[str], what: str,
              progress: TransferProgress, unpack: bool) -> None:
    from builder.store.exportview import MEDIA_LAYER

    def fetch(i: int) -> _Fetched:
        digest, size, compression = descriptors[i]
        resumed = repo.fetch_blob(store, digest, size, lambda n: progress.advance(digest, n))
        if not unpack:
            return (resumed, *_blob_diff_id(store, digest, size, compression, what), None)
        try:
            work, actual, tar_size = store.extract(store.blob_path(digest), digest,
                                                   store.unpack_dir(chain_ids[i]), compression)
        except LayerError as err:  # a broken or hostile layer: its own class, named
            err.within(what)
            raise
        return resumed, actual, tar_size, work

    stopping = False  # this pull asked the workers to stop (and so clears it)
    with ThreadPoolExecutor(max_workers=_WORKERS) as threads:
        for i in missing:
            progress.start(descriptors[i][0], descriptors[i][1])
        jobs = {i: threads.submit(fetch, i) for i in missing}
        try:
            for i in missing:
                resumed, actual, tar_size, work = _result(jobs[i])
                digest, size, compression = descriptors[i]
                if actual != diff_ids[i]:
                    raise RegistryError(f"{what}: layer {digest} has diff_id {actual}, the "
                                        f"image config says {diff_ids[i]}")
                store.record_layer_blob(LayerBlobRecord(
                    diff_ids[i], compression, digest, size, MEDIA_LAYER[compression]))
                parent = chain_ids[i - 1] if i else None
                if work is None:
                    store.add_packed_layer(parent, actual, tar_size)
                else:
                    store.commit_layer(parent, work, actual, tar_size)
                progress.done(digest, f"pulled (resumed at {resumed} bytes)"
                              if resumed else "pulled")
        except BaseException as err:
            for job in jobs.values():
                job.cancel()
            if not isinstance(err, Exception):
                if not interrupt.requested():
                    interrupt.request()  # Ctrl-C: running downloads stop at their next read
                    stopping = True
                repo.transport.abort()  # and one waiting on a stalled registry at once
            raise
        finally:
            threads.shutdown(wait=True)
            if stopping:
                interrupt.clear()
            for job in jobs.values():  # extracted but not committed (a no-op once it is)
                if job.done() and not job.cancelled() and job.exception() is None \
                        and (work := job.result()[3]) is not None:
                    work.release()


def _result(job: Future[_Fetched]) -> _Fetched:
    """A download's result, waited for in short steps: on a stage thread no signal
    handler runs, so a stopping build is noticed here (interrupt.check)."""
    while True:
        try:
            return job.result(timeout=0.1)
        except TimeoutError:
            interrupt.check()


def _blob_diff_id(store: Store, digest: str, size: int, compression: str,
                  what: str) -> tuple[str, int]:
    """(diff_id, tar size) of a verified blob; its magic must match its media type (M10)."""
    from builder.layers.blob import blob_diff_id

    with open(store.blob_path(digest), "rb") as raw:
        try:
            return blob_diff_id(raw, digest, size, expect=compression)
        except LayerError as err:  # a broken or hostile layer: its own class, named
            err.within(what)
            raise
