"""Which Dockerfile a build reads: ``-f FILE``, ``-f -`` (stdin), a context of ``-``
(stdin, no context), or the default name found in the context directory.

The default is ``Dockerfile``, else ``dockerfile`` (docker/buildx ``build/opt.go``,
``handleLowercaseDockerfile``; moby/buildkit ``frontend/dockerui/config.go`` reads the
lower-case name too), else ``Containerfile`` (containers/buildah ``pkg/util/util.go``
``DiscoverContainerfile``, which tries ``Containerfile`` first: Docker's name goes
first here, so a project with both builds what ``docker build`` builds).
``-f`` is relative to the current directory, as docker's.  The ignore file that goes
with the choice is ``builder.context.ignore.find_ignore_file``'s business.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import msgspec

from builder import replay
from builder.errors import ContextError, UsageError

DEFAULT_NAMES = ("Dockerfile", "dockerfile", "Containerfile")
STDIN = "-"
# What starts an archive: a tar's "ustar" magic at offset 257, or a compressor's.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


class DockerfileSource(msgspec.Struct, frozen=True):
    """Where the build's context and Dockerfile come from.

    ``dockerfile`` is ``Path("-")`` for a Dockerfile read from stdin into ``text``
    with a context directory: the ignore-file lookup then skips the Dockerfile's
    neighbour, as buildx's temporary Dockerfile directory has none."""

    context: Path | None          # None: no context (the Dockerfile came on stdin)
    dockerfile: Path | None
    text: bytes | None = None     # the Dockerfile, when read from stdin


def locate(context: str, file: str | None, stdin: BinaryIO) -> DockerfileSource:
    """Resolve ``pybuild build [-f FILE] CONTEXT`` as buildx's ``loadInputs`` does
    (docker/buildx ``build/opt.go``)."""
    if context == STDIN:
        if file == STDIN:
            raise UsageError("invalid argument: can't use stdin for both the build context "
                             "and the Dockerfile")
        if file is not None:
            raise UsageError(f"ambiguous Dockerfile source: both stdin (context '-') and "
                             f"-f {file} name a Dockerfile")
        return DockerfileSource(None, None, read_stdin_dockerfile(stdin))
    directory = Path(context)
    if not directory.is_dir():
        raise UsageError(f"context {context!r} is not a directory")
    if file == STDIN:
        return DockerfileSource(directory, Path(STDIN), read_stdin_dockerfile(stdin))
    if file is not None:
        return DockerfileSource(directory, Path(file))
    return DockerfileSource(directory, default_dockerfile(directory))


def default_dockerfile(context: Path) -> Path:
    """The first of DEFAULT_NAMES in ``context``.  A symlink is resolved inside the
    context (chroot semantics), as BuildKit reads it through the context: ``Dockerfile
    -> /etc/shadow`` must not feed a host file to the parser, whose errors quote it
    (catalogue C12).  ``-f`` names a file outside on purpose; it is not this."""
    recorder = replay.recording()
    for name in DEFAULT_NAMES:
        candidate = context / name
        if not os.path.lexists(candidate):
            if recorder is not None:
                recorder.absent(str(candidate))
            continue
        if not candidate.is_symlink():
            return candidate
        if recorder is not None:
            recorder.refuse("a symlinked Dockerfile")
        from builder.rootpath import resolve_in_root

        inside = resolve_in_root(str(context), name)
        if inside is None:
            raise ContextError(f"{candidate}: {name} not found: a symlinked {name} must "
                               "point within the build context")
        return Path(inside)
    raise ContextError(f"{context}: no Dockerfile in the context (looked for "
                       f"{', '.join(DEFAULT_NAMES)}); name one with -f")


def read_stdin_dockerfile(stdin: BinaryIO) -> bytes:
    """A Dockerfile from stdin, read up to one byte past the parser's size cap (the
    parser then says it is too large) rather than without bound."""
    from builder import limits

    data = stdin.read(limits.get().max_dockerfile_bytes + 1)
    if data.startswith(_COMPRESSED_MAGIC) or data[257:262] == b"ustar":
        # buildx would take it as the context; pybuild cannot, and parsing an
        # archive as a Dockerfile would only give a confusing parse error.
        raise UsageError("stdin holds an archive: a build context on stdin is not "
                         "supported; extract it and pass its directory")
    return data
