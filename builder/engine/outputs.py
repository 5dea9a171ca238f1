"""Build outputs (``-o``): image archives, or the final root filesystem as a dir or tar.

The root filesystem is a read-only mount of a snapshot of the image's chain, made
by the build's own snapshot driver (``--storage-driver``): under vfs no overlay is
ever mounted.  The tree copy of ``-o type=local`` is ``builder.engine.localtree``;
it and the archive writer are imported only when an output asks for them, so a
build with no ``-o`` (a cached rebuild in CI) loads none of that machinery.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from builder.engine.options import Output
from builder.errors import BuildError, UsageError
from builder.store.store import Store

if TYPE_CHECKING:  # -o local|tar only: a build without -o never loads the snapshot code
    from builder.image.manifest import ImageAnnotations
    from builder.snapshot import ActiveSnapshot


def write_outputs(store: Store, image_id: str, tags: list[str], outputs: list[Output],
                  compression: str, annotations: ImageAnnotations | None = None, *,
                  driver: str = "overlay") -> None:
    """Write each ``-o`` output; ``driver`` is the snapshot driver the build used."""
    for output in outputs:
        if output.type in ("docker", "oci"):
            if not output.dest:
                raise UsageError(f"-o type={output.type} needs dest=PATH")
            from builder.image.archive import write_layout

            as_dir = output.attrs.get("tar", "true") == "false"
            write_layout(store, [(image_id, tags)], output.dest,
                         compression="none" if output.type == "docker" else compression,
                         as_dir=as_dir, label=f"-o type={output.type}",
                         annotations=annotations)
        elif output.type in ("local", "tar"):
            if not output.dest:
                raise UsageError(f"-o type={output.type} needs dest=PATH")
            export_rootfs(store, store.image_top_chain(image_id), output.dest,
                          as_tar=output.type == "tar", preserve=output.preserve, driver=driver)
        else:
            raise UsageError(f"unknown output type {output.type!r}: use docker, oci, local "
                             "or tar")


def export_rootfs(store: Store, chain: str | None, dest: str, *, as_tar: bool,
                  preserve: bool = False, driver: str = "overlay") -> None:
    """Write the merged filesystem of ``chain`` to a directory, or as a tar (``-`` = stdout).

    The merged view is a read-only mount of a ``driver`` snapshot, so whiteouts and
    opaque directories are resolved as a container sees them (by the kernel's
    overlay, or already in vfs's tree).
    """
    from builder.run import in_mount_namespace
    from builder.snapshot import prepare

    view = prepare(store, chain, driver)
    try:
        if as_tar:
            target = dest if dest == "-" else os.path.abspath(dest)
            in_mount_namespace(_tar_out, view, target)
            return
        from builder.engine.localtree import local_out

        stats = in_mount_namespace(local_out, view, os.path.abspath(dest), preserve,
                                   _mounted)
    finally:
        view.release()
    summary = stats.summary()
    if summary:
        sys.stderr.write(f"pybuild: {summary}\n")


def _mounted(view: ActiveSnapshot) -> str:
    merged = str(view.work.path / "merged")
    os.makedirs(merged, exist_ok=True)
    view.mount(merged, readonly=True)
    return merged


def _tar_out(view: ActiveSnapshot, dest: str) -> None:
    import subprocess  # -o type=tar only

    merged = _mounted(view)
    result = subprocess.run(["tar", "--sort=name", "--numeric-owner", "--xattrs",
                             "--xattrs-include=*", "-C", merged, "-cf", dest, "."],
                            stderr=subprocess.PIPE)  # stdout: the tar itself for dest "-"
    if result.returncode != 0:
        raise BuildError(f"exporting the root filesystem to {dest} failed: "
                         f"{result.stderr.decode(errors='replace').strip()[-300:]}")
