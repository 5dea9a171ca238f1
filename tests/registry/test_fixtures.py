"""The registry fixtures work, checked with plain urllib and skopeo (no pybuild registry code)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from registry_server import (
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    RegistryServer,
    push_image,
    push_multiplatform_index,
    push_with_skopeo,
    skopeo,
    skopeo_args,
)

from builder.registry.auth import parse_challenge


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_plain_registry_push_and_pull_with_skopeo(registry: RegistryServer,
                                                  busybox_oci_archive: Path,
                                                  tmp_path: Path) -> None:
    assert registry.host.startswith("127.0.0.1:") and registry.url == f"http://{registry.host}"
    assert _alive(registry.pid)
    status, _, body = registry.request("GET", "/v2/")
    assert (status, body) == (200, b"{}")

    digest = push_with_skopeo(registry, busybox_oci_archive, "base:1")
    inspected = skopeo(registry, "inspect", *skopeo_args(registry),
                       f"docker://{registry.host}/base:1")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    assert (info["Digest"], info["Architecture"], info["Os"]) == (digest, "amd64", "linux")

    status, headers, manifest = registry.request(
        "GET", "/v2/base/manifests/1", headers={"Accept": MEDIA_MANIFEST})
    assert status == 200 and headers["Docker-Content-Digest"] == digest
    layer = json.loads(manifest)["layers"][0]["digest"]
    assert registry.blob_path(layer).is_file()  # where a test can corrupt it

    pulled = skopeo(registry, "copy", "--quiet", *skopeo_args(registry, "src"),
                    f"docker://{registry.host}/base:1", f"oci:{tmp_path / 'pulled'}:base")
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "pulled" / "blobs" / "sha256" / layer.split(":")[1]).is_file()


def test_registry_stop_is_by_pid_and_idempotent(registry: RegistryServer) -> None:
    registry.stop()  # what the fixture's teardown calls (again)
    assert not _alive(registry.pid) and registry.process.returncode is not None
    registry.stop()


def test_tls_registry_needs_its_ca_and_basic_auth(tls_registry: RegistryServer) -> None:
    reg = tls_registry
    assert reg.url == f"https://{reg.host}"
    assert reg.certs_d is not None and reg.ca_path is not None
    assert (reg.certs_d / reg.host / "ca.crt").read_bytes() == reg.ca_path.read_bytes()

    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen(f"{reg.url}/v2/", timeout=10)
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)

    status, headers, _ = reg.request("GET", "/v2/", auth=False)
    assert status == 401
    assert parse_challenge(headers["WWW-Authenticate"]) == [("basic", {"realm": "pybuild-test"})]
    wrong = base64.b64encode(f"{reg.username}:nope".encode()).decode()
    assert reg.request("GET", "/v2/", auth=False,
                       headers={"Authorization": f"Basic {wrong}"})[0] == 401
    assert reg.request("GET", "/v2/")[0] == 200


def test_tls_registry_with_skopeo(tls_registry: RegistryServer,
                                  busybox_oci_archive: Path) -> None:
    digest = push_with_skopeo(tls_registry, busybox_oci_archive, "secure/busybox:1")
    status, headers, _ = tls_registry.request("HEAD", f"/v2/secure/busybox/manifests/{digest}",
                                              headers={"Accept": MEDIA_MANIFEST})
    assert status == 200 and headers["Docker-Content-Digest"] == digest


def test_token_registry_flow(token_registry: RegistryServer) -> None:
    reg = token_registry
    service = reg.token_service
    assert service is not None
    status, headers, _ = reg.request("GET", "/v2/", auth=False)
    assert status == 401
    [(scheme, params)] = parse_challenge(headers["WWW-Authenticate"])
    assert (scheme, params["realm"], params["service"]) == ("bearer", service.realm,
                                                             service.service)

    # 401 challenge -> token from the realm with basic auth -> 200, by hand.
    basic = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
    request = urllib.request.Request(f"{params['realm']}?service={params['service']}",
                                     headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        token = json.loads(response.read())["token"]
    assert reg.request("GET", "/v2/", auth=False,
                       headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert reg.request("GET", "/v2/", auth=False,
                       headers={"Authorization": f"Bearer {token}x"})[0] == 401

    bad = base64.b64encode(f"{reg.username}:wrong".encode()).decode()
    request = urllib.request.Request(params["realm"], headers={"Authorization": f"Basic {bad}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401
    caught.value.close()

    # Push with a scoped token; anonymous tokens may pull but not push.
    pushed = push_image(reg, "team/app", "1", b"", architecture="amd64")
    scope = "repository:team/app:pull,push"
    assert ("GET", "/token", {"service": service.service, "scope": scope},
            reg.username) in service.requests
    anonymous = service.issue("", [scope], anonymous=True)
    path = f"/v2/team/app/manifests/{pushed['manifest']}"
    auth = {"Authorization": f"Bearer {anonymous}", "Accept": MEDIA_MANIFEST}
    assert reg.request("GET", path, auth=False, headers=auth)[0] == 200
    assert reg.request("POST", "/v2/team/app/blobs/uploads/", b"", auth=False,
                       headers=auth)[0] == 401


def test_token_service_oauth_post(token_registry: RegistryServer) -> None:
    service = token_registry.token_service
    assert service is not None

    def post(form: dict[str, str]) -> tuple[int, dict]:
        data = urllib.parse.urlencode(form).encode()
        try:
            with urllib.request.urlopen(service.realm, data=data, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    status, doc = post({"grant_type": "password", "username": service.username,
                        "password": service.password, "service": service.service,
                        "client_id": "test", "access_type": "offline",
                        "scope": "repository:x/y:pull"})
    assert status == 200 and doc["refresh_token"] == service.refresh_token
    status, doc = post({"grant_type": "refresh_token", "refresh_token": service.refresh_token,
                        "service": service.service, "client_id": "test"})
    assert status == 200 and token_registry.request(
        "GET", "/v2/", auth=False, headers={"Authorization": f"Bearer {doc['access_token']}"}
    )[0] == 200
    assert post({"grant_type": "refresh_token", "refresh_token": "nope"})[0] == 401


def test_multiplatform_index(registry: RegistryServer, tmp_path: Path) -> None:
    digests = push_multiplatform_index(registry, "multi/base", "1")
    status, headers, body = registry.request("GET", "/v2/multi/base/manifests/1",
                                             headers={"Accept": MEDIA_INDEX})
    assert status == 200 and headers["Docker-Content-Digest"] == digests["index"]
    index = json.loads(body)
    assert [(m["digest"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        (digests["linux/amd64"]["manifest"], "amd64"),
        (digests["linux/arm64"]["manifest"], "arm64")]
    assert digests["linux/amd64"]["layer"] != digests["linux/arm64"]["layer"]

    for arch in ("amd64", "arm64"):
        out = skopeo(registry, "--override-arch", arch, "inspect", *skopeo_args(registry),
                     f"docker://{registry.host}/multi/base:1")
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert info["Architecture"] == arch
        assert info["Digest"] == digests["index"]  # skopeo names the index it resolved
        assert info["Layers"] == [digests[f"linux/{arch}"]["layer"]]
    copied = skopeo(registry, "copy", "--quiet", "--all", *skopeo_args(registry, "src"),
                    f"docker://{registry.host}/multi/base@{digests['index']}",
                    f"oci:{tmp_path / 'all'}")
    assert copied.returncode == 0, copied.stderr


@pytest.mark.parametrize("tool", ["htpasswd", "crypt"])
def test_htpasswd_lines_are_bcrypt(tool: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import registry_server

    if tool == "crypt":
        real = registry_server.shutil.which
        monkeypatch.setattr(registry_server.shutil, "which",
                            lambda name: None if name == "htpasswd" else real(name))
    elif registry_server.shutil.which("htpasswd") is None:
        pytest.skip("apache2-utils is not installed (the crypt fallback is tested)")
    user, hashed = registry_server.htpasswd_line("pybuild", "pw").split(":", 1)
    assert user == "pybuild" and hashed.startswith(("$2y$", "$2b$", "$2a$"))


def test_multiplatform_index_behind_auth(tls_registry: RegistryServer,
                                         token_registry: RegistryServer) -> None:
    for reg in (tls_registry, token_registry):
        digests = push_multiplatform_index(reg, "multi/secure", "1")
        status, headers, _ = reg.request("HEAD", "/v2/multi/secure/manifests/1",
                                         headers={"Accept": MEDIA_INDEX},
                                         scope="repository:multi/secure:pull")
        assert status == 200 and headers["Docker-Content-Digest"] == digests["index"]
        assert reg.request("HEAD", "/v2/multi/secure/manifests/1", auth=False)[0] == 401
