"""Durable Raft storage: a segmented, checksummed write-ahead log and snapshot files.

This module owns everything a Raft member keeps on disk: term, vote, commit,
log entries and snapshots, and the in-memory copy of the stable log that the
core reads (``first_index``/``last_index``/``term``/``entries``/``snapshot``,
the shape of etcd's ``raft.Storage``). It must never send a message, touch the
network, or decide anything about Raft: the node calls :meth:`Storage.save`
and only sends what depends on it after that returned.

Data dir layout (this text is also in the README)::

    DATA_DIR/
      LOCK                         flock()ed by the one process using the dir; holds its pid
      MEMBER_ID                    the member id the dir belongs to   } identity markers:
      REMOVED                      present once that member was removed } see ``datadir``
      CLUSTER_ID                   a restored cluster's id          } (and ``cluster``)
      wal/
        0000000000000001.wal       WAL segments, numbered in the order they were written;
        0000000000000002.wal       only the highest is appended to. A new segment is cut
        ...                        when the active one passes ``segment_bytes`` and after
                                   every snapshot; a segment is deleted once the older of
                                   the two kept snapshots covers all its entries.
      snap/
        00000000000000012000-00000000000000000003.snap
                                   snapshot at log index 12000, term 3 (the newest two are
                                   kept; if the newest is damaged and the WAL still reaches
                                   back to the one before, the member starts from that one;
                                   otherwise it refuses to start, naming the file)
        *.tmp                      a snapshot being written; removed on start
        *.snap.damaged             a snapshot that failed its checksum, set aside on start

The snapshot's data is the node's envelope (the member address book and the
state machine's own snapshot bytes); everything is msgpack and crc32-checked.

A WAL segment is the 8-byte magic ``MRWAL001`` followed by records::

    u32 length | u32 crc32(type + payload) | u8 type | payload (msgpack, length bytes)

    1 ENTRIES     [[term, index, type, data], ...]  the log from index on is replaced
    2 HARD_STATE  [term, vote, commit]
    3 SNAPSHOT    [index, term, voters, learners]   a snapshot file is durable (compaction)
    4 INSTALL     [index, term, voters, learners]   the log was replaced by this snapshot
    5 HEADER      [prev_index, prev_term, hard_state, snapshot]   first record of a segment:
                  what a reader needs if the segments before it were deleted

A snapshot file is ``MRSNAP01``, u32 meta length, u32 crc32(meta), meta (msgpack
[index, term, voters, learners]), u64 data length, u32 crc32(data), data.

Recovery: a record that fails its length or checksum at the end of the newest
segment (nothing but it, or only zero bytes, after it) is a torn write from a
crash: it is truncated and everything before it is kept. Any other bad record
stops the start with :class:`CorruptWAL` naming the file and offset.

Writes are one ``write`` + one ``fsync`` per :meth:`Storage.save` call, done in a
worker thread so the event loop keeps running (a member whose disk hangs still
answers status, health and metrics). A save that only moves the commit index is
written without an fsync of its own (the next fsync covers it), at once when
nothing else is being saved (:meth:`save_commit_now`). The node
saves one ``Ready`` at a time, so every proposal that arrived during the previous
fsync shares the next one (group commit). Any write/fsync error (ENOSPC, EIO)
makes the storage refuse every later write with :class:`StorageFailed`; nothing
acknowledged is lost, because nothing is acknowledged before its fsync returned.
"""

# Why this module is over 600 lines: the WAL's writer and its recovery reader must
# agree byte for byte on the record format, segment headers and snapshot files, and
# crash-recovery rules (a torn tail vs. corruption) need both sides in view; keeping
# them in one module keeps that contract in one place. The identity markers are in
# datadir.py. See docs/architecture.md#a-put-from-the-command-line-to-the-wal-and-back.

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import itertools
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

# The data dir's identity markers live beside the WAL; offered from here as well.
from meshraft.raft.datadir import (  # noqa: F401
    MEMBER_ID_FILE,
    REMOVED_MARKER,
    RemovedMemberDataDir,
    check_data_dir_identity,
    mark_removed,
    write_member_id,
)
from meshraft.raft.errors import (
    CorruptSnapshot,
    CorruptWAL,
    DataDirLocked,
    StorageError,
    StorageFailed,
)
from meshraft.raft.messages import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

