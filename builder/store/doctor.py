"""``pybuild doctor``: check a store, and with ``repair=True`` put it right.

What is checked, in this order (each problem names what it is about):

    mount     a mount under the store root in our mount namespace (pybuild mounts
              only in private namespaces, so any such mount is stale): detached
    perms     the root and its entries must be its owner's only (perms.py): the open
              fixes the root and the top-level entries (an old store's 0755/0644);
              blobs (0400), layer dirs, downloads and locks one level down are
              fixed with ``repair``.  A root another user owns, or whose path
              another user could change (a symlink or a parent dir of theirs),
              stops the check first; a top-level entry another user owns is
              removed by ``repair`` (else the check stops there)
    database  ``PRAGMA integrity_check``; a corrupt database is not repaired here
    tmp       work dirs and half-written blobs of dead processes: the sweep that
              every open does removes them; doctor reports what it found first
    blob      every file in blobs/sha256/ hashes to its name: a corrupt blob is
              removed, with the layer-blob records that name it (the next export
              compresses the layer again from its directory)
    layer     every layer row has its dir and its short link, and its parent row (a
              packed layer, pulled but not yet extracted, has its blob instead);
              with ``deep=True`` its dir still gives the recorded diff_id (for layers
              pybuild built; see _check_layers).  A broken
              layer is dropped with every layer above it
    link      short links under l/ that point nowhere: removed
    cache     cache entries naming a missing layer: dropped
    image     images whose config blob or layer chain is gone: dropped with their
              tags (rebuild or re-pull them; the message names each one)

Run it when no build is using the store (as ``prune``): it takes the store lock
for the repairs, but a build holds layer dirs open without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec

from builder.store import perms, records
from builder.store.store import LayerRecord, Store, mounts_under, remove_tree


class Problem(msgspec.Struct):
    kind: str          # mount, perms, database, tmp, blob, layer, link, cache, image
    subject: str       # a digest, chain ID, path or tag
    message: str
    repaired: bool = False


class Report(msgspec.Struct):
    problems: list[Problem] = msgspec.field(default_factory=list)
    checked: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]

    def add(self, kind: str, subject: str, message: str) -> Problem:
        problem = Problem(kind, subject, message)
        self.problems.append(problem)
        return problem


def doctor(store: Store, *, repair: bool = False, deep: bool = False) -> Report:
    """Check ``store``; with ``repair``, fix what can be fixed.  Never raises for damage."""
    report = Report()
    if not _check_path(store, report):
        return report  # nothing under a root another user can swap is looked at
    _check_mounts(store, report, repair)
    _check_leftovers(store, report)   # before the first open, which sweeps them
    top = _check_top_perms(store, report, repair)  # likewise: the open fixes them
    if top is None:
        return report
    try:
        result = store.integrity_check()
    except Exception as err:  # sqlite3.DatabaseError: not a database, malformed
        report.add("database", str(store.root / "pybuild.db"),
                   f"cannot be read ({err}); move it away and rebuild the store")
        return report
    if result != ["ok"]:
        report.add("database", str(store.root / "pybuild.db"),
                   "integrity check failed: " + "; ".join(result[:3]))
        return report
    fixed = {str(f.path) for f in top} - {str(f.path) for f in
                                            perms.scan_top(store.root, fix=False)}
    for problem in report.problems:
        if problem.kind == "tmp" or (problem.kind == "perms" and problem.subject in fixed):
            problem.repaired = True  # the open swept it, or made it private
    with store.store_lock():
        _check_deep_perms(store, report, repair)
        _check_blobs(store, report, repair)
        broken = _check_layers(store, report, repair, deep)
        _check_links(store, report, repair)
        _check_cache(store, report, repair, broken)
        _check_images(store, report, repair, broken)
    return report


# -- mounts and leftovers --------------------------------------------------------
def _check_mounts(store: Store, report: Report, repair: bool) -> None:
    from builder import syscalls

    mounts = mounts_under(store.root)
    report.checked["mounts"] = len(mounts)
    for target in mounts:
        problem = report.add("mount", target, "stale mount under the store")
        if repair:
            with contextlib.suppress(OSError):
                syscalls.umount2(target, syscalls.MNT_DETACH)
            problem.repaired = target not in mounts_under(store.root)


def _check_leftovers(store: Store, report: Report) -> None:
    """Work dirs no live process holds, and half-written blobs of dead processes."""
    import fcntl

    tmp = store.root / "tmp"
    if tmp.is_dir():
        for lock in tmp.glob("*.lock"):
            with _opened(lock) as fd:
                if fd < 0:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process owns it
                work = tmp / lock.name[: -len(".lock")]
                if work.exists():
                    report.add("tmp", str(work), "work dir left by a process that died")
        for entry in tmp.iterdir():
            if not entry.name.endswith(".lock") and not (tmp / f"{entry.name}.lock").exists():
                report.add("tmp", str(entry), "work dir without an owner")
    blobs = store.root / "blobs"
    if blobs.is_dir():
        for entry in blobs.glob(".incoming-*"):
            pid = entry.name.split("-")[1]
            if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
                report.add("tmp", str(entry), "half-written blob left by a process that died")


def _check_path(store: Store, report: Report) -> bool:
    """The root and the path to it (perms.path_problem): False if it cannot be used."""
    try:
        _, problem = perms.path_problem(store.root)
    except FileNotFoundError:
        return True  # the open makes it, checking the path again
    if problem is not None:
        report.add("perms", str(problem[0]), problem[1])
    return problem is None


def _check_top_perms(store: Store, report: Report,
                     repair: bool) -> list[perms.Finding] | None:
    """The root and its top-level entries, before the open fixes them; None if the
    store cannot be opened: a top-level entry another user owns is left."""
    foreign: list[perms.Foreign] = []
    found = perms.scan_top(store.root, fix=False, foreign=foreign)
    for finding in found:
        report.add("perms", str(finding.path), finding.message)
    if foreign and repair:
        os.chmod(store.root, perms.DIR_MODE)  # first: nobody else may add one again
    for entry in foreign:
        problem = report.add("perms", str(entry.path), entry.message)
        if repair:
            _remove(entry.path)
            problem.repaired = not os.path.lexists(entry.path)
    return None if any(os.path.lexists(e.path) for e in foreign) else found


def _remove(path: Path) -> None:
    """Remove an entry another user made, never following a symlink: rmtree works
    from directory file descriptors (not remove_tree, whose chmods follow links in
    a tree its owner may still be changing)."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _check_deep_perms(store: Store, report: Report, repair: bool) -> None:
    """Blobs, layer dirs, downloads and locks: one problem per directory."""
    found: dict[Path, list[perms.Finding]] = {}
    for finding in perms.scan_deep(store.root, fix=repair):
        found.setdefault(finding.path.parent, []).append(finding)
    for directory, findings in sorted(found.items()):
        first = findings[0]
        problem = report.add("perms", str(directory), f"{len(findings)} entries let other "
                             f"users in (e.g. {first.path.name}: mode {first.mode:04o}, wanted "
                             f"{first.want:04o})")
        problem.repaired = repair


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield -1
        return
    try:
        yield fd
    finally:
        os.close(fd)


