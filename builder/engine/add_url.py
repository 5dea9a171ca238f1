"""ADD of an http(s) URL: fetched as BuildKit's HTTP source does it.

The file gets mode 0600 (unless --chmod), the mtime of Last-Modified (else the
epoch), and is named after the URL (or Content-Disposition) when the destination
is a directory.  With ``--checksum`` the sha256 of the downloaded bytes must equal
it (BuildKit's validatePinnedChecksum in source/http/source.go); otherwise the step
fails and its snapshot is dropped, so nothing is committed.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from typing import TYPE_CHECKING, Any

from builder.engine.git_source import is_git_source, redact
from builder.errors import BuildError

if TYPE_CHECKING:
    from builder.engine.copier import Copier

_CHUNK = 1 << 20


def _url_file_name(url: str, headers: Any) -> str:
    disposition = headers.get("Content-Disposition") or ""
    if disposition:
        from email.message import Message

        message = Message()
        message["Content-Disposition"] = disposition
        name = message.get_filename() or ""
        if name and not name.endswith("/"):
            name = posixpath.basename(name)
            if name not in ("", ".", ".."):
                return name
    import urllib.parse  # only ADD of a URL needs the HTTP stack

    base = posixpath.basename(urllib.parse.urlparse(url).path)
    return base if base not in ("", ".", "..", "/") else "__unnamed__"


def add_url(copier: Copier, url: str, dest: str, dest_is_dir: bool,
            checksum: str = "") -> None:
    """Fetch ``url`` into ``dest`` inside the copier's root (see the module doc)."""
    if is_git_source(url):   # never saved as a page: it is cloned (git_source.py)
        raise BuildError(f"{redact(url)}: a git source reached the HTTP fetcher")
    try:
        import urllib.request

        response = urllib.request.urlopen(url, timeout=60)
    except OSError as err:
        raise BuildError(f"ADD {redact(url)}: {err}") from err
    hasher = hashlib.sha256()
    with response:
        headers = response.headers
        if dest_is_dir or dest.endswith("/"):
            path = posixpath.join(dest, _url_file_name(url, headers))
        else:
            path = dest
        parent = copier.make_dirs(posixpath.dirname(path) or "/")
        target = os.path.join(parent, posixpath.basename(path))
        copier.write_file(target, b"", mode=0o600)
        # Streamed: a large download must not sit in memory.
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            while chunk := response.read(_CHUNK):
                hasher.update(chunk)
                os.write(fd, chunk)
        except OSError as err:
            raise BuildError(f"ADD {redact(url)}: {err}") from err
        finally:
            os.close(fd)
    got = "sha256:" + hasher.hexdigest()
    if checksum and got != checksum:
        raise BuildError(f"digest mismatch for {redact(url)}: {got} "
                         f"(expected: {checksum}); nothing was added")
    mtime = 0.0
    if headers.get("Last-Modified"):
        try:
            import email.utils  # only ADD URLs need it (it pulls in socket, datetime)

            mtime = email.utils.parsedate_to_datetime(headers["Last-Modified"]).timestamp()
        except (TypeError, ValueError):
            mtime = 0.0
    os.utime(target, (mtime, mtime), follow_symlinks=False)
