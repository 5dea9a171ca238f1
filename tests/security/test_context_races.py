"""C03 made deterministic: a build context changed at one chosen moment of a build.

``test_context_rows.py::test_C03_context_swapped_for_a_symlink_while_copying`` races an
attacker against real builds; these tests put each interleaving that race (or an
attacker of the defence) found at the exact point it hurt: between a lookup and the
read of a link, between a step's key and its mount, between choosing the
``.dockerignore`` and reading it.  Each one failed on the code before its fix (a
traceback, "internal error", a hang, or host content in the image).  The rule is
the same everywhere: the build copies or mounts what its key summed, or fails with
one line naming the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from security.oracle import build, leaked, one_line_error

pytestmark = [
    pytest.mark.root, pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: overlay mounts, chown, mknod"),
]


@pytest.fixture
def ctx(sandbox) -> Path:
    """The build context: the sandbox's dest dir, beside the host dirs that must stay
    out of reach."""
    return sandbox.dest


def test_C03_link_swapped_back_between_lstat_and_readlink(ctx, tmp_path, monkeypatch):
    """The interleaving the checker's CI hit once in the racing test above: resolving
    the source, lstat sees ``sub`` as the attacker's link, and by the time the walk
    reads the link, ``sub`` is the directory again (readlink: EINVAL).  The copy fails
    with the one-line "changed while being copied", not an internal error."""
    from builder import rootpath
    from builder.engine.copy import copy_into
    from builder.engine.copy_plan import CopyRequest
    from builder.errors import BuildError

    (ctx / "sub").mkdir()
    (ctx / "sub" / "f").write_text("ctx")
    os.rename(ctx / "sub", ctx / "sub.real")
    os.symlink(str(tmp_path), ctx / "sub")
    image = tmp_path / "image"
    image.mkdir()
    looked_up = rootpath.HostTree.lookup

    def lookup_then_swap_back(self, parents, name, via_link):
        kind = looked_up(self, parents, name, via_link)
        if name == "sub" and (ctx / "sub").is_symlink():
            os.unlink(ctx / "sub")
            os.rename(ctx / "sub.real", ctx / "sub")
        return kind

    monkeypatch.setattr(rootpath.HostTree, "lookup", lookup_then_swap_back)
    with pytest.raises(BuildError, match='"/sub": changed while being copied'):
        copy_into(str(image), str(ctx), CopyRequest(sources=["sub"], dest="/out/", workdir="/",
                                                    selected=["sub"]))


def test_C03_source_swapped_for_a_looping_link_right_after_resolving(ctx, tmp_path, monkeypatch):
    """The attacker's other move: right after ``sub/inner`` is resolved, ``sub`` becomes
    a link to itself, so every later path through it fails with ELOOP.  The copy fails
    with the one-line "changed while being copied", not an internal error."""
    import builder.engine.copy as copy_mod
    from builder.engine.copy import copy_into
    from builder.engine.copy_plan import CopyRequest
    from builder.errors import BuildError

    (ctx / "sub" / "inner").mkdir(parents=True)
    (ctx / "sub" / "inner" / "f").write_text("ctx")
    image = tmp_path / "image"
    image.mkdir()
    real = copy_mod.resolve_in_root

    def resolve_then_loop(root: str, path: str):
        resolved = real(root, path)
        if root == str(ctx) and not (ctx / "sub").is_symlink():
            os.rename(ctx / "sub", ctx / "sub.parked")
            os.symlink("sub", ctx / "sub")
        return resolved

    monkeypatch.setattr(copy_mod, "resolve_in_root", resolve_then_loop)
    with pytest.raises(BuildError, match='"/sub/inner": changed while being copied'):
        copy_into(str(image), str(ctx), CopyRequest(sources=["sub/inner"], dest="/out/",
                                                    workdir="/", selected=["sub/inner"]))
    assert leaked(image) == []


def _build_hooked(hook: str, hook_args: list[str], bstore: Path, ctx: Path, tmp_path: Path,
                  dockerfile: str, *extra: str) -> subprocess.CompletedProcess:
    """Build ``dockerfile`` in ``ctx`` with the real CLI, in a process that first runs
    ``hook`` (Python that wraps a function of pybuild's so that the context changes at
    one chosen moment; its ``sys.argv[1:]`` are ``hook_args``)."""
    df = tmp_path / "Dockerfile"
    df.write_text(dockerfile)
    script = (f"{hook}\nfrom builder.entry import main\n"
              f"sys.exit(main(sys.argv[{len(hook_args) + 1}:]))\n")
    return subprocess.run(
        [sys.executable, "-c", script, *hook_args, "--root", str(bstore), "build", "--no-cache",
         "--progress", "plain", "-f", str(df), *extra, str(ctx)],
        capture_output=True, timeout=120)


# A hook: ctxbind.context_bind wrapped: once it has resolved and summed the
# bind's source, argv[1]/sub becomes a link to argv[2] (a host dir).
_SWAP_AFTER_BIND = """
import os, sys
import builder.engine.ctxbind as ctxbind
resolve_and_sum = ctxbind.context_bind
def then_swap(*args, **kwargs):
    result = resolve_and_sum(*args, **kwargs)
    os.rename(sys.argv[1] + "/sub", sys.argv[1] + "/sub.parked")
    os.symlink(sys.argv[2], sys.argv[1] + "/sub")
    return result
