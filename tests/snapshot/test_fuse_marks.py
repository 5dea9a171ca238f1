"""fuse-overlayfs's opaque directories become the store's (snapshot/fuse.py): its
``user.fuseoverlayfs.opaque`` xattr and the ``.wh..wh..opq`` and ``.wh..opq`` entries
it leaves are replaced by the kernel's mark; nothing else in the upper dir changes."""

from __future__ import annotations

import os
from pathlib import Path

from builder.layers.whiteout import opaque_xattr
from builder.snapshot.fuse import as_kernel_marks
from builder.userns import rootless


def test_fuse_opaque_marks_become_the_kernels(tmp_path: Path) -> None:
    upper = tmp_path / "diff"
    (upper / "a" / "deep").mkdir(parents=True)
    (upper / "plain").mkdir()
    for directory in (upper / "a", upper / "a" / "deep"):
        os.setxattr(directory, "user.fuseoverlayfs.opaque", b"y")
        (directory / ".wh..wh..opq").write_bytes(b"")
        (directory / ".wh..opq").write_bytes(b"")
        (directory / "kept").write_text("k")
    (upper / "plain" / ".wh..opq").write_bytes(b"")  # not marked opaque: left alone
    as_kernel_marks(upper)
    for directory in (upper / "a", upper / "a" / "deep"):
        assert sorted(os.listdir(directory)) == (["deep", "kept"] if directory.name == "a"
                                                 else ["kept"])
        assert os.getxattr(directory, opaque_xattr(rootless())) == b"y"
        assert "user.fuseoverlayfs.opaque" not in os.listxattr(directory)
    assert os.listdir(upper / "plain") == [".wh..opq"]
