"""``--platform`` and ``FROM --platform`` (issue 14, point 3): parsed, validated, recorded.

References (current sources, read for these expectations):

- containerd/platforms ``platforms.go`` (``Parse``), ``database.go`` (``normalizeArch``,
  known OS/arch lists), ``compare.go`` (``Only``: what may serve a platform);
- moby/buildkit ``frontend/dockerfile/dockerfile2llb/platform.go`` (the automatic
  BUILDPLATFORM/TARGETPLATFORM/... args), ``convert.go`` (a stage's platform; the image
  config records the target platform when ``--platform`` is given), ``frontend/dockerfile/
  docs/reference.md`` ("Automatic platform ARGs in the global scope");
- moby/buildkit ``solver/llbsolver/ops/exec_binfmt.go`` (``getEmulator``: only an exec of
  a platform the host cannot run needs emulation; COPY/ENV never do; emulated RUN steps
  are tests/engine/test_emulation.py);
- docker/buildx ``util/platformutil/parse.go`` (comma lists; several platforms at once:
  tests/engine/test_multiplatform.py).

The Docker on this machine (BuildKit v0.8) is not used: building for arm64 there needs
binfmt_misc emulators this machine does not have.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import image_config, run_cli

if TYPE_CHECKING:
    from builder.platforms import Platform


# Imported when used: the CLI tests also run against the old code (which had no
# builder.platforms) to show that they fail there.
def _platforms():  # type: ignore[no-untyped-def]
    import builder.platforms

    return builder.platforms


def _p(text: str) -> Platform:
    return _platforms().Platform.parse(text)


# ----------------------------------------------------------------- parsing (no root)

@pytest.mark.parametrize(("text", "expected"), [
    ("linux/arm64", "linux/arm64"),
    ("arm64", "linux/arm64"),
    ("aarch64", "linux/arm64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/arm64/8", "linux/arm64"),
    ("linux/arm64/v9.0", "linux/arm64/v9"),
    ("linux/arm64/v8.2", "linux/arm64/v8.2"),
    ("x86_64", "linux/amd64"),
    ("linux/x86-64", "linux/amd64"),
    ("linux/amd64/v1", "linux/amd64"),
    ("linux/amd64/v3", "linux/amd64/v3"),
    ("linux/arm", "linux/arm/v7"),
    ("arm", "linux/arm/v7"),
    ("armhf", "linux/arm/v7"),
    ("armel", "linux/arm/v6"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/arm/v5", "linux/arm/v5"),
    ("i386", "linux/386"),
    ("Linux/ARM64", "linux/arm64"),
    ("LINUX/AMD64/V2", "linux/amd64/v2"),
    ("macos/arm64", "darwin/arm64"),
    ("windows/amd64", "windows/amd64"),
    ("wasi/wasm", "wasi/wasm"),
    ("linux/riscv64", "linux/riscv64"),
    ("linux/s390x", "linux/s390x"),
])
def test_parse_normalises_like_containerd(text: str, expected: str) -> None:
    """containerd ``Parse`` + ``Normalize``, as BuildKit reads ``--platform``."""
    assert str(_p(text)) == expected


def test_a_lone_os_takes_the_hosts_architecture() -> None:
    """containerd ``Parse``: one word that is a known OS gets runtime.GOARCH."""
    host = _platforms().Platform.host()
    assert _p("linux") == _platforms().Platform("linux", host.architecture, host.variant)


@pytest.mark.parametrize(("text", "reason"), [
    ("bogus", "unknown operating system or architecture"),
    ("", "is not a valid OS"),
    ("linux/", "is not a valid platform component"),
    ("linux//amd64", "is not a valid platform component"),
    ("linux/amd64/v2/x", "too many parts"),
    ("linux/*", "wildcards are not supported"),
    ("linux/amd46", "unknown architecture 'amd46'"),
    ("linux/bogus", "unknown architecture 'bogus'"),
    ("lniux/amd64", "unknown operating system 'lniux'"),
    ("linux/amd64/v7", "amd64 has no variant 'v7'"),
    ("linux/arm/v9", "arm has no variant 'v9'"),
    ("linux/arm64/v7", "arm64 has no variant 'v7'"),
    ("linux/amd64 ", "is not a valid platform component"),
    ("windows(10.0.17763)/amd64", "OS versions and features"),
])
def test_parse_errors(text: str, reason: str) -> None:
    with pytest.raises(_platforms().PlatformError) as info:
        _p(text)
    assert reason in str(info.value)
    assert repr(text) in str(info.value)


def test_compatible_is_containerd_only() -> None:
    """compare.go ``platformVector``: amd64/v3 falls back to v2, v1 and 386; arm64 to
    arm/v8..v5; arm/v7 to v6, v5."""
    def names(text: str) -> list[str]:
        return [str(p) for p in _p(text).compatible()]
    assert names("linux/amd64") == ["linux/amd64", "linux/386"]
    assert names("linux/amd64/v3") == ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64",
                                       "linux/386"]
    assert names("linux/arm64") == ["linux/arm64", "linux/arm/v8", "linux/arm/v7",
                                    "linux/arm/v6", "linux/arm/v5"]
    assert names("linux/arm64/v9.1")[:4] == ["linux/arm64/v9.1", "linux/arm64/v9",
                                             "linux/arm64/v8.6", "linux/arm64/v8.5"]
    assert names("linux/arm/v7") == ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
    offered = _platforms().Platform.from_config({"os": "linux", "architecture": "arm64",
                                                 "variant": "v8"})
    assert offered == _p("linux/arm64") and _p("linux/arm64").rank(offered) == 0
    assert _p("linux/amd64").rank(_p("linux/arm64")) is None


def test_this_host_executes_amd64_and_386_not_arm64() -> None:
    """util/archutil/detect.go lists the native platform, the x86-64 levels the CPU
    has and 386; arm64 would need a binfmt_misc emulator (none registered here)."""
    if _platforms().Platform.host() != _p("linux/amd64"):
        pytest.skip("the expectations are for an amd64 host")
    runs = _platforms().host_executes()
    assert {_p("linux/amd64"), _p("linux/386")} <= set(runs) and _p("linux/arm64") not in runs


# ----------------------------------------------------------------- the command line

def _counts(root: Path) -> dict[str, int]:
    """Rows in the store's tables that a build or import would add to."""
    if not (root / "pybuild.db").exists():
        return {}
    db = sqlite3.connect(root / "pybuild.db")
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("layers", "images", "tags", "cache_entries") if t in tables}
    finally:
        db.close()


