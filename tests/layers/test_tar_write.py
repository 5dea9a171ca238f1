"""Layer dir (overlay format) -> OCI tar: format, order, metadata, reproducibility.

Producer-side catalogue rows (W10-W12) are in tests/security/test_whiteout_rows.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from builder.errors import LayerError
from builder.layers import layer_changes, layer_diff_id, write_layer_tar
from builder.layers.tar_write import tar_header

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, chown, trusted.* xattrs"),
]

CAP = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12


def tar_of(layer, **kw) -> bytes:
    out = io.BytesIO()
    n = write_layer_tar(layer, out, **kw)
    assert n == len(out.getvalue())
    return out.getvalue()


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8",
                      errors="surrogateescape") as tf:
        return tf.getmembers()


def names(data: bytes) -> list[str]:
    return [m.name + ("/" if m.isdir() else "") for m in members(data)]


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR, 0)


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    root = tmp_path / "layer"
    root.mkdir()
    return root


def test_whiteouts_and_opaque_dir_order(layer):
    (layer / "etc").mkdir()
    whiteout(layer / "etc" / "gone")
    (layer / "etc" / "keep").write_text("k")
    (layer / "opq").mkdir()
    os.setxattr(layer / "opq", "trusted.overlay.opaque", b"y")
    (layer / "opq" / "a").write_text("a")
    data = tar_of(layer)
    assert names(data) == ["etc/", "etc/.wh.gone", "etc/keep", "opq/", "opq/.wh..wh..opq",
                           "opq/a"]
    for m in members(data):
        if os.path.basename(m.name).startswith(".wh."):
            assert (m.type, m.size, m.mode, m.uid, m.gid, m.mtime) == (b"0", 0, 0, 0, 0, 0)
    assert b"trusted.overlay" not in data


def test_root_opaque_marker_without_root_entry(layer):
    os.setxattr(layer, "trusted.overlay.opaque", b"y")
    (layer / "f").write_text("f")
    assert names(tar_of(layer)) == [".wh..wh..opq", "f"]


def test_order_is_per_directory_byte_order(layer):
    for name in ["b", "a.b", "B", "a", "\udcff", "~"]:
        (layer / name).mkdir() if name == "a" else (layer / name).write_text("x")
    (layer / "a" / "z").write_text("z")
    assert names(tar_of(layer)) == ["B", "a/", "a/z", "a.b", "b", "~", "\udcff"]


def test_pax_long_and_non_ascii_names(layer, tmp_path):
    long_dir = layer / ("d" * 150)
    long_dir.mkdir()
    (long_dir / "café").write_text("c")
    (layer / "bad\udcffname").write_text("b")
    os.symlink("t" * 200, layer / "longlink")
    data = tar_of(layer)
    got = {m.name: m for m in members(data)}
    assert got["d" * 150 + "/café"].pax_headers["path"] == "d" * 150 + "/café"
    assert "bad\udcffname" in got
    assert got["longlink"].linkname == "t" * 200
    assert b"hdrcharset" not in data and b"PaxHeader" in data
    listing = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True, check=True)
    assert b"longlink" in listing.stdout


def test_ustar_fields_as_buildkit_writes_them(layer):
    (layer / "f").write_text("f")
    os.chown(layer / "f", 1000, 1000)
    data = tar_of(layer)
    header = data[:512]
    assert header[257:265] == b"ustar\x0000"
    assert header[265:329] == bytes(64)  # uname and gname empty
    (m,) = members(data)
    assert (m.uname, m.gname, m.uid, m.gid, m.pax_headers) == ("", "", 1000, 1000, {})
    assert len(data) == 512 + 512 + 1024  # header, body, two zero blocks, no record padding


def test_hardlinks_first_is_file_rest_link(layer):
    (layer / "b").write_text("data")
    os.link(layer / "b", layer / "a")
    (layer / "d").mkdir()
    os.link(layer / "b", layer / "d" / "c")
    got = members(tar_of(layer))
    assert [(m.name, m.type, m.linkname, m.size) for m in got] == [
        ("a", b"0", "", 4), ("b", b"1", "a", 0), ("d", b"5", "", 0), ("d/c", b"1", "a", 0)]


def test_devices_fifos_setuid_and_capability(layer):
    os.mknod(layer / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(layer / "sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.chmod(layer / "sda", 0o660)  # mknod's mode is masked by the umask
    os.mkfifo(layer / "fifo", 0o600)
    (layer / "su").write_text("su")
    os.chmod(layer / "su", 0o4755)
    (layer / "tmp").mkdir()
    os.chmod(layer / "tmp", 0o1777)
    (layer / "ping").write_text("p")
    os.setxattr(layer / "ping", "security.capability", CAP)
    os.setxattr(layer / "ping", "user.note", b"kept")
    got = {m.name: m for m in members(tar_of(layer))}
    assert (got["null"].type, got["null"].devmajor, got["null"].devminor) == (b"3", 1, 3)
    assert (got["sda"].type, got["sda"].devmajor, got["sda"].mode) == (b"4", 8, 0o660)
    assert got["fifo"].type == b"6"
    assert got["su"].mode == 0o4755 and got["tmp"].mode == 0o1777
    pax = got["ping"].pax_headers
    assert pax["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
    assert pax["SCHILY.xattr.user.note"] == "kept"


def test_overlay_xattrs_never_exported(layer):
    (layer / "d").mkdir()
    for key in ("trusted.overlay.origin", "trusted.overlay.impure", "user.overlay.opaque",
                "user.overlay.overlay.opaque", "trusted.other"):
        os.setxattr(layer / "d", key, b"y")
    data = tar_of(layer)
    assert b"overlay" not in data and b"trusted" not in data
    assert names(data) == ["d/"]


def test_sockets_skipped(layer):
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(layer / "sock"))
        assert names(tar_of(layer)) == []


def _tree(root: Path, mtime_ns: int, reverse: bool) -> None:
    items = ["a", "b", "c", "d"]
    for name in reversed(items) if reverse else items:
        (root / name).mkdir()
        (root / name / "f").write_bytes(name.encode() * 1000)
    os.symlink("a/f", root / "l")
    for path in [*root.rglob("*"), root]:
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)


def test_source_date_epoch_reproducible(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _tree(one, 1_700_000_000_123_456_789, reverse=False)
    _tree(two, 1_800_000_000_000_000_000, reverse=True)
    a = tar_of(one, source_date_epoch=1_600_000_000)
    b = tar_of(two, source_date_epoch=1_600_000_000)
    assert a == b
    assert {m.mtime for m in members(a)} == {1_600_000_000}
    assert layer_diff_id(one, source_date_epoch=1_600_000_000) == layer_diff_id(
        two, source_date_epoch=1_600_000_000)
    assert tar_of(one) != tar_of(two)


def test_epoch_clamps_only_newer_mtimes(layer):
    (layer / "old").write_text("o")
    os.utime(layer / "old", ns=(10**18, 1_000_000_000_999_999_999))
    m = members(tar_of(layer, source_date_epoch=2_000_000_000))[0]
    assert m.mtime == 1_000_000_000  # truncated, not rounded, no sub-second record
    assert "mtime" not in m.pax_headers


def test_layer_diff_id_is_sha256_of_the_tar(layer):
    (layer / "f").write_bytes(os.urandom(300_000))
    whiteout(layer / "gone")
    data = tar_of(layer)
    assert layer_diff_id(layer) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def test_tar_header_pax_record_lengths():
    for size in range(1, 300):
        value = b"v" * size
        hdr = tar_header(b"n", b"0", xattrs={"user.k": value})
        info = tarfile.TarInfo.frombuf(hdr[-512:], "utf-8", "strict")
        assert info.name == "n"
        with tarfile.open(fileobj=io.BytesIO(hdr + bytes(1024))) as tf:
            assert tf.next().pax_headers["SCHILY.xattr.user.k"] == value.decode()


def test_big_ids_and_mtime_go_to_pax():
    hdr = tar_header(b"n", b"0", uid=2**32 - 2, gid=5_000_000, mtime=-5, size=0)
    with tarfile.open(fileobj=io.BytesIO(hdr + bytes(1024))) as tf:
        m = tf.next()
    assert (m.uid, m.gid, m.mtime) == (2**32 - 2, 5_000_000, -5)


# ------------------------------------------------------------------ lowers

def test_lowers_prune_unchanged_copy_ups(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for root in (lower, upper):
        (root / "usr" / "bin").mkdir(parents=True)
        (root / "usr" / "bin" / "same").write_text("same")
        os.utime(root / "usr" / "bin" / "same", ns=(5, 1_600_000_000_000_000_001))
    (lower / "usr" / "bin" / "chmodded").write_text("c")
    (upper / "usr" / "bin" / "chmodded").write_text("c")
    os.chmod(upper / "usr" / "bin" / "chmodded", 0o700)
    (upper / "usr" / "bin" / "new").write_text("n")
    whiteout(upper / "never-existed")
    whiteout(upper / "usr" / "gone")
    (lower / "usr" / "gone").write_text("g")
    got = names(tar_of(upper, lowers=[lower]))
    assert got == ["usr/", "usr/bin/", "usr/bin/chmodded", "usr/bin/new", "usr/.wh.gone"]


def test_lowers_expand_opaque_dirs(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "d" / "sub").mkdir(parents=True)
    (lower / "d" / "old").write_text("o")
    (lower / "d" / "sub" / "x").write_text("x")
    (upper / "d" / "sub").mkdir(parents=True)
    os.setxattr(upper / "d", "trusted.overlay.opaque", b"y")
    (upper / "d" / "new").write_text("n")
    got = names(tar_of(upper, lowers=[lower]))
    assert got == ["d/", "d/new", "d/.wh.old", "d/sub/", "d/sub/.wh.x"]
    assert names(tar_of(upper)) == ["d/", "d/.wh..wh..opq", "d/new", "d/sub/"]


def test_lowers_stack_whiteouts_and_opaque(tmp_path):
    top, bottom, upper = tmp_path / "top", tmp_path / "bottom", tmp_path / "upper"
    for root in (top, bottom, upper):
        root.mkdir()
    (bottom / "a").write_text("a")
    (bottom / "b").write_text("b")
    whiteout(top / "a")                  # a deleted by the top lower
    whiteout(upper / "a")                # so deleting it again is a no-op
    whiteout(upper / "b")
    assert names(tar_of(upper, lowers=[top, bottom])) == [".wh.b"]


def test_lowers_opaque_in_a_lower_hides_what_is_below(tmp_path):
    top, bottom, upper = tmp_path / "top", tmp_path / "bottom", tmp_path / "upper"
    (bottom / "d").mkdir(parents=True)
    (bottom / "d" / "old").write_text("old")
    (bottom / "f").mkdir()
    (bottom / "f" / "x").write_text("x")
    (top / "d").mkdir(parents=True)
    os.setxattr(top / "d", "trusted.overlay.opaque", b"y")
    (top / "d" / "kept").write_text("k")
    (top / "f").write_text("a file now")
    (upper / "d").mkdir(parents=True)
    shutil.copy2(top / "d" / "kept", upper / "d" / "kept")   # copied up, unchanged
    whiteout(upper / "d" / "old")                          # hidden below the opaque dir
    (upper / "f").mkdir()                                  # dir over the top's file
    os.setxattr(upper / "f", "trusted.overlay.opaque", b"y")
    (upper / "f" / "y").write_text("y")
    got = names(tar_of(upper, lowers=[top, bottom]))
    # d is unchanged and holds nothing to emit; f's lower is a file, so no
    # whiteout of bottom's f/x is needed and no opaque marker either.
    assert got == ["f/", "f/y"]


def test_layer_changes(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "passwd").write_text("p")
    (lower / "old").write_text("o")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "passwd").write_text("p2")
    (upper / "new").write_text("new!")
    whiteout(upper / "old")
    changes = layer_changes(upper, lowers=[lower])
    assert changes.added == ["/new"]
    assert changes.modified == ["/etc", "/etc/passwd"]
    assert changes.deleted == ["/old"]
    assert changes.counts() == {"added": 1, "modified": 2, "deleted": 1, "bytes": 6}


# ------------------------------------------------------------------ memory

def test_memory_flat_for_a_1gib_file(tmp_path):
    layer = tmp_path / "big"
    layer.mkdir()
    with open(layer / "sparse", "wb") as f:
        f.truncate(1 << 30)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a child of a
    # big pytest process would report pytest's own peak.
    script = textwrap.dedent(f"""
        from builder.layers import layer_diff_id
        def peak():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        before = peak()
        layer_diff_id({str(layer)!r})
        print(before, peak())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    before, after = (int(x) for x in out.stdout.split())
    assert after - before < 32 * 1024, f"peak RSS grew by {after - before} KiB"
    assert after < 150 * 1024


