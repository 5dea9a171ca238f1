"""ADD of a git repository, as BuildKit's git source does it.

Which sources are git (``dfgitutil.ParseGitRef`` and ``gitutil.ParseURL`` in
BuildKit): ``git://`` and ``ssh://`` URLs, ``http(s)://`` URLs whose path ends in
``.git``, and SCP-like ``user@host:path``.  A ``#ref:subdir`` fragment or a
``?ref=&tag=&branch=&subdir=&checksum=&keep-git-dir=&submodules=&mtime=`` query
picks what is copied.

The ref is resolved with ``git ls-remote`` on every build (the commit goes into
the step's cache key, as in BuildKit's ``source/git/source.go``); only a cache
miss fetches.  The repository is untrusted and pybuild runs as root, so git runs
with no system or user config, an empty HOME, hooks off, only the URL's own
protocol allowed, no submodules, a timeout and a session of its own, and writes
into a private directory in the store's tmp area.  The checkout is then copied
into the layer by the ordinary copier (symlinks copied as links, never followed).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import urllib.parse
from pathlib import Path

import msgspec
from msgspec.structs import replace

from builder.dockerfile.stages import PROXY_ARGS
from builder.errors import BuildError

_SCHEMES = ("http", "https", "ssh", "git")
_PROTO = re.compile(r"^[a-zA-Z0-9]+://")
_SCP = re.compile(r"^([a-zA-Z0-9_-]+)@([a-zA-Z0-9.-]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_HEX = re.compile(r"^[a-fA-F0-9]+$")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_TIMEOUT = 600.0      # per git command: a clone of a large repository takes a while
_MAX_ERR = 2000       # characters of git's stderr quoted in an error
# No user key and no agent: BuildKit uses only what --ssh forwards, pybuild has none.
_SSH = ("ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityFile=none "
        "-o IdentityAgent=none -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null")


class GitRef(msgspec.Struct, frozen=True):
    source: str                 # as written in the Dockerfile
    remote: str                 # what git is given: no fragment, no query
    scheme: str
    ref: str = ""               # "" = the remote's default branch
    subdir: str = ""
    checksum: str = ""
    keep_git_dir: bool | None = None
    submodules: bool | None = None
    mtime: str = ""

    @property
    def shown(self) -> str:
        return redact(self.source)


class ResolvedGit(msgspec.Struct, frozen=True):
    ref: GitRef
    commit: str          # what is checked out
    fetched: str         # what is fetched: the commit, or an annotated tag object
    full_ref: str        # refs/heads/x, refs/tags/x, or the commit for a SHA ref

    def cache_input(self) -> str:
        """BuildKit's shaToCacheKey, plus the remote (pybuild keys differ anyway)."""
        ref = self.ref
        key = f"{redact(ref.remote)} {self.commit}"
        if ref.keep_git_dir:
            key += f".git#{self.full_ref}"
        if ref.subdir:
            key += f":{ref.subdir}"
        if ref.submodules is False:
            key += "(skip-submodules)"
        if ref.mtime == "commit":
            key += "(mtime=commit)"
        return key


