"""ADD of a git repository, against local git servers (git http-backend behind
http.server, and git daemon for git://), all on 127.0.0.1.

BuildKit references: which sources are git and how the URL is read,
frontend/dockerfile/dfgitutil/git_ref.go (ParseGitRef, loadQuery) and
util/gitutil/git_url.go (ParseURL; only http, https, ssh, git; http(s) only with
a ``.git`` path); what is done with them, frontend/dockerfile/dockerfile2llb/
convert_copy.go (dispatchCopy: llb.Git, the checkout's root copied into the
destination); what the checkout holds, source/git/source.go (checkout: no .git
unless keep-git-dir, and none with a subdir; the subdir made of directories
only, validateDirsOnly; the ref resolved with ls-remote, the cache key is the
commit, shaToCacheKey; origin set to the redacted URL, urlutil/redact.go).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from git_http import (
    build,
    commit,
    exported,
    git,
    git_daemon,
    git_http_server,
    make_repo,
    no_leftovers,
    tagged,
)

pytestmark = [pytest.mark.root, pytest.mark.overlay]


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """srv/repo.git: main (2 commits), annotated tag v1 and light tag l1 on the first."""
    root = tmp_path / "srv"
    path = root / "repo.git"
    first = make_repo(path, {"a.txt": "one", "sub/b.txt": "bee", "run.sh": "#!/bin/sh\n"})
    os.chmod(path / "run.sh", 0o755)
    git(path, "add", "-A")
    git(path, "commit", "-q", "--amend", "-m", "first")
    first = git(path, "rev-parse", "HEAD")
    git(path, "tag", "-a", "v1", "-m", "release")
    git(path, "tag", "l1")
    second = commit(path, {"a.txt": "two"}, "second")
    return root, {"first": first, "second": second}


def test_clone_at_branch_tag_commit_and_subdir(tmp_path: Path, repo) -> None:
    """Branch, annotated and light tags, a commit SHA, ``#ref:subdir`` and the
    ``?ref=&subdir=`` query form each check out what they name."""
    root, commits = repo
    with git_http_server(root) as served:
        url = f"{served.base}/repo.git"
        build(tmp_path, "FROM scratch\n"
              f"ADD {url}#main /branch\n"
              f"ADD {url}#v1 /tag\n"
              f"ADD {url}#l1 /light\n"
              f"ADD {url}#{commits['first']} /sha\n"
              f"ADD {url}#main:sub /subdir\n"
              f"ADD {url}?tag=v1&subdir=sub /query/\n"
              f"ADD {url} /default\n")
    files = exported(tmp_path)
    assert files["branch/a.txt"] == ("file", "two")
    assert files["default/a.txt"] == ("file", "two")
    for where in ("tag", "light", "sha"):
        assert files[f"{where}/a.txt"] == ("file", "one"), where
        assert files[f"{where}/sub/b.txt"] == ("file", "bee"), where
    assert files["subdir/b.txt"] == ("file", "bee") and "subdir/a.txt" not in files
    assert files["query/b.txt"] == ("file", "bee")
    assert not any(name.endswith(".git") for name in files)   # no --keep-git-dir
    assert no_leftovers(tmp_path / "store") == []


def test_git_url_is_cloned_not_saved_as_a_page(tmp_path: Path, repo) -> None:
    """The old behaviour fetched the URL over HTTP and saved the forge's HTML page as
    a file named repo.git; BuildKit clones it (isGitSource before isHTTPSource in
    convert_copy.go)."""
    root, _ = repo
    with git_http_server(root) as served:
        build(tmp_path, f"FROM scratch\nADD {served.base}/repo.git /src/\n")
    files = exported(tmp_path)
    assert "src/repo.git" not in files
    assert files["src/a.txt"] == ("file", "two")


def test_checkout_modes_and_owner(tmp_path: Path, repo) -> None:
    """Files keep git's modes (0644, 0755 for executables), owned by root; --chown,
    --chmod and --exclude apply as to any ADD (convert_copy.go passes copyOpt)."""
    import tarfile

    root, _ = repo
    with git_http_server(root) as served:
        build(tmp_path, f"FROM scratch\nADD {served.base}/repo.git#main /src\n"
              f"ADD --chown=7:8 --chmod=600 {served.base}/repo.git#main /own\n"
              f"ADD --exclude=*.sh {served.base}/repo.git#main /ex\n")
    with tarfile.open(tmp_path / "out.tar") as archive:
        members = {m.name.removeprefix("./"): m for m in archive}
    assert members["src/a.txt"].mode == 0o644 and members["src/run.sh"].mode == 0o755
    assert (members["src/a.txt"].uid, members["src/a.txt"].gid) == (0, 0)
    assert members["own/run.sh"].mode == 0o600
    assert (members["own/a.txt"].uid, members["own/a.txt"].gid) == (7, 8)
    assert "ex/a.txt" in members and "ex/run.sh" not in members   # --exclude applies


def test_keep_git_dir(tmp_path: Path, repo) -> None:
    """--keep-git-dir keeps .git (HEAD at the commit, origin without credentials);
    without it, or with a subdir, there is none."""
    root, commits = repo
    with git_http_server(root) as served:
        url = f"{served.base}/repo.git".replace("http://", "http://user:secret@")
        build(tmp_path, "FROM scratch\n"
              f"ADD --keep-git-dir {url}#main /kept\n"
              f"ADD {url}?keep-git-dir=true&tag=v1 /query\n"
              f"ADD --keep-git-dir=false {url}#main /plain\n"
              f"ADD --keep-git-dir {url}#main:sub /sub\n")
    files = exported(tmp_path)
    assert files["kept/.git/HEAD"] == ("file", commits["second"] + "\n")
    assert files["query/.git/HEAD"] == ("file", commits["first"] + "\n")
    config = files["kept/.git/config"][1]
    assert "xxxxx:xxxxx@127.0.0.1" in config and "secret" not in config
    assert "kept/a.txt" in files
    assert not any(name.startswith(("plain/.git", "sub/.git")) for name in files)
    assert files["sub/b.txt"] == ("file", "bee")


def test_mtime_commit(tmp_path: Path, repo) -> None:
    """``?mtime=commit``: every entry gets the commit time (source/git/source.go,
    resetSnapshotMtimes)."""
    import tarfile

    root, commits = repo
    when = int(git(root / "repo.git", "log", "-1", "--format=%ct", commits["first"]))
    with git_http_server(root) as served:
        build(tmp_path, f"FROM scratch\nADD {served.base}/repo.git?tag=v1&mtime=commit /src\n")
    with tarfile.open(tmp_path / "out.tar") as archive:
        times = {m.name.removeprefix("./"): m.mtime for m in archive}
    assert times["src/a.txt"] == times["src/sub/b.txt"] == times["src/sub"] == when


def test_invoker_git_config_and_environment_are_ignored(tmp_path: Path, repo) -> None:
    """git runs with no user or system config and an environment of its own
    (gitutil/git_cli.go: GIT_CONFIG_NOSYSTEM, GIT_CONFIG_GLOBAL, HOME): a
    ~/.gitconfig rewriting the URL, GIT_CONFIG_PARAMETERS and GIT_DIR in pybuild's
    environment change nothing."""
    root, _ = repo
    home = tmp_path / "home"
    home.mkdir()
    with git_http_server(root) as served:
        (home / ".gitconfig").write_text(
            f'[url "http://127.0.0.1:1/"]\n\tinsteadOf = {served.base}/\n')
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home),
               "GIT_CONFIG_PARAMETERS": "'protocol.allow'='never'",
               "GIT_DIR": str(tmp_path / "nowhere")}
        build(tmp_path, f"FROM scratch\nADD {served.base}/repo.git#main /src\n", env=env)
    assert exported(tmp_path)["src/a.txt"] == ("file", "two")


def test_cache_key_is_the_resolved_commit(tmp_path: Path, repo) -> None:
    """The same commit is a cache hit; a new commit on the branch rebuilds."""
    root, _ = repo
    with git_http_server(root) as served:
        dockerfile = f"FROM scratch\nADD {served.base}/repo.git#main /src\n"
        build(tmp_path, dockerfile)
        again = build(tmp_path, dockerfile)
        assert b"CACHED" in again.stderr + again.stdout
        commit(root / "repo.git", {"a.txt": "three"}, "third")
        moved = build(tmp_path, dockerfile)
        assert b"CACHED" not in moved.stderr + moved.stdout
    assert exported(tmp_path)["src/a.txt"] == ("file", "three")


def test_git_protocol_with_git_daemon(tmp_path: Path, repo) -> None:
    """``git://`` URLs are git sources with or without ``.git`` (git_url.go)."""
    root, _ = repo
    with git_daemon(root) as base:
        build(tmp_path, f"FROM scratch\nADD {base}/repo.git#v1 /src\n")
    assert exported(tmp_path)["src/a.txt"] == ("file", "one")