WAL_MAGIC = b"MRWAL001"
SNAP_MAGIC = b"MRSNAP01"
REC_ENTRIES, REC_HARD_STATE, REC_SNAPSHOT, REC_INSTALL, REC_HEADER = 1, 2, 3, 4, 5
_REC_TYPES = frozenset({REC_ENTRIES, REC_HARD_STATE, REC_SNAPSHOT, REC_INSTALL, REC_HEADER})
_HDR = struct.Struct("<IIB")  # length, crc32, type
_SNAP_META_HDR = struct.Struct("<II")
_SNAP_DATA_HDR = struct.Struct("<QI")
MAX_RECORD_BYTES = 1 << 30
_ENTRY_TYPES = {int(t): t for t in EntryType}
_ENTRY_OVERHEAD = 24  # rough per-entry bytes beyond data, for byte limits


_SECTOR = 512


def _valid_record_at(buf: bytes, view: memoryview, p: int) -> bool:
    if len(buf) - p < _HDR.size:
        return False
    length, crc, rtype = _HDR.unpack_from(buf, p)
    end = p + _HDR.size + length
    return (rtype in _REC_TYPES and end <= len(buf)
            and zlib.crc32(view[p + 8:end]) == crc)


def _is_torn_tail(buf: bytes, view: memoryview, off: int, end: int) -> bool:
    """Is the bad record at ``off`` (the newest segment's) a write the crash cut
    short, rather than damage to data that was synced? Only unsynced bytes can be
    torn, and they are always the end of the file (an fsync flushes every earlier
    write), so:

    - nothing but zeros from ``off`` on, or not even a whole header: torn;
    - the record runs to or past the end of the file: torn, unless a valid record
      starts after it (then its length field was damaged: refuse);
    - otherwise (a bad checksum with data after it): torn only if the filesystem
      left a zero-filled sector inside it (etcd's test), else refuse.
    """
    size = len(buf)
    if size - off < _HDR.size or not any(view[off:]):
        return True
    if end >= size:
        for rtype in _REC_TYPES:
            needle = bytes((rtype,))
            q = buf.find(needle, off + 1 + 8)
            while q != -1:
                if _valid_record_at(buf, view, q - 8):
                    return False
                q = buf.find(needle, q + 1)
        return True
    first = (off // _SECTOR + 1) * _SECTOR
    return any(not any(view[k:k + _SECTOR]) for k in range(first, end - _SECTOR + 1, _SECTOR))


class DiskIO:
    """The only place storage writes or syncs. Tests pass a subclass that fails
    (EIO on fsync, ENOSPC on write) to prove the node stops and loses nothing."""

    def write(self, fd: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


@dataclass
class StorageOptions:
    segment_bytes: int = 64 * 1024 * 1024  # cut a new WAL segment past this size
    snapshots_kept: int = 2


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int = 0
    last_index_at_close: int | None = None  # None while active
    superseded: bool = False  # everything in it was replaced by an installed snapshot


@dataclass
class RecoveryInfo:
    """What :meth:`Storage.open` found, for logs and status."""

    segments: int = 0
    records: int = 0
    entries: int = 0
    truncated_tail: tuple[str, int, int] | None = None  # (file, offset, bytes dropped)
    snapshot_index: int = 0
    seconds: float = 0.0
    removed_tmp: list[str] = field(default_factory=list)
    fell_back_from: str | None = None  # a damaged newest snapshot that was not used


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _record(rtype: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes((rtype,))))
    return _HDR.pack(len(payload), crc, rtype) + payload


def _meta_list(meta: SnapshotMeta) -> list:
    return [meta.index, meta.term, list(meta.conf_state.voters), list(meta.conf_state.learners)]


def _meta_from(obj: list) -> SnapshotMeta:
    index, term, voters, learners = obj
    return SnapshotMeta(index=int(index), term=int(term),
                        conf_state=ConfState(voters=[str(v) for v in voters],
                                             learners=[str(v) for v in learners]))


def _hs_list(hs: HardState) -> list:
    return [hs.term, hs.vote, hs.commit]


def _hs_from(obj: list) -> HardState:
    term, vote, commit = obj
    return HardState(term=int(term), vote=None if vote is None else str(vote), commit=int(commit))


def entry_size(e: Entry) -> int:
    return len(e.data) + _ENTRY_OVERHEAD


def snapshot_file_name(index: int, term: int) -> str:
    return f"{index:020d}-{term:020d}.snap"


def fsync_dir(path: Path, io: DiskIO | None = None) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (io or DiskIO()).fsync(fd)
    finally:
        os.close(fd)


def write_snapshot_file(snap_dir: Path, snapshot: Snapshot, io: DiskIO | None = None) -> Path:
    """Write ``snapshot`` durably: temp file, fsync, rename, fsync the directory."""
    io = io or DiskIO()
    meta = _pack(_meta_list(snapshot.meta))
    final = snap_dir / snapshot_file_name(snapshot.meta.index, snapshot.meta.term)
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        io.write(fd, SNAP_MAGIC + _SNAP_META_HDR.pack(len(meta), zlib.crc32(meta)) + meta
                 + _SNAP_DATA_HDR.pack(len(snapshot.data), zlib.crc32(snapshot.data)))
        io.write(fd, snapshot.data)
        io.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)  # give the space back (the disk may be full)
        raise
    os.close(fd)
    os.replace(tmp, final)
    fsync_dir(snap_dir, io)
    return final


