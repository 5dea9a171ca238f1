"""Catalogue 1.C: COPY/ADD from the build context, one test per row, as real builds.

Each test builds with the real CLI against a store holding busybox; the
``sandbox`` fixture's ``dest`` is the build context, so ``victim/``,
``dest-evil/``, ``flag`` and ``outside/`` sit beside it and a host dir under
/tmp holds ``hostfile``.  The oracle checks that none of them changed, and
``leaked()`` that none of their contents reached the exported rootfs.
Failures must be one-line errors with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from security.oracle import TarMaker, build, leaked, one_line_error

pytestmark = [
    pytest.mark.root, pytest.mark.overlay, pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: overlay mounts, chown, mknod"),
]


@pytest.fixture
def ctx(sandbox) -> Path:
    (sandbox.dest / "a").write_text("a")
    return sandbox.dest


def ok(bstore: Path, ctx: Path, tmp_path: Path, dockerfile: str, *args: str) -> Path:
    """Build, export the rootfs, check nothing leaked into it; return it."""
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    build(bstore, ctx, dockerfile, out, *args)
    assert leaked(out) == []
    return out


def fails(bstore: Path, ctx: Path, dockerfile: str, *args: str) -> str:
    return one_line_error(build(bstore, ctx, dockerfile, None, *args, check=False))


# ------------------------------------------------------------------ C01

@pytest.mark.parametrize("source", ["../../etc/passwd", "../flag", "../victim/hello",
                                    "../../../../../../../../../etc/shadow"])
def test_C01_parent_paths_clamp_to_the_context(bstore, ctx, source):
    err = fails(bstore, ctx, f"FROM busybox\nCOPY {source} /x\n")
    assert "not found" in err and "Dockerfile" in err


def test_C01_parent_paths_clamp_to_the_context_add(bstore, ctx):
    assert "not found" in fails(bstore, ctx, "FROM busybox\nADD ../secret .\n")


def test_C01_clamped_path_reads_the_contexts_own_file(bstore, ctx, tmp_path):
    (ctx / "etc").mkdir()
    (ctx / "etc" / "passwd").write_text("ctx-passwd")
    (ctx / "sub").mkdir()
    out = ok(bstore, ctx, tmp_path, "FROM busybox\nCOPY ../../etc/passwd /x\n"
             "WORKDIR /ctx\nCOPY / ./\n")
    assert (out / "x").read_text() == "ctx-passwd"
    assert sorted(os.listdir(out / "ctx")) == ["a", "etc", "sub"]


# ------------------------------------------------------------------ C02

def test_C02_named_symlink_resolves_in_the_context(bstore, ctx, sandbox, tmp_path):
    os.symlink(str(sandbox.host_dir / "hostfile"), ctx / "abs")
    os.symlink("../victim/hello", ctx / "rel")
    for name in ("abs", "rel"):
        assert "not found" in fails(bstore, ctx, f"FROM busybox\nCOPY {name} /x\n")


def test_C02_top_level_follow_negative_control(bstore, ctx, tmp_path):
    # A named link is followed, inside the context; links below a copied dir stay links.
    (ctx / "inside").mkdir()
    (ctx / "inside" / "file").write_text("inside")
    os.symlink("/inside/file", ctx / "abs")
    os.symlink("../../../inside/file", ctx / "rel")
    (ctx / "dir").mkdir()
    os.symlink("/etc/passwd", ctx / "dir" / "passwd")
    os.symlink("../../victim/hello", ctx / "dir" / "hello")
    out = ok(bstore, ctx, tmp_path, "FROM busybox\nCOPY abs /abs\nCOPY rel /rel\n"
             "COPY dir /dir/\n")
    assert (out / "abs").read_text() == (out / "rel").read_text() == "inside"
    assert os.readlink(out / "dir" / "passwd") == "/etc/passwd"
    assert os.readlink(out / "dir" / "hello") == "../../victim/hello"


# ------------------------------------------------------------------ C03

def test_C03_context_swapped_for_a_symlink_while_copying(bstore, ctx, sandbox, tmp_path):
    """An attacker keeps swapping ``sub`` (a dir) and ``sub/inner`` for links to a
    host dir while builds copy them.  Whatever the interleaving, no build may copy
    host content; a build may fail (the source vanished) with a one-line error."""
    sub = ctx / "sub"
    (sub / "inner").mkdir(parents=True)
    for i in range(50):
        (sub / f"f{i}").write_text("ctx")
        (sub / "inner" / f"g{i}").write_text("ctx")
    stop = threading.Event()

    def swap(parent: int, name: str) -> None:
        # By the parent dir's fd: a path through ctx/sub would reach the host dir
        # whenever the other attacker has swapped sub, and the attacker itself would
        # then write there (a flake of the test, not of pybuild).
        while not stop.is_set():
            with contextlib.suppress(OSError):
                os.rename(name, name + ".real", src_dir_fd=parent, dst_dir_fd=parent)
                os.symlink(str(sandbox.host_dir), name, dir_fd=parent)
                os.unlink(name, dir_fd=parent)
                os.rename(name + ".real", name, src_dir_fd=parent, dst_dir_fd=parent)

    parents = [os.open(d, os.O_RDONLY | os.O_DIRECTORY) for d in (ctx, sub)]
    attackers = [threading.Thread(target=swap, args=(fd, name))
                 for fd, name in zip(parents, ("sub", "inner"), strict=True)]
    for thread in attackers:
        thread.start()
    try:
        for i in range(12):
            out = tmp_path / f"race{i}"
            result = build(bstore, ctx, "FROM busybox\nCOPY sub /s/\nCOPY sub/inner /i/\n", out,
                           "--no-cache", check=False)
            if result.returncode != 0:
                one_line_error(result)
                continue
            assert leaked(out) == [], f"round {i}: host content copied"
            for top in (out / "s", out / "i"):
                assert not (top / "hostfile").exists() and not (top / "whitedout").exists()
    finally:
        stop.set()
        for thread in attackers:
            thread.join()
        for fd in parents:
            os.close(fd)


# ------------------------------------------------------------------ C04

def test_C04_globs_expand_inside_the_context_only(bstore, ctx, sandbox, tmp_path):
    host = str(sandbox.host_dir / "hostfile")
    os.symlink(host, ctx / "file1")
    os.symlink("file*", ctx / "copyme")
    os.symlink(host, ctx / "*")
    (ctx / "sub").mkdir()
    os.symlink(host, ctx / "sub" / "l1")
    os.symlink(str(sandbox.host_dir), ctx / "sub" / "l2")
    (ctx / "sub" / "l3").write_text("l3")
    for df in ("COPY file* /dst/", "COPY copyme /dst/", "COPY * /dst/", "COPY \\* /dst/",
               "COPY sub/l* /dst/", "COPY sub/l2/* /dst/"):
        result = build(bstore, ctx, f"FROM busybox\n{df}\n", tmp_path / "o", check=False)
        if result.returncode != 0:
            assert "not found" in one_line_error(result), df
            continue
        assert leaked(tmp_path / "o") == [], df
        dst = tmp_path / "o" / "dst"
        if not dst.exists():   # a wildcard that matched nothing inside the context
            assert "*" in df, df   # copies nothing (BuildKit's AllowEmptyWildcard)
            continue
        for entry in os.listdir(dst):
            st = os.lstat(dst / entry)
            assert not stat.S_ISREG(st.st_mode) or (dst / entry).read_text() in ("a", "l3"), df
    # Negative control: a matched link that resolves inside the context is followed.
    (ctx / "ok").mkdir()
    (ctx / "ok" / "l3").write_text("l3")
    os.symlink("/ok/l3", ctx / "ok" / "l4")
    out = ok(bstore, ctx, tmp_path, "FROM busybox\nCOPY ok/l* /dst/\n")
    assert (out / "dst" / "l3").read_text() == (out / "dst" / "l4").read_text() == "l3"


# ------------------------------------------------------------------ C05

def test_C05_destination_traversal_and_symlinks(bstore, ctx, sandbox, tmp_path):
    out = ok(bstore, ctx, tmp_path, (
        "FROM busybox\n"
        f"RUN ln -s /etc /app && ln -s {sandbox.host_dir} /hostlink && "
        f"ln -s ../../../../..{sandbox.absent}/deeper /dangling\n"
        "COPY a /../../../tmp/x\n"
        "WORKDIR ../../..\nCOPY a ./rel\n"
        "COPY a /app/\n"
        "COPY a /hostlink/\n"
        "COPY a /hostlink/hostfile\n"
        "COPY a /dangling/made\n"
        "WORKDIR /hostlink/wd\nCOPY a .\n"))
    assert (out / "tmp" / "x").read_text() == "a"
    assert (out / "rel").read_text() == "a"
    assert (out / "etc" / "a").read_text() == "a"
    inside = out / str(sandbox.host_dir).lstrip("/")
    assert (inside / "a").read_text() == (inside / "hostfile").read_text() == "a"
    assert (inside / "wd" / "a").read_text() == "a"
    assert (out / str(sandbox.absent).lstrip("/") / "deeper" / "made").read_text() == "a"


# ------------------------------------------------------------------ C06

def test_C06_copy_from_stage_follows_links_in_the_stage(bstore, ctx, sandbox, tmp_path):
    stage = ("FROM busybox AS st\n"
             "RUN mkdir -p /out/sub && echo s > /out/sub/f && ln -s /out/sub /sub && "
             f"ln -s out/sub /sub2 && ln -s / /rootdir && ln -s {sandbox.host_dir} /hostlink\n")
    out = ok(bstore, ctx, tmp_path, stage + (
        "FROM busybox\nCOPY --from=st /sub /a/\nCOPY --from=st /sub2/f /b\n"
        "COPY --from=st /rootdir/etc/passwd /c\n"))
    assert (out / "a" / "f").read_text() == (out / "b").read_text() == "s\n"
    assert (out / "c").read_bytes() != Path("/etc/passwd").read_bytes()
    assert (out / "c").read_text().startswith("root:x:0:0:root:/root:/bin/sh")
    err = fails(bstore, ctx, stage + "FROM busybox\nCOPY --from=st /hostlink/hostfile /d\n")
    assert "not found" in err


# ------------------------------------------------------------------ C07

def _t04(sb):
    return (TarMaker().add("loophole", "sym", target="../victim")
            .add("loophole/file", content=b"x").data(), "victim/file")


def _t05(sb):
    return (TarMaker().add("hostdir", "sym", target=str(sb.host_dir))
            .add("hostdir/hostfile", content=b"x").data(),
            str(sb.host_dir / "hostfile").lstrip("/"))


def _t07(sb):
    return (TarMaker().add("inner", "dir").add("inner/go_up", "sym", target="..")
            .add("inner/go_up/escape", "sym", target="../victim")
            .add("inner/go_up/escape/newfile", content=b"x").data(), "victim/newfile")


def _t13(sb):
    leaf = f"tmp/{sb.absent.name}"
    return (TarMaker().add("foo", "dir").add(f"foo/{leaf}", content=b"1")
            .add("foo", "sym", target="/").add(f"foo/{leaf}", content=b"x").data(), leaf)


def _t25(sb):
    return (TarMaker().add("x/authorized_keys", content=b"x").data(),
            str(sb.absent / "authorized_keys").lstrip("/"))


@pytest.mark.parametrize("payload", [_t04, _t05, _t07, _t13, _t25])
def test_C07_add_tar_confined_to_the_rootfs(bstore, ctx, sandbox, tmp_path, payload):
    data, landed = payload(sandbox)
    (ctx / "evil.tar").write_bytes(data)
    # T25 shape: the image already holds the escaping link, the archive writes through it.
    setup = f"RUN ln -s {'../' * 12}{str(sandbox.absent).lstrip('/')} /x\n"
    out = ok(bstore, ctx, tmp_path, f"FROM busybox\n{setup}ADD evil.tar /\n")
    assert (out / landed).read_bytes() == b"x"


@pytest.mark.parametrize("entries", [
    [("../victim/dotdot", "file", "")],
    [("dotdot", "link", "../victim/hello")],
    [(".", "sym", "/tmp")],
    [("escape", "sym", "../victim"), ("grab", "link", "escape/hello")],
])
def test_C07_add_tar_refused_payloads(bstore, ctx, entries):
    maker = TarMaker()
    for name, kind, target in entries:
        maker.add(name, kind, content=b"pwned" if kind == "file" else b"", target=target)
    (ctx / "evil.tar").write_bytes(maker.data())
    assert "ADD evil.tar" in fails(bstore, ctx, "FROM busybox\nADD evil.tar /\n")


def test_C07_add_tar_through_absolute_symlink_negative_control(bstore, ctx, tmp_path):
    (ctx / "evil.tar").write_bytes(TarMaker().add("var/run/existing/file", content=b"ok")
                                   .add("usr/bin/perlbug", content=b"p")
                                   .add("usr/bin/perlthanks", "link", target="/usr/bin/perlbug")
                                   .data())
    out = ok(bstore, ctx, tmp_path, "FROM busybox\nRUN mkdir -p /run/existing && "
             "ln -s /run /var/run\nADD evil.tar /\n")
    assert (out / "run" / "existing" / "file").read_bytes() == b"ok"
    assert os.readlink(out / "var" / "run") == "/run"
    perlbug, perlthanks = out / "usr/bin/perlbug", out / "usr/bin/perlthanks"
    assert perlthanks.stat().st_ino == perlbug.stat().st_ino


# ------------------------------------------------------------------ C08, C09

@pytest.fixture
def git_server(tmp_path: Path):
    """A real git server (``git http-backend`` on 127.0.0.1) holding ``repo.git``:
    branch ``main`` with ``sub/f``, a ``proj -> /`` link and ``up -> ../../..``."""
    from git_http import git_http_server, make_repo

    root = tmp_path / "git"
    make_repo(root / "repo.git", {"sub/f": "f", "proj": "-> /", "up": "-> ../../.."})
    with git_http_server(root) as served:
        yield served.base


def test_C08_git_url_refs_are_never_passed_to_git(bstore, ctx, sandbox, tmp_path,
                                                  git_server):
    """A ref or subdir that git would read as an option (CVE-2019-13139) is refused
    before any git command sees it; git is called with ``--`` before every URL."""
    for fragment in ("-btest-branch:sub", f"--upload-pack=touch$IFS{sandbox.absent}",
                     f"main:--upload-pack=touch {sandbox.absent}"):
        err = fails(bstore, ctx, f"FROM busybox\nADD {git_server}/repo.git#{fragment} /a\n")
        assert ":2: ADD " in err, err
    assert not os.path.lexists(sandbox.absent)


@pytest.mark.parametrize("subdir", ["proj/etc", "proj/../../../../etc", "up/etc",
                                    "sub/../../../../../etc"])
def test_C09_git_subdir_fragment_is_resolved_inside_the_checkout(bstore, ctx, tmp_path,
                                                                 git_server, subdir):
    """``#main:SUBDIR`` through a link to ``/`` or with ``..`` never reaches the
    host's files (BuildKit CVE-2026-33748): refused, or resolved in the checkout."""
    dockerfile = f"FROM busybox\nADD {git_server}/repo.git#main:{subdir} /mydir/\n"
    result = build(bstore, ctx, dockerfile, tmp_path / "out", check=False)
    if result.returncode == 0:
        out = tmp_path / "out"
        assert leaked(out) == []
        assert not (out / "mydir" / "shadow").exists() and \
            not (out / "mydir" / "passwd").exists(), "host /etc reached the image"
    else:
        assert ":2: ADD " in one_line_error(result)


