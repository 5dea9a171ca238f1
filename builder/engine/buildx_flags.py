"""Build flags spelled and read the way ``docker buildx build`` reads them.

Each parser follows one buildx (or BuildKit) source file, named in its docstring,
so a flag a user copies from a buildx command line means the same thing here:
``-o``/``--output`` (``util/buildflags/export.go``), ``--secret``
(``util/buildflags/secrets.go`` + BuildKit's ``secretsprovider/store.go``),
``--annotation`` (``export.go`` ``ParseAnnotations``), ``--build-context``
(``util/buildflags/context.go``) and ``--metadata-file``/``--iidfile``
(``commands/build.go``).  Every bad value is a one-line ``UsageError`` naming the flag.
"""

from __future__ import annotations

import os
import re
import sys
from enum import Enum

import msgspec

from builder.engine.options import Output
from builder.errors import UsageError
from builder.image.manifest import ImageAnnotations

# BuildKit's secretsprovider.MaxSecretSize (session/secrets/secretsprovider/secretsprovider.go).
MAX_SECRET_SIZE = 500 * 1024


def _fields(spec: str, flag: str) -> list[str]:
    """buildx's csvvalue.Fields: comma-separated, ``"..."`` quotes a comma or a quote."""
    import csv  # loaded by the flags that take fields only

    try:
        rows = list(csv.reader([spec], strict=True))
    except csv.Error as err:
        raise UsageError(f"{flag} {spec!r}: {err}") from None
    return rows[0] if rows else []


# -- -o / --output -------------------------------------------------------------------


def parse_output(spec: str) -> Output:
    """``-o`` as buildx's ``ExportEntry.UnmarshalText``: ``-o DIR`` is
    ``type=local,dest=DIR``, ``-o -`` is ``type=tar,dest=-``; otherwise CSV
    ``key=value`` fields (keys trimmed and lower-cased) of which ``type`` is required."""
    fields = _fields(spec, "-o")
    if len(fields) == 1 and fields[0] == spec and not spec.startswith("type="):
        return Output(type="tar" if spec == "-" else "local", dest=spec)
    kind, dest = "", ""
    attrs: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"-o {spec}: invalid value {item}")
        key = key.strip().lower()
        if key == "type":
            kind = value
        elif key == "dest":
            dest = value
        else:
            attrs[key] = value
    if not kind:
        raise UsageError(f"-o {spec}: type is required for output")
    preserve = attrs.pop("preserve", "false")
    if preserve not in ("true", "false"):
        raise UsageError(f"-o {spec}: preserve must be true or false")
    if preserve == "true" and kind != "local":
        raise UsageError(f"-o {spec}: preserve=true applies to type=local only")
    return Output(type=kind, dest=dest, attrs=attrs, preserve=preserve == "true")


def check_outputs(outputs: list[Output]) -> list[Output]:
    """buildx's ``CreateExports`` checks, before anything is built; returns the
    outputs that write somewhere, with buildx's defaults filled in (new ``Output``s:
    the ones given are left as written).  ``type=docker`` without ``dest`` is
    ``--load``: the image goes to the local store, as every build does."""
    kept: list[Output] = []
    stdout_used = False
    for given in outputs:
        out = msgspec.structs.replace(given, attrs=dict(given.attrs))
        # Go's strconv.ParseBool; anything else counts as true, as in buildx.
        as_tar = out.attrs.get("tar", "true") not in ("false", "0", "f", "F", "FALSE", "False")
        if "tar" in out.attrs:
            out.attrs["tar"] = "true" if as_tar else "false"
        if out.type == "docker" and not out.dest and as_tar:
            continue  # --load: the local store is pybuild's docker daemon
        if out.type == "local" or (out.type in ("oci", "docker") and not as_tar):
            if not out.dest:
                raise UsageError(f"-o type={out.type}: dest is required for {out.type} exporter")
            if out.dest == "-":
                raise UsageError(f"-o type={out.type}: dest cannot be stdout for {out.type} "
                                 "exporter")
            if os.path.exists(out.dest) and not os.path.isdir(out.dest):
                raise UsageError(f"-o type={out.type}: destination directory {out.dest} is a "
                                 "file")
        elif out.type in ("tar", "oci", "docker"):
            out.dest = out.dest or "-"
            if out.dest == "-":
                if stdout_used:
                    raise UsageError("-o: multiple outputs configured to write to stdout")
                if sys.stdout.isatty():
                    raise UsageError(f"-o type={out.type}: dest file is required for "
                                     f"{out.type} exporter. refusing to write to console")
                stdout_used = True
            elif os.path.isdir(out.dest):
                raise UsageError(f"-o type={out.type}: destination file {out.dest} is a "
                                 "directory")
        kept.append(out)
    return kept


