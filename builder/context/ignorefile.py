"""Which ignore file a build uses (``.dockerignore``, ``.containerignore`` and the
per-Dockerfile ones) and its bytes, read safely; :mod:`builder.context.ignore` parses
and matches it."""

from __future__ import annotations

import errno
import os
import stat

from builder import limits, replay
from builder.errors import ContextError
from builder.rootpath import open_below

# Beside the Dockerfile, then in the context (find_ignore_file says whose order).
_BESIDE_IGNORES = (".containerignore", ".dockerignore")
_CONTEXT_IGNORES = (".containerignore", ".dockerignore")


def find_ignore_file(context_dir: str, dockerfile_path: str | None) -> str | None:
    """The ignore file of a build, first found of: ``<Dockerfile>.containerignore`` and
    ``<Dockerfile>.dockerignore`` beside the Dockerfile (``dockerfile_path`` as
    given to ``-f``, default ``<context>/Dockerfile``; none for ``-`` (stdin)), then
    ``<context>/.containerignore`` and ``<context>/.dockerignore``.  None if none is
    a regular file.  A symlink that leaves its directory is refused: BuildKit resolves
    it inside the transferred tree, never on the host.

    BuildKit reads only the two ``.dockerignore`` names (moby/buildkit
    ``frontend/dockerui/config.go``); the ``.containerignore`` ones are buildah's
    (containers/buildah ``pkg/parse/parse.go`` ``ContainerIgnoreFile``).  The order is
    the one buildah documents (its comment there and issue 14); buildah's code checks
    ``<file>.dockerignore`` last, so there that one wins when both exist.
    """
    found = _find(context_dir, dockerfile_path)
    return None if found is None else found[0]


def read_ignore_bytes(context_dir: str, dockerfile_path: str | None) -> tuple[str, bytes] | None:
    """The ignore file ``find_ignore_file`` chooses and its content, read as it was
    checked: opened again below its directory, following no link (``_read_below``).
    The context may change between the check and the read (catalogue C03): a file
    swapped for a FIFO must not hang the read, one swapped for a link to a host file
    must not be read; each is a one-line ContextError, as is a check that meets the
    change."""
    # Here, not at the top: importing builder.context must not load checksum's hashlib.
    from builder.context.checksum import reading_the_context

    with reading_the_context():
        found = _find(context_dir, dockerfile_path)
        if found is None:
            return None
        candidate, root = found
        real_root = os.path.realpath(root)
        rel = os.path.relpath(os.path.realpath(candidate), real_root)
        return candidate, _read_below(real_root, rel, limits.get().max_dockerfile_bytes)


def _read_below(root: str, rel: str, limit: int) -> bytes:
    """The regular file ``rel`` below ``root``, reached through no symlink
    (``rootpath.open_below``) and at most ``limit`` bytes."""
    fd = open_below(root, rel)
    try:
        st = os.fstat(fd)
        path = os.path.join(root, rel)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "no longer a regular file", path)
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than {limit}", path)
        # Reopened through the O_PATH fd: the inode just checked, which is regular (a
        # FIFO is never opened).
        with open(f"/proc/self/fd/{fd}", "rb") as file:
            return file.read(limit)
    finally:
        os.close(fd)


def _find(context_dir: str, dockerfile_path: str | None) -> tuple[str, str] | None:
    """``find_ignore_file``'s choice and the directory it must stay in."""
    if dockerfile_path is None:
        dockerfile_path = os.path.join(context_dir, "Dockerfile")
    candidates = [(os.path.join(context_dir, name), context_dir) for name in _CONTEXT_IGNORES]
    if dockerfile_path != "-":  # a Dockerfile from stdin has no neighbour
        beside = os.path.dirname(os.path.abspath(dockerfile_path))
        candidates[:0] = [(dockerfile_path + suffix, beside) for suffix in _BESIDE_IGNORES]
    recorder = replay.recording()
    for candidate, root in candidates:
        if not os.path.lexists(candidate):
            if recorder is not None:
                recorder.absent(candidate)
            continue
        if recorder is not None and not (os.path.isfile(candidate)
                                         and not os.path.islink(candidate)):
            recorder.refuse(f"{candidate}: a link or not a regular file")
        if os.path.islink(candidate):
            real, real_root = os.path.realpath(candidate), os.path.realpath(root)
            if os.path.commonpath([real, real_root]) != real_root:
                raise ContextError(f"{candidate}: symlink points outside {root}")
        if os.path.isfile(candidate):
            return candidate, root
    return None