# ------------------------------------------------------------------ C10

@pytest.mark.parametrize("name", [".wh.foo.repo", ".wh..wh..opq"])
def test_C10_whiteout_names_in_the_context_refused(bstore, ctx, name):
    (ctx / name).write_text("x")
    (ctx / "d").mkdir()
    (ctx / "d" / name).write_text("x")
    assert ".wh." in fails(bstore, ctx, f"FROM busybox\nCOPY {name} /opt/\n")
    assert ".wh." in fails(bstore, ctx, "FROM busybox\nCOPY d /opt/\n")
    assert ".wh." in fails(bstore, ctx, "FROM busybox\nCOPY . /opt/\n")


# ------------------------------------------------------------------ C11

def test_C11_fifo_and_socket_in_the_context(bstore, ctx, tmp_path):
    os.mkfifo(ctx / "p")
    (ctx / "d").mkdir()
    os.mkfifo(ctx / "d" / "p")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(ctx / "s"))
    try:
        # A FIFO is never opened for reading (that would block the build forever).
        out = tmp_path / "out"
        build(bstore, ctx, "FROM busybox\nCOPY p /p\nCOPY d /d/\nCOPY s /s\n", out, timeout=120)
    finally:
        sock.close()
    assert stat.S_ISFIFO(os.lstat(out / "p").st_mode)
    assert stat.S_ISFIFO(os.lstat(out / "d" / "p").st_mode)
    assert stat.S_ISREG(os.lstat(out / "s").st_mode) and os.path.getsize(out / "s") == 0


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK])
def test_C11_device_in_the_context_refused(bstore, ctx, kind):
    os.mknod(ctx / "dev", kind | 0o600, os.makedev(1, 3))
    assert "dev" in fails(bstore, ctx, "FROM busybox\nCOPY dev /dev0\n")