# -- --secret ------------------------------------------------------------------------


class SecretSpec(msgspec.Struct, frozen=True):
    id: str
    file: str = ""   # read from this file
    env: str = ""    # or from this environment variable


def parse_secret(spec: str) -> SecretSpec:
    """buildx's ``Secret.UnmarshalText`` and BuildKit's ``NewStore``: keys ``id``,
    ``src``/``source``, ``env``, ``type=file|env``; ``id=X`` alone reads environment
    variable ``X`` if it is set, else the file ``X``."""
    secret_id, source, env, kind = "", "", "", ""
    for item in _fields(spec, "--secret"):
        key, sep, value = item.partition("=")
        key = key.lower()
        if not sep:
            raise UsageError(f"--secret {spec!r}: invalid field '{item}' must be a key=value "
                             "pair")
        if key == "type":
            if value not in ("file", "env"):
                raise UsageError(f'--secret {spec!r}: unsupported secret type "{value}"')
            kind = value
        elif key == "id":
            secret_id = value
        elif key in ("src", "source"):
            source = value
        elif key == "env":
            env = value
        else:
            raise UsageError(f"--secret {spec!r}: unexpected key '{key}' in '{item}'")
    if kind == "env" and not env:
        env, source = source, ""
    if not secret_id:
        raise UsageError(f"--secret {spec!r}: secret missing ID")
    if not env and not source:
        if secret_id in os.environ:
            env = secret_id
        else:
            source = secret_id
    return SecretSpec(secret_id, "" if env else source, env)


def secret_files(specs: list[str]) -> dict[str, str]:
    """``--secret`` values -> {id: host file}; an env secret's value goes through a
    0600 temp file that is removed when pybuild exits (a later ``--secret`` with the
    same id wins, as buildx's ``removeSecretDupes``)."""
    import atexit

    files: dict[str, str] = {}
    for spec in specs:
        if not spec:
            continue
        secret = parse_secret(spec)
        if secret.env:
            # BuildKit reads os.Getenv: an unset variable is an empty secret.
            value = os.environ.get(secret.env)
            if value is None:
                sys.stderr.write(f"pybuild: warning: --secret {secret.id}: environment "
                                 f"variable {secret.env} is not set; the secret is empty\n")
            import tempfile

            with tempfile.NamedTemporaryFile("w", prefix="pybuild-secret-",
                                             delete=False) as handle:
                handle.write(value or "")
            atexit.register(os.unlink, handle.name)  # a secret must not outlive the build
            files[secret.id] = handle.name
            continue
        try:
            size = os.stat(secret.file).st_size
        except OSError as err:
            raise UsageError(f"--secret {spec!r}: failed to stat {secret.file}: "
                             f"{err.strerror}") from None
        if not os.path.isfile(secret.file):
            raise UsageError(f"--secret {spec!r}: {secret.file} is not a file")
        if size > MAX_SECRET_SIZE:
            raise UsageError(f"--secret {spec!r}: secret {secret.id} too big. max size 500KB")
        files[secret.id] = os.path.abspath(secret.file)
    return files


# -- --annotation --------------------------------------------------------------------


class AnnotationType(Enum):
    """Where an annotation goes (BuildKit's ``exptypes/annotations.go``)."""

    MANIFEST = "manifest"
    MANIFEST_DESCRIPTOR = "manifest-descriptor"
    INDEX = "index"
    INDEX_DESCRIPTOR = "index-descriptor"


