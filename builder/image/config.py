"""The image config JSON, marshalled as Go (and so BuildKit) marshals it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
HISTORY_COMMENT = "buildkit.dockerfile.v0"

# Field order of BuildKit's DockerOCIImageConfig (Go struct order, omitempty).
_CONFIG_ORDER = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                 "Labels", "StopSignal", "ArgsEscaped", "Healthcheck", "OnBuild", "Shell")
_HISTORY_ORDER = ("created", "author", "created_by", "comment", "empty_layer")


def go_json(value: Any) -> bytes:
    """JSON as Go's encoding/json writes it: compact, with <, >, & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A value that was not UTF-8 (a --build-arg from a Latin-1 shell reaches Python
        # as surrogate escapes): Go coerces strings to valid UTF-8, each invalid byte
        # becoming U+FFFD.
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode()


def rfc3339(timestamp: float | None = None) -> str:
    """Go's time.RFC3339Nano in UTC: nanoseconds with trailing zeros trimmed."""
    nanos = time.time_ns() if timestamp is None else round(timestamp * 1_000_000_000)
    seconds, fraction = divmod(nanos, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def new_image(os_name: str = "linux", architecture: str = "amd64",
              variant: str = "") -> dict[str, Any]:
    image: dict[str, Any] = {"architecture": architecture, "config": {}, "os": os_name,
                             "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    if variant:
        image["variant"] = variant
    return image


def history_entry(created_by: str, *, empty_layer: bool, created: str | None,
                  comment: str = HISTORY_COMMENT) -> dict[str, Any]:
    entry: dict[str, Any] = {"created": created, "created_by": created_by, "comment": comment}
    if empty_layer:
        entry["empty_layer"] = True
    return entry


def _ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    out = {key: mapping[key] for key in order if mapping.get(key) not in (None, "", [], {})}
    for key, value in mapping.items():  # keep fields we do not know, after the known ones
        if key not in out and key not in order and value not in (None, "", [], {}):
            out[key] = value
    return out


def marshal(image: dict[str, Any]) -> bytes:
    """The config blob: top-level keys sorted (BuildKit re-marshals it through a map)."""
    doc = dict(image)
    doc["config"] = _ordered(doc.get("config") or {}, _CONFIG_ORDER)
    doc["history"] = [_ordered(h, _HISTORY_ORDER) for h in doc.get("history") or []]
    doc["rootfs"] = {"type": "layers", "diff_ids": list(doc["rootfs"]["diff_ids"])}
    return go_json(dict(sorted(doc.items())))