# -- blobs -------------------------------------------------------------------------
def _check_blobs(store: Store, report: Report, repair: bool) -> None:
    blobs = sorted((store.root / "blobs" / "sha256").iterdir())
    report.checked["blobs"] = len(blobs)
    for path in blobs:
        digest = f"sha256:{path.name}"
        if len(path.name) != 64 or not path.is_file():
            problem = report.add("blob", str(path), "not a blob (bad name or not a file)")
            if repair:
                remove_tree(path) if path.is_dir() else path.unlink()
                problem.repaired = True
            continue
        if not store.verify_blob(digest):
            problem = report.add("blob", digest, "content does not match its digest (corrupt)")
            if repair:
                store.drop_blob(digest)
                problem.repaired = True
    # Records that name a blob that is not there (it was dropped, or never written).
    for digest in dict.fromkeys(b.digest for b in store.all_layer_blobs()):
        if not store.blob_path(digest).exists():
            problem = report.add("blob", digest, "recorded as a layer blob but missing")
            if repair:
                store.drop_blob(digest)
                problem.repaired = True


# -- layers ------------------------------------------------------------------------
def _check_layers(store: Store, report: Report, repair: bool, deep: bool) -> set[str]:
    """Check every layer row; returns the chain IDs that are broken (and dropped if
    repairing), including every layer above a broken one."""
    every = store.all_layers()
    rows = [(r.chain_id, r.diff_id, r.parent, r.short) for r in every if not r.packed]
    report.checked["layers"] = len(every)
    parents = {r.chain_id: r.parent for r in every}
    bad: dict[str, str] = {}
    for record in every:
        chain, parent = record.chain_id, record.parent
        if parent is not None and parent not in parents:
            bad[chain] = f"parent layer {parent} is missing"
        elif not record.packed and not store.layer_dir(chain).is_dir():
            bad[chain] = f"directory {store.layer_dir(chain)} is missing"
        elif record.packed and not store.layer_blobs(record.diff_id):
            # pulled, not yet extracted: needs its blob
            bad[chain] = "packed (pulled, not extracted) and its blob is missing"
    if deep:
        _check_contents(store, every, parents, bad)
    # Everything above a broken layer is broken too.
    broken = set(bad)
    changed = True
    while changed:
        changed = False
        for chain, parent in parents.items():
            if chain not in broken and parent in broken:
                broken.add(chain)
                bad[chain] = f"built on broken layer {parent}"
                changed = True
    by_chain = {r.chain_id: r for r in reversed(every)}  # an extracted row wins
    for chain in sorted(broken):
        problem = report.add("layer", chain, bad[chain])
        if repair:
            store.remove_layers([by_chain.get(chain) or LayerRecord(chain, "", None, 0, "")])
            problem.repaired = True
    _check_short_links(store, report, repair, rows, broken)
    # Layer dirs with no row: the sweep removes them; report any that remain.
    known = {chain.split(":", 1)[1] for chain, *_ in rows}
    for entry in (store.root / "layers").iterdir():
        if entry.name not in known:
            problem = report.add("layer", str(entry), "directory not registered in the database")
            if repair:
                remove_tree(entry)
                problem.repaired = True
    return broken


