"""One image's explain report: its build record joined with what the store knows of each
layer (diff_id, blob digests, wasted bytes), the shape both renderers read."""

from __future__ import annotations

import msgspec

from builder.explain.records import BaseRecord, load_bases, load_build
from builder.explain.steps import StepRecord
from builder.store.store import Store


class LayerFacts(msgspec.Struct):
    """What the store knows about a step's layer."""

    chain_id: str
    diff_id: str
    size: int                         # uncompressed tar bytes
    # (compression, digest, size) per blob
    blobs: list[tuple[str, str, int]] = msgspec.field(default_factory=list)
    wasted: int = 0                   # bytes later layers delete or overwrite


class Report(msgspec.Struct):
    image_id: str | None              # None: a plan (explain --plan), nothing built
    steps: list[StepRecord]
    layers: dict[str, LayerFacts]     # by chain ID
    against: str | None = None        # explain --against: the baseline image
    bases: list[BaseRecord] = msgspec.field(default_factory=list)   # the stages' FROM images

    def facts(self, step: StepRecord) -> LayerFacts | None:
        return self.layers.get(step.layer) if step.layer else None

    @property
    def wasted(self) -> int:
        """Bytes the steps' layers ship but later layers hide (base layers not counted:
        the Dockerfile did not make them)."""
        made = {step.layer for step in self.steps if step.layer}
        return sum(self.layers[chain].wasted for chain in made if chain in self.layers)


def build_report(store: Store, image_id: str) -> Report | None:
    """The report for ``image_id``; None if pybuild did not build it here."""
    steps = load_build(store, image_id)
    if steps is None:
        return None
    from builder.explain.waste import wasted_bytes

    top = store.image_top_chain(image_id)
    store.unpack(top)
    chain = store.chain(top)
    wasted = wasted_bytes([store.layer_dir(record.chain_id) for record in chain])
    blobs = store.layer_blobs_of([record.diff_id for record in chain])
    layers = {record.chain_id: LayerFacts(
        record.chain_id, record.diff_id, record.size,
        [(blob.compression, blob.digest, blob.size) for blob in blobs.get(record.diff_id, [])],
        waste) for record, waste in zip(chain, wasted, strict=True)}
    for step in steps:  # a layer of another stage: not shipped, so nothing wasted
        if step.layer and step.layer not in layers and store.has_layer(step.layer):
            record = store.layer(step.layer)
            layers[step.layer] = LayerFacts(record.chain_id, record.diff_id, record.size)
    return Report(image_id, steps, layers, bases=load_bases(store, image_id))