ctxbind.context_bind = then_swap
"""


@pytest.mark.parametrize("options,ignore", [("", ""), (",rw", ""), ("", "sub/hidden\n"),
                                            (",rw", "sub/hidden\n")])
def test_C03_bind_source_swapped_for_a_link_after_its_key(bstore, ctx, sandbox, tmp_path,
                                                         options, ignore):
    """``RUN --mount=type=bind,source=sub``: after the step's key summed ``sub``, the
    attacker swaps it for a link to a host dir.  The mount must not follow it (it did:
    the bind took the resolved path as a string, and the step copied the host's files
    into the image, exit 0).  The step fails in one line, or shows the context's sub."""
    (ctx / "sub").mkdir()
    (ctx / "sub" / "mine").write_text("ctx")
    (ctx / "sub" / "hidden").write_text("ctx")
    (ctx / ".dockerignore").write_text(ignore)
    out = tmp_path / "out"
    result = _build_hooked(
        _SWAP_AFTER_BIND, [str(ctx), str(sandbox.host_dir)], bstore, ctx, tmp_path,
        f"FROM busybox\nRUN --mount=type=bind,source=sub,target=/m{options} cp -r /m /copied\n",
        "-o", f"type=local,dest={out}")
    assert (ctx / "sub").is_symlink(), "the swap did not happen"
    if result.returncode != 0:
        assert "did the build context change" in one_line_error(result)
        return
    assert leaked(out) == []
    assert sorted(os.listdir(out / "copied")) == (["mine"] if ignore else ["hidden", "mine"])


@pytest.mark.parametrize("swap_to", ["fifo", "directory", "looping-link", "host-file-link"])
def test_C03_dockerignore_swapped_after_it_was_chosen(ctx, tmp_path, monkeypatch, swap_to):
    """The build chooses ``.dockerignore`` (a regular file, inside the context), and the
    attacker swaps it at once.  Reading it must not hang on a FIFO, nor read a host file
    through a link, nor end in a traceback: one ContextError line, or the context's own
    patterns.  (It read the path as a string: a FIFO hung the build, a directory or a
    loop raised a bare OSError, and a link to a host file was read as the patterns.)"""

    from builder.engine.engine import ignore_matcher
    from builder.engine.options import BuildOptions
    from builder.errors import ContextError

    ignore = ctx / ".dockerignore"
    ignore.write_text("mine\n")
    host_patterns = tmp_path / "host-patterns"   # outside the sandbox's top
    host_patterns.write_text("hostpattern\n")
    real_isfile = os.path.isfile

    def isfile_then_swap(path):
        answer = real_isfile(path)
        if os.fspath(path) == str(ignore) and answer and not ignore.with_suffix(".parked").exists():
            ignore.rename(ignore.with_suffix(".parked"))
            {"fifo": lambda: os.mkfifo(ignore), "directory": ignore.mkdir,
             "looping-link": lambda: ignore.symlink_to(".dockerignore"),
             "host-file-link": lambda: ignore.symlink_to(host_patterns)}[swap_to]()
        return answer

    monkeypatch.setattr(os.path, "isfile", isfile_then_swap)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(ignore_matcher(BuildOptions(context=ctx)))
        except Exception as err:  # judged below, in the test's thread
            outcome.append(err)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():   # let the hung open go before failing
        os.close(os.open(ignore, os.O_WRONLY | os.O_NONBLOCK)) if swap_to == "fifo" else None
        pytest.fail("reading the swapped .dockerignore hung")
    assert ignore.with_suffix(".parked").exists(), "the swap did not happen"
    (result,) = outcome
    assert isinstance(result, ContextError), repr(result)
    assert "did the build context change" in str(result)
    assert "hostpattern" not in str(result)


