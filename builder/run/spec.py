"""What a RUN step asks of the sandbox: its command, environment and mounts, as data.

``RunSpec`` is built by the engine (``builder.engine.run_step``) and read by the
namespace child (``builder.run.nschild``); ``MountSpec`` is one extra mount,
made by ``builder.run.mountpoints``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from builder.run.runopts import RunOptions
    from builder.snapshot.base import ActiveSnapshot

HOSTNAME = "buildkitsandbox"
HOSTS = (f"127.0.0.1\tlocalhost {HOSTNAME}\n"
         "::1\tlocalhost ip6-localhost ip6-loopback\n")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORKS = ("default", "host", "none")


class MountSpec(msgspec.Struct):
    """One extra mount of a RUN step (``RUN --mount``, secrets)."""

    kind: str                      # "bind", "tmpfs", "view" (another stage or image),
                                   # "context-dir" and "context-file" (subpath below
                                   # source, the context) or "secret" (a copy of the
                                   # file at source)
    target: str                    # absolute path inside the image
    source: str = ""               # host path: the bound dir, or the context
    readonly: bool = True
    is_dir: bool = True            # the kind of mount point to create if the image lacks it
    view: ActiveSnapshot | None = None  # for "view": source inside it is mounted at target
    options: str = ""              # tmpfs options
    subpath: str = ""              # below source: "bind" a cache dir (made if missing),
                                   # "context-dir"/"context-file" the resolved source
    # For "context-dir": writes the whiteouts of what .dockerignore
    # hides below source into the dir given, False if none (builder/run/ctxmount.py).
    hide: Callable[[str], bool] | None = None
    uid: int = 0                   # for "secret": the copy's owner, group and mode
    gid: int = 0
    mode: int = 0o400


class RunSpec(msgspec.Struct):
    argv: list[str]
    env: list[str] = msgspec.field(default_factory=list)
    cwd: str = "/"
    user: str = ""
    network: str = "default"       # one of NETWORKS: "default" is isolated (run/network.py)
    hostname: str = HOSTNAME
    mounts: list[MountSpec] = msgspec.field(default_factory=list)
    pipes: list[tuple[str, bytes]] = msgspec.field(default_factory=list)  # files for /dev/pipes/
    options: RunOptions | None = None  # --add-host, --ulimit, --shm-size (run/runopts.py)
