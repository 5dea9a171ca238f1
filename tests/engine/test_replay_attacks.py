"""Attacks on the replay fast path (``builder.replay``): ways to get a replay where the
normal build would give another result, or a replay that fails where the build does not.

As in test_replay.py, a replay is told from a build by ``builder.cli`` not being imported.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli
from replay_project import Project

pytestmark = [pytest.mark.root, pytest.mark.overlay]

def _image(result: subprocess.CompletedProcess[bytes]) -> bytes:
    return next(line for line in result.stderr.splitlines() if line.startswith(b"writing"))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "BUILDKIT_PROGRESS"}


# ---------------------------------------------------------------- wildcards

def _same_as_a_build(project: Project, replayed_why: str) -> None:
    """The next run prints what a build prints now, and did not replay."""
    probe, result = project.probe()
    assert result.returncode == 0, result.stderr.decode()
    reference = project.reference()
    assert b"naming to app" in reference.stderr
    assert _image(result) == _image(reference)  # a replay printed the old image's ID
    assert not probe["replayed"], replayed_why


def test_a_wildcard_parent_that_becomes_a_directory_is_seen(tmp_path: Path,
                                                            busybox_tar: Path) -> None:
    """``COPY src/*/x.txt``: the wildcard's listing of src/ is checked by names only, so
    a file src/b replaced by a directory src/b holding x.txt (same names in src/) went
    unseen: the replay printed the old image, the build copies src/b/x.txt too."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nCOPY src/*/x.txt /app/\n")
    (project.context / "src" / "a").mkdir(parents=True)
    (project.context / "src" / "a" / "x.txt").write_text("a\n")
    (project.context / "src" / "b").write_text("a file, not a directory\n")
    project.cached(recorded=False)
    (project.context / "src" / "b").unlink()
    (project.context / "src" / "b").mkdir()
    (project.context / "src" / "b" / "x.txt").write_text("b\n")
    _same_as_a_build(project, "replayed though src/b/x.txt now matches the wildcard")


def test_a_wildcard_parent_link_whose_target_appears_is_seen(tmp_path: Path,
                                                              busybox_tar: Path) -> None:
    """``COPY src/*/x.txt`` with src/c a link to ../other/d, which does not exist: the
    wildcard skips src/c (not a directory) without a check.  other/d created later
    holding x.txt changes neither src's names nor the link's lstat: the replay printed
    the old image; the build copies src/c/x.txt (a link inside the context)."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nCOPY src/*/x.txt /app/\n")
    (project.context / "src" / "a").mkdir(parents=True)
    (project.context / "src" / "a" / "x.txt").write_text("a\n")
    (project.context / "other").mkdir()
    (project.context / "src" / "c").symlink_to("../other/d")
    project.cached(recorded=False)
    (project.context / "other" / "d").mkdir()
    (project.context / "other" / "d" / "x.txt").write_text("d\n")
    _same_as_a_build(project, "replayed though src/c/x.txt now matches the wildcard")


def test_a_wildcard_match_replaced_by_a_link_is_seen(tmp_path: Path,
                                                     busybox_tar: Path) -> None:
    """The same listing, with the matched directory swapped for a link to another one
    with the same names: the source's parents' isdir checks catch it (withstood)."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nCOPY src/*/x.txt /app/\n")
    (project.context / "src" / "a").mkdir(parents=True)
    (project.context / "src" / "a" / "x.txt").write_text("a\n")
    (project.context / "other").mkdir()
    (project.context / "other" / "x.txt").write_text("other\n")
    project.cached()
    (project.context / "src" / "a" / "x.txt").unlink()
    (project.context / "src" / "a").rmdir()
    (project.context / "src" / "a").symlink_to("../other")
    probe, result = project.probe()
    assert result.returncode == 0, result.stderr.decode()
    assert not probe["replayed"]


# ---------------------------------------------------------------- the terminal

