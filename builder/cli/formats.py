"""``--format`` and ``--no-trunc`` of ``images``, ``history`` and ``inspect``, as docker's.

A format is ``json`` (one object per line for a listing: docker 24+), ``table [TEMPLATE]``
(a header row, columns aligned by Go's tabwriter as docker's ``minwidth 10, padding 3``),
or a Go template run once per row.  ``\\t`` and ``\\n`` in the flag are a tab and a
newline, as docker's ``preFormat``.  A row's fields are docker's, with its words:
12-hex IDs, ``CreatedBy`` cut to 45 characters with an ellipsis, sizes with three
significant digits, ``About an hour ago``; ``--no-trunc`` keeps IDs and ``CreatedBy``
whole.  Every line printed passes ``textsafe.printable``.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from builder.cli.gofuncs import GoMap, Row, Zero, go_json
from builder.cli.gotemplate import Node, execute, parse
from builder.errors import PybuildError
from builder.textsafe import printable

if TYPE_CHECKING:
    from builder.store import Store
    from builder.store.layers import LayerRecord


class Listing(msgspec.Struct, frozen=True):
    """What a listing verb prints: docker's default table and its column headers."""

    default_table: str
    headers: dict[str, str]


IMAGES = Listing("{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}", {
    "Containers": "CONTAINERS", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED",
    "Digest": "DIGEST", "ID": "IMAGE ID", "Repository": "REPOSITORY",
    "SharedSize": "SHARED SIZE", "Size": "SIZE", "Tag": "TAG", "UniqueSize": "UNIQUE SIZE",
    "VirtualSize": "VIRTUAL SIZE"})
HISTORY = Listing("{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}", {
    "Comment": "COMMENT", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
    "CreatedSince": "CREATED", "ID": "IMAGE", "Size": "SIZE"})


def _parse_flag(template: str) -> tuple[Node, ...]:
    try:
        return parse(template.replace("\\t", "\t").replace("\\n", "\n"))
    except PybuildError as err:
        raise err.within("--format") from None


def render_rows(fmt: str, listing: Listing, rows: Iterable[Row]) -> str:
    """The output of ``--format FMT`` for ``rows`` (printable, one line per row)."""
    fmt = fmt or "table"  # docker: an empty --format is the default table
    if fmt.strip() == "json":  # docker 24+: a JSON object per line
        return "".join(go_json(row) + "\n" for row in rows)
    table = fmt.startswith("table")
    template = (fmt[len("table"):] if table else fmt).strip(" ")
    nodes = _parse_flag(template or listing.default_table if table else template)
    try:
        lines = [execute(nodes, row) + "\n" for row in rows]
        if table:
            header = execute(nodes, Row(listing.headers), header=True)
            lines = tabwrite([header + "\n", *lines])
    except PybuildError as err:
        raise err.within("--format") from None
    return printable("".join(lines), multiline=True)


def render_inspect(fmt: str, doc: Mapping[str, object], config: Mapping[str, object],
                   size: int | None = None) -> str:
    """``inspect --format``: the template over docker's view of the image (``size``:
    its ``Size``, as docker counts it); ``json`` the usual array."""
    import json

    if fmt.strip() in ("json", ""):  # docker: an empty --format is the usual JSON
        return json.dumps([doc], indent=4) + "\n"
    nodes = _parse_flag(fmt)
    try:
        view = inspect_view(doc, config)
        if size is not None:
            view["Size"] = size
        out = execute(nodes, view) + "\n"
    except PybuildError as err:
        raise err.within("--format") from None
    return printable(out, multiline=True)


_EMPTY, _NIL_LIST, _NIL_MAP = Zero("", '""'), Zero("[]", "null"), Zero("map[]", "null")
# Docker's image config struct (DockerOCIImageConfig), in its order: what a field the
# image leaves out prints as.
_CONFIG_FIELDS = {"User": _EMPTY, "ExposedPorts": _NIL_MAP, "Env": _NIL_LIST,
                  "Entrypoint": _NIL_LIST, "Cmd": _NIL_LIST, "Volumes": _NIL_MAP,
                  "WorkingDir": _EMPTY, "Labels": _NIL_MAP, "StopSignal": _EMPTY,
                  "ArgsEscaped": Zero("false", "false"), "Healthcheck": Zero("<nil>", "null"),
                  "OnBuild": _NIL_LIST, "Shell": _NIL_LIST}

_MAP_FIELDS = frozenset({"ExposedPorts", "Volumes", "Labels"})  # Go maps, not structs


