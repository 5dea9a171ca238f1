"""Issue 16, point 11: an export asks the store once and reads each layer once.

``write_layout`` (image archives), ``push`` and the cache export get every layer's
descriptor, blob and diff_id from one store call (``Store.export_image`` /
``Store.export_chains``).  These tests count the store's lookups while exporting: each
layer's row is read exactly once, and no per-layer blob, tar-option or chain lookup
happens on the way.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from builder.store.store import Store

_LAYERS = 5


def _image(store: Store, layers: int = _LAYERS) -> tuple[str, list[str]]:
    """An image of ``layers`` layers, one file each; (image ID, chain IDs base first)."""
    from builder.layers.tar_write import layer_diff_id

    parent: str | None = None
    chains = []
    for i in range(layers):
        work = store.tmp_dir("t")
        (work.path / "diff").mkdir(mode=0o755)
        (work.path / "diff" / f"file{i}").write_text(f"layer {i}\n")
        diff_id, size = layer_diff_id(work.path / "diff", lowers=store.lower_dirs(parent))
        parent = store.commit_layer(parent, work, diff_id, size)
        chains.append(parent)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [store.layer(c).diff_id for c in chains]}}).encode()
    return store.put_image(config, parent), chains


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the store's per-layer lookups: ``layer:<chain>`` per row read, and one
    entry per call of the per-layer helpers an export must no longer need."""
    calls: Counter[str] = Counter()
    layer = Store.layer

    def counted_layer(self: Store, chain_id: str):  # type: ignore[no-untyped-def]
        calls[f"layer:{chain_id}"] += 1
        return layer(self, chain_id)
    monkeypatch.setattr(Store, "layer", counted_layer)
    for name in ("layer_blobs", "layer_tar_options", "chain", "lower_dirs"):
        original = getattr(Store, name)

        def wrapped(self: Store, *args: object, _name: str = name,
                    _original: object = original) -> object:
            calls[_name] += 1
            return _original(self, *args)  # type: ignore[operator]
        monkeypatch.setattr(Store, name, wrapped)
    return calls


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_an_image_export_reads_each_layer_once(store: Store, tmp_path: Path,
                                               counted: Counter[str], compression: str) -> None:
    from builder.image.archive import write_layout

    image_id, chains = _image(store)
    for attempt in ("first (blobs made)", "again (blobs reused)"):
        counted.clear()
        out = tmp_path / f"{compression}-{len(attempt)}.tar"
        write_layout(store, [(image_id, ["app"])], str(out), compression=compression)
        assert {f"layer:{c}": 1 for c in chains} == {
            k: v for k, v in counted.items() if k.startswith("layer:")}, attempt
        assert not {k: v for k, v in counted.items() if not k.startswith("layer:")}, attempt
        with tarfile.open(out) as archive:
            manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert len(manifest[0]["Layers"]) == _LAYERS


def test_a_cache_export_reads_a_shared_layer_once(store: Store, tmp_path: Path,
                                                  counted: Counter[str]) -> None:
    from builder.cache import CacheEntry, CacheStore
    from builder.cache.transfer import export_cache
    from builder.layers.summary import ChangeSummary

    _, chains = _image(store)
    cache = CacheStore(store)
    keys = []
    for depth, chain in enumerate(chains):  # one entry per step, each chain a prefix
        key = "sha256:" + f"{depth:x}" * 64
        cache.record(CacheEntry(key=key, parent="p", slot=f"Dockerfile:0:{depth}",
                                inputs=[("parent", "p")], chain_id=chain, created="",
                                changes=ChangeSummary()))
        keys.append(key)
    counted.clear()
    assert export_cache(store, cache, keys, str(tmp_path / "cache")) == _LAYERS
    # The entries' own lookups check that their top layer is still there (has_layer);
    # the export itself reads each layer's row once, though five chains share them.
    assert {f"layer:{c}": 1 for c in chains} == {
        k: v for k, v in counted.items() if k.startswith("layer:")}
    assert not {k: v for k, v in counted.items() if not k.startswith("layer:")}
