"""Image references against distribution/reference's own test vectors, plus pybuild's API."""

from __future__ import annotations

import json
import pickle
import time

import pytest
from helpers import TESTDATA

from builder.errors import ReferenceError, UsageError
from builder.registry import reference as ref_mod
from builder.registry.reference import Reference, parse_raw, parse_reference, validate_digest

VECTORS = json.loads((TESTDATA / "registry" / "reference_vectors.json").read_text())
ERRORS = {
    "empty": ref_mod.ERR_EMPTY,
    "format": ref_mod.ERR_FORMAT,
    "uppercase": ref_mod.ERR_UPPERCASE,
    "too_long": ref_mod.ERR_TOO_LONG,
    "digest_length": ref_mod.ERR_DIGEST_LENGTH,
    "digest_unsupported": ref_mod.ERR_DIGEST_UNSUPPORTED,
}
SHA = "sha256:" + "ab" * 32


def _ids(cases: list[dict], key: str = "input") -> list[str]:
    return [c[key][:60] or "<empty>" for c in cases]


# -- upstream vectors: the raw Parse ---------------------------------------------

@pytest.mark.parametrize("case", VECTORS["parse"], ids=_ids(VECTORS["parse"]))
def test_parse_vectors(case: dict) -> None:
    if "err" in case:
        with pytest.raises(ReferenceError) as caught:
            parse_raw(case["input"])
        assert caught.value.reason == ERRORS[case["err"]]
        return
    domain, path, tag, digest = parse_raw(case["input"])
    assert (f"{domain}/{path}" if domain else path) == case["repository"]
    assert domain == case["domain"]
    assert (tag or "") == case["tag"]
    assert (digest or "") == case["digest"]
    # String() round-trips the input exactly.
    text = (f"{domain}/" if domain else "") + path
    text += (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    assert text == case["input"]


@pytest.mark.parametrize("case", VECTORS["name_failure"], ids=_ids(VECTORS["name_failure"]))
def test_name_failure_vectors(case: dict) -> None:
    # WithName: a bare name; a tag or digest makes it invalid too.
    try:
        _, _, tag, digest = parse_raw(case["input"])
    except ReferenceError as err:
        if case["err"] == "too_long":
            assert err.reason == ref_mod.ERR_TOO_LONG
        return
    assert tag is not None or digest is not None


@pytest.mark.parametrize("case", VECTORS["domain_and_path"], ids=_ids(VECTORS["domain_and_path"]))
def test_domain_and_path_vectors(case: dict) -> None:
    domain, path, tag, digest = parse_raw(case["input"])
    assert (domain, path, tag, digest) == (case["domain"], case["path"], None, None)


# -- upstream vectors: ParseNormalizedNamed (what docker pull uses) ---------------

@pytest.mark.parametrize("name", VECTORS["valid_names"])
def test_valid_names(name: str) -> None:
    parse_reference(name)


@pytest.mark.parametrize("name", VECTORS["invalid_names"], ids=[n[:60] for n in
                                                                VECTORS["invalid_names"]])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ReferenceError):
        parse_reference(name)


def _repo_info_cases() -> list[tuple[str, dict]]:
    cases = []
    for case in VECTORS["repository_info"]:
        for text in (case["familiar_name"], case["full_name"], case["ambiguous_name"]):
            if text:
                cases.append((text, case))
    return cases


@pytest.mark.parametrize(("text", "case"), _repo_info_cases(),
                         ids=[t for t, _ in _repo_info_cases()])
def test_repository_info_vectors(text: str, case: dict) -> None:
    ref = parse_reference(text, default_tag=None)
    assert ref.familiar() == case["familiar_name"]
    assert str(ref) == case["full_name"]
    assert ref.name == case["full_name"]
    assert ref.registry == case["domain"]
    assert ref.repository == case["remote_name"]


@pytest.mark.parametrize("case", VECTORS["any_reference"], ids=_ids(VECTORS["any_reference"]))
def test_any_reference_vectors(case: dict) -> None:
    assert str(parse_reference(case["input"], default_tag=None)) == case["equivalent"]


@pytest.mark.parametrize("case", VECTORS["normalized_split"],
                         ids=_ids(VECTORS["normalized_split"]))
def test_normalized_split_vectors(case: dict) -> None:
    ref = parse_reference(case["input"])
    assert (ref.registry, ref.repository) == (case["domain"], case["path"])


@pytest.mark.parametrize("case", VECTORS["docker_ref"], ids=_ids(VECTORS["docker_ref"]))
def test_docker_ref_vectors(case: dict) -> None:
    ref = parse_reference(case["input"])
    assert str(ref) == case["expected"]
    parse_raw(str(ref))  # the normalised form is itself a valid reference


