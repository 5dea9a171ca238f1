"""``--platform linux/amd64,linux/arm64`` (issue 19, points 2, 3 and 5): one build,
one image per platform, one name; an OCI image index in ``-o type=oci``.

For real: amd64 runs natively, arm64 through QEMU (``arm64_emulation``), with busybox
bases made from Debian's busybox-static for each architecture.  References:
docker/buildx (several platforms: one build, an index; ``-o type=local`` writes a
directory per platform; the docker exporter refuses manifest lists), moby/buildkit
``exporter/oci`` (index.json names an image index that lists the manifests with
their platforms), ``frontend/dockerfile/docs/reference.md`` (automatic platform ARGs
in the global scope, ``FROM --platform=$BUILDPLATFORM``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import image_config, run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]
BOTH = "linux/amd64,linux/arm64"


@pytest.fixture
def root(two_arch_store: Path) -> Path:
    return two_arch_store


def _context(tmp_path: Path, dockerfile: str, name: str = "ctx") -> Path:
    context = tmp_path / name
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return context


# The base chosen by the automatic TARGETARCH, a RUN on each platform (arm64 emulated).
PER_PLATFORM = ("ARG TARGETARCH\nFROM bb-${TARGETARCH}\nARG TARGETPLATFORM\n"
                "RUN echo $TARGETPLATFORM $(uname -m) > /arch\n")


def _layout_index(archive: Path) -> tuple[dict, dict]:
    """(index.json, the image index it names) of an OCI archive."""
    with tarfile.open(archive) as tar:
        top = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = top["manifests"][0]["digest"].split(":", 1)[1]
        nested = json.load(tar.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
    return top, nested


def test_two_platforms_give_one_name_and_an_oci_index(root: Path, tmp_path: Path) -> None:
    context = _context(tmp_path, PER_PLATFORM)
    out, local = tmp_path / "out.tar", tmp_path / "local"
    result = run_cli("build", "--progress", "plain", "--platform", BOTH, "-t", "multi:1",
                     "-o", f"type=oci,dest={out}", "-o", f"type=local,dest={local}",
                     str(context), root=root)
    assert b"building for linux/amd64" in result.stderr + result.stdout
    assert (local / "linux_amd64" / "arch").read_text() == "linux/amd64 x86_64\n"
    assert (local / "linux_arm64" / "arch").read_text() == "linux/arm64 aarch64\n"
    top, nested = _layout_index(out)
    assert [m["mediaType"] for m in top["manifests"]] == \
        ["application/vnd.oci.image.index.v1+json"]
    assert top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1"
    assert [m["platform"] for m in nested["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"},
        # provenance (mode=min, buildx's default): tests/engine/test_provenance.py
        {"architecture": "unknown", "os": "unknown"}, {"architecture": "unknown", "os": "unknown"}]
    # The store: one name, this host's image behind it, the index in inspect.
    listed = run_cli("images", root=root).stdout.decode().splitlines()
    assert [line.split()[0] for line in listed[1:]].count("multi") == 1
    assert not any(line.startswith("<none>") for line in listed), listed
    doc = json.loads(run_cli("inspect", "multi:1", root=root).stdout)[0]
    assert doc["Architecture"] == "amd64"
    assert [m["Platform"] for m in doc["Index"]] == ["linux/amd64", "linux/arm64"]
    assert image_config(root, doc["Index"][1]["Id"])["architecture"] == "arm64"


def test_skopeo_and_umoci_accept_the_index_and_each_manifest(root: Path,
                                                             tmp_path: Path) -> None:
    """skopeo reads the index raw and picks each platform; umoci unpacks each platform's
    image (umoci picks no platform itself: a tag naming an index is ambiguous to it,
    as it is for BuildKit's own OCI exports)."""
    for tool in ("skopeo", "umoci"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed (apt-get install {tool})")
    out = tmp_path / "out.tar"
    run_cli("build", "-q", "--platform", BOTH, "-t", "multi:1", "-o", f"type=oci,dest={out}",
            str(_context(tmp_path, PER_PLATFORM)), root=root)
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{out}:1"],
                         capture_output=True, text=True, check=True).stdout
    assert [m["platform"]["architecture"] for m in json.loads(raw)["manifests"]] == \
        ["amd64", "arm64", "unknown", "unknown"]  # then the provenance attestations
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        layout = tmp_path / f"layout-{arch}"
        subprocess.run(["skopeo", "--override-arch", arch, "copy", "--quiet",
                        f"oci-archive:{out}:1", f"oci:{layout}:img"], check=True)
        bundle = tmp_path / f"bundle-{arch}"
        subprocess.run(["umoci", "unpack", "--image", f"{layout}:img", str(bundle)],
                       check=True, capture_output=True)
        assert (bundle / "rootfs" / "arch").read_text() == f"linux/{arch} {machine}\n"


def test_cross_compilation_runs_the_build_stage_natively_per_target(
        root: Path, tmp_path: Path) -> None:
    """``FROM --platform=$BUILDPLATFORM`` + ``ARG TARGETARCH``: the build stage runs on
    amd64 for each target (its RUN sees x86_64 and the target's arch); a step that does
    not read the target (``stamp``) runs once and is a cache hit for the second."""
    context = _context(tmp_path, "FROM --platform=$BUILDPLATFORM bb-amd64 AS build\n"
                                 "RUN cat /proc/sys/kernel/random/uuid > /stamp\n"
                                 "ARG TARGETOS TARGETARCH\n"
                                 "RUN echo $TARGETOS/$TARGETARCH built on $(uname -m) > /out\n"
                                 "FROM scratch\nCOPY --from=build /out /stamp /\n")
    local = tmp_path / "local"
    result = run_cli("build", "--progress", "plain", "--platform", BOTH, "-o",
                     f"type=local,dest={local}", str(context), root=root)
    assert (local / "linux_amd64" / "out").read_text() == "linux/amd64 built on x86_64\n"
    assert (local / "linux_arm64" / "out").read_text() == "linux/arm64 built on x86_64\n"
    assert (local / "linux_amd64" / "stamp").read_text() == \
        (local / "linux_arm64" / "stamp").read_text()
    log = result.stdout.decode() + result.stderr.decode()
    assert log.count("RUN cat /proc/sys/kernel/random/uuid") == 2  # listed for each ...
    assert log.count("CACHED") >= 1  # ... and the second time taken from the cache


def test_the_name_serves_from_and_save_by_platform(root: Path, tmp_path: Path) -> None:
    """``FROM multi`` for arm64 takes the arm64 member; ``save --platform`` writes that
    platform's image under the name; a platform it lacks is one line."""
    run_cli("build", "-q", "--platform", BOTH, "-t", "multi",
            str(_context(tmp_path, PER_PLATFORM)), root=root)
    child = _context(tmp_path, "FROM multi\nRUN cat /arch > /from\n", "child")
    out = tmp_path / "child-out"
    run_cli("build", "-q", "--platform", "linux/arm64", "-o", f"type=local,dest={out}",
            str(child), root=root)
    assert (out / "from").read_text() == "linux/arm64 aarch64\n"
    saved = tmp_path / "arm64.tar"
    run_cli("save", "--platform", "linux/arm64", "-o", str(saved), "multi", root=root)
    with tarfile.open(saved) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["multi:latest"] and config["architecture"] == "arm64"
    missing = run_cli("save", "--platform", "linux/s390x", "-o", str(tmp_path / "x.tar"),
                      "multi", root=root, check=False)
    assert missing.returncode == 2 and missing.stderr.decode() == (
        "pybuild: image 'multi' has no linux/s390x image (it has linux/amd64, "
        "linux/arm64)\n")


def test_prune_keeps_every_platform_and_a_new_tag_makes_the_name_single(
        root: Path, tmp_path: Path) -> None:
    run_cli("build", "-q", "--platform", BOTH, "-t", "multi",
            str(_context(tmp_path, PER_PLATFORM)), root=root)
    members = json.loads(run_cli("inspect", "multi", root=root).stdout)[0]["Index"]
    run_cli("prune", root=root)
    for member in members:
        assert image_config(root, member["Id"])["architecture"] in ("amd64", "arm64")
    run_cli("tag", "bb-amd64", "multi", root=root)
    assert "Index" not in json.loads(run_cli("inspect", "multi", root=root).stdout)[0]


@pytest.mark.parametrize(("flags", "message"), [
    (["-o", "type=docker,dest=x.tar"], "-o type=docker: docker exporter does not currently "
                                       "support exporting manifest lists"),
    (["-o", "type=docker"], "-o type=docker: docker exporter does not currently "
                            "support exporting manifest lists"),  # --load, as buildx's
    (["-o", "type=tar,dest=x.tar"], "-o type=tar with several platforms is not supported yet"),
    (["-o", "type=registry"], "unknown output type 'registry' with several platforms: use "
                              "oci or local (and --push to push)"),
    (["--iidfile", "iid"], "--iidfile with several platforms is not supported yet"),
])
def test_what_several_platforms_cannot_do_yet_is_refused_before_building(
        tmp_path: Path, flags: list[str], message: str) -> None:
    context = _context(tmp_path, "FROM scratch\n")
    result = run_cli("build", "--platform", BOTH, *flags, str(context),
                     root=tmp_path / "store", check=False)
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "store" / "pybuild.db").exists() or \
        b"multi" not in (tmp_path / "store" / "pybuild.db").read_bytes()


