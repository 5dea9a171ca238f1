"""Text for a terminal: control characters from a Dockerfile or an image made visible.

History strings, labels, file names and the output of RUN steps come from
whoever wrote the Dockerfile or the base image.  Printed raw, ``ESC [ 2 J``
clears the screen, ``ESC ] 0 ; ... BEL`` sets the window title, ``ESC ] 52``
writes the clipboard, ``CR`` overwrites what a line said.  Every human-readable
output goes through ``printable``: C0 controls (but tab, and newline where a
block of lines is meant), DEL, C1 controls and the bidirectional overrides
become visible ``\\x1b`` / ``\\u202e`` escapes.  JSON output is not escaped
here: ``json.dumps`` already writes control characters as ``\\u001b``.
"""

from __future__ import annotations

import re

# C0 but tab and newline, DEL, C1, the bidi embeddings/overrides/isolates (which
# reorder what is shown: "Trojan Source", CVE-2021-42574), and lone surrogates:
# a name decoded with surrogateescape holds bytes 0x80-0xff as U+DC80-U+DCFF, which a
# stream in the C locale writes back raw (0x9b is CSI on an 8-bit terminal).
_OTHERS = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = f"[\x00-\x08\x0a-\x1f{_OTHERS}]"
_UNSAFE_KEEP_NEWLINE = f"[\x00-\x08\x0b-\x1f{_OTHERS}]"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte: show the byte
        code -= 0xDC00
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control character but tab (and newline if ``multiline``) escaped."""
    if text.isprintable():   # the usual case, without compiling anything
        return text
    # re caches compiled patterns: compiled once, on the first text that needs it.
    return re.sub(_UNSAFE_KEEP_NEWLINE if multiline else _UNSAFE, _escape, text)
