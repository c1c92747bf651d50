"""A log file read line by line, across rotations and restarts, from a cursor.

:class:`FileFollower` yields each complete line of a log file with the cursor just
after it. The caller stores that cursor in the same transaction as whatever it derived
from the line; a follower started again from the stored cursor goes on with the next
line: none twice, none skipped. A last line without its newline yet is not yielded
until the newline arrives.

A cursor is a short JSON text: the file's device and inode, the offset after the
line, and a hash of the file's first bytes (up to 256, and never past the offset, so
they were already there when the cursor was made). The hash tells a file that kept
its inode but not its contents (truncated, or the inode reused by a new file) from
the one the cursor was made in.

What the follower handles, by looking at the path each time it has read the open file
to its end:

* rename and create (logrotate's default, ``postfix logrotate``): the old file is
  read to its end, through the open descriptor even when it has been renamed, then
  the new one from its start. The switch waits until the new file has a line, since
  until the writer reopens (after logrotate's postrotate) it still writes the old one;
* copytruncate (the file shrinks, or its first bytes change): the rest of the copy
  (a sibling starting with the same bytes) is read from the cursor's offset, then the
  file from its start. Lines written between logrotate's copy and its truncation are
  in neither, and are lost: that is copytruncate's own flaw;
* the file missing for a while: the follower waits for it;
* a restart: the cursor's file is looked for at the path and among its uncompressed
  siblings (``mail.log.1``, ``postfix.log.20240101-101010``, ``mail.log-20240101``),
  by inode and first bytes, or by first bytes alone (a copytruncate copy). It is read
  on from the cursor, then each newer uncompressed sibling, then the file at the path.

What cannot be recovered, with a warning naming the file: the cursor's file was
compressed (``mail.log.2.gz``: logrotate's ``compress`` without ``delaycompress``, or
rotated twice while the follower was stopped) or deleted. The follower then starts at
the beginning of the file at the path; the lines between the cursor and the end of
the lost file are not read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

log = logging.getLogger("smtpeter.deliveries")

# Bytes of a file's start whose hash goes into a cursor.
HEAD = 256
# Read this much at a time.
CHUNK = 1 << 20
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".Z", ".zip")


@dataclass(frozen=True)
class Cursor:
    """A position in a file: after ``offset`` bytes of the file (dev, ino) whose first
    ``head_len`` bytes hash to ``head_hash``."""

    dev: int
    ino: int
    offset: int
    head_len: int
    head_hash: str

    def encode(self) -> str:
        return json.dumps(
            {
                "dev": self.dev,
                "ino": self.ino,
                "off": self.offset,
                "hl": self.head_len,
                "hh": self.head_hash,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """The cursor in ``text``, or None when it is not one."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        fields = [data.get(k) for k in ("dev", "ino", "off", "hl")]
        numbers = [v for v in fields if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
        head_hash = data.get("hh")
        if len(numbers) != len(fields) or not isinstance(head_hash, str):
            return None
        dev, ino, offset, head_len = numbers
        if head_len > min(offset, HEAD):
            return None
        return cls(dev, ino, offset, head_len, head_hash)


def _hash(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()[:16]


def _starts_with(fh: BinaryIO, head: bytes) -> bool:
    return os.pread(fh.fileno(), len(head), 0) == head


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _open(path: Path) -> tuple[BinaryIO, os.stat_result] | None:
    try:
        fh = path.open("rb")
    except OSError:
        return None
    return fh, os.fstat(fh.fileno())


class FileFollower:
    """Follows the log file at ``path`` from ``cursor`` (None: from the start of the
    file at the path). Iterate :meth:`lines` for what is there now, or :meth:`follow`
    to wait for more."""

    def __init__(
        self, path: str | os.PathLike[str], cursor: str | None = None, *, poll: float = 0.2
    ) -> None:
        self.path = Path(path)
        self.poll = poll
        self._fh: BinaryIO | None = None
        self._dev = 0
        self._ino = 0
        self._offset = 0
        self._head = b""
        self._resume(cursor)

    # -- public ------------------------------------------------------------------

    @property
    def cursor(self) -> str | None:
        """The position after the last line yielded (or the one resumed from); None
        before any file was opened."""
        if self._fh is None:
            return None
        return Cursor(
            self._dev, self._ino, self._offset, len(self._head), _hash(self._head)
        ).encode()

    def lines(self) -> Iterator[tuple[str, str]]:
        """Each complete line there is now (without its newline, decoded as UTF-8 with
        undecodable bytes replaced), with the cursor after it; across rotations."""
        while True:
            if self._fh is None and not self._open_at_path():
                return
            self._check_truncation()
            yield from self._drain()
            if not (yield from self._advance()):
                return

    def follow(self, stop: threading.Event | None = None) -> Iterator[tuple[str, str]]:
        """Like :meth:`lines`, but waits (polling every ``poll`` seconds) for more,
        until ``stop`` is set."""
        while stop is None or not stop.is_set():
            idle = True
            for item in self.lines():
                idle = False
                yield item
            if idle:
                if stop is None:
                    time.sleep(self.poll)
                else:
                    stop.wait(self.poll)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> FileFollower:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------

    def _use(self, fh: BinaryIO, st: os.stat_result, offset: int, head: bytes) -> None:
        if self._fh is not None and self._fh is not fh:
            self._fh.close()
        self._fh, self._dev, self._ino = fh, st.st_dev, st.st_ino
        self._offset, self._head = offset, head

    def _open_at_path(self) -> bool:
        opened = _open(self.path)
        if opened is None:
            return False
        self._use(*opened, 0, b"")
        return True

    def _drain(self) -> Iterator[tuple[str, str]]:
        """The complete lines from the offset to the end of the open file."""
        assert self._fh is not None
        fh = self._fh
        fh.seek(self._offset)
        rest = b""
        while chunk := fh.read(CHUNK):
            if not _starts_with(fh, self._head):
                return  # truncated and written again since the check: see lines()
            rest += chunk
            *complete, rest = rest.split(b"\n")
            for raw in complete:
                yield self._step(raw, len(raw) + 1)

    def _step(self, raw: bytes, size: int) -> tuple[str, str]:
        if len(self._head) < HEAD:
            self._head = (self._head + raw + b"\n")[: min(HEAD, self._offset + size)]
        self._offset += size
        cursor = self.cursor
        assert cursor is not None
        return raw.decode("utf-8", "replace").rstrip("\r"), cursor

    def _finish(self) -> Iterator[tuple[str, str]]:
        """The rest of a file left for good, its last line even without a newline."""
        assert self._fh is not None
        while True:
            yield from self._drain()
            raw = os.pread(self._fh.fileno(), CHUNK, self._offset)
            if b"\n" not in raw:  # else the writer added a line since the drain
                break
        if raw:
            yield self._step(raw, len(raw))

    def _check_truncation(self) -> None:
        """Before reading on: if the open file is shorter than the offset or no longer
        starts with the bytes read from it (copytruncate, or truncated and written
        again), go on in its copy, or else read it again from its start."""
        assert self._fh is not None
        fh = self._fh
        if os.fstat(fh.fileno()).st_size >= self._offset and _starts_with(fh, self._head):
            return
        copy = self._find_copy(self._head, self._offset)
        if copy is not None:
            log.info("%s was truncated; reading the rest of its copy %s", self.path, copy[0])
            self._use(copy[1], copy[2], self._offset, self._head)
        else:
            log.warning("%s was truncated; reading it again from its start", self.path)
            self._offset, self._head = 0, b""

    def _siblings(self) -> list[tuple[Path, os.stat_result]]:
        """The uncompressed rotations of the file, oldest first."""
        found = []
        try:
            entries = list(self.path.parent.iterdir())
        except OSError:
            return []
        for entry in entries:
            name = entry.name
            if name == self.path.name or not name.startswith(self.path.name):
                continue
            if name[len(self.path.name)] not in ".-_" or name.endswith(COMPRESSED):
                continue
            st = _stat(entry)
            if st is not None and entry.is_file():
                found.append((entry, st))
        return sorted(found, key=lambda item: item[1].st_mtime_ns)

    def _advance(self) -> Generator[tuple[str, str], None, bool]:
        """At the end of the open file: go on to the file to read next, if it is time
        to (True), else stay (False). A generator for the lines of a last drain."""
        assert self._fh is not None
        fh = self._fh
        at_path = _stat(self.path)
        if at_path is not None and (at_path.st_dev, at_path.st_ino) == (self._dev, self._ino):
            # Still the file at the path: stay, unless it was truncated since the
            # drain (then lines() goes round again and sees it).
            return at_path.st_size < self._offset or not _starts_with(fh, self._head)
        # The open file is no longer at the path: renamed, deleted, or a rotation
        # resumed after a restart. Newer rotations first, then the file at the path.
        mtime = os.fstat(fh.fileno()).st_mtime_ns
        for path, st in self._siblings():
            if st.st_mtime_ns > mtime and (st.st_dev, st.st_ino) != (self._dev, self._ino):
                if at_path is not None and (st.st_dev, st.st_ino) == (
                    at_path.st_dev,
                    at_path.st_ino,
                ):
                    continue
                opened = _open(path)
                if opened is None:
                    continue
                yield from self._finish()
                self._use(*opened, 0, b"")
                return True
        if at_path is None or at_path.st_size == 0:
            return False  # the writer may still be writing the old file
        opened = _open(self.path)
        if opened is None:
            return False
        # The writer has moved on: what it wrote to the old file is there by now.
        yield from self._finish()
        self._use(*opened, 0, b"")
        return True

    # -- resuming ----------------------------------------------------------------

    def _find_copy(self, head: bytes, offset: int) -> tuple[Path, BinaryIO, os.stat_result] | None:
        """A rotation that starts with ``head`` and reaches ``offset``."""
        if not head:
            return None
        for path, st in reversed(self._siblings()):
            if (st.st_dev, st.st_ino) == (self._dev, self._ino) or st.st_size < offset:
                continue
            opened = _open(path)
            if opened is None:
                continue
            if _starts_with(opened[0], head):
                return path, *opened
            opened[0].close()
        return None

    def _resume(self, text: str | None) -> None:
        if text is None:
            self._open_at_path()
            return
        cursor = Cursor.decode(text)
        if cursor is None:
            log.warning("%s: ignoring a cursor that is none: %r", self.path, text[:200])
            self._open_at_path()
            return
        candidates = [(self.path, st) for st in [_stat(self.path)] if st is not None]
        candidates += reversed(self._siblings())
        by_content: tuple[Path, BinaryIO, os.stat_result] | None = None
        for path, st in candidates:
            if st.st_size < cursor.offset:
                continue
            opened = _open(path)
            if opened is None:
                continue
            fh, fst = opened
            head = os.pread(fh.fileno(), cursor.head_len, 0)
            if len(head) == cursor.head_len and _hash(head) == cursor.head_hash:
                if (fst.st_dev, fst.st_ino) == (cursor.dev, cursor.ino):
                    if by_content is not None:
                        by_content[1].close()
                    self._use(fh, fst, cursor.offset, head)
                    return
                if by_content is None and cursor.head_len > 0:
                    by_content = (path, fh, fst)
                    continue
            fh.close()
        if by_content is not None:
            path, fh, fst = by_content
            log.info("%s: resuming in %s, a copy of the file the cursor was in", self.path, path)
            self._use(fh, fst, cursor.offset, os.pread(fh.fileno(), cursor.head_len, 0))
            return
        if cursor.offset == 0:
            self._open_at_path()  # nothing was read: nothing can be lost
            return
        log.warning(
            "%s: the file the cursor was in (inode %d, offset %d) is gone (compressed,"
            " rotated more than once or deleted): reading %s from its start; the lines"
            " after the cursor in the lost file are not read",
            self.path,
            cursor.ino,
            cursor.offset,
            self.path,
        )
        self._open_at_path()
