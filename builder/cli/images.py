"""The verbs on the local store: list, inspect, name, move images in and out, clean up.

``images``, ``inspect``, ``history``, ``tag``, ``rmi``, ``save``, ``load``,
``import``, ``df``, ``prune``, ``doctor``.  Each opens the store, calls one
function of ``builder.store`` or ``builder.image`` and prints what docker would.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from builder.cli.verbs import (
    Verb,
    image_argument,
    no_arguments,
    open_store,
    quiet_flag,
    resolve_image,
)
from builder.errors import UsageError
from builder.platforms import Platform

if TYPE_CHECKING:
    from builder.store import Store


def _format_flags(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--no-trunc`` of ``images`` and ``history`` (builder.cli.formats)."""
    parser.add_argument("--format", metavar="FORMAT",
                        help="'json', 'table [TEMPLATE]' or a Go template, as docker's "
                        "(e.g. '{{.ID}}\\t{{.Size}}')")
    parser.add_argument("--no-trunc", action="store_true",
                        help="do not truncate IDs and commands")


def _images_arguments(parser: argparse.ArgumentParser) -> None:
    quiet_flag(parser)
    _format_flags(parser)


def _images(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.textsafe import printable

    store = open_store(args)
    if args.format is not None:
        from builder.cli.formats import print_images

        # As docker's: -q only changes the "table" format (to the IDs).
        quiet_table = args.quiet and args.format.strip() == "table"
        print_images(store, "{{.ID}}" if quiet_table else args.format, args.no_trunc)
        return 0
    tags: dict[str, list[str]] = {}
    for name, image_id in store.tags():
        if "@" not in name:  # repo digests (NAME@sha256:...) are names too, but not listed
            tags.setdefault(image_id, []).append(name)
    if not args.quiet:
        print(f"{'REPOSITORY':<30} {'TAG':<12} {'IMAGE ID':<14} {'SIZE':>9}")
    for image_id, top, _created in store.listed_images():
        if args.quiet:
            print(image_id if args.no_trunc else image_id[7:19])
            continue
        size = sum(r.size for r in store.chain(top))
        for name in tags.get(image_id, ["<none>:<none>"]):
            repo, _, tag = name.rpartition(":")
            shown = image_id if args.no_trunc else image_id[7:19]
            print(printable(f"{repo:<30} {tag:<12} {shown:<14} "
                            f"{human_size(size):>9}"))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import json

    store = open_store(args)
    image_id = resolve_image(store, args.image)
    if args.provenance:
        return _print_provenance(store, args.image, image_id)
    config = store.image_config(image_id)
    tags = [name for name, iid in store.tags() if iid == image_id]
    doc: dict[str, object] = {
           "Id": image_id, "RepoTags": tags, "Created": config.get("created"),
           "Author": config.get("author", ""), "Architecture": config.get("architecture"),
           **({"Variant": config["variant"]} if config.get("variant") else {}),  # omitempty
           "Os": config.get("os"), "Config": config.get("config", {}),
           "RootFS": {"Type": "layers", "Layers": config.get("rootfs", {}).get("diff_ids", [])},
           "Size": sum(r.size for r in store.chain(store.image_top_chain(image_id)))}
    if (members := store.index_of(args.image)) is not None:  # built for several platforms
        doc["Index"] = [{"Platform": m.platform, "Id": m.image_id} for m in members]
    if args.format is not None:
        from builder.cli.formats import image_size, render_inspect

        size = image_size(store, store.image_top_chain(image_id))  # docker's measure
        sys.stdout.write(render_inspect(args.format, doc, config, size))
        return 0
    print(json.dumps([doc], indent=4))
    return 0


def _print_provenance(store: Store, name: str, image_id: str) -> int:
    """``inspect --provenance``: each platform's in-toto statement, as it is attached
    to the image's manifest when exported or pushed (gzip layers)."""
    import hashlib
    import json

    from builder.image.manifest import manifest_of
    from builder.image.provenance import statement
    from builder.store.exportview import ExportOptions
    from builder.store.store import normalize_tag

    named = not name.startswith("sha256:") and store.resolve_tag(name) is not None
    members = store.index_of(name) if named else None
    pairs = [(m.platform, m.image_id) for m in members] if members else \
        [(str(Platform.from_config(store.image_config(image_id)) or Platform.host()), image_id)]
    found: dict[str, object] = {}
    for platform, member in pairs:
        kept = store.provenance_of(member, normalize_tag(name) if named else "")
        if kept is None:
            continue
        # The manifest's digest only: inspect writes nothing to the store.
        manifest = manifest_of(store.export_image(member, ExportOptions("gzip", compressed=True)))
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        found[platform] = json.loads(statement(kept, normalize_tag(name) if named else "",
                                               Platform.parse(platform), digest))
    if not found:
        raise UsageError(f"image {name!r} has no provenance: build it with --provenance "
                         "(the default with several platforms)")
    print(json.dumps(found, indent=4))
    return 0


def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    image_argument(parser)
    parser.add_argument("--provenance", action="store_true",
                        help="print the SLSA provenance of each platform's image (JSON, "
                        "keyed by platform)")
    parser.add_argument("-f", "--format", metavar="FORMAT",
                        help="'json' or a Go template over the JSON, as docker's "
                        "(e.g. '{{.Config.Env}}', '{{index .RepoTags 0}}')")


def _history(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.textsafe import printable

    store = open_store(args)
    image_id = resolve_image(store, args.image)
    config = store.image_config(image_id)
    if args.format is not None:
        from builder.cli.formats import print_history

        print_history(store, image_id, config.get("history", []), args.format, args.no_trunc)
        return 0
    from builder.cli.formats import history_ids
    from builder.layers.empty import is_empty

    layers = store.chain(store.image_top_chain(image_id))
    sizes = iter(0 if is_empty(r.diff_id) else r.size for r in layers)  # 0B, as docker's
    entries = config.get("history", [])
    rows = []
    for entry, shown_id in zip(entries, history_ids(store, image_id, entries), strict=True):
        size = 0 if entry.get("empty_layer") else next(sizes, 0)
        if shown_id != "<missing>" and not args.no_trunc:
            shown_id = shown_id[7:19]
        rows.append((shown_id, entry.get("created", ""), entry.get("created_by", ""), size,
                     entry.get("comment", "")))
    width = 72 if args.no_trunc else 14
    print(f"{'IMAGE':<{width}} {'CREATED':<22} {'CREATED BY':<60} {'SIZE':>9}  COMMENT")
    for shown_id, created, created_by, size, comment in reversed(rows):
        # The image's history is anyone's text: no control character reaches the terminal.
        created_by = printable(str(created_by))
        shown = created_by if len(created_by) <= 60 or args.no_trunc \
            else created_by[:57] + "..."
        print(printable(f"{shown_id:<{width}} {str(created)[:19]:<22} {shown:<60} "
                        f"{human_size(size):>9}  {comment}"))
    return 0


def _tag_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source")
    p.add_argument("target")


def _tag(args: argparse.Namespace) -> int:
    store = open_store(args)
    image_id = resolve_image(store, args.source)
    members = None if args.source.startswith("sha256:") else store.index_of(args.source)
    if members is not None:  # tag_index wrote the name's tag with its members
        store.tag_index(args.target, members, image_id)  # every platform, as docker tag
    else:
        store.tag(args.target, image_id)
    return 0


def _rmi_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true",
                   help="remove an image ID's names too; unknown images do not fail")
    p.add_argument("images", nargs="+")


def _rmi(args: argparse.Namespace) -> int:
    """As docker rmi: every image is tried; with -f, unknown ones do not fail it."""
    from builder.errors import StoreError
    from builder.store.remove import NoSuchImage, remove_image
    from builder.textsafe import printable

    store = open_store(args)
    failed = fatal = False
    for name in args.images:
        try:
            records = remove_image(store, name, force=args.force)
        except StoreError as err:  # reported here, per image: the others are still tried
            print(printable(f"pybuild: {err}"), file=sys.stderr)
            failed, fatal = True, fatal or not isinstance(err, NoSuchImage)
            continue
        print("\n".join(printable(str(record)) for record in records))
    return 1 if failed and (fatal or not args.force) else 0


def _save_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", choices=("docker", "oci"), default="docker")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="save this platform's image of a name built for several (as "
                   "docker save --platform)")
    p.add_argument("images", nargs="+")


