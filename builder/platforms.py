"""Platforms (``os/arch[/variant]``): one type, one parser, used by every command.

``Platform.parse`` reads a platform the way BuildKit does, that is with
containerd's ``platforms.Parse`` followed by ``platforms.Normalize``
(containerd/platforms ``platforms.go``, ``database.go``): case is folded,
``x86_64`` is ``amd64``, ``aarch64`` is ``arm64``, ``linux/arm`` is
``linux/arm/v7``, ``arm64/v8`` and ``amd64/v1`` drop their default variant, and a
lone word is an OS (the host's architecture) or an architecture (on linux).
pybuild is stricter than containerd in one way: a two- or three-part platform
whose OS or architecture is not in containerd's known lists is refused (containerd
takes ``linux/amd46`` as is, and an image built for it would say so).

``compatible`` is containerd's ``platforms.Only``: what an index may offer for a
platform, best first (``linux/amd64`` also takes ``linux/386``).  ``host_executes``
is what a RUN step can run here without emulation, as BuildKit's
``util/archutil`` detects it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache

import msgspec

from builder.errors import UsageError

__all__ = ["Platform", "PlatformError", "host_executes", "parse_platform_flag",
           "parse_platforms"]

# containerd database.go isKnownOS / isKnownArch (Go's syslist), plus the WASI names
# Docker uses for wasm images (--platform wasi/wasm), which that list predates.
_KNOWN_OS = frozenset({
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
    "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos", "wasi", "wasip1",
})
_KNOWN_ARCH = frozenset({
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
    "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
    "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
})
# The variants that exist where variants are defined (after normalisation); other
# architectures take any variant, as containerd does (riscv64 has profile names).
_VARIANTS = {
    "amd64": {"", "v2", "v3", "v4"},
    "arm": {"v5", "v6", "v7", "v8"},
    "arm64": {"", *(f"v8.{n}" for n in range(1, 10)), "v9", *(f"v9.{n}" for n in range(1, 8))},
}
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]+")
_OS_COMPONENT = re.compile(r"[A-Za-z0-9_-]+")
_EXAMPLE = "expected os/arch[/variant], e.g. linux/arm64"
# x86-64 micro-architecture levels (the psABI), by the /proc/cpuinfo flags they need.
_AMD64_LEVELS = (
    ("v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
    ("v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ("v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)


class PlatformError(ValueError):
    """A platform string that does not parse; ``str()`` says why, quoting it."""


class Platform(msgspec.Struct, frozen=True):
    """A normalised platform: ``os``, ``architecture`` and ``variant`` ("" if none)."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, ``arch`` or ``os``, normalised; PlatformError if not."""
        if "*" in text:
            raise PlatformError(f"{text!r}: wildcards are not supported")
        parts = text.split("/", 3)
        if "(" in parts[0]:
            raise PlatformError(f"{text!r}: OS versions and features (os(version)) are not "
                                "supported")
        if not _OS_COMPONENT.fullmatch(parts[0]):
            raise PlatformError(f"{text!r}: {parts[0]!r} is not a valid OS ({_EXAMPLE})")
        for part in parts[1:]:
            if not _COMPONENT.fullmatch(part):
                raise PlatformError(f"{text!r}: {part!r} is not a valid platform component "
                                    f"({_EXAMPLE})")
        if len(parts) > 3:
            raise PlatformError(f"{text!r}: too many parts ({_EXAMPLE})")
        if len(parts) == 1:
            return cls._one_word(text, parts[0])
        os_name = _normalize_os(parts[0])
        if os_name not in _KNOWN_OS:
            raise PlatformError(f"{text!r}: unknown operating system {parts[0]!r} "
                                f"({_EXAMPLE})")
        arch, variant = _normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
        return cls._checked(text, os_name, arch, variant)

    @classmethod
    def _one_word(cls, text: str, word: str) -> Platform:
        os_name = _normalize_os(word)
        if os_name in _KNOWN_OS:
            host = cls.host()
            return cls(os_name, host.architecture, host.variant)
        arch, variant = _normalize_arch(word, "")
        if arch not in _KNOWN_ARCH:
            raise PlatformError(f"{text!r}: unknown operating system or architecture "
                                f"({_EXAMPLE})")
        return cls("linux", arch, variant)

    @classmethod
    def _checked(cls, text: str, os_name: str, arch: str, variant: str) -> Platform:
        if arch not in _KNOWN_ARCH:
            raise PlatformError(f"{text!r}: unknown architecture {arch!r} ({_EXAMPLE})")
        allowed = _VARIANTS.get(arch)
        if allowed is not None and variant not in allowed:
            shown = ", ".join(sorted(v or "(none)" for v in allowed))
            raise PlatformError(f"{text!r}: {arch} has no variant {variant!r} "
                                f"(known: {shown})")
        return cls(os_name, arch, variant)

    @classmethod
    def from_config(cls, doc: Mapping[str, object]) -> Platform | None:
        """The normalised platform an image config or index entry names, or None when
        it names none (no architecture); never raises on odd values."""
        os_name, arch = doc.get("os"), doc.get("architecture")
        variant = doc.get("variant") or ""
        if not isinstance(arch, str) or not arch or not isinstance(variant, str):
            return None
        arch, variant = _normalize_arch(arch, variant)
        return cls(_normalize_os(os_name if isinstance(os_name, str) else ""), arch, variant)

    @classmethod
    def host(cls) -> Platform:
        """This machine's platform (BuildKit's BUILDPLATFORM), normalised."""
        return _host()

    def compatible(self) -> list[Platform]:
        """containerd's ``platforms.Only`` vector: what may serve this platform, best first."""
        return [Platform(self.os, a, v) for a, v in _vector(self.architecture, self.variant)]

    def rank(self, offered: Platform) -> int | None:
        """Where ``offered`` sits in ``compatible()`` (0 = exact), None if it does not fit."""
        vector = self.compatible()
        return vector.index(offered) if offered in vector else None


