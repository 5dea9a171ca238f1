"""Layer directory (overlay format) -> OCI layer tar, in one streaming pass.

The tar is what BuildKit writes through containerd's ``archive.ChangeWriter``:

* PAX format; a PAX header only when a field does not fit USTAR (names over
  100 bytes or not ASCII, big sizes, uids, mtimes) or for xattrs; records in
  sorted key order.  Names are bytes end to end, written raw (as Go does; no
  ``hdrcharset``).
* uname/gname empty (containerd uses ``FileInfoHeaderNoLookups`` so host user
  names never leak into layers); uid/gid numeric.
* mtime in whole seconds (truncated, never rounded, no sub-second PAX record,
  no atime/ctime), clamped to ``SOURCE_DATE_EPOCH`` when given.
* Entries in per-directory byte order, parent before children, directories
  named with a trailing ``/``, no entry for the root; a deletion at the
  position of the deleted name; whiteouts and opaque markers are empty regular
  files with mode 0, uid/gid 0 and mtime 0 (containerd v2).
* Hardlinks inside the layer: first name in walk order is the file, later ones
  are TYPE LNK to it.  Sockets are skipped.  End: two zero blocks, no padding
  to a 10 KiB record (as Go's ``tar.Writer``).

With ``lowers`` (the parent chain, topmost first, each in overlay format) the
layer is written as a change set against them, as BuildKit's overlay differ
does: an entry whose type, mode, owner, xattrs, link count, mtime and
content/target equal the lower one's is left out (moby/buildkit#2480); a
directory is emitted only if its mode/owner/xattrs changed or it holds an
emitted entry (``includeParents``: per-layer consumers then create parents with
the right mode); whiteouts of names no lower has are dropped; an opaque
directory is expanded into explicit whiteouts of the lower children it hides.
That last rule makes the overlay driver and the vfs driver (``diff.py``)
produce identical bytes for the same change.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from typing import BinaryIO, TypeVar, cast

from builder import interrupt
from builder.layers import whiteout as wh
from builder.layers.changes import (
    DIR,
    FILE,
    OPAQUE,
    WHITEOUT,
    Event,
    LayerChanges,
    PathLike,
    Walker,
    layer_changes,
)
from builder.layers.sha256_sink import Sha256Writer

__all__ = ["LayerChanges", "Sha256Writer", "layer_changes", "layer_diff_id", "tar_header",
           "write_layer_tar"]

_BLOCK = 512
_END = bytes(2 * _BLOCK)
_FLUSH_AT = 1 << 20
_CHUNK = 1 << 20
_SMALL_FILE = 1 << 16
_SHRANK = "file shrank while it was being read"

# ---------------------------------------------------------------- headers

_MAGIC = b"ustar\x0000"
_ZERO_DEVS = b"0000000\x000000000\x00"
_CONST_SUM = 8 * 32 + sum(_MAGIC)  # checksum field counts as spaces
_PAX_NAME = b"././@PaxHeader"


def _pax_record(key: bytes, value: bytes) -> bytes:
    # The length prefix counts its own digits; a second pass settles a carry
    # (98 + "99" -> 100 needs three digits).
    body = b" %s=%s\n" % (key, value)
    length = len(body) + len(str(len(body)))
    length = len(body) + len(str(length))
    return b"%d%s" % (length, body)


def _ustar(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           typeflag: bytes, linkname: bytes, devs: bytes) -> bytes:
    nums = b"%07o\x00%07o\x00%07o\x00%011o\x00%011o\x00" % (mode, uid, gid, size, mtime)
    if not linkname and devs is _ZERO_DEVS:
        tail, tail_sum = _PLAIN_TAILS[typeflag]
        # The sum over the non-zero parts only: summing all 512 bytes costs
        # more than the rest of the header.
        chk = tail_sum + sum(name) + sum(nums)
        return b"".join((name.ljust(100, b"\x00"), nums, b"%06o\x00 " % chk, tail))
    chk = _CONST_SUM + sum(name) + sum(nums) + typeflag[0] + sum(linkname) + sum(devs)
    return b"".join((
        name.ljust(100, b"\x00"), nums, b"%06o\x00 " % chk, typeflag,
        linkname.ljust(100, b"\x00"), _MAGIC, bytes(64), devs, bytes(167),
    ))


# typeflag -> (everything after the checksum field, its byte sum + 8 spaces)
_PLAIN_TAILS = {
    flag: (flag + bytes(100) + _MAGIC + bytes(64) + _ZERO_DEVS + bytes(167),
           _CONST_SUM + flag[0] + sum(_ZERO_DEVS))
    for flag in (b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"x")
}


def _ascii_field(value: bytes) -> bytes:
    return value.decode("ascii", "ignore").encode()[:100]


def tar_header(name: bytes, typeflag: bytes, *, mode: int = 0, uid: int = 0, gid: int = 0,
               size: int = 0, mtime: int = 0, linkname: bytes = b"",
               devmajor: int = 0, devminor: int = 0,
               xattrs: dict[str, bytes] | None = None) -> bytes:
    """One entry's header blocks (a PAX extended header first when needed)."""
    pax: dict[bytes, bytes] = {}
    if len(name) > 100 or not name.isascii():
        pax[b"path"] = name
        name = _ascii_field(name)
    if len(linkname) > 100 or not linkname.isascii():
        pax[b"linkpath"] = linkname
        linkname = _ascii_field(linkname)
    if not 0 <= uid <= 0o7777777:
        pax[b"uid"], uid = b"%d" % uid, 0
    if not 0 <= gid <= 0o7777777:
        pax[b"gid"], gid = b"%d" % gid, 0
    if size > 0o77777777777:
        pax[b"size"], size = b"%d" % size, 0
    if not 0 <= mtime <= 0o77777777777:
        pax[b"mtime"], mtime = b"%d" % mtime, 0
    if xattrs:
        for key, value in xattrs.items():
            pax[(wh.PAX_XATTR_PREFIX + key).encode("utf-8", "surrogateescape")] = value
    devs = _ZERO_DEVS if not (devmajor or devminor) else b"%07o\x00%07o\x00" % (devmajor, devminor)
    header = _ustar(name, mode & 0o7777, uid, gid, size, mtime, typeflag, linkname, devs)
    if not pax:
        return header
    records = b"".join(_pax_record(key, pax[key]) for key in sorted(pax))
    ext = _ustar(_PAX_NAME, 0, 0, 0, len(records), 0, b"x", b"", _ZERO_DEVS)
    return b"".join((ext, records, _padding(len(records)), header))


