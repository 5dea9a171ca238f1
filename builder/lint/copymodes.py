"""``ChownChmodAfterCopy``: a RUN that changes the mode or owner of files an earlier
COPY or ADD of the stage put there.

The RUN's layer then holds a second copy of every such file (OverlayFS copies a
file up to change its metadata; a layer tar carries the whole file again), while
``COPY --chmod=…`` / ``--chown=…`` writes the files right the first time.

Which files a COPY wrote is known only from the Dockerfile here (the context is not
read): a source whose name has no dot, ``.``, or one ending in ``/`` is taken as a
directory whose contents land in the destination; any other source lands under its
own name.  Paths with variables, and relative paths with no known WORKDIR, are left
alone.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from fnmatch import fnmatchcase

import msgspec

from builder.dockerfile.commands import AddCommand, CopyCommand
from builder.lint.argv import Invocation

__all__ = ["CopyTarget", "chmod_findings", "copy_target"]

_TOOLS = {"chmod": "--chmod", "chown": "--chown", "chgrp": "--chown"}
_VALUED = frozenset({"--reference"})


class CopyTarget(msgspec.Struct, frozen=True):
    """Where one COPY/ADD wrote: ``dest`` absolute, without a trailing slash."""

    line: int
    keyword: str
    dest: str
    into_dir: bool            # the sources land inside dest (dest/ or several sources)
    names: tuple[str, ...]    # their names there; "" = a directory's contents (any name)
    chmod: bool
    chown: bool


def copy_target(cmd: CopyCommand | AddCommand, workdir: str) -> CopyTarget | None:
    dest = cmd.dest
    if "$" in dest or not dest:
        return None
    if not dest.startswith("/"):
        if not workdir:
            return None
        dest = workdir.rstrip("/") + "/" + dest
    sources = [*cmd.sources, *(doc.name for doc in cmd.source_heredocs)]
    names = tuple(_landing_name(s) for s in sources)
    return CopyTarget(cmd.line, cmd.name.upper(), posixpath.normpath(dest),
                      cmd.dest.endswith("/") or len(sources) > 1, names,
                      cmd.chmod is not None, cmd.chown is not None)


def _landing_name(source: str) -> str:
    if "://" in source:   # ADD of a URL: the file is named after the URL's path
        return posixpath.basename(source.split("?", 1)[0].rstrip("/")) or ""
    base = posixpath.basename(source.rstrip("/"))
    if source.endswith("/") or base in (".", "..", "") or "." not in base.lstrip("."):
        return ""
    return base


def _covers(copy: CopyTarget, path: str, recursive: bool) -> bool:
    if path == copy.dest:
        return recursive or not copy.into_dir
    if recursive and copy.dest.startswith(path.rstrip("/") + "/"):
        return True
    if not path.startswith(copy.dest.rstrip("/") + "/"):
        return False
    first = path[len(copy.dest.rstrip("/")) + 1:].split("/", 1)[0]
    if not copy.into_dir:
        return "" in copy.names
    return any(not name or fnmatchcase(first, name) or fnmatchcase(name, first)
               for name in copy.names)


def chmod_findings(calls: list[Invocation], copies: list[CopyTarget],
                   workdir: str) -> Iterator[tuple[str, str]]:
    for call in calls:
        flag = _TOOLS.get(call.name)
        if flag is None or not copies:
            continue
        operands = call.operands(_VALUED)
        reference = any(w.startswith("--reference") for w in call.argv)
        if reference:
            setting, paths = "", operands
        else:
            setting, paths = (operands[0] if operands else ""), operands[1:]
        recursive = any(w in ("-R", "--recursive") or (w.startswith("-") and
                        not w.startswith("--") and "R" in w) for w in call.argv[1:])
        for path in paths:
            resolved = _resolve(path, workdir)
            if resolved is None:
                continue
            copy = next((c for c in reversed(copies) if not (c.chmod if flag == "--chmod"
                                                              else c.chown)
                         and _covers(c, resolved, recursive)), None)
            if copy is not None:
                yield ("ChownChmodAfterCopy", _message(call, path, copy, flag, setting))
                break


def _resolve(path: str, workdir: str) -> str | None:
    if "$" in path or "`" in path:
        return None
    if not path.startswith("/"):
        if not workdir:
            return None
        path = workdir.rstrip("/") + "/" + path
    return posixpath.normpath(path)


def _message(call: Invocation, path: str, copy: CopyTarget, flag: str, setting: str) -> str:
    value = setting if setting and (flag == "--chown" or setting.isdigit()) else "<mode>"
    if call.name == "chgrp" and setting:
        value = ":" + setting
    shown = f"{call.name} {setting} {path}" if setting else f"{call.name} {path}"
    return (f"'{shown}' rewrites files that {copy.keyword} (line {copy.line}) "
            f"put in an earlier layer, so the image carries them twice; set it there: "
            f"{copy.keyword} {flag}={value} …")
