"""OCI layer tar -> validated members: ``tarfile`` as a header parser only.

The reading direction's primitives, shared by every consumer of layer tars
(``apply``).  ``tarfile`` parses headers and streams bodies; it never writes
(no ``extract``/``extractall``: their filters reject real images and have
been bypassed again and again, catalogue 2.9).  On top of it:

* PAX and GNU long-name payloads over 1 MiB, negative sizes and sparse
  entries are refused before tarfile reads them (X03, X04, CVE-2025-8194);
* the archive must end with its zero block: tarfile takes a truncated or
  garbled header after the first one for a normal end (T23);
* names become bytes (``surrogateescape``) split into components; NUL, empty
  names and any ``..`` component are refused (T01, T02, T17, and W05:
  ``dne/../.wh.etc`` is refused, never cleaned into ``.wh.etc``); leading and
  repeated ``/`` and ``.`` components are dropped (T03);
* ids must be below 2**32-1 (chown's "unchanged"), device numbers within
  Linux's 12/20 bits (T18).

Python 3.11.7 predates some parser fixes (X05); the limits above cover the
known denial-of-service shapes that matter for streaming input.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import BinaryIO, Protocol, Self, cast

from builder.layers import whiteout as wh

MAX_HEADER_PAYLOAD = 1 << 20
MAX_ID = 2**32 - 2
MAX_MAJOR, MAX_MINOR = 0xFFF, 0xFFFFF
# ext4's timestamp range; beyond it utimensat fails or wraps.
MIN_TIME, MAX_TIME = -(2**31), 2**34 - 1

_HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                 tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class Refused(Exception):
    """A layer entry that must not be applied; the caller adds layer and entry."""


# The private parts of CPython 3.11's tarfile this module builds on.  typeshed
# declares no private names, so they are typed here, once.
_EOFHeaderError: type[tarfile.HeaderError] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_SubsequentHeaderError: type[tarfile.HeaderError] = (
    tarfile.SubsequentHeaderError)  # type: ignore[attr-defined]


class _HeaderParser(Protocol):
    """``TarInfo``'s private parsing steps."""

    def _proc_member(self, tarfile_: tarfile.TarFile, /) -> tarfile.TarInfo: ...
    def _block(self, count: int, /) -> int: ...
    def _decode_pax_field(self, value: bytes, encoding: str, fallback_encoding: str,
                          fallback_errors: str, /) -> str: ...
    def _apply_pax_info(self, pax_headers: dict[str, str], encoding: str, errors: str,
                        /) -> None: ...


class _ArchiveState(Protocol):
    """``TarFile``'s reading state as the parser sees it (typeshed's ``pax_headers``
    is a read-only Mapping; tarfile itself updates the dict for global headers)."""

    fileobj: BinaryIO
    offset: int
    encoding: str
    errors: str
    pax_headers: dict[str, str]
    members: list[tarfile.TarInfo]
    _pybuild_end: tarfile.HeaderError  # why reading stopped (set by fromtarfile)


