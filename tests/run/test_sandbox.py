"""The RUN sandbox: real namespaces, a real overlay mount, and nothing leaking into the layer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.layers.empty import EMPTY_DIFF_ID
from builder.run import RunSpec, run_step
from builder.run.sandbox import resolve_in_root, resolve_user
from builder.snapshot import commit, prepare

pytestmark = [pytest.mark.root, pytest.mark.overlay]


def _run(store, chain, script: str, **spec) -> tuple[int, str, object]:
    out = bytearray()
    snapshot = prepare(store, chain)
    code = run_step(snapshot, RunSpec(["/bin/sh", "-c", script],
                                      env=["PATH=/bin:/usr/bin:/sbin"], **spec), out.extend)
    result = commit(snapshot)
    return code, out.decode(), result


def _chain(store, name: str) -> str | None:
    return store.image_top_chain(store.resolve_image(name))


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def test_run_is_pid_1_with_its_own_hostname_and_proc(store, busybox) -> None:
    code, out, result = _run(store, _chain(store, busybox),
                             "echo pid=$$; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
                             "ls /proc | grep -c '^[0-9]'")
    assert code == 0
    lines = out.split("\n")
    assert lines[0] == "pid=1"
    assert lines[1] == "buildkitsandbox"
    assert lines[2].startswith("/bin/sh -c")
    assert int(lines[3]) <= 3  # only our own processes are visible
    # Nothing written: the empty layer, as BuildKit makes (tests/engine/test_empty_layers.py).
    assert store.layer(result.chain_id).diff_id == EMPTY_DIFF_ID


def test_mount_points_and_their_stubs_never_reach_the_layer(store, busybox) -> None:
    before = _mounts()
    chain = _chain(store, busybox)
    code, out, result = _run(store, chain, "cat /etc/hosts >/dev/null && ls /dev/null "
                             "/dev/pts /dev/shm && touch /newfile && rm /etc/hostname")
    assert code == 0, out
    layer = store.layer_dir(result.chain_id)
    names = sorted(str(p.relative_to(layer)) for p in layer.rglob("*"))
    assert names == ["etc", "etc/hostname", "newfile"]
    assert os.stat(layer / "etc" / "hostname").st_rdev == 0  # a 0:0 whiteout
    assert _mounts() == before  # the sandbox's mounts died with it


def test_exit_code_and_output_are_reported(store, busybox) -> None:
    code, out, _ = _run(store, _chain(store, busybox), "echo failing; exit 3")
    assert code == 3 and out == "failing\n"


def test_missing_program_is_a_clear_error(store, busybox) -> None:
    snapshot = prepare(store, _chain(store, busybox))
    with pytest.raises(BuildError, match="executable file not found"):
        run_step(snapshot, RunSpec(["no-such-program"], env=["PATH=/bin"]), lambda b: None)
    snapshot.release()


def test_network_none_has_only_loopback(store, busybox) -> None:
    code, out, _ = _run(store, _chain(store, busybox), "ls /sys/class/net", network="none")
    assert code == 0
    assert out.split() == ["lo"]


def test_user_is_resolved_from_the_image_passwd(store, busybox) -> None:
    code, out, _ = _run(store, _chain(store, busybox), "id -u; id -g", user="daemon")
    assert code == 0 and out.split() == ["1", "1"]
    code, out, _ = _run(store, _chain(store, busybox), "id -u; id -g", user="1234:100")
    assert out.split() == ["1234", "100"]
    with pytest.raises(BuildError, match="unable to find user nosuch"):
        _run(store, _chain(store, busybox), "true", user="nosuch")


def test_no_file_descriptors_leak_into_the_step(store, busybox) -> None:
    leaked = os.open("/etc/hostname", os.O_RDONLY)  # inheritable on purpose
    os.set_inheritable(leaked, True)
    try:
        code, out, _ = _run(store, _chain(store, busybox), "ls /proc/self/fd")
    finally:
        os.close(leaked)
    assert code == 0
    assert sorted(int(fd) for fd in out.split()) == [0, 1, 2, 3]  # 3: ls's own dir fd


def test_resolve_in_root_never_leaves_the_root(tmp_path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\nbob:x:7:8::/:/bin/sh\n")
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../etc", root / "up")
    assert resolve_in_root(str(root), "/abs/passwd") == str(root / "etc" / "passwd")
    assert resolve_in_root(str(root), "/up/passwd") == str(root / "etc" / "passwd")
    assert resolve_in_root(str(root), "/../../etc/passwd") == str(root / "etc" / "passwd")
    assert resolve_in_root(str(root), "/missing/x") is None
    os.symlink("loop", root / "loop")
    with pytest.raises(Exception, match="too many levels"):
        resolve_in_root(str(root), "/loop")
    ident = resolve_user(str(root), "bob")
    assert (ident.uid, ident.gid) == (7, 8)


def test_host_mount_table_is_untouched_after_a_killed_step(store, busybox) -> None:
    """kill -9 of the whole build process mid-step leaves no mount behind."""
    before = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True,
                            text=True).stdout
    script = (
        "import sys\n"
        "from builder.store import Store\n"
        "from builder.snapshot import prepare\n"
        "from builder.run import RunSpec, run_step\n"
        f"store = Store({str(store.root)!r})\n"
        f"snap = prepare(store, {_chain(store, busybox)!r})\n"
        "run_step(snap, RunSpec(['/bin/sh', '-c', 'echo started; sleep 60'], "
        "env=['PATH=/bin']), lambda b: (sys.stdout.buffer.write(b), sys.stdout.flush()))\n")
    import sys

    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == b"started\n"
        child.kill()
        child.wait()
    after = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True,
                           text=True).stdout
    assert after == before
    # None of this store's (other tools on the machine may have overlay mounts of their own)
    assert str(store.root) not in after


def test_workdir_through_proc_self_fd_reaches_nothing_outside(store, busybox) -> None:
    """runc CVE-2024-21626: a WORKDIR naming an inherited fd must not land outside the root."""
    leaked = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(leaked, True)
    try:
        out = bytearray()
        snapshot = prepare(store, _chain(store, busybox))
        code = 0
        try:
            code = run_step(snapshot, RunSpec(["/bin/sh", "-c", "pwd; ls"], env=["PATH=/bin"],
                                              cwd=f"/proc/self/fd/{leaked}"), out.extend)
        except Exception as err:  # refusing is fine; escaping is not
            assert "working directory" in str(err)
        else:
            assert code == 0 and b"work" not in out and b"vmlinuz" not in out
        snapshot.release()
    finally:
        os.close(leaked)
