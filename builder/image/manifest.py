"""The OCI image manifest pybuild exports, with ``--annotation`` values, and the
image index of a build for several platforms.

One function makes the manifest bytes for ``-o type=oci|docker``, ``--push`` and
``--metadata-file``, so a digest the metadata names is the digest of what was
written or pushed; one makes the index for ``-o type=oci`` and ``--push``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from builder.image.config import MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST, go_json

if TYPE_CHECKING:
    from builder.platforms import Platform
    from builder.store.exportview import Descriptor, ImageExport


class ImageAnnotations(msgspec.Struct, frozen=True):
    """BuildKit's ``manifest`` and ``manifest-descriptor`` annotations of one image
    (``exporter/containerimage/annotations.go``)."""

    manifest: dict[str, str] = msgspec.field(default_factory=dict)
    descriptor: dict[str, str] = msgspec.field(default_factory=dict)


def manifest_json(image_id: str, config_size: int, layers: list[Descriptor],
                  annotations: ImageAnnotations | None = None) -> bytes:
    """The manifest in ocispec's field order: ``annotations`` after ``layers``."""
    doc: dict[str, object] = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                 "config": {"mediaType": MEDIA_CONFIG, "digest": image_id, "size": config_size},
                 "layers": [layer.to_json() for layer in layers]}
    if annotations is not None and annotations.manifest:
        doc["annotations"] = dict(sorted(annotations.manifest.items()))
    return go_json(doc)


def manifest_of(export: ImageExport, annotations: ImageAnnotations | None = None) -> bytes:
    """The manifest of an exported image: its config and its layers as exported."""
    return manifest_json(export.image_id, len(export.config),
                         [layer.descriptor for layer in export.layers], annotations)


def platform_json(platform: Platform) -> dict[str, str]:
    """An index entry's ``platform``, in ocispec's field order."""
    doc = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        doc["variant"] = platform.variant
    return doc


def image_index(manifests: list[tuple[Descriptor, Platform]],
                attestations: list[dict[str, object]] | None = None) -> bytes:
    """The OCI image index of one image per platform, as BuildKit writes it for
    ``--platform a,b`` (a descriptor's ``platform`` after its ``size``), with the
    attestation manifests' entries after the images (builder.image.provenance)."""
    entries: list[dict[str, object]] = [
        {**descriptor.to_json(), "platform": platform_json(platform)}
        for descriptor, platform in manifests]
    return go_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX,
                    "manifests": entries + (attestations or [])})
