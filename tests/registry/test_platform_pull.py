"""FROM and ``pybuild pull`` pick the requested platform's manifest from an index.

Against a real registry on 127.0.0.1 (conftest.py) holding an OCI index with a busybox
linux/amd64 image and a one-file linux/arm64/v8 image (``push_multiplatform_index``;
the arm64 contents are fake, which is fine: nothing runs on them).

References: containerd/platforms ``compare.go`` (``Only``: exact first, then what the
platform also runs: amd64 takes 386); moby/buildkit
``frontend/dockerfile/dockerfile2llb/convert.go`` (``resolveBaseImage``: the image is
resolved for the stage's platform; the config records the target platform);
moby/moby ``builder/builder-next/adapters/containerimage/pull.go``
(``ResolveModePreferLocal``: a local image of another platform is not used, the
registry is asked).
"""

from __future__ import annotations

import os
from pathlib import Path

import emulated
import pytest
from helpers import image_config, run_cli
from registry_server import (
    MEDIA_INDEX,
    push_image,
    push_multiplatform_index,
    put_manifest,
    tar_bytes,
)

from builder.store import Store

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds mount overlay"),
]


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    (context / "f").write_text("from the context\n")
    return context


def test_from_an_index_takes_the_target_platforms_manifest(tmp_path, registry) -> None:
    """``--platform linux/arm64``: FROM pulls the arm64 manifest (the index says
    ``arm64/v8``, which normalises to arm64); COPY and ENV need no emulation; the config
    records linux/arm64.  Without --platform the same Dockerfile gets the amd64 one."""
    digests = push_multiplatform_index(registry, "c-multi", "1")
    name = f"{registry.host}/c-multi:1"
    context = _context(tmp_path, f"FROM {name}\nCOPY f /f\nENV BUILT=yes\n")
    root = tmp_path / "store"
    out = tmp_path / "arm"
    run_cli("build", "-q", "-t", "c-arm", "--platform", "linux/arm64", "-o",
            f"type=local,dest={out}", str(context), root=root)
    assert (out / "hello.txt").read_text() == "this is the arm64 image\n"
    assert not (out / "bin").exists()
    config = image_config(root, "c-arm")
    assert (config["os"], config["architecture"], config.get("variant")) == \
        ("linux", "arm64", None)
    assert config["rootfs"]["diff_ids"][0] == digests["linux/arm64"]["diff_id"]

    out = tmp_path / "amd"
    run_cli("build", "-q", "-t", "c-amd", "-o", f"type=local,dest={out}", str(context),
            root=root)
    assert (out / "bin" / "busybox").exists() and not (out / "hello.txt").exists()
    config = image_config(root, "c-amd")
    assert config["architecture"] == "amd64"
    assert config["rootfs"]["diff_ids"][0] == digests["linux/amd64"]["diff_id"]


def test_a_run_on_the_arm64_image_fails_before_anything_is_pulled(tmp_path, registry) -> None:
    push_multiplatform_index(registry, "c-multi", "2")
    context = _context(tmp_path, f"FROM {registry.host}/c-multi:2\nRUN cat /hello.txt\n")
    root = tmp_path / "store"
    with emulated.arm64_switched_off():  # as on a machine without emulation
        result = run_cli("build", "-t", "c-never", "--platform", "linux/arm64", str(context),
                         root=root, check=False)
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err
    assert err.count("\n") == 1 and "Dockerfile:2: RUN in stage 'stage-0' needs platform " \
        "linux/arm64" in err, err
    store = Store(root)
    try:
        assert store.resolve_image(f"{registry.host}/c-multi:2") is None
        assert store.resolve_image("c-never") is None
    finally:
        store.close()


def test_a_stored_image_of_another_platform_is_pulled_again_for_the_target(tmp_path,
                                                                           registry) -> None:
    """The store holds ``c-multi:3`` as amd64 (``pybuild pull``); an arm64 build pulls
    the arm64 manifest for its FROM, as BuildKit in dockerd does, and leaves the name on
    the amd64 image (the store keeps one image per name until issue 19); an amd64
    build then still uses the stored amd64 image and its RUN runs."""
    digests = push_multiplatform_index(registry, "c-multi", "3")
    name = f"{registry.host}/c-multi:3"
    root = tmp_path / "store"
    run_cli("pull", "--platform", "linux/amd64", name, root=root)
    amd = image_config(root, name)
    assert amd["architecture"] == "amd64"
    context = _context(tmp_path, f"FROM {name}\nCOPY f /f\n")
    out = tmp_path / "arm"
    run_cli("build", "-q", "-t", "c-arm", "--platform", "linux/arm64", "-o",
            f"type=local,dest={out}", str(context), root=root)
    assert (out / "hello.txt").exists()
    assert image_config(root, name) == amd  # the name still names the amd64 image
    by_digest = f"{registry.host}/c-multi@{digests['linux/arm64']['manifest']}"
    assert image_config(root, by_digest)["architecture"] == "arm64"

    (context / "Dockerfile").write_text(f"FROM {name}\nRUN test -x /bin/busybox\n")
    run_cli("build", "-q", "-t", "c-amd", str(context), root=root)
    assert image_config(root, "c-amd")["architecture"] == "amd64"


