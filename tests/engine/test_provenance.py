"""Provenance attestations (issue 19, point 6): an in-toto SLSA v1 statement per platform,
in BuildKit's attestation layout (moby/buildkit docs/attestations/attestation-storage.md,
slsa-definitions.md), validated against the SLSA v1 schema (testdata/slsa).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import jsonschema
import pytest
from helpers import TESTDATA, run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay]
SCHEMA = json.loads((TESTDATA / "slsa" / "provenance-v1.schema.json").read_text())
BOTH = "linux/amd64,linux/arm64"
DOCKERFILE = ("FROM --platform=$BUILDPLATFORM busybox AS build\n"
              "ARG TARGETARCH VERSION\nRUN --mount=type=secret,id=token "
              "echo $VERSION $TARGETARCH > /out\n"
              "FROM scratch\nCOPY --from=build /out /out\n")


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "token").write_text("s3cr3t-t0ken-value\n")
    return ctx


def _blobs(archive: Path) -> tuple[dict, dict[str, bytes]]:
    """(the image index index.json names, every blob by digest)."""
    blobs = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.startswith("blobs/sha256/"):
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                blobs["sha256:" + member.name.rsplit("/", 1)[1]] = data
        top = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    return json.loads(blobs[top["manifests"][0]["digest"]]), blobs


def _build(root: Path, context: Path, out: Path, *extra: str) -> None:
    run_cli("build", "-q", "--platform", BOTH, "-t", "prov:1", "--build-arg",
            "VERSION=v-1.2.3-build-arg-value", "--secret", f"id=token,src={context / 'token'}",
            "-o", f"type=oci,dest={out}", *extra, str(context), root=root)


def test_each_platform_has_a_valid_slsa_attestation_in_buildkits_layout(
        bstore: Path, context: Path, tmp_path: Path) -> None:
    """Default (several platforms): mode=min.  After the images, one attestation manifest
    per image: platform unknown/unknown, reference annotations, an in-toto layer whose
    statement names that image's manifest and validates against SLSA v1."""
    out = tmp_path / "out.tar"
    _build(bstore, context, out)
    index, blobs = _blobs(out)
    images, attestations = index["manifests"][:2], index["manifests"][2:]
    assert [m["platform"]["architecture"] for m in images] == ["amd64", "arm64"]
    assert len(attestations) == 2
    for image, entry in zip(images, attestations, strict=True):
        assert entry["platform"] == {"architecture": "unknown", "os": "unknown"}
        assert entry["annotations"] == {"vnd.docker.reference.digest": image["digest"],
                                        "vnd.docker.reference.type": "attestation-manifest"}
        manifest = json.loads(blobs[entry["digest"]])
        config = json.loads(blobs[manifest["config"]["digest"]])
        assert (config["architecture"], config["os"]) == ("unknown", "unknown")
        [layer] = manifest["layers"]
        assert layer["mediaType"] == "application/vnd.in-toto+json"
        assert layer["annotations"] == {"in-toto.io/predicate-type":
                                        "https://slsa.dev/provenance/v1"}
        raw = blobs[layer["digest"]]
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == layer["digest"]
        doc = json.loads(raw)
        jsonschema.validate(doc, SCHEMA)
        assert doc["subject"][0]["digest"]["sha256"] == image["digest"].split(":", 1)[1]
        arch = image["platform"]["architecture"]
        assert doc["subject"][0]["name"] == f"pkg:docker/prov@1?platform=linux%2F{arch}"
        _check_min_predicate(doc["predicate"], context)


def _check_min_predicate(predicate: dict, context: Path) -> None:
    definition = predicate["buildDefinition"]
    source = definition["externalParameters"]["configSource"]
    dockerfile = (context / "Dockerfile").read_bytes()
    assert source == {"path": "Dockerfile",
                      "digest": {"sha256": hashlib.sha256(dockerfile).hexdigest()}}
    request = definition["externalParameters"]["request"]
    assert request["buildArgNames"] == ["VERSION"] and request["args"] == {}
    assert "secrets" not in request
    assert request["locals"][0]["name"] == "context"
    assert len(request["locals"][0]["digest"]["sha256"]) == 64
    # The build stage ran on the build platform: its base is amd64 for both targets.
    [base] = definition["resolvedDependencies"]
    assert base["uri"] == "pkg:docker/busybox@latest?platform=linux%2Famd64"
    steps = definition["internalParameters"]["pybuild"]["steps"]
    assert steps and all(s["key"].startswith("sha256:") and "instruction" not in s
                         for s in steps)
    assert predicate["runDetails"]["builder"]["version"]["pybuild"]