def _check_contents(store: Store, every: list[LayerRecord], parents: dict[str, str | None],
                    bad: dict[str, str]) -> None:
    """``deep``: each extracted layer still gives its diff_id (adds to ``bad``)."""
    rows = [(r.chain_id, r.diff_id, r.parent, r.short) for r in every if not r.packed]
    # A layer pybuild built gives its diff_id again from its dir.  A layer that came
    # from an archive (import, load, pull) was hashed as that archive's tar, which a
    # dir need not reproduce byte for byte: it is compared with its stored blob
    # instead, file by file (type, size, content, link target).
    blobs: dict[str, str] = {}
    for blob in store.all_layer_blobs():
        if store.blob_path(blob.digest).exists():
            blobs.setdefault(blob.diff_id, blob.digest)
    unpacked = {chain for chain, *_ in rows}
    for chain, diff_id, _parent, _short in rows:
        if chain in bad or any(c not in unpacked for c in _ancestors(parents, chain)):
            continue  # its tar depends on lower dirs that are not extracted yet
        if (found := _diff_id_of(store, chain)) == diff_id:
            continue
        if diff_id not in blobs:
            bad[chain] = f"contents changed on disk (diff_id {found}, recorded {diff_id})"
        elif (why := _differs_from_blob(store, chain, blobs[diff_id])) is not None:
            bad[chain] = f"contents differ from blob {blobs[diff_id]}: {why}"


def _check_short_links(store: Store, report: Report, repair: bool,
                       rows: list[tuple[str, str, str | None, str]], broken: set[str]) -> None:
    """Every extracted layer that is not broken has its own l/ link."""
    for chain, _diff, _parent, short in rows:
        if chain in broken:
            continue
        link = store.root / "l" / short
        want = f"../layers/{chain.split(':', 1)[1]}/diff"
        if not (link.is_symlink() and os.readlink(link) == want):
            problem = report.add("link", str(link), f"short link of layer {chain} is wrong "
                                 "or missing")
            if repair:
                link.unlink(missing_ok=True)
                os.symlink(want, link)
                problem.repaired = True


def _ancestors(parents: dict[str, str | None], chain: str) -> Iterator[str]:
    current = parents.get(chain)
    while current is not None:
        yield current
        current = parents.get(current)


def _diff_id_of(store: Store, chain: str) -> str | None:
    from builder.layers.tar_write import layer_diff_id

    try:
        options = store.layer_tar_options(chain)
        diff_id, _size = layer_diff_id(store.layer_dir(chain), lowers=options.lowers,
                                       source_date_epoch=options.source_date_epoch)
    except Exception as err:  # an unreadable dir is a broken layer, whatever the error
        return f"unreadable: {err}"
    return diff_id


