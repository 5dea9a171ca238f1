"""Security round 2, point 2: nobody else may swap the store's root (docs/security.md, "S").

perms.py makes the root 0700 and refuses a root another user owns; these are
the ways round that a review found, performed for real by ``nobody`` (setpriv,
no capability left) against root's pybuild:

* variant 1: ``nobody`` plants ``/tmp/<shared 1777>/store`` as a symlink to a
  root-owned directory (followed when fs.protected_symlinks is 0): root's
  pybuild used to chmod that directory 0700, its files 0600, and make a store
  in it;
* variant 2: ``nobody`` owns the store's parent dir (in a shared 1777 dir), makes
  the store a symlink to a root-owned 1777 dir, makes ``layers`` in it and keeps
  a shell there: after root builds, it swaps a layer's diff for its own, and
  root's next build ``FROM`` that image reads the attacker's file;
* variant 2b: no symlink at all, only the ``layers`` dir ``nobody`` made in a
  root-owned 1777 dir that root then uses as its store.

pybuild now refuses each with one ``pybuild:`` line naming the path and why,
and ``pybuild doctor`` reports it (``--repair`` removes a foreign top-level
entry).  Controls: a store under a root-owned 0755 dir, directly under /tmp,
and through root's own symlinks still works.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from security.oracle import one_line_error

pytestmark = [pytest.mark.root, pytest.mark.overlay]

NOBODY = 65534
PROTECTED_SYMLINKS = Path("/proc/sys/fs/protected_symlinks")
# The attacker's shell in the layers dir it made: waits for the chain to swap.
SWAP = ('cd "$1" || exit 97; read -r chain; [ -n "$chain" ] || exit 0; '
        'mv "$chain" "$chain.orig" && mkdir -p "$chain/diff" '
        '&& echo TAMPERED > "$chain/diff/app.txt" && echo swapped')


def cli(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", "--root", str(root), *args],
                          capture_output=True, timeout=timeout)


def _nobody_argv(*argv: str) -> list[str]:
    """``argv`` as nobody: setpriv keeps root's capabilities until its own execve, so
    it execs a shell (which drops them, checked) and the shell execs ``argv``."""
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
    no_caps = 'grep -q "^CapEff:[[:space:]]*0*$" /proc/self/status || exit 99; exec "$@"'
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--", "/bin/sh", "-c", no_caps, "sh", *argv]


def as_nobody(*argv: str) -> None:
    result = subprocess.run(_nobody_argv(*argv), capture_output=True, timeout=60)
    assert result.returncode == 0, (argv, result)


def _dir(mode: int, parent: str = "/tmp") -> Path:
    path = Path(tempfile.mkdtemp(prefix="pybuild-root-", dir=parent))
    os.chmod(path, mode)
    return path


@pytest.fixture
def scratch() -> Iterator[list[Path]]:
    """Directories to remove after the test (root removes what nobody made too)."""
    made: list[Path] = []
    yield made
    for path in made:
        if path.is_symlink():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def _state(top: Path) -> list[tuple[str, int, int, bytes]]:
    """Every entry's name, mode, owner and content: what must not change."""
    out = []
    for directory, _, files in os.walk(top):
        for path in [Path(directory), *(Path(directory) / f for f in files)]:
            info = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
            out.append((str(path), info.st_mode, info.st_uid, data))
    return sorted(out)


def _refused(result: subprocess.CompletedProcess, *names: str) -> str:
    line = one_line_error(result)
    assert line.startswith("pybuild: "), line
    assert len(result.stderr.decode().strip().splitlines()) == 1, result.stderr
    for name in names:
        assert name in line, line
    return line


# -- variant 1 ---------------------------------------------------------------------------
@pytest.fixture
def symlinks_followed() -> Iterator[None]:
    """fs.protected_symlinks=0 (the kernel then follows any link in a sticky dir),
    restored to what it was."""
    before = PROTECTED_SYMLINKS.read_text().strip()
    PROTECTED_SYMLINKS.write_text("0\n")
    try:
        yield
    finally:
        PROTECTED_SYMLINKS.write_text(before + "\n")