class Annotation(msgspec.Struct, frozen=True):
    type: AnnotationType
    key: str
    value: str
    platform: str = ""   # "os/arch[/variant]": only for that platform's manifest


_TYPE_RE = re.compile(r"([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?")


def parse_annotations(values: list[str], platform: str) -> list[Annotation]:
    """buildx's ``ParseAnnotations``: ``KEY=VALUE`` (the manifest, BuildKit's default
    type) or ``TYPE[,TYPE...]:KEY=VALUE`` with TYPE ``manifest``, ``index``,
    ``manifest-descriptor``, ``index-descriptor``, each with an optional
    ``[os/arch]``.  pybuild builds one platform: a platform other than the build's
    is refused as BuildKit's exporter refuses it, and so is an ``index`` type
    (pybuild writes no image index; BuildKit: "index annotations not supported for
    single platform export")."""
    out: list[Annotation] = []
    for spec in values:
        if not spec:
            continue
        name, sep, value = spec.partition("=")
        if not sep:
            raise UsageError(f'--annotation "{spec}": invalid annotation, expected key=value')
        types, colon, key = name.partition(":")
        if not colon:
            types, key = "", types
        if not key or any(ch.isspace() for ch in key):
            raise UsageError(f'--annotation "{spec}": the key must be non-empty, without spaces')
        for item in types.split(",") if types else [""]:
            out.append(_annotation(spec, item, key, value, platform))
    return out


def _annotation(spec: str, item: str, key: str, value: str, platform: str) -> Annotation:
    if not item:
        return Annotation(AnnotationType.MANIFEST, key, value)
    match = _TYPE_RE.fullmatch(item)
    if match is None:
        raise UsageError(f'--annotation "{spec}": invalid annotation type "{item}", expected '
                         "type and optional platform in square brackets")
    try:
        kind = AnnotationType(match.group(1))
    except ValueError:
        raise UsageError(f'--annotation "{spec}": unknown annotation type '
                         f'"{match.group(1)}"') from None
    if kind in (AnnotationType.INDEX, AnnotationType.INDEX_DESCRIPTOR):
        raise UsageError(f'--annotation "{spec}": index annotations not supported for single '
                         "platform export")
    wanted = match.group(2) or ""
    if wanted and not _same_platform(spec, wanted, platform):
        raise UsageError(f'--annotation "{spec}": invalid annotation: no platform {wanted} '
                         "found in source")
    return Annotation(kind, key, value, wanted)


def _same_platform(spec: str, wanted: str, platform: str) -> bool:
    """Normalised as containerd's platforms.Parse (``x86_64`` is ``amd64``)."""
    from builder.platforms import Platform, PlatformError

    try:
        return Platform.parse(wanted) == Platform.parse(platform)
    except PlatformError as err:
        raise UsageError(f'--annotation "{spec}": invalid platform "{wanted}": {err}') from None


def image_annotations(annotations: list[Annotation]) -> ImageAnnotations:
    out = ImageAnnotations()
    for item in annotations:
        # Only the two manifest types get here: index types are refused when parsed.
        target = (out.descriptor if item.type is AnnotationType.MANIFEST_DESCRIPTOR
                  else out.manifest)
        target[item.key] = item.value
    return out


# -- --build-context -----------------------------------------------------------------


class ContextKind(Enum):
    LOCAL = "local"              # a directory, as untrusted as the main context
    IMAGE = "docker-image"       # docker-image://REF (the store, else pulled)
    OCI_LAYOUT = "oci-layout"    # oci-layout://DIR[:TAG][@DIGEST]
    SCRATCH = "scratch"          # docker-image://scratch


class BuildContext(msgspec.Struct, frozen=True):
    """One ``--build-context NAME=VALUE``; ``name`` normalised as buildx does."""

    name: str
    kind: ContextKind
    value: str
    path: str = ""     # LOCAL, OCI_LAYOUT
    ref: str = ""      # IMAGE
    tag: str = ""      # OCI_LAYOUT
    digest: str = ""   # OCI_LAYOUT


_REMOTE = ("http://", "https://", "git://", "git@", "ssh://", "github.com/")