def _save(args: argparse.Namespace) -> int:
    from builder.image.archive import write_layout
    from builder.platforms import parse_platform_flag

    platform = parse_platform_flag(args.platform)
    store = open_store(args)
    images: dict[str, list[str]] = {}
    for name in args.images:
        image_id = resolve_image(store, name)
        named = not name.startswith("sha256:") and store.resolve_tag(name) is not None
        if platform is not None:
            image_id = _of_platform(store, name, image_id, platform)
        tags = images.setdefault(image_id, [])
        if named:
            from builder.store.store import normalize_tag

            tags.append(normalize_tag(name))
    write_layout(store, list(images.items()), args.output,
                 compression="none" if args.format == "docker" else "gzip")
    return 0


def _of_platform(store: Store, name: str, image_id: str, platform: Platform) -> str:
    """``name``'s image for ``platform``: its member if it was built for several, else
    the image itself when it is of that platform; a usage error otherwise."""
    from builder.engine.stageplatform import index_member

    if (member := index_member(store, name, platform)) is not None:
        return member
    offered = Platform.from_config(store.image_config(image_id))
    members = store.index_of(name)
    if members is None and offered is not None and platform.rank(offered) is not None:
        return image_id
    has = ", ".join(m.platform for m in members) if members else str(offered)
    raise UsageError(f"image {name!r} has no {platform} image (it has {has})")


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tarball", help="rootfs tarball, or - for stdin")
    p.add_argument("name", nargs="?")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="what the config records (default: this host)")
    p.add_argument("-m", "--message", default="")


