"""The ``pybuild`` command line: parse arguments, call the library, print one-line errors.

Every heavy import happens inside the command that needs it, so that
``pybuild --help`` starts fast.  ``pybuild -t app .`` means ``pybuild build -t app .``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from builder import __version__
from builder.errors import NotImplementedYet, PybuildError, UsageError

# verb -> (summary, issue that builds it, or None when it exists)
VERBS: dict[str, tuple[str, int | None]] = {
    "build": ("build an image from a Dockerfile (the default verb)", None),
    "explain": ("show what each step of a built image did and why it was cached", None),
    "images": ("list images in the local store", None),
    "inspect": ("show an image's config as JSON", None),
    "history": ("show an image's history, like docker history", None),
    "tag": ("give an image another name", None),
    "rmi": ("remove image names (and the images nothing else names)", None),
    "save": ("write images to a docker load-able / OCI archive", None),
    "import": ("import a root filesystem tarball as a one-layer image", None),
    "check": ("lint a Dockerfile with BuildKit's rules", None),
    "debug": ("debugging aids: 'debug parse FILE' prints BuildKit's parse dump", None),
    "load": ("load images from a docker-archive or OCI archive", None),
    "df": ("show space used by images, layers and cache", None),
    "prune": ("remove unused layers, blobs and cache", None),
    "doctor": ("check the store (database, blobs, layers, cache, mounts); --repair fixes", None),
    "pull": ("pull an image from a registry", None),
    "push": ("push an image to a registry", None),
    "login": ("store credentials for a registry", None),
    "logout": ("forget the credentials pybuild stored for a registry", None),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pybuild", description="A daemonless Dockerfile image builder.",
        epilog="'pybuild -t app .' is short for 'pybuild build -t app .'.")
    parser.add_argument("--version", action="version", version=f"pybuild {__version__}")
    parser.add_argument("--root", help="store directory (default /var/lib/pybuild as root, "
                        "~/.local/share/pybuild otherwise; env PYBUILD_ROOT)")
    parser.add_argument("--storage-driver", choices=("overlay", "vfs", "auto"),
                        default="overlay", help="snapshot driver: overlay, vfs (a full copy "
                        "per step, for machines without overlay) or auto (overlay if it mounts)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb, (summary, issue) in VERBS.items():
        sub = verbs.add_parser(verb, help=summary + (f" [not built yet: issue {issue}]"
                                                     if issue else ""))
        _ARGUMENTS.get(verb, lambda p: p.add_argument("args", nargs="*"))(sub)
    return parser


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("context", help="context directory, or - for a Dockerfile on stdin")
    p.add_argument("-t", "--tag", action="append", default=[], help="name[:tag] for the image")
    p.add_argument("-f", "--file", help="Dockerfile (default CONTEXT/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--target", help="build this stage (default: the last)")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                   help="do not use the build cache for this stage (several allowed)")
    p.add_argument("--cache-from", action="append", default=[],
                   metavar="type=local,src=DIR|type=registry,ref=REF",
                   help="reuse a cache exported with --cache-to (several allowed)")
    p.add_argument("--cache-to", metavar="type=local,dest=DIR|type=registry,ref=REF[,mode=max]",
                   help="export the build cache (mode=max: every stage's steps)")
    p.add_argument("--pull", action="store_true", help="pull FROM images even if stored")
    p.add_argument("--push", action="store_true", help="push the tagged image(s) when done")
    _registry_arguments(p)
    p.add_argument("--reproducible", action="store_true",
                   help="set SOURCE_DATE_EPOCH from the newest context file if unset")
    p.add_argument("--network", choices=("default", "host", "none"), default="default",
                   help="RUN's network: default (a namespace of its own, online through "
                        "slirp4netns), host (the host's: not isolated), none (only lo)")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=PATH",
                   help="a secret for RUN --mount=type=secret (src= a file, or env=VAR)")
    p.add_argument("--platform", default="linux/amd64")
    p.add_argument("--progress", choices=("auto", "plain", "tty", "json"), default="auto")
    p.add_argument("-o", "--output", action="append", default=[],
                   metavar="type=docker|oci|local|tar,dest=PATH[,preserve=true]")
    p.add_argument("--compression", choices=("gzip", "zstd", "none"), default="gzip")
    p.add_argument("--iidfile", help="write the image ID to this file")
    p.add_argument("--metadata-file", help="write build metadata (JSON) to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")


def _registry_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="allow plain HTTP to this registry (localhost always may)")


def _pull_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", help="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", default=None, help="os/arch[/variant] (default: this host)")
    p.add_argument("-q", "--quiet", action="store_true")
    _registry_arguments(p)


def _push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image name or ID in the store")
    p.add_argument("reference", nargs="?", help="where to push (default: the image name)")
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip")
    p.add_argument("-q", "--quiet", action="store_true")
    _registry_arguments(p)


def _login_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry", nargs="?", default="docker.io")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true")
    _registry_arguments(p)


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="image name or ID")
    p.add_argument("--show-values", action="store_true",
                   help="next to an argument that changed, show its value in the image "
                   "(its history); the store and cache exports keep only digests")


def _one(name: str, help_text: str) -> Callable[[argparse.ArgumentParser], None]:
    return lambda p: p.add_argument(name, help=help_text)


_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "build": _build_arguments,
    "explain": _explain_arguments,
    "inspect": _one("image", "image name or ID"),
    "history": _one("image", "image name or ID"),
    "images": lambda p: p.add_argument("-q", "--quiet", action="store_true"),
    "tag": lambda p: (p.add_argument("source"), p.add_argument("target")),
    "rmi": lambda p: p.add_argument("images", nargs="+"),
    "save": lambda p: (p.add_argument("-o", "--output", required=True),
                       p.add_argument("--format", choices=("docker", "oci"), default="docker"),
                       p.add_argument("images", nargs="+")),
    "import": lambda p: (p.add_argument("tarball", help="rootfs tarball, or - for stdin"),
                         p.add_argument("name", nargs="?"),
                         p.add_argument("--platform", default="linux/amd64"),
                         p.add_argument("-m", "--message", default="")),
    "check": lambda p: (p.add_argument("path", nargs="?", default="Dockerfile")),
    "df": lambda p: None,
    "prune": lambda p: p.add_argument("--cache", action="store_true",
                                      help="also drop the build cache and RUN cache mounts"),
    "doctor": lambda p: (p.add_argument("--repair", action="store_true",
                                        help="fix what is found (drop corrupt blobs, broken "
                                        "layers and the cache entries and images on them)"),
                         p.add_argument("--deep", action="store_true",
                                        help="also recompute every layer's diff_id from "
                                        "its directory (reads every file)")),
    "load": lambda p: p.add_argument("-i", "--input", required=True,
                                     help="docker-archive or OCI layout (tar or directory)"),
    "debug": lambda p: (p.add_argument("what", choices=("parse",)), p.add_argument("path")),
    "pull": _pull_arguments,
    "push": _push_arguments,
    "login": _login_arguments,
    "logout": lambda p: p.add_argument("registry", nargs="?", default="docker.io"),
}


def _with_default_verb(argv: list[str]) -> list[str]:
    """Insert ``build`` when no verb is given (``pybuild -t app .``)."""
    takes_value = {"--root", "--storage-driver"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help", "--version"):
            return argv
        if arg in takes_value:
            i += 2
            continue
        if arg.startswith("--") and "=" in arg.split(" ")[0] and arg.split("=")[0] in takes_value:
            i += 1
            continue
        if arg == "--debug":
            i += 1
            continue
        if arg in VERBS:
            return argv
        return [*argv[:i], "build", *argv[i:]]
    return argv


def _store(args: argparse.Namespace) -> Any:
    import builder.cache.records  # noqa: F401 - registers its clean-up of old stores
    from builder.store import Store

    return Store(args.root)


def _check_tags(store: Any, tags: list[str]) -> None:
    """Refuse a ``-t`` that is not a valid image reference before building, in
    Docker's words (``docker load`` would refuse the image later).  A name the store
    already holds was checked when it was made: a cached rebuild skips the parser."""
    unknown = [tag for tag in tags if store.resolve_image(tag) is None]
    if not unknown:
        return
    from builder.errors import ReferenceError
    from builder.registry.reference import parse_reference

    for tag in unknown:
        try:
            reference = parse_reference(tag)
        except ReferenceError as err:
            raise UsageError(f'invalid argument "{tag}" for "-t, --tag" flag: '
                             f"{err.reason}") from None
        if reference.digest:
            raise UsageError(f'invalid argument "{tag}" for "-t, --tag" flag: a tag cannot '
                             "hold a digest")


def _resolve(store: Any, name: str) -> str:
    image_id = store.resolve_image(name)
    if image_id is None:
        raise UsageError(f"image {name!r} not found in the local store ({store.root})")
    return image_id


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key:
            raise UsageError(f"{flag} {value!r}: expected KEY=VALUE")
        out[key] = val if sep else os.environ.get(key, "")
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from builder.build.engine import build
    from builder.build.options import BuildOptions, parse_output
    from builder.build.outputs import write_outputs
    from builder.build.progress import make_progress

    outputs = [parse_output(spec) for spec in args.output]
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if args.reproducible and not epoch and args.context != "-":
        epoch = str(_newest_mtime(Path(args.context)))
    cache_from = [_cache_spec(spec, "src", "--cache-from") for spec in args.cache_from]
    cache_to = _cache_spec(args.cache_to, "dest", "--cache-to") if args.cache_to else {}
    options = BuildOptions(
        context=None if args.context == "-" else Path(args.context),
        dockerfile=Path(args.file) if args.file else None,
        dockerfile_text=sys.stdin.buffer.read() if args.context == "-" else None,
        tags=args.tag, build_args=_pairs(args.build_arg, "--build-arg"), target=args.target,
        no_cache=args.no_cache, no_cache_filter=[s.lower() for s in args.no_cache_filter],
        network=args.network, labels=_pairs(args.label, "--label"),
        platform=args.platform, outputs=outputs, compression=args.compression,
        source_date_epoch=int(epoch) if epoch and epoch.isdigit() else None,
        iidfile=args.iidfile, metadata_file=args.metadata_file,
        cache_from=[c["src"] for c in cache_from if c["type"] == "local"],
        cache_from_refs=[c["ref"] for c in cache_from if c["type"] == "registry"],
        cache_to=cache_to.get("dest"), cache_to_ref=cache_to.get("ref"),
        cache_mode=cache_to.get("mode", "min"), pull=args.pull,
        insecure_registries=tuple(args.insecure_registry),
        secrets=_secrets(args.secret), storage_driver=args.storage_driver)
    if options.context is not None and not options.context.is_dir():
        raise UsageError(f"context {args.context!r} is not a directory")
    if options.context is not None and options.dockerfile is None:
        options.dockerfile = _context_dockerfile(options.context)
    progress = make_progress(args.progress, quiet=args.quiet)
    store = _store(args)
    _check_tags(store, options.tags)
    result = build(store, options, progress)
    write_outputs(store, result.image_id, result.tags, outputs, args.compression)
    if args.push:
        if not result.tags:
            raise UsageError("--push needs a name: add -t REGISTRY/NAME:TAG")
        for tag in result.tags:
            _push(store, result.image_id, tag, args.compression, args.insecure_registry,
                  args.progress, quiet=args.quiet)
    if args.iidfile:
        Path(args.iidfile).write_text(result.image_id)
    if args.metadata_file:
        Path(args.metadata_file).write_text(json.dumps(
            {"containerimage.config.digest": result.image_id,
             "image.name": ",".join(result.tags)}, indent=2))
    if args.quiet:
        print(result.image_id)
    else:
        progress.message(f"writing image {result.image_id}"
                         + "".join(f"\nnaming to {t}" for t in result.tags))
    return 0


def _attrs(spec: str) -> dict[str, str]:
    """``type=local,dest=DIR`` -> ``{"type": "local", "dest": "DIR"}`` (docker's flag syntax)."""
    return dict(item.partition("=")[::2] for item in spec.split(","))


def _secrets(specs: list[str]) -> dict[str, str]:
    """``--secret id=ID,src=PATH`` (or ``env=VAR``, whose value goes through a temp file)."""
    import atexit
    import tempfile

    secrets = {}
    for spec in specs:
        attrs = _attrs(spec)
        secret_id = attrs.get("id", "")
        source = attrs.get("src") or attrs.get("source")
        if not secret_id or not (source or attrs.get("env")):
            raise UsageError(f"--secret {spec!r}: expected id=ID,src=PATH or id=ID,env=VAR")
        if source is None:
            value = os.environ.get(attrs["env"])
            if value is None:
                raise UsageError(f"--secret {spec!r}: environment variable {attrs['env']} "
                                 "is not set")
            with tempfile.NamedTemporaryFile("w", prefix="pybuild-secret-",
                                             delete=False) as handle:
                handle.write(value)
            source = handle.name
            atexit.register(os.unlink, source)  # a secret must not outlive the build
        elif not os.path.isfile(source):
            raise UsageError(f"--secret {spec!r}: {source} is not a file")
        secrets[secret_id] = os.path.abspath(source)
    return secrets


def _cache_spec(spec: str, path_key: str, flag: str) -> dict[str, str]:
    """``type=local,dest=DIR,mode=max`` or ``type=registry,ref=REF`` -> dict."""
    attrs = _attrs(spec)
    kind = attrs.setdefault("type", "local")
    if kind == "registry":
        if not attrs.get("ref"):
            raise UsageError(f"{flag} {spec!r}: expected type=registry,ref=REGISTRY/NAME:TAG")
    elif kind != "local" or not attrs.get(path_key):
        raise UsageError(f"{flag} {spec!r}: expected type=local,{path_key}=DIR or "
                         "type=registry,ref=REF")
    if attrs.get("mode", "min") not in ("min", "max"):
        raise UsageError(f"{flag} {spec!r}: mode must be min or max")
    return attrs


def _context_dockerfile(context: Any) -> Any:
    """CONTEXT/Dockerfile, a symlink there resolved inside the context (chroot
    semantics), as BuildKit reads it through the context: ``Dockerfile ->
    /etc/shadow`` must not feed a host file to the parser, whose errors quote
    it (catalogue C12).  ``-f`` names a file outside on purpose; it is not this."""
    from pathlib import Path

    default = Path(context) / "Dockerfile"
    if not default.is_symlink():
        return default
    from builder.errors import ContextError
    from builder.run.sandbox import resolve_in_root

    inside = resolve_in_root(str(context), "Dockerfile")
    if inside is None:
        raise ContextError(f"{default}: Dockerfile not found: a symlinked Dockerfile must "
                           "point within the build context")
    return Path(inside)


def _newest_mtime(context: Any) -> int:
    newest = 0
    for directory, _dirs, files in os.walk(context):
        for name in files:
            try:
                newest = max(newest, int(os.lstat(os.path.join(directory, name)).st_mtime))
            except OSError:
                continue
    return newest


def cmd_images(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.textsafe import printable

    store = _store(args)
    tags: dict[str, list[str]] = {}
    for name, image_id in store.tags():
        if "@" not in name:  # repo digests (NAME@sha256:...) are names too, but not listed
            tags.setdefault(image_id, []).append(name)
    if not args.quiet:
        print(f"{'REPOSITORY':<30} {'TAG':<12} {'IMAGE ID':<14} {'SIZE':>9}")
    for image_id, top, _created in store.images():
        if args.quiet:
            print(image_id[7:19])
            continue
        size = sum(r.size for r in store.chain(top))
        for name in tags.get(image_id, ["<none>:<none>"]):
            repo, _, tag = name.rpartition(":")
            print(printable(f"{repo:<30} {tag:<12} {image_id[7:19]:<14} "
                            f"{human_size(size):>9}"))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    image_id = _resolve(store, args.image)
    config = store.image_config(image_id)
    tags = [name for name, iid in store.tags() if iid == image_id]
    doc = {"Id": image_id, "RepoTags": tags, "Created": config.get("created"),
           "Author": config.get("author", ""), "Architecture": config.get("architecture"),
           "Os": config.get("os"), "Config": config.get("config", {}),
           "RootFS": {"Type": "layers", "Layers": config.get("rootfs", {}).get("diff_ids", [])},
           "Size": sum(r.size for r in store.chain(store.image_top_chain(image_id)))}
    print(json.dumps([doc], indent=4))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.textsafe import printable

    store = _store(args)
    image_id = _resolve(store, args.image)
    config = store.image_config(image_id)
    layers = store.chain(store.image_top_chain(image_id))
    sizes = iter(r.size for r in layers)
    rows = []
    for entry in config.get("history", []):
        size = 0 if entry.get("empty_layer") else next(sizes, 0)
        rows.append((entry.get("created", ""), entry.get("created_by", ""), size,
                     entry.get("comment", "")))
    print(f"{'CREATED':<22} {'CREATED BY':<60} {'SIZE':>9}  COMMENT")
    for created, created_by, size, comment in reversed(rows):
        # The image's history is anyone's text: no control character reaches the terminal.
        created_by = printable(str(created_by))
        shown = created_by if len(created_by) <= 60 else created_by[:57] + "..."
        print(printable(f"{str(created)[:19]:<22} {shown:<60} {human_size(size):>9}  "
                        f"{comment}"))
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    store = _store(args)
    store.tag(args.target, _resolve(store, args.source))
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    store = _store(args)
    for name in args.images:
        if not store.untag(name):
            raise UsageError(f"image {name!r} not found in the local store ({store.root})")
        print(f"Untagged: {name}")
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    from builder.image.archive import write_layout

    store = _store(args)
    images: dict[str, list[str]] = {}
    for name in args.images:
        image_id = _resolve(store, name)
        tags = images.setdefault(image_id, [])
        if store.resolve_image(name) == image_id and not name.startswith("sha256:"):
            from builder.store.store import normalize_tag

            tags.append(normalize_tag(name))
    write_layout(store, list(images.items()), args.output,
                 compression="none" if args.format == "docker" else "gzip")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from builder.image.importer import import_tarball

    store = _store(args)
    print(import_tarball(store, args.tarball, args.name, platform=args.platform,
                         message=args.message))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from builder.image.loader import load_archive
    from builder.textsafe import printable

    store = _store(args)
    for image_id, tags in load_archive(store, args.input):
        for tag in tags:
            store.tag(tag, image_id)
            print(printable(f"Loaded image: {tag}"))  # a name from the archive
        if not tags:
            print(f"Loaded image ID: {image_id}")
    return 0


def cmd_df(args: argparse.Namespace) -> int:
    from builder.explain.render import human_size
    from builder.store.gc import usage

    used = usage(_store(args))
    print(f"{'TYPE':<14} {'TOTAL':>7} {'ACTIVE':>7} {'SIZE':>10} {'RECLAIMABLE':>12}")
    print(f"{'Images':<14} {used.images:>7} {used.tagged:>7} {human_size(used.blobs_bytes):>10} "
          f"{'':>12}")
    print(f"{'Layers':<14} {used.layers:>7} {used.layers - used.reclaimable_layers:>7} "
          f"{human_size(used.layers_bytes):>10} {human_size(used.reclaimable_bytes):>12}")
    print(f"{'Build cache':<14} {used.cache_entries:>7} {used.cache_entries:>7} "
          f"{human_size(used.cache_mounts_bytes):>10} {'':>12}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from builder.store.gc import prune

    images, layers, blobs = prune(_store(args), cache=args.cache)
    print(f"Deleted {images} images, {layers} layers, {blobs} blobs")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from builder.store.doctor import doctor, render
    from builder.textsafe import printable

    report = doctor(_store(args), repair=args.repair, deep=args.deep)
    print(printable(render(report, repair=args.repair), multiline=True))
    return 1 if report.unrepaired else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from builder.explain.records import load_build
    from builder.explain.render import render

    store = _store(args)
    image_id = _resolve(store, args.image)
    steps = load_build(store, image_id)
    if steps is None:
        raise UsageError(f"image {args.image!r} was not built by pybuild here: nothing to explain")
    from builder.explain.waste import wasted_bytes

    top = store.image_top_chain(image_id)
    store.unpack(top)
    chain = store.chain(top)
    waste = dict(zip((r.chain_id for r in chain),
                     wasted_bytes([store.layer_dir(r.chain_id) for r in chain]), strict=True))
    for step in steps:
        step["wasted"] = waste.get(step.get("layer") or "", 0)
    values = None
    if args.show_values:  # the image's own values only: the store keeps digests
        from builder.explain.values import image_values

        values = image_values(store.image_config(image_id))
    print(render(image_id, steps, values))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from builder.dockerfile import lint, parse_file
    from builder.textsafe import printable

    warnings = lint(parse_file(args.path))
    for warning in warnings:
        print(printable(f"{args.path}:{warning.line}: {warning.rule}: {warning.message}"))
    return 1 if warnings else 0


def cmd_debug(args: argparse.Namespace) -> int:
    from pathlib import Path

    from builder.dockerfile import debug_parse

    try:
        text = Path(args.path).read_bytes()
    except OSError as err:
        raise UsageError(f"{args.path}: {err.strerror}") from None
    from builder.textsafe import printable  # the dump quotes the file's own bytes

    sys.stdout.write(printable(debug_parse(text, args.path), multiline=True) + "\n")
    return 0


def host_platform() -> str:
    import platform

    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm/v7", "armv6l": "arm/v6", "i686": "386", "i386": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
    return f"linux/{arch}"


def cmd_pull(args: argparse.Namespace) -> int:
    from builder.registry.progress import TransferProgress
    from builder.registry.pull import pull
    from builder.registry.reference import parse_reference

    ref = parse_reference(args.reference)
    progress = TransferProgress("quiet" if args.quiet else "auto")
    pulled = pull(_store(args), ref, platform=args.platform or host_platform(),
                  insecure=tuple(args.insecure_registry), progress=progress)
    print(pulled.image_id if args.quiet else f"{ref.familiar()}: {pulled.manifest_digest}")
    return 0


def _push(store: Any, image_id: str, name: str, compression: str, insecure: list[str],
          mode: str, quiet: bool = False) -> str:
    from builder.registry.progress import TransferProgress
    from builder.registry.push import push
    from builder.registry.reference import parse_reference

    ref = parse_reference(name)
    progress = TransferProgress("quiet" if quiet else mode, verb="push")
    return push(store, image_id, ref, compression=compression, insecure=tuple(insecure),
                progress=progress)


def cmd_push(args: argparse.Namespace) -> int:
    store = _store(args)
    image_id = _resolve(store, args.image)
    digest = _push(store, image_id, args.reference or args.image, args.compression,
                   args.insecure_registry, "auto", quiet=args.quiet)
    print(digest)
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    import getpass

    from builder.registry.auth import Credentials, save_login
    from builder.registry.reference import parse_reference

    registry = parse_reference(f"{args.registry}/x").registry
    username = args.username or input("Username: ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password is not None:
        password = args.password
    else:
        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("login needs a username and a password")
    from builder.registry.reference import Reference
    from builder.registry.transport import Transport

    creds = Credentials(username=username, password=password)
    transport = Transport(registry, Reference(registry, "x").api_host,
                          insecure=args.insecure_registry, credentials=creds)
    try:
        transport.check_login()
    finally:
        transport.close()
    path = save_login(registry, creds)
    print(f"Login credentials for {registry} saved in {path}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from builder.registry.auth import remove_login
    from builder.registry.reference import parse_reference

    registry = parse_reference(f"{args.registry}/x").registry
    if not remove_login(registry):
        raise UsageError(f"not logged in to {registry} (pybuild keeps no credentials for it)")
    print(f"Removed login credentials for {registry}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "build": cmd_build, "images": cmd_images, "inspect": cmd_inspect, "history": cmd_history,
    "tag": cmd_tag, "rmi": cmd_rmi, "save": cmd_save, "import": cmd_import,
    "explain": cmd_explain, "check": cmd_check, "debug": cmd_debug, "load": cmd_load,
    "df": cmd_df, "prune": cmd_prune, "doctor": cmd_doctor, "pull": cmd_pull,
    "push": cmd_push, "login": cmd_login, "logout": cmd_logout,
}


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread wherever it is, as Ctrl-C raises
    KeyboardInterrupt; a BaseException, so that no ``except Exception`` on the
    way out swallows it and every ``finally`` cleans up."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command.  SIGINT and SIGTERM stop it wherever it is (parsing,
    hashing, extracting, talking to a registry): the exception unwinds through
    the usual cleanup and the exit status is 128 + the signal, as a shell's.
    The build engine catches them itself while steps run (BuildInterrupted)."""
    restore = _stop_on_sigterm()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("pybuild: interrupted (SIGINT)", file=sys.stderr)
        return 130
    except _Terminated:
        print("pybuild: interrupted (SIGTERM)", file=sys.stderr)
        return 143
    finally:
        restore()


def _stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise _Terminated; returns what restores the previous handler
    (main() also runs inside test processes).  Python runs the handler between
    bytecodes, so no step of a command may sit in one unbounded C call."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated()
    previous = signal.signal(signal.SIGTERM, on_term)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)
    return restore


def _main(argv: Sequence[str] | None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not raw:
        parser.print_help()
        return 2
    args = parser.parse_args(_with_default_verb(raw))
    try:
        handler = COMMANDS.get(args.verb)
        if handler is None:
            issue = VERBS[args.verb][1]
            raise NotImplementedYet(f"'pybuild {args.verb}' is not built yet (planned in "
                                    f"issue {issue})")
        return handler(args)
    except PybuildError as err:
        if args.debug:
            raise
        from builder.textsafe import printable  # messages quote names from images, files

        print(f"pybuild: {printable(str(err), multiline=True)}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        return 141
    except Exception as err:
        message = _out_of_space(args, err)
        if message is None:
            raise
        print(f"pybuild: {message}", file=sys.stderr)
        return 1


def _out_of_space(args: argparse.Namespace, err: Exception) -> str | None:
    """One line for a full disk (catalogue REL-4), wherever the write failed; else None.

    Whatever was being written is already undone by then (temp dirs and files are
    removed on the way out, a layer or blob is only registered once complete).
    """
    import errno

    full = (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        (type(err).__name__ == "OperationalError" and "disk is full" in str(err))
    if not full:
        return None
    from builder.store import default_root

    where = str(getattr(err, "filename", None) or args.root or default_root())
    try:
        st = os.statvfs(where if os.path.exists(where) else os.path.dirname(where) or ".")
        free = f" ({st.f_bavail * st.f_frsize // (1 << 20)} MiB free of " \
               f"{st.f_blocks * st.f_frsize // (1 << 20)} MiB)"
    except OSError:
        free = ""
    what = "quota exceeded" if getattr(err, "errno", None) == errno.EDQUOT else \
        "no space left on device"
    return (f"{what} on the filesystem holding {where}{free}: nothing partial was kept; "
            "free space (e.g. 'pybuild prune') and run it again")


if __name__ == "__main__":
    raise SystemExit(main())