def test_deep_layer_with_few_fds(tmp_path):
    script = textwrap.dedent(f"""
        import io, os, resource
        from builder.layers import apply_layer_tar, write_layer_tar
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        fd = os.open({str(tmp_path)!r}, os.O_RDONLY)
        os.mkdir("layer", dir_fd=fd)
        for name in ["layer"] + ["d"] * 1500:
            if name == "d":
                os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        os.close(fd)
        first = io.BytesIO()
        write_layer_tar({str(tmp_path / "layer")!r}, first)
        os.mkdir({str(tmp_path / "out")!r})
        apply_layer_tar(io.BytesIO(first.getvalue()), {str(tmp_path / "out")!r})
        again = io.BytesIO()
        write_layer_tar({str(tmp_path / "out")!r}, again)
        print(again.getvalue() == first.getvalue())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    assert out.stdout.strip() == b"True"
    subprocess.run(["rm", "-rf", str(tmp_path / "layer"), str(tmp_path / "out")], check=True)


def test_small_file_fast_path_matches_tar_header(layer, monkeypatch):
    import builder.layers.tar_write as tar_write

    for i in range(300):
        path = layer / f"f{i:03d}"
        path.write_bytes(os.urandom(i * 7))
        os.chown(path, i % 3, i % 5)
        os.chmod(path, 0o600 + i % 64)
        os.utime(path, ns=(0, (1_600_000_000 + i % 4) * 10**9 + i))
    fast = tar_of(layer)
    monkeypatch.setattr(tar_write, "_MAX7", -1)  # every file through tar_header()
    assert tar_of(layer) == fast


# -------------------------------------------------------- big files: hashed beside the walk

def test_big_files_hashed_beside_the_walk_give_the_tars_digest(layer):
    # Big bodies go to the hash thread by descriptor while the walk formats the
    # small files after them; the digest must still be the tar's, byte for byte.
    for name, size in (("a", 70_000), ("b", 3 << 20), ("c", 0), ("d", 300_001)):
        (layer / name).write_bytes(os.urandom(size))
        (layer / f"{name}-small").mkdir()
        for i in range(300):
            (layer / f"{name}-small" / f"f{i}").write_bytes(b"x" * (i % 700))
    data = tar_of(layer)
    assert layer_diff_id(layer) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def test_more_big_files_and_small_ones_than_the_hash_thread_queues(layer):
    # More files handed over than may be open at once (4), and more small entries
    # behind them than the queue holds (32 MiB): the walk waits, in order.
    for i in range(8):
        (layer / f"big{i}").write_bytes(os.urandom(100_000 + i * 400_000))
        (layer / f"big{i}-small").mkdir()
        for j in range(90):
            (layer / f"big{i}-small" / f"f{j}").write_bytes(os.urandom(60_000))
    data = tar_of(layer)
    assert layer_diff_id(layer) == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def sha256_threads() -> int:
    import threading

    return sum(t.name == "sha256" for t in threading.enumerate())


def test_a_walk_error_after_files_were_handed_over_leaves_no_descriptor(layer, monkeypatch):
    import builder.layers.tar_write as tar_write

    for i in range(6):
        (layer / f"big{i}").write_bytes(os.urandom(1 << 20))
    os.symlink("big0", layer / "link")

    def unreadable(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(tar_write._TarWriter, "_other", unreadable)
    fds, threads = len(os.listdir("/proc/self/fd")), sha256_threads()
    with pytest.raises(OSError, match="Input/output error"):
        layer_diff_id(layer)
    assert len(os.listdir("/proc/self/fd")) == fds
    assert sha256_threads() == threads


def test_a_file_that_shrinks_before_it_is_hashed_is_an_error_not_a_digest(layer, monkeypatch):
    import builder.layers.tar_write as tar_write

    (layer / "big").write_bytes(os.urandom(1 << 20))
    (layer / "z").write_bytes(b"after")
    handed = tar_write.Sha256Writer.write_file

    def shrink_first(self, fd, size, shrank):
        os.truncate(layer / "big", size // 2)  # the step is over; a racer would do this
        handed(self, fd, size, shrank)

    monkeypatch.setattr(tar_write.Sha256Writer, "write_file", shrink_first)
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(LayerError, match="entry 'big': file shrank while it was being read"):
        layer_diff_id(layer)
    assert len(os.listdir("/proc/self/fd")) == fds  # the handed-over descriptor is closed


def test_a_stop_while_a_big_file_is_hashed_raises_instead_of_a_digest(layer):
    import threading
    import time

    from builder import interrupt

    with open(layer / "sparse", "wb") as f:
        f.truncate(8 << 30)  # hashing it takes seconds
    outcome: list[object] = []

    def commit() -> None:
        try:
            outcome.append(layer_diff_id(layer))
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=commit)
    thread.start()
    try:
        time.sleep(0.3)  # the walk is over: only the hash thread is still reading
        started = time.monotonic()
        interrupt.request()
        thread.join(5)
        assert time.monotonic() - started < 1
        assert len(outcome) == 1 and isinstance(outcome[0], interrupt.Stopped)
    finally:
        interrupt.request()
        thread.join()
        interrupt.clear()