def redact(url: str) -> str:
    """BuildKit's urlutil.RedactCredentials: user and password become xxxxx."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    masked = ("xxxxx:xxxxx" if user and has_password else "xxxxx" if user
              else f"{user}:xxxxx" if has_password else userinfo)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{masked}@{host}"))


def parse_git_ref(source: str) -> GitRef | None:
    """The git source ``source`` names; None if it is not one (a path or an HTTP file)."""
    if source.startswith(("./", "../", "github.com/")):
        return None   # github.com/x is git only as a build context in BuildKit
    fragment = query = ""
    if _PROTO.match(source):
        scheme = source.split("://", 1)[0].lower()
        if scheme not in _SCHEMES:
            return None
        try:
            parts = urllib.parse.urlsplit(source)
        except ValueError:
            return None
        if scheme in ("http", "https") and not parts.path.endswith(".git"):
            return None
        remote = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        fragment, query = parts.fragment, parts.query
    else:
        match = _SCP.match(source)
        if match is None:
            return None
        scheme = "ssh"
        remote = f"{match[1]}@{match[2]}:{match[3]}"
        query, fragment = match[4] or "", match[5] or ""
    ref, _, subdir = fragment.partition(":")
    found = GitRef(source, remote, scheme, ref=ref, subdir=_clean_subdir(subdir))
    return _load_query(found, query) if query else found


def _clean_subdir(subdir: str) -> str:
    return os.path.normpath("/" + subdir).lstrip("/") if subdir else ""


def _bool(found: GitRef, key: str, values: list[str]) -> bool:
    if not values or values[0] in _TRUE:
        return True
    if values[0] in _FALSE:
        return False
    raise BuildError(f"{found.shown}: invalid {key} value: {values[0]!r}")


def _load_query(found: GitRef, query: str) -> GitRef:
    """BuildKit's GitRef.loadQuery (dfgitutil/git_ref.go)."""
    grouped: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    tag = branch = ""
    for key, values in grouped.items():
        if len(values) > 1:
            raise BuildError(f'{found.shown}: query "{key}" has multiple values')
        if values == [""]:
            if key not in ("submodules", "keep-git-dir", "fetch-by-commit"):
                raise BuildError(f'{found.shown}: query "{key}" has no value')
            values = []
        value = values[0] if values else ""
        if key in ("ref", "subdir"):
            old = found.ref if key == "ref" else found.subdir
            new = value if key == "ref" else _clean_subdir(value)
            if old and old != new:
                raise BuildError(f'{found.shown}: {key} conflicts: "{old}" vs "{new}"')
            found = replace(found, ref=new) if key == "ref" else replace(found, subdir=new)
        elif key in ("tag", "branch"):
            tag, branch = (value, branch) if key == "tag" else (tag, value)
        elif key in ("checksum", "commit"):
            found = replace(found, checksum=value)
        elif key == "keep-git-dir":
            found = replace(found, keep_git_dir=_bool(found, key, values))
        elif key == "submodules":
            found = replace(found, submodules=_bool(found, key, values))
        elif key == "mtime" and value in ("checkout", "commit"):
            found = replace(found, mtime=value)
        elif key == "mtime":
            raise BuildError(f'{found.shown}: invalid mtime value: "{value}" '
                             '(must be "checkout" or "commit")')
        elif key == "fetch-by-commit":
            raise BuildError(f"{found.shown}: fetch-by-commit is not supported by pybuild")
        else:
            raise BuildError(f'{found.shown}: unexpected query "{key}"')
    if tag and branch:
        raise BuildError(f"{found.shown}: branch conflicts with tag")
    for prefix, name in (("refs/tags/", tag), ("refs/heads/", branch)):
        if name:
            full = name if name.startswith(prefix) else prefix + name
            if found.ref and found.ref != full:
                raise BuildError(f'{found.shown}: ref conflicts: "{found.ref}" vs "{full}"')
            found = replace(found, ref=full)
    return found


def is_git_source(source: str) -> bool:
    try:
        return parse_git_ref(source) is not None
    except BuildError:
        return True   # a git source with a bad query: an error later, never a path


def with_flags(found: GitRef, checksum: str | None, keep_git_dir: bool | None) -> GitRef:
    """Merge ADD's --checksum and --keep-git-dir into the URL's (convert_copy.go)."""
    if keep_git_dir is not None and found.keep_git_dir is not None and \
            keep_git_dir != found.keep_git_dir:
        raise BuildError("inconsistent keep-git-dir configuration")
    if checksum and found.checksum and checksum != found.checksum:
        raise BuildError(f'checksum mismatch "{checksum}" != "{found.checksum}"')
    keep = found.keep_git_dir if found.keep_git_dir is not None else keep_git_dir
    found = replace(found, keep_git_dir=bool(keep), checksum=found.checksum or checksum or "")
    if found.checksum and not _HEX.match(found.checksum):
        raise BuildError(f"{found.shown}: invalid checksum {found.checksum} for Git URL, "
                         "expected hex commit hash")
    if found.ref.startswith("-") or found.remote.startswith("-"):
        raise BuildError(f"{found.shown}: invalid git ref {found.ref!r}")
    return found


def check_checksum_flag(sources: list[str], checksum: str | None) -> None:
    """Where ADD --checksum is refused, as in BuildKit's dispatchCopy (convert_copy.go)."""
    if not checksum:
        return
    if len(sources) != 1:
        raise BuildError("checksum can't be specified for multiple sources")
    source = sources[0]
    if is_git_source(source):
        return
    if not source.startswith(("http://", "https://")):
        raise BuildError("checksum requires HTTP(S) or Git sources")
    check_digest_syntax(checksum)


