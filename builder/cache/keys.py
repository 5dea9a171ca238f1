"""Step cache keys: an ordered list of named inputs, hashed unambiguously.

The key is computed from the inputs as the step sees them, build-arg values
included, so a changed value still misses.  What is *recorded* beside the key
(the store's database, ``--cache-to`` exports, explain notes) is
``recorded_inputs``: every build-arg value, and every input that quotes one,
replaced by a digest, because build args often carry tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

# A key's inputs, in order: (name, value).  Names repeat for multi-valued inputs
# (one "env" per variable, one "file" per source entry).
Inputs = list[tuple[str, str]]

# explain --plan: the chain of a step that would run (or come from --cache-from) is not
# known; this names it.  Never a store chain: nothing in a plan mounts or reads one.
PLANNED = "planned:"

# Bump when the meaning of the inputs changes, so old entries stop matching.
KEY_VERSION = "pybuild-cache-v1"

# Recorded inputs end with this pair: rows without it were written before values
# were digested (or come from an older pybuild's export) and are cleaned on sight.
DIGESTED_MARK = ("digested", "v1")
# Not plain "sha256:": a digest pybuild made of a value must not be confused with an
# input that is a digest itself (a parent key, a --from chain ID), which explain shows.
_DIGEST_PREFIX = "value-sha256:"
_DIGEST_LENGTH = len(_DIGEST_PREFIX) + 64
# Inputs that never hold expanded text: digests, fixed words, the Dockerfile's own
# (unexpanded) RUN text.  Every other input may quote a build arg (WORKDIR /x/$TOKEN).
_PLAIN_NAMES = frozenset({"parent", "instruction", "argv", "platform", "network", "content",
                          "pipe", "parents", DIGESTED_MARK[0]})
# Shorter values are not searched for inside other inputs: "1" or "yes" would hide
# half the inputs from explain, and a value that short is guessed from any digest.
_MIN_QUOTED = 4


def cache_key(inputs: Inputs) -> str:
    """sha256 of the inputs as canonical JSON: no separator ambiguity, no machine state."""
    payload = json.dumps([KEY_VERSION, *([name, value] for name, value in inputs)],
                         ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode(errors="surrogateescape")).hexdigest()


def value_digest(value: str, salt: str) -> str:
    """The recorded form of a protected value: sha256 over a label, the step's parent key
    and the value.  Deterministic, so an exported cache explains misses on any machine
    (an HMAC with a per-store key would not); the parent key makes equal values in two
    steps or two images look unrelated and rules out precomputed tables."""
    data = f"pybuild-value-v1\0{salt}\0{value}".encode(errors="surrogateescape")
    return _DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def is_digest(value: str) -> bool:
    return (len(value) == _DIGEST_LENGTH and value.startswith(_DIGEST_PREFIX)
            and all(c in "0123456789abcdef" for c in value[len(_DIGEST_PREFIX):]))


def _salt(inputs: Inputs) -> str:
    return next((value for name, value in inputs if name == "parent"), "")


_WORD = re.compile(r"[A-Za-z0-9]+")


def _quotes(text: str, values: list[str]) -> bool:
    """Whether ``text`` may hold one of the build args' ``values``: it is one, holds a
    long one anywhere, or holds a short one as a word of its own (``/w/k7q``, ``750``;
    a short value is not searched for inside words: "1" would hide most inputs)."""
    words: set[str] | None = None
    for value in values:
        if text == value or (len(value) >= _MIN_QUOTED and value in text):
            return True
        if len(value) < _MIN_QUOTED:
            words = set(_WORD.findall(text)) if words is None else words
            if value in words:
                return True
    return False


def recorded_inputs(inputs: Inputs, args: Mapping[str, str | None]) -> Inputs:
    """``inputs`` as stored and exported: no build-arg value in clear.

    An ``env`` entry that is a build arg becomes ``arg NAME=<digest>``; any other input
    (an ENV set from an arg, a WORKDIR or COPY path, a mount option) that contains an
    arg's value gets its value digested.
    """
    salt = _salt(inputs)
    values = [v for v in args.values() if v]
    out: Inputs = []
    for name, value in inputs:
        if name == "env":
            key, _, rest = value.partition("=")
            if key in args and args[key] == rest:
                out.append(("arg", f"{key}={value_digest(rest, salt)}"))
                continue
            if _quotes(rest, values):
                value = f"{key}={value_digest(rest, salt)}"
        elif name not in _PLAIN_NAMES and _quotes(value, values):
            value = value_digest(value, salt)
        out.append((name, value))
    out.append(DIGESTED_MARK)
    return out


def legacy_inputs(inputs: Inputs) -> Inputs:
    """Inputs recorded before values were digested: which env entries were build args is
    unknown, so every value that may hold one (env, WORKDIR and COPY paths, mount and
    heredoc text) is digested.  The key stays as it was, so the entry still hits."""
    if DIGESTED_MARK in inputs:
        return inputs
    salt = _salt(inputs)
    out: Inputs = []
    for name, value in inputs:
        if name in ("env", "arg"):
            key, _, rest = value.partition("=")
            if not is_digest(rest):
                value = f"{key}={value_digest(rest, salt)}"
        elif name not in _PLAIN_NAMES and name != "file" and not is_digest(value):
            value = value_digest(value, salt)
        out.append((name, value))
    out.append(DIGESTED_MARK)
    return out


def same_value(old: str, new: str, salt: str) -> bool:
    """Two recorded values are equal, one of them possibly digested (an older row)."""
    return (old == new or (is_digest(old) and value_digest(new, salt) == old)
            or (is_digest(new) and value_digest(old, salt) == new))