def read_snapshot_file(path: Path) -> Snapshot:
    """Read and verify one snapshot file; :class:`CorruptSnapshot` if it is damaged."""
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise CorruptSnapshot(str(path), f"cannot read: {exc}") from exc
    if buf[:8] != SNAP_MAGIC:
        raise CorruptSnapshot(str(path), "bad magic")
    off = 8
    if len(buf) < off + _SNAP_META_HDR.size:
        raise CorruptSnapshot(str(path), "truncated header")
    mlen, mcrc = _SNAP_META_HDR.unpack_from(buf, off)
    off += _SNAP_META_HDR.size
    meta_b = buf[off:off + mlen]
    if len(meta_b) != mlen or zlib.crc32(meta_b) != mcrc:
        raise CorruptSnapshot(str(path), "metadata checksum mismatch")
    off += mlen
    if len(buf) < off + _SNAP_DATA_HDR.size:
        raise CorruptSnapshot(str(path), "truncated data header")
    dlen, dcrc = _SNAP_DATA_HDR.unpack_from(buf, off)
    off += _SNAP_DATA_HDR.size
    data = buf[off:]
    if len(data) != dlen:
        raise CorruptSnapshot(str(path), f"data is {len(data)} bytes, header says {dlen}")
    if zlib.crc32(data) != dcrc:
        raise CorruptSnapshot(str(path), "data checksum mismatch")
    try:
        meta = _meta_from(_unpack(meta_b))
    except Exception as exc:
        raise CorruptSnapshot(str(path), f"bad metadata: {exc}") from exc
    return Snapshot(meta=meta, data=bytes(data))


