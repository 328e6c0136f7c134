"""The backup file: a kv state machine snapshot at one revision, checksummed.

This module owns the file format that ``meshraft snapshot save`` writes and
``snapshot status``/``snapshot restore`` read, and restoring a file into a new
member's data dir. Layout (version 1)::

    8 bytes   magic b"MRBACKUP"
    u32 BE    format version (1)
    u32 BE    header length H
    H bytes   header, a msgpack map: revision, keys, data_size, data_sha256 (hex),
              compact_revision, created (unix seconds), member (who served it),
              meshraft (version)
    data_size bytes   the state machine's ``snapshot()`` bytes, as the member gave them
    32 bytes  sha256 of everything before it (magic to the end of the data)

The data is whatever the state machine's snapshot holds (current data, history,
sessions: ``KVStateMachine.snapshot``), so the file stays correct as the
snapshot grows; ``data_sha256`` is the checksum the member computed when it took
the snapshot, checked again on download and on every read. A file that is
truncated, has another magic or version, or fails a checksum is refused with
``BadBackup`` saying which. Writers go through ``BackupWriter``: a temp file
next to the target, renamed only once complete and verified, so a failed save
never leaves a half file under the target's name.

It never talks to the network (the client downloads; ``maintenance`` serves) and
never writes into an existing data dir (``raft.restore`` refuses one).
See docs/architecture.md#backups-and-leader-moves.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

__all__ = ["BACKUP_MAGIC", "BACKUP_VERSION", "BackupInfo", "BackupWriter", "BadBackup",
           "cluster_id_for", "read_backup", "read_backup_info", "restore_member"]

BACKUP_MAGIC = b"MRBACKUP"
BACKUP_VERSION = 1
_PREFIX = struct.Struct(">8sII")  # magic, version, header length
MAX_HEADER = 64 * 1024
_TRAILER = 32  # sha256 of everything before it
_READ_BLOCK = 1 << 20


class BadBackup(Exception):
    """The file is not a usable backup; the message says why (one line)."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a backup file's header says (and, once read, what it holds)."""

    revision: int
    keys: int
    data_size: int
    data_sha256: str
    compact_revision: int = 0
    created: float = 0.0
    member: str = ""
    meshraft: str = ""
    file_size: int = 0
    version: int = BACKUP_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _header_bytes(info: BackupInfo) -> bytes:
    return msgpack.packb({
        "revision": info.revision, "keys": info.keys, "data_size": info.data_size,
        "data_sha256": info.data_sha256, "compact_revision": info.compact_revision,
        "created": info.created, "member": info.member, "meshraft": info.meshraft,
    }, use_bin_type=True)