def test_auto_progress_recorded_off_a_terminal_is_not_replayed_on_one(
        tmp_path: Path, busybox_tar: Path) -> None:
    """``--progress auto`` (the default) is plain lines when stderr is not a terminal and
    the live view when it is; the record's key (argv, env) does not say which, so a
    build recorded in CI-like conditions was replayed as plain lines in a terminal."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    env = _env()
    project.cached(progress="auto", env=env)
    leader, follower = pty.openpty()
    try:
        probe, result = project.probe(progress="auto", env=env, stderr=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 0
    assert not probe["replayed"], "plain lines replayed on a terminal (auto: the live view)"


# ---------------------------------------------------------------- closed streams

def _close_stdout() -> None:
    os.close(1)


def test_a_recorded_build_with_stdout_closed_does_not_crash(tmp_path: Path,
                                                            busybox_tar: Path) -> None:
    """``pybuild build -q ... >&-``: Python sets sys.stdout to None and print() does
    nothing, so the build printed nothing and exited 0; recording wraps sys.stdout in
    a Tee, whose write() calls None.write: an AttributeError traceback, exit 1 (also
    when the build is not fully cached: the Tee is installed before the build)."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    normal = subprocess.run([sys.executable, "-m", "builder", *project.argv("-q")],
                            capture_output=True,
                            preexec_fn=_close_stdout)
    assert b"Traceback" not in normal.stderr, normal.stderr.decode()
    assert normal.returncode == 0


