"""``pybuild rmi``: remove an image's names, and the image once nothing names it.

As ``docker rmi`` (moby/moby ``daemon/images/image_delete.go``, docker/cli
``cli/command/image/remove.go``):

- ``rmi NAME`` removes that tag; when it was the repository's last tag, the
  repository's digest references (``NAME@sha256:...``, left by a pull) go with it;
  when no name is left, the image is deleted (``Untagged:`` then ``Deleted:``).
- ``rmi ID`` (full, with or without ``sha256:``, or a unique prefix of any length)
  removes every name and the image, but refuses an image with several tags
  ("referenced in multiple repositories") unless ``-f``.
- An unknown name is ``No such image: NAME``; ``-f`` reports it and carries on.

Deleting removes the image's row, its names and its ``explain`` record, in one
transaction.  Its layers and blobs stay while another image or the build cache
needs them; the rest is freed by ``pybuild prune``, which keeps what is live
(``gc.py``).  Docker has no build cache in its image store and frees layers at once.
"""

from __future__ import annotations

import re

import msgspec

from builder.errors import StoreError
from builder.store.images import ImageRows
from builder.store.store import Store, normalize_tag

_HEX = re.compile(r"[0-9a-f]{1,64}")


class NoSuchImage(StoreError):
    """The name or ID is not in the store (``rmi -f`` reports it and carries on)."""


class Record(msgspec.Struct, frozen=True):
    """One line of ``rmi``'s output, as docker prints them."""

    action: str   # "Untagged" or "Deleted"
    name: str

    def __str__(self) -> str:
        return f"{self.action}: {self.name}"


def remove_image(store: Store, ref: str, *, force: bool = False) -> list[Record]:
    """Remove ``ref`` (a name or an image ID); returns what was untagged and deleted."""
    with store.transaction() as db:
        rows = ImageRows(db)
        image_id, by_id = _find(rows, ref)
        names = rows.names_of(image_id)
        if not by_id:
            records = _untag(rows, normalize_tag(ref), names)
            if rows.names_of(image_id):
                return records  # other names keep the image
        else:
            if not force and len(names) > 1 and not _single_reference(names):
                raise StoreError(f"conflict: unable to delete {image_id[7:19]} (must be forced)"
                                 " - image is referenced in multiple repositories")
            records = []
            for name in names:
                rows.drop_name(name)
                records.append(Record("Untagged", name))
        rows.drop_image(image_id)
        records.append(Record("Deleted", image_id))
    return records


def _find(rows: ImageRows, ref: str) -> tuple[str, bool]:
    """(image ID, whether ``ref`` is that ID or a prefix of it): a name first, then
    an ID (moby ``GetImage`` then ``isImageIDPrefix``)."""
    named = rows.image_of(normalize_tag(ref))
    bare = ref.removeprefix("sha256:")
    if named is not None:
        return named, named.startswith(ref) or named[7:].startswith(ref)
    if _HEX.fullmatch(bare):
        found = rows.ids_with_prefix(f"sha256:{bare}")
        if len(found) > 1:
            raise StoreError(f"{ref}: ambiguous image ID prefix: it matches {len(found)} "
                             "images; give more digits")
        if found:
            return found[0], True
    shown = f"sha256:{bare}" if len(bare) == 64 and _HEX.fullmatch(bare) else \
        normalize_tag(ref)
    raise NoSuchImage(f"No such image: {shown}")


def _repository(name: str) -> str:
    """``app:1`` -> ``app``; ``reg:5000/app@sha256:...`` -> ``reg:5000/app``."""
    return name.split("@", 1)[0] if "@" in name else name.rsplit(":", 1)[0]


def _untag(rows: ImageRows, name: str, names: list[str]) -> list[Record]:
    """Remove tag ``name``; and, if it was its repository's last tag, the digest
    references of that repository (moby: they would only name a dangling image)."""
    rows.drop_name(name)
    records = [Record("Untagged", name)]
    if "@" in name:
        return records
    left = [other for other in names if other != name]
    repository = _repository(name)
    if any("@" not in other and _repository(other) == repository for other in left):
        return records
    for other in left:
        if "@" in other and _repository(other) == repository:
            rows.drop_name(other)
            records.append(Record("Untagged", other))
    return records


def _single_reference(names: list[str]) -> bool:
    """At most one tag, and every digest reference in that tag's repository
    (moby ``isSingleReference``)."""
    tags = [name for name in names if "@" not in name]
    digests = {_repository(name) for name in names if "@" in name}
    if len(tags) > 1:
        return False
    repository = _repository(tags[0] if tags else names[0])
    return digests == {repository} or (not digests and len(tags) == 1)
