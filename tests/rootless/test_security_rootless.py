"""The security tests that apply to rootless mode, run rootless (issue 18).

Each module below runs in a pytest of its own, as a fresh user with subordinate ids, as
root of a user namespace that maps them (``unshare --map-auto --map-root-user``) on a
root directory of its own (inroot.sh: a tmpfs the namespace owns, the host's system
directories bound in), as in a rootless container.  The tests see uid 0, and pybuild
sees a map that is not the host's whole id space, so it takes its rootless paths
(``builder.userns.rootless``: userxattr overlay mounts, ``user.overlay.opaque``,
device nodes skipped, ownership only through the map).  The attacks are the same
files, Dockerfiles and archives as root's run.

Deselected, each with the reason: tests whose set-up only root of the host can make (a
device node, a veth pair, a host sysctl), so that there is no rootless attack to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO
from nonroot import User

pytestmark = [pytest.mark.root, pytest.mark.overlay, pytest.mark.slow]

# RUN escapes, hostile layers and archives, mount and path tricks, store permissions.
MODULES = (
    "test_run_rows.py", "test_round2_escapes.py", "test_tar_rows.py",
    "test_whiteout_rows.py", "test_context_rows.py", "test_context_races.py",
    "test_round2_copy_race.py",
    "test_round2_context_paths.py", "test_round2_exports.py", "test_round2_load_dir.py",
    "test_round2_store_perms.py", "test_round2_store_root.py", "test_round2_network.py",
)

_NO_DEVICES = "a user namespace cannot make device nodes (rootless extraction skips them: T18)"
# test id -> why its set-up cannot exist rootless
_NOT_ROOTLESS: dict[str, str] = {
    "test_tar_rows.py::test_T19_mode_bits_and_ids_kept": "ids past the subordinate range",
    "test_tar_rows.py::test_T19_device_chmod_on_nodev_mount": _NO_DEVICES,
    "test_tar_rows.py::test_real_image_shapes_negative_control": _NO_DEVICES,
    "test_whiteout_rows.py::test_W10_redirect_and_metacopy_refused[trusted.overlay.redirect]":
        "trusted.* xattrs are root's (the user.* ones are tested)",
    "test_whiteout_rows.py::test_W10_redirect_and_metacopy_refused[trusted.overlay.metacopy]":
        "trusted.* xattrs are root's (the user.* ones are tested)",
    "test_context_rows.py::test_C11_device_in_the_context_refused": _NO_DEVICES,
    "test_round2_exports.py::test_P12_local_export_skips_devices_and_clears_setuid":
        _NO_DEVICES,
    "test_round2_exports.py::test_P12_preserve_true_keeps_them": _NO_DEVICES,
    "test_round2_exports.py::test_P12_hostile_loaded_image_devices_setuid_and_capabilities":
        _NO_DEVICES,
    "test_round2_load_dir.py::test_endless_blob_is_refused_before_reading[device]":
        _NO_DEVICES + "; the [symlink] case points at /dev/zero",
    "test_round2_store_root.py::test_symlinked_root_in_a_sticky_dir_is_refused":
        "it turns off the host's fs.protected_symlinks",
    "test_round2_network.py::test_default_network_reaches_out":
        "its server sits behind a veth pair in the host's network namespace",
}

_SECONDS = 900


def _deselect(module: str) -> list[str]:
    return [arg for key in _NOT_ROOTLESS if key.startswith(module + "::")
            for arg in ("--deselect", f"tests/security/{key}")]


def _in_namespace(user: User, *command: str, name: str) -> list[str]:
    """``command`` as ``user``, root of a user namespace on a root of its own."""
    binds = ":".join(dict.fromkeys([str(REPO), *user.env["PYTHONPATH"].split(os.pathsep)]))
    new_root = user.home / f"root-{name}"
    new_root.mkdir()
    user.own(new_root)
    return ["runuser", "-u", user.name, "--", "env", "-i",
            *(f"{k}={v}" for k, v in user.env.items()), "unshare", "--map-auto",
            "--map-root-user", "--mount", "--fork", str(Path(__file__).with_name("inroot.sh")),
            str(new_root), binds, *command]


@pytest.mark.parametrize("module", MODULES)
def test_security_module_passes_rootless(module: str, user: User, debian_tar: Path) -> None:
    command = _in_namespace(
        user, "sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(REPO), user.python,
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-o",
        "addopts=", "--basetemp=/tmp/pt", f"tests/security/{module}", *_deselect(module),
        name=module.removesuffix(".py"))
    result = subprocess.run(command, capture_output=True, timeout=_SECONDS)
    out = result.stdout.decode(errors="replace")
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    print(f"{module}: {summary}", file=sys.stderr)
    assert result.returncode == 0, out[-6000:] + result.stderr.decode(errors="replace")[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary


def test_the_run_is_rootless(user: User) -> None:
    """The namespace the modules run in is one pybuild calls rootless, and its / is
    the namespace's own."""
    probe = ("import os; from builder import userns; "
             "print(os.geteuid(), userns.rootless(), os.stat('/').st_uid)")
    result = subprocess.run(_in_namespace(user, user.python, "-c", probe, name="probe"),
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.stdout.split() == ["0", "True", "0"], result.stderr
