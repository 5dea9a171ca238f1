"""The facts a build's provenance records (builder.image.provenance), read from its options,
its result and the store: made only when ``--provenance`` asks for them."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from builder.engine.options import BuildOptions, BuildResult
from builder.image.provenance import Base, BuildFacts, Step
from builder.platforms import Platform
from builder.store.store import Store

__all__ = ["context_digest", "facts_of", "timestamp"]


def timestamp(seconds: float | None = None) -> str:
    """SLSA's timestamp form, ``YYYY-MM-DDThh:mm:ssZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def context_digest(store: Store, options: BuildOptions) -> str | None:
    """The digest of the context as the build sees it (.dockerignore applied), hex; None
    without a context.  The stat cache makes it cheap when the files are unchanged."""
    if options.context is None:
        return None
    from builder.cache import CacheStore
    from builder.context.checksum import checksum_sources
    from builder.engine.engine import ignore_matcher

    view = ignore_matcher(options)
    checksum = checksum_sources(
        [(".", str(options.context))], cache=CacheStore(store),
        skip=(lambda _s, rel, _d: view.hides(rel)) if view is not None else
        (lambda _s, _rel, _d: False))
    return checksum.digest.split(":", 1)[-1]


def _dockerfile(options: BuildOptions) -> tuple[str, bytes]:
    if options.dockerfile_text is not None:
        return "Dockerfile", options.dockerfile_text
    path = options.dockerfile or (options.context or Path(".")) / "Dockerfile"
    return Path(path).name, Path(path).read_bytes()


def facts_of(options: BuildOptions, result: BuildResult, platform: Platform, *,
             context: str | None, invocation_id: str, started: float) -> BuildFacts:
    path, text = _dockerfile(options)
    return BuildFacts(
        dockerfile_path=path, dockerfile_digest=hashlib.sha256(text).hexdigest(),
        context_digest=context, target=options.target, build_args=dict(options.build_args),
        secret_ids=sorted(options.secrets), platform=platform,
        # The manifest digest a base was pulled by, else its image ID (an imported or
        # loaded image has no manifest of its own here); one per image and platform.
        bases=list(dict.fromkeys(Base(b.name, b.digest or b.image, Platform.parse(b.platform))
                                 for b in result.bases)),
        steps=[Step(s.stage, s.instruction, s.key) for s in result.steps if s.key],
        invocation_id=invocation_id, started_on=timestamp(started),
        finished_on=timestamp())
