"""The RUN sandbox and throw-away child processes.

``in_mount_namespace(fn)`` runs a function in a forked child that has its own
private mount namespace, so every mount it makes disappears when it exits,
however it exits (catalogue §0.3).  ``run_step`` runs one RUN command in new
mount, PID, IPC, UTS and network namespaces (the host's network only for
``--network host``; ``network.py`` connects the default one through slirp4netns)
over a snapshot, after ``pivot_root`` into the merged dir.

Modules: ``sandbox`` (run_step: the parent's side), ``nschild`` (the setup child
and PID 1), ``rootfs`` (init layer, /proc /dev /sys, masks), ``users`` (USER from
the image's passwd/group), ``spec`` (RunSpec, MountSpec), ``mountpoints`` (extra
mounts, on targets resolved in the root), ``ctxmount``, ``network``, ``runopts``,
``child`` (in_mount_namespace).  The names below load on first use: importing
``builder.run.mountpoints`` for a path lookup must not load the sandbox.

Imports builder.errors, builder.limits, builder.rootpath, builder.syscalls and
builder.snapshot (types only).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.run.child import in_mount_namespace
    from builder.run.sandbox import run_step
    from builder.run.spec import RunSpec

__all__ = ["RunSpec", "in_mount_namespace", "run_step"]

_HOME = {"RunSpec": "builder.run.spec", "in_mount_namespace": "builder.run.child",
         "run_step": "builder.run.sandbox"}


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module 'builder.run' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