def _import(args: argparse.Namespace) -> int:
    from builder.image.importer import import_tarball
    from builder.platforms import parse_platform_flag

    platform = parse_platform_flag(args.platform)
    store = open_store(args)
    print(import_tarball(store, args.tarball, args.name, platform=platform,
                         message=args.message))
    return 0


def _load_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input",
                   help="docker-archive or OCI layout (tar or directory); default or -: stdin")


def _load(args: argparse.Namespace) -> int:
    from builder.image.load_stdin import archive_input
    from builder.image.loader import load_archive
    from builder.textsafe import printable

    store = open_store(args)
    with archive_input(store, args.input, sys.stdin.buffer) as (path, shown):
        loaded = load_archive(store, path, shown_as=shown)
    for image_id, tags in loaded:
        for tag in tags:
            store.tag(tag, image_id)
            print(printable(f"Loaded image: {tag}"))  # a name from the archive
        if not tags:
            print(f"Loaded image ID: {image_id}")
    return 0


def _df(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.store.gc import usage

    used = usage(open_store(args))
    print(f"{'TYPE':<14} {'TOTAL':>7} {'ACTIVE':>7} {'SIZE':>10} {'RECLAIMABLE':>12}")
    print(f"{'Images':<14} {used.images:>7} {used.tagged:>7} {human_size(used.blobs_bytes):>10} "
          f"{'':>12}")
    print(f"{'Layers':<14} {used.layers:>7} {used.layers - used.reclaimable_layers:>7} "
          f"{human_size(used.layers_bytes):>10} {human_size(used.reclaimable_bytes):>12}")
    print(f"{'Build cache':<14} {used.cache_entries:>7} {used.cache_entries:>7} "
          f"{human_size(used.cache_mounts_bytes):>10} {'':>12}")
    return 0


def _prune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", action="store_true",
                   help="also drop the build cache and RUN cache mounts")


def _prune(args: argparse.Namespace) -> int:
    from builder.store.gc import prune

    images, layers, blobs = prune(open_store(args), cache=args.cache)
    print(f"Deleted {images} images, {layers} layers, {blobs} blobs")
    return 0


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repair", action="store_true",
                   help="fix what is found (drop corrupt blobs, broken layers and the cache "
                   "entries and images on them)")
    p.add_argument("--deep", action="store_true",
                   help="also recompute every layer's diff_id from its directory (reads "
                   "every file)")
    p.add_argument("--enable-emulation", action="store_true",
                   help="register QEMU (Debian's qemu-user-static) in binfmt_misc with the "
                   "F flag, mounting it if needed, so RUN steps run for other platforms "
                   "(root; for the whole machine)")


def _doctor(args: argparse.Namespace) -> int:
    from builder import emulation, userns
    from builder.run.network import tun_problem
    from builder.store.doctor import doctor, render
    from builder.textsafe import printable

    if args.enable_emulation:
        for done in emulation.enable():
            print(f"emulation: {done}")
    report = doctor(open_store(args), repair=args.repair, deep=args.deep)
    print(userns.summary())
    for line in emulation.summary():
        print(f"platforms: {line}")
    if (why := tun_problem()) is not None:
        print(f"network: {why}")
    print(printable(render(report, repair=args.repair), multiline=True))
    return 1 if report.unrepaired else 0


def _history_arguments(parser: argparse.ArgumentParser) -> None:
    image_argument(parser)
    _format_flags(parser)


IMAGES = Verb("images", "list images in the local store", _images_arguments, _images)
INSPECT = Verb("inspect", "show an image's config as JSON", _inspect_arguments, _inspect)
HISTORY = Verb("history", "show an image's history, like docker history",
               _history_arguments, _history)
TAG = Verb("tag", "give an image another name", _tag_arguments, _tag)
RMI = Verb("rmi", "remove image names (and the images nothing else names)",
           _rmi_arguments, _rmi)
SAVE = Verb("save", "write images to a docker load-able / OCI archive", _save_arguments, _save)
IMPORT = Verb("import", "import a root filesystem tarball as a one-layer image",
              _import_arguments, _import)
LOAD = Verb("load", "load images from a docker-archive or OCI archive", _load_arguments, _load)
DF = Verb("df", "show space used by images, layers and cache", no_arguments, _df)
PRUNE = Verb("prune", "remove unused layers, blobs and cache", _prune_arguments, _prune)
DOCTOR = Verb("doctor",
              "check the store (database, blobs, layers, cache, mounts); --repair fixes",
              _doctor_arguments, _doctor)
VERBS = (IMAGES, INSPECT, HISTORY, TAG, RMI, SAVE, IMPORT, LOAD, DF, PRUNE, DOCTOR)