def test_tag_and_digest_vector() -> None:
    case = VECTORS["tag_and_digest"][0]
    ref = parse_reference(case["input"])
    assert str(ref) == case["full"]
    assert ref.familiar() == case["familiar"]
    assert ref.tag == "latest"
    assert ref.digest is not None


# -- pybuild's API -----------------------------------------------------------------

def test_defaults_and_forms() -> None:
    ref = parse_reference("busybox")
    assert ref == Reference("docker.io", "library/busybox", "latest", None)
    assert ref.name == "docker.io/library/busybox"
    assert ref.familiar() == "busybox:latest"
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.api_host == "registry-1.docker.io"

    local = parse_reference("127.0.0.1:5000/base:1")
    assert (local.registry, local.repository, local.tag) == ("127.0.0.1:5000", "base", "1")
    assert local.familiar() == "127.0.0.1:5000/base:1"
    assert local.api_host == "127.0.0.1:5000"

    assert parse_reference("index.docker.io/library/x").name == "docker.io/library/x"
    assert parse_reference("localhost/x").registry == "localhost"
    assert parse_reference("[::1]:5000/x").api_host == "[::1]:5000"


def test_digest_only_gets_no_default_tag() -> None:
    ref = parse_reference(f"busybox@{SHA}")
    assert (ref.tag, ref.digest) == (None, SHA)
    assert ref.familiar() == f"busybox@{SHA}"
    assert parse_reference("busybox", default_tag=None).tag is None
    assert parse_reference("busybox", default_tag="1.36").tag == "1.36"




def test_error_names_the_text_in_one_line() -> None:
    with pytest.raises(ReferenceError) as caught:
        parse_reference("Busybox:1")
    err = caught.value
    assert isinstance(err, UsageError) and err.exit_code == 2
    assert str(err) == ("'Busybox:1': invalid reference format: "
                        "repository name (library/Busybox) must be lowercase")
    with pytest.raises(ReferenceError) as caught:
        parse_reference("example.com/Busybox:1")
    assert str(caught.value).startswith("'example.com/Busybox:1': ")
    with pytest.raises(ReferenceError) as caught:
        parse_reference("busybox\n:latest")
    assert "\n" not in str(caught.value)
    with pytest.raises(ReferenceError, match="invalid reference format"):
        parse_reference("busybox:latest\n")  # no `$`-before-newline slip
    with pytest.raises(ReferenceError, match="not a valid registry host"):
        parse_reference("foo_bar.com/x")
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), str(copy)) == (ReferenceError, str(err))


@pytest.mark.parametrize(("digest", "reason"), [
    ("sha256:../../../../etc/passwd", ref_mod.ERR_DIGEST_FORMAT),
    ("sha256:" + "AB" * 32, ref_mod.ERR_DIGEST_FORMAT),
    ("sha256:" + "a" * 63, ref_mod.ERR_DIGEST_LENGTH),
    ("sha256:" + "a" * 65, ref_mod.ERR_DIGEST_LENGTH),
    ("md5:" + "a" * 32, ref_mod.ERR_DIGEST_UNSUPPORTED),
    ("sha256:" + "a" * 64 + "\n", ref_mod.ERR_DIGEST_FORMAT),
    ("sha256:", ref_mod.ERR_DIGEST_FORMAT),
    (":" + "a" * 64, ref_mod.ERR_DIGEST_FORMAT),
    ("a" * 64, ref_mod.ERR_DIGEST_FORMAT),
    ("SHA256:" + "a" * 64, ref_mod.ERR_DIGEST_FORMAT),
    ("sha256:" + "a" * 62 + "/x", ref_mod.ERR_DIGEST_FORMAT),
])
def test_validate_digest_rejects(digest: str, reason: str) -> None:
    # Catalogue M03: checked before any path join or URL build.
    with pytest.raises(ReferenceError) as caught:
        validate_digest(digest)
    assert caught.value.reason == reason


def test_validate_digest_accepts() -> None:
    assert validate_digest(SHA) == SHA
    assert validate_digest("sha512:" + "0f" * 64) == "sha512:" + "0f" * 64


@pytest.mark.parametrize("text", ["a" * 20000 + "!", "a-" * 10000 + "!",
                                  "a." * 5000 + "/" + "b" * 300 + "!", "a/" * 5000 + "A",
                                  "a" * 300 + ":" + "t" * 200, "[" + "1:" * 5000 + "/x"])
def test_hostile_lengths_fail_fast(text: str) -> None:
    start = time.monotonic()
    with pytest.raises(ReferenceError):
        parse_reference(text)
    assert time.monotonic() - start < 1.0
