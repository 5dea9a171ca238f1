"""Issue 15 points 8 and 9 end to end: lint in every build's summary (cached, so a
rebuild never imports Lark), ``error=true``, the wasted-bytes finding measured from
the layers, ``build --check`` and ``pybuild check DIR``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]

# Line 2: SecretsUsedInArgOrEnv (BuildKit's); 3: 2 MB deleted by line 4
# (FilesDeletedInLaterStep); 5: CdInsteadOfWorkdir (ours); 6: JSONArgsRecommended.
DOCKERFILE = """\
FROM busybox
ARG API_TOKEN
RUN head -c 2000000 /dev/zero > /big
RUN rm /big
RUN cd /tmp && echo hi
CMD echo hi
"""
CLEAN = 'FROM busybox\nRUN head -c 2000000 /dev/zero > /big && rm /big\nCMD ["true"]\n'


def _context(tmp_path: Path, text: str, name: str = "Dockerfile") -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / name).write_text(text)
    return context


def _summary(stderr: bytes) -> list[str]:
    lines = stderr.decode().splitlines()
    start = next((i for i, line in enumerate(lines) if "found:" in line), len(lines))
    return lines[start:]


def test_every_build_prints_the_findings_and_a_rebuild_reads_them_back(
        bstore: Path, tmp_path: Path) -> None:
    context = _context(tmp_path, DOCKERFILE)
    first = run_cli("build", "-t", "lint-sum", str(context), root=bstore)
    where = f"{context}/Dockerfile"
    assert _summary(first.stderr) == [
        " 4 warnings found:",
        ' - SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG '
        f'"API_TOKEN") ({where}:2)',
        " - FilesDeletedInLaterStep: 2.0 MB this step writes are deleted or replaced by later "
        "steps, yet every pull still downloads them with this layer; create and remove such "
        f"files in the same RUN (or use a cache or tmpfs mount, or a build stage) ({where}:3)",
        " - CdInsteadOfWorkdir: 'RUN cd /tmp && …': use 'WORKDIR /tmp' before this RUN (it "
        f"makes the directory, and later steps start there too) ({where}:5)",
        " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended "
        f"behavior related to OS signals ({where}:6)",
    ], first.stderr.decode()
    assert first.stderr.decode().count("SecretsUsedInArgOrEnv") == 1   # not also up front
    # The cached rebuild: the same summary, from the store, without Lark or any rule.
    again = subprocess.run([sys.executable, "-X", "importtime", "-m", "builder", "--root",
                            str(bstore), "build", "-t", "lint-sum", str(context)],
                           capture_output=True, timeout=300, check=True)
    assert b"CACHED" in again.stderr
    assert _summary(again.stderr)[-4:] == _summary(first.stderr)[1:]
    imported = {line.split("|")[-1].strip() for line in again.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert not {"lark", "builder.lint.shell", "builder.lint.rules", "builder.dockerfile.linter",
                "builder.explain.waste"} & imported
    quiet = run_cli("build", "-q", "-t", "lint-sum", str(context), root=bstore)
    assert b"found:" not in quiet.stderr


def test_no_finding_no_summary_and_waste_in_one_run_is_fine(bstore: Path,
                                                             tmp_path: Path) -> None:
    result = run_cli("build", str(_context(tmp_path, CLEAN)), root=bstore)
    assert b"found:" not in result.stderr and b"WARNING" not in result.stderr


def test_skip_directives(bstore: Path, tmp_path: Path) -> None:
    text = ("# check=skip=SecretsUsedInArgOrEnv,CdInsteadOfWorkdir\n"
            + DOCKERFILE.replace("RUN head", "# check=skip=FilesDeletedInLaterStep\nRUN head"))
    result = run_cli("build", str(_context(tmp_path, text)), root=bstore)
    assert [line.split(":")[0] for line in _summary(result.stderr)[1:]] == [
        " - JSONArgsRecommended"]
    result = run_cli("build", str(_context(tmp_path, "# check=skip=all\n" + DOCKERFILE)),
                     root=bstore)
    assert b"found:" not in result.stderr


def test_error_true_stops_the_build_before_any_step(bstore: Path, tmp_path: Path) -> None:
    text = "# check=error=true\nFROM busybox\nRUN cd /tmp && touch /ran\n"
    result = run_cli("build", "-t", "lint-error", str(_context(tmp_path, text)), root=bstore,
                     check=False)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert " - CdInsteadOfWorkdir: " in err and "#1 " not in err   # no step ran
    assert err.strip().splitlines()[-1] == (
        f"pybuild: {tmp_path}/ctx/Dockerfile: lint violation found for rules: "
        "CdInsteadOfWorkdir"), err
    assert "Traceback" not in err
    assert run_cli("images", root=bstore).stdout.count(b"lint-error") == 0
    fixed = text.replace("error=true", "error=true;skip=CdInsteadOfWorkdir")
    run_cli("build", "-t", "lint-error", str(_context(tmp_path, fixed)), root=bstore)


def test_build_check_lints_only(bstore: Path, tmp_path: Path) -> None:
    context = _context(tmp_path, DOCKERFILE)
    result = run_cli("build", "--check", "-t", "lint-check", str(context), root=bstore,
                     check=False)
    out = result.stdout.decode()
    assert result.returncode == 1, result.stderr
    assert out.startswith("Check complete, 3 warnings have been found!\n"), out
    assert (f"\nWARNING: CdInsteadOfWorkdir - docs/lint.md#cdinsteadofworkdir\n'RUN cd /tmp "
            f"&& …': use 'WORKDIR /tmp' before this RUN (it makes the directory, and later "
            f"steps start there too)\n{context}/Dockerfile:5\n--------------------\n"
            "   3 |     RUN head -c 2000000 /dev/zero > /big\n   4 |     RUN rm /big\n"
            "   5 | >>> RUN cd /tmp && echo hi\n   6 |     CMD echo hi\n") in out, out
    assert b"lint-check" not in run_cli("images", root=bstore).stdout   # nothing built
    clean = run_cli("build", "--check", str(_context(tmp_path, CLEAN)), root=bstore)
    assert clean.stdout == b"Check complete, no warnings found.\n"
    stdin = run_cli("build", "--check", "-f", "-", str(context), root=bstore, check=False,
                    stdin=b"FROM busybox\nRUN pip install x\n")
    assert stdin.returncode == 1 and b"WARNING: PipNoCacheDir" in stdin.stdout
    assert b"Dockerfile:2\n" in stdin.stdout
    broken = run_cli("build", "--check", str(_context(tmp_path, "FROM busybox\nNOPE x\n")),
                     root=bstore, check=False)
    assert broken.returncode != 0 and b"Traceback" not in broken.stderr
    assert len(broken.stderr.decode().strip().splitlines()) == 1, broken.stderr


def test_check_takes_a_directory(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN apt-get update\n", name="Containerfile")
    result = run_cli("check", str(context), root=tmp_path / "store", check=False)
    assert result.returncode == 1
    assert result.stdout.decode() == (
        f"{context}/Containerfile:2: AptUpdateWithoutInstall: 'apt-get update' without an "
        "install in the same RUN: its package lists are cached with this layer and go stale "
        "for every later install; run 'apt-get update && apt-get install -y …' in one RUN\n")
    (context / "Containerfile").write_text('FROM busybox\nCMD ["true"]\n')
    assert run_cli("check", str(context), root=tmp_path / "store").stdout == b""
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = run_cli("check", str(empty), root=tmp_path / "store", check=False)
    assert missing.returncode != 0 and b"no Dockerfile" in missing.stderr


def test_an_older_store_gets_the_lint_table(busybox: str, store, tmp_path: Path) -> None:
    root = store.root
    store.close()
    db = sqlite3.connect(root / "pybuild.db")
    db.execute("DROP TABLE lint_results")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    result = run_cli("build", str(_context(tmp_path, "FROM busybox\nRUN cd /tmp\n")),
                     root=root)
    assert b"CdInsteadOfWorkdir" in result.stderr
    db = sqlite3.connect(root / "pybuild.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 4
    assert db.execute("SELECT count(*) FROM lint_results").fetchone()[0] >= 1


def test_a_failed_build_prints_its_findings_before_the_error(bstore: Path,
                                                             tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM busybox\nRUN cd /tmp && exit 3\n")
    result = run_cli("build", str(context), root=bstore, check=False)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0
    summary = lines.index(" 1 warning found:")
    assert lines[summary + 1].startswith(" - CdInsteadOfWorkdir: ")
    assert lines.index(next(x for x in lines if x.startswith("pybuild: "))) > summary


def test_a_build_arg_that_is_not_utf8_builds_not_a_traceback(bstore: Path,
                                                                 tmp_path: Path) -> None:
    """The lint's cache key takes the argument's bytes as given (it reached Python with
    surrogateescape), and so does the image config: both raised UnicodeEncodeError."""
    context = _context(tmp_path, "FROM busybox\nARG VALUE\nRUN echo \"$VALUE\" > /value\n")
    value = "caf" + os.fsdecode(b"\xe9")   # Latin-1 bytes from a shell
    built = run_cli("build", "--build-arg", f"VALUE={value}", "-t", "lint-bytes", str(context),
                    root=bstore, check=False)
    assert built.returncode == 0 and b"Traceback" not in built.stderr, built.stderr.decode()
    # The history keeps the value as Go's encoding/json would: the byte as U+FFFD.
    history = run_cli("history", "--no-trunc", "lint-bytes", root=bstore).stdout.decode()
    assert "VALUE=caf\ufffd" in history


def test_another_build_arg_value_lints_without_lark(bstore: Path, tmp_path: Path) -> None:
    """The hygiene findings are kept by the Dockerfile's bytes: a build that changes only
    an argument's value (a CI job's commit SHA) reads them back and never imports Lark,
    and prints the same findings."""
    context = _context(tmp_path, "FROM busybox\nARG SHA\nRUN cd /tmp && echo $SHA > /sha\n")
    first = run_cli("build", "--build-arg", "SHA=1", "-t", "lint-arg", str(context),
                    root=bstore)
    again = subprocess.run([sys.executable, "-X", "importtime", "-m", "builder", "--root",
                            str(bstore), "build", "--build-arg", "SHA=2", "-t", "lint-arg",
                            str(context)], capture_output=True, timeout=300, check=True)
    imported = {line.split("|")[-1].strip() for line in again.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert "lark" not in imported and "builder.dockerfile.linter" in imported
    assert _summary(again.stderr)[-2:] == _summary(first.stderr)[-2:]
    assert "CdInsteadOfWorkdir" in _summary(again.stderr)[-1]