def context_name(name: str) -> str:
    """buildx's ``ParseContextNames``: ``ParseNormalizedNamed``, familiar form, without
    ``:latest`` (``docker.io/library/alpine:latest`` -> ``alpine``)."""
    from builder.registry.reference import parse_reference

    return parse_reference(name, default_tag=None).familiar().removesuffix(":latest")


def parse_build_contexts(values: list[str]) -> dict[str, BuildContext]:
    """``--build-context NAME=DIR|docker-image://REF|oci-layout://DIR[:TAG|@DIGEST]``
    (buildx ``util/buildflags/context.go``, ``build/opt.go``); a later NAME wins."""
    from builder.errors import ReferenceError

    out: dict[str, BuildContext] = {}
    for value in values:
        if not value:
            continue
        raw, sep, source = value.partition("=")
        if not sep:
            raise UsageError(f"--build-context {value}: invalid context value, expected "
                             "key=value")
        try:
            name = context_name(raw)
        except ReferenceError as err:
            raise UsageError(f"--build-context {value}: invalid context name {raw}: "
                             f"{err.reason}") from None
        out[name] = _context_value(name, source, value)
    return out


def _context_value(name: str, source: str, flag: str) -> BuildContext:
    if source.startswith(_REMOTE):
        raise UsageError(f"--build-context {flag}: remote (git or HTTP) contexts are not "
                         "supported by pybuild")
    if source.startswith("target:"):
        raise UsageError(f"--build-context {flag}: target: contexts are a buildx bake "
                         "feature (unsupported context source target)")
    if source.startswith("docker-image://"):
        ref = source.removeprefix("docker-image://")
        if ref == "scratch":
            return BuildContext(name, ContextKind.SCRATCH, source)
        from builder.errors import ReferenceError
        from builder.registry.reference import parse_reference

        try:
            parse_reference(ref)
        except ReferenceError as err:
            raise UsageError(f"--build-context {flag}: {err}") from None
        return BuildContext(name, ContextKind.IMAGE, source, ref=ref)
    if source.startswith("oci-layout://"):
        return _oci_layout(name, source, flag)
    if not os.path.exists(source):
        raise UsageError(f"--build-context {flag}: failed to get build context {name}: "
                         f"{source} does not exist")
    if not os.path.isdir(source):
        raise UsageError(f"--build-context {flag}: failed to get build context path {source}: "
                         "not a directory")
    return BuildContext(name, ContextKind.LOCAL, source, path=os.path.abspath(source))


def _oci_layout(name: str, source: str, flag: str) -> BuildContext:
    """buildx ``util/ocilayout/parse.go``: ``@DIGEST`` last, then ``:TAG``; neither:
    tag ``latest``."""
    from builder.registry.reference import DIGEST_RE, TAG_RE

    path, tag, digest = source.removeprefix("oci-layout://"), "", ""
    at = path.rfind("@")
    if at >= 0 and DIGEST_RE.fullmatch(path[at + 1:]):
        path, digest = path[:at], path[at + 1:]
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise UsageError(f"--build-context {flag}: unsupported digest {digest}")
    colon = path.rfind(":")
    if colon >= 0 and TAG_RE.fullmatch(path[colon + 1:]):
        path, tag = path[:colon], path[colon + 1:]
    if not tag and not digest:
        tag = "latest"
    if not os.path.isdir(path):
        raise UsageError(f"--build-context {flag}: invalid store at {path}: not a directory")
    return BuildContext(name, ContextKind.OCI_LAYOUT, source, path=os.path.abspath(path),
                        tag=tag, digest=digest)


# -- --metadata-file / --iidfile -----------------------------------------------------


def write_file_atomically(path: str, data: bytes, flag: str) -> None:
    """buildx's atomicwriter.WriteFile (0644): a temp file beside ``path``, fsynced,
    renamed over it, so a reader never sees half a file."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix=".pybuild-", dir=directory)
    except OSError as err:
        raise UsageError(f"{flag} {path}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.rename(temp, path)
    except OSError as err:
        os.unlink(temp)
        raise UsageError(f"{flag} {path}: {err.strerror}") from None

