"""Errors keep their class from where they are raised to the one place that prints
them (issue 16 point 7): ``builder.cli._main``.  A caller that knows where an error
happened (a Dockerfile step, a pulled blob, ``--build-context``) names it with
``err.within(...)`` instead of re-wrapping it in another class; the message and the
exit status stay what they were.  ``--debug`` re-raises the error, so the last line
of its traceback shows the class that reached ``_main``.
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest
from helpers import run_cli

from builder.errors import (
    BuildError,
    DockerfileError,
    LayerError,
    PybuildError,
    ReferenceError,
    StoreError,
    Unauthorized,
)


def _fails(root: Path, *args: str, status: int, message: str, error: str) -> None:
    """``pybuild ARGS`` prints ``pybuild: MESSAGE`` alone and exits ``status``; with
    ``--debug`` the error that reached the CLI is of class ``error``."""
    plain = run_cli(*args, root=root, check=False)
    err = plain.stderr.decode(errors="replace")
    assert plain.returncode == status, err
    assert err.splitlines()[-1] == f"pybuild: {message}", err
    assert "Traceback" not in err, err
    debug = run_cli("--debug", *args, root=root, check=False)
    last = debug.stderr.decode(errors="replace").splitlines()[-1]
    assert last == f"{error}: {message}", last
    assert debug.returncode == 1  # an uncaught exception's status under --debug


def test_within_keeps_class_and_names_where() -> None:
    err = StoreError("blob sha256:ab is not in the store")
    assert err.within("Dockerfile:2: COPY --from=x / /") is err
    assert str(err) == "Dockerfile:2: COPY --from=x / /: blob sha256:ab is not in the store"
    assert err.detail() == "blob sha256:ab is not in the store"
    assert err.exit_code == 1 and type(err) is StoreError
    usage = ReferenceError("Bad", "must be lowercase").within("Dockerfile:3: COPY", exit_code=1)
    assert isinstance(usage, ReferenceError) and usage.exit_code == 1
    assert ReferenceError.exit_code == 2  # the class's own is untouched
    assert str(usage) == "Dockerfile:3: COPY: 'Bad': must be lowercase"


@pytest.mark.parametrize("err", [
    StoreError("gone"), LayerError("bad", layer="sha256:1", entry="a/b"),
    DockerfileError("unknown instruction", "Df", 3), Unauthorized("denied", "token"),
    ReferenceError("X", "bad"), BuildError("exit 1"),
], ids=lambda err: type(err).__name__)
def test_within_survives_pickling(err: PybuildError) -> None:
    """Errors cross process boundaries (sandbox children, extract workers) by pickling."""
    err.within("outer", exit_code=7)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err)
    assert (str(again), again.exit_code, again.args) == (str(err), 7, err.args)


@pytest.mark.root
def test_layer_error_in_a_step_keeps_its_class(tmp_path: Path) -> None:
    """ADD of a hostile local tar: a LayerError, named by the step (was a BuildError)."""
    context = tmp_path / "ctx"
    context.mkdir()
    with tarfile.open(context / "evil.tar", "w") as tar:
        entry = tarfile.TarInfo("../escape")
        entry.size = 1
        tar.addfile(entry, io.BytesIO(b"x"))
    (context / "Dockerfile").write_text("FROM scratch\nADD evil.tar /\n")
    _fails(tmp_path / "store", "build", "--progress", "plain", str(context), status=1,
           message=f"{context}/Dockerfile:2: ADD evil.tar /: ADD evil.tar: cannot extract: "
                   "layer, entry '../escape': '..' in name: path escapes the root",
           error="builder.errors.LayerError")


@pytest.mark.root
def test_store_error_in_a_step_keeps_its_class(tmp_path: Path, busybox_tar: Path) -> None:
    """COPY --from an image whose blobs and layers are gone: a StoreError (was a BuildError)."""
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    blobs = [path.name for path in (root / "blobs" / "sha256").iterdir()]
    for layer in (root / "layers").iterdir():
        shutil.rmtree(layer)
    for blob in blobs:
        (root / "blobs" / "sha256" / blob).unlink()
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY --from=busybox /bin/busybox /b\n")
    result = run_cli("build", "--progress", "plain", str(context), root=root, check=False)
    missing = result.stderr.decode().splitlines()[-1].split("blob sha256:")[1].split()[0]
    assert missing in blobs
    _fails(root, "build", "--progress", "plain", str(context), status=1,
           message=f"{context}/Dockerfile:2: COPY --from=busybox /bin/busybox /b: "
                   f"blob sha256:{missing} is not in the store",
           error="builder.errors.StoreError")


@pytest.mark.root
def test_dockerfile_error_in_a_step_keeps_its_class(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY ${x:?needed} /\n")
    _fails(tmp_path / "store", "build", "--progress", "plain", str(context), status=1,
           message=f'{context}/Dockerfile:2: failed to process "${{x:?needed}}": x: needed',
           error="builder.errors.DockerfileError")


@pytest.mark.root
def test_registry_error_of_build_push_keeps_its_class(tmp_path: Path) -> None:
    """``build --push`` to a port nothing listens on (127.0.0.1:9, discard): the
    transport's RegistryError reaches the CLI as it was raised."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a").write_text("a")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    root = tmp_path / "store"
    built = run_cli("build", "-q", "-t", "127.0.0.1:9/x", str(context), root=root)
    image_id = built.stdout.decode().strip()
    pushed = run_cli("build", "--push", "-q", "-t", "127.0.0.1:9/x", str(context), root=root,
                     check=False)
    message = pushed.stderr.decode().splitlines()[-1].removeprefix("pybuild: ")
    assert message.endswith("127.0.0.1:9: Connection refused"), message
    assert image_id  # the build itself succeeded; only the push failed
    _fails(root, "build", "--push", "-q", "-t", "127.0.0.1:9/x", str(context), status=1,
           message=message, error="builder.errors.RegistryError")


def test_registry_error_of_login_keeps_its_class(tmp_path: Path) -> None:
    _fails(tmp_path / "store", "login", "-u", "a", "-p", "b", "127.0.0.1:9",
           status=1, message="127.0.0.1:9: 127.0.0.1:9: Connection refused",
           error="builder.errors.RegistryError")


def test_usage_error_keeps_exit_status_2(tmp_path: Path) -> None:
    _fails(tmp_path / "store", "push", "nosuch", "127.0.0.1:9/y", status=2,
           message=f"image 'nosuch' not found in the local store ({tmp_path / 'store'})",
           error="builder.errors.UsageError")
