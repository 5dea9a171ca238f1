"""Every error pybuild raises on purpose, in one tree.

The CLI catches ``PybuildError`` and prints ``str(err)`` as one line (no
traceback) with the exit status ``err.exit_code``; anything else is a bug.
An error keeps its class on the way up: a caller that knows where it happened
(a Dockerfile step, a blob being pulled) adds that with ``err.within(where)``
instead of wrapping it in another class, so the CLI and tests see what was raised.

    PybuildError
    ├── UsageError            bad command line, unknown image name (exit 2)
    │   └── ReferenceError    a malformed image reference (exit 2)
    ├── DockerfileError       FILE:LINE: message (parse, expansion, stages)
    ├── ContextError          a build context path that is missing or escapes
    ├── LayerError            a layer tar that is malformed or hostile
    ├── StoreError            the local store: missing image/blob, bad digest
    │   └── DigestMismatch    content does not match its digest
    ├── SandboxError          namespaces, mounts, pivot_root refused
    ├── RegistryError         a registry refused, failed, or sent bad content
    │   └── Unauthorized      it (or its token service) refused the credentials
    └── BuildError            a step failed (RUN exit status, COPY source missing)
"""

from __future__ import annotations

from typing import Self


class PybuildError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1
    where: tuple[str, ...] = ()  # outermost first; see within()

    def within(self, where: str, *, exit_code: int | None = None) -> Self:
        """Name where this happened (``Dockerfile:3: RUN make``, ``blob sha256:...``):
        ``str(err)`` becomes ``WHERE: message``; the class stays.  ``exit_code``
        overrides the class's where the caller decides it (a failed step exits 1,
        whatever failed in it)."""
        self.where = (where, *self.where)
        if exit_code is not None:
            self.exit_code = exit_code
        return self

    def __str__(self) -> str:
        return "".join(f"{where}: " for where in self.where) + self.detail()

    def detail(self) -> str:
        """The message without the places ``within`` added."""
        return super().__str__()


class UsageError(PybuildError):
    exit_code = 2


class ReferenceError(UsageError):  # shadows the builtin by design: Docker's name
    """A malformed image reference or digest; renders as ``'TEXT': reason``."""

    def __init__(self, text: str, reason: str):
        self.text = text
        self.reason = reason
        super().__init__(f"{text!r}: {reason}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.text, self.reason), self.__dict__)


class DockerfileError(PybuildError):
    """An error at a place in a Dockerfile; renders as ``FILE:LINE: message``."""

    def __init__(self, message: str, path: str = "Dockerfile", line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        super().__init__(self.detail())

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Errors cross process boundaries (sandbox children) by pickling.
        return (type(self), (self.message, self.path, self.line), self.__dict__)

    def detail(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


class ContextError(PybuildError):
    pass


class LayerError(PybuildError):
    """A layer that cannot be read or applied; names the layer and the entry."""

    def __init__(self, message: str, layer: str = "", entry: str | None = None):
        self.message = message
        self.layer = layer
        self.entry = entry
        parts = [f"layer {layer}" if layer else "layer"]
        if entry is not None:
            parts.append(f"entry {entry!r}")
        super().__init__(f"{', '.join(parts)}: {message}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.message, self.layer, self.entry), self.__dict__)


class StoreError(PybuildError):
    pass


class DigestMismatch(StoreError):
    pass


class SandboxError(PybuildError):
    pass


class RegistryError(PybuildError):
    """A registry refused or failed a request; names the registry and repository."""


class Unauthorized(RegistryError):
    """401 (or the token service's 401/403); ``reason`` is the registry's own message."""

    def __init__(self, message: str, reason: str = ""):
        self.message = message
        self.reason = reason
        super().__init__(message)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.message, self.reason), self.__dict__)


class BuildError(PybuildError):
    process_exit: int | None = None  # a failed RUN's exit status (progress reports it)
