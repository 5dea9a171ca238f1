"""The helper child (builder.run.child.in_mount_namespace): what reaches the parent when
the function fails.  A write the disk refused is a one-line error for the caller to
place; anything else unexpected stays a bug report with the child's traceback."""

from __future__ import annotations

import errno
import os

import pytest

from builder.errors import BuildError, PybuildError
from builder.run.child import in_mount_namespace

pytestmark = pytest.mark.root   # unshare(CLONE_NEWNS)


def _fail(code: int) -> None:
    raise OSError(code, os.strerror(code), "/some/file")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO])
def test_a_write_the_disk_refused_is_one_line(code: int) -> None:
    with pytest.raises(BuildError) as caught:
        in_mount_namespace(_fail, code, writing="the copied files")
    verb = "read or write" if code == errno.EIO else "write"
    assert str(caught.value) == f"cannot {verb} the copied files: {os.strerror(code)}"


def test_another_os_error_is_still_a_bug() -> None:
    with pytest.raises(PybuildError, match="internal error in helper process: "
                                           "PermissionError") as caught:
        in_mount_namespace(_fail, errno.EACCES)
    assert not isinstance(caught.value, BuildError)
    assert "Traceback" in str(caught.value)