class _DirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "LOCK"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(self.fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirLocked(
                    f"data dir {data_dir} is in use by another process (pid {holder}); "
                    "two members cannot share one data dir"
                ) from exc
            raise StorageError(f"cannot lock {self.path}: {exc}") from exc
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1


class Storage:
    """One member's durable state. Create with :meth:`open` (blocking; call it in
    a thread from async code). Reads are served from memory; :meth:`save` and
    :meth:`create_snapshot` write and fsync in a worker thread."""

    def __init__(self, data_dir: Path, options: StorageOptions, io: DiskIO,
                 logger: logging.Logger | logging.LoggerAdapter) -> None:
        self.data_dir = data_dir
        self.wal_dir = data_dir / "wal"
        self.snap_dir = data_dir / "snap"
        self.options = options
        self.io = io
        self.log = logger
        self.hard_state = HardState()
        # The in-memory stable log: entries[k] has index offset_index + 1 + k.
        self._offset_index = 0
        self._offset_term = 0
        self._entries: list[Entry] = []
        self._log_bytes_since_snapshot = 0
        self._snapshot_meta = SnapshotMeta()
        self._snapshot_data: bytes | None = b""
        # WAL segments whose entries all precede this index may be deleted: the older
        # of the two kept snapshots, so a damaged newest one can be replaced.
        self._wal_keep_from = 0
        self._segments: list[_Segment] = []
        self._fd = -1
        self._lock: _DirLock | None = None
        self._write_lock = asyncio.Lock()
        self.failed: str | None = None
        self.recovery = RecoveryInfo()
        self.fsyncs = 0
        # Observability (meshraft.ops reads these; no metrics library here): bytes written
        # to the WAL, and fsync_observers(seconds) called after every WAL fsync of save()
        # -- in the worker thread that did it, so an observer must be thread-safe.
        self.wal_bytes_written = 0
        self.fsync_observers: list[Callable[[float], None]] = []

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, data_dir: str | os.PathLike, *, options: StorageOptions | None = None,
             io: DiskIO | None = None,
             logger: logging.Logger | logging.LoggerAdapter | None = None) -> Storage:
        """Lock ``data_dir`` (creating it), recover the WAL and the newest snapshot.

        Raises :class:`DataDirLocked`, :class:`CorruptWAL`, :class:`CorruptSnapshot`."""
        t0 = time.monotonic()
        path = Path(data_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data dir {path}: {exc}") from exc
        self = cls(path, options or StorageOptions(), io or DiskIO(),
                   logger or logging.getLogger("meshraft.raft.storage"))
        try:
            self._lock = _DirLock(path)
        except OSError as exc:
            raise StorageError(f"cannot use data dir {path}: {exc}") from exc
        try:
            for sub in (self.wal_dir, self.snap_dir):
                if not sub.exists():
                    sub.mkdir()
                    fsync_dir(path)
            for tmp in sorted(self.snap_dir.glob("*.tmp")):
                tmp.unlink()
                self.recovery.removed_tmp.append(str(tmp))
            # Replay makes millions of objects that all stay alive; the cyclic GC
            # would rescan them again and again (that was half of a restart's time).
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                self._recover()
            finally:
                if gc_was_enabled:
                    gc.enable()
        except StorageError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise StorageError(f"cannot read data dir {path}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self.recovery.seconds = time.monotonic() - t0
        return self

    def _recover(self) -> None:
        seg_paths = []
        for p in self.wal_dir.glob("*.wal"):
            try:
                seg_paths.append((int(p.stem), p))
            except ValueError:
                raise StorageError(f"unexpected file in WAL dir: {p}") from None
        seg_paths.sort()
        self.recovery.segments = len(seg_paths)
        seqs = [seq for seq, _ in seg_paths]
        for a, b in itertools.pairwise(seqs):
            if b != a + 1:
                missing = self.wal_dir / f"{a + 1:016d}.wal"
                raise CorruptWAL(str(missing), 0, f"segment missing (have {a} and {b})")
        if not seg_paths and self._snapshot_files():
            # Never start over as an empty member from a dir that held data.
            raise StorageError(f"{self.wal_dir} has no WAL segments but {self.snap_dir} has "
                               "snapshots: the WAL was lost; refusing to start empty")
        initialized = False  # the first segment read sets the log's starting point
        snap_meta = SnapshotMeta()
        for n, (seq, p) in enumerate(seg_paths):
            is_last = n == len(seg_paths) - 1
            seg = _Segment(seq=seq, path=p)
            buf = p.read_bytes()
            valid_end = self._replay_segment(p, buf, is_last, initialized)
            initialized = True
            snap_meta = self._snapshot_meta
            if valid_end < len(buf):
                dropped = len(buf) - valid_end
                self.log.warning("WAL %s: torn tail at offset %d, truncating %d bytes",
                                 p, valid_end, dropped)
                self.recovery.truncated_tail = (str(p), valid_end, dropped)
                with open(p, "r+b") as f:
                    f.truncate(valid_end)
                    if valid_end == len(WAL_MAGIC):
                        # The crash tore the segment's header record: write it again, a
                        # reader may need it once the segments before are compacted.
                        f.seek(valid_end)
                        f.write(self._header_record())
                        valid_end = f.tell()
                    f.flush()
                    os.fsync(f.fileno())
            seg.size = valid_end
            if not is_last:
                seg.last_index_at_close = self.last_index()
            self._segments.append(seg)
        # The log must be contiguous with the newest snapshot the WAL names.
        if snap_meta.index > 0:
            if self._offset_index > snap_meta.index:
                raise CorruptWAL(str(seg_paths[0][1]), 0,
                                 f"log starts after {self._offset_index} but the newest "
                                 f"snapshot is at {snap_meta.index}: entries are missing")
            log_start = self._offset_index
            spath = self.snap_dir / snapshot_file_name(snap_meta.index, snap_meta.term)
            try:
                if not spath.exists():
                    raise CorruptSnapshot(str(spath),
                                          "the WAL names this snapshot but it is missing")
                snap = read_snapshot_file(spath)
            except CorruptSnapshot as exc:
                snap = self._fallback_snapshot(exc, snap_meta)
            self._compact_memory(snap.meta.index, snap.meta.term)
            self._snapshot_data = snap.data
            self._snapshot_meta = snap.meta
            older = [i for i, _ in self._snapshot_files() if log_start <= i < snap.meta.index]
            self._wal_keep_from = max(older) if older else snap.meta.index
        if self.hard_state.commit > self.last_index():
            raise CorruptWAL(str(seg_paths[-1][1]) if seg_paths else str(self.wal_dir), 0,
                             f"commit index {self.hard_state.commit} is past the last "
                             f"entry {self.last_index()}")
        self.recovery.snapshot_index = self._snapshot_meta.index
        self.recovery.entries = len(self._entries)
        if not self._segments:
            self._cut_segment_sync(first=True)
        else:
            self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)

    def _replay_segment(self, path: Path, buf: bytes, is_last: bool, initialized: bool) -> int:
        """Apply every record of one segment; return the end of its valid data."""
        size = len(buf)
        if buf[:8] != WAL_MAGIC:
            if is_last and size < 8 and (WAL_MAGIC.startswith(buf) or not buf.strip(b"\0")):
                return self._rewrite_header_needed(path, initialized)
            raise CorruptWAL(str(path), 0, "bad segment magic")
        off = 8
        view = memoryview(buf)
        first_record = True
        while off < size:
            reason = None
            end = off
            if size - off < _HDR.size:
                reason = "truncated record header"
                end = size
            else:
                length, crc, rtype = _HDR.unpack_from(buf, off)
                end = off + _HDR.size + length
                if length > MAX_RECORD_BYTES:
                    reason = f"record length {length} too large"
                elif end > size:
                    reason = f"record of {length} bytes runs past the end of the file"
                elif zlib.crc32(view[off + 8:end]) != crc:
                    reason = "checksum mismatch"
                elif rtype not in _REC_TYPES:
                    reason = f"unknown record type {rtype}"
            if reason is not None:
                # A torn write: only possible at the end of the newest segment.
                if is_last and _is_torn_tail(buf, view, off, end):
                    return off
                raise CorruptWAL(str(path), off, reason)
            try:
                obj = _unpack(view[off + _HDR.size:end])
                self._apply_record(rtype, obj, initialized or not first_record)
            except CorruptWAL:
                raise
            except Exception as exc:  # checksum matched but content is impossible
                raise CorruptWAL(str(path), off, f"bad record content: {exc!r}") from exc
            first_record = False
            self.recovery.records += 1
            off = end
        return off

    def _snapshot_files(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.snap_dir.glob("*.snap"):
            try:
                out.append((int(p.name.split("-")[0]), p))
            except ValueError:
                continue
        return sorted(out)

    def _fallback_snapshot(self, exc: CorruptSnapshot, newest: SnapshotMeta) -> Snapshot:
        """The newest snapshot file is damaged or missing: use the one before it if
        the WAL still holds every entry after it (compaction keeps the WAL back to
        the older of the two kept snapshots for exactly this)."""
        for index, path in reversed(self._snapshot_files()):
            if index >= newest.index or index < self._offset_index:
                continue
            try:
                snap = read_snapshot_file(path)
            except CorruptSnapshot:
                continue
            if self.term(snap.meta.index) != snap.meta.term:
                continue
            self.log.error("%s; using the previous snapshot %s and the log after it",
                           exc, path)
            bad = Path(exc.path)
            if bad.exists():
                bad.rename(bad.with_name(bad.name + ".damaged"))
            self.recovery.fell_back_from = exc.path
            return snap
        raise exc

    def _rewrite_header_needed(self, path: Path, initialized: bool) -> int:
        # Crash while creating the segment: start it again from nothing.
        with open(path, "wb") as f:
            f.write(WAL_MAGIC)
            f.write(self._header_record())
            f.flush()
            os.fsync(f.fileno())
        return len(WAL_MAGIC) + len(self._header_record())

    def _apply_record(self, rtype: int, obj: Any, initialized: bool) -> None:
        if rtype == REC_ENTRIES:
            normal, types = EntryType.NORMAL, _ENTRY_TYPES
            # msgpack already gives ints and bytes; this loop is most of a restart's time.
            ents = [Entry(t, i, normal if ty == 0 else types[ty], d) for t, i, ty, d in obj]
            self._append_memory(ents, replay=True)
        elif rtype == REC_HARD_STATE:
            self.hard_state = _hs_from(obj)
        elif rtype == REC_SNAPSHOT:
            meta = _meta_from(obj)
            if meta.index >= self._snapshot_meta.index:
                self._snapshot_meta = meta
        elif rtype == REC_INSTALL:
            meta = _meta_from(obj)
            self._snapshot_meta = meta
            self._offset_index, self._offset_term = meta.index, meta.term
            self._entries = []
        elif rtype == REC_HEADER:
            prev_index, prev_term, hs, snap = obj
            if not initialized:
                self._offset_index, self._offset_term = int(prev_index), int(prev_term)
                self._entries = []
            self.hard_state = _hs_from(hs)
            meta = _meta_from(snap)
            if meta.index >= self._snapshot_meta.index:
                self._snapshot_meta = meta

    # ---------------------------------------------------------------- reads (etcd Storage)

    def initial_state(self) -> tuple[HardState, ConfState]:
        cs = self._snapshot_meta.conf_state
        return (HardState(self.hard_state.term, self.hard_state.vote, self.hard_state.commit),
                ConfState(list(cs.voters), list(cs.learners)))

    def first_index(self) -> int:
        return self._offset_index + 1

    def last_index(self) -> int:
        return self._offset_index + len(self._entries)

    def term(self, index: int) -> int | None:
        """The term of entry ``index``; None if it is compacted away or not yet written."""
        if index == self._offset_index:
            return self._offset_term
        k = index - self._offset_index - 1
        if 0 <= k < len(self._entries):
            return self._entries[k].term
        return None

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi); at least one if any, at most ``max_bytes`` in total."""
        if lo <= self._offset_index:
            raise IndexError(f"entries from {lo} are compacted (first index {self.first_index()})")
        if hi > self.last_index() + 1:
            raise IndexError(f"entries up to {hi - 1} requested, last index {self.last_index()}")
        base = self._offset_index + 1
        out = self._entries[lo - base:hi - base]
        if max_bytes is not None and out:
            total = 0
            for k, e in enumerate(out):
                total += entry_size(e)
                if total > max_bytes and k > 0:
                    return out[:k]
        return out

    def snapshot(self) -> Snapshot:
        """The newest durable snapshot (index 0 and empty data if none)."""
        if self._snapshot_data is None:
            snap = read_snapshot_file(self.snap_dir / snapshot_file_name(
                self._snapshot_meta.index, self._snapshot_meta.term))
            self._snapshot_data = snap.data
        return Snapshot(meta=self._snapshot_meta, data=self._snapshot_data)

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot_meta

    @property
    def entries_since_snapshot(self) -> int:
        return self.last_index() - self._snapshot_meta.index

    @property
    def bytes_since_snapshot(self) -> int:
        return self._log_bytes_since_snapshot

    # ---------------------------------------------------------------- in-memory log

    def _append_memory(self, ents: Sequence[Entry], replay: bool = False) -> None:
        if not ents:
            return
        first = ents[0].index
        if first <= self._offset_index:  # already covered by the compaction point
            ents = [e for e in ents if e.index > self._offset_index]
            if not ents:
                return
            first = ents[0].index
        if first > self.last_index() + 1:
            raise CorruptWAL(str(self.wal_dir), 0,
                             f"gap in the log: entry {first} follows {self.last_index()}")
        del self._entries[first - self._offset_index - 1:]
        self._entries.extend(ents)
        self._log_bytes_since_snapshot += sum(map(len, [e.data for e in ents]))

    def _compact_memory(self, index: int, term: int) -> None:
        if index <= self._offset_index:
            return
        if index > self.last_index():
            self._entries = []
        else:
            del self._entries[:index - self._offset_index]
        self._offset_index, self._offset_term = index, term
        self._log_bytes_since_snapshot = sum(len(e.data) for e in self._entries)

    # ---------------------------------------------------------------- writes

    def _check(self) -> None:
        if self.failed is not None:
            raise StorageFailed(f"storage failed earlier, refusing writes: {self.failed}")
        if self._fd < 0:
            raise StorageFailed("storage is closed")

    def _fail(self, what: str, exc: BaseException) -> StorageFailed:
        self.failed = f"{what}: {exc}"
        self.log.error("storage failed, no more writes will be accepted: %s", self.failed)
        return StorageFailed(self.failed)

    def _header_record(self) -> bytes:
        return _record(REC_HEADER, _pack([
            self._offset_index + len(self._entries), self.term(self.last_index()) or 0,
            _hs_list(self.hard_state), _meta_list(self._snapshot_meta)]))

    def _cut_segment_sync(self, first: bool = False) -> None:
        """Close the active segment (already fsynced) and start the next one."""
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = self.wal_dir / f"{seq:016d}.wal"
        data = WAL_MAGIC + self._header_record()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            self.io.write(fd, data)
            self.io.fsync(fd)
            fsync_dir(self.wal_dir, self.io)
        except BaseException:
            os.close(fd)
            raise
        if self._fd >= 0:
            os.close(self._fd)
            self._segments[-1].last_index_at_close = self.last_index()
        self._fd = fd
        self._segments.append(_Segment(seq=seq, path=path, size=len(data)))
        self.fsyncs += 2

    def _write_sync(self, buf: bytes, sync: bool = True) -> None:
        self.io.write(self._fd, buf)
        self._segments[-1].size += len(buf)
        self.wal_bytes_written += len(buf)
        if sync:
            t0 = time.perf_counter()
            self.io.fsync(self._fd)
            self.fsyncs += 1
            if self.fsync_observers:
                took = time.perf_counter() - t0
                for observe in self.fsync_observers:
                    observe(took)

    def save_commit_now(self, hard_state: HardState) -> bool:
        """Record ``hard_state`` at once when its commit index is all that changed:
        one small write to the page cache, no fsync (as in :meth:`save`), nothing
        awaited. False, with nothing written, when anything else changed, a save is
        under way, or the segment is full: use :meth:`save` then.

        Why it exists: a leader's every commit is such a Ready, and it is on the
        path of every write's reply; going through :meth:`save` as a task costs
        loop iterations (each a system call and a wake-up) before the apply."""
        hs = self.hard_state
        if (self._write_lock.locked() or hard_state.term != hs.term
                or hard_state.vote != hs.vote):
            return False
        self._check()
        buf = _record(REC_HARD_STATE, _pack(_hs_list(hard_state)))
        if self._segments[-1].size + len(buf) >= self.options.segment_bytes:
            return False
        try:
            self._write_sync(buf, sync=False)
        except OSError as exc:
            raise self._fail(f"WAL write on {self._segments[-1].path}", exc) from exc
        self.hard_state = HardState(hard_state.term, hard_state.vote, hard_state.commit)
        return True

    async def save(self, hard_state: HardState | None = None, entries: Sequence[Entry] = (),
                   snapshot: Snapshot | None = None) -> bool:
        """Make ``snapshot`` (one received from the leader), ``entries`` and
        ``hard_state`` durable with one write and one fsync (plus the snapshot
        file's own), then update the in-memory log. Returns whether it fsynced.
        Raises :class:`StorageFailed`."""
        if hard_state is None and not entries and snapshot is None:
            return False
        async with self._write_lock:
            self._check()
            if snapshot is not None and snapshot.meta.index > 0:
                try:
                    await asyncio.to_thread(write_snapshot_file, self.snap_dir, snapshot, self.io)
                except OSError as exc:
                    raise self._fail("writing received snapshot", exc) from exc
            parts = []
            if snapshot is not None and snapshot.meta.index > 0:
                parts.append(_record(REC_INSTALL, _pack(_meta_list(snapshot.meta))))
            if entries:
                parts.append(_record(REC_ENTRIES, _pack(
                    [[e.term, e.index, int(e.type), e.data] for e in entries])))
            if hard_state is not None:
                parts.append(_record(REC_HARD_STATE, _pack(_hs_list(hard_state))))
            buf = b"".join(parts)
            # Only a new commit index needs no fsync of its own (etcd does the same):
            # it is recomputed from a quorum after a crash, and the next fsync covers it.
            sync = bool(entries) or snapshot is not None or (
                hard_state is not None and (hard_state.term, hard_state.vote)
                != (self.hard_state.term, self.hard_state.vote))
            try:
                if sync:
                    await asyncio.to_thread(self._write_sync, buf)
                else:
                    self._write_sync(buf, sync=False)  # a small write to the page cache
            except OSError as exc:
                raise self._fail(f"WAL write/fsync on {self._segments[-1].path}", exc) from exc
            # Durable: now the in-memory view may show it.
            if snapshot is not None and snapshot.meta.index > 0:
                self._snapshot_meta = snapshot.meta
                self._snapshot_data = snapshot.data
                self._offset_index, self._offset_term = snapshot.meta.index, snapshot.meta.term
                self._entries = []
                self._log_bytes_since_snapshot = 0
                self._wal_keep_from = snapshot.meta.index  # the log before it is gone
                for seg in self._segments[:-1]:
                    seg.superseded = True
            if entries:
                self._append_memory(entries)
            if hard_state is not None:
                self.hard_state = HardState(hard_state.term, hard_state.vote, hard_state.commit)
            try:
                if snapshot is not None and snapshot.meta.index > 0:
                    await asyncio.to_thread(self._after_snapshot_sync, True)
                elif self._segments[-1].size >= self.options.segment_bytes:
                    await asyncio.to_thread(self._cut_segment_sync)
            except OSError as exc:
                raise self._fail("cutting a WAL segment", exc) from exc
            return sync

    async def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> SnapshotMeta:
        """Persist the state machine's ``data`` as of applied entry ``index``: write
        the snapshot file durably, record it in the WAL, compact the in-memory log
        and the WAL segments it covers, and keep only the newest snapshot files.

        The (possibly large) file is written without holding up :meth:`save`; only
        the WAL record and the compaction wait for the write lock. Returns the new
        snapshot's metadata, or the newer one already there (nothing written)."""
        self._check()
        if index <= self._snapshot_meta.index:
            return self._snapshot_meta
        term = self.term(index)
        if term is None:
            raise ValueError(f"cannot snapshot at {index}: not in the log "
                             f"[{self.first_index()}, {self.last_index()}]")
        meta = SnapshotMeta(index=index, term=term,
                            conf_state=ConfState(list(conf_state.voters),
                                                 list(conf_state.learners)))
        try:
            await asyncio.to_thread(write_snapshot_file, self.snap_dir, Snapshot(meta, data),
                                    self.io)
        except OSError as exc:
            raise self._fail("writing snapshot", exc) from exc
        async with self._write_lock:
            self._check()
            if index <= self._snapshot_meta.index or self.term(index) != term:
                return self._snapshot_meta  # a snapshot from the leader got there first
            try:
                await asyncio.to_thread(self._write_sync,
                                        _record(REC_SNAPSHOT, _pack(_meta_list(meta))))
            except OSError as exc:
                raise self._fail("writing snapshot record", exc) from exc
            self._wal_keep_from = self._snapshot_meta.index
            self._snapshot_meta = meta
            self._snapshot_data = data
            self._compact_memory(index, term)
            try:
                await asyncio.to_thread(self._after_snapshot_sync, False)
            except OSError as exc:
                raise self._fail("compacting after snapshot", exc) from exc
            return meta

    def _after_snapshot_sync(self, installed: bool) -> None:
        self._cut_segment_sync()
        # Delete the oldest segments while a snapshot covers all their entries.
        removed = 0
        while len(self._segments) > 1:
            seg = self._segments[0]
            assert seg.last_index_at_close is not None
            if not (seg.superseded or seg.last_index_at_close <= self._wal_keep_from):
                break
            seg.path.unlink()
            self._segments.pop(0)
            removed += 1
        if removed:
            fsync_dir(self.wal_dir, self.io)
        snaps = sorted(self.snap_dir.glob("*.snap"))
        current = snapshot_file_name(self._snapshot_meta.index, self._snapshot_meta.term)
        keep = [p for p in snaps if p.name <= current][-self.options.snapshots_kept:]
        gone = [p for p in snaps if p not in keep]
        for p in gone:
            p.unlink()
        if gone:
            fsync_dir(self.snap_dir, self.io)
        self.log.debug("snapshot at %d (%s): removed %d WAL segments, %d old snapshots",
                       self._snapshot_meta.index, "installed" if installed else "local",
                       removed, len(gone))

    def segment_paths(self) -> list[Path]:
        return [s.path for s in self._segments]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock is not None:
            self._lock.release()
            self._lock = None
