"""Rootless mode for real (issue 18): a fresh user with subordinate ids runs pybuild,
which enters a user namespace of its own (builder.userns) and builds with kernel
overlayfs (``userxattr``), RUN steps in namespaces, slirp4netns for the network.

The images it makes are the ones root makes, digest for digest (the base loaded
from the same archive, SOURCE_DATE_EPOCH fixing every time); its store is the
user's, 0700, marked rootless, and root's and the user's stores never mix.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socketserver
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import fails_in_one_line, run_cli
from nonroot import User, nonroot_user

from builder.run.network import resolv_conf

pytestmark = [pytest.mark.root]

# Everything a layer can record, made by RUN and COPY: a whiteout, a directory
# replaced (opaque or whiteouts below), owners through the id map, set-id and
# sticky bits, hard and symbolic links, and every kind of RUN mount.
DOCKERFILE = """\
# syntax=docker/dockerfile:1
FROM base
RUN rm /etc/passwd && rm -rf /var && mkdir -p /var/lib && echo v > /var/lib/v
RUN mkdir -p /srv/a && echo x > /srv/a/f && chown -R 1000:1000 /srv && \\
    cp /bin/busybox /srv/su && chmod 4755 /srv/su && chmod 1777 /srv/a && \\
    ln /srv/a/f /srv/hard && ln -s a/f /srv/soft && chown -h 7:8 /srv/soft
COPY --chown=1000:1000 --chmod=640 file /srv/copied
RUN --mount=type=cache,target=/cache echo c > /cache/n && cat /cache/n > /srv/cache
RUN --mount=type=tmpfs,target=/t touch /t/a && ls /t > /srv/tmpfs
RUN --mount=type=secret,id=s cat /run/secrets/s | wc -c > /srv/secret
RUN --mount=type=bind,source=file,target=/b cat /b > /srv/bound
USER 1000:1000
RUN touch /tmp/by-1000 && id > /tmp/id
USER 0
WORKDIR /srv
"""


@pytest.fixture(scope="module")
def project(user: User, busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's context, secret and base archive (saved from a root store, so both
    sides start from the same image ID)."""
    root_store = tmp_path_factory.mktemp("root") / "store"
    run_cli("import", str(busybox_tar), "base", root=root_store)
    ctx = user.home / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "file").write_text("copied\n")
    (user.home / "secret").write_text("s3cret")
    run_cli("save", "-o", str(user.home / "base.tar"), "base", root=root_store)
    for path in (ctx, ctx / "Dockerfile", ctx / "file", user.home / "secret",
                 user.home / "base.tar"):
        user.own(path)
    ok(user.run("load", "-i", str(user.home / "base.tar")))
    return root_store


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    return result.stdout.decode()


def _build_args(user: User, *extra: str) -> list[str]:
    return ["build", "-q", "--secret",
            f"id=s,src={user.home / 'secret'}", *extra, str(user.home / "ctx")]


def _store(user: User) -> Path:
    return user.home / ".local" / "share" / "pybuild"


def _subordinate(user: User) -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, _ = line.split(":")
        if name == user.name:
            return int(start)
    raise AssertionError(f"no subordinate ids for {user.name}")


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs", "auto"])
def test_images_are_the_ones_root_builds(user: User, project: Path, driver: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    rootless = ok(user.run("--storage-driver", driver,
                           *_build_args(user, "--no-cache", "-t", "app"))).strip()
    as_root = run_cli(*_build_args(user, "-t", "app"), root=project).stdout.decode().strip()
    assert rootless.startswith("sha256:")
    assert rootless == as_root


def test_store_is_the_users_and_marked(user: User, project: Path) -> None:
    ok(user.run(*_build_args(user, "-t", "app")))
    store = _store(user)
    info = os.stat(store)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.uid, 0o700)
    assert (store / "rootless").is_file()
    # Kernel overlayfs mounts in a user namespace here: probed once, recorded, kept.
    assert (store / "snapshotter").read_text() == "overlay\n"
    # A file the image gives uid 1000 is owned by the user's 1000th subordinate id.
    owners = {os.lstat(p).st_uid for p in (store / "layers").glob("*/diff/srv/a/f")}
    assert owners == {_subordinate(user) + 999}


