"""Images (a config blob and its top layer) and the names (tags) that point at them.

A name built for several platforms (``--platform a,b``) is a tag of the member for
this host (so ``FROM``, ``run``, ``history`` and ``save`` take it as they take any
image) plus an ``image_indexes`` row listing every member with its platform; the
exports that write an index (``-o type=oci``, ``push``) read the row.  Re-tagging the
name as one image drops the row.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable

import msgspec

from builder.errors import StoreError
from builder.store.blobs import BlobStore
from builder.store.names import normalize_tag


class IndexMember(msgspec.Struct, frozen=True, array_like=True):
    """One platform's image in a name built for several."""

    platform: str
    image_id: str


_MEMBERS = msgspec.json.Decoder(list[IndexMember])


class ImageRows:
    """Image and tag rows over one connection, so that a caller may read and change
    several in one transaction (``remove``: ``with store.transaction() as db``)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def image_of(self, name: str) -> str | None:
        """The image ID a (normalized) name points at."""
        row = self.db.execute("SELECT image_id FROM tags WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def ids_with_prefix(self, prefix: str) -> list[str]:
        """The image IDs starting with ``prefix`` (``sha256:`` and hex digits)."""
        if not re.fullmatch(r"sha256:[0-9a-f]{0,64}", prefix):
            return []
        return [row[0] for row in self.db.execute("SELECT id FROM images WHERE id LIKE ?",
                                                  (prefix + "%",))]

    def names_of(self, image_id: str) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT name FROM tags WHERE image_id = ? ORDER BY name", (image_id,))]

    def drop_name(self, name: str) -> bool:
        self.db.execute("DELETE FROM image_indexes WHERE name = ?", (name,))
        return self.db.execute("DELETE FROM tags WHERE name = ?", (name,)).rowcount > 0

    def index_of(self, name: str) -> list[IndexMember] | None:
        """The members of a (normalized) name built for several platforms, else None."""
        row = self.db.execute("SELECT members FROM image_indexes WHERE name = ?",
                              (name,)).fetchone()
        return None if row is None else _MEMBERS.decode(row[0])

    def drop_image(self, image_id: str) -> None:
        """The image, its names and its explain record (which would describe an image
        that is gone; a rebuild giving the same ID writes it again)."""
        # A name built for several platforms goes with any of its images (the ID's
        # quoted JSON string is unique in the members list).
        self.db.execute("DELETE FROM image_indexes WHERE instr(members, ?) > 0",
                        (f'"{image_id}"',))
        self.db.execute("DELETE FROM tags WHERE image_id = ?", (image_id,))
        self.db.execute("DELETE FROM provenance WHERE image_id = ?", (image_id,))
        self.db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        self.db.execute("DELETE FROM builds WHERE image_id = ?", (image_id,))
        self.db.execute("DELETE FROM build_bases WHERE image_id = ?", (image_id,))


class ImageStore(BlobStore):
    """Image and tag rows; an image's config is a blob."""

    def put_image(self, config: bytes, top_chain: str | None) -> str:
        """Store the image; an image already there (a no-op rebuild) writes nothing."""
        image_id = self.put_blob(config)
        if self.db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
            return image_id
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?)",
                       (image_id, top_chain, time.time()))
        return image_id

    def image_config(self, image_id: str) -> dict:  # type: ignore[type-arg]
        """The config JSON, as the image has it (its shape is the image spec's)."""
        return json.loads(self.read_blob(image_id))  # type: ignore[no-any-return]

    def image_top_chain(self, image_id: str) -> str | None:
        row = self.db.execute("SELECT top_chain FROM images WHERE id = ?",
                              (image_id,)).fetchone()
        if row is None:
            raise StoreError(f"image {image_id} is not in the store")
        return None if row[0] is None else str(row[0])

    def tag(self, name: str, image_id: str) -> None:
        """Point ``name`` at the image (it names one platform's image from now on); a
        name already there writes nothing."""
        name = normalize_tag(name)
        rows = ImageRows(self.db)
        if rows.image_of(name) == image_id and rows.index_of(name) is None:
            return
        with self.transaction() as db:
            db.execute("DELETE FROM image_indexes WHERE name = ?", (name,))
            db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?)", (name, image_id))

    def tag_index(self, name: str, members: list[IndexMember], default: str) -> None:
        """Name the images built for several platforms: ``name`` points at ``default``
        (this host's member) and lists every member; unchanged, it writes nothing."""
        name = normalize_tag(name)
        rows = ImageRows(self.db)
        if rows.image_of(name) == default and rows.index_of(name) == members:
            return
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?)", (name, default))
            db.execute("INSERT OR REPLACE INTO image_indexes VALUES (?, ?)",
                       (name, msgspec.json.encode(members).decode()))

    def index_of(self, name: str) -> list[IndexMember] | None:
        """The members of a name built for several platforms (None: one image)."""
        return ImageRows(self.db).index_of(normalize_tag(name))

    def index_members(self) -> set[str]:
        """Every image some name built for several platforms lists (gc keeps them)."""
        return {member.image_id for (raw,) in self.db.execute(
            "SELECT members FROM image_indexes") for member in _MEMBERS.decode(raw)}

    def resolve_tag(self, name: str) -> str | None:
        """The image ID a name (``repo[:tag]`` or ``repo@digest``) points at; None if
        the name is not in the store.  Never an ID: ``FROM abcd`` names an image."""
        return ImageRows(self.db).image_of(normalize_tag(name))

    def resolve_image(self, name: str) -> str | None:
        """An image ID for a tag, a full ID, or a unique ID prefix; None if unknown."""
        image_id = self.resolve_tag(name)
        if image_id is not None:
            return image_id
        ref = name if name.startswith("sha256:") else f"sha256:{name}"
        if re.fullmatch(r"sha256:[0-9a-f]{4,64}", ref):
            found = ImageRows(self.db).ids_with_prefix(ref)
            if len(found) == 1:
                return found[0]
        return None

    def tags(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT name, image_id FROM tags ORDER BY name"))

    def images(self) -> list[tuple[str, str | None, float]]:
        return list(self.db.execute("SELECT id, top_chain, created FROM images ORDER BY created"))

    def put_provenance(self, image_id: str, names: list[str], predicate: bytes) -> None:
        """Keep the provenance predicate of the build that gave ``image_id`` these names
        (none: under ""); another build of the same image under another name, or with
        another mode, keeps its own."""
        with self.transaction() as db:
            for name in [normalize_tag(n) for n in names] or [""]:
                db.execute("INSERT OR REPLACE INTO provenance VALUES (?, ?, ?)",
                           (image_id, name, predicate))

    def forget_provenance(self, image_id: str, names: list[str]) -> None:
        """A build of ``image_id`` under these names with ``--provenance false``."""
        keys = [(image_id, normalize_tag(n)) for n in names] or [(image_id, "")]
        if any(self.db.execute("SELECT 1 FROM provenance WHERE image_id = ? AND name = ?",
                               key).fetchone() for key in keys):
            with self.transaction() as db:
                db.executemany("DELETE FROM provenance WHERE image_id = ? AND name = ?", keys)

    def provenance_of(self, image_id: str, name: str = "") -> bytes | None:
        """The predicate of the build that named ``image_id`` ``name`` ("": unnamed)."""
        row = self.db.execute("SELECT predicate FROM provenance WHERE image_id = ? AND "
                              "name = ?", (image_id, normalize_tag(name) if name else ""),
                              ).fetchone()
        return None if row is None else bytes(row[0])

    def repo_digest(self, image_id: str) -> str | None:
        """The manifest digest ``image_id`` was pulled by (its ``repo@digest`` name)."""
        row = self.db.execute("SELECT name FROM tags WHERE image_id = ? AND name LIKE "
                              "'%@sha256:%' ORDER BY name LIMIT 1", (image_id,)).fetchone()
        return None if row is None else str(row[0]).rsplit("@", 1)[1]

    def listed_images(self) -> list[tuple[str, str | None, float]]:
        """``images()`` as ``pybuild images`` lists them: another platform's image of a
        name built for several is part of that name, not an untagged image."""
        members = self.index_members()
        tagged = {image_id for _name, image_id in self.tags()}
        return [row for row in self.images() if row[0] in tagged or row[0] not in members]

    def remove_images(self, image_ids: Iterable[str]) -> None:
        """Drop images with their names and their explain records, in one transaction."""
        with self.transaction() as db:
            for image_id in image_ids:
                ImageRows(db).drop_image(image_id)