def test_symlinked_root_in_a_sticky_dir_is_refused(symlinks_followed: None,
                                                   scratch: list[Path]) -> None:
    shared, victim = _dir(0o1777), _dir(0o755)
    scratch += [shared, victim]
    (victim / "sub").mkdir(mode=0o755)
    (victim / "sub" / "keep").write_text("root's file\n")
    os.chmod(victim / "sub" / "keep", 0o644)
    before = _state(victim)
    link = shared / "store"
    as_nobody("ln", "-s", str(victim), str(link))
    for verb in (("images",), ("doctor",), ("doctor", "--repair")):
        result = cli(link, *verb)
        assert _state(victim) == before, f"pybuild {' '.join(verb)} changed {victim}"
        if verb == ("images",):
            _refused(result, str(link), f"symlink owned by uid {NOBODY}")
        else:
            assert result.returncode == 1, result
            assert (f"perms: {link}: is a symlink owned by uid {NOBODY}"
                    in result.stdout.decode()), result.stdout


# -- variant 2 ---------------------------------------------------------------------------
T5 = "FROM busybox\nRUN echo original > /app.txt\n"
READ_T5 = "FROM t5\nRUN cat /app.txt > /seen && cat /app.txt\n"


def _attack_layers(root: Path, layers_parent: Path, busybox_tar: Path,
                   work: Path) -> tuple[list[subprocess.CompletedProcess], str]:
    """Root imports busybox and builds t5 in ``root`` while nobody's shell sits in
    the ``layers`` dir it made; nobody swaps t5's layer; root builds FROM t5.
    Returns pybuild's results (up to the first refusal) and what that build read."""
    shell = subprocess.Popen(_nobody_argv("/bin/sh", "-c", SWAP, "sh",
                                          str(layers_parent / "layers")),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    results, chain = [], ""
    try:
        results.append(cli(root, "import", str(busybox_tar), "busybox"))
        if results[-1].returncode == 0:
            results.append(_build(root, work / "t5", T5, "-t", "t5"))
        if results[-1].returncode == 0:
            chain = next(p.parent.parent.name for p in
                         (layers_parent / "layers").glob("*/diff/app.txt"))
    finally:
        out, err = shell.communicate(f"{chain}\n".encode(), timeout=60)
    if chain:
        assert out.strip() == b"swapped", (out, err)  # the attack itself worked
        results.append(_build(root, work / "read", READ_T5))
    seen = work / "read" / "out" / "seen"
    return results, seen.read_text() if seen.exists() else ""


def _build(root: Path, context: Path, dockerfile: str, *args: str) -> subprocess.CompletedProcess:
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(dockerfile)
    return cli(root, "build", "--progress", "plain", "-o", f"type=local,dest={context / 'out'}",
               *args, str(context))


def test_symlinked_root_in_a_parent_another_user_owns_is_refused(
        busybox_tar: Path, scratch: list[Path]) -> None:
    shared, target, work = _dir(0o1777), _dir(0o1777), _dir(0o700)
    scratch += [shared, target, work]
    parent = shared / "ci2"
    as_nobody("mkdir", str(parent))
    as_nobody("ln", "-s", str(target), str(parent / "store"))
    as_nobody("mkdir", str(target / "layers"))
    results, seen = _attack_layers(parent / "store", target, busybox_tar, work)
    everything = b"".join(r.stdout + r.stderr for r in results)
    assert "TAMPERED" not in seen and b"TAMPERED" not in everything, "root read nobody's layer"
    _refused(results[0], str(parent / "store"), f"owned by uid {NOBODY}")
    assert [p.name for p in target.iterdir()] == ["layers"]  # no store was made in it


def test_a_top_level_entry_another_user_made_is_refused(
        busybox_tar: Path, scratch: list[Path]) -> None:
    """No symlink: root itself uses a root-owned 1777 dir as its store, in which
    nobody made ``layers`` first.  Refused; doctor reports it, --repair removes it,
    and then the store works and nobody's shell is left in a deleted dir."""
    base, work = _dir(0o755), _dir(0o700)
    scratch += [base, work]
    root = base / "store"
    root.mkdir()
    os.chmod(root, 0o1777)
    as_nobody("mkdir", str(root / "layers"))
    results, seen = _attack_layers(root, root, busybox_tar, work)
    everything = b"".join(r.stdout + r.stderr for r in results)
    assert "TAMPERED" not in seen and b"TAMPERED" not in everything, "root read nobody's layer"
    _refused(results[0], str(root / "layers"), f"owned by uid {NOBODY}")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700  # closed before the refusal
    checked = cli(root, "doctor")
    assert checked.returncode == 1
    assert f"perms: {root / 'layers'}: is owned by uid {NOBODY}" in checked.stdout.decode()
    repaired = cli(root, "doctor", "--repair")
    assert repaired.returncode == 0, repaired.stdout.decode()
    assert "[repaired]" in repaired.stdout.decode()
    assert cli(root, "import", str(busybox_tar), "busybox").returncode == 0
    assert (root / "layers").stat().st_uid == 0


# -- what still works, and what else is refused ------------------------------------------
def test_safe_roots_still_work(busybox_tar: Path, scratch: list[Path]) -> None:
    base = _dir(0o755)
    scratch.append(base)
    under_tmp = Path("/tmp") / f"pybuild-root-{uuid.uuid4().hex}"  # root-owned 1777 parent
    scratch.append(under_tmp)
    (base / "real").mkdir(mode=0o755)
    os.symlink(base / "real", base / "via")             # root's own link on the way
    link = Path("/tmp") / f"pybuild-root-link-{uuid.uuid4().hex}"
    os.symlink(base / "linked", link)                   # root's own link as the root
    (base / "linked").mkdir(mode=0o700)
    scratch.append(link)
    for root in (base / "store", under_tmp, base / "via" / "store", link):
        result = cli(root, "import", str(busybox_tar), "busybox")
        assert result.returncode == 0, (root, result.stderr.decode())
        assert b"busybox" in cli(root, "images").stdout, root
        doctor = cli(root, "doctor")
        assert doctor.returncode == 0 and b"store ok" in doctor.stdout, (root, doctor.stdout)


@pytest.mark.parametrize("case", ["world-writable", "group-writable", "nobody-owned",
                                  "nobody-owned-sticky", "nobody-link-on-the-way"])
def test_unsafe_parents_are_refused(case: str, scratch: list[Path]) -> None:
    """The parent rule: owned by root or the user, and sticky if others may write it."""
    base = _dir(0o755)
    scratch.append(base)
    parent = base / "p"
    if case == "nobody-link-on-the-way":
        (base / "real").mkdir(mode=0o755)
        os.chmod(base, 0o1777)
        as_nobody("ln", "-s", str(base / "real"), str(parent))  # made while base was open
        os.chmod(base, 0o755)
        bad, why = parent, f"is a symlink owned by uid {NOBODY}"
    else:
        parent.mkdir()
        mode, owner = {"world-writable": (0o777, 0), "group-writable": (0o775, 0),
                       "nobody-owned": (0o755, NOBODY),
                       "nobody-owned-sticky": (0o1777, NOBODY)}[case]
        os.chown(parent, owner, owner)
        os.chmod(parent, mode)
        bad = parent
        why = f"is owned by uid {NOBODY}" if owner else f"has mode {mode:04o}"
    result = cli(parent / "store", "images")
    line = _refused(result, f"{bad} {why}")
    assert not (parent / "store").exists(), line
    doctor = cli(parent / "store", "doctor")
    assert doctor.returncode == 1 and f"perms: {bad}: {why}" in doctor.stdout.decode()
