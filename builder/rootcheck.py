"""One line instead of a traceback when a non-root user asks for what needs root.

pybuild has no rootless mode yet (a user namespace with ``userxattr`` overlay
mounts): building runs RUN steps in mount, PID, IPC, UTS and network namespaces,
and every layer it extracts or commits keeps root-owned files, device nodes and
``trusted.overlay`` whiteouts, which only root may create.  Commands that only
read or tidy a store the user owns (images, history, inspect, explain of built
images, df, prune, doctor, tag, rmi, save, push, check, login) need no root.
"""

from __future__ import annotations

import os

from builder.errors import SandboxError

_WHY = ("its layers keep root-owned files, device nodes and overlay whiteouts, which only "
        "root may create")


def need_root(what: str, why: str = _WHY) -> None:
    """Refuse ``what`` (``building``, ``importing``...) unless running as root."""
    if os.geteuid() == 0:
        return
    raise SandboxError(f"{what} needs root: {why} (rootless mode is not built yet); run "
                       f"pybuild as root, e.g. with sudo")


def need_root_to_build() -> None:
    need_root("building", "RUN steps run in mount, PID and network namespaces and "
              "each layer keeps root-owned files and overlay whiteouts")
