"""SLSA provenance (v1 predicate) of a build, and the attestation manifest that carries it.

``--provenance=mode=min|max`` (buildx's flag; min by default with several platforms):
each platform's image gets an in-toto statement whose subject is that image's
manifest, stored in BuildKit's layout (moby/buildkit docs/attestations/
attestation-storage.md): an attestation manifest (config
``{"architecture":"unknown","os":"unknown",...}``, one ``application/vnd.in-toto+json``
layer annotated ``in-toto.io/predicate-type``) listed in the image index after the
images, with platform ``unknown/unknown`` and the annotations
``vnd.docker.reference.type: attestation-manifest`` and
``vnd.docker.reference.digest: <the image manifest>``.

The predicate follows BuildKit's SLSA v1 definitions (docs/attestations/
slsa-definitions.md) where pybuild has the same facts: ``configSource.path`` (plus
the Dockerfile's digest), ``request.frontend``/``args``/``locals`` (plus the
context's digest), ``resolvedDependencies`` (base images as package URLs with their
digests), ``internalParameters.builderPlatform``, ``runDetails.metadata``.  In place
of BuildKit's LLB definition, ``internalParameters.pybuild.steps`` is the per-step
cache-key chain (keys only in min, with each instruction in max).  Build-arg values
are in ``args`` only with ``mode=max``; min lists their names.  Secrets: their ids
with ``mode=max``, never a value.

The statement's ``_type`` is in-toto's Statement v1, as the SLSA v1 spec's schema has
it; BuildKit still writes v0.1 (docs/multi-platform.md).  The predicate is made when
the image is built and kept by the store (``Store.put_provenance``); the statement is
made at export, when the manifest digest it names is known.
"""

from __future__ import annotations

import enum
import hashlib
import urllib.parse

import msgspec

from builder.errors import UsageError
from builder.image.config import MEDIA_CONFIG, MEDIA_MANIFEST, go_json
from builder.platforms import Platform
from builder.store.exportview import Descriptor