def inspect_view(doc: Mapping[str, object], config: Mapping[str, object]
                 ) -> dict[str, object]:
    """``doc`` with the fields of docker's ``ImageInspect`` that it leaves out, so that
    ``{{.Config.WorkingDir}}`` or ``{{.Parent}}`` print what docker prints."""
    own = doc.get("Config")
    own = own if isinstance(own, dict) else {}
    view_config = {key: GoMap(value) if key in _MAP_FIELDS and isinstance(value, dict)
                   else value for key, value in own.items()}
    view_config.update({key: zero for key, zero in _CONFIG_FIELDS.items()
                        if key not in view_config})
    tags = doc.get("RepoTags")
    names = [name for name in tags if isinstance(name, str)] if isinstance(tags, list) else []
    history = config.get("history")
    last = history[-1] if isinstance(history, list) and history else {}
    comment = config.get("comment") or (last.get("comment") if isinstance(last, dict)
                                        else None)
    return {**doc, "RepoTags": [name for name in names if "@" not in name],
            "RepoDigests": [name for name in names if "@" in name],
            "Parent": _EMPTY, "Comment": comment if isinstance(comment, str) else _EMPTY,
            "DockerVersion": _EMPTY, "Variant": doc.get("Variant", _EMPTY),
            "OsVersion": _EMPTY, "Config": view_config}


