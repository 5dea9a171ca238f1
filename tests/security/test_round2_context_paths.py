"""Security round 2, points 4 and 3-adjacent: context paths that step out of a file,
and context directory names that are overlay options.

* ``l -> f/../secret.txt`` where ``f`` is a regular file: the kernel says ENOTDIR,
  but the in-root resolver stepped back out of the file and reached ``secret.txt``,
  which ``.dockerignore`` hides; COPY copied it and a bind of ``lsub -> f/../sub``
  showed the hidden ``sub/secret`` (the filter's whiteouts landed one level off).
* ``RUN --mount=type=bind,rw`` of a context directory named ``a:/etc``: the overlay
  option string split at the ``:`` and laid the host's ``/etc`` into the step.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from security.oracle import build, one_line_error

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]


def _context(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    (context / "sub").mkdir(parents=True)
    (context / "secret.txt").write_text("TOPSECRET\n")
    (context / "sub" / "secret").write_text("SUBSECRET\n")
    (context / "sub" / "open").write_text("open\n")
    (context / "f").write_text("plain file\n")
    (context / ".dockerignore").write_text("secret.txt\nsub/secret\n")
    os.symlink("f/../secret.txt", context / "l")
    os.symlink("f/../sub", context / "lsub")
    return context


def test_a_link_through_a_file_reaches_no_ignored_file(bstore: Path, tmp_path: Path) -> None:
    context = _context(tmp_path)
    copied = build(bstore, context, "FROM busybox\nCOPY l /leak.txt\n", tmp_path / "o1",
                   check=False)
    if copied.returncode == 0:
        assert b"TOPSECRET" not in (tmp_path / "o1" / "leak.txt").read_bytes()
    else:
        assert "not found" in one_line_error(copied)
    bound = build(bstore, context, "FROM busybox\nRUN --mount=type=bind,source=lsub,"
                  "target=/m cat /m/secret /m/open > /seen 2>&1; true\n", tmp_path / "o2",
                  "--no-cache", check=False)
    if bound.returncode == 0:
        assert b"SUBSECRET" not in (tmp_path / "o2" / "seen").read_bytes()
    else:
        assert "not found" in one_line_error(bound)


@pytest.mark.parametrize(("name", "source"), [("a:/etc", "a:/etc"),
                                              ("b,lowerdir=/etc", "link")])
def test_a_rw_bind_never_mounts_a_host_directory(bstore: Path, tmp_path: Path,
                                                 name: str, source: str) -> None:
    """The source's host path reaches the kernel as /proc/self/fd/N, never as text in
    the option string (a ',' cannot be written in --mount, but a link can lead to it)."""
    context = tmp_path / "ctx"
    (context / name).mkdir(parents=True)
    (context / name / "mine").write_text("mine\n")
    (context / name[0]).mkdir()   # what the option string would take as the first lower
    if source != name:
        os.symlink(name, context / source)
    out = tmp_path / "out"
    build(bstore, context, f"FROM busybox\nRUN --mount=type=bind,source={source},target=/m,"
          "rw ls -a /m > /seen\n", out, "--no-cache")
    assert sorted((out / "seen").read_text().split()) == [".", "..", "mine"]
