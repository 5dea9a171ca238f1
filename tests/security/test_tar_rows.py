"""Catalogue 1.T: hostile layer tars against the real extractor, one test per row.

Every test runs under the ``sandbox`` oracle: ``victim/``, a prefix sibling
``dest-evil/``, files above ``dest`` and unique host paths under /tmp are
compared before and after, so a test passes only if nothing outside ``dest``
changed, whether the apply refused the layer or confined it.  Rows that make
sense for a single layer run in both extractor modes (``overlay``: a per-layer
dir; ``merged``: a whole rootfs, as vfs and ADD use); cross-layer rows run
merged, and T06/T25 also end to end through ``pybuild load`` and a build.
Negative controls (T06, T10, T24, real-image shapes) must apply faithfully.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import run_cli
from security.oracle import TarMaker, apply, build, docker_archive, lower, refuse

from builder.errors import LayerError
from builder.layers import safepath

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, chown, trusted.* xattrs"),
]

@pytest.mark.parametrize("name", ["../victim/dotdot", "/../victim/slash-dotdot"])
def test_T01_dotdot_names(sandbox, tar, mode, name):
    refuse(sandbox, tar().add(name, content=b"pwned").data(), mode, match=r"'\.\.'")


@pytest.mark.parametrize("name", ["..", "../pwned", "../../pwned"])
def test_T02_parent_traversal_contained(sandbox, tar, mode, name):
    refuse(sandbox, tar().add(name, content=b"pwned").data(), mode)
    assert sorted(os.listdir(sandbox.base)) == ["dest-evil", "flag", "outside", "victim"]


@pytest.mark.parametrize("name", ["/etc/passwd", "//etc//./passwd"])
def test_T03_absolute_names_land_in_root(sandbox, tar, mode, name):
    apply(sandbox, tar().add(name, content=b"root:x:0:0\n").data(), mode)
    assert (sandbox.dest / "etc" / "passwd").read_bytes() == b"root:x:0:0\n"


def test_T04_symlink_then_file(sandbox, tar, mode):
    data = (tar().add("loophole", "sym", target="../victim")
            .add("loophole/file", content=b"x")
            .add("dir", "dir").add("dir/loophole", "sym", target="../../victim")
            .add("dir/loophole/newdir/newfile", content=b"y").data())
    apply(sandbox, data, mode)
    # Chroot semantics: ".." stops at the root, so both land in <root>/victim.
    assert (sandbox.dest / "victim" / "file").read_bytes() == b"x"
    assert (sandbox.dest / "victim" / "newdir" / "newfile").read_bytes() == b"y"


def test_T05_absolute_symlink_parent(sandbox, tar, mode):
    data = (tar().add("a", "sym", target="/").add("a/etc/passwd", content=b"p")
            .add("localetc", "sym", target="/etc").add("/localetc/unbroken", content=b"u")
            .add("hostdir", "sym", target=str(sandbox.host_dir))
            .add("hostdir/hostfile", content=b"overwritten").data())
    apply(sandbox, data, mode)
    assert (sandbox.dest / "etc" / "passwd").read_bytes() == b"p"
    assert (sandbox.dest / "etc" / "unbroken").read_bytes() == b"u"
    inside = sandbox.dest / str(sandbox.host_dir).lstrip("/") / "hostfile"
    assert inside.read_bytes() == b"overwritten"


def test_T06_cross_layer_absolute_symlink_negative_control(sandbox, tar):
    lower(sandbox, tar().add("run", "dir").add("run/existing", "dir")
          .add("var", "dir").add("var/run", "sym", target="/run"))
    apply(sandbox, tar().add("var/run/existing/non-existing/file", content=b"ok").data())
    assert (sandbox.dest / "run/existing/non-existing/file").read_bytes() == b"ok"
    assert os.readlink(sandbox.dest / "var" / "run") == "/run"
    # Hardlink source through the same absolute symlink (moby/moby#53258).
    apply(sandbox, tar().add("var/run/existing/link", "link",
                             target="var/run/existing/non-existing/file").data())
    linked = sandbox.dest / "run/existing/link"
    assert linked.stat().st_ino == (sandbox.dest / "run/existing/non-existing/file").stat().st_ino


def test_T07_two_hop_symlink_chain(sandbox, tar, mode):
    data = (tar().add("inner", "dir").add("inner/go_up", "sym", target="..")
            .add("inner/go_up/escape", "sym", target="../victim")
            .add("inner/go_up/escape/newfile", content=b"n").data())
    apply(sandbox, data, mode)
    assert (sandbox.dest / "victim" / "newfile").read_bytes() == b"n"


def test_T08_relative_escape_before_absolute_symlink(sandbox, tar):
    lower(sandbox, tar().add("escape", "sym", target="..").add("absolute", "sym",
                                                                target="/target"))
    apply(sandbox, tar().add("escape/absolute/file", content=b"f").data())
    assert (sandbox.dest / "target" / "file").read_bytes() == b"f"


@pytest.mark.parametrize("target", ["../victim/hello", "/../victim/hello", "../victim",
                                    "../dest-evil/secret", "a/../../victim/hello"])
def test_T09_hardlink_out_of_root(sandbox, tar, mode, target):
    data = (tar().add("dotdot", "link", target=target)
            .add("dotdot/file", content=b"w").data())
    refuse(sandbox, data, mode)
    assert (sandbox.base / "victim" / "hello").stat().st_nlink == 1


def test_T09_hardlink_through_escaping_symlink_is_confined(sandbox, tar, mode):
    data = (tar().add("escape", "sym", target="../victim")
            .add("grab", "link", target="escape/hello").data())
    refuse(sandbox, data, mode, match="hardlink target does not exist")


def test_T10_absolute_hardlink_negative_control(sandbox, tar, mode):
    data = (tar().add("usr/bin/perlbug", content=b"#!perl", mode=0o755)
            .add("usr/bin/perlthanks", "link", target="/usr/bin/perlbug").data())
    apply(sandbox, data, mode)
    bug, thanks = sandbox.dest / "usr/bin/perlbug", sandbox.dest / "usr/bin/perlthanks"
    assert bug.stat().st_ino == thanks.stat().st_ino


def test_T11_hardlink_to_symlink_links_the_symlink(sandbox, tar, mode):
    outside = sandbox.base / "outside" / "perm400"
    data = (tar().add("regfile", content=b"r").add("symlink1", "sym", target="regfile")
            .add("symlink2", "link", target="symlink1")
            .add("ep", "sym", target=str(outside))
            .add("sketchylink", "link", target="ep", mode=0o640).data())
    apply(sandbox, data, mode)
    s1, s2 = os.lstat(sandbox.dest / "symlink1"), os.lstat(sandbox.dest / "symlink2")
    assert stat.S_ISLNK(s2.st_mode) and s1.st_ino == s2.st_ino
    assert stat.S_IMODE(outside.stat().st_mode) == 0o400
    assert os.readlink(sandbox.dest / "sketchylink") == str(outside)


@pytest.mark.parametrize("name", [".", "./", "/"])
def test_T12_root_type_change_refused(sandbox, tar, mode, name):
    data = (tar().add(name, "sym", target=str(sandbox.host_dir))
            .add("hostfile", content=b"pwned").data())
    refuse(sandbox, data, mode, match="type of the root")


def test_T12_root_dir_entry_sets_metadata(sandbox, tar):
    apply(sandbox, tar().add("./", "dir", mode=0o750).add("./x", content=b"x").data())
    assert stat.S_IMODE(sandbox.dest.stat().st_mode) == 0o750
    assert (sandbox.dest / "x").read_bytes() == b"x"


def test_T13_type_change_is_never_cached(sandbox, tar, mode):
    leaf = f"tmp/{sandbox.absent.name}"
    data = (tar().add("foo", "dir").add(f"foo/{leaf}", content=b"1")
            .add("foo", "sym", target="/").add(f"foo/{leaf}", content=b"2")
            .add("foo", "dir").add(f"foo/{leaf}", content=b"3").data())
    apply(sandbox, data, mode)
    # Through "foo -> /" the write lands at <root>/tmp/..., then foo is a dir again.
    assert (sandbox.dest / leaf).read_bytes() == b"2"
    assert (sandbox.dest / "foo" / leaf).read_bytes() == b"3"


def test_T14_final_component_symlink_is_replaced(sandbox, tar):
    host = sandbox.host_dir / "hostfile"
    lower(sandbox, tar().add("etc", "dir").add("etc/passwd", "sym", target=str(host)))
    apply(sandbox, tar().add("etc/passwd", content=b"root:x:0:0\n").data())
    passwd = sandbox.dest / "etc" / "passwd"
    assert not passwd.is_symlink() and passwd.read_bytes() == b"root:x:0:0\n"


def test_T15_metadata_goes_through_the_fd_while_raced(sandbox, tar):
    # An attacker keeps swapping the entry for a symlink to a victim file.
    # Whatever the interleaving, the victim's mode and content must not change.
    victim = sandbox.base / "victim" / "hello"
    build = tar()
    for _ in range(200):
        build.add("f", content=b"data", mode=0o4777)
    data = build.data()
    stop = threading.Event()

    def attacker() -> None:
        while not stop.is_set():
            try:
                os.unlink(sandbox.dest / "f")
                os.symlink(victim, sandbox.dest / "f")
            except OSError:
                pass

    thread = threading.Thread(target=attacker)
    thread.start()
    try:
        for _ in range(5):
            sandbox.dest.mkdir(exist_ok=True)
            with contextlib.suppress(LayerError):
                apply(sandbox, data)
    finally:
        stop.set()
        thread.join()
    assert stat.S_IMODE(victim.stat().st_mode) != 0o4777


def test_T16_path_max_symlink_chain(sandbox, tar, mode):
    steps = "abcdefghijklmnop"
    max_path = os.pathconf(sandbox.base, "PC_PATH_MAX")
    component = "d" * ((max_path - len(str(sandbox.dest)) - 1) // (len(steps) + 1))
    build = tar()
    path = ""
    for step in steps:
        build.add(os.path.join(path, component), "dir", mode=0o777)
        build.add(os.path.join(path, step), "sym", target=component)
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    build.add(linkpath, "sym", target=os.path.join(*[".."] * len(steps)))
    build.add("escape", "sym", target=os.path.join(linkpath, ".."))
    build.add("flaglink", "link", target="escape/flag")
    build.add("flaglink", content=b"overwrite")
    build.add("escape/newfile", content=b"new")
    # "escape" resolves to the root (".." is clamped), where no "flag" exists.
    refuse(sandbox, build.data(), mode, match="hardlink target does not exist")


def test_T17_empty_and_trailing_slash_names(sandbox, tar, mode):
    refuse(sandbox, tar().add("", "sym", target="../..").data(), mode, match="empty name")
    sandbox.dest.mkdir()
    apply(sandbox, tar().add("link/", "sym", target="../..").add("link/x", content=b"x").data(),
          mode)
    assert os.readlink(sandbox.dest / "link") == "../.."
    assert (sandbox.dest / "x").read_bytes() == b"x"


def test_T18_devices_rootless_skipped_fifo_kept(sandbox, tar, caplog):
    data = (tar().add("dev/sda", "blk", major=8, minor=0).add("dev/null", "chr", major=1, minor=3)
            .add("fifo", "fifo").data())
    stats = apply(sandbox, data, mode="overlay", rootless=True)
    assert stats.skipped == ["dev/sda", "dev/null"]
    assert not (sandbox.dest / "dev" / "sda").exists()
    assert stat.S_ISFIFO(os.lstat(sandbox.dest / "fifo").st_mode)
    assert "skipping device node" in caplog.text


@pytest.mark.parametrize(("major", "minor"), [(2**32, 0), (0, 2**32), (4096, 0), (0, 2**20),
                                              (-1, 0)])
def test_T18_device_numbers_out_of_range(sandbox, tar, major, minor):
    data = tar(tarfile.GNU_FORMAT).add("dev/x", "chr", major=major, minor=minor).data()
    refuse(sandbox, data, match="out of range")


def test_T19_mode_bits_and_ids_kept(sandbox, tar):
    data = (tar().add("suid", content=b"x", mode=0o4755).add("sgid", content=b"x", mode=0o2755)
            .add("tmp", "dir", mode=0o1777).add("nobody", content=b"n", uid=4294967294,
                                                  gid=4294967294)
            .add("dev/console", "chr", major=5, minor=1, mode=0o620, gid=5).data())
    apply(sandbox, data, mode="overlay")
    mode = lambda p: stat.S_IMODE(os.lstat(sandbox.dest / p).st_mode)  # noqa: E731
    assert (mode("suid"), mode("sgid"), mode("tmp"), mode("dev/console")) == (
        0o4755, 0o2755, 0o1777, 0o620)
    st = os.lstat(sandbox.dest / "nobody")
    assert (st.st_uid, st.st_gid) == (4294967294, 4294967294)
    assert os.lstat(sandbox.dest / "dev/console").st_gid == 5


def test_T19_uid_minus_one_refused(sandbox, tar):
    refuse(sandbox, tar().add("x", content=b"x", uid=2**32 - 1).data(), match="out of range")


def test_T19_device_chmod_on_nodev_mount(tmp_path, tar):
    data = tar().add("dev/null", "chr", major=1, minor=3, mode=0o666).data()
    script = textwrap.dedent(f"""
        import io, os, stat, sys
        from builder import syscalls
        from builder.layers import apply_layer_tar, safepath
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        syscalls.mount("tmpfs", {str(tmp_path)!r}, "tmpfs", syscalls.MS_NODEV)
        os.mkdir({str(tmp_path / "d")!r})
        apply_layer_tar(io.BytesIO(sys.stdin.buffer.read()), {str(tmp_path / "d")!r})
        st = os.lstat({str(tmp_path / "d" / "dev" / "null")!r})
        print(oct(stat.S_IMODE(st.st_mode)), os.major(st.st_rdev), os.minor(st.st_rdev))
    """)
    out = subprocess.run([sys.executable, "-c", script], input=data, capture_output=True,
                         check=True)
    assert out.stdout.split() == [b"0o666", b"1", b"3"]


def test_T19_rootless_unmapped_uid_names_subuid(tmp_path, tar):
    data = tar().add("f", content=b"x", uid=4242).data()
    script = textwrap.dedent(f"""
        import io, os, sys
        from builder.errors import LayerError
        from builder.layers import apply_layer_tar, safepath
        try:
            apply_layer_tar(io.BytesIO(sys.stdin.buffer.read()), {str(tmp_path / "d")!r},
                            rootless=True)
        except LayerError as err:
            print(err)
    """)
    (tmp_path / "d").mkdir()
    os.chmod(tmp_path, 0o777)
    cmd = ["unshare", "--user", "--map-root-user", sys.executable, "-c", script]
    out = subprocess.run(cmd, input=data, capture_output=True)
    if out.returncode != 0 and b"unshare" in out.stderr:
        pytest.skip(f"user namespaces unavailable: {out.stderr.decode()}")
    assert b"/etc/subuid" in out.stdout, out.stderr


def test_T20_xattr_allowlist(sandbox, tar, mode):
    pax = {"SCHILY.xattr.trusted.overlay.opaque": "y",
           "SCHILY.xattr.user.overlay.redirect": "/etc",
           "SCHILY.xattr.security.selinux": "system_u:object_r:etc_t:s0",
           "SCHILY.xattr.user.kept": "yes"}
    cap = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12
    data = (tar().add("d", "dir", pax=pax)
            .add("ping", content=b"x", pax={"SCHILY.xattr.security.capability": cap}).data())
    apply(sandbox, data, mode)
    assert sorted(os.listxattr(sandbox.dest / "d")) == ["user.kept"]
    assert os.getxattr(sandbox.dest / "ping", "security.capability") == cap.encode("latin-1")


def test_T21_replace_rules(sandbox, tar, mode):
    data = (tar().add("x", content=b"file").add("x", "dir").add("x/child", content=b"c")
            .add("x", "sym", target="elsewhere")
            .add("nondir", content=b"n").add("nondir/foo/bar/baz", content=b"b")
            .add("d", "dir", mode=0o700).add("d/keep", content=b"k").add("d", "dir", mode=0o755)
            .data())
    apply(sandbox, data, mode)
    assert os.readlink(sandbox.dest / "x") == "elsewhere"
    assert (sandbox.dest / "nondir/foo/bar/baz").read_bytes() == b"b"
    assert (sandbox.dest / "d" / "keep").read_bytes() == b"k"
    assert stat.S_IMODE((sandbox.dest / "d").stat().st_mode) == 0o755


def test_T21_symlink_to_a_file_is_never_replaced(sandbox, tar):
    lower(sandbox, tar().add("etc/passwd", content=b"p").add("x", "sym", target="/etc/passwd"))
    refuse(sandbox, tar().add("x/y", content=b"y").data(), match="non-directory")


def test_T22_byte_names_newlines_long_and_deep(sandbox, tar, mode):
    weird = "bad\udcff\udcfe-utf8\nnewline"
    deep = "/".join(["d"] * 1000) + "/leaf"
    long_path = "/".join(["x" * 200] * 30) + "/f"  # 6 kB: over PATH_MAX
    data = (tar().add(weird, content=b"w").add(deep, content=b"deep")
            .add(long_path, content=b"long").data())
    apply(sandbox, data, mode)
    assert (os.fsencode(str(sandbox.dest)) + b"/bad\xff\xfe-utf8\nnewline") in [
        os.fsencode(str(sandbox.dest)) + b"/" + n for n in os.listdir(os.fsencode(sandbox.dest))]
    fd = os.open(sandbox.dest, os.O_RDONLY)
    try:
        for comp in deep.split("/")[:-1]:
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        assert os.stat("leaf", dir_fd=fd).st_size == 4
    finally:
        os.close(fd)
    # pytest's own temp-dir cleanup recurses and would choke on 1000 levels.
    base = os.open(sandbox.base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        safepath.remove_at(base, b"dest")
    finally:
        os.close(base)


def test_T22_component_too_long_is_an_error(sandbox, tar, mode):
    refuse(sandbox, tar().add("n" * 300, content=b"x").data(), mode, match="too long")


def test_T22_nul_in_name(sandbox, tar, mode):
    refuse(sandbox, tar().add("x", content=b"x", pax={"path": "a\x00b"}).data(), mode,
           match="NUL")


def test_T23_garbage_after_first_entry(sandbox, tar, mode):
    # One header block, then noise where the next header should be.
    data = tar().add("Dockerfile", "sym", target="/etc/x").data()[:512] + os.urandom(2048)
    refuse(sandbox, data, mode, match="T23")


@pytest.mark.parametrize("cut", [512 + 100, 1024, 1536, 2048 + 10])
def test_T23_truncated_tar_discarded(sandbox, tar, mode, cut):
    data = tar().add("a", content=b"x" * 600).add("b", content=b"y").data()
    refuse(sandbox, data[:cut], mode)


def test_T23_empty_stream(sandbox, mode):
    refuse(sandbox, b"", mode)


@pytest.mark.parametrize("name", ["..gitme", "...", ".wh", "a..b", "..a/b", "x/.wh"])
def test_T24_dot_names_negative_control(sandbox, tar, mode, name):
    apply(sandbox, tar().add(name, content=b"ok").data(), mode)
    assert (sandbox.dest / name).read_bytes() == b"ok"


def test_T25_two_step_across_layers(sandbox, tar):
    lower(sandbox, tar().add("x", "sym", target="../../../../home/u/.ssh"))
    apply(sandbox, tar().add("x/authorized_keys", content=b"ssh-rsa").data())
    assert (sandbox.dest / "home/u/.ssh/authorized_keys").read_bytes() == b"ssh-rsa"


def test_real_image_shapes_negative_control(sandbox, tar):
    """Debian-like base: absolute symlinks, absolute hardlinks, setuid, devices."""
    data = (tar().add("bin", "sym", target="usr/bin").add("usr/bin/su", content=b"su",
                                                            mode=0o4755)
            .add("usr/bin/perlbug", content=b"p").add("usr/bin/perlthanks", "link",
                                                      target="/usr/bin/perlbug")
            .add("run", "dir").add("var/run", "sym", target="/run")
            .add("dev/null", "chr", major=1, minor=3, mode=0o666)
            .add("etc/alternatives/awk", "sym", target="/usr/bin/mawk").data())
    apply(sandbox, data)
    apply(sandbox, tar().add("var/run/lock", "dir").add("bin/extra", content=b"e").data())
    assert (sandbox.dest / "run" / "lock").is_dir()
    assert (sandbox.dest / "usr/bin/extra").read_bytes() == b"e"
    assert stat.S_IMODE((sandbox.dest / "usr/bin/su").stat().st_mode) == 0o4755
    assert os.lstat(sandbox.dest / "dev/null").st_rdev == os.makedev(1, 3)




# ------------------------------------------------------------------ other malformed input
# Not catalogue rows of their own: AUFS metadata, sparse entries (spec L62) and a
# huge PAX header (the X03 limit) are refused like any invalid archive.

def test_aufs_metadata_refused(sandbox, tar):
    refuse(sandbox, tar().add(".wh..wh.plnk/123", content=b"x").data())
    sandbox.dest.mkdir()
    refuse(sandbox, tar().add(".wh..wh.aufs").data(), match="AUFS")


def test_sparse_entries_refused(sandbox, tar):
    data = tar(tarfile.PAX_FORMAT).add("s", content=b"x", pax={
        "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s",
        "GNU.sparse.realsize": str(10 << 40)}).data()
    refuse(sandbox, data)


def test_huge_pax_header_refused(sandbox, tar):
    refuse(sandbox, tar().add("x", content=b"x", pax={"comment": "c" * (2 << 20)}).data(),
           match="X03")

# ------------------------------------------------------------------ end to end

def _load(tmp_path: Path, driver: str, busybox_tar: Path, layers: list[bytes]) -> Path:
    root = tmp_path / f"store-{driver}"
    archive = tmp_path / "evil.tar"
    archive.write_bytes(docker_archive([busybox_tar.read_bytes(), *layers], "evil:latest"))
    run_cli("--storage-driver", driver, "load", "-i", str(archive), root=root)
    return root


@pytest.mark.overlay
@pytest.mark.slow
@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_T25_two_step_through_load_and_build(sandbox, tmp_path, busybox_tar, driver):
    # Layer 1 points x far above the root at a unique host path; layer 2 writes
    # through it.  Per-layer dirs (overlay) keep x a plain dir in layer 2; the
    # merged rootfs would resolve x in root.  Either way the host is untouched,
    # and a RUN and a COPY into x stay in the image too.
    escape = "../" * 12 + str(sandbox.absent).lstrip("/")
    root = _load(tmp_path, driver, busybox_tar, [
        TarMaker().add("x", "sym", target=escape).data(),
        TarMaker().add("x/authorized_keys", content=b"ssh-rsa AAAA").data()])
    (sandbox.dest / "more").write_text("more")
    out = tmp_path / "out"
    build(root, sandbox.dest, "FROM evil\nRUN cat /x/authorized_keys > /seen && "
          "echo run >> /x/from-run\nCOPY more /x/\n", out, driver=driver)
    assert (out / "seen").read_bytes() == b"ssh-rsa AAAA"
    # Both drivers keep layers as separate dirs, so x is replaced by layer 2's dir;
    # had it stayed a link, the write must have resolved in root.
    x = out / "x"
    inside = out / str(sandbox.absent).lstrip("/") if x.is_symlink() else x
    assert (inside / "authorized_keys").read_bytes() == b"ssh-rsa AAAA"
    assert (inside / "from-run").read_text() == "run\n"
    assert (inside / "more").read_text() == "more"


@pytest.mark.overlay
@pytest.mark.slow
@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_T06_var_run_symlink_through_load_and_build(sandbox, tmp_path, busybox_tar, driver):
    root = _load(tmp_path, driver, busybox_tar, [
        TarMaker().add("run", "dir").add("run/existing", "dir")
        .add("var/run", "sym", target="/run").data(),
        TarMaker().add("var/run/existing/non-existing/file", content=b"ok").data()])
    out = tmp_path / "out"
    build(root, sandbox.dest, "FROM evil\nRUN cat /var/run/existing/non-existing/file > /seen "
          "&& touch /var/run/lockfile\n", out, driver=driver)
    assert (out / "seen").read_bytes() == b"ok"
    # Per-layer dirs (both drivers, as Docker's overlay2): layer 2's var/run is a
    # dir that replaces the link.  The host's /run is never involved.
    var_run = out / "var" / "run"
    if var_run.is_symlink():
        assert os.readlink(var_run) == "/run"
        assert (out / "run" / "lockfile").exists()
    else:
        assert (var_run / "lockfile").exists()
