"""ADD --checksum: verified for HTTP(S) and git sources, refused where BuildKit
refuses it.

BuildKit references: frontend/dockerfile/dockerfile2llb/convert_copy.go
(dispatchCopy: "checksum can't be specified for multiple sources", "checksum
requires HTTP(S) or Git sources", digest.Parse of an HTTP checksum, the URL's
``checksum=`` against the flag: "checksum mismatch"); source/http/source.go
(validatePinnedChecksum: the sha256 of the downloaded bytes, "digest mismatch
for URL: GOT (expected: WANT)"); source/git/source.go (resolveMetadata: a hex
commit hash, maybe a prefix, of the commit or of the annotated tag; "expected
checksum to match WANT, got GOT").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from git_http import (
    build,
    exported,
    file_server,
    git,
    git_http_server,
    make_repo,
    no_leftovers,
    sha256,
    tagged,
)

pytestmark = [pytest.mark.root, pytest.mark.overlay]

PAYLOAD = b"remote bytes\n"


def _refused(tmp_path: Path, dockerfile: str, *needles: str) -> bytes:
    """Build ``dockerfile`` expecting a failure: non-zero, one clean error naming
    ``needles``, nothing tagged and nothing left in the store's tmp area."""
    result = build(tmp_path, dockerfile, check=False, tag="b-refused")
    err = result.stderr
    assert result.returncode != 0, err
    assert b"Traceback" not in err
    for needle in needles:
        assert needle.encode() in err, (needle, err)
    assert not tagged(tmp_path, "b-refused")
    assert no_leftovers(tmp_path / "store") == []
    return err


def test_http_checksum_right_is_accepted(tmp_path: Path) -> None:
    with file_server({"/f.bin": PAYLOAD}) as base:
        build(tmp_path, f"FROM scratch\nADD --checksum={sha256(PAYLOAD)} {base}/f.bin /f\n")
    assert exported(tmp_path)["f"] == ("file", PAYLOAD.decode())


def test_http_checksum_wrong_fails_and_commits_nothing(tmp_path: Path) -> None:
    """The digest of the bytes downloaded, not a header, is compared; the error
    names the URL, the actual and the expected digest (validatePinnedChecksum)."""
    wrong = sha256(b"something else")
    with file_server({"/f.bin": PAYLOAD}) as base:
        _refused(tmp_path, f"FROM scratch\nADD --checksum={wrong} {base}/f.bin /f\n",
                 f"digest mismatch for {base}/f.bin", sha256(PAYLOAD), f"expected: {wrong}")


def test_http_checksum_is_checked_again_when_it_changes(tmp_path: Path) -> None:
    """A right checksum, then a wrong one for the same URL: the step is not taken
    from the cache of the first (the checksum is part of its key)."""
    with file_server({"/f.bin": PAYLOAD}) as base:
        build(tmp_path, f"FROM scratch\nADD --checksum={sha256(PAYLOAD)} {base}/f.bin /f\n")
        _refused(tmp_path, f"FROM scratch\nADD --checksum={sha256(b'x')} {base}/f.bin /f\n",
                 "digest mismatch")


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "invalid checksum digest format"),
    ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm"),
    ("sha256:abc", "invalid checksum digest length"),
])
def test_http_checksum_syntax(tmp_path: Path, value: str, message: str) -> None:
    """digest.Parse's errors (go-digest), before anything is fetched."""
    with file_server({"/f.bin": PAYLOAD}) as base:
        _refused(tmp_path, f"FROM scratch\nADD --checksum={value} {base}/f.bin /f\n", message)


def test_checksum_on_a_context_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "local.txt").write_text("x")
    _refused(tmp_path, f"FROM scratch\nADD --checksum={sha256(b'x')} local.txt /f\n",
             "checksum requires HTTP(S) or Git sources")


def test_checksum_with_several_sources_is_refused(tmp_path: Path) -> None:
    with file_server({"/a": b"a", "/b": b"b"}) as base:
        _refused(tmp_path, f"FROM scratch\nADD --checksum={sha256(b'a')} {base}/a {base}/b /d/\n",
                 "checksum can't be specified for multiple sources")


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    """srv/repo.git with one commit on main and an annotated tag v1 on it."""
    root = tmp_path / "srv"
    commit = make_repo(root / "repo.git", {"a.txt": "one"})
    git(root / "repo.git", "tag", "-a", "v1", "-m", "release")
    tag_object = git(root / "repo.git", "rev-parse", "v1")
    return root, commit, tag_object


def test_git_checksum_right_is_accepted(tmp_path: Path, repo) -> None:
    """The full commit, a prefix of it, the annotated tag's object, or the URL's
    ``checksum=``/``commit=`` query."""
    root, commit, tag_object = repo
    with git_http_server(root) as served:
        url = f"{served.base}/repo.git"
        build(tmp_path, "FROM scratch\n"
              f"ADD --checksum={commit} {url}#main /full\n"
              f"ADD --checksum={commit[:12]} {url}#v1 /prefix\n"
              f"ADD --checksum={tag_object} {url}#v1 /tagobject\n"
              f"ADD {url}?ref=main&commit={commit[:7]} /query\n"
              f"ADD --checksum={commit} {url}#{commit} /sha\n")
    files = exported(tmp_path)
    for where in ("full", "prefix", "tagobject", "query", "sha"):
        assert files[f"{where}/a.txt"] == ("file", "one"), where


def test_git_checksum_wrong_fails_and_commits_nothing(tmp_path: Path, repo) -> None:
    root, commit, _ = repo
    wrong = "0" * 40
    with git_http_server(root) as served:
        url = f"{served.base}/repo.git"
        _refused(tmp_path, f"FROM scratch\nADD --checksum={wrong} {url}#main /src\n",
                 f"{url}#main: expected checksum to match {wrong}", f"got {commit}")
        # A commit SHA as the ref is checked without asking the server.
        _refused(tmp_path, f"FROM scratch\nADD --checksum=abc {url}#{commit} /src\n",
                 f"expected checksum to match abc, got {commit}")


@pytest.mark.parametrize(("flag", "query", "message"), [
    ("zzz", "", "invalid checksum zzz for Git URL, expected hex commit hash"),
    ("abc", "&checksum=def", 'checksum mismatch "abc" != "def"'),
])
def test_git_checksum_syntax(tmp_path: Path, repo, flag: str, query: str,
                             message: str) -> None:
    root, _, _ = repo
    with git_http_server(root) as served:
        _refused(tmp_path, f"FROM scratch\nADD --checksum={flag} "
                 f"{served.base}/repo.git?ref=main{query} /src\n", message)
