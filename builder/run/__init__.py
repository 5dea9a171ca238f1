"""The RUN sandbox and throw-away child processes.

``in_mount_namespace(fn)`` runs a function in a forked child that has its own
private mount namespace, so every mount it makes disappears when it exits,
however it exits (catalogue §0.3).  ``run_step`` runs one RUN command in new
mount, PID, IPC, UTS and network namespaces (the host's network only for
``--network host``; ``network.py`` connects the default one through slirp4netns)
over a snapshot, after ``pivot_root`` into the merged dir.

Imports builder.errors, builder.syscalls, builder.snapshot and builder.store.
"""

from builder.run.child import in_mount_namespace
from builder.run.sandbox import RunSpec, run_step

__all__ = ["RunSpec", "in_mount_namespace", "run_step"]