def test_C03_link_read_after_it_became_a_directory_while_copying(ctx, tmp_path, monkeypatch):
    """``COPY sub``: once resolved (a file), ``sub`` becomes a link to another file of
    the context, so the copy's lstat sees a link; before the copy reads the link,
    ``sub`` is a directory (readlink: EINVAL).  One line, "changed while being
    copied", not an internal error with a traceback."""
    import builder.engine.copy as copy_mod
    from builder.engine.copier import Copier
    from builder.engine.copy import copy_into
    from builder.engine.copy_plan import CopyRequest
    from builder.errors import BuildError

    (ctx / "sub").write_text("ctx")
    (ctx / "other").write_text("ctx")
    image = tmp_path / "image"
    image.mkdir()
    resolve, replace = copy_mod.resolve_in_root, Copier._replace

    def resolve_then_link(root: str, path: str):
        resolved = resolve(root, path)
        if root == str(ctx) and path == "sub":
            os.unlink(ctx / "sub")
            os.symlink("other", ctx / "sub")
        return resolved

    def make_it_a_directory_then_replace(self, target):
        if (ctx / "sub").is_symlink():
            os.unlink(ctx / "sub")
            (ctx / "sub").mkdir()
        return replace(self, target)

    monkeypatch.setattr(copy_mod, "resolve_in_root", resolve_then_link)
    monkeypatch.setattr(Copier, "_replace", make_it_a_directory_then_replace)
    with pytest.raises(BuildError, match='"/sub": changed while being copied'):
        copy_into(str(image), str(ctx), CopyRequest(sources=["sub"], dest="/out/", workdir="/",
                                                    selected=["sub"]))
    assert (ctx / "sub").is_dir(), "the swaps did not happen"


def test_C03_a_link_whose_target_no_name_can_hold_is_not_found(bstore, ctx, tmp_path):
    """A context link to a name of 300 bytes (longer than any name): no race needed.
    ``COPY`` of it, or through it, is "not found" in one line (it was an internal
    error: lstat's ENAMETOOLONG escaped the resolver)."""
    os.symlink("x" * 300, ctx / "sub")
    for source in ("sub", "sub/inner", "su*"):
        result = build(bstore, ctx, f"FROM busybox\nCOPY {source} /s/\n", tmp_path / "o",
                       check=False)
        message = one_line_error(result)
        assert "internal error" not in message and "not found" in message, message


# A hook: the first lookup of argv[1]/sub, a link, is followed by the
# link's swap back to the directory argv[1]/sub.real: the resolver read a link that
# was no longer there.
_SWAP_BACK_AT_LOOKUP = """
import os, sys
from builder import rootpath
sub = os.path.join(sys.argv[1], "sub")
lookup = rootpath.HostTree.lookup
def lookup_then_swap_back(self, parents, name, via_link):
    kind = lookup(self, parents, name, via_link)
    if name == "sub" and os.path.islink(sub):
        os.unlink(sub)
        os.rename(sub + ".real", sub)
    return kind
rootpath.HostTree.lookup = lookup_then_swap_back
"""


@pytest.mark.parametrize("step", ["COPY sub /s/", "COPY sub/* /g/",
                                  "RUN --mount=type=bind,source=sub,target=/m true"])
def test_C03_swap_back_while_the_step_key_resolves_its_source(bstore, ctx, sandbox, tmp_path,
                                                              step):
    """The race the checker's CI met in the copy, met while the step's key is computed
    (source selection, resolving, the bind's source): the build names the path in one
    line and asks whether the context changed; it said "internal error in stage"."""
    (ctx / "sub.real").mkdir()
    (ctx / "sub.real" / "f").write_text("ctx")
    os.symlink(str(sandbox.host_dir), ctx / "sub")
    result = _build_hooked(_SWAP_BACK_AT_LOOKUP, [str(ctx)], bstore, ctx, tmp_path,
                           f"FROM busybox\n{step}\n")
    assert (ctx / "sub").is_dir() and not (ctx / "sub").is_symlink(), "no swap happened"
    message = one_line_error(result)
    assert "internal error" not in message and "did the build context change" in message, \
        message


# A hook: right before the whiteouts of a bind's hidden entries are
# listed (in the step's setup child), argv[1]/a/b/c becomes a link to itself.
_LOOP_BEFORE_THE_HIDE_WALK = """
import os, sys
from builder.context.view import ContextFilter
c = os.path.join(sys.argv[1], "a", "b", "c")
whiteouts = ContextFilter.whiteouts
def loop_then_list(self, rel):
    if not os.path.islink(c):
        os.rename(c, c + ".parked")
        os.symlink("c", c)
    return whiteouts(self, rel)
ContextFilter.whiteouts = loop_then_list
"""


def test_C03_bind_source_changed_while_its_hidden_entries_are_listed(bstore, ctx, tmp_path):
    """The bind's source was opened, then the context changed before its .dockerignore'd
    entries were listed: the step fails with the context's one line (it printed the
    error's repr: "RUN sandbox: ContextError('...')")."""
    (ctx / "a" / "b" / "c").mkdir(parents=True)
    (ctx / "a" / "b" / "c" / "hidden").write_text("ctx")
    (ctx / ".dockerignore").write_text("a/b/c/hidden\n")
    result = _build_hooked(_LOOP_BEFORE_THE_HIDE_WALK, [str(ctx)], bstore, ctx, tmp_path,
                           "FROM busybox\nRUN --mount=type=bind,source=a/b/c,target=/m true\n")
    assert (ctx / "a" / "b" / "c").is_symlink(), "the swap did not happen"
    message = one_line_error(result)
    assert "did the build context change" in message and "Error(" not in message, message
