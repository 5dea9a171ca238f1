"""No traceback a user can reach (issue 14 point 11): a real non-root user (rootless
mode, tests/rootless/ for its builds) gets one line for every mistake, and the
commands that only read or tidy the user's own store work; ``login`` without a
terminal and without ``--password-stdin`` says so (docker/cli
``cli/command/registry.go``: "Cannot perform an interactive login from a non TTY
device").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli
from nonroot import User, nonroot_user

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    with nonroot_user() as made:
        yield made


def _one_line(result, *words: str) -> str:
    err = result.stderr.decode(errors="replace")
    assert result.returncode != 0, (result.stdout, err)
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("pybuild: "), err
    for word in words:
        assert word in err, err
    return err


def _context(user: User, name: str) -> Path:
    context = user.home / name
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo hi\n")
    for path in (context, context / "Dockerfile"):
        user.own(path)
    return context


@pytest.mark.parametrize("args", [("images",), ("images", "-q"), ("df",), ("prune",),
                                  ("prune", "--cache"), ("doctor",), ("doctor", "--repair")])
def test_store_commands_work_on_the_users_store(user: User, args: tuple[str, ...]) -> None:
    result = user.run(*args)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert (user.home / ".local" / "share" / "pybuild").is_dir()


@pytest.mark.parametrize("args", [
    ("history", "nope"), ("explain", "nope"), ("inspect", "nope"), ("tag", "nope", "x"),
    ("rmi", "nope"), ("save", "-o", "out.tar", "nope"), ("push", "nope"),
    ("pull", "127.0.0.1:9/x:1"), ("logout", "127.0.0.1:9"),
    ("--root", "/var/lib/pybuild-not-yours", "images"), ("check", "/nonexistent/Dockerfile"),
])
def test_other_commands_fail_in_one_line(user: User, args: tuple[str, ...]) -> None:
    _one_line(user.run(*args))


def test_lint_and_parse_work(user: User) -> None:
    context = _context(user, "ctx-lint")
    for args in (("check", str(context / "Dockerfile")),
                 ("debug", "parse", str(context / "Dockerfile"))):
        result = user.run(*args)
        assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("args", [("127.0.0.1:9", "-u", "alice"), ("127.0.0.1:9",)])
def test_login_without_a_terminal_points_at_password_stdin(tmp_path: Path,
                                                           args: tuple[str, ...]) -> None:
    result = run_cli("login", *args, root=tmp_path / "store", stdin=b"secret\n", check=False)
    _one_line(result, "--password-stdin", "not a terminal")


@pytest.mark.parametrize(("args", "words"), [
    (("-u", "alice", "-p", "x", "--password-stdin"), ("mutually exclusive",)),
    (("--password-stdin",), ("--password-stdin needs --username",)),
])
def test_login_flag_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...],
                                          words: tuple[str, ...]) -> None:
    result = run_cli("login", "127.0.0.1:9", *args, root=tmp_path / "store", stdin=b"pw\n",
                     check=False)
    _one_line(result, *words)