# ------------------------------------------------------------------ C12

def test_C12_dockerignore_cannot_reinclude_outside(bstore, ctx, tmp_path):
    (ctx / ".dockerignore").write_text("*\n!../victim/hello\n!**/../flag\n!a\n")
    out = ok(bstore, ctx, tmp_path, "FROM busybox\nCOPY . /all/\n")
    assert sorted(os.listdir(out / "all")) == ["a"]


def test_C12_invalid_dockerignore_pattern_is_an_error(bstore, ctx):
    (ctx / ".dockerignore").write_text("[\n")
    err = fails(bstore, ctx, "FROM busybox\nCOPY a /a\n")
    assert ".dockerignore" in err


def test_C12_many_dockerignore_patterns_bounded(bstore, ctx, tmp_path):
    (ctx / ".dockerignore").write_text("".join(f"p{i}/**/x{i}\n" for i in range(100_000)))
    for i in range(50):
        (ctx / f"f{i}").write_text("f")
    build(bstore, ctx, "FROM busybox\nCOPY . /all/\n", tmp_path / "o", timeout=120)


@pytest.mark.parametrize("target", ["../victim/hello", "/etc/hostname", "../../../flag"])
def test_C12_dockerfile_symlink_out_of_the_context(bstore, ctx, target):
    os.symlink(target, ctx / "Dockerfile")
    result = subprocess.run([sys.executable, "-m", "builder", "--root", str(bstore), "build",
                             str(ctx)], capture_output=True, timeout=120)
    err = one_line_error(result)
    assert "build context" in err or "not found" in err
    assert "hello" not in err.split(":", 2)[-1]