class _LayerTarInfo(tarfile.TarInfo):
    """tarfile's header parser with the limits layer input needs."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size < 0:
            raise Refused("negative size in header")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise Refused("sparse entries are not allowed in layers (X04)")
        if self.type in _HEADER_TYPES and self.size > MAX_HEADER_PAYLOAD:
            raise Refused(f"extended header of {self.size} bytes (X03)")
        return cast(_HeaderParser, super())._proc_member(tarfile_)

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        """CPython's ``_proc_pax`` (3.11) with its regexes replaced by ``_pax_records``.

        On 3.11.7 a PAX record whose value is a long run of digits makes the
        ``hdrcharset`` search and the GNU sparse 0.0 scans quadratic: a 1 MiB
        header takes hours (X05, CVE-2024-6232).  Records are parsed here in one
        linear pass; GNU sparse keys are refused before any sparse parser runs.
        """
        parser, archive = cast(_HeaderParser, self), cast(_ArchiveState, tarfile_)
        buf = archive.fileobj.read(parser._block(self.size))
        records = _pax_records(buf[:self.size])
        pax_headers = (archive.pax_headers if self.type == tarfile.XGLTYPE
                       else archive.pax_headers.copy())
        for keyword, value in records:
            if keyword == b"hdrcharset":
                pax_headers["hdrcharset"] = value.decode("utf-8", "surrogateescape")
        encoding = (archive.encoding if pax_headers.get("hdrcharset") == "BINARY"
                    else "utf-8")
        for raw_keyword, raw_value in records:
            name = parser._decode_pax_field(raw_keyword, "utf-8", "utf-8", archive.errors)
            if name in tarfile.PAX_NAME_FIELDS:
                text = parser._decode_pax_field(raw_value, encoding, archive.encoding,
                                                archive.errors)
            else:
                text = parser._decode_pax_field(raw_value, "utf-8", "utf-8", archive.errors)
            pax_headers[name] = text
        try:
            next_ = self.fromtarfile(tarfile_)
        except tarfile.HeaderError as err:
            raise _SubsequentHeaderError(str(err)) from None
        if self.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            next_parser = cast(_HeaderParser, next_)
            next_parser._apply_pax_info(pax_headers, archive.encoding, archive.errors)
            next_.offset = self.offset
            if "size" in pax_headers:
                offset = next_.offset_data
                if next_.isreg() or next_.type not in tarfile.SUPPORTED_TYPES:
                    offset += next_parser._block(next_.size)
                archive.offset = offset
        return next_

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        # Remember why reading stopped: only a zero block is a real end.
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as err:
            cast(_ArchiveState, tarfile_)._pybuild_end = err
            raise


def _pax_records(buf: bytes) -> list[tuple[bytes, bytes]]:
    """``(keyword, value)`` of each ``"%d %s=%s\\n"`` record, in one linear pass.

    Stops at NUL padding.  A zero or short length, a record not ending in a
    newline, a missing keyword (CVE-2019-20907's zero-length record loops
    forever on old Pythons) or a GNU sparse key (X04) is refused.
    """
    records: list[tuple[bytes, bytes]] = []
    pos, end = 0, len(buf)
    while pos < end and buf[pos] != 0:
        space = buf.find(b" ", pos, min(pos + 21, end))
        if space <= pos or not buf[pos:space].isdigit():
            raise Refused("malformed PAX header record (X05)")
        stop = pos + int(buf[pos:space])
        equals = buf.find(b"=", space + 1, stop)
        if stop > end or buf[stop - 1:stop] != b"\n" or equals <= space + 1:
            raise Refused("malformed PAX header record (X05)")
        keyword = buf[space + 1:equals]
        if keyword.startswith(b"GNU.sparse."):
            raise Refused("sparse entries are not allowed in layers (X04)")
        records.append((keyword, buf[equals + 1:stop - 1]))
        pos = stop
    return records


def members(src: BinaryIO) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """(archive, member) for each entry of the stream ``src``, in order.

    Read a member's body (``archive.extractfile``) before asking for the next.
    Raises Refused for the limits above and tarfile errors for broken input.
    """
    with tarfile.open(fileobj=src, mode="r|", tarinfo=_LayerTarInfo, encoding="utf-8",
                      errors="surrogateescape") as archive:
        while (member := archive.next()) is not None:
            yield archive, member
            # TarFile keeps every member it has read; a layer can have
            # millions, and nothing here looks back.
            cast(_ArchiveState, archive).members.clear()
        if not isinstance(getattr(archive, "_pybuild_end", None), _EOFHeaderError):
            raise Refused("truncated or corrupt archive: no end-of-archive block (T23)")


def check(member: tarfile.TarInfo) -> None:
    """Refuse what no entry type may carry (ids, sparse maps, device numbers)."""
    if member.sparse is not None:
        raise Refused("sparse entries are not allowed in layers (X04)")
    if not 0 <= member.uid <= MAX_ID or not 0 <= member.gid <= MAX_ID:
        raise Refused(f"uid/gid {member.uid}/{member.gid} out of range")
    if (member.ischr() or member.isblk()) and not (
            0 <= member.devmajor <= MAX_MAJOR and 0 <= member.devminor <= MAX_MINOR):
        raise Refused(f"device number {member.devmajor}:{member.devminor} out of range")


def split_name(name: str, what: str = "name") -> list[bytes]:
    """The components of an entry (or hardlink target) name, as bytes."""
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        raise Refused(f"empty {what}")
    if b"\0" in raw:
        raise Refused(f"NUL byte in {what}")
    comps = [c for c in raw.split(b"/") if c not in (b"", b".")]
    if b".." in comps:
        raise Refused(f"'..' in {what}: path escapes the root")
    return comps


def mtime_ns(member: tarfile.TarInfo) -> int:
    """The entry's mtime in ns, exact for PAX decimals, clamped to what ext4 holds."""
    text = member.pax_headers.get("mtime")
    try:
        seconds = Decimal(text) if text is not None else Decimal(int(member.mtime))
    except (InvalidOperation, ValueError, OverflowError):
        seconds = Decimal(0)
    seconds = min(max(seconds, Decimal(MIN_TIME)), Decimal(MAX_TIME))
    return int(seconds * 1_000_000_000)


def xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    """The entry's ``SCHILY.xattr.*`` records that pass the allowlist (T20)."""
    out: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        name = key[len(wh.PAX_XATTR_PREFIX):]
        if key.startswith(wh.PAX_XATTR_PREFIX) and wh.exportable_xattr(name):
            out[name] = value.encode("utf-8", "surrogateescape")
    return out
