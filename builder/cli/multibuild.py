"""``pybuild build --platform a,b``: one image per platform, one name for them all.

The platforms are built in turn into one store, in the order given: every step whose
key does not depend on the target platform (a ``FROM --platform=$BUILDPLATFORM``
stage that does not read ``TARGETARCH``, a ``COPY`` into one) is built for the first
and a cache hit for the others, as BuildKit shares them.  The name then lists every
platform's image (``Store.tag_index``) and points at this host's (``FROM``, ``run``
and ``history`` take that one); ``-o type=oci`` and ``--push`` write their image
index, ``-o type=local`` a directory per platform (``linux_arm64``, as buildx).
Each image's SLSA provenance (``--provenance``, min by default here, as buildx;
builder.image.provenance) is made when it is built, kept by the store, and attached
to the index as an attestation manifest when it is written or pushed.  A build for
one platform comes here too when ``--provenance`` asks for it: its outputs are then
an index of the image and its attestation.

Not yet with several platforms, each refused in one line before anything is built:
``-o type=docker`` (buildx refuses it too: docker load takes one platform, ``pybuild
save --platform``), ``-o type=tar``, ``--iidfile``, ``--metadata-file`` and
``--annotation``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from builder.cli.verbs import open_store
from builder.errors import PybuildError, UsageError
from builder.platforms import Platform

if TYPE_CHECKING:
    from builder.engine.options import BuildOptions, BuildResult, Output
    from builder.engine.progress import Progress
    from builder.image.archive import Attest
    from builder.image.provenance import Attestation, Request
    from builder.store import Store
    from builder.store.images import IndexMember

__all__ = ["attester", "build_several", "refuse_unsupported"]


def refuse_unsupported(args: argparse.Namespace, outputs: list[Output], several: bool) -> None:
    """What an image index cannot be written as yet (several platforms, or one with
    provenance): one line, before anything is built.  ``outputs`` are the ``-o`` as
    given (a ``type=docker`` without ``dest`` is ``--load``, refused as buildx does)."""
    why = "with several platforms" if several else "with --provenance (an image index)"
    for output in outputs:
        if output.type == "docker":
            raise UsageError("-o type=docker: docker exporter does not currently support "
                             "exporting manifest lists (build one platform, or save one "
                             "with 'pybuild save --platform')" if several else
                             "-o type=docker cannot hold provenance attestations: use -o "
                             "type=oci, or --provenance false")
        if output.type == "tar":
            raise UsageError(f"-o type=tar {why} is not supported yet: use -o type=local "
                             "(a directory per platform) or -o type=oci")
        if output.type not in ("oci", "local"):
            raise UsageError(f"unknown output type {output.type!r} {why}: use oci or local "
                             "(and --push to push)")
    for flag, given in (("--iidfile", args.iidfile), ("--metadata-file", args.metadata_file),
                        ("--annotation", args.annotation)):
        if given:
            raise UsageError(f"{flag} {why} is not supported yet")


def build_several(args: argparse.Namespace, platforms: list[Platform | None],
                  options: BuildOptions, outputs: list[Output],
                  provenance: Request | None) -> int:
    """Build ``options`` for each platform (None: the host's, implicit), name the images
    together, keep their provenance, write the outputs and push; prints what ``build``
    prints for one platform."""
    from builder.cli.build import check_tags, dockerfile_text
    from builder.engine.progress import make_progress
    from builder.lint.gate import lint_before_build

    store = open_store(args)
    check_tags(store, options.tags)
    progress = make_progress(args.progress, quiet=args.quiet)
    text, path = dockerfile_text(options.dockerfile_text, options.dockerfile)
    lint = lint_before_build(store, text, path, options.build_args, progress.lint_line)
    results: list[BuildResult] = []
    started = time.time()
    try:
        for platform in platforms:
            shared = frozenset(s.key for r in results for s in r.steps if s.key)
            results.append(_build_one(store, msgspec.structs.replace(options, shared_keys=shared),
                                      platform, progress))
    except PybuildError:
        lint.finish_failed(progress.lint_line)
        raise
    finally:
        progress.close()
    members, default = _members(store, platforms, results)
    if provenance is not None:
        _keep_provenance(store, options, members, results, provenance, started)
    else:
        for member in members:
            store.forget_provenance(member.image_id, options.tags)
    for tag in options.tags:
        if len(members) == 1:
            store.tag(tag, default)
        else:
            store.tag_index(tag, members, default)
    name = options.tags[0] if options.tags else ""
    _write_outputs(store, members, options, outputs, args.compression,
                   attester(store, name) if provenance is not None else None)
    if args.push:
        _push(args, store, members, options.tags, with_provenance=provenance is not None)
    if args.quiet:
        print(default)
    else:
        progress.message(f"writing image {default} ({', '.join(m.platform for m in members)})"
                         + "".join(f"\nnaming to {t}" for t in options.tags))
    steps = next(r.steps for r in results if r.image_id == default)
    lint.finish(store, default, steps, progress.lint_line)
    return 0


def _build_one(store: Store, options: BuildOptions, platform: Platform | None,
               progress: Progress) -> BuildResult:
    from builder.engine.engine import build

    if platform is not None:
        progress.message(f"building for {platform}")
    return build(store, msgspec.structs.replace(options, platform=platform, tags=[]),
                 progress)


def _members(store: Store, platforms: list[Platform | None],
             results: list[BuildResult]) -> tuple[list[IndexMember], str]:
    """The index members in the order asked for (an implicit platform: the image's own),
    and the image this host runs best."""
    from builder.store.images import IndexMember

    chosen = [p or Platform.from_config(store.image_config(r.image_id)) or Platform.host()
              for p, r in zip(platforms, results, strict=True)]
    members = [IndexMember(str(p), r.image_id) for p, r in zip(chosen, results, strict=True)]
    host = Platform.host()
    ranked = [(rank, m) for p, m in zip(chosen, members, strict=True)
              if (rank := host.rank(p)) is not None]
    default = min(ranked, key=lambda pair: pair[0])[1] if ranked else members[0]
    return members, default.image_id


def _keep_provenance(store: Store, options: BuildOptions, members: list[IndexMember],
                     results: list[BuildResult], request: Request, started: float) -> None:
    """Each platform's predicate, into the store (one invocation ID for all, as BuildKit)."""
    import uuid

    from builder import __version__
    from builder.engine.provenance_facts import context_digest, facts_of
    from builder.image.config import go_json
    from builder.image.provenance import predicate

    context = context_digest(store, options)
    invocation = uuid.uuid4().hex
    for member, result in zip(members, results, strict=True):
        facts = facts_of(options, result, Platform.parse(member.platform),
                         context=context, invocation_id=invocation, started=started)
        store.put_provenance(result.image_id, options.tags,
                             go_json(predicate(facts, request, __version__)))


def attester(store: Store, name: str) -> Attest:
    """The attestation manifest of a member of ``name`` ("": unnamed), from the
    predicate the build that gave it that name kept (none: no attestation)."""
    from builder.image.provenance import attestation, statement
    from builder.store.store import normalize_tag

    def attest(member: IndexMember, manifest: str) -> Attestation | None:
        kept = store.provenance_of(member.image_id, name)
        if kept is None:
            return None
        return attestation(statement(kept, normalize_tag(name) if name else "",
                                     Platform.parse(member.platform), manifest), manifest)

    return attest


def _write_outputs(store: Store, members: list[IndexMember], options: BuildOptions,
                   outputs: list[Output], compression: str, attest: Attest | None) -> None:
    for output in outputs:  # refuse_unsupported and check_outputs let only these through
        if output.type == "oci":
            from builder.image.archive import write_index_layout

            write_index_layout(store, members, options.tags, output.dest,
                               compression=compression,
                               as_dir=output.attrs.get("tar", "true") == "false",
                               label="-o type=oci", attest=attest)
        elif output.type == "local":
            from builder.engine.outputs import export_rootfs

            for member in members:
                dest = Path(output.dest) / member.platform.replace("/", "_")
                export_rootfs(store, store.image_top_chain(member.image_id), str(dest),
                              as_tar=False, preserve=output.preserve,
                              driver=options.storage_driver)


def _push(args: argparse.Namespace, store: Store, members: list[IndexMember],
          tags: list[str], *, with_provenance: bool) -> None:
    from builder.cli.build import transfer_mode

    if not tags:
        raise UsageError("--push needs a name: add -t REGISTRY/NAME:TAG")
    mode = "quiet" if args.quiet else transfer_mode(args.progress)
    for tag in tags:
        push_members(store, members, tag, attest_as=tag if with_provenance else None,
                     compression=args.compression, insecure=args.insecure_registry, mode=mode)


def push_members(store: Store, members: list[IndexMember], name: str, *,
                 attest_as: str | None, compression: str, insecure: list[str],
                 mode: str) -> str:
    """Push a name built for several platforms as buildx does (``build --push`` and
    ``pybuild push``): each platform's manifest, the provenance kept under
    ``attest_as`` (None: none), then the index under ``name``; the index's digest."""
    from builder.registry.progress import TransferProgress
    from builder.registry.push import push_index
    from builder.registry.reference import parse_reference

    return push_index(store, members, parse_reference(name), compression=compression,
                      insecure=tuple(insecure), progress=TransferProgress(mode, verb="push"),
                      attest=attester(store, attest_as) if attest_as is not None else None)
