"""Emulated RUN steps: which platforms binfmt_misc lets this host execute, and enabling them.

A RUN step for another architecture runs its binaries through QEMU user-mode
emulation, as BuildKit does: the kernel's ``binfmt_misc`` hands each foreign ELF
file to the interpreter registered for it.  The handler must carry the ``F``
flag (the kernel opens the interpreter when it is registered), since a step's
root is the image's and has no QEMU in it.

Which platform a handler serves is read from its magic and mask, not its name:
the handler serves a platform when the ELF header of a program built for that
platform (``_ELF_HEADERS``: class, byte order and machine) matches, as the kernel
would match it.  BuildKit's ``util/archutil`` finds the same by running a probe
binary per architecture.

``enable`` is ``pybuild doctor --enable-emulation``: it mounts ``binfmt_misc`` when
nothing has (machines without systemd, most CI containers) and registers Debian's
``qemu-user-static`` handlers from ``/usr/share/binfmts`` with the flags Debian
gives them (``F``, and ``P`` where it preserves argv[0]).  Never ``C``: with it a
set-uid foreign binary would run the interpreter with its owner's credentials for
any user of the host (tonistiigi/binfmt registers ``POCF``; docs/multi-platform.md).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

from builder.errors import SandboxError
from builder.platforms import Platform, host_executes

__all__ = ["PACKAGE", "Handler", "Support", "elf_header", "emulator_for", "enable",
           "handlers", "missing_message", "runnable_platforms", "summary"]

BINFMT = Path("/proc/sys/fs/binfmt_misc")
DEBIAN_BINFMTS = Path("/usr/share/binfmts")
PACKAGE = "qemu-user-static"

# e_ident (class, data) and e_machine of each platform pybuild can emulate; the ELF
# header of a program for it, up to e_machine, is what a handler's magic must match.
_ELF_CLASS_32, _ELF_CLASS_64 = 1, 2
_LITTLE, _BIG = 1, 2
_MACHINES: dict[tuple[str, str], tuple[int, int, int]] = {
    ("amd64", ""): (_ELF_CLASS_64, _LITTLE, 0x3E),
    ("386", ""): (_ELF_CLASS_32, _LITTLE, 0x03),
    ("arm64", ""): (_ELF_CLASS_64, _LITTLE, 0xB7),
    ("arm", ""): (_ELF_CLASS_32, _LITTLE, 0x28),
    ("ppc64le", ""): (_ELF_CLASS_64, _LITTLE, 0x15),
    ("s390x", ""): (_ELF_CLASS_64, _BIG, 0x16),
    ("riscv64", ""): (_ELF_CLASS_64, _LITTLE, 0xF3),
    ("mips64le", ""): (_ELF_CLASS_64, _LITTLE, 0x08),
    ("mips64", ""): (_ELF_CLASS_64, _BIG, 0x08),
    ("loong64", ""): (_ELF_CLASS_64, _LITTLE, 0x102),
}
_ET_EXEC = 2


class Handler(msgspec.Struct, frozen=True):
    """One ``binfmt_misc`` entry of the magic kind (extension handlers never run ELF)."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes

    def matches(self, header: bytes) -> bool:
        """Whether the kernel would hand a file starting with ``header`` to this handler."""
        window = header[self.offset:self.offset + len(self.magic)]
        if len(window) < len(self.magic):
            return False
        mask = self.mask or b"\xff" * len(self.magic)
        return all((h & m) == (g & m) for h, g, m in zip(window, self.magic, mask, strict=True))

    @property
    def opens_early(self) -> bool:
        """``F``: the interpreter was opened at registration, so it works in any root."""
        return "F" in self.flags


class Support(enum.Enum):
    """How this host runs a platform's binaries."""

    NATIVE = "native"
    EMULATED = "emulated"
    NOT_IN_ROOT = "registered without the F flag"
    MISSING = "no emulator"


def elf_header(platform: Platform) -> bytes | None:
    """The first 20 bytes of an executable for ``platform`` (None: not one pybuild knows)."""
    key = (platform.architecture, "")
    if platform.os != "linux" or key not in _MACHINES:
        return None
    elf_class, data, machine = _MACHINES[key]
    def half(value: int) -> bytes:  # an ELF half-word in the file's byte order
        return value.to_bytes(2, "little" if data == _LITTLE else "big")

    return b"\x7fELF" + bytes([elf_class, data, 1]) + bytes(9) + half(_ET_EXEC) + half(machine)


def _parse_entry(name: str, text: str) -> Handler | None:
    fields: dict[str, str] = {}
    enabled = False
    for line in text.splitlines():
        if line in ("enabled", "disabled"):
            enabled = line == "enabled"
            continue
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    if "magic" not in fields:
        return None
    try:
        return Handler(name, enabled, fields.get("interpreter", ""), fields.get("flags", ""),
                       int(fields.get("offset", "0")), bytes.fromhex(fields["magic"]),
                       bytes.fromhex(fields.get("mask", "")))
    except ValueError:
        return None


