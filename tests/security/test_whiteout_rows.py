"""Catalogue 1.W: whiteout handling, one test per row.

Consumer rows (W01-W09) apply hostile layer tars with the real extractor under
the ``sandbox`` oracle, in both modes where a single layer is enough (overlay:
``.wh.x`` becomes a 0:0 char device and ``.wh..wh..opq`` an xattr; merged:
whiteouts delete what lower layers left).  Producer rows (W10-W12) check the
layer writer on overlay upper dirs, and end to end through RUN steps.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from security.oracle import apply, build, lower, refuse

from builder.errors import LayerError
from builder.layers import write_layer_tar
from builder.layers.whiteout import opaque_xattr
from builder.userns import rootless

# The opaque mark of this run's mode: root's trusted.*, or user.* in a user namespace
# (tests/rootless/test_security_rootless.py runs this module there).
OPAQUE = opaque_xattr(rootless())

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, chown, trusted.* xattrs"),
]


# ------------------------------------------------------------------ consumer rows

@pytest.mark.parametrize("name", [".wh...", "etc/.wh..."])
def test_W01_whiteout_of_dotdot(sandbox, tar, name):
    lower(sandbox, tar().add("etc/keep", content=b"k"))
    refuse(sandbox, tar().add(name).data(), match="W01-W03")


@pytest.mark.parametrize("name", [".wh...", "etc/.wh..."])
def test_W01_whiteout_of_dotdot_overlay(sandbox, tar, name):
    refuse(sandbox, tar().add("etc/keep", content=b"k").add(name).data(), "overlay",
           match="W01-W03")


@pytest.mark.parametrize("name", [".wh..", "etc/.wh.."])
def test_W02_whiteout_of_dot(sandbox, tar, mode, name):
    refuse(sandbox, tar().add("etc/keep", content=b"k").add(name).data(), mode,
           match="W01-W03")


@pytest.mark.parametrize("name", [".wh.", "etc/.wh."])
def test_W03_bare_whiteout(sandbox, tar, mode, name):
    refuse(sandbox, tar().add("etc/keep", content=b"k").add(name).data(), mode,
           match="W01-W03")

def test_W04_whiteouts_through_symlinks(sandbox, tar):
    hostlink = str(sandbox.host_dir)
    lower(sandbox, tar().add("etc/whitedout", content=b"w").add("etc/other", content=b"o")
          .add("localetc", "sym", target="/etc").add("gone", "sym", target="/etc")
          .add("dead", "sym", target="/dne").add("host", "sym", target=hostlink))
    apply(sandbox, tar().add("localetc/.wh.whitedout").add(".wh.gone").add("dead/.wh.etc")
          .add("host/.wh.whitedout").data())
    assert not (sandbox.dest / "etc/whitedout").exists()
    assert (sandbox.dest / "etc/other").exists()
    assert not os.path.lexists(sandbox.dest / "gone")
    assert (sandbox.dest / "etc").is_dir() and not (sandbox.dest / "dne").exists()


def test_W05_non_canonical_whiteout_refused(sandbox, tar):
    # Decision (documented in docs/security.md): non-canonical names are refused.
    lower(sandbox, tar().add("etc/passwd", content=b"p"))
    refuse(sandbox, tar().add("dne/../.wh.etc").data(), match=r"'\.\.'")


def test_W06_root_opaque_merged(sandbox, tar):
    lower(sandbox, tar().add("old", content=b"o").add("olddir/f", content=b"f"))
    apply(sandbox, tar().add(".wh..wh..opq").add(".abc", content=b"a")
          .add("foobar", content=b"f").data())
    assert sorted(os.listdir(sandbox.dest)) == [".abc", "foobar"]


def test_W06_root_opaque_overlay(sandbox, tar):
    apply(sandbox, tar().add(".abc", content=b"a").add(".wh..wh..opq").data(), mode="overlay")
    assert os.getxattr(sandbox.dest, OPAQUE) == b"y"
    assert sorted(os.listdir(sandbox.dest)) == [".abc"]


def test_W07_whiteouts_apply_to_lower_only(sandbox, tar):
    lower(sandbox, tar().add("a/old", content=b"o").add("a/b/oldtoo", content=b"o")
          .add("x", content=b"lower"))
    apply(sandbox, tar().add("a/b/c/foo", content=b"new").add("a/.wh..wh..opq")
          .add("x", content=b"upper").add(".wh.x").data())
    assert sorted(os.listdir(sandbox.dest / "a")) == ["b"]
    assert sorted(os.listdir(sandbox.dest / "a/b")) == ["c"]
    assert (sandbox.dest / "a/b/c/foo").read_bytes() == b"new"
    assert (sandbox.dest / "x").read_bytes() == b"upper"


def test_W07_whiteouts_apply_to_lower_only_overlay(sandbox, tar):
    apply(sandbox, tar().add("a/b/c/foo", content=b"new").add("a/.wh..wh..opq")
          .add("x", content=b"upper").add(".wh.x").add("d/keep", content=b"k").add(".wh.d")
          .data(), mode="overlay")
    assert (sandbox.dest / "a/b/c/foo").read_bytes() == b"new"
    assert os.getxattr(sandbox.dest / "a", OPAQUE) == b"y"
    assert (sandbox.dest / "x").read_bytes() == b"upper"
    # A whiteout of a dir this layer made hides the lower one's children.
    assert os.getxattr(sandbox.dest / "d", OPAQUE) == b"y"


def test_W08_whiteout_prefix_as_directory_refused(sandbox, tar, mode):
    refuse(sandbox, tar().add(".wh.etc/somefile", content=b"s").data(), mode, match="W08")


@pytest.mark.parametrize("kind", ["sym", "dir", "link"])
def test_W09_whiteout_must_be_a_regular_file(sandbox, tar, kind):
    lower(sandbox, tar().add("x", content=b"x"))
    refuse(sandbox, tar().add(".wh.x", kind, target="/" if kind == "sym" else "x").data(),
           match="W09")


def test_W09_whiteout_body_never_extracted(sandbox, tar):
    lower(sandbox, tar().add("x", content=b"x").add("keep", content=b"k"))
    apply(sandbox, tar().add(".wh.x", content=b"\0" * (8 << 20)).data())
    assert sorted(os.listdir(sandbox.dest)) == ["keep"]




@pytest.mark.parametrize("kind", ["sym", "dir"])
def test_W09_whiteout_must_be_a_regular_file_overlay(sandbox, tar, kind):
    refuse(sandbox, tar().add(".wh.x", kind, target="/").data(), "overlay", match="W09")


def test_W09_whiteout_body_never_extracted_overlay(sandbox, tar):
    apply(sandbox, tar().add(".wh.x", content=b"\0" * (8 << 20)).data(), "overlay")
    st = os.lstat(sandbox.dest / "x")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and st.st_size == 0


def test_whiteout_in_overlay_mode_is_a_char_device(sandbox, tar):
    apply(sandbox, tar().add("etc/.wh.gone").data(), mode="overlay")
    st = os.lstat(sandbox.dest / "etc" / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# ------------------------------------------------------------------ producer rows

def tar_of(layer: Path, **kw) -> bytes:
    out = io.BytesIO()
    n = write_layer_tar(layer, out, **kw)
    assert n == len(out.getvalue())
    return out.getvalue()


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8",
                      errors="surrogateescape") as tf:
        return [m.name + ("/" if m.isdir() else "") for m in tf.getmembers()]


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    root = tmp_path / "layer"
    root.mkdir()
    return root


@pytest.mark.parametrize("key", ["trusted.overlay.redirect", "trusted.overlay.metacopy",
                                 "user.overlay.redirect", "user.overlay.metacopy"])
def test_W10_redirect_and_metacopy_refused(layer, key):
    (layer / "d").mkdir()
    os.setxattr(layer / "d", key, b"/elsewhere")
    with pytest.raises(LayerError, match="W10"):
        tar_of(layer)


def test_W11_only_the_modes_own_opaque_xattr(layer):
    (layer / "u").mkdir()
    os.setxattr(layer / "u", "user.overlay.opaque", b"y")
    (layer / "esc").mkdir()
    os.setxattr(layer / "esc", "user.overlay.overlay.opaque", b"y")
    assert names(tar_of(layer, rootless=False)) == ["esc/", "u/"]
    assert names(tar_of(layer, rootless=True)) == ["esc/", "u/", "u/.wh..wh..opq"]


@pytest.mark.parametrize("name", [".wh.foo", ".wh..wh..opq", ".wh."])
def test_W12_unrepresentable_names(layer, name):
    (layer / "opt").mkdir()
    target = layer / "opt" / name
    target.mkdir() if name == ".wh..wh..opq" else target.write_text("x")
    with pytest.raises(LayerError, match="unrepresentable"):
        tar_of(layer)


def _saved_layers(root: Path, image: str, tmp_path: Path) -> list[list[tarfile.TarInfo]]:
    from helpers import run_cli

    archive = tmp_path / "saved.tar"
    run_cli("save", "-o", str(archive), image, root=root)
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        layers = []
        for name in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(name)) as layer_tar:
                layers.append(layer_tar.getmembers())
    return layers


@pytest.mark.overlay
@pytest.mark.slow
def test_W10_run_deletes_replaces_and_renames(sandbox, bstore, tmp_path):
    """Through a real RUN on overlay: a deleted lower file, a dir replaced by
    ``rm -rf d && mkdir d`` and a renamed dir come out as whiteouts, an opaque
    marker and a full copy (redirect_dir=off), and the next layer sees them."""
    build(bstore, sandbox.dest,
          "FROM busybox\nRUN mkdir -p /d /dir1 && echo old > /d/old && echo f > /dir1/f && "
          "echo gone > /gone\n"
          "RUN rm /gone && rm -rf /d && mkdir /d && echo new > /d/new && "
          "mv /dir1 /dir2 && echo n > /dir2/newfile\n", None, "-t", "w10")
    step = {m.name: m for m in _saved_layers(bstore, "w10", tmp_path)[-1]}
    assert ".wh.gone" in step and step[".wh.gone"].isfile() and step[".wh.gone"].size == 0
    # Opaque marker or explicit whiteouts of every lower child (spec L315 prefers those).
    assert ("d/.wh..wh..opq" in step or "d/.wh.old" in step) and "d/new" in step
    assert ".wh.dir1" in step and {"dir2/f", "dir2/newfile"} <= set(step)
    for member in step.values():
        assert not any(k.startswith(("SCHILY.xattr.trusted.overlay", "SCHILY.xattr.user.overlay"))
                       for k in member.pax_headers), member.name
    out = tmp_path / "out"
    build(bstore, sandbox.dest, "FROM w10\n", out)
    assert sorted(os.listdir(out / "d")) == ["new"]
    assert sorted(os.listdir(out / "dir2")) == ["f", "newfile"]
    assert not (out / "dir1").exists() and not (out / "gone").exists()


@pytest.mark.overlay
@pytest.mark.slow
@pytest.mark.parametrize("cmd", ["touch /opt/.wh.foo", "mkdir -p /opt/.wh..wh..opq"])
def test_W12_run_creating_whiteout_names_fails(sandbox, bstore, cmd):
    from security.oracle import one_line_error

    result = build(bstore, sandbox.dest, f"FROM busybox\nRUN mkdir -p /opt && echo keep > "
                   f"/opt/foo\nRUN {cmd}\n", None, check=False)
    assert "unrepresentable" in one_line_error(result)