def test_C12_dockerfile_symlink_inside_the_context(bstore, ctx, tmp_path):
    (ctx / "sub").mkdir()
    (ctx / "sub" / "Dockerfile.real").write_text("FROM busybox\nCOPY a /a\n")
    os.symlink("sub/Dockerfile.real", ctx / "Dockerfile")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "builder", "--root", str(bstore), "build",
                    "-o", f"type=local,dest={out}", str(ctx)], check=True, capture_output=True,
                   timeout=120)
    assert (out / "a").read_text() == "a"


# ------------------------------------------------------------------ C13

@pytest.mark.parametrize("context", ["https://example.invalid/ctx.tar",
                                     "git@github.com:x/y.git", "https://h.invalid/r.git#main"])
def test_C13_remote_contexts_refused(bstore, context):
    result = subprocess.run([sys.executable, "-m", "builder", "--root", str(bstore), "build",
                             context], capture_output=True, timeout=60)
    assert "not a directory" in one_line_error(result)


def test_C13_stdin_tar_is_not_unpacked(bstore, sandbox):
    # "-" reads a Dockerfile, never a context archive: a tar holding a symlinked
    # Dockerfile and then garbage is just an invalid Dockerfile.
    data = TarMaker().add("Dockerfile", "sym", target=str(sandbox.host_dir / "hostfile")) \
        .data()[:512] + os.urandom(2048)
    result = subprocess.run([sys.executable, "-m", "builder", "--root", str(bstore), "build",
                             "-"], input=data, capture_output=True, timeout=60)
    one_line_error(result)


