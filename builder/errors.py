"""Every error pybuild raises on purpose, in one tree.

The CLI catches ``PybuildError`` and prints ``str(err)`` as one line (no
traceback) with the exit status ``err.exit_code``; anything else is a bug.

    PybuildError
    ├── UsageError            bad command line, unknown image name (exit 2)
    │   ├── NotImplementedYet a planned command that does not exist yet (exit 2)
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


class PybuildError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = 1


class UsageError(PybuildError):
    exit_code = 2


class NotImplementedYet(UsageError):
    """A command that is planned (listed in --help) but not built yet."""


class ReferenceError(UsageError):  # shadows the builtin by design: Docker's name
    """A malformed image reference or digest; renders as ``'TEXT': reason``."""

    def __init__(self, text: str, reason: str):
        self.text = text
        self.reason = reason
        super().__init__(f"{text!r}: {reason}")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.text, self.reason))


class DockerfileError(PybuildError):
    """An error at a place in a Dockerfile; renders as ``FILE:LINE: message``."""

    def __init__(self, message: str, path: str = "Dockerfile", line: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        super().__init__(self.__str__())

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Errors cross process boundaries (sandbox children) by pickling.
        return (type(self), (self.message, self.path, self.line))

    def __str__(self) -> str:
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
        return (type(self), (self.message, self.layer, self.entry))


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
        return (type(self), (self.message, self.reason))


class BuildError(PybuildError):
    pass