def _empty(counts: dict[str, int]) -> bool:
    return not any(counts.values())


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    (context / "f").write_text("file from the context\n")
    return context


def _one_line(result, *, progress: bool = False) -> str:  # type: ignore[no-untyped-def]
    """The error: one ``pybuild:`` line, last; nothing else on stderr unless
    ``progress`` (steps were shown before it failed)."""
    err = result.stderr.decode()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert err.endswith("\n") and lines[-1].startswith("pybuild: "), err
    assert progress or len(lines) == 1, err
    return lines[-1] + "\n"


@pytest.mark.parametrize("args", [
    ("build", "--platform", "bogus", "CTX"),
    ("build", "--platform=linux/amd46", "CTX"),
    ("import", "--platform", "bogus", "TAR", "c-never"),
    ("pull", "--platform", "bogus", "127.0.0.1:1/c-never:1"),
])
def test_a_bad_platform_flag_is_one_line_before_anything_runs(tmp_path: Path, args) -> None:
    """``pybuild: --platform bogus: ...``, exit 2; nothing is read, pulled or stored
    (the registry port is closed: a request would fail differently)."""
    context = _context(tmp_path, "FROM scratch\nCOPY f /f\n")
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(b"")
    argv = [str(context) if a == "CTX" else str(tarball) if a == "TAR" else a for a in args]
    root = tmp_path / "store"
    result = run_cli(*argv, root=root, check=False)
    err = _one_line(result)
    value = argv[2] if argv[1] == "--platform" else argv[1].partition("=")[2]
    assert result.returncode == 2
    assert err.startswith(f"pybuild: --platform {value}: "), err
    assert "unknown" in err
    assert _empty(_counts(root))


