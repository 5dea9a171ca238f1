"""Emulated RUN steps (issue 19, point 1): arm64 under QEMU through binfmt_misc.

For real: ``pybuild doctor --enable-emulation`` registers Debian's qemu-user-static
handlers on this machine (the ``emulation_ready`` fixture), an arm64 busybox from
Debian's busybox-static:arm64 is the base, and a RUN step of an arm64 build runs
its arm64 ``uname``.  References: moby/buildkit ``solver/llbsolver/ops/exec_binfmt.go``
(an exec on a platform the worker does not run natively goes through an emulator),
``util/archutil`` (the worker's platforms include the emulated ones), and
``frontend/dockerfile/dockerfile2llb/convert.go`` (``autoDetectPlatform``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import image_config, run_cli

from builder import emulation
from builder.platforms import Platform

pytestmark = [pytest.mark.root, pytest.mark.overlay]
ARM64 = Platform("linux", "arm64")


def _arm64_base(root: Path, tar: Path, name: str = "bb-arm64") -> str:
    run_cli("import", "--platform", "linux/arm64", str(tar), name, root=root)
    return name


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return context


def test_doctor_registers_qemu_with_the_f_flag_and_lists_the_platforms(
        arm64_emulation: None, tmp_path: Path) -> None:
    """After ``--enable-emulation``: arm64's handler has F (its interpreter opened at
    registration, so a step's root needs no QEMU) and never C; doctor says which
    platforms run natively and which emulated."""
    handler = next(h for h in emulation.handlers() if h.name == "qemu-aarch64")
    assert handler.enabled and "F" in handler.flags and "C" not in handler.flags
    assert emulation.emulator_for(ARM64) == "qemu-aarch64"
    out = run_cli("doctor", root=tmp_path / "store").stdout.decode()
    assert "platforms: native linux/amd64" in out, out
    assert "linux/arm64 (qemu-aarch64)" in out.split("platforms: emulated ", 1)[1], out


def test_enable_emulation_is_refused_to_a_rootless_user(rootless_user) -> None:  # type: ignore[no-untyped-def]
    """Registering handlers changes the whole machine: a user's namespace may not."""
    result = rootless_user.run("doctor", "--enable-emulation")
    err = result.stderr.decode()
    assert result.returncode != 0 and err.count("\n") == 1, err
    assert "registers binfmt_misc handlers for the whole machine: run it as root" in err


def test_an_arm64_run_step_runs_its_arm64_binaries_under_qemu(
        arm64_emulation: None, busybox_arm64_tar: Path, tmp_path: Path) -> None:
    """``uname -m`` of the arm64 busybox says aarch64; the image is linux/arm64."""
    root = tmp_path / "store"
    base = _arm64_base(root, busybox_arm64_tar)
    context = _context(tmp_path, f"FROM {base}\nRUN uname -m > /arch && "
                                 "head -c 20 /bin/busybox | od -An -tx1 > /elf\n")
    out = tmp_path / "out"
    run_cli("build", "-q", "--platform", "linux/arm64", "-t", "emu", "-o",
            f"type=local,dest={out}", str(context), root=root)
    assert (out / "arch").read_text() == "aarch64\n"
    assert (out / "elf").read_text().split()[18:20] == ["b7", "00"]  # EM_AARCH64
    config = image_config(root, "emu")
    assert (config["os"], config["architecture"]) == ("linux", "arm64")


def test_without_the_handler_an_arm64_run_is_refused_before_anything_runs(
        emulation_ready: None, busybox_arm64_tar: Path, tmp_path: Path) -> None:
    """arm64's handler switched off: one line naming the line, the platform and the
    package, exit 1, no step started."""
    import emulated

    root = tmp_path / "store"
    base = _arm64_base(root, busybox_arm64_tar)
    context = _context(tmp_path, f"FROM {base}\nRUN uname -m > /arch\n")
    with emulated.arm64_switched_off():
        result = run_cli("build", "--platform", "linux/arm64", str(context), root=root,
                         check=False)
    err = result.stderr.decode()
    assert result.returncode == 1 and err.count("\n") == 1, err
    assert err.startswith(f"pybuild: {context}/Dockerfile:2: RUN in stage 'stage-0' needs "
                          "platform linux/arm64, which this linux/amd64 host cannot "
                          "execute: no QEMU emulator is registered for it: install Debian's "
                          "qemu-user-static"), err
    assert b"#1" not in result.stdout


def test_an_arm64_run_step_runs_rootless(arm64_emulation: None, busybox_arm64_tar: Path,
                                         rootless_user) -> None:  # type: ignore[no-untyped-def]
    """The machine's handlers reach a rootless build's steps (F: opened at registration)."""
    import shutil

    tar = rootless_user.own(Path(shutil.copy(busybox_arm64_tar, rootless_user.home)))
    context = rootless_user.home / "emu-ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM bb-arm64\nRUN uname -m > /arch\n")
    shutil.chown(context, rootless_user.uid)
    shutil.chown(context / "Dockerfile", rootless_user.uid)
    out = rootless_user.home / "emu-out"
    for argv in (("import", "--platform", "linux/arm64", str(tar), "bb-arm64"),
                 ("build", "-q", "--platform", "linux/arm64", "-o", f"type=local,dest={out}",
                  str(context))):
        result = rootless_user.run(*argv)
        assert result.returncode == 0, result.stderr.decode()
    assert (out / "arch").read_text() == "aarch64\n"