def test_max_has_build_arg_values_and_secret_ids_never_secret_values(
        bstore: Path, context: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    _build(bstore, context, out, "--provenance", "mode=max")
    _, blobs = _blobs(out)
    assert not any(b"s3cr3t-t0ken-value" in blob for blob in blobs.values())
    statements = [json.loads(b) for b in blobs.values() if b.startswith(b'{"_type"')]
    assert len(statements) == 2
    for doc in statements:
        jsonschema.validate(doc, SCHEMA)
        request = doc["predicate"]["buildDefinition"]["externalParameters"]["request"]
        assert request["args"] == {"build-arg:VERSION": "v-1.2.3-build-arg-value"}
        assert request["secrets"] == [{"id": "token"}]
        steps = doc["predicate"]["buildDefinition"]["internalParameters"]["pybuild"]["steps"]
        assert any("RUN --mount=type=secret" in s["instruction"] for s in steps)


def test_min_never_holds_a_build_arg_value_and_false_attaches_nothing(
        bstore: Path, context: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    _build(bstore, context, out)
    _, blobs = _blobs(out)
    assert not any(b"v-1.2.3-build-arg-value" in blob for blob in blobs.values())
    bare = tmp_path / "bare.tar"
    _build(bstore, context, bare, "--provenance", "false")
    index, _ = _blobs(bare)
    assert len(index["manifests"]) == 2


def test_inspect_provenance_prints_each_platforms_statement(bstore: Path, context: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "out.tar"
    _build(bstore, context, out)
    index, _ = _blobs(out)
    shown = json.loads(run_cli("inspect", "--provenance", "prov:1", root=bstore).stdout)
    assert list(shown) == ["linux/amd64", "linux/arm64"]
    for (platform, doc), image in zip(shown.items(), index["manifests"][:2], strict=True):
        jsonschema.validate(doc, SCHEMA)
        assert doc["subject"][0]["digest"]["sha256"] == image["digest"].split(":", 1)[1], \
            platform
    missing = run_cli("inspect", "--provenance", "busybox", root=bstore, check=False)
    assert missing.returncode == 2 and missing.stderr.decode().startswith(
        "pybuild: image 'busybox' has no provenance")


def test_one_platform_with_provenance_is_an_index_of_image_and_attestation(
        bstore: Path, context: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.tar"
    run_cli("build", "-q", "-t", "prov:one", "--provenance", "mode=min", "--secret",
            f"id=token,src={context / 'token'}", "-o", f"type=oci,dest={out}",
            str(context), root=bstore)
    index, _ = _blobs(out)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "unknown"]


def test_a_bad_provenance_flag_is_one_line(tmp_path: Path, context: Path) -> None:
    result = run_cli("build", "--provenance", "mode=everything", str(context),
                     root=tmp_path / "store", check=False)
    assert result.returncode == 2 and result.stderr.decode() == (
        "pybuild: --provenance mode=everything: expected mode=min or mode=max (and "
        "builder-id=URI), or true, false\n")


def test_each_name_keeps_the_provenance_of_its_own_build(bstore: Path, context: Path,
                                                        tmp_path: Path) -> None:
    """One image built as ``a`` (max, a builder id) and as ``b`` (min): each name shows its
    own build's; ``--provenance false`` on a rebuild of ``a`` leaves it none."""
    for name, mode in (("a", "mode=max,builder-id=https://ci.example/run/7"), ("b", "mode=min")):
        run_cli("build", "-q", "--platform", BOTH, "-t", f"p-{name}", "--provenance", mode,
                "--build-arg", "VERSION=v-9", "--secret", f"id=token,src={context / 'token'}",
                str(context), root=bstore)

    def shown(name: str) -> dict:
        return json.loads(run_cli("inspect", "--provenance", name, root=bstore).stdout)

    a, b = shown("p-a")["linux/arm64"]["predicate"], shown("p-b")["linux/arm64"]["predicate"]
    assert a["buildDefinition"]["internalParameters"]["pybuild"]["mode"] == "max"
    assert a["runDetails"]["builder"]["id"] == "https://ci.example/run/7"
    assert b["buildDefinition"]["internalParameters"]["pybuild"]["mode"] == "min"
    assert b["runDetails"]["builder"]["id"] == ""
    run_cli("build", "-q", "--platform", BOTH, "-t", "p-a", "--provenance", "false",
            "--build-arg", "VERSION=v-9", "--secret", f"id=token,src={context / 'token'}",
            str(context), root=bstore)
    gone = run_cli("inspect", "--provenance", "p-a", root=bstore, check=False)
    assert gone.returncode == 2 and b"has no provenance" in gone.stderr
    assert shown("p-b")["linux/arm64"]["predicate"] == b


@pytest.mark.parametrize(("flags", "message"), [
    (["-o", "type=docker,dest=x.tar"], "-o type=docker cannot hold provenance attestations: "
                                       "use -o type=oci, or --provenance false"),
    (["--iidfile", "iid"], "--iidfile with --provenance (an image index) is not supported yet"),
])
def test_one_platform_with_provenance_refuses_what_an_index_cannot_be(
        tmp_path: Path, context: Path, flags: list[str], message: str) -> None:
    result = run_cli("build", "--provenance", "mode=min", *flags, str(context),
                     root=tmp_path / "store", check=False)
    err = result.stderr.decode()
    assert result.returncode == 2 and err == f"pybuild: {message}\n", err