__all__ = ["BuildFacts", "Mode", "Request", "attestation", "parse_flag", "predicate",
           "statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
MEDIA_IN_TOTO = "application/vnd.in-toto+json"
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"


class Mode(enum.Enum):
    MIN = "min"
    MAX = "max"


class Request(msgspec.Struct, frozen=True):
    """What ``--provenance`` asks for: the mode, and ``builder-id`` (runDetails.builder.id)."""

    mode: Mode = Mode.MIN
    builder_id: str = ""


def parse_flag(value: str | None, *, default: Request | None) -> Request | None:
    """``--provenance``: ``mode=min|max[,builder-id=URI]``, ``true``/``1`` (min),
    ``false``/``0`` (none), as buildx reads it; None given: ``default``."""
    if value is None:
        return default
    if value.strip().lower() in ("false", "0"):
        return None
    if value.strip().lower() in ("true", "1"):
        return Request()
    attrs = dict(part.partition("=")[::2] for part in value.split(",") if part)
    try:
        mode = Mode(attrs.get("mode", "min"))
    except ValueError:
        mode = None
    if not attrs or set(attrs) - {"mode", "builder-id"} or mode is None:
        raise UsageError(f"--provenance {value}: expected mode=min or mode=max (and "
                         "builder-id=URI), or true, false")
    return Request(mode, attrs.get("builder-id", ""))


class Base(msgspec.Struct, frozen=True):
    """A FROM image: the name as written, the digest it resolved to, the platform of
    the stage (a ``--platform=$BUILDPLATFORM`` stage's is the build platform)."""

    name: str
    digest: str
    platform: Platform


class Step(msgspec.Struct, frozen=True):
    stage: str
    instruction: str
    key: str


class BuildFacts(msgspec.Struct, frozen=True):
    """What a build read and did, for its provenance."""

    dockerfile_path: str
    dockerfile_digest: str
    context_digest: str | None
    target: str | None
    build_args: dict[str, str]
    secret_ids: list[str]
    platform: Platform
    bases: list[Base]
    steps: list[Step]
    invocation_id: str
    started_on: str
    finished_on: str


def _purl(name: str, platform: Platform) -> str:
    """BuildKit's package URL of an image: ``pkg:docker/NAME@TAG?platform=os%2Farch``."""
    repo, tag = name, "latest"
    if "@" in name:
        repo, tag = name.split("@", 1)
    elif ":" in name.rsplit("/", 1)[-1]:
        repo, tag = name.rsplit(":", 1)
    query = urllib.parse.urlencode({"platform": str(platform)})
    return f"pkg:docker/{repo}@{tag}?{query}"


def predicate(facts: BuildFacts, asked: Request, builder_version: str) -> dict[str, object]:
    """The SLSA v1 predicate (module docstring)."""
    mode = asked.mode
    args: dict[str, str] = {}
    if facts.target:
        args["target"] = facts.target
    request: dict[str, object] = {"frontend": "dockerfile.v0", "args": args}
    if mode is Mode.MAX:
        args.update({f"build-arg:{k}": v for k, v in sorted(facts.build_args.items())})
        request["secrets"] = [{"id": s} for s in sorted(facts.secret_ids)]
    else:
        request["buildArgNames"] = sorted(facts.build_args)
    request["locals"] = [{"name": "context", **({"digest": {"sha256": facts.context_digest}}
                                                if facts.context_digest else {})},
                         {"name": "dockerfile"}]
    steps = [{"stage": s.stage, "key": s.key,
              **({"instruction": s.instruction} if mode is Mode.MAX else {})}
             for s in facts.steps]
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": {"path": facts.dockerfile_path,
                                 "digest": {"sha256": facts.dockerfile_digest}},
                "request": request},
            "internalParameters": {"builderPlatform": str(Platform.host()),
                                   "pybuild": {"mode": mode.value, "steps": steps}},
            "resolvedDependencies": [
                {"uri": _purl(b.name, b.platform),
                 "digest": {"sha256": b.digest.split(":", 1)[-1]}} for b in facts.bases]},
        "runDetails": {
            "builder": {"id": asked.builder_id, "version": {"pybuild": builder_version}},
            "metadata": {"invocationId": facts.invocation_id, "startedOn": facts.started_on,
                         "finishedOn": facts.finished_on}},
    }


def statement(predicate_json: bytes, name: str, platform: Platform, manifest: str) -> bytes:
    """The in-toto statement of ``predicate_json`` about the image manifest ``manifest``."""
    subject = {"name": _purl(name, platform) if name else "_",
               "digest": {"sha256": manifest.split(":", 1)[1]}}
    return go_json({"_type": STATEMENT_TYPE, "subject": [subject],
                    "predicateType": PREDICATE_TYPE,
                    "predicate": msgspec.json.decode(predicate_json)})


class Attestation(msgspec.Struct, frozen=True):
    """An attestation manifest and its blobs, ready to write or push."""

    descriptor: dict[str, object]   # its entry in the image index
    manifest: bytes
    config: bytes
    layer: bytes

    def blobs(self) -> list[bytes]:
        return [self.layer, self.config, self.manifest]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attestation(statement_json: bytes, image_manifest: str) -> Attestation:
    """The attestation manifest of one statement about ``image_manifest``."""
    layer = Descriptor(MEDIA_IN_TOTO, _sha(statement_json), len(statement_json)).to_json()
    layer["annotations"] = {"in-toto.io/predicate-type": PREDICATE_TYPE}
    config = go_json({"architecture": "unknown", "os": "unknown", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [_sha(statement_json)]}})
    manifest = go_json({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                        "config": {"mediaType": MEDIA_CONFIG, "digest": _sha(config),
                                   "size": len(config)},
                        "layers": [layer]})
    entry = Descriptor(MEDIA_MANIFEST, _sha(manifest), len(manifest)).to_json()
    entry["annotations"] = {REFERENCE_DIGEST: image_manifest,
                            REFERENCE_TYPE: "attestation-manifest"}
    entry["platform"] = {"architecture": "unknown", "os": "unknown"}
    return Attestation(entry, manifest, config, statement_json)