@pytest.mark.parametrize("swap", ["sub", "sub/inner"])
@pytest.mark.parametrize("source", ["sub", "sub/inner", "sub/inner/f"])
def test_C03_swap_right_after_resolving(ctx, sandbox, tmp_path, monkeypatch, swap, source):
    """The race made deterministic: the moment a source has been resolved inside
    the context, a component is swapped for a link to a host dir holding the same
    names.  The copy must then fail (or copy context content), never host content."""
    import builder.engine.copy as copy_mod
    import builder.engine.copy_plan as copy_plan_mod
    from builder.engine.copy import copy_into
    from builder.engine.copy_plan import CopyRequest
    from builder.errors import BuildError

    (ctx / "sub" / "inner").mkdir(parents=True)
    (ctx / "sub" / "inner" / "f").write_text("ctx")
    host = tmp_path / "host"   # outside the sandbox's top: it may hold what it likes
    (host / "inner").mkdir(parents=True)
    (host / "inner" / "f").write_text("host")
    (host / "f").write_text("host")
    image = tmp_path / "image"
    image.mkdir()
    real = copy_mod.resolve_in_root
    swapped: list[Path] = []
    calls: list[str] = []

    def unswap() -> None:
        for victim in swapped:
            os.unlink(victim)
            os.rename(victim.with_name(victim.name + ".parked"), victim)
        swapped.clear()

    def resolve_then_swap(root: str, path: str):
        # Every resolve sees the honest tree; whatever uses its answer sees the swap.
        unswap()
        resolved = real(root, path)
        if root == str(ctx):
            victim = ctx / swap
            os.rename(victim, victim.with_name(victim.name + ".parked"))
            os.symlink(str(host) if swap == "sub" else str(host / "inner"), victim)
            swapped.append(victim)
            calls.append(path)
        return resolved

    monkeypatch.setattr(copy_mod, "resolve_in_root", resolve_then_swap)
    # Source selection (copy_plan) resolves with the same function: swapped there too.
    monkeypatch.setattr(copy_plan_mod, "resolve_in_root", resolve_then_swap)
    try:
        copy_into(str(image), str(ctx), CopyRequest(sources=[source], dest="/out/",
                                                    workdir="/"))
    except BuildError as err:
        assert "changed" in str(err) or "not found" in str(err)
    finally:
        unswap()
    assert calls
    assert leaked(image) == []
    # Links are copied as links (never followed on the host by this check either).
    for top, _dirs, files in os.walk(image):
        for name in files:
            path = os.path.join(top, name)
            if not os.path.islink(path):
                assert Path(path).read_text() == "ctx", path