def _parse_header(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        h = msgpack.unpackb(raw, raw=False, max_str_len=4096, max_bin_len=0,
                            max_array_len=64, max_map_len=64, max_ext_len=0)
    except Exception as exc:
        raise BadBackup(f"{path}: damaged header ({type(exc).__name__})") from None
    ints = ("revision", "keys", "data_size")
    if not isinstance(h, dict) or any(type(h.get(k)) is not int or h[k] < 0 for k in ints):
        raise BadBackup(f"{path}: damaged header (missing or bad fields)")
    sha = h.get("data_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise BadBackup(f"{path}: damaged header (no data checksum)")
    return h


class BackupWriter:
    """Writes one backup file: ``begin(info)``, ``write(chunk)`` ..., ``commit()``
    (verifies the data's checksum and size, fsyncs, renames into place), or
    ``abort()`` (removes the temp file). Use as a context manager: leaving it
    without commit() aborts."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        self._fh: BinaryIO | None = None
        self._file_hash = hashlib.sha256()
        self._data_hash = hashlib.sha256()
        self._written = 0
        self.info: BackupInfo | None = None

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self.abort()

    def begin(self, info: BackupInfo) -> None:
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory")
        self.info = info
        self._fh = open(self.tmp, "wb")
        header = _header_bytes(info)
        self._put(_PREFIX.pack(BACKUP_MAGIC, BACKUP_VERSION, len(header)) + header)

    def _put(self, data: bytes) -> None:
        assert self._fh is not None
        self._fh.write(data)
        self._file_hash.update(data)

    def write(self, chunk: bytes) -> None:
        assert self.info is not None
        if self._written + len(chunk) > self.info.data_size:
            raise BadBackup(f"the member sent more than the {self.info.data_size} bytes "
                            "it announced")
        self._put(chunk)
        self._data_hash.update(chunk)
        self._written += len(chunk)

    @property
    def written(self) -> int:
        return self._written

    def commit(self) -> BackupInfo:
        assert self._fh is not None and self.info is not None
        if self._written != self.info.data_size:
            raise BadBackup(f"got {self._written} of {self.info.data_size} bytes")
        if self._data_hash.hexdigest() != self.info.data_sha256:
            raise BadBackup("the downloaded snapshot does not match the member's checksum")
        self._fh.write(self._file_hash.digest())
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return read_backup_info(self.path)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.tmp.unlink(missing_ok=True)


def _open_checked(path: Path) -> tuple[BinaryIO, dict[str, Any], int, int]:
    """(open file positioned at the data, header, header end offset, file size)."""
    try:
        fh = open(path, "rb")
        size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise BadBackup(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        prefix = fh.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise BadBackup(f"{path}: truncated ({size} bytes): not a complete backup")
        magic, version, hlen = _PREFIX.unpack(prefix)
        if magic != BACKUP_MAGIC:
            raise BadBackup(f"{path} is not a meshraft backup (wrong magic)")
        if version != BACKUP_VERSION:
            raise BadBackup(f"{path}: backup format version {version} is not supported "
                            f"(this meshraft reads version {BACKUP_VERSION})")
        if hlen > MAX_HEADER:
            raise BadBackup(f"{path}: damaged header (length {hlen})")
        raw = fh.read(hlen)
        if len(raw) < hlen:
            raise BadBackup(f"{path}: truncated in its header")
        h = _parse_header(raw, path)
        start = _PREFIX.size + hlen
        expected = start + h["data_size"] + _TRAILER
        if size < expected:
            raise BadBackup(f"{path}: truncated: {size} bytes, the header says {expected}")
        if size > expected:
            raise BadBackup(f"{path}: {size - expected} unexpected bytes after the end")
        return fh, h, start, size
    except BaseException:
        fh.close()
        raise


def _verify(path: Path, want_data: bool) -> tuple[BackupInfo, bytes | None]:
    fh, h, start, size = _open_checked(path)
    file_hash, data_hash = hashlib.sha256(), hashlib.sha256()
    parts: list[bytes] = []
    with fh:
        fh.seek(0)
        file_hash.update(fh.read(start))
        left = h["data_size"]
        while left:
            block = fh.read(min(left, _READ_BLOCK))
            if not block:
                raise BadBackup(f"{path}: truncated")
            file_hash.update(block)
            data_hash.update(block)
            if want_data:
                parts.append(block)
            left -= len(block)
        trailer = fh.read(_TRAILER)
    if trailer != file_hash.digest():
        raise BadBackup(f"{path}: checksum mismatch: the file is damaged")
    if data_hash.hexdigest() != h["data_sha256"]:
        raise BadBackup(f"{path}: data checksum mismatch: the file is damaged")
    info = BackupInfo(
        revision=h["revision"], keys=h["keys"], data_size=h["data_size"],
        data_sha256=h["data_sha256"],
        compact_revision=int(h.get("compact_revision") or 0),
        created=float(h.get("created") or 0.0), member=str(h.get("member") or ""),
        meshraft=str(h.get("meshraft") or ""), file_size=size)
    return info, (b"".join(parts) if want_data else None)


def read_backup_info(path: str | os.PathLike) -> BackupInfo:
    """Verify the whole file (both checksums) and return its header. BadBackup."""
    return _verify(Path(path), want_data=False)[0]


def read_backup(path: str | os.PathLike) -> tuple[BackupInfo, bytes]:
    """Verify the file and return its header and the state machine's bytes. BadBackup."""
    info, data = _verify(Path(path), want_data=True)
    assert data is not None
    return info, data


def cluster_id_for(info: BackupInfo, peers: dict[str, str], token: str = "") -> str:
    """The new cluster's id: the same for every member restored from one backup with
    the same peers (and token), so they recognise each other; never the id of the
    cluster the backup came from (that one had none, or was restored with other
    peers or another backup)."""
    h = hashlib.sha256(b"meshraft-cluster\0" + info.data_sha256.encode() + b"\0"
                       + token.encode() + b"\0")
    for pid in sorted(peers):
        h.update(f"{pid}={peers[pid]}\0".encode())
    return h.hexdigest()[:16]


async def restore_member(path: str | os.PathLike, data_dir: str | os.PathLike, node_id: str,
                         peers: dict[str, str], token: str = "") -> tuple[BackupInfo, str]:
    """Create ``data_dir`` for member ``node_id`` of a new cluster whose members are
    ``peers`` (id -> HOST:PORT), from the backup at ``path``. Returns the backup's
    header and the new cluster id. Raises BadBackup (a damaged or foreign file, or
    data the state machine cannot load), NonEmptyDataDir, StorageError, ValueError."""
    from meshraft.kv.state_machine import KVStateMachine
    from meshraft.raft.restore import check_empty, seed_data_dir

    check_empty(data_dir)  # before reading a possibly large file
    info, data = read_backup(path)
    try:
        KVStateMachine().restore(data)
    except Exception as exc:  # the checksum held: written by an incompatible version
        raise BadBackup(f"{path}: the state machine cannot load this snapshot: {exc}") from None
    cid = cluster_id_for(info, peers, token)
    await seed_data_dir(data_dir, node_id, list(peers), data, cid)
    return info, cid


def new_info(*, revision: int, keys: int, data_size: int, data_sha256: str,
             compact_revision: int, member: str) -> BackupInfo:
    """A header for a backup being written now."""
    from meshraft import __version__

    return BackupInfo(revision=revision, keys=keys, data_size=data_size,
                      data_sha256=data_sha256, compact_revision=compact_revision,
                      created=time.time(), member=member, meshraft=__version__)
