"""Shared by the recorder and the differential test: describe a rootfs and an image.

Both sides go through the same code (unpack with ``apply_layer_tar``, walk, hash) so
that a difference is the builders', never the describers'.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

from builder.layers.apply import apply_layer_tar

CASES = Path(__file__).resolve().parents[2] / "testdata" / "differential"

# `docker export` adds these for the container runtime (moby's initlayer and .dockerenv;
# "etc" only as an entry: a scratch image gets one there, its contents are compared);
# they are not image content, so neither side's copy is compared.
IGNORED = {".dockerenv", "etc", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"}
# Mount points: export shows stubs whose metadata comes from the daemon, not the image.
MOUNT_POINTS = ("dev", "proc", "sys")

# A base image made on this machine (testdata/debian-rootfs.sh), imported under this
# name on both sides.  Its contents depend on the day debootstrap ran, so a case built
# on it records only how its rootfs differs from the base ("files_relative_to").
DEBIAN = "debian:bookworm"

CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts",
                 "Volumes", "StopSignal", "Healthcheck", "OnBuild", "Shell")


def ignored(rel: str) -> bool:
    top = rel.split("/", 1)[0]
    return rel in IGNORED or top in MOUNT_POINTS


def describe_tree(root: Path) -> dict[str, dict[str, Any]]:
    """Every path under ``root``: type, mode, owner, content hash, link target, and a
    hardlink group (the first path, in sorted order, sharing the inode)."""
    entries: dict[str, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if ignored(rel):
                continue
            st = os.lstat(path)
            entry: dict[str, Any] = {"mode": oct(stat.S_IMODE(st.st_mode)),
                                     "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISDIR(st.st_mode):
                entry["type"] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                entry["type"] = "symlink"
                entry["target"] = os.readlink(path)
                entry.pop("mode")   # symlink modes are not meaningful on Linux
            elif stat.S_ISREG(st.st_mode):
                entry["type"] = "file"
                entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    entry["hardlink"] = inodes.setdefault((st.st_dev, st.st_ino), rel)
            else:
                entry["type"] = "other"
            entries[rel] = entry
    # os.walk order is by directory; hardlink groups must not depend on it.
    groups: dict[str, str] = {}
    for rel in sorted(entries):
        first = entries[rel].get("hardlink")
        if first is not None:
            entries[rel]["hardlink"] = groups.setdefault(first, rel)
    for rel, entry in entries.items():
        if entry.get("hardlink") == rel and sum(
                1 for e in entries.values() if e.get("hardlink") == rel) == 1:
            entry.pop("hardlink")   # its other names are in ignored paths or outside
    return dict(sorted(entries.items()))


def needs_debian(case: str) -> bool:
    return DEBIAN.split(":")[0] + ":" in (CASES / case / "Dockerfile").read_text()


def relative_to(files: dict[str, dict[str, Any]],
                base: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The paths of ``files`` that are new or differ from ``base``, and base paths that
    are gone (``{"type": "absent"}``): equal for two trees exactly when they are equal."""
    delta = {rel: entry for rel, entry in files.items() if base.get(rel) != entry}
    delta.update({rel: {"type": "absent"} for rel in base if rel not in files})
    return dict(sorted(delta.items()))


def describe_base(tar_path: Path, work: Path) -> dict[str, dict[str, Any]]:
    """describe_tree of a base image's rootfs tarball (unpacked into ``work``)."""
    unpack(tar_path, work)
    return describe_tree(work)


def unpack(tar_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with open(tar_path, "rb") as src:
        apply_layer_tar(src, dest, mode="merged")


def _open_member(archive: tarfile.TarFile, name: str) -> Any:
    data = archive.extractfile(name)
    assert data is not None, name
    raw = data.read()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_saved(archive_path: Path, rootfs: Path | None = None) -> dict[str, Any]:
    """The config of the single image in a `docker save`-style archive (manifest.json);
    with ``rootfs``, also apply its layers there in order."""
    import io

    with tarfile.open(archive_path) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = json.loads(_open_member(archive, manifest[0]["Config"]))
        if rootfs is not None:
            rootfs.mkdir(parents=True, exist_ok=True)
            for layer in manifest[0]["Layers"]:
                apply_layer_tar(io.BytesIO(_open_member(archive, layer)), rootfs, mode="merged")
    return config


def describe_config(config: dict[str, Any]) -> dict[str, Any]:
    cfg = config.get("config") or {}
    result: dict[str, Any] = {name: cfg.get(name) or None for name in CONFIG_FIELDS}
    result["history"] = [{"created_by": h.get("created_by", ""),
                          "empty_layer": bool(h.get("empty_layer", False))}
                         for h in config.get("history", [])]
    result["layers"] = len((config.get("rootfs") or {}).get("diff_ids") or [])
    return result


def load_expected(case: str) -> dict[str, Any]:
    return json.loads((CASES / case / "expected.json").read_text())