def _differs_from_blob(store: Store, chain: str, digest: str) -> str | None:
    """None if every entry of the layer blob's tar is in the layer dir as it says;
    else the first difference.  Whiteouts and hardlinks are not compared."""
    import hashlib
    import stat
    import tarfile

    from builder.layers.compress import open_decompressed

    root = store.layer_dir(chain)
    try:
        with open(store.blob_path(digest), "rb") as raw, open_decompressed(raw) as src, \
                tarfile.open(fileobj=src, mode="r|") as archive:
            for member in archive:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if not parts or ".." in parts or parts[-1].startswith(".wh."):
                    continue
                where = "/".join(parts)
                path = root.joinpath(*parts)
                # Never follow the image's own symlinks out of the layer dir.
                for depth in range(1, len(parts)):
                    if os.path.islink(root.joinpath(*parts[:depth])):
                        return f"{where}: a parent is a symlink"
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    return f"{where}: missing"
                if member.isreg():
                    if not stat.S_ISREG(st.st_mode) or st.st_size != member.size:
                        return f"{where}: type or size changed"
                    data = archive.extractfile(member)
                    hasher = hashlib.sha256()
                    while data is not None and (chunk := data.read(1 << 20)):
                        hasher.update(chunk)
                    want = hasher.hexdigest()
                    with open(path, "rb") as f:
                        if hashlib.file_digest(f, "sha256").hexdigest() != want:
                            return f"{where}: content changed"
                elif member.issym():
                    if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != member.linkname:
                        return f"{where}: symlink changed"
                elif member.isdir() and not stat.S_ISDIR(st.st_mode):
                    return f"{where}: no longer a directory"
    except (OSError, tarfile.TarError) as err:
        return f"cannot compare: {err}"
    return None


def _check_links(store: Store, report: Report, repair: bool) -> None:
    for link in (store.root / "l").iterdir():
        if not link.exists():
            problem = report.add("link", str(link), "short link points nowhere")
            if repair:
                link.unlink(missing_ok=True)
                problem.repaired = True


# -- cache and images ----------------------------------------------------------------
def _layer_ids(store: Store) -> set[str]:
    return {record.chain_id for record in store.all_layers()}


def _check_cache(store: Store, report: Report, repair: bool, broken: set[str]) -> None:
    layers = _layer_ids(store)
    rows = records.cache_chains(store)
    report.checked["cache entries"] = len(rows)
    dead = [key for key, chain in rows.items()
            if chain is not None and (chain not in layers or chain in broken)]
    for key in dead:
        problem = report.add("cache", key, "cache entry names a missing or broken layer")
        if repair:
            records.drop_cache_rows(store, [key])
            problem.repaired = True


def _check_images(store: Store, report: Report, repair: bool, broken: set[str]) -> None:
    layers = _layer_ids(store)
    images = store.images()
    report.checked["images"] = len(images)
    for image_id, top, _created in images:
        names = [name for name, iid in store.tags() if iid == image_id]
        shown = f"{image_id}" + (f" ({', '.join(names)})" if names else "")
        if top is not None and (top not in layers or top in broken):
            why = f"layer {top} is missing or broken"
        elif not store.blob_path(image_id).exists():
            why = "its config blob is missing"
        else:
            continue
        problem = report.add("image", shown, f"{why}: rebuild or re-pull it")
        if repair:
            store.remove_images([image_id])
            problem.repaired = True


def render(report: Report, *, repair: bool) -> str:
    """The text ``pybuild doctor`` prints."""
    lines = []
    for problem in report.problems:
        state = " [repaired]" if problem.repaired else ""
        lines.append(f"{problem.kind}: {problem.subject}: {problem.message}{state}")
    counts = ", ".join(f"{n} {what}" for what, n in report.checked.items())
    left = len(report.unrepaired)
    if not report.problems:
        lines.append(f"store {'' if counts else 'is '}ok" + (f": checked {counts}" if counts
                                                             else ""))
    elif left:
        lines.append(f"{left} problem(s)" + ("" if repair else
                                             "; run 'pybuild doctor --repair' to fix them"))
    else:
        lines.append(f"repaired {len(report.problems)} problem(s); checked {counts}")
    return "\n".join(lines)
