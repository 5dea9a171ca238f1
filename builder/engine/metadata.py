"""``--metadata-file``: what the build exported, as buildx writes it.

The manifest it describes is made by ``image.manifest.manifest_of``, as the
exports make theirs, so its digest is the digest of what was written or pushed.
The metadata keys are the ones BuildKit's image and OCI
exporters return and buildx writes (moby/buildkit
``exporter/containerimage/exptypes/types.go``, ``exporter/oci/export.go``;
docker/buildx ``commands/build.go`` ``decodeExporterResponse``): the manifest
digest, the config digest, the manifest descriptor (with its platform) and the
full image names.  ``buildx.build.ref`` names a buildx builder node's build
record, which pybuild does not have, so it is not written.

``pybuild.cache`` is pybuild's own key (docs/progress.md): each step's stage,
position, instruction and Dockerfile line, whether the cache had it (``hit``,
``miss``, or ``none`` for a step that only changes the config), and why, as the
reason codes and parameters ``explain --format json`` writes (never a build-arg
value).  It is a JSON object, as buildx embeds exporter values that are objects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from builder.engine.buildx_flags import write_file_atomically
from builder.engine.options import Output
from builder.image.config import MEDIA_MANIFEST
from builder.image.manifest import ImageAnnotations, manifest_of

if TYPE_CHECKING:
    from builder.explain.steps import StepRecord
    from builder.store.store import Store

CACHE_KEY = "pybuild.cache"
CACHE_VERSION = 1


def _exported(outputs: list[Output], push: bool, compression: str) -> tuple[str, bool]:
    """(layer compression, compressed only) of the manifest the build wrote: the
    pushed one, else the first image archive's, else what ``-o type=oci`` would write."""
    if push:
        return ("gzip" if compression == "none" else compression), True
    for out in outputs:
        if out.type in ("docker", "oci"):
            return ("none" if out.type == "docker" else compression), False
    return compression, False


def metadata(store: Store, image_id: str, tags: list[str], *, outputs: list[Output],
             push: bool, compression: str, annotations: ImageAnnotations,
             steps: Sequence[StepRecord] = ()) -> dict[str, object]:
    from builder.registry.reference import parse_reference
    from builder.store.exportview import ExportOptions

    kind, compressed = _exported(outputs, push, compression)
    export = store.export_image(image_id, ExportOptions(kind, verify=False,
                                                        compressed=compressed))
    manifest = manifest_of(export, annotations)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    image = json.loads(export.config)
    descriptor: dict[str, object] = {"mediaType": MEDIA_MANIFEST, "digest": digest,
                                     "size": len(manifest)}
    if annotations.descriptor:
        descriptor["annotations"] = dict(sorted(annotations.descriptor.items()))
    platform = {"architecture": image.get("architecture", ""), "os": image.get("os", "")}
    if image.get("variant"):
        platform["variant"] = image["variant"]
    descriptor["platform"] = platform
    out: dict[str, object] = {"containerimage.config.digest": image_id,
                 "containerimage.descriptor": descriptor,
                 "containerimage.digest": digest}
    if tags:
        out["image.name"] = ",".join(str(parse_reference(tag)) for tag in tags)
    out[CACHE_KEY] = cache_summary(steps)
    return out


def cache_summary(steps: Sequence[StepRecord]) -> dict[str, object]:
    """``pybuild.cache``: each step's cache decision and its reason codes."""
    rows = [{"stage": step.stage, "index": step.index, "instruction": step.instruction,
             "line": step.line, "cache": _cache_word(step), "layer": step.layer,
             "reasons": [reason.to_record() for reason in step.reasons]} for step in steps]
    return {"version": CACHE_VERSION,
            "hits": sum(row["cache"] == "hit" for row in rows),
            "misses": sum(row["cache"] == "miss" for row in rows), "steps": rows}


def _cache_word(step: StepRecord) -> str:
    if step.cached:
        return "hit"
    return "none" if step.config_only or not step.reasons else "miss"


def write_metadata(path: str, data: dict[str, object]) -> None:
    """As buildx: ``json.MarshalIndent(dt, "", "  ")`` (top keys sorted, ``<>&`` escaped),
    written atomically with mode 0644."""
    # Go sorts a map's keys; the descriptor is a RawMessage and keeps its field order.
    text = json.dumps(dict(sorted(data.items())), indent=2, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    write_file_atomically(path, text.encode(), "--metadata-file")