def check_digest_syntax(value: str) -> None:
    """go-digest's Parse, as BuildKit applies it to an HTTP source's --checksum."""
    algorithm, sep, encoded = value.partition(":")
    sizes = {"sha256": 64, "sha384": 96, "sha512": 128}
    if not algorithm or not sep or not encoded:
        raise BuildError(f"invalid checksum digest format: {value!r}")
    if algorithm not in sizes:
        raise BuildError(f"unsupported digest algorithm: {value!r}")
    if len(encoded) != sizes[algorithm]:
        raise BuildError(f"invalid checksum digest length: {value!r}")
    if not re.fullmatch(r"[a-f0-9]+", encoded):
        raise BuildError(f"invalid checksum digest format: {value!r}")


# -- running git ---------------------------------------------------------------------

class Git:
    """git with a hardened environment, for one remote."""

    def __init__(self, found: GitRef, home: Path):
        self.found = found
        env = {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "HOME": str(home),
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
               "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": found.scheme,
               "GIT_SSH_COMMAND": _SSH, "LC_ALL": "C"}
        # Proxies pass through as BuildKit's git does (gitutil/git_cli.go).
        env.update({k: v for k, v in os.environ.items() if k in PROXY_ARGS})
        self.env = env
        self.config = [
            "-c", "protocol.allow=never", "-c", f"protocol.{found.scheme}.allow=always",
            "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
            "-c", "submodule.recurse=false", "-c", "credential.helper=",
            "-c", "core.symlinks=true", "-c", "init.defaultBranch=master",
            "-c", "advice.detachedHead=false"]

    def run(self, *args: str, check: bool = True) -> tuple[int, bytes]:
        """Run git; (exit status, stdout).  A failure with ``check`` is a BuildError."""
        import subprocess  # git sources only: not loaded by a build without one

        try:
            proc = subprocess.Popen(["git", *self.config, *args], env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    umask=0o022, close_fds=True)
        except FileNotFoundError:
            raise BuildError(f"{self.found.shown}: git is not installed (a git "
                             "source needs the git command)") from None
        try:
            out, err = proc.communicate(timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BuildError(f"{self.found.shown}: git {args[0]} did not finish within "
                             f"{_TIMEOUT:.0f} s") from None
        if check and proc.returncode != 0:
            text = err.decode(errors="replace").replace(self.found.remote,
                                                         redact(self.found.remote))
            text = " ".join(text.split())[-_MAX_ERR:]
            raise BuildError(f"{self.found.shown}: git {args[0]} failed: {text}")
        return proc.returncode, out


def resolve(found: GitRef, home: Path) -> ResolvedGit:
    """The commit ``found`` names now (BuildKit's resolveMetadata), checked against
    its checksum."""
    ref = found.ref
    if _SHA.match(ref):
        if found.checksum and not ref.startswith(found.checksum):
            raise _mismatch(found, ref)
        return ResolvedGit(found, ref, ref, ref)
    git = Git(found, home)
    if not ref:
        _, out = git.run("ls-remote", "--symref", "--", found.remote, "HEAD")
        heads = [line.split("\t")[0][len("ref: "):] for line in out.decode().splitlines()
                 if line.startswith("ref: ") and line.endswith("\tHEAD")]
        if not heads:
            raise BuildError(f"{found.shown}: could not find the default branch")
        ref = heads[0]
    _, out = git.run("ls-remote", "--", found.remote, ref, ref + "^{}")
    short = ref.removeprefix("refs/")
    wanted = {f"refs/{short}": "partial", "refs/heads/" + ref.removeprefix("refs/heads/"):
              "head", "refs/tags/" + ref.removeprefix("refs/tags/"): "tag"}
    peeled = "refs/tags/" + ref.removeprefix("refs/tags/") + "^{}"
    seen: dict[str, tuple[str, str]] = {}
    for line in out.decode(errors="replace").splitlines():
        sha, _, name = line.partition("\t")
        if name == peeled:
            seen["peeled"] = (sha, name)
        elif name in wanted:
            seen[wanted[name]] = (sha, name)
    # git checkout prefers branches when a name is ambiguous (BuildKit does the same).
    sha, full = seen.get("partial") or seen.get("head") or seen.get("tag") or ("", "")
    commit = sha
    if sha and sha == seen.get("tag", ("", ""))[0] and "peeled" in seen:
        commit = seen["peeled"][0]   # an annotated tag: check out the commit it names
    if not sha:
        raise BuildError(f"{found.shown}: repository does not contain ref {ref}")
    if not _SHA.match(sha) or not _SHA.match(commit):
        raise BuildError(f"{found.shown}: invalid commit sha {sha!r}")
    if found.checksum and not (sha.startswith(found.checksum)
                               or commit.startswith(found.checksum)):
        raise _mismatch(found, commit)
    return ResolvedGit(found, commit, sha, full)


def _mismatch(found: GitRef, got: str) -> BuildError:
    return BuildError(f"{found.shown}: expected checksum to match {found.checksum}, "
                      f"got {got} (nothing was added)")


def checkout(resolved: ResolvedGit, work: Path) -> Path:
    """Fetch and check out ``resolved`` under ``work`` (a fresh private dir); the
    directory whose contents ADD copies (the subdir, if one is named)."""
    found = resolved.ref
    home, tree = work / "home", work / "tree"
    home.mkdir(exist_ok=True)
    tree.mkdir(mode=0o755)
    git = Git(found, home)
    if found.keep_git_dir and not found.subdir:
        gitdir = tree / ".git"
        git.run("init", "-q", str(tree))
    else:
        gitdir = work / "repo.git"
        git.run("init", "-q", "--bare", str(gitdir))
    at = ("--git-dir", str(gitdir))
    git.run(*at, "remote", "add", "origin", found.remote)
    code, _ = git.run(*at, "fetch", "-q", "--depth=1", "--no-tags", "--no-recurse-submodules",
                      "--", "origin", resolved.fetched, check=False)
    if code != 0:   # a server that will not serve an unadvertised commit: fetch it all
        git.run(*at, "fetch", "-q", "--tags", "--no-recurse-submodules", "--", "origin",
                "+refs/heads/*:refs/remotes/origin/*")
    code, out = git.run(*at, "rev-parse", "--verify", "-q", resolved.commit + "^{commit}",
                        check=False)
    if code != 0 or out.decode().strip() != resolved.commit:
        raise BuildError(f"{found.shown}: the remote did not send commit {resolved.commit}")
    _refuse_submodules(git, at, resolved)
    if gitdir.parent == tree:
        if resolved.full_ref.startswith("refs/"):
            git.run(*at, "update-ref", "--no-deref", resolved.full_ref, resolved.fetched)
        git.run(*at, "--work-tree", str(tree), "checkout", "-q", "--detach", resolved.commit)
        git.run(*at, "remote", "set-url", "origin", redact(found.remote))
        git.run(*at, "reflog", "expire", "--all", "--expire=now")
        (gitdir / "FETCH_HEAD").unlink(missing_ok=True)
    else:
        git.run(*at, "--work-tree", str(tree), "checkout", "-q", "--no-overlay",
                resolved.commit, "--", ".")
    if found.mtime == "commit":
        _, out = git.run(*at, "log", "-1", "--format=%ct", resolved.commit)
        _set_mtimes(tree, int(out.decode().strip()))
    return _subdir(found, tree)


def _refuse_submodules(git: Git, at: tuple[str, str], resolved: ResolvedGit) -> None:
    """BuildKit checks submodules out; pybuild does not fetch them (their URLs come
    from the repository), so a checkout that has them fails instead of copying empty
    directories, unless the URL says ``submodules=false``."""
    if resolved.ref.submodules is False:
        return
    _, out = git.run(*at, "ls-tree", "-r", "-z", resolved.commit)
    prefix = resolved.ref.subdir + "/" if resolved.ref.subdir else ""
    for entry in out.split(b"\0"):
        meta, _, name = entry.partition(b"\t")
        if meta.startswith(b"160000 ") and name.decode(errors="replace").startswith(prefix):
            raise BuildError(f"{resolved.ref.shown}: the repository has submodules, which "
                             "pybuild does not fetch (BuildKit does); add ?submodules=false "
                             "to the URL to copy it without them")


def _subdir(found: GitRef, tree: Path) -> Path:
    """The subdir inside the checkout; every component a real directory, never a
    symlink (BuildKit's validateDirsOnly; CVE-2026-33748)."""
    here = tree
    for part in found.subdir.split("/") if found.subdir else []:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            raise BuildError(f"{found.shown}: subdir {found.subdir!r} not found in the "
                             "repository") from None
        if not stat.S_ISDIR(mode):
            raise BuildError(f"{found.shown}: git subpath {found.subdir!r} contains "
                             f"non-directory {os.path.relpath(here, tree)!r}")
    return here


def _set_mtimes(tree: Path, when: int) -> None:
    """?mtime=commit: every entry gets the commit time (BuildKit's resetSnapshotMtimes)."""
    for top, dirs, files in os.walk(tree, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(top, name), (when, when), follow_symlinks=False)
    os.utime(tree, (when, when))