def test_removing_one_platforms_image_makes_the_name_single(root: Path, tmp_path: Path) -> None:
    """rmi of the arm64 member (by ID, -f): the name can no longer list it, so it names
    the host's image alone; nothing exports a member that is gone."""
    run_cli("build", "-q", "--platform", BOTH, "-t", "multi",
            str(_context(tmp_path, PER_PLATFORM)), root=root)
    members = json.loads(run_cli("inspect", "multi", root=root).stdout)[0]["Index"]
    run_cli("rmi", "-f", members[1]["Id"], root=root)
    doc = json.loads(run_cli("inspect", "multi", root=root).stdout)[0]
    assert "Index" not in doc and doc["Id"] == members[0]["Id"]


def test_no_cache_still_builds_a_shared_step_once(root: Path, tmp_path: Path) -> None:
    """--no-cache: nothing from earlier builds is reused, but a step the platforms share
    is built once in this build, as BuildKit solves a shared vertex once."""
    context = _context(tmp_path, "FROM --platform=$BUILDPLATFORM bb-amd64 AS build\n"
                                 "RUN cat /proc/sys/kernel/random/uuid > /stamp\n"
                                 "FROM scratch\nCOPY --from=build /stamp /\n")
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        run_cli("build", "-q", "--no-cache", "--platform", BOTH, "-o",
                f"type=local,dest={out}", str(context), root=root)
        assert (out / "linux_amd64" / "stamp").read_text() == \
            (out / "linux_arm64" / "stamp").read_text()
    assert (first / "linux_amd64" / "stamp").read_text() != \
        (second / "linux_amd64" / "stamp").read_text()


def test_explain_names_a_platform_change_as_the_miss_reason(tmp_path: Path) -> None:
    """The same COPY built for amd64, then arm64: a miss, and explain says the platform
    changed (as data: input-changed, input platform, old and new)."""
    context = _context(tmp_path, "FROM scratch\nCOPY Dockerfile /d\n")
    store = tmp_path / "store"
    for platform in ("linux/amd64", "linux/arm64"):
        run_cli("build", "-q", "--platform", platform, "-t", "p", str(context), root=store)
    text = run_cli("explain", "p", root=store).stdout.decode()
    assert "cache miss: platform: 'linux/amd64' -> 'linux/arm64'" in text, text
    [step] = json.loads(run_cli("explain", "p", "--format", "json", root=store).stdout)["steps"]
    assert step["reasons"] == [{"code": "input-changed", "params": {
        "input": "platform", "change": "changed", "old": "linux/amd64", "new": "linux/arm64"}}]