def _padding(size: int) -> bytes:
    return _PADS[size & 511]


_PADS = [bytes(-n % _BLOCK) for n in range(_BLOCK)]


_REG_TAIL, _REG_SUM = _PLAIN_TAILS[b"0"]
_MAX7, _MAX11 = 0o7777777, 0o77777777777
_IDS = b"%07o\x00%07o\x00%07o\x00"
_NUM = b"%011o\x00"


_Key = TypeVar("_Key")


def _field(cache: dict[_Key, tuple[bytes, int]], key: _Key, fmt: bytes) -> tuple[bytes, int]:
    """A formatted header field and its byte sum, memoised (bounded)."""
    if len(cache) >= 4096:
        cache.clear()
    value = fmt % key
    cache[key] = entry = (value, sum(value))
    return entry

# ---------------------------------------------------------------- writing

class _Out:
    """Collects small pieces into ~1 MiB writes; large file bodies go straight.

    A flushed bytearray is never reused (sinks may keep it); a raw stream's
    short write is finished here.
    """

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.buf = bytearray()
        self.count = 0

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.direct(self.buf)
            self.buf = bytearray()

    def direct(self, data: bytearray | memoryview) -> None:
        written = self.out.write(data)
        if written is not None and written < len(data):
            view = memoryview(data)[written:]
            while view:
                step = self.out.write(view)
                if not step:
                    raise OSError(errno.EIO, "layer tar: the output stream accepts no more data")
                view = view[step:]
        self.count += len(data)