def test_root_and_rootless_stores_never_mix(user: User, project: Path, tmp_path: Path) -> None:
    ok(user.run(*_build_args(user, "-t", "app")))
    fails_in_one_line(run_cli("images", root=_store(user), check=False), "owned by uid")
    # Root of a user namespace mapping only uid 0 owns root's store, yet is rootless.
    run = subprocess.run(["unshare", "-Urm", *run_cli_argv(project, "images")],
                         capture_output=True, timeout=120)
    fails_in_one_line(run, "made by pybuild as root")
    # And the user is refused root's store before anything is read.
    fails_in_one_line(user.run("--root", str(project), "images"), f"store {project}")


def run_cli_argv(root: Path, *args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "builder", "--root", str(root), *args]


def test_local_export_is_owned_by_the_user(user: User, project: Path) -> None:
    out = user.home / "out"
    ok(user.run(*_build_args(user, "-o", f"type=local,dest={out}")))
    owners = {(os.lstat(p).st_uid, os.lstat(p).st_gid) for p in out.rglob("*")}
    assert owners == {(user.uid, os.stat(user.home).st_gid)}
    assert (out / "srv" / "a" / "f").read_text() == "x\n"


def test_store_commands_and_prune(user: User, project: Path) -> None:
    df = user.home / "Dockerfile.gone"
    df.write_text("FROM base\nRUN mkdir /gone && chown 1000:1000 /gone\n")
    user.own(df)
    ok(user.run("build", "-t", "gone", "-f", str(df), str(user.home / "ctx")))
    for args in (("images",), ("history", "gone"), ("inspect", "gone"), ("explain", "gone"),
                 ("df",)):
        ok(user.run(*args))
    report = ok(user.run("doctor"))
    assert report.startswith(f"mode: rootless (uids 0-0 -> {user.uid}-{user.uid}, 1-65536 -> "
                             f"{_subordinate(user)}-"), report
    layers = _store(user) / "layers"
    made = {p.parent.parent.parent.name for p in layers.glob("*/diff/gone")}
    assert len(made) == 1 and os.lstat(next(layers.glob("*/diff/gone"))).st_uid != user.uid
    ok(user.run("rmi", "gone"))
    ok(user.run("prune", "--cache"))  # the build cache holds the layer until then
    # Its files were owned by a subordinate id: only the namespace could remove them.
    assert not list(layers.glob("*/diff/gone"))


@pytest.fixture
def host_server() -> Iterator[int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Quiet) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.server_address[1]
        server.shutdown()


def _get(address: str, port: int) -> str:
    """A bounded HTTP GET in busybox's shell (its static wget crashes on Debian 12)."""
    return (f"(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc -w 3 {address} {port}"
            " || true)")


def test_networks(user: User, project: Path, host_server: int) -> None:
    isolated, host = user.home / "Dockerfile.net", user.home / "Dockerfile.host"
    isolated.write_text(
        "FROM base\n"
        "RUN ip -o -4 addr show tap0 > /default && grep nameserver /etc/resolv.conf >> /default"
        f" && {_get('10.0.2.2', host_server)} >> /default\n"
        "RUN --network=none ip -o link | cut -d' ' -f2 > /none\n")
    host.write_text(f"FROM base\nRUN {_get('127.0.0.1', host_server)} > /host\n")
    out = user.home / "netout"
    for path in (isolated, host):
        user.own(path)
    ok(user.run("build", "-f", str(isolated), "-o", f"type=local,dest={out}",
                str(user.home / "ctx")))
    default = (out / "default").read_text()
    # slirp4netns's addresses; the host's loopback is not reachable through its gateway
    servers = [line for line in resolv_conf(Path("/etc/resolv.conf").read_bytes()).decode()
               .splitlines() if line.startswith("nameserver")]
    assert "10.0.2.100/24" in default and servers[0] in default, default
    assert "HTTP/1.0 200" not in default, default
    assert (out / "none").read_text().split() == ["lo:"]
    ok(user.run("build", "--network", "host", "-f", str(host), "-o",
                f"type=local,dest={out}", str(user.home / "ctx")))
    assert (out / "host").read_text().startswith("HTTP/1.0 200"), (out / "host").read_text()