def _normalize_os(name: str) -> str:
    name = name.lower() or "linux"
    return "darwin" if name == "macos" else name


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's normalizeArch, with the default variants dropped (Normalize)."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9",
                         "v9.0": "v9"}.get(variant, variant)
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        return "arm", f"v{variant}" if variant in ("5", "6", "8") else variant
    return arch, variant


def _vector(arch: str, variant: str) -> list[tuple[str, str]]:
    """containerd compare.go platformVector, normalised."""
    level = variant[1:] if variant.startswith("v") else ""
    if arch == "amd64":
        lower = int(level) if level.isdigit() else 1
        return [(arch, variant), *(("amd64", f"v{n}" if n > 1 else "")
                                   for n in range(lower - 1, 0, -1)), ("386", "")]
    if arch == "arm":
        top = int(level) if level.isdigit() else 0
        return [(arch, variant), *(("arm", f"v{n}") for n in range(top - 1, 4, -1))]
    if arch == "arm64":
        return _arm64_vector(variant)
    return [(arch, variant)]


def _arm64_vector(variant: str) -> list[tuple[str, str]]:
    """arm64/v8.x runs v8.x .. v8; v9.x also v8.(x+5) .. v8; then arm/v8 .. arm/v5."""
    major, _, minor_text = (variant or "v8")[1:].partition(".")
    minor = int(minor_text) if minor_text.isdigit() else 0
    if major not in ("8", "9") or (minor_text and not minor_text.isdigit()):
        return [("arm64", variant)]
    levels = [(major, n) for n in range(minor, -1, -1)]
    if major == "9":
        levels += [("8", n) for n in range(min(minor + 5, 9), -1, -1)]
    out = [("arm64", _normalize_arch("arm64", f"v{m}.{n}" if n else f"v{m}")[1])
           for m, n in levels]
    return out + [("arm", f"v{n}") for n in range(8, 4, -1)]


@cache
def _host() -> Platform:
    import platform as _machine  # only needed when the host's platform is asked for

    machine = _machine.machine().lower()
    if machine.startswith("armv") and machine[4:5].isdigit():  # armv7l, armv6l
        return Platform("linux", "arm", f"v{machine[4]}")
    arch, variant = _normalize_arch({"ppc64el": "ppc64le"}.get(machine, machine), "")
    return Platform("linux", arch, "" if arch == "arm" else variant)


@cache
def host_executes() -> tuple[Platform, ...]:
    """Platforms whose binaries run here natively: the host's; on amd64 also the x86-64
    levels this CPU has and linux/386 (BuildKit util/archutil/detect.go lists the same
    by running a probe binary for each; emulated platforms are builder.emulation's)."""
    host = _host()
    if host.architecture != "amd64":
        return (host,)
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    break
    except OSError:
        pass
    levels = []
    for name, needs in _AMD64_LEVELS:
        if not needs <= flags:
            break
        levels.append(Platform("linux", "amd64", name))
    return (host, *levels, Platform("linux", "386"))


def parse_platforms(values: list[str] | str | None, flag: str = "--platform") -> list[Platform]:
    """The platforms a command line asks for, in order, duplicates collapsed ([]: not
    given), or a one-line UsageError.  Each occurrence may be a comma-separated list,
    as buildx reads it, and ``local`` is the host (buildx util/platformutil/parse.go)."""
    found: list[Platform] = []
    for value in [] if values is None else [values] if isinstance(values, str) else values:
        for text in value.split(","):
            try:
                plat = _host() if text.strip().lower() == "local" else Platform.parse(text.strip())
            except PlatformError as err:
                raise UsageError(f"{flag} {value}: {err}") from None
            if plat not in found:
                found.append(plat)
    return found


def parse_platform_flag(values: list[str] | str | None, flag: str = "--platform",
                        several: str = "") -> Platform | None:
    """The one platform a command line asks for (None: not given), or a one-line
    UsageError; more than one is refused with ``several`` as the reason."""
    found = parse_platforms(values, flag)
    if len(found) > 1:
        given = ",".join([values] if isinstance(values, str) else values or [])
        raise UsageError(f"{flag} {given}: several platforms ({', '.join(map(str, found))}): "
                         f"{several or 'one platform expected'}")
    return found[0] if found else None
