"""``RUN --mount``: turn BuildKit's mount types into sandbox mounts and cache-key inputs.

- ``cache``: a directory in the store (``cache-mounts/``) that persists between builds
  and never becomes part of a layer.
- ``tmpfs``: an empty tmpfs.
- ``bind``: a context path (read-only; ``rw`` writes go to a throw-away overlay;
  without what ``.dockerignore`` hides, see ``ctxbind``) or a path from another stage
  or image, mounted from a read-only snapshot.  Its content is part of the step's
  cache key.
- ``secret``: a file given with ``--secret id=ID,src=PATH`` (or ``env=VAR``), mounted
  read-only at ``/run/secrets/ID`` or exported as an env var; never in a layer, the
  cache key or the history.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from builder.cache import Inputs
from builder.engine.copy_plan import clean_source
from builder.errors import BuildError
from builder.run.spec import MountSpec
from builder.store.perms import private_dir
from builder.store.store import Store, TmpDir

if TYPE_CHECKING:   # the filtered view loads only for a bind mount of the context
    from builder.cache import CacheStore
    from builder.context.view import ContextFilter
    from builder.dockerfile.commands import RunCommand
    from builder.dockerfile.mounts import Mount
    from builder.snapshot import ActiveSnapshot


class PreparedMounts(msgspec.Struct):
    mounts: list[MountSpec] = msgspec.field(default_factory=list)
    inputs: Inputs = msgspec.field(default_factory=list)
    secret_env: list[str] = msgspec.field(default_factory=list)
    views: list[ActiveSnapshot] = msgspec.field(default_factory=list)
    locks: list[int] = msgspec.field(default_factory=list)       # flock'd cache mounts
    scratch: list[TmpDir] = msgspec.field(default_factory=list)  # private cache instances

    def release(self) -> None:
        for view in self.views:
            view.release()
        for fd in self.locks:
            os.close(fd)
        for tmp in self.scratch:
            tmp.release()
        self.views, self.locks, self.scratch = [], [], []


def check_privileges(command: RunCommand, invoker_network: str) -> str:
    """The network a RUN gets; refuse what only the invoker may grant (R16).

    BuildKit needs CLI entitlements (``--allow security.insecure``,
    ``network.host``, ``device``) for these RUN flags; pybuild has none to
    grant, so a Dockerfile (or an ONBUILD from a base image) asking is an
    error, never silently more access.  ``--network=none`` narrows,
    ``--network=default`` is the build's own network (as in BuildKit), and
    ``--network=host`` is allowed only when the invoker chose ``--network host``.
    """
    if command.security == "insecure":
        raise BuildError("RUN --security=insecure is not allowed: pybuild grants no "
                         "security.insecure entitlement")
    if command.devices:
        raise BuildError("RUN --device is not allowed: pybuild grants no device entitlement")
    asked = command.network or "default"
    if asked == "none" or asked == invoker_network:
        return asked
    if asked == "default":
        return invoker_network
    if invoker_network == "none":
        raise BuildError(f"RUN --network={asked} is not allowed: the build runs with "
                         "--network none")
    raise BuildError(f"RUN --network={asked} is not allowed: only the invoker's "
                     f"--network {asked} grants it (BuildKit's network.{asked} entitlement)")


def prepare_mounts(store: Store, mounts: list[Mount], *, workdir: str, context: str | None,
                   secrets: dict[str, str], resolve_from: Callable[[str], str | None],
                   cache: CacheStore, driver: str = "overlay",
                   context_filter: ContextFilter | None = None,
                   plan_only: bool = False) -> PreparedMounts:
    """The step's mounts and their key inputs; ``plan_only`` (explain --plan): the
    inputs alone, with no cache dir made, no lock taken, no snapshot prepared."""
    prepared = PreparedMounts()
    request = _MountRequest(workdir, secrets, resolve_from, driver, plan_only)
    try:
        for mount in mounts:
            if mount.type == "bind" and not mount.from_:
                _bind_context(mount, prepared, workdir, context, context_filter, cache)
                continue
            prepare_kind = _KINDS.get(mount.type)
            if prepare_kind is None:
                raise BuildError(f"--mount type={mount.type} is not supported by pybuild")
            prepare_kind(store, mount, prepared, request)
    except BaseException:
        prepared.release()
        raise
    return prepared


def _bind_context(mount: Mount, out: PreparedMounts, workdir: str, context: str | None,
                  context_filter: ContextFilter | None, cache: CacheStore) -> None:
    """A bind of the build context: what BuildKit's transfer sends of it (ctxbind)."""
    if context is None:
        raise BuildError("--mount type=bind needs a build context")
    from builder.engine.ctxbind import context_bind

    spec, key = context_bind(mount, _target(mount, workdir), context, context_filter, cache)
    cache.flush_stats()  # what the checksum learnt, for the next build (as COPY does)
    out.mounts.append(spec)
    out.inputs.append(("mount", key))


def _target(mount: Mount, workdir: str, default: str = "") -> str:
    target = mount.target or default
    if not target:
        raise BuildError(f"--mount type={mount.type}: a target is required")
    if not target.startswith("/"):
        target = posixpath.join(workdir, target)
    return posixpath.normpath(target)