def tabwrite(lines: list[str], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Go's ``text/tabwriter`` (padchar ' ', no flags): a cell ends at a tab; the
    text after a line's last tab is not a column; a column's width is set per block
    of consecutive lines that have that column."""
    cells = [line.split("\t") for line in "".join(lines).split("\n")]
    trailing = cells.pop()  # after the last newline: nothing, or text without one
    padded = [list(row) for row in cells]
    _widen(cells, padded, 0, 0, len(cells), minwidth, padding)
    out = ["".join(row) + "\n" for row in padded]
    if trailing != [""]:
        out.append("".join(trailing))
    return out


def _widen(cells: list[list[str]], padded: list[list[str]], column: int, first: int,
           end: int, minwidth: int, padding: int) -> None:
    """Pad ``column`` in each block of lines ``first..end`` that has it, then recurse."""
    line = first
    while line < end:
        if column >= len(cells[line]) - 1:
            line += 1
            continue
        block = line
        while line < end and column < len(cells[line]) - 1:
            line += 1
        width = max(minwidth, *(len(cells[at][column]) + padding for at in range(block, line)))
        for at in range(block, line):
            padded[at][column] = cells[at][column].ljust(width)
        _widen(cells, padded, column + 1, block, line, minwidth, padding)


# -- docker's words for the fields --------------------------------------------------

def short_id(image_id: str, no_trunc: bool) -> str:
    """Docker's ``stringid.TruncateID``: 12 hex digits without ``sha256:``."""
    return image_id if no_trunc else image_id.removeprefix("sha256:")[:12]


def ellipsis(text: str, width: int) -> str:
    """Docker's ``formatter.Ellipsis``: at most ``width`` characters, the last one …"""
    if len(text) <= width:
        return text
    return text[:width] if width <= 3 else text[:width - 1] + "…"


def human_size(size: float, precision: int = 3) -> str:
    """go-units' ``HumanSizeWithPrecision``: decimal units, ``%.{precision}g``."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    at = 0
    while size >= 1000 and at < len(units) - 1:
        size /= 1000
        at += 1
    return f"{size:.{precision}g}{units[at]}"


def human_duration(seconds: float) -> str:
    """go-units' ``HumanDuration``."""
    whole, minutes, hours = int(seconds), int(seconds / 60), round(seconds / 3600)
    if whole < 1:
        return "Less than a second"
    if whole < 60:
        return "1 second" if whole == 1 else f"{whole} seconds"
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    for limit, divisor, word in ((48, 1, "hours"), (24 * 14, 24, "days"),
                                 (24 * 60, 24 * 7, "weeks"), (24 * 365 * 2, 24 * 30, "months")):
        if hours < limit:
            return f"{hours // divisor} {word}"
    return f"{int(seconds / 3600) // 24 // 365} years"


def unix_time(created: object) -> int:
    """A config's RFC 3339 ``created`` as Unix seconds (docker's ``Created``); 0 if none."""
    if not isinstance(created, str) or not created:
        return 0
    text = created.replace("Z", "+00:00")
    if "." in text:  # Python takes at most 6 fraction digits; Go writes up to 9
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + rest[digits:]
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0


def since(created: int) -> str:
    return human_duration(time.time() - created) + " ago"


def rfc3339(created: int) -> str:
    """Go's ``time.Unix(t, 0).Format(time.RFC3339)`` in the local zone."""
    text = datetime.fromtimestamp(created).astimezone().isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def go_time_string(created: int) -> str:
    """Go's ``time.Unix(t, 0).String()`` in the local zone."""
    return datetime.fromtimestamp(created).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z")


def history_row(entry: Mapping[str, object], image_id: str, size: int, no_trunc: bool
                ) -> Row:
    """One ``history`` row; ``image_id`` is an image's ID or ``<missing>``."""
    created = unix_time(entry.get("created"))
    created_by = str(entry.get("created_by") or "").replace("\t", " ")
    return Row({"ID": image_id if image_id == "<missing>" else short_id(image_id, no_trunc),
                "CreatedSince": since(created), "CreatedAt": rfc3339(created),
                "CreatedBy": created_by if no_trunc else ellipsis(created_by, 45),
                "Size": human_size(size), "Comment": str(entry.get("comment") or "")})


def history_ids(store: Store, image_id: str, entries: list[Mapping[str, object]]) -> list[str]:
    """The IMAGE of each history entry in ``history``'s default table: the image's own
    for the newest, the base image's for the last entry that came from its base (the
    image its build chose: for a base pulled from an index, that platform's; explain
    has its manifest digest), else ``<missing>``.  (docker names a base only when its
    classic builder recorded the parent; ``--format`` stays docker's.)"""
    ids = ["<missing>"] * len(entries)
    from builder.explain.records import load_bases

    for base in reversed(load_bases(store, image_id)):
        if not store.has_blob(base.image):
            continue
        own = store.image_config(base.image).get("history") or []
        if 0 < len(own) < len(entries) and list(entries[:len(own)]) == own:
            ids[len(own) - 1] = base.image
            break
    if ids:
        ids[-1] = image_id
    return ids


def image_rows(image_id: str, names: list[str], created_at: object, size: int,
               no_trunc: bool) -> list[Row]:
    """The rows docker lists for one image: one per repository and tag; a repository
    known only by digest gets a ``<none>`` tag; an image without names one ``<none>``."""
    created = unix_time(created_at)
    common = {"ID": short_id(image_id, no_trunc), "CreatedSince": since(created),
              "CreatedAt": go_time_string(created), "Size": human_size(size),
              "Containers": "N/A", "SharedSize": "N/A", "UniqueSize": "N/A",
              "VirtualSize": human_size(size, 4)}
    tagged = [name.rpartition(":") for name in names if "@" not in name]
    by_digest = {name.partition("@")[0] for name in names if "@" in name}
    rows = [(repo, tag, "<none>") for repo, _, tag in tagged]
    rows += [(repo, "<none>", "") for repo in sorted(by_digest - {r for r, _, _ in rows})]
    if not rows:
        rows = [("<none>", "<none>", "<none>")]
    return [Row({**common, "Repository": repo, "Tag": tag, "Digest": digest})
            for repo, tag, digest in rows]


def content_size(store: Store, record: LayerRecord) -> int:
    """A layer's size as docker counts it (``directory.Size`` of the extracted layer):
    the bytes of everything but directories, a hard-linked file once.  pybuild's own
    ``size`` is the layer's tar (headers and padding too); a layer still packed as a
    pulled blob has no directory to count, and keeps that."""
    if record.packed:
        return record.size
    if record.chain_id not in _CONTENT_SIZES:
        seen: set[int] = set()
        total, stack = 0, [store.layer_dir(record.chain_id)]
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(Path(entry.path))
                    elif info.st_size and info.st_ino not in seen:
                        seen.add(info.st_ino)
                        total += info.st_size
        _CONTENT_SIZES[record.chain_id] = total
    return _CONTENT_SIZES[record.chain_id]


_CONTENT_SIZES: dict[str, int] = {}  # by chain ID: images share their base layers


def image_size(store: Store, top: str | None) -> int:
    return sum(content_size(store, record) for record in store.chain(top))


def print_images(store: Store, fmt: str, no_trunc: bool) -> None:
    """``images --format``: newest image first, as docker lists them."""
    names: dict[str, list[str]] = {}
    for name, image_id in store.tags():
        names.setdefault(image_id, []).append(name)
    listed = []
    for image_id, top, _stored in store.listed_images():
        config = store.image_config(image_id)
        size = image_size(store, top)
        listed.append((unix_time(config.get("created")), image_id,
                       image_rows(image_id, names.get(image_id, []), config.get("created"),
                                  size, no_trunc)))
    listed.sort(key=lambda item: (-item[0], item[1]))
    sys.stdout.write(render_rows(fmt, IMAGES, [row for *_, rows in listed for row in rows]))


def print_history(store: Store, image_id: str, entries: list[Mapping[str, object]],
                  fmt: str, no_trunc: bool) -> None:
    """``history --format``: newest step first; only it carries the image's ID, the
    others are ``<missing>`` as for any image docker did not build itself."""
    layers = iter(store.chain(store.image_top_chain(image_id)))
    sizes = []
    for entry in entries:  # an empty_layer step has no layer: 0B, as docker's
        layer = None if entry.get("empty_layer") else next(layers, None)
        sizes.append(0 if layer is None else content_size(store, layer))
    # docker's IDs: the image's own on the newest entry, <missing> on the others (docker
    # knows no parent of a loaded image); the default table also names the base.
    ids = ["<missing>"] * (len(entries) - 1) + [image_id]
    rows = [history_row(entry, shown, size, no_trunc)
            for entry, shown, size in zip(entries, ids, sizes, strict=True)]
    sys.stdout.write(render_rows(fmt, HISTORY, list(reversed(rows))))