@pytest.fixture(scope="module")
def single(busybox_tar: Path) -> Iterator[User]:
    with nonroot_user(subordinate_ids=False) as made:
        shutil.copy(busybox_tar, made.home / "busybox.tar")
        made.own(made.home / "busybox.tar")
        ok(made.run("import", str(made.home / "busybox.tar"), "base"))
        yield made


def test_single_id_map_builds_roots_files_and_names_the_rest(single: User) -> None:
    ctx = single.home / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM base\nRUN echo hi > /hi\n")
    (ctx / "Dockerfile.chown").write_text("FROM base\nCOPY --chown=5:5 Dockerfile /d\n")
    (ctx / "Dockerfile.user").write_text("FROM base\nUSER 7\nRUN id\n")
    for path in (ctx, *ctx.iterdir()):
        single.own(path)
    result = single.run("build", "-t", "one", str(ctx))
    ok(result)
    assert b"one id" in result.stderr  # says what it cannot represent
    fails_in_one_line(single.run("build", "-f", str(ctx / "Dockerfile.chown"), str(ctx)),
                      "--chown=5:5", "uid 5 is not mapped")
    fails_in_one_line(single.run("build", "-f", str(ctx / "Dockerfile.user"), str(ctx)),
                      "uid 7 is not mapped")
    config = json.loads(ok(single.run("inspect", "one")))
    assert config


