"""Which ignore file a build uses (``.dockerignore``, ``.containerignore`` and the
per-Dockerfile ones); :mod:`builder.context.ignore` reads and matches it."""

from __future__ import annotations

import os

from builder import replay
from builder.errors import ContextError

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
            return candidate
    return None