def test_from_platform_in_one_stage_of_an_amd64_build(tmp_path, registry) -> None:
    """``FROM --platform=linux/arm64`` pulls that stage's manifest; the stage runs
    nothing, so the amd64 build that copies from it (and RUNs on amd64) succeeds."""
    push_multiplatform_index(registry, "c-multi", "4")
    name = f"{registry.host}/c-multi:4"
    context = _context(tmp_path, f"FROM --platform=linux/arm64 {name} AS arm\n"
                                 f"FROM {name}\nCOPY --from=arm /hello.txt /hello.txt\n"
                                 "RUN grep -q arm64 /hello.txt\n")
    root = tmp_path / "store"
    run_cli("build", "-q", "-t", "c-mixed", "--platform", "linux/amd64", str(context),
            root=root)
    assert image_config(root, "c-mixed")["architecture"] == "amd64"


def _indexes(registry, repo: str, platforms: tuple[tuple[str, str | None], ...]):  # type: ignore[no-untyped-def]
    """One small image per (arch, variant), labelled ``archvariant``; and ``index(tag,
    *labels)``, which puts an index of those images and returns its reference."""
    images = {}
    for arch, variant in platforms:
        label = f"{arch}{variant or ''}"
        images[label] = push_image(registry, repo, label, tar_bytes({"which": label.encode()}),
                                   architecture=arch, variant=variant)

    def index(tag: str, *labels: str) -> str:
        doc = {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
               "manifests": [images[label]["descriptor"] for label in labels]}
        put_manifest(registry, repo, tag, doc, MEDIA_INDEX)
        return f"{registry.host}/{repo}:{tag}"

    return images, index


def test_pull_ranks_index_entries_like_containerd_only(tmp_path, registry) -> None:
    """An exact match wins over a compatible one; linux/amd64 takes a linux/386 image
    when that is all there is; linux/amd64/v2 does not take amd64/v3."""
    images, index = _indexes(registry, "c-rank", (("386", None), ("amd64", "v3"),
                                                  ("amd64", None)))
    root = tmp_path / "store"
    cases = [(index("all", "386", "amd64v3", "amd64"), "linux/amd64", "amd64"),
             (index("all", "386", "amd64v3", "amd64"), "linux/amd64/v3", "amd64v3"),
             (index("all", "386", "amd64v3", "amd64"), "linux/amd64/v2", "amd64"),
             (index("old", "386"), "linux/amd64", "386"),
             (index("old", "386"), "linux/386", "386")]
    for ref, platform, label in cases:
        run_cli("pull", "--platform", platform, ref, root=root)
        assert Store(root).resolve_image(ref) == images[label]["config"], (platform, label)
    failed = run_cli("pull", "--platform", "linux/arm64", index("x86", "386", "amd64"),
                     root=root, check=False)
    err = failed.stderr.decode()
    assert failed.returncode == 1 and err.count("\n") == 1
    assert "no image for platform linux/arm64 (the index offers linux/386, linux/amd64)" in err


def test_a_single_manifest_of_another_platform_is_used_with_a_warning(tmp_path,
                                                                      registry) -> None:
    """A plain manifest (no index) is taken whatever its platform, as containerd's
    resolver does for the root manifest; BuildKit then warns InvalidBaseImagePlatform
    (dockerfile2llb/validations.go).  Without --platform the config keeps the base's
    platform; with --platform linux/amd64 it records amd64 (convert.go).  sparc64: a
    platform nothing here emulates (an emulated one becomes the stage's platform,
    tests/engine/test_emulation.py)."""
    if os.uname().machine != "x86_64":
        pytest.skip("the expected warning names this host's platform, linux/amd64")
    push_image(registry, "c-single", "1", tar_bytes({"only.txt": b"sparc64 only\n"}),
               architecture="sparc64")
    name = f"{registry.host}/c-single:1"
    context = _context(tmp_path, f"FROM {name}\nCOPY f /f\n")
    root = tmp_path / "store"
    result = run_cli("build", "--progress", "plain", "-t", "c-implicit", str(context),
                     root=root)
    output = result.stdout.decode() + result.stderr.decode()
    assert (f"WARNING: InvalidBaseImagePlatform: Base image {name} was pulled with platform "
            '"linux/sparc64", expected "linux/amd64" for current build (line 1)') in output
    assert image_config(root, "c-implicit")["architecture"] == "sparc64"
    run_cli("build", "-q", "-t", "c-explicit", "--platform", "linux/amd64", str(context),
            root=root)
    assert image_config(root, "c-explicit")["architecture"] == "amd64"