def test_ids_not_granted_are_refused_in_one_line(user: User) -> None:
    """newuidmap checks /etc/subuid itself: asking for ids not granted fails, said once."""
    probe = ("import os\n"
             "from builder import userns\n"
             "from builder.errors import SandboxError\n"
             "ranges = (userns.IdRange(1, 1, 1000),)  # root's own ids: never a user's\n"
             "try:\n"
             "    userns.enter(userns.Plan(os.getuid(), os.getgid(), 'x', ranges, ranges,"
             " None))\n"
             "except SandboxError as err:\n"
             "    print(err)\n")
    result = subprocess.run(["runuser", "-u", user.name, "--", "env", "-i",
                             *(f"{k}={v}" for k, v in user.env.items()), user.python, "-c",
                             probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("rootless mode could not map the subordinate ids: "
                                    "newuidmap"), (result.stdout, result.stderr)
    assert len(result.stdout.strip().splitlines()) == 1


def test_a_cached_rebuild_is_replayed_without_entering(user: User, project: Path) -> None:
    """The record a build makes inside its namespace is found outside it (the replay's
    key has the host's uid), so a fully cached rebuild never enters (docs/rootless.md)."""
    probe = ("import sys\nfrom builder.entry import main\nstatus = main(sys.argv[1:])\n"
             "print('replayed' if 'builder.cli' not in sys.modules else 'built', "
             "file=sys.stderr)\nraise SystemExit(status)\n")
    dockerfile = user.home / "Dockerfile.replay"  # no --secret: such builds are never recorded
    dockerfile.write_text("FROM base\nRUN echo hi > /hi\nCOPY file /f\n")
    user.own(dockerfile)
    seen = []
    for _ in range(3):
        result = subprocess.run(["runuser", "-u", user.name, "--", "env", "-i",
                                 *(f"{k}={v}" for k, v in user.env.items()), user.python,
                                 "-c", probe, "build", "-t", "replayed", "-f",
                                 str(dockerfile), str(user.home / "ctx")],
                                capture_output=True, timeout=120, cwd=user.home)
        assert result.returncode == 0, result.stderr.decode()
        seen.append(result.stderr.decode().split()[-1])
    assert seen[-1] == "replayed", seen


def test_the_probe_falls_back_to_fuse_overlayfs_and_records_it(user: User) -> None:
    """Where kernel overlayfs will not mount in a user namespace (before Linux 5.11,
    made so here by replacing the probe), the store takes fuse-overlayfs, once."""
    root = user.home / "fuse-store"
    probe = ("import sys\nfrom pathlib import Path\n"
             "from builder import snapshot, userns\nfrom builder.store import Store, perms\n"
             "root = Path(sys.argv[1])\nperms.vouch(root)\nuserns.enter()\n"
             "snapshot.overlay_works = lambda store: False\n"
             "print(snapshot.default_driver(Store(root)))\n"
             "snapshot.fuse_works = lambda store: sys.exit('probed twice')\n"
             "print(snapshot.default_driver(Store(root)))\n")
    result = subprocess.run(["runuser", "-u", user.name, "--", "env", "-i",
                             *(f"{k}={v}" for k, v in user.env.items()), user.python, "-c",
                             probe, str(root)], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["fuse-overlayfs", "fuse-overlayfs"], result.stderr
    assert (root / "snapshotter").read_text() == "fuse-overlayfs\n"


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs"])
def test_ctrl_c_stops_a_rootless_build_within_two_seconds(user: User, project: Path,
                                                          driver: str) -> None:
    """SIGINT to the build's process group, as a terminal sends it: the step, the
    namespace and a fuse-overlayfs daemon all end, nothing of the user's is left."""
    dockerfile = user.home / f"Dockerfile.sleep-{driver}"
    dockerfile.write_text("FROM base\nRUN echo started; sleep 300\n")
    user.own(dockerfile)
    log = user.home / f"sleep-{driver}.log"
    with open(log, "wb") as out:
        build = subprocess.Popen(
            ["runuser", "-u", user.name, "--", "env", "-i",
             *(f"{k}={v}" for k, v in user.env.items()), user.python, "-m", "builder",
             "--storage-driver", driver, "build", "--progress", "plain", "-f",
             str(dockerfile), str(user.home / "ctx")],
            stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while b"started" not in log.read_bytes():
            assert time.monotonic() < deadline and build.poll() is None, log.read_text()
            time.sleep(0.05)
        os.killpg(build.pid, signal.SIGINT)
        stopped = time.monotonic()
        try:
            code = build.wait(timeout=10)
        except subprocess.TimeoutExpired:  # say where it hangs (a rare failure under load)
            pytest.fail(f"no exit 10 s after SIGINT; log:\n{log.read_text()}\nprocesses:\n"
                        + _session_processes(build.pid))
        assert code == 130, log.read_text()
        assert time.monotonic() - stopped < 2.0
        assert "interrupted" in log.read_text()
        deadline = time.monotonic() + 5
        while _processes_of(user.uid):  # the step ran as the user's subordinate ids
            assert time.monotonic() < deadline, _processes_of(user.uid)
            time.sleep(0.05)
    finally:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()


def _session_processes(sid: int) -> str:
    """``ps`` lines (state, kernel wait channel, command) of session ``sid``'s processes
    and of the user's, for a failure message."""
    ps = subprocess.run(["ps", "-eo", "pid,ppid,pgid,sid,uid,stat,wchan:24,args"],
                        capture_output=True, text=True).stdout.splitlines()
    return "\n".join(line for i, line in enumerate(ps)
                     if i == 0 or line.split()[3] == str(sid) or line.split()[4] != "0")


def _processes_of(uid: int) -> list[str]:
    """Command lines of live processes whose real uid is ``uid`` (the user's own)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found