def handlers(root: Path = BINFMT) -> list[Handler]:
    """The magic handlers registered here ([] when ``binfmt_misc`` is not mounted)."""
    found = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    for name in names:
        if name in ("register", "status"):
            continue
        try:
            text = (root / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if (handler := _parse_entry(name, text)) is not None:
            found.append(handler)
    return found


def _enabled_globally(root: Path = BINFMT) -> bool:
    try:
        return (root / "status").read_text(encoding="ascii").strip() == "enabled"
    except OSError:
        return False


def support(platform: Platform, known: list[Handler] | None = None) -> tuple[Support, str]:
    """How ``platform``'s binaries run here, and the handler's name when emulated."""
    if any(p.rank(platform) is not None for p in host_executes()):
        return Support.NATIVE, ""
    header = elf_header(platform)
    if header is None or not _enabled_globally():
        return Support.MISSING, ""
    serving = [h for h in (handlers() if known is None else known)
               if h.enabled and h.matches(header)]
    if not serving:
        return Support.MISSING, ""
    if not serving[0].opens_early:
        return Support.NOT_IN_ROOT, serving[0].name
    return Support.EMULATED, serving[0].name


def emulator_for(platform: Platform) -> str | None:
    """The handler that runs ``platform``'s binaries in a step's root, None if none does."""
    kind, name = support(platform)
    return name if kind is Support.EMULATED else None


def missing_message(platform: Platform) -> str:
    """Why ``platform`` cannot run here and what to do, in one clause."""
    kind, name = support(platform)
    if kind is Support.NOT_IN_ROOT:
        return (f"binfmt_misc's {name} handler lacks the F flag, so a step's root cannot "
                f"reach its interpreter; re-register it with 'pybuild doctor "
                f"--enable-emulation'")
    if elf_header(platform) is None:
        return f"pybuild cannot emulate {platform}"
    return (f"no QEMU emulator is registered for it: install Debian's {PACKAGE} and run "
            f"'pybuild doctor --enable-emulation' as root")


def runnable_platforms() -> Iterator[tuple[Platform, Support, str]]:
    """Every platform pybuild can emulate, with how this host runs it (for doctor)."""
    known = handlers()
    for arch, variant in _MACHINES:
        platform = Platform("linux", arch, variant or ("v7" if arch == "arm" else ""))
        kind, name = support(platform, known)
        yield platform, kind, name


def summary() -> list[str]:
    """What ``pybuild doctor`` prints: the platforms this host runs, natively and
    emulated, and how to enable the ones it cannot."""
    native = ", ".join(str(p) for p in host_executes())
    emulated, lacking_f, missing = [], [], []
    for platform, kind, name in runnable_platforms():
        if kind is Support.EMULATED:
            emulated.append(f"{platform} ({name})")
        elif kind is Support.NOT_IN_ROOT:
            lacking_f.append(f"{platform} ({name})")
        elif kind is Support.MISSING:
            missing.append(str(platform))
    lines = [f"native {native}", f"emulated {', '.join(emulated) or 'none'}"]
    fix = "run 'pybuild doctor --enable-emulation' as root"
    if lacking_f:
        lines.append(f"registered without the F flag, unusable in a RUN step: "
                     f"{', '.join(lacking_f)}: {fix}")
    if missing:
        lines.append(f"cannot run {', '.join(missing)}: install Debian's {PACKAGE} and "
                     f"{fix}")
    return lines


def _debian_definition(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    return fields


def _registration(name: str, fields: dict[str, str]) -> bytes:
    """The line written to ``register``: ``:name:M:offset:magic:mask:interpreter:flags``."""
    flags = "F" + ("P" if fields.get("preserve") == "yes" else "")
    parts = [name, "M", fields.get("offset", "0"), fields["magic"], fields.get("mask", ""),
             fields["interpreter"], flags]
    if any(":" in part for part in parts):
        raise SandboxError(f"{DEBIAN_BINFMTS / name}: a field holds ':'")
    return (":" + ":".join(parts)).encode()


def _mount_binfmt(root: Path) -> None:
    from builder import syscalls

    if (root / "register").exists():
        return
    try:
        syscalls.mount("binfmt_misc", str(root), "binfmt_misc", 0)
    except OSError as err:
        raise SandboxError(f"could not mount binfmt_misc on {root}: "
                           f"{os.strerror(err.errno or 0)}") from None


def enable(root: Path = BINFMT, definitions: Path = DEBIAN_BINFMTS) -> list[str]:
    """Register a QEMU handler with the F flag for every platform pybuild can emulate
    and this host does not run natively; returns what was done, a line each."""
    from builder import userns

    if os.geteuid() != 0 or userns.rootless():
        raise SandboxError("--enable-emulation registers binfmt_misc handlers for the "
                           "whole machine: run it as root")
    _mount_binfmt(root)
    done: list[str] = []
    present = {h.name: h for h in handlers(root)}
    for platform, kind, _ in runnable_platforms():
        if kind in (Support.NATIVE, Support.EMULATED):
            continue
        qemu = _qemu_name(platform)
        definition = definitions / qemu
        if not definition.is_file():
            done.append(f"{platform}: {definition} is missing (install Debian's {PACKAGE})")
            continue
        fields = _debian_definition(definition)
        if qemu in present:  # registered without F, or disabled: replace it
            (root / qemu).write_text("-1", encoding="ascii")
        (root / "register").write_bytes(_registration(qemu, fields))
        done.append(f"{platform}: registered {qemu} ({fields['interpreter']})")
    if not _enabled_globally(root):
        (root / "status").write_text("1", encoding="ascii")
        done.append("binfmt_misc: enabled")
    return done


def _qemu_name(platform: Platform) -> str:
    return "qemu-" + {"amd64": "x86_64", "386": "i386", "arm64": "aarch64",
                      "mips64le": "mips64el", "loong64": "loongarch64"}.get(
                          platform.architecture, platform.architecture)
