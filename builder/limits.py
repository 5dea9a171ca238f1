"""Resource limits: every cap on hostile input in one place (catalogue 1.X).

Each limit has a documented default (docs/limits.md) that a user can raise, or
lower, with an environment variable, ``PYBUILD_<NAME>`` (``max_layers`` is
``PYBUILD_MAX_LAYERS``).  The modules that enforce a limit read it here, and
their error names the variable, so a hit limit says how to raise it.

A leaf module: it imports nothing from ``builder`` (it sits beside ``errors``
at layer 0), so the parser, the layer code and the sandbox can all use it.
A value that is not a positive integer is ignored with a one-line warning:
a typo in the environment must not turn into a traceback.
"""

from __future__ import annotations

import os
import sys

import msgspec

PREFIX = "PYBUILD_"


class Limits(msgspec.Struct, frozen=True):
    # Layers in one image or one build's chain.  Overlayfs stacks at most 500
    # lower dirs (OVL_MAX_STACK) and a RUN adds one (the init layer): 499 is
    # the deepest image the overlay driver can still run a step on.
    max_layers: int = 499
    # Uncompressed bytes of a layer per compressed byte (tar/gzip/zstd bombs,
    # X01).  Applies only past max_layer_ratio_floor uncompressed bytes, so small
    # layers full of zeros stay legal.
    max_layer_ratio: int = 100
    max_layer_ratio_floor: int = 64 << 20
    # The Dockerfile (BuildKit's limits: 10 MiB file, 64 KiB logical line).
    max_dockerfile_bytes: int = 10 << 20
    max_line_bytes: int = 65535
    max_instructions: int = 100_000
    # One variable expansion's result ($A$A$A... doubling, D-rows).
    max_expansion: int = 1 << 20
    # Entries walked in the build context for one COPY/ADD/bind source (X11).
    max_context_files: int = 1_000_000
    # /etc/passwd and /etc/group as read for USER/--chown (R15).
    max_passwd_bytes: int = 1 << 20
    # Free space a RUN step must leave on the store's filesystem (X09): the
    # step is stopped when less is left, so the store and other builds can go on.
    min_free_bytes: int = 100 << 20
    # Manifests (images) one source may list: an OCI index, a docker-archive
    # manifest.json, a --cache-from layout.  Repeats are parsed once, but a
    # 48 000-entry index must not be walked at all (D: amplification).
    max_manifests: int = 1000
    # JSON bytes read and parsed from one such source, all documents together
    # (index, manifests, configs, cache entry lists), each distinct one once.
    max_parsed_bytes: int = 64 << 20


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (``max_layers`` → ``PYBUILD_MAX_LAYERS``)."""
    return PREFIX + field.upper()


def get() -> Limits:
    """The limits in effect: defaults, overridden by ``PYBUILD_MAX_*`` variables.

    Read on every call (a dict lookup per field), so a test or a long-lived
    process sees a changed environment.
    """
    values: dict[str, int] = {}
    for field in msgspec.structs.fields(Limits):
        raw = os.environ.get(env_name(field.name))
        if raw is None:
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            value = 0
        if value <= 0:
            print(f"pybuild: warning: {env_name(field.name)}={raw!r} is not a positive "
                  f"integer; using the default {field.default}", file=sys.stderr)
            continue
        values[field.name] = value
    return Limits(**values)

