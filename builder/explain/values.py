"""The build-arg values ``pybuild explain --show-values`` may show: the image's own.

A cache entry and a build record keep only digests of build-arg values, so a reason
says ``arg-changed`` with the name and nothing more.  The values the image itself
carries (as Docker's do) are in its history, ``RUN |N K=V ... cmd`` and ``ARG K=V``,
and ENV values in its config; ``--show-values`` adds those to the reasons
(``Reason.text``), never a value read back from the cache or the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PAIR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _pairs(tokens: list[str], count: int | None) -> dict[str, str]:
    """``K=V`` words; a value with spaces runs on to the next ``NAME=`` word (best effort:
    the history joins them with spaces, as BuildKit's does)."""
    out: dict[str, str] = {}
    last = ""
    for token in tokens:
        if _PAIR.match(token) and (count is None or len(out) < count):
            last, _, value = token.partition("=")
            out[last] = value
        elif last and count is None:
            out[last] += " " + token
        else:
            break
    return out


def image_values(config: Mapping[str, object]) -> dict[str, str]:
    """``{"arg NAME": value, "env NAME": value}`` from an image config's history and Env."""
    values: dict[str, str] = {}
    history = config.get("history")
    for entry in history if isinstance(history, list) else []:
        created_by = entry.get("created_by", "") if isinstance(entry, dict) else ""
        words = created_by.split(" ")
        if words[:1] == ["ARG"]:
            found = _pairs(words[1:], None)
        elif words[:1] == ["RUN"] and len(words) > 1 and words[1][1:].isdigit() \
                and words[1].startswith("|"):
            found = _pairs(words[2:], int(words[1][1:]))
        else:
            continue
        values.update((f"arg {name}", value) for name, value in found.items())
    inner = config.get("config")
    env = inner.get("Env") if isinstance(inner, dict) else None
    for item in env if isinstance(env, list) else []:
        name, _, value = str(item).partition("=")
        values[f"env {name}"] = value
    return values
