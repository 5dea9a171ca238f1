"""What a build is asked to do, and what it produced."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from builder.explain.steps import StepRecord
from builder.platforms import Platform

if TYPE_CHECKING:
    from builder.engine.buildx_flags import BuildContext
    from builder.explain.records import BaseRecord
    from builder.run.runopts import RunOptions


class Output(msgspec.Struct):
    """One ``-o type=...,dest=...`` request."""

    type: str
    dest: str = ""
    attrs: dict[str, str] = msgspec.field(default_factory=dict)
    preserve: bool = False  # type=local: keep device nodes and setuid/setgid/capabilities


def parse_output(spec: str) -> Output:
    """``-o`` as buildx reads it (``builder.engine.buildx_flags``)."""
    from builder.engine.buildx_flags import parse_output as parse

    return parse(spec)


class BuildOptions(msgspec.Struct):
    context: Path | None
    dockerfile: Path | None = None          # None: <context>/Dockerfile
    dockerfile_text: bytes | None = None    # a Dockerfile given on stdin
    tags: list[str] = msgspec.field(default_factory=list)
    build_args: dict[str, str] = msgspec.field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_filter: list[str] = msgspec.field(default_factory=list)   # stages that skip the cache
    network: str = "default"   # default (own namespace, slirp4netns), host or none
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    platform: Platform | None = None    # --platform; None: the host's (implicit)
    outputs: list[Output] = msgspec.field(default_factory=list)
    compression: str = "gzip"
    source_date_epoch: int | None = None
    iidfile: str | None = None
    metadata_file: str | None = None
    secrets: dict[str, str] = msgspec.field(default_factory=dict)  # secret id -> host file
    storage_driver: str = "default"            # overlay, vfs, auto or default (snapshot)
    cache_from: list[str] = msgspec.field(default_factory=list)    # local cache layout dirs
    cache_to: str | None = None                            # local dir to export the cache to
    cache_mode: str = "min"                                # min: final stage; max: all stages
    cache_from_refs: list[str] = msgspec.field(default_factory=list)  # registry caches to read
    cache_to_ref: str | None = None                        # registry ref to export the cache to
    pull: bool = False                                     # re-pull FROM images even if stored
    insecure_registries: tuple[str, ...] = ()              # plain HTTP allowed for these
    build_contexts: dict[str, BuildContext] = msgspec.field(default_factory=dict)  # --build-context
    run_options: RunOptions | None = None   # --add-host, --ulimit, --shm-size for RUN steps
    plan: bool = False       # explain --plan: decide every step's cache use, run nothing
    # Steps an earlier platform of the same build made (--platform a,b): reused even
    # under --no-cache, as BuildKit solves a vertex shared by platforms once.
    shared_keys: frozenset[str] = frozenset()


class BuildResult(msgspec.Struct):
    image_id: str
    steps: list[StepRecord]
    tags: list[str]
    bases: list[BaseRecord] = msgspec.field(default_factory=list)   # stages' FROM images