def test_missing_ref_and_subdir_fail_cleanly(tmp_path: Path, repo) -> None:
    root, _ = repo
    with git_http_server(root) as served:
        url = f"{served.base}/repo.git"
        for source, message in ((f"{url}#nope", b"does not contain ref nope"),
                                (f"{url}#main:missing", b"not found in the repository"),
                                (f"{url}#main:a.txt", b"contains non-directory"),
                                (f"{url}?bogus=1", b'unexpected query "bogus"'),
                                (f"{url}#-bad", b"invalid git ref")):
            result = build(tmp_path, f"FROM scratch\nADD {source} /x\n", check=False,
                           tag="b-fail")
            assert result.returncode != 0, source
            assert message in result.stderr, (source, result.stderr)
            assert b"Traceback" not in result.stderr
    assert not tagged(tmp_path, "b-fail")
    assert no_leftovers(tmp_path / "store") == []


def test_symlinks_in_the_repository_never_lead_outside(tmp_path: Path) -> None:
    """A repository with links to /etc, to ``..`` and to a host directory: they are
    copied as links, nothing is read or written outside; a subdir through a link is
    refused (CVE-2026-33748, BuildKit validateDirsOnly); a later ADD through a link
    from an earlier one lands inside the image (catalogue C05/T25)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret").write_text("host file")
    root = tmp_path / "srv"
    make_repo(root / "links.git", {"etc": "-> /etc", "up": "-> ../../..", "deep/up": "-> ..",
                                   "into": f"-> {victim}"})
    make_repo(root / "write.git", {"into/pwned": "written", "etc/pwned": "written"})
    with git_http_server(root) as served:
        base = served.base
        build(tmp_path, f"FROM scratch\nADD {base}/links.git /app\n"
              f"ADD {base}/write.git /app\n")
        files = exported(tmp_path)
        for subdir in ("etc", "up", "deep/up", "into", "into/x"):
            result = build(tmp_path, f"FROM scratch\nADD {base}/links.git#main:{subdir} /x\n",
                           check=False, tag="b-fail")
            assert result.returncode != 0 and b"non-directory" in result.stderr, subdir
    assert files["app/etc"] == ("link", "/etc") and files["app/up"] == ("link", "../../..")
    assert files["app/into"] == ("link", str(victim))
    # The second ADD followed the image's links inside the image, never the host's.
    assert files[f"{str(victim).lstrip('/')}/pwned"] == ("file", "written")
    assert files["etc/pwned"] == ("file", "written")
    assert sorted(os.listdir(victim)) == ["secret"]
    assert not Path("/etc/pwned").exists()


def test_userinfo_stays_out_of_errors_and_explain(tmp_path: Path, repo) -> None:
    """The URL's password appears where BuildKit shows it (the instruction text in
    history and progress: convert_copy.go writes the source as given), not in git's
    errors or cache records (BuildKit's errors use urlutil.RedactCredentials)."""
    import subprocess
    import sys

    root, _ = repo
    with git_http_server(root) as served:
        url = f"{served.base}/repo.git".replace("http://", "http://user:secret@")
        build(tmp_path, f"FROM scratch\nADD {url}#main /src\n", tag="b-cred")
        commit(root / "repo.git", {"a.txt": "moved"}, "moved")
        build(tmp_path, f"FROM scratch\nADD {url}#main /src\n", tag="b-cred")
        failed = build(tmp_path, f"FROM scratch\nADD {url}#nope /src\n", check=False)
    # The instruction itself is shown as written (BuildKit's progress and error
    # context show it too); git's error and pybuild's own text are redacted.
    instruction = f"ADD {url}#nope /src".encode()
    assert failed.returncode != 0 and instruction in failed.stderr
    assert b"secret" not in failed.stderr.replace(instruction, b"")
    assert b"xxxxx:xxxxx@" in failed.stderr
    explain = subprocess.run([sys.executable, "-m", "builder", "--root",
                              str(tmp_path / "store"), "explain", "b-cred"],
                             capture_output=True, timeout=120)
    assert explain.returncode == 0
    shown = explain.stdout.replace(f"ADD {url}#main /src".encode(), b"")
    assert b"secret" not in shown + explain.stderr
    assert b"cache miss: git: " in shown   # the reason names the commit (around the change)
    as_json = subprocess.run([sys.executable, "-m", "builder", "--root",
                              str(tmp_path / "store"), "explain", "--format", "json",
                              "b-cred"], capture_output=True, timeout=120).stdout
    params = json.loads(as_json)["steps"][0]["reasons"][0]["params"]
    assert params["input"] == "git" and params["old"] != params["new"]
    assert all(p.startswith("http://xxxxx:xxxxx@") for p in (params["old"], params["new"]))
    assert b"secret" not in as_json.replace(json.dumps(f"ADD {url}#main /src").encode(), b"")


def test_submodules_are_refused_unless_skipped(tmp_path: Path, repo) -> None:
    """BuildKit checks submodules out; pybuild does not fetch them, so it refuses
    rather than copy empty directories, unless ``?submodules=false``."""
    root, commits = repo
    path = root / "repo.git"
    git(path, "update-index", "--add", "--cacheinfo", f"160000,{commits['first']},mod")
    git(path, "commit", "-q", "-m", "with a submodule")
    with git_http_server(root) as served:
        url = f"{served.base}/repo.git"
        refused = build(tmp_path, f"FROM scratch\nADD {url}#main /src\n", check=False)
        assert refused.returncode != 0 and b"submodules" in refused.stderr
        build(tmp_path, f"FROM scratch\nADD {url}?ref=main&submodules=false /src\n")
    files = exported(tmp_path)
    assert files["src/a.txt"] == ("file", "two") and files["src/mod"][0] == "dir"


@pytest.mark.parametrize("source", ["file:///etc/hostname", "ext::sh -c id",
                                    "ftp://127.0.0.1/repo.git"])
def test_other_protocols_are_never_fetched(tmp_path: Path, source: str) -> None:
    """Only http, https, ssh and git are git transports (git_url.go); anything else
    is a context path, so nothing outside the context is read."""
    result = build(tmp_path, f"FROM scratch\nADD {source} /x\n", check=False)
    assert result.returncode != 0 and b"not found" in result.stderr


@pytest.mark.parametrize(("source", "remote", "ref", "subdir"), [
    ("https://github.com/moby/buildkit.git", "https://github.com/moby/buildkit.git", "", ""),
    ("https://host/r.git#v1:a/../b/", "https://host/r.git", "v1", "b"),
    ("http://host/r.git?ref=main&subdir=x", "http://host/r.git", "main", "x"),
    ("https://host/r.git?branch=dev", "https://host/r.git", "refs/heads/dev", ""),
    ("git://host/repo#main", "git://host/repo", "main", ""),
    ("ssh://git@host/repo.git#t:d", "ssh://git@host/repo.git", "t", "d"),
    ("git@github.com:moby/buildkit.git#main", "git@github.com:moby/buildkit.git", "main", ""),
])
def test_git_url_forms(source: str, remote: str, ref: str, subdir: str) -> None:
    """dfgitutil/git_ref_test.go's forms."""
    from builder.engine.git_source import parse_git_ref

    found = parse_git_ref(source)
    assert found is not None
    assert (found.remote, found.ref, found.subdir) == (remote, ref, subdir)


@pytest.mark.parametrize("source", ["https://host/file.tar.gz", "http://host/repo",
                                    "github.com/moby/buildkit", "./x.git", "dir/x.git"])
def test_not_git(source: str) -> None:
    from builder.engine.git_source import parse_git_ref

    assert parse_git_ref(source) is None


def test_redact() -> None:
    """util/urlutil/redact.go."""
    from builder.engine.git_source import redact

    assert redact("https://u:p@h/r.git") == "https://xxxxx:xxxxx@h/r.git"
    assert redact("https://u@h/r.git") == "https://xxxxx@h/r.git"
    assert redact("git@h:r.git") == "git@h:r.git"
