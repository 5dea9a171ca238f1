"""``pybuild rmi`` as ``docker rmi`` (issue 14 point 9): by name, full ID or short ID;
the image is deleted with its last name; several names need ``-f`` for an ID.

References: moby/moby ``daemon/images/image_delete.go`` (``ImageDelete``,
``isSingleReference``, ``isImageIDPrefix``, "image is referenced in multiple
repositories"), ``daemon/images/image.go`` (``GetImage``: a name first, then an ID
prefix of any length; "No such image: NAME:latest"), docker/cli
``cli/command/image/remove.go`` (``Untagged:``/``Deleted:`` lines; with ``-f`` a
not-found image does not fail the command).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from builder.store import Store


def _image(store: Store, n: int, *names: str) -> str:
    """An image with no layers (its config is all rmi needs), tagged ``names``."""
    image_id = store.put_image(json.dumps({"n": n, "rootfs": {"type": "layers",
                                                              "diff_ids": []}}).encode(), None)
    for name in names:
        store.tag(name, image_id)
    return image_id


def _rmi(store: Store, *args: str, code: int = 0):
    result = run_cli("rmi", *args, root=store.root, check=False)
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err, err
    return result.stdout.decode().splitlines(), err


def _ids(store: Store) -> set[str]:
    return {image_id for image_id, _top, _created in Store(store.root).images()}


def test_rmi_of_the_last_name_deletes_the_image(store: Store) -> None:
    image_id = _image(store, 1, "app:1")
    out, _ = _rmi(store, "app:1")
    assert out == ["Untagged: app:1", f"Deleted: {image_id}"]
    assert image_id not in _ids(store)
    assert "app" not in run_cli("images", root=store.root).stdout.decode()


def test_rmi_of_one_of_several_names_only_untags(store: Store) -> None:
    image_id = _image(store, 1, "app:1", "app:2")
    out, _ = _rmi(store, "app:1")
    assert out == ["Untagged: app:1"]
    assert image_id in _ids(store)
    assert Store(store.root).resolve_image("app:2") == image_id


def test_rmi_of_a_repositorys_last_tag_takes_its_digest_references(store: Store) -> None:
    digest_ref = "reg.example/app@sha256:" + "d" * 64
    image_id = _image(store, 1, "reg.example/app:1", digest_ref)
    out, _ = _rmi(store, "reg.example/app:1")
    assert out == ["Untagged: reg.example/app:1", f"Untagged: {digest_ref}",
                   f"Deleted: {image_id}"]


@pytest.mark.parametrize("form", ["full", "bare", "short", "one"])
def test_rmi_by_id(store: Store, form: str) -> None:
    image_id = _image(store, 1, "app:1")
    ref = {"full": image_id, "bare": image_id[7:], "short": image_id[7:19],
           "one": image_id[7]}[form]
    out, _ = _rmi(store, ref)
    assert out == ["Untagged: app:1", f"Deleted: {image_id}"]
    assert _ids(store) == set()


def test_rmi_of_an_id_with_several_names_needs_force(store: Store) -> None:
    image_id = _image(store, 1, "app:1", "other:1")
    out, err = _rmi(store, image_id[7:19], code=1)
    assert out == []
    assert err.strip() == (f"pybuild: conflict: unable to delete {image_id[7:19]} (must be "
                           "forced) - image is referenced in multiple repositories")
    assert image_id in _ids(store)
    out, _ = _rmi(store, "-f", image_id[7:19])
    assert out == ["Untagged: app:1", "Untagged: other:1", f"Deleted: {image_id}"]
    assert _ids(store) == set()


def test_rmi_of_an_unknown_image_is_one_line(store: Store) -> None:
    _image(store, 1, "app:1")
    _, err = _rmi(store, "nope", code=1)
    assert err == "pybuild: No such image: nope:latest\n"
    # With -f an unknown name is reported and the others still go (docker's rule).
    out, err = _rmi(store, "-f", "nope", "app:1", code=0)
    assert err == "pybuild: No such image: nope:latest\n"
    assert out[0] == "Untagged: app:1"


def test_rmi_of_an_ambiguous_prefix_is_refused(store: Store) -> None:
    seen: dict[str, str] = {}
    n = 0
    while True:  # 17 images at most share a first hex digit
        image_id = _image(store, n)
        if image_id[7] in seen:
            break
        seen[image_id[7]] = image_id
        n += 1
    _, err = _rmi(store, image_id[7], code=1)
    assert "ambiguous" in err and len(err.strip().splitlines()) == 1, err
    assert image_id in _ids(store) and seen[image_id[7]] in _ids(store)


def test_rmi_drops_the_explain_record(store: Store) -> None:
    from builder.explain.records import load_build, save_build

    image_id = _image(store, 1, "app:1")
    save_build(store, image_id, [])
    _rmi(store, "app:1")
    assert load_build(Store(store.root), image_id) is None


@pytest.mark.root
def test_shared_layers_stay_and_prune_frees_the_rest(store: Store, busybox_tar: Path,
                                                     tmp_path: Path) -> None:
    """Two images on one layer: deleting one keeps the layer the other needs;
    prune then frees the deleted image's config blob, and nothing dangles."""
    root = store.root
    base = run_cli("import", str(busybox_tar), "base", root=root).stdout.decode().strip()
    other = run_cli("import", "-m", "other", str(busybox_tar), "other",
                    root=root).stdout.decode().strip()
    assert base != other
    out, _ = _rmi(store, "other")
    assert out == ["Untagged: other:latest", f"Deleted: {other}"]
    run_cli("prune", root=root)
    fresh = Store(root)
    assert not fresh.has_blob(other) and fresh.has_blob(base)
    top = fresh.image_top_chain(base)
    assert top is not None and fresh.layer_dir(top).is_dir()
    run_cli("save", "-o", str(tmp_path / "base.tar"), "base", root=root)
    report = run_cli("doctor", root=root).stdout.decode()
    assert "ok" in report
