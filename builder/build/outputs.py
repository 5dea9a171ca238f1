"""Build outputs (``-o``): image archives, or the final root filesystem as a dir or tar."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from builder.errors import BuildError, UsageError
from builder.image.archive import write_layout
from builder.run import in_mount_namespace
from builder.snapshot import Snapshot, prepare
from builder.store.store import Store


def write_outputs(store: Store, image_id: str, tags: list[str], outputs: list[Any],
                  compression: str) -> None:
    for output in outputs:
        if output.type in ("docker", "oci"):
            if not output.dest:
                raise UsageError(f"-o type={output.type} needs dest=PATH")
            as_dir = output.attrs.get("tar", "true") == "false"
            write_layout(store, [(image_id, tags)], output.dest,
                         compression="none" if output.type == "docker" else compression,
                         as_dir=as_dir)
        elif output.type in ("local", "tar"):
            if not output.dest:
                raise UsageError(f"-o type={output.type} needs dest=PATH")
            export_rootfs(store, store.image_top_chain(image_id), output.dest,
                          as_tar=output.type == "tar")
        else:
            raise UsageError(f"unknown output type {output.type!r}: use docker, oci, local "
                             "or tar")


def export_rootfs(store: Store, chain: str | None, dest: str, *, as_tar: bool) -> None:
    """Write the merged filesystem of ``chain`` to a directory, or as a tar (``-`` = stdout).

    The merged view comes from a read-only overlay mount, so whiteouts and opaque
    directories are resolved by the kernel exactly as a container sees them.
    """
    view = prepare(store, chain)
    try:
        if not as_tar:
            os.makedirs(dest, exist_ok=True)
        target = dest if dest == "-" else os.path.abspath(dest)
        in_mount_namespace(_copy_out, view, target, as_tar)
    finally:
        view.release()


def _copy_out(view: Snapshot, dest: str, as_tar: bool) -> None:
    merged = str(view.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    view.mount(merged, readonly=True)
    create = ["tar", "--sort=name", "--numeric-owner", "--xattrs", "--xattrs-include=*",
              "-C", merged, "-cf", "-" if as_tar and dest == "-" else
              (dest if as_tar else "-"), "."]
    if as_tar:
        result = subprocess.run(create, capture_output=True)
    else:
        writer = subprocess.Popen(create, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        reader = subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                                 "-C", dest, "-xpf", "-"], stdin=writer.stdout,
                                capture_output=True)
        assert writer.stdout is not None and writer.stderr is not None
        writer.stdout.close()
        writer.wait()
        error = writer.stderr.read()
        writer.stderr.close()
        result = reader if reader.returncode else subprocess.CompletedProcess(
            create, writer.returncode, b"", error)
    if result.returncode != 0:
        raise BuildError(f"exporting the root filesystem to {dest} failed: "
                         f"{result.stderr.decode(errors='replace').strip()[-300:]}")
