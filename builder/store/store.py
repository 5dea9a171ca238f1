"""The Store object: blobs, layers, images and tags under one root directory."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.errors import DigestMismatch, LayerError, StoreError
from builder.store import perms
from builder.store.faults import point

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20
# Run on each database as it opens, after the schema: the layers above the store (the
# cache) register their one-time clean-ups of old rows here, since it cannot import them.
ON_OPEN: list[Callable[[sqlite3.Connection], None]] = []

_SCHEMA = """
CREATE TABLE IF NOT EXISTS layers (
    chain_id TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    parent TEXT,
    size INTEGER NOT NULL,
    short TEXT NOT NULL UNIQUE,
    epoch INTEGER,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS packed_layers (
    chain_id TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    parent TEXT,
    size INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_blobs (
    diff_id TEXT NOT NULL,
    compression TEXT NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY (diff_id, compression)
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    top_chain TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id)
);
"""


def default_root() -> Path:
    """Where the store lives unless ``--root`` or ``PYBUILD_ROOT`` says otherwise."""
    if env := os.environ.get("PYBUILD_ROOT"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/pybuild")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "pybuild"


def check_digest(digest: str) -> str:
    """Validate a digest before it is used in any path (catalogue §0.6)."""
    if not _DIGEST.match(digest):
        raise StoreError(f"invalid digest {digest!r}: want sha256:<64 hex digits>")
    return digest


def chain_id_of(parent: str | None, diff_id: str) -> str:
    """OCI ChainID: the diff_id for a base layer, else sha256(parent + " " + diff_id)."""
    if parent is None:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def normalize_tag(name: str) -> str:
    """``app`` -> ``app:latest``; a name that has a tag or digest is kept."""
    if "@" in name:
        return name
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


@dataclass(frozen=True)
class LayerRecord:
    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    short: str           # its l/ link; "" while packed
    packed: bool = False  # pulled as a verified blob, not yet extracted (see Store.unpack)


@dataclass(frozen=True)
class LayerBlobRecord:
    diff_id: str
    compression: str
    digest: str
    size: int
    media_type: str


class TmpDir:
    """A scratch directory under ``tmp/`` that lives while this process holds its lock."""

    def __init__(self, path: Path):
        self.path = path
        # Lock first, directory second: a sweeper in another process removes a
        # directory only when its lock file is missing or unlocked.  A sweeper may
        # unlink our lock file between our open and our flock (it looked stale);
        # then the file we hold is no longer the one on disk, so try again.
        lock = path.parent / f"{path.name}.lock"
        while True:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._lock_fd = fd
        if path.exists():  # a fixed name (unpack-<chain>) whose owner died: ours now
            remove_tree(path)
        path.mkdir(mode=0o700)

    def release(self) -> None:
        if self._lock_fd < 0:
            return
        if self.path.exists():
            remove_tree(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.parent / f"{self.path.name}.lock")
        os.close(self._lock_fd)
        self._lock_fd = -1

    def detach(self) -> None:
        """Forget the directory (it was renamed away) and drop the lock."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.parent / f"{self.path.name}.lock")
        os.close(self._lock_fd)
        self._lock_fd = -1


def mounts_under(path: Path | str, *, itself: bool = False) -> list[str]:
    """Mount points below ``path`` (and ``path`` itself if ``itself``) in this process's
    mount namespace, deepest first."""
    real = os.path.realpath(path).rstrip("/")
    prefix = real + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                # Field 5 is the mount point, with space, tab, newline, backslash octal-escaped.
                target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                                line.split(" ")[4])
                if target.startswith(prefix) or (itself and target == real):
                    found.append(target)
    except FileNotFoundError:  # no /proc: nothing we could detach anyway
        return []
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree that also gets through mode-000 dirs (overlay work dirs, steps' leftovers).

    Never deletes through a mount point (catalogue R18, REL-6): a mount left
    under ``path`` (by a crash, or by hand) is detached first, and if that fails
    the removal stops with an error rather than deleting what is mounted there.
    """
    stale = mounts_under(path, itself=True)
    if stale:
        from builder import syscalls

        for target in stale:
            try:
                syscalls.umount2(target, syscalls.MNT_DETACH)
            except OSError as err:
                raise StoreError(f"cannot remove {path}: {target} is mounted and cannot be "
                                 f"detached ({err.strerror})") from None
    def onerror(func, failed, exc_info):  # type: ignore[no-untyped-def]
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            os.chmod(failed, 0o700)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            func(failed)

    shutil.rmtree(path, onerror=onerror)


def _create(path: Path) -> BinaryIO:
    """A new file only its owner can read, whatever the umask."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             perms.FILE_MODE), "wb")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    """Whether a process with this PID exists (a reused PID only delays a sweep)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()
_INHERITED: list[sqlite3.Connection] = []


def _forget_connections_in_child() -> None:
    """SQLite connections must not cross fork(): a child opens its own on first use.

    The inherited ones are kept referenced (never closed: closing could touch the
    parent's WAL and locks) and die with the child.
    """
    for store in list(_OPEN_STORES):
        if store._db is not None:
            _INHERITED.append(store._db)
            store._db = None


os.register_at_fork(after_in_child=_forget_connections_in_child)


class Store:
    """The local store.  Cheap to construct; the database opens on first use."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        # Absolute: mounts and overlay options are made from other working directories.
        self.root = Path(os.path.abspath(root if root is not None else default_root()))
        self._db: sqlite3.Connection | None = None
        self._owner = os.getpid()  # only the opening process sweeps, not its children
        _OPEN_STORES.add(self)

    # -- setup ---------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            perms.open_root(self.root)  # 0700, whatever the umask or an old store's modes
            # SQLite gives -wal and -shm the database's mode: make it 0600 first.
            perms.private_file(self.root / "pybuild.db")
            conn = sqlite3.connect(self.root / "pybuild.db", timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            for hook in ON_OPEN:
                hook(conn)
            self._db = conn
            if os.getpid() == self._owner:
                self.sweep()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def _store_lock(self) -> Iterator[None]:
        """Serialises layer commits against the sweeper, across processes."""
        fd = os.open(self.root / "lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def sweep(self) -> None:
        """Remove what a dead process left half-done: unlocked tmp dirs, unrecorded layers."""
        if self._db is None:
            self.db  # noqa: B018 - opening the database sweeps
            return
        tmp = self.root / "tmp"
        for lock in tmp.glob("*.lock"):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # its owner released it since we listed tmp/
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its owner is alive
            else:
                work = tmp / lock.name[: -len(".lock")]
                with contextlib.suppress(FileNotFoundError):
                    remove_tree(work)
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
        for entry in tmp.iterdir():
            if not entry.name.endswith(".lock") and not (tmp / f"{entry.name}.lock").exists():
                # No lock file: not a live TmpDir (a live owner holds its lock file
                # before its dir exists, and removes the dir before the lock file).
                with contextlib.suppress(FileNotFoundError):
                    remove_tree(entry)
        # Half-written blobs: ".incoming-<pid>-<random>", left by a process that died.
        for entry in (self.root / "blobs").glob(".incoming-*"):
            pid = entry.name.split("-")[1]
            if not (pid.isdigit() and _alive(int(pid))):
                entry.unlink(missing_ok=True)
        with self._store_lock():
            known = {row[0].split(":", 1)[1] for row in
                     self.db.execute("SELECT chain_id FROM layers")}
            for entry in (self.root / "layers").iterdir():
                if entry.name not in known:
                    remove_tree(entry)
            for link in (self.root / "l").iterdir():
                if not link.exists():
                    link.unlink()

    def tmp_dir(self, prefix: str = "work") -> TmpDir:
        self.db  # noqa: B018 - make sure the layout exists
        name = f"{prefix}-{os.getpid()}-{secrets.token_hex(6)}"
        return TmpDir(self.root / "tmp" / name)

    # -- blobs ---------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def put_blob(self, data: bytes, expected: str | None = None) -> str:
        self.db  # noqa: B018 - make sure the layout exists
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and expected != digest:
            raise DigestMismatch(f"blob content is {digest}, expected {expected}")
        path = self.blob_path(digest)
        if not path.exists():
            self._write_atomically(path, lambda f: f.write(data))
        return digest

    def put_blob_stream(self, src: BinaryIO, expected: str | None = None) -> tuple[str, int]:
        """Stream ``src`` into the blob store; verify against ``expected`` before it lands."""
        self.db  # noqa: B018
        tmp = self._incoming()
        hasher = hashlib.sha256()
        size = 0
        try:
            with _create(tmp) as out:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != check_digest(expected):
                raise DigestMismatch(f"blob content is {digest}, expected {expected}")
            self._publish(tmp, self.blob_path(digest))
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size

    def _incoming(self) -> Path:
        """A temp file name for a blob being written: in blobs/, so the sweeper finds it
        without listing blobs/sha256/, and on the same filesystem as its final name."""
        return self.root / "blobs" / f".incoming-{os.getpid()}-{secrets.token_hex(6)}"

    def _publish(self, tmp: Path, path: Path) -> None:
        """Rename a fsynced temp file to its content address, and make the rename durable."""
        os.chmod(tmp, perms.BLOB_MODE)  # write-once (K07), and the owner's only
        os.rename(tmp, path)
        point("blob:renamed")
        _fsync_dir(path.parent)

    def _write_atomically(self, path: Path, write) -> None:  # type: ignore[no-untyped-def]
        tmp = self._incoming()
        try:
            with _create(tmp) as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            self._publish(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def verify_blob(self, digest: str) -> bool:
        """Whether the blob file exists and hashes to its name (streamed, any size)."""
        hasher = hashlib.sha256()
        try:
            with open(self.blob_path(digest), "rb") as src:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
        except FileNotFoundError:
            return False
        return "sha256:" + hasher.hexdigest() == digest

    def drop_blob(self, digest: str) -> None:
        """Remove a (corrupt) blob and the layer-blob records naming it, so that the next
        export compresses the layer again from its directory instead of trusting it."""
        with self.transaction() as db:
            db.execute("DELETE FROM layer_blobs WHERE digest = ?", (digest,))
        self.blob_path(digest).unlink(missing_ok=True)

    def read_blob(self, digest: str) -> bytes:
        """Read a whole (small) blob and verify it against its digest."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is not in the store") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise DigestMismatch(f"blob {digest} in the store is corrupt")
        return data

    # -- layers --------------------------------------------------------------
    def layer(self, chain_id: str) -> LayerRecord:
        row = self.db.execute(
            "SELECT chain_id, diff_id, parent, size, short FROM layers WHERE chain_id = ?",
            (chain_id,)).fetchone()
        if row is not None:
            return LayerRecord(*row)
        row = self.db.execute(
            "SELECT chain_id, diff_id, parent, size FROM packed_layers WHERE chain_id = ?",
            (chain_id,)).fetchone()
        if row is None:
            raise StoreError(f"layer {chain_id} is not in the store")
        packed_chain, diff_id, parent, size = row
        return LayerRecord(packed_chain, diff_id, parent, size, short="", packed=True)

    def has_layer(self, chain_id: str) -> bool:
        """Whether the layer is in the store, extracted or still packed."""
        return self._is_unpacked(chain_id) or self.db.execute(
            "SELECT 1 FROM packed_layers WHERE chain_id = ?", (chain_id,)).fetchone() is not None

    def _is_unpacked(self, chain_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM layers WHERE chain_id = ?",
                               (chain_id,)).fetchone() is not None

    def layer_dir(self, chain_id: str) -> Path:
        return self.root / "layers" / check_digest(chain_id).split(":", 1)[1] / "diff"

    def chain(self, top: str | None) -> list[LayerRecord]:
        """The layers of a chain, base first."""
        records: list[LayerRecord] = []
        while top is not None:
            record = self.layer(top)
            records.append(record)
            top = record.parent
        records.reverse()
        return records

    def _unpacked_chain(self, top: str | None) -> list[LayerRecord]:
        records = self.chain(top)
        for record in records:
            if record.packed:  # a caller that needs files calls unpack() first
                raise StoreError(f"layer {record.chain_id} is not unpacked yet")
        return records

    def lower_dirs(self, top: str | None) -> list[Path]:
        """Layer dirs of a chain, topmost first, as overlay's lowerdir wants them."""
        return [self.layer_dir(r.chain_id) for r in reversed(self._unpacked_chain(top))]

    def short_links(self, top: str | None) -> list[str]:
        """Short link names under ``l/`` for a chain, topmost first."""
        return [r.short for r in reversed(self._unpacked_chain(top))]

    def layer_tar_options(self, chain_id: str) -> dict:
        """The arguments that make ``write_layer_tar`` reproduce this layer's diff_id."""
        row = self.db.execute("SELECT parent, epoch FROM layers WHERE chain_id = ?",
                              (chain_id,)).fetchone()
        if row is None:
            raise StoreError(f"layer {chain_id} is not in the store")
        return {"lowers": self.lower_dirs(row[0]), "source_date_epoch": row[1]}

    def commit_layer(self, parent: str | None, work: TmpDir, diff_id: str, size: int,
                     epoch: int | None = None) -> str:
        """Move ``work.path/diff`` into the store as the layer on top of ``parent``.

        A rename, never a copy.  If the same layer already exists, ours is dropped.
        ``epoch`` is the SOURCE_DATE_EPOCH the diff_id was computed with.
        """
        chain_id = chain_id_of(parent, diff_id)
        with self._store_lock():
            point("layer:locked")
            if self._is_unpacked(chain_id):
                work.release()
                return chain_id
            for leftover in work.path.iterdir():
                if leftover.name != "diff":
                    remove_tree(leftover)
            final = self.root / "layers" / chain_id.split(":", 1)[1]
            os.rename(work.path, final)
            work.detach()
            short = secrets.token_hex(5)
            os.symlink(f"../layers/{final.name}/diff", self.root / "l" / short)
            # Durable before the row that names them (a crash after the row must not
            # leave a row whose dir was never written to disk).
            _fsync_dir(self.root / "layers")
            _fsync_dir(self.root / "l")
            point("layer:renamed")
            with self.transaction() as db:
                db.execute("INSERT INTO layers VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (chain_id, diff_id, parent, size, short, epoch, time.time()))
                db.execute("DELETE FROM packed_layers WHERE chain_id = ?", (chain_id,))
        return chain_id

    def apply_blob(self, blob: Path, parent: str | None, what: str,
                   diff_id: str | None = None) -> tuple[str, int]:
        """Extract a (compressed) layer blob as the layer on ``parent``; (chain_id, size).

        With ``diff_id`` (from an image config), content that hashes to anything
        else is refused before it is registered (M09).
        """
        work, actual, size = self.extract(blob, what)
        try:
            if diff_id is not None and actual != diff_id:
                raise StoreError(f"{what}: content has diff_id {actual}, the image config "
                                 f"says {diff_id}")
            return self.commit_layer(parent, work, actual, size), size
        except BaseException:
            work.release()
            raise

    def extract(self, blob: Path, what: str, work: TmpDir | None = None,
                expect: str | None = None) -> tuple[TmpDir, str, int]:
        """A work dir holding ``blob`` applied as ``diff/``, with its diff_id and tar size;
        ``commit_layer`` it once the diff_id is trusted, else release it.  ``expect``:
        the compression the blob's media type names (M10).

        Touches no database, so worker threads may call it."""
        from builder.layers.blob import extract_blob

        work = work or self.tmp_dir("apply")
        try:
            # The layer's root dir, 0755 as a tar without a "./" entry implies (umask or not).
            os.mkdir(work.path / "diff", 0o755)
            os.chmod(work.path / "diff", 0o755)
            with open(blob, "rb") as raw:
                actual, size = extract_blob(raw, work.path / "diff", what,
                                            os.fstat(raw.fileno()).st_size, expect)
        except BaseException:
            work.release()
            raise
        return work, actual, size

    def add_packed_layer(self, parent: str | None, diff_id: str, size: int) -> str:
        """Record a layer whose verified blob is in the store (``record_layer_blob``)
        but not extracted; ``unpack`` extracts it when a snapshot or export needs it."""
        chain_id = chain_id_of(parent, diff_id)
        with self.transaction() as db:
            if not self._is_unpacked(chain_id):
                db.execute("INSERT OR IGNORE INTO packed_layers VALUES (?, ?, ?, ?, ?)",
                           (chain_id, diff_id, parent, size, time.time()))
        return chain_id

    def unpack_dir(self, chain_id: str) -> TmpDir:
        """The work dir to extract layer ``chain_id`` in.  Named by the layer: a second
        build extracting the same layer at the same time waits here for the first."""
        return TmpDir(self.root / "tmp" / f"unpack-{check_digest(chain_id).split(':', 1)[1]}")

    def unpack(self, top: str | None) -> None:
        """Extract the packed layers of a chain (a pull leaves them as blobs, as
        BuildKit does, until a step or an export needs their files).

        Layers extract side by side in worker threads and are committed here in
        order, each only once its content gives its recorded diff_id.  A work dir
        named by the chain ID keeps two builds from extracting the same layer twice.
        """
        from concurrent.futures import Future, ThreadPoolExecutor

        packed = [record for record in self.chain(top) if record.packed]
        if not packed:
            return
        from builder.rootcheck import need_root

        need_root(f"extracting the pulled layer {packed[0].chain_id}")
        blobs = {}
        for record in packed:
            found = self.layer_blobs(record.diff_id)
            if not found:
                raise StoreError(f"layer {record.chain_id}: its blob is not in the store "
                                 "(removed or corrupt); run 'pybuild doctor --repair' and "
                                 "pull the image again")
            blobs[record.chain_id] = self.blob_path(found[0].digest)
        self.db  # noqa: B018 - the layout exists before the workers use tmp/

        def extract(record: LayerRecord) -> tuple[TmpDir, str, int] | None:
            work = self.unpack_dir(record.chain_id)
            if self.layer_dir(record.chain_id).is_dir():  # the other build committed it
                work.release()
                return None
            return self.extract(blobs[record.chain_id], record.chain_id, work)

        jobs: list[Future] = []
        with ThreadPoolExecutor(max_workers=min(4, len(packed))) as pool:
            try:
                jobs = [pool.submit(extract, record) for record in packed]
                for record, job in zip(packed, jobs, strict=True):
                    try:
                        extracted = job.result()
                    except LayerError as err:
                        blob = blobs[record.chain_id].name
                        raise StoreError(f"{err} (from its pulled blob sha256:{blob}; "
                                         "'pybuild doctor' checks the blobs)") from None
                    if extracted is None:
                        with self._store_lock():
                            pass  # whoever renamed the dir in has written its row too
                        continue
                    work, diff_id, size = extracted
                    if diff_id != record.diff_id:
                        raise StoreError(f"layer {record.chain_id}: content has diff_id "
                                         f"{diff_id}, recorded {record.diff_id}")
                    self.commit_layer(record.parent, work, diff_id, size)
            except BaseException:
                for job in jobs:
                    job.cancel()
                raise
            finally:
                pool.shutdown(wait=True)
                for job in jobs:  # what was extracted but not committed
                    if job.done() and not job.cancelled() and job.exception() is None \
                            and (extracted := job.result()) is not None:
                        extracted[0].release()  # a no-op once committed (detached)

    def record_layer_blob(self, record: LayerBlobRecord) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO layer_blobs VALUES (?, ?, ?, ?, ?)",
                       (record.diff_id, record.compression, record.digest, record.size,
                        record.media_type))

    def layer_blobs(self, diff_id: str) -> list[LayerBlobRecord]:
        rows = self.db.execute(
            "SELECT diff_id, compression, digest, size, media_type FROM layer_blobs "
            "WHERE diff_id = ?", (diff_id,)).fetchall()
        return [LayerBlobRecord(*row) for row in rows if self.has_blob(row[2])]

    # -- images and tags -----------------------------------------------------
    def put_image(self, config: bytes, top_chain: str | None) -> str:
        image_id = self.put_blob(config)
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?)",
                       (image_id, top_chain, time.time()))
        return image_id

    def image_config(self, image_id: str) -> dict:
        return json.loads(self.read_blob(image_id))

    def image_top_chain(self, image_id: str) -> str | None:
        row = self.db.execute("SELECT top_chain FROM images WHERE id = ?",
                              (image_id,)).fetchone()
        if row is None:
            raise StoreError(f"image {image_id} is not in the store")
        return row[0]

    def tag(self, name: str, image_id: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?)", (normalize_tag(name), image_id))

    def untag(self, name: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM tags WHERE name = ?",
                              (normalize_tag(name),)).rowcount > 0

    def resolve_tag(self, name: str) -> str | None:
        """The image ID a name (``repo[:tag]`` or ``repo@digest``) points at; None if
        the name is not in the store.  Never an ID: ``FROM abcd`` names an image."""
        row = self.db.execute("SELECT image_id FROM tags WHERE name = ?",
                              (normalize_tag(name),)).fetchone()
        return row[0] if row else None

    def resolve_image(self, name: str) -> str | None:
        """An image ID for a tag, a full ID, or a unique ID prefix; None if unknown."""
        image_id = self.resolve_tag(name)
        if image_id is not None:
            return image_id
        ref = name if name.startswith("sha256:") else f"sha256:{name}"
        if re.fullmatch(r"sha256:[0-9a-f]{4,64}", ref):
            rows = self.db.execute("SELECT id FROM images WHERE id LIKE ?",
                                   (ref + "%",)).fetchall()
            if len(rows) == 1:
                return rows[0][0]
        return None

    def tags(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT name, image_id FROM tags ORDER BY name"))

    def images(self) -> list[tuple[str, str | None, float]]:
        return list(self.db.execute("SELECT id, top_chain, created FROM images ORDER BY created"))