def test_an_emulated_platform_single_manifest_becomes_the_stages(
        tmp_path, registry, arm64_emulation, busybox_arm64_tar: Path) -> None:
    """The same plain manifest for arm64 on a host that emulates arm64: BuildKit's worker
    lists the emulated platforms, so autoDetectPlatform (convert.go) makes the stage
    arm64, with no InvalidBaseImagePlatform, and its RUN runs the arm64 busybox.
    TARGETARCH stays the requested target's (defaultArgs are computed before the
    stage's platform is detected)."""
    if os.uname().machine != "x86_64":
        pytest.skip("arm64 is native on an arm64 host")
    push_image(registry, "c-arm", "1", busybox_arm64_tar.read_bytes(), architecture="arm64")
    context = _context(tmp_path, f"FROM {registry.host}/c-arm:1\nARG TARGETARCH\n"
                                 "RUN echo $TARGETARCH $(uname -m) > /arch\n")
    root, out = tmp_path / "store", tmp_path / "out"
    result = run_cli("build", "--progress", "plain", "-t", "c-emu", "-o",
                     f"type=local,dest={out}", str(context), root=root)
    assert b"InvalidBaseImagePlatform" not in result.stdout + result.stderr
    assert (out / "arch").read_text() == "amd64 aarch64\n"
    assert image_config(root, "c-emu")["architecture"] == "arm64"


def test_the_digest_chosen_from_an_index_is_in_explain_and_history(tmp_path,
                                                                   registry) -> None:
    """FROM an index, built for arm64: explain names the arm64 entry's manifest digest
    (the one pulled), in text and JSON (docs/explain.schema.json); history shows the
    image that entry gave at the base's last row."""
    import json

    pushed = push_multiplatform_index(registry, "c-chosen", "1")
    context = _context(tmp_path, f"FROM {registry.host}/c-chosen:1\nCOPY f /f\n")
    root = tmp_path / "store"
    run_cli("build", "-q", "-t", "c-arm", "--platform", "linux/arm64", str(context),
            root=root)
    arm = pushed["linux/arm64"]["manifest"]
    text = run_cli("explain", "c-arm", root=root).stdout.decode()
    assert f"base {registry.host}/c-chosen:1 (linux/arm64, stage stage-0): {arm}" in text, text
    doc = json.loads(run_cli("explain", "c-arm", "--format", "json", root=root).stdout)
    [base] = doc["bases"]
    assert (base["platform"], base["digest"]) == ("linux/arm64", arm)
    chosen = Store(root).resolve_image(f"{registry.host}/c-chosen@{arm}")
    assert base["image"] == chosen
    # history: the base's last entry carries the image chosen, as docker shows a base
    # image it has (the arm64 entry's, not the amd64 one's).
    table = run_cli("history", "--no-trunc", "c-arm", root=root).stdout.decode()
    ids = [line.split()[0] for line in table.splitlines()[1:]]
    assert ids[1] == chosen and ids[0] == Store(root).resolve_image("c-arm"), table


def test_pull_ranks_arm_variants_like_containerd_only(tmp_path, registry) -> None:
    """arm/v7-style variants (containerd platforms.Only, as BuildKit matches them):
    ``linux/arm`` is arm/v7; arm/v7 takes arm/v6 when that is all there is, never the
    reverse; arm64 takes arm/v7."""
    images, index = _indexes(registry, "c-arm", (("arm", "v6"), ("arm", "v7"),
                                                 ("arm64", "v8")))
    root = tmp_path / "store"
    cases = [(index("all", "armv6", "armv7", "arm64v8"), "linux/arm/v7", "armv7"),
             (index("all", "armv6", "armv7", "arm64v8"), "linux/arm", "armv7"),
             (index("all", "armv6", "armv7", "arm64v8"), "linux/arm/v6", "armv6"),
             (index("all", "armv6", "armv7", "arm64v8"), "linux/arm64", "arm64v8"),
             (index("v6", "armv6"), "linux/arm/v7", "armv6"),
             (index("v7", "armv7"), "linux/arm64", "armv7")]
    for ref, platform, label in cases:
        run_cli("pull", "--platform", platform, ref, root=root)
        assert Store(root).resolve_image(ref) == images[label]["config"], (platform, label)
    failed = run_cli("pull", "--platform", "linux/arm/v6", index("v7only", "armv7"),
                     root=root, check=False)
    assert failed.returncode == 1 and "no image for platform linux/arm/v6" in \
        failed.stderr.decode()