def test_a_replay_with_stdout_closed_does_not_crash(tmp_path: Path, busybox_tar: Path) -> None:
    """The same, replayed: play() wrote the image ID to sys.stdout (None) and died with
    an AttributeError traceback (entry.main catches only Ctrl-C and a broken pipe)."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    project.cached("-q")
    replayed = subprocess.run([sys.executable, "-m", "builder", *project.argv("-q")],
                              capture_output=True,
                              preexec_fn=_close_stdout)
    assert b"Traceback" not in replayed.stderr, replayed.stderr.decode()
    assert replayed.returncode == 0


def test_a_replay_into_a_closed_pipe_exits_as_the_build_does(tmp_path: Path,
                                                             busybox_tar: Path) -> None:
    """``pybuild build -q | true``: a reader gone before the output (withstood: 141, no
    traceback, as builder.cli)."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    project.cached("-q")
    read, write = os.pipe()
    os.close(read)
    try:
        replayed = subprocess.run([sys.executable, "-m", "builder", *project.argv("-q")],
                                  stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert b"Traceback" not in replayed.stderr, replayed.stderr.decode()
    assert replayed.returncode == 141


# ---------------------------------------------------------------- the store, concurrently

_RETAG_DURING_BUILD = """\
import subprocess, sys
from builder.cli import build, main
keep = build._keep_record
def _keep_record(*args, **kwargs):
    # Another pybuild process retags the base after this build resolved it, and
    # before the record is kept: the record must not be valid for the new store.
    subprocess.run([sys.executable, "-m", "builder", "--root", sys.argv[1], "tag",
                    "other", "busybox"], check=True, capture_output=True)
    return keep(*args, **kwargs)
build._keep_record = _keep_record
raise SystemExit(main(sys.argv[2:]))
"""


def test_a_store_change_during_the_build_invalidates_its_record(tmp_path: Path,
                                                                busybox_tar: Path) -> None:
    """The record is kept at the generation the store has when the build *ends*: a
    write by another process while the build ran (a pull, a tag, an import of its base
    image) is counted in it, so the next run replayed a build made from the old base."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM busybox\nRUN echo other > /other\n")
    run_cli("build", "--progress", "plain", "-t", "other", str(other), root=project.root)
    first, result = project.probe()
    assert result.returncode == 0 and not first["replayed"], result.stderr.decode()
    during = subprocess.run([sys.executable, "-c", _RETAG_DURING_BUILD, str(project.root),
                             *project.argv()], capture_output=True)
    assert during.returncode == 0, during.stderr.decode()
    probe, result = project.probe()
    assert result.returncode == 0, result.stderr.decode()
    reference = project.reference()
    assert b"naming to app" in reference.stderr
    assert _image(result) == _image(reference)  # a replay printed the old image's ID
    assert not probe["replayed"], "replayed a build of busybox's old image"


# ---------------------------------------------------------------- a deleted cwd

def test_a_build_from_a_deleted_working_directory_does_not_crash(tmp_path: Path,
                                                                 busybox_tar: Path) -> None:
    """Every path absolute, the working directory removed (a CI step's temporary dir):
    the build works, but replay.invocation() calls os.getcwd(), which raises
    FileNotFoundError: the fast path (entry.main, before any build) and _keep_record
    (after the build, as it keeps the record) both die with a traceback."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    gone = tmp_path / "gone"
    gone.mkdir()

    def in_a_deleted_directory() -> None:
        os.chdir(gone)
        os.rmdir(gone)

    for code in ("from builder.cli import main", "from builder.entry import main"):
        gone.mkdir(exist_ok=True)
        result = subprocess.run([sys.executable, "-c", f"import sys; {code}; "
                                 "raise SystemExit(main(sys.argv[1:]))", *project.argv()],
                                capture_output=True, preexec_fn=in_a_deleted_directory,
                                env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        assert b"Traceback" not in result.stderr, f"{code}:\n{result.stderr.decode()}"
        assert result.returncode == 0


# ---------------------------------------------------------------- the Dockerfile read twice

_EDIT_AFTER_LINT = """\
import sys
from pathlib import Path
from builder.cli import main
from builder.lint import gate
lint = gate.lint_before_build
def lint_before_build(*args, **kwargs):
    # The Dockerfile is edited between the lint's read of it and the engine's.
    report = lint(*args, **kwargs)
    Path(sys.argv[1]).write_text("FROM busybox\\nENV X 1\\n")
    return report
gate.lint_before_build = lint_before_build
raise SystemExit(main(sys.argv[2:]))
"""


def test_a_dockerfile_edited_between_lint_and_build_is_not_replayed(
        tmp_path: Path, busybox_tar: Path) -> None:
    """The lint reads the Dockerfile (build.dockerfile_text), then the engine reads it
    again and records that read's digest: an edit between the two is recorded with the
    lint output of the old text.  The new text's warning (LegacyKeyValueFormat) is
    printed by every build of it, but not by its replay."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    dockerfile = project.context / "Dockerfile"
    during = subprocess.run([sys.executable, "-c", _EDIT_AFTER_LINT, str(dockerfile),
                             *project.argv()], capture_output=True)
    assert during.returncode == 0, during.stderr.decode()
    assert dockerfile.read_text() == "FROM busybox\nENV X 1\n"
    probe, result = project.probe()
    reference = project.reference()
    assert b"LegacyKeyValueFormat" in reference.stderr
    assert b"LegacyKeyValueFormat" in result.stderr  # the replay printed no warning
    assert not probe["replayed"]


# ---------------------------------------------------------------- withstood

def _outside_dockerfile(project: Project) -> list[str]:
    outside = project.tmp / "df"
    outside.mkdir()
    (outside / "build.Dockerfile").write_text("FROM busybox\nCOPY . /app/\n")
    return ["-f", str(outside / "build.Dockerfile")]


def _containerfile(project: Project) -> list[str]:
    (project.context / "Dockerfile").rename(project.context / "Containerfile")
    return []


def _bind_only(project: Project) -> list[str]:
    (project.context / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=bind,source=only,target=/o cat /o/f > /f\n")
    (project.context / "only").mkdir()
    (project.context / "only" / "f").write_text("f\n")
    return []


WITHSTOOD = {
    "an ignore file created beside a -f Dockerfile outside the context":
        (_outside_dockerfile, lambda p: (p.tmp / "df" / "build.Dockerfile.dockerignore")
         .write_text("a.txt\n")),
    "a .containerignore created in the context":
        (lambda p: [], lambda p: (p.context / ".containerignore").write_text("a.txt\n")),
    "a Dockerfile created beside the Containerfile in use":
        (_containerfile, lambda p: (p.context / "Dockerfile").write_text(
            "FROM busybox\nENV OTHER=1\n")),
    "a file in a directory only a bind mount reads":
        (_bind_only, lambda p: (p.context / "only" / "f").write_text("g\n")),
    "the base image removed and imported again": (lambda p: [], lambda p: (
        run_cli("rmi", "busybox", root=p.root, check=False),
        run_cli("tag", "app", "busybox", root=p.root))),
}


@pytest.mark.parametrize("attack", list(WITHSTOOD))
def test_withstood(tmp_path: Path, busybox_tar: Path, attack: str) -> None:
    project = Project(tmp_path, busybox_tar, "FROM busybox\nCOPY . /app/\n")
    (project.context / "a.txt").write_text("a\n")
    setup, change = WITHSTOOD[attack]
    extra = setup(project)
    project.cached(*extra)
    change(project)
    probe, result = project.probe(*extra)
    assert result.returncode == 0, result.stderr.decode()
    assert not probe["replayed"], f"replayed after: {attack}"


# ---------------------------------------------------------------- links to outside

@pytest.mark.parametrize("name", ["Dockerfile", ".dockerignore"])
def test_a_file_replaced_by_a_link_out_of_the_context_is_not_followed(
        tmp_path: Path, busybox_tar: Path, name: str) -> None:
    """The Dockerfile (or .dockerignore) replaced by a link to an identical copy outside
    the context: the build refuses it (a link is resolved inside the context, catalogue
    C12; an ignore file's link may not leave it) and fails, but the replay's file check
    opens the path following links, finds the same bytes, and replays: exit 0.  It also
    opens, as root, whatever host file the link names (a device: /dev/watchdog...)."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nCOPY a.txt /app/\n")
    (project.context / "a.txt").write_text("a\n")
    (project.context / ".dockerignore").write_text("*.md\n")
    project.cached()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / name).write_bytes((project.context / name).read_bytes())
    (project.context / name).unlink()
    (project.context / name).symlink_to(outside / name)
    reference = project.reference()
    assert reference.returncode != 0, reference.stderr.decode()
    probe, result = project.probe()
    assert result.returncode == reference.returncode, "replayed a build that fails"
    assert not probe.get("replayed")


# ---------------------------------------------------------------- the interpreter

_OTHER_PYTHON = "/usr/bin/python3"


def _lacks_msgspec(python: str) -> bool:
    return os.path.exists(python) and os.path.realpath(python) != os.path.realpath(
        sys.executable) and subprocess.run([python, "-c", "import msgspec"],
                                           capture_output=True).returncode != 0


@pytest.mark.skipif(not _lacks_msgspec(_OTHER_PYTHON),
                    reason=f"needs a {_OTHER_PYTHON} without msgspec")
def test_another_interpreter_is_another_invocation(tmp_path: Path, busybox_tar: Path) -> None:
    """The record's key holds pybuild's own modules' stat, not the interpreter or the
    libraries pybuild runs on (msgspec...): a build recorded under one Python is
    replayed under another (a venv rebuilt, a library upgraded), here one on which the
    build cannot even start."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    source = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": source}
    project.cached(env=env)
    normal = subprocess.run([_OTHER_PYTHON, "-c", "import sys; from builder.cli import main; "
                             "raise SystemExit(main(sys.argv[1:]))", *project.argv()],
                            capture_output=True, env=env)
    assert normal.returncode != 0  # No module named 'msgspec'
    other = subprocess.run([_OTHER_PYTHON, "-m", "builder", *project.argv()],
                           capture_output=True, env=env)
    assert other.returncode == normal.returncode, "replayed under another interpreter"


# ---------------------------------------------------------------- records pile up

def test_records_of_a_past_generation_are_not_kept(tmp_path: Path, busybox_tar: Path) -> None:
    """A record is found by a digest of the whole environment, and is only valid at
    the generation it was made at; nothing ever deletes one (not even prune).  A CI job
    has a new variable each run (its job ID), so each run adds a record, all but the
    last stale, each holding the listing of every directory of the context: the store
    grows without bound."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nCOPY . /app/\n")
    (project.context / "a.txt").write_text("a\n")
    for job in range(3):
        env = {**os.environ, "CI_JOB_ID": str(job)}
        project.probe(env=env)  # the first run builds the COPY
        _probe, result = project.probe(env=env)
        assert result.returncode == 0, result.stderr.decode()
        run_cli("tag", "app", f"app:{job}", root=project.root)  # the store moves on
    run_cli("prune", "--cache", root=project.root)
    assert project.records() <= 1


# ---------------------------------------------------------------- keeping a record fails

_SAVE_LOCKED = """\
import sqlite3, sys
from builder.cli import main
from builder.store import replays
def save(*args, **kwargs):
    # What the store's connection says after its 60 s busy timeout, when another
    # process holds the write lock (a long import, a migration, a prune).
    raise sqlite3.OperationalError("database is locked")
replays.save = save
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_record_that_cannot_be_kept_does_not_fail_the_build(tmp_path: Path,
                                                              busybox_tar: Path) -> None:
    """Keeping the record is the only write of a fully cached build (which wrote nothing
    before): with the store's write lock held by another process it waits up to 60 s
    (database.py's busy timeout), then the SQLite error escapes _keep_record: a build
    that succeeded, and printed its image, ends with a traceback and exit 1."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    result = subprocess.run([sys.executable, "-c", _SAVE_LOCKED, *project.argv()],
                            capture_output=True)
    assert b"naming to app" in result.stderr
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 0


def test_a_replay_onto_a_full_device_fails_as_the_build_does(tmp_path: Path,
                                                             busybox_tar: Path) -> None:
    """``pybuild build -q ... >/dev/full``: the build says "no space left" in one line
    (exit 1); the replay's write raised OSError(ENOSPC), which entry.main does not
    catch: a traceback."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    project = Project(tmp_path, busybox_tar, "FROM busybox\nENV X=1\n")
    project.cached("-q")
    with open("/dev/full", "w") as full:
        normal = subprocess.run([sys.executable, "-c", "import sys; from builder.cli import "
                                 "main; raise SystemExit(main(sys.argv[1:]))",
                                 *project.argv("-q")], stdout=full, stderr=subprocess.PIPE)
        replayed = subprocess.run([sys.executable, "-m", "builder", *project.argv("-q")],
                                  stdout=full, stderr=subprocess.PIPE)
    assert normal.returncode != 0 and b"Traceback" not in normal.stderr
    assert b"Traceback" not in replayed.stderr, replayed.stderr.decode()
    assert replayed.returncode == normal.returncode


# ---------------------------------------------------------------- the context changing mid-build

_VANISHING = """\
import os, sys
from builder.cli import main
listdir = os.listdir
def vanishing(path="."):
    names = listdir(path)
    # A file listed, then deleted before the wildcard looks at it (an editor's
    # temporary file, a concurrent `git checkout`).
    if isinstance(path, str) and path == sys.argv[1]:
        names.append("gone.txt")
    return names
os.listdir = vanishing
raise SystemExit(main(sys.argv[2:]))
"""


def test_a_file_deleted_while_a_wildcard_lists_it_does_not_crash_the_build(
        tmp_path: Path, busybox_tar: Path) -> None:
    """The wildcard's listing is recorded with each name's type, by an lstat after the
    listing: a name gone by then raised FileNotFoundError out of the recorder, and a
    build that does not even match that name ended with a traceback."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nCOPY *.md /app/\n")
    (project.context / "a.md").write_text("a\n")
    result = subprocess.run([sys.executable, "-c", _VANISHING, str(project.context),
                             *project.argv()], capture_output=True)
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert result.returncode == 0


