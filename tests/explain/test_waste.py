"""Wasted bytes per layer (builder.explain.waste) on real overlay-format layer dirs
(whiteouts as 0:0 character devices, opaque dirs by xattr: root, as the store makes
them), against a reference that applies the layers one by one as a tar would."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from builder.explain.waste import wasted_bytes

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="whiteouts are character devices: mknod needs root")


def _file(layer: Path, rel: str, size: int, mtime: int = 1_000_000) -> None:
    path = layer / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))


def _whiteout(layer: Path, rel: str) -> None:
    path = layer / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def _opaque(layer: Path, rel: str) -> None:
    path = layer / rel
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def _layers(tmp_path: Path, count: int) -> list[Path]:
    dirs = [tmp_path / f"l{i}" for i in range(count)]
    for layer in dirs:
        layer.mkdir()
    return dirs


def test_a_file_deleted_or_replaced_later_is_waste(tmp_path: Path) -> None:
    l0, l1, l2 = _layers(tmp_path, 3)
    _file(l0, "keep", 5)
    _file(l0, "a", 10)
    _file(l1, "a", 20)          # replaces l0's a
    _whiteout(l2, "a")          # deletes l1's a
    assert wasted_bytes([l0, l1, l2]) == [10, 20, 0]


def test_a_deleted_directory_charges_every_layer_below_it(tmp_path: Path) -> None:
    l0, l1, l2 = _layers(tmp_path, 3)
    _file(l0, "d/x", 1)
    _file(l0, "d/sub/y", 2)
    _file(l1, "d/z", 4)
    _whiteout(l1, "d/x")        # l0's x: hidden by l1
    _whiteout(l2, "d")
    assert wasted_bytes([l0, l1, l2]) == [3, 4, 0]


def test_an_opaque_directory_hides_what_is_below_it_only(tmp_path: Path) -> None:
    l0, l1 = _layers(tmp_path, 2)
    _file(l0, "d/x", 7)
    _file(l0, "e/y", 100)
    _opaque(l1, "d")
    _file(l1, "d/x", 1)
    assert wasted_bytes([l0, l1]) == [7, 0]


def test_a_directory_over_a_file_and_a_file_over_a_directory(tmp_path: Path) -> None:
    l0, l1, l2 = _layers(tmp_path, 3)
    _file(l0, "p", 9)
    _file(l1, "p/inside", 3)    # a directory where l0 had a file
    _file(l2, "p", 1)           # and a file over that directory
    assert wasted_bytes([l0, l1, l2]) == [9, 3, 0]


def test_a_copy_up_hides_nothing_and_the_original_stays_charged(tmp_path: Path) -> None:
    l0, l1, l2 = _layers(tmp_path, 3)
    _file(l0, "f", 8)
    _file(l1, "f", 8)           # the same file again: not in l1's tar
    _whiteout(l2, "f")
    assert wasted_bytes([l0, l1, l2]) == [8, 0, 0]


def test_a_small_layer_over_a_large_one_does_not_walk_it(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    l0, l1 = _layers(tmp_path, 2)
    for i in range(300):
        _file(l0, f"src/d{i % 10}/f{i}", 1)
    _file(l1, "value", 1)
    listed: list[bytes] = []
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        listed.append(path)
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    assert wasted_bytes([l0, l1]) == [0, 0]
    assert listed == [os.fsencode(l1)]


# -- the reference: apply the layers one by one, as a tar would --------------------

def _reference(layers: list[Path]) -> list[int]:
    visible: dict[str, tuple[int, int]] = {}   # rel -> (owner layer, size); files only
    wasted = [0] * len(layers)

    def hide(rel: str, subtree_only: bool = False) -> None:
        prefix = rel + "/"
        for path in [p for p in visible if p.startswith(prefix)
                     or (p == rel and not subtree_only)]:
            owner, size = visible.pop(path)
            wasted[owner] += size

    for index, layer in enumerate(layers):
        for top, subdirs, files in os.walk(layer):
            rel_dir = os.path.relpath(top, layer)
            base = "" if rel_dir == "." else rel_dir + "/"
            if base and "trusted.overlay.opaque" in os.listxattr(top):
                hide(rel_dir, subtree_only=True)
            for name in subdirs:
                if base + name in visible:   # a directory over a file
                    hide(base + name)
            for name in files:
                rel = base + name
                st = os.lstat(os.path.join(top, name))
                old = visible.get(rel)
                if old is not None and not stat.S_ISCHR(st.st_mode) and \
                        _same(layers[old[0]] / rel, Path(top, name)):
                    continue   # a copy-up
                hide(rel)
                if not stat.S_ISCHR(st.st_mode):
                    visible[rel] = (index, st.st_size)
    return wasted


def _same(old: Path, new: Path) -> bool:
    a, b = os.lstat(old), os.lstat(new)
    return (a.st_mode, a.st_size, a.st_mtime_ns) == (b.st_mode, b.st_size, b.st_mtime_ns) \
        and old.read_bytes() == new.read_bytes()


@pytest.mark.parametrize("seed", range(40))
def test_random_stacks_match_the_reference(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = ["a", "b", "c"]
    count = rng.randint(2, 5)
    layers = _layers(tmp_path, count)
    for index, layer in enumerate(layers):
        for _ in range(rng.randint(1, 8)):
            rel = "/".join(rng.choice(names) for _ in range(rng.randint(1, 3)))
            target = layer / rel
            if any(p.exists() and not p.is_dir() for p in target.parents
                   if layer in p.parents) or target.exists():
                continue
            action = rng.random()
            if index and action < 0.2:
                _whiteout(layer, rel)
            elif index and action < 0.3:
                _opaque(layer, rel)
            elif action < 0.4:
                (layer / rel).mkdir(parents=True)
            else:
                _file(layer, rel, rng.choice([1, 10, 100]), mtime=rng.choice([1, 2]))
    assert wasted_bytes(layers) == _reference(layers)