def _create_cache_dir(directory: Path, mount: Mount) -> None:
    # Two builds may meet a new cache id at once (R12): the first creates and
    # chowns it under a lock, so the second never sees a half-made directory.
    # The mount's own dir gets the uid and mode the step asked for; its parent is
    # 0700, so that owner never reaches it from the host (docs/security.md, S).
    private_dir(directory.parent)
    lock = os.open(directory.parent / ".create.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                   0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if directory.exists():
            return
        directory.mkdir(mode=0o755)
        os.chmod(directory, mount.mode if mount.mode is not None else 0o755)
        os.chown(directory, mount.uid or 0, mount.gid or 0)
    finally:
        os.close(lock)


class _MountRequest:
    """What every kind of mount may need from the step (a plain slotted class: on
    the cached path a dataclass costs ~1 ms at import)."""

    __slots__ = ("driver", "plan_only", "resolve_from", "secrets", "workdir")

    def __init__(self, workdir: str, secrets: dict[str, str],
                 resolve_from: Callable[[str], str | None], driver: str,
                 plan_only: bool) -> None:
        self.workdir = workdir
        self.secrets = secrets
        self.resolve_from = resolve_from
        self.driver = driver
        self.plan_only = plan_only  # explain --plan: the key's inputs, nothing made


def _cache_mount(store: Store, mount: Mount, out: PreparedMounts, request: _MountRequest) -> None:
    target = _target(mount, request.workdir)
    cache_id = mount.id or target
    # source= is a subdirectory of the cache, opened by fd in the sandbox (R06).
    subpath = mount.source if not mount.from_ else ""
    if not request.plan_only:
        directory = _cache_dir(store, mount, out, cache_id)
        out.mounts.append(MountSpec("bind", target, str(directory), readonly=mount.readonly,
                                    subpath=subpath))
    out.inputs.append(("mount", f"cache {target} id={cache_id}"
                                + (f" source={subpath}" if subpath else "")))


def _cache_dir(store: Store, mount: Mount, out: PreparedMounts, cache_id: str) -> Path:
    """The cache's directory, created on first use and locked as ``sharing`` asks."""
    directory = store.root / "cache-mounts" / hashlib.sha256(cache_id.encode()).hexdigest()[:32]
    if not directory.exists():
        _create_cache_dir(directory, mount)
    if mount.sharing in ("locked", "private"):
        # R12: "locked" waits for the other writer; "private" gets an empty
        # instance of its own when the cache is in use (BuildKit's modes).
        lock = os.open(f"{directory}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (fcntl.LOCK_NB if mount.sharing == "private"
                                               else 0))
            out.locks.append(lock)
        except BlockingIOError:
            os.close(lock)
            private = store.tmp_dir("cache-private")
            out.scratch.append(private)
            directory = private.path  # TmpDir made it
            os.chmod(directory, mount.mode if mount.mode is not None else 0o755)
            os.chown(directory, mount.uid or 0, mount.gid or 0)
    return directory


def _tmpfs_mount(store: Store, mount: Mount, out: PreparedMounts, request: _MountRequest) -> None:
    workdir = request.workdir
    target = _target(mount, workdir)
    options = f"size={mount.size}" if mount.size else ""
    out.mounts.append(MountSpec("tmpfs", target, options=options))
    out.inputs.append(("mount", f"tmpfs {target} {options}"))


def _bind_mount(store: Store, mount: Mount, out: PreparedMounts, request: _MountRequest) -> None:
    """From a stage or image; the context's is _bind_context's."""
    workdir, resolve_from, driver = request.workdir, request.resolve_from, request.driver
    target = _target(mount, workdir)
    source = clean_source(mount.source or "/")
    chain = resolve_from(mount.from_)
    if not request.plan_only:
        from builder.snapshot import prepare

        view = prepare(store, chain, driver)
        out.views.append(view)
        out.mounts.append(MountSpec("view", target, source, view=view,
                                    readonly=mount.readonly))
    # rw only when set, so the keys of read-only binds stay as they were.
    out.inputs.append(("mount", f"bind {target} from={chain} source={source}"
                                + ("" if mount.readonly else " rw=True")))


def _secret_mount(store: Store, mount: Mount, out: PreparedMounts, request: _MountRequest) -> None:
    workdir, secrets = request.workdir, request.secrets
    secret_id = mount.id or (posixpath.basename(mount.target) if mount.target else "")
    if not secret_id:
        raise BuildError("--mount type=secret needs an id")
    path = secrets.get(secret_id)
    if path is None:
        if mount.required:
            raise BuildError(f"secret {secret_id} is required but was not given "
                             f"(--secret id={secret_id},src=FILE)")
        return
    if mount.env and not request.plan_only:
        with open(path, encoding="utf-8", errors="replace") as secret_file:
            out.secret_env.append(f"{mount.env}={secret_file.read()}")
    # BuildKit's defaults: 0400, owned by root (client/llb/exec.go).
    uid, gid = mount.uid or 0, mount.gid or 0
    mode = 0o400 if mount.mode is None else mount.mode
    if mount.target or not mount.env:
        target = _target(mount, workdir, f"/run/secrets/{secret_id}")
        out.mounts.append(MountSpec("secret", target, path, is_dir=False, uid=uid, gid=gid,
                                    mode=mode))
    # The options change what the step sees, so they are in the key; the
    # defaults add nothing, so keys made before they were honoured still match.
    owner = "" if (uid, gid, mode) == (0, 0, 0o400) else f" uid={uid} gid={gid} mode={mode:o}"
    out.inputs.append(("mount", f"secret id={secret_id}{owner}"))


_KINDS: dict[str, Callable[[Store, Mount, PreparedMounts, _MountRequest], None]] = {
    "cache": _cache_mount, "tmpfs": _tmpfs_mount, "bind": _bind_mount, "secret": _secret_mount,
}