@pytest.mark.root
@pytest.mark.overlay
def test_several_platforms_as_a_list_or_repeated_are_one_build(tmp_path: Path) -> None:
    """buildx reads ``--platform a,b`` and repeated flags alike: one build for both, one
    name listing both images (tests/engine/test_multiplatform.py builds them for real)."""
    context = _context(tmp_path, "FROM scratch\nCOPY f /f\n")
    root = tmp_path / "store"
    for name, argv in (("c-list", ["--platform", "linux/amd64,linux/arm64"]),
                       ("c-flags", ["--platform", "linux/amd64", "--platform", "linux/arm64"])):
        run_cli("build", "-q", "-t", name, *argv, str(context), root=root)
        doc = json.loads(run_cli("inspect", name, root=root).stdout)[0]
        assert [m["Platform"] for m in doc["Index"]] == ["linux/amd64", "linux/arm64"]


@pytest.mark.root
def test_the_same_platform_twice_is_one_platform(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM scratch\nCOPY f /f\n")
    root = tmp_path / "store"
    run_cli("build", "-q", "-t", "c-twice", "--platform", "linux/arm64,aarch64", str(context),
            root=root)
    assert image_config(root, "c-twice")["architecture"] == "arm64"


@pytest.mark.root
def test_from_platform_bogus_names_the_dockerfile_and_line(tmp_path: Path) -> None:
    """convert.go: ``failed to parse platform <expr>``, at the FROM's location."""
    context = _context(tmp_path, "ARG P=bogus\nFROM scratch\nCOPY f /f\n"
                                 "FROM --platform=$P scratch\nCOPY f /f\n")
    result = run_cli("build", str(context), root=tmp_path / "store", check=False)
    err = _one_line(result)
    assert result.returncode == 1
    assert f"{context}/Dockerfile:4: failed to parse platform $P: 'bogus': unknown" in err, err


# ----------------------------------------------------------------- builds (root, overlay)

@pytest.mark.root
@pytest.mark.overlay
def test_an_arm64_build_with_run_fails_cleanly_before_any_run(store, busybox,
                                                                 tmp_path: Path) -> None:
    """The RUN of the last stage would need arm64; the first stage's RUN (amd64, it
    could run) must not run either: nothing is committed, cached or tagged, and the base
    image is not pulled (busybox is amd64 in the store; docker.io would be asked)."""
    context = _context(tmp_path, "FROM --platform=$BUILDPLATFORM busybox AS tools\n"
                                 "RUN echo built > /tool\n"
                                 "FROM busybox AS app\n"
                                 "COPY --from=tools /tool /tool\n"
                                 "RUN /bin/true\n")
    import emulated

    before = _counts(store.root)
    with emulated.arm64_switched_off():  # on a machine with emulation, as on one without
        result = run_cli("build", "-t", "c-arm", "--platform", "linux/arm64", str(context),
                         root=store.root, check=False)
    err = _one_line(result)
    assert result.returncode == 1
    assert err.startswith(f"pybuild: {context}/Dockerfile:5: RUN in stage 'app' needs "
                          "platform linux/arm64"), err
    assert ("no QEMU emulator is registered for it: install Debian's qemu-user-static and "
            "run 'pybuild doctor --enable-emulation' as root") in err, err
    assert _counts(store.root) == before
    assert "#1" not in result.stdout.decode() + result.stderr.decode()  # no step started


@pytest.mark.root
@pytest.mark.overlay
def test_an_amd64_request_records_amd64_and_the_automatic_args(store, busybox,
                                                               tmp_path: Path) -> None:
    """``--platform linux/amd64``: the config says linux/amd64 (no variant), and RUN sees
    BuildKit's automatic platform args once declared (platform.go ``defaultArgs``)."""
    names = ("TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM",
             "BUILDOS", "BUILDARCH", "BUILDVARIANT")
    context = _context(tmp_path, "FROM busybox\nARG " + " ".join(names) + "\n"
                       "RUN echo \"" + " ".join(f"{n}=${n}" for n in names) + "\" > /args\n")
    out = tmp_path / "out"
    run_cli("build", "-q", "-t", "c-amd", "--platform", "linux/amd64", "-o",
            f"type=local,dest={out}", str(context), root=store.root)
    config = image_config(store.root, "c-amd")
    assert (config["os"], config["architecture"], config.get("variant")) == \
        ("linux", "amd64", None)
    assert (out / "args").read_text().split() == [
        "TARGETPLATFORM=linux/amd64", "TARGETOS=linux", "TARGETARCH=amd64", "TARGETVARIANT=",
        "BUILDPLATFORM=linux/amd64", "BUILDOS=linux", "BUILDARCH=amd64", "BUILDVARIANT="]


@pytest.mark.root
@pytest.mark.overlay
@pytest.mark.parametrize(("flag", "arch", "variant"), [
    ("linux/arm64", "arm64", None),
    ("aarch64", "arm64", None),
    ("linux/arm", "arm", "v7"),
    ("linux/arm/v6", "arm", "v6"),
    ("linux/riscv64", "riscv64", None),
])
def test_a_build_without_run_succeeds_for_any_platform(tmp_path: Path, flag: str, arch: str,
                                                       variant: str | None) -> None:
    """FROM scratch + COPY + ARG/ENV runs nothing on the target platform, so BuildKit
    builds it without emulation (exec_binfmt.go: only an ExecOp asks for an emulator).
    The config records the target (convert.go); TARGET* args hold it."""
    context = _context(tmp_path, "FROM scratch\nCOPY f /f\nARG TARGETPLATFORM TARGETARCH "
                                 "TARGETVARIANT\nENV P=$TARGETPLATFORM A=$TARGETARCH "
                                 "V=$TARGETVARIANT\n")
    root = tmp_path / "store"
    run_cli("build", "-q", "-t", "c-norun", "--platform", flag, str(context), root=root)
    config = image_config(root, "c-norun")
    assert (config["os"], config["architecture"], config.get("variant")) == \
        ("linux", arch, variant)
    target = "/".join(p for p in ("linux", arch, variant) if p)
    assert f"P={target}" in config["config"]["Env"]
    assert f"A={arch}" in config["config"]["Env"] and f"V={variant or ''}" in \
        config["config"]["Env"]


@pytest.mark.root
@pytest.mark.overlay
def test_from_buildplatform_cross_builds_for_arm64(store, busybox, tmp_path: Path) -> None:
    """The cross-compilation pattern of BuildKit's reference ("Automatic platform ARGs"):
    the tool stage runs on BUILDPLATFORM and sees TARGETARCH; the final stage is arm64."""
    context = _context(tmp_path, "FROM --platform=$BUILDPLATFORM busybox AS build\n"
                                 "ARG TARGETARCH BUILDARCH\n"
                                 "RUN echo \"$BUILDARCH->$TARGETARCH\" > /arch\n"
                                 "FROM scratch\nCOPY --from=build /arch /arch\n")
    out = tmp_path / "out"
    run_cli("build", "-q", "-t", "c-cross", "--platform", "linux/arm64", "-o",
            f"type=local,dest={out}", str(context), root=store.root)
    assert (out / "arch").read_text() == "amd64->arm64\n"
    assert image_config(store.root, "c-cross")["architecture"] == "arm64"


@pytest.mark.root
@pytest.mark.overlay
def test_without_platform_the_target_is_the_host(store, busybox, tmp_path: Path) -> None:
    """No --platform: TARGETPLATFORM is BUILDPLATFORM (platform.go ``buildPlatformOpt``)
    and the config keeps the base image's platform."""
    if os.uname().machine != "x86_64":
        pytest.skip("the busybox fixture is linux/amd64")
    context = _context(tmp_path, "FROM busybox\nARG TARGETPLATFORM BUILDPLATFORM\n"
                                 "ENV T=$TARGETPLATFORM B=$BUILDPLATFORM\n")
    run_cli("build", "-q", "-t", "c-host", str(context), root=store.root)
    config = image_config(store.root, "c-host")
    assert config["architecture"] == "amd64" and "variant" not in config
    assert {"T=linux/amd64", "B=linux/amd64"} <= set(config["config"]["Env"])


def _cached_steps(result) -> list[str]:  # type: ignore[no-untyped-def]
    """Titles of the steps a ``--progress plain`` build took from the cache."""
    lines = result.stdout.decode().splitlines() + result.stderr.decode().splitlines()
    titles = {}
    for line in lines:
        number, _, rest = line.partition(" ")
        if number.startswith("#") and rest.startswith("["):
            titles[number] = rest
    return sorted(titles[n] for n, rest in (line.partition(" ")[::2] for line in lines)
                  if rest == "CACHED" and n in titles)


@pytest.mark.root
@pytest.mark.overlay
def test_the_stage_platform_is_part_of_the_cache_key(store, busybox, tmp_path: Path) -> None:
    """Each step's key holds its stage's platform (as BuildKit's ops carry theirs): a
    ``FROM --platform=$BUILDPLATFORM`` stage is shared between target platforms, a
    stage on the target platform is not."""
    context = _context(tmp_path, "FROM --platform=$BUILDPLATFORM busybox AS build\n"
                                 f"RUN echo {tmp_path.name} > /same\n"
                                 "FROM scratch\nCOPY --from=build /same /same\n")
    first = run_cli("build", "--progress", "plain", "--platform", "linux/arm64",
                    str(context), root=store.root)
    assert _cached_steps(first) == []
    second = run_cli("build", "--progress", "plain", "--platform", "linux/amd64",
                     str(context), root=store.root)
    assert _cached_steps(second) == [f"[build 1/1] RUN echo {tmp_path.name} > /same"]
    third = run_cli("build", "--progress", "plain", "--platform", "linux/arm64",
                    str(context), root=store.root)
    assert len(_cached_steps(third)) == 2


@pytest.mark.root
@pytest.mark.overlay
def test_an_x86_64_level_this_cpu_has_runs_and_is_recorded(store, busybox,
                                                            tmp_path: Path) -> None:
    """linux/amd64/v2 takes the stored linux/amd64 busybox (platforms.Only), runs here
    when the CPU has the level, and the config records the variant (convert.go)."""
    flags = Path("/proc/cpuinfo").read_text().split("\nflags")[1].split("\n")[0].split()
    if os.uname().machine != "x86_64" or not {"sse4_2", "popcnt", "ssse3", "cx16"} <= set(flags):
        pytest.skip("this CPU lacks x86-64-v2")
    context = _context(tmp_path, "FROM busybox\nRUN echo v2 > /v2\n")
    run_cli("build", "-q", "-t", "c-v2", "--platform", "linux/amd64/v2", str(context),
            root=store.root)
    config = image_config(store.root, "c-v2")
    assert (config["architecture"], config.get("variant")) == ("amd64", "v2")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.root
@pytest.mark.overlay
def test_a_stored_base_of_another_platform_is_not_used(store, busybox_tar,
                                                       tmp_path: Path) -> None:
    """moby's builder-next (ResolveModePreferLocal): a local image whose platform does not
    match is not used; the registry is asked.  The registry here is a closed port on
    127.0.0.1, so the build stops with one line naming both platforms; nothing is kept."""
    name = f"127.0.0.1:{_closed_port()}/c-base:1"
    run_cli("import", "--platform", "linux/amd64", str(busybox_tar), name, root=store.root)
    context = _context(tmp_path, f"FROM {name}\nCOPY f /f\n")
    before = _counts(store.root)
    result = run_cli("build", "-t", "c-other", "--platform", "linux/arm64", str(context),
                     root=store.root, check=False)
    err = _one_line(result, progress=True)
    assert result.returncode == 1
    assert f"{context}/Dockerfile:1: base image '{name}' is linux/amd64 in the local " \
        "store, not linux/arm64, and pulling linux/arm64 failed" in err, err
    assert _counts(store.root) == before


@pytest.mark.root
def test_import_records_the_platform(tmp_path: Path, busybox_tar) -> None:
    """``pybuild import --platform`` (docker import --platform) normalises and records."""
    root = tmp_path / "store"
    run_cli("import", "--platform", "linux/arm", str(busybox_tar), "c-imp", root=root)
    config = image_config(root, "c-imp")
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm", "v7")
    inspect = json.loads(run_cli("inspect", "c-imp", root=root).stdout)[0]
    assert (inspect["Architecture"], inspect["Variant"]) == ("arm", "v7")