class _TarWriter:
    def __init__(self, out: BinaryIO, source_date_epoch: int | None) -> None:
        self.out = _Out(out)
        # Only hashed (a diff_id): big files go to the hash thread by descriptor.
        self.hasher = out if isinstance(out, Sha256Writer) else None
        self.epoch = source_date_epoch
        self.links: dict[tuple[int, int], bytes] = {}
        self.chunk: bytearray | None = None
        self.ids: dict[tuple[int, int, int], tuple[bytes, int]] = {}
        self.sizes: dict[int, tuple[bytes, int]] = {}
        self.times: dict[int, tuple[bytes, int]] = {}

    def mtime(self, st: os.stat_result) -> int:
        seconds = st.st_mtime_ns // 1_000_000_000
        return seconds if self.epoch is None else min(seconds, self.epoch)

    def event(self, walker: Walker, ev: Event) -> None:
        kind, rel, st, xattrs, src, _ = ev
        if kind == FILE:
            assert st is not None and isinstance(src, int)  # a FILE event: its stat and fd
            if st.st_nlink > 1 and self._hardlink(rel, st, xattrs):
                return
            size = st.st_size
            mtime = st.st_mtime_ns // 1_000_000_000
            if self.epoch is not None and mtime > self.epoch:
                mtime = self.epoch
            if (size <= _SMALL_FILE and not xattrs and len(rel) <= 100 and rel.isascii()
                    and st.st_uid <= _MAX7 and st.st_gid <= _MAX7 and 0 <= mtime <= _MAX11):
                # The common case inlined (one USTAR block, no PAX): per-call
                # overhead here is what hashing 100,000 small files costs.
                # Formatting five octal fields costs more than reading the file;
                # the fields repeat (same owner, same second), so they are cached
                # with their checksum contributions.
                ids_key = (st.st_mode & 0o7777, st.st_uid, st.st_gid)
                ids, ids_sum = self.ids.get(ids_key) or _field(self.ids, ids_key, _IDS)
                size_f, size_sum = self.sizes.get(size) or _field(self.sizes, size, _NUM)
                time_f, time_sum = self.times.get(mtime) or _field(self.times, mtime, _NUM)
                data = os.read(src, size) if size else b""
                if len(data) != size:
                    data = self._read_rest(walker, rel, src, size, data)
                chk = _REG_SUM + sum(rel) + ids_sum + size_sum + time_sum
                out = self.out
                out.buf += b"".join((rel.ljust(100, b"\x00"), ids, size_f, time_f,
                                     b"%06o\x00 " % chk, _REG_TAIL, data, _PADS[size & 511]))
                if len(out.buf) >= _FLUSH_AT:
                    out.flush()
                return
            header = tar_header(rel, b"0", mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
                                size=size, mtime=self.mtime(st), xattrs=xattrs)
            if size <= _SMALL_FILE:
                self.out.add(header + self._small_body(walker, rel, src, size))
            else:
                self.out.add(header)
                self._body(walker, rel, src, size)
        elif kind == WHITEOUT:
            head, _, base = rel.rpartition(b"/")
            name = head + b"/" + wh.whiteout_name(base) if head else wh.whiteout_name(base)
            self.out.add(tar_header(name, b"0"))
        elif kind == OPAQUE:
            self.out.add(tar_header(rel + b"/" + wh.WHITEOUT_OPAQUE if rel else wh.WHITEOUT_OPAQUE,
                                    b"0"))
        elif kind == DIR:
            assert st is not None
            self.out.add(tar_header(rel + b"/", b"5", mode=st.st_mode, uid=st.st_uid,
                                    gid=st.st_gid, mtime=self.mtime(st), xattrs=xattrs))
        else:
            assert st is not None and isinstance(src, bytes)  # OTHER: its stat and path
            if not (st.st_nlink > 1 and self._hardlink(rel, st, xattrs)):
                self._other(rel, st, xattrs, src)

    def _hardlink(self, rel: bytes, st: os.stat_result, xattrs: dict[str, bytes] | None) -> bool:
        if st.st_nlink < 2:
            return False
        key = (st.st_dev, st.st_ino)
        first = self.links.get(key)
        if first is None:
            self.links[key] = rel
            return False
        self.out.add(tar_header(rel, b"1", mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
                                mtime=self.mtime(st), linkname=first, xattrs=xattrs))
        return True

    def _other(self, rel: bytes, st: os.stat_result, xattrs: dict[str, bytes] | None,
               path: bytes) -> None:
        """A symlink, device or fifo (a socket has no tar form: it is left out)."""
        mode = st.st_mode
        linkname, major, minor = b"", 0, 0
        if stat.S_ISLNK(mode):
            flag, linkname = b"2", os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            flag = b"3" if stat.S_ISCHR(mode) else b"4"
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            flag = b"6"
        else:
            return
        self.out.add(tar_header(rel, flag, mode=mode, uid=st.st_uid, gid=st.st_gid,
                                mtime=self.mtime(st), linkname=linkname, devmajor=major,
                                devminor=minor, xattrs=xattrs))

    def _small_body(self, walker: Walker, rel: bytes, fd: int, size: int) -> bytes:
        data = os.read(fd, size) if size else b""
        if len(data) != size:
            data = self._read_rest(walker, rel, fd, size, data)
        return data + _padding(size)

    def _read_rest(self, walker: Walker, rel: bytes, fd: int, size: int, data: bytes) -> bytes:
        while len(data) < size:
            more = os.read(fd, size - len(data))
            if not more:
                raise walker.error(_SHRANK, rel)
            data += more
        return data

    def _body(self, walker: Walker, rel: bytes, fd: int, size: int) -> None:
        self.out.flush()
        if self.hasher is not None:  # hashed and read there, while the walk goes on
            self.hasher.write_file(fd, size, walker.error(_SHRANK, rel))
            self.out.count += size
            self.out.add(_padding(size))
            return
        if self.chunk is None:
            self.chunk = bytearray(_CHUNK)
        view = memoryview(self.chunk)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        left = size
        while left:
            interrupt.check()  # a stage thread: a stopping build ends the commit here
            n = os.readv(fd, [view[:min(left, _CHUNK)]])
            if not n:
                raise walker.error(_SHRANK, rel)
            self.out.direct(view[:n])
            left -= n
        self.out.add(_padding(size))

    def close(self) -> int:
        self.out.add(_END)
        self.out.flush()
        return self.out.count