# ---------------------------------------------------------------- the store's files

def test_a_config_blob_lost_outside_sqlite_is_not_replayed_as_a_success(
        tmp_path: Path, busybox_tar: Path) -> None:
    """The generation sees every write to the store's tables, not its files: with the
    base image's config blob gone (a disk error, a half-restored backup, a hand-made
    clean-up), the build fails ("blob ... is not in the store", exit 1) while the
    replay prints the old success and exits 0."""
    project = Project(tmp_path, busybox_tar, "FROM busybox\nCOPY a.txt /a\n")
    (project.context / "a.txt").write_text("a\n")
    project.cached()
    blobs = project.root / "blobs" / "sha256"
    aside = tmp_path / "aside"
    aside.mkdir()
    for blob in blobs.iterdir():
        blob.rename(aside / blob.name)
    try:
        reference = project.reference()
        probe, result = project.probe()
    finally:
        for blob in aside.iterdir():
            blob.rename(blobs / blob.name)
    assert reference.returncode != 0, reference.stderr.decode()
    assert result.returncode == reference.returncode, "the replay hid a damaged store"
    assert not probe.get("replayed")


def test_names_that_are_not_utf8_are_recorded_and_checked(tmp_path: Path,
                                                          busybox_tar: Path) -> None:
    """A context, a copied file and a wildcard match whose names are not UTF-8 (withstood:
    replayed with the same bytes, and a change to the file is seen)."""
    project = Project(tmp_path, busybox_tar,
                      "FROM busybox\nENV X 1\nCOPY sub/ /s/\nCOPY *.txt /t/\n")
    context = Path(os.fsdecode(bytes(project.context) + b"\xff"))
    project.context.rename(context)
    project.context = context
    (context / "sub").mkdir()
    copied = context / "sub" / os.fsdecode(b"f\xfe")
    copied.write_text("f\n")
    (context / os.fsdecode(b"x\xfd.txt")).write_text("x\n")
    project.cached()
    normal = project.reference()
    probe, result = project.probe()
    assert probe["replayed"] and result.stderr == normal.stderr
    assert b"ctx\\xff" in result.stderr  # the lint warning names the Dockerfile
    copied.write_text("F\n")
    probe, result = project.probe()
    assert not probe["replayed"]
