"""The copied entries' records for a COPY's content digest, in the copy's order.

The digest is compared with the cache key's (catalogue K), so the records must come in
the order the checksum pass made them, though the copier writes a deferred subtree
(``copier.Copier.defer_fresh``) after the entries that follow it.
"""

from __future__ import annotations

import os
import stat
from collections import deque

from builder.context.checksum import EntryDigest, entry_text, kind_of, record


class Segment:
    """The records of one stretch of the copy's order: a deferred subtree's, or the
    walk's between two deferred subtrees."""

    __slots__ = ("buffered", "closed")

    def __init__(self) -> None:
        self.buffered: list[bytes] = []
        self.closed = False


class ContentRecords:
    """The copied entries' records for the content digest, in the copy's order, though
    a deferred subtree's records are made after the ones that follow it.  Records of the
    first open segment are hashed at once; a later segment's wait until every segment
    before it is closed (a copy that defers nothing buffers nothing)."""

    def __init__(self) -> None:
        self._digest = EntryDigest()
        self._segments: deque[Segment] = deque([Segment()])
        self.walk = self._segments[0]      # where the walk's own records go

    def reserve(self) -> Segment:
        """A segment for a subtree written later; the walk goes on in a new one."""
        walk = self.walk
        subtree = self._open()
        self.walk = self._open()
        self.close(walk)
        return subtree

    def _open(self) -> Segment:
        segment = Segment()
        self._segments.append(segment)
        return segment

    def add(self, segment: Segment, rel: str, st: os.stat_result, content: str) -> None:
        data = record(rel, entry_text(kind_of(st.st_mode), stat.S_IMODE(st.st_mode), content))
        if segment is self._segments[0]:
            self._digest.add_records(data)
        else:
            segment.buffered.append(data)

    def close(self, segment: Segment) -> None:
        segment.closed = True
        while self._segments and self._segments[0].closed:
            self._segments.popleft()
            if self._segments:
                head = self._segments[0]
                self._digest.add_records(b"".join(head.buffered))
                head.buffered.clear()

    def digest(self) -> str:
        """The digest of every record, once the copy is done."""
        for segment in list(self._segments):
            self.close(segment)
        return self._digest.digest()