# ---------------------------------------------------------------- API

def write_layer_tar(layer_dir: PathLike, out: BinaryIO, *, source_date_epoch: int | None = None,
                    lowers: Sequence[PathLike] = (), rootless: bool | None = None,
                    changes: LayerChanges | None = None) -> int:
    """Write ``layer_dir`` (overlay format) to ``out`` as an OCI layer tar.

    ``lowers`` are the parent layer dirs, topmost first; given, the tar is the
    minimal change set against them (see the module docstring).  ``rootless``
    selects ``user.overlay.opaque`` as the opaque marker (W11); None: this
    process's mode (``builder.userns``).  Returns the number of bytes written.
    Raises LayerError for a name no tar can carry.
    ``changes``, if given, is filled with what ``layer_changes`` would say, from
    this same walk.
    """
    walker = Walker(layer_dir, lowers, prune=True, rootless=rootless, summary=changes)
    writer = _TarWriter(out, source_date_epoch)
    for ev in walker.events():
        interrupt.check()
        writer.event(walker, ev)
    return writer.close()


def layer_diff_id(layer_dir: PathLike, *, source_date_epoch: int | None = None,
                  lowers: Sequence[PathLike] = (), rootless: bool | None = None,
                  changes: LayerChanges | None = None) -> tuple[str, int]:
    """("sha256:<hex>", size) of the tar ``write_layer_tar`` would write; writes nothing.

    ``changes``, if given, is filled with the ``layer_changes`` summary in the same
    walk (a commit then reads the upper dir once, not twice).
    """
    # Room for ~32 MiB of tar queued behind a big file's body while it is hashed.
    sink = Sha256Writer(pending=32)
    try:
        size = write_layer_tar(layer_dir, cast(BinaryIO, sink),
                               source_date_epoch=source_date_epoch, lowers=lowers,
                               rootless=rootless, changes=changes)
    except BaseException:
        sink.abort()
        raise
    return sink.close(), size
