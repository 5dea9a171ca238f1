"""What a step's layer changed, in the one shape every floor uses.

The snapshot commit makes a ``ChangeSummary`` from its diff walk; the cache record
keeps it, the build record keeps it, and explain renders it (and writes it as JSON).
It holds counts and bytes, and the few largest files (paths as the image sees them),
never the whole list: a step that writes 100,000 files stays a small record.

Plain slotted classes, not dataclasses: a cached rebuild reads these from every cache
hit, and the cached path's import budget counts each dataclass (~1 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

LARGEST_KEPT = 5   # how many of the largest files a summary names


class ChangeKind(StrEnum):
    """How a path differs from the layers below it."""

    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


class ChangedFile:
    """One path a step added, modified or deleted, and its size in the layer."""

    __slots__ = ("kind", "path", "size")

    def __init__(self, path: str, size: int, kind: ChangeKind) -> None:
        self.path, self.size, self.kind = path, size, kind

    def to_record(self) -> dict[str, str | int]:
        return {"path": self.path, "size": self.size, "kind": self.kind.value}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChangedFile) and (self.path, self.size, self.kind) == (
            other.path, other.size, other.kind)

    def __repr__(self) -> str:
        return f"ChangedFile({self.path!r}, {self.size}, {self.kind.value})"


class ChangeSummary:
    """Counts of what a layer added, modified and deleted, its bytes, its largest files."""

    __slots__ = ("added", "deleted", "largest", "modified", "size")

    def __init__(self, added: int = 0, modified: int = 0, deleted: int = 0, size: int = 0,
                 largest: tuple[ChangedFile, ...] = ()) -> None:
        self.added, self.modified, self.deleted = added, modified, deleted
        self.size = size            # bytes of regular-file content the layer carries
        self.largest = largest      # the largest few, biggest first

    @property
    def empty(self) -> bool:
        """No file changed: the step's layer is BuildKit's empty layer."""
        return not (self.added or self.modified or self.deleted)

    def to_record(self) -> dict[str, object]:
        """The JSON the cache entry, the build record and explain's output keep."""
        return {"added": self.added, "modified": self.modified, "deleted": self.deleted,
                "bytes": self.size, "largest": [f.to_record() for f in self.largest]}

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> ChangeSummary:
        """Read a record this class wrote (the store's own rows: trusted, but maybe from
        an older pybuild without ``largest``).  Untrusted input (``--cache-from``) goes
        through ``cache.importer``'s checks first."""
        def count(name: str) -> int:
            value = record.get(name, 0)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0
        largest: list[ChangedFile] = []
        listed = record.get("largest")
        for item in listed if isinstance(listed, list) else []:
            if isinstance(item, dict) and isinstance(item.get("path"), str) \
                    and isinstance(item.get("size"), int) \
                    and item.get("kind") in _KINDS:
                largest.append(ChangedFile(item["path"], item["size"], _KINDS[item["kind"]]))
        return cls(count("added"), count("modified"), count("deleted"), count("bytes"),
                   tuple(largest[:LARGEST_KEPT]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChangeSummary) and self.to_record() == other.to_record()

    def __repr__(self) -> str:
        return (f"ChangeSummary(added={self.added}, modified={self.modified}, "
                f"deleted={self.deleted}, size={self.size})")


_KINDS = {kind.value: kind for kind in ChangeKind}
