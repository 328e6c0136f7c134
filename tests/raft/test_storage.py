"""Storage: what survives a restart, what a torn or garbled WAL does, and what a
failing disk does. Every test reopens the data dir the way a restarted process
would and checks what it reads back."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshraft.raft import storage as storage_mod
from meshraft.raft.errors import (
    CorruptSnapshot,
    CorruptWAL,
    DataDirLocked,
    StorageError,
    StorageFailed,
)
from meshraft.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from meshraft.raft.storage import DiskIO, Storage, StorageOptions, snapshot_file_name


def ent(term: int, index: int, data: bytes | None = None) -> Entry:
    return Entry(term=term, index=index, data=data if data is not None else b"e%d" % index)


async def fill(s: Storage, lo: int, hi: int, term: int = 1) -> None:
    for i in range(lo, hi + 1):
        await s.save(HardState(term, "1", i - 1), [ent(term, i)])


def reopen(s: Storage, **kw) -> Storage:
    s.close()
    return Storage.open(s.data_dir, **kw)


def all_entries(s: Storage) -> list[tuple[int, int, bytes]]:
    return [(e.term, e.index, e.data) for e in s.entries(s.first_index(), s.last_index() + 1)]


async def test_roundtrip_entries_hard_state(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await s.save(HardState(3, "2", 0), [ent(3, 1), ent(3, 2)])
    await s.save(HardState(3, "2", 2), [ent(3, 3, b"")])
    s = reopen(s)
    assert s.hard_state == HardState(3, "2", 2)
    assert all_entries(s) == [(3, 1, b"e1"), (3, 2, b"e2"), (3, 3, b"")]
    assert s.term(0) == 0 and s.term(2) == 3 and s.term(4) is None
    s.close()


async def test_a_commit_only_hard_state_is_written_at_once_without_an_fsync(
        tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await s.save(HardState(3, "2", 0), [ent(3, 1), ent(3, 2)])
    fsyncs = s.fsyncs
    assert s.save_commit_now(HardState(3, "2", 2))  # only the commit index moved
    assert s.fsyncs == fsyncs and s.hard_state == HardState(3, "2", 2)
    # a new term or vote must be fsynced: refused, nothing written
    assert not s.save_commit_now(HardState(4, None, 2))
    assert not s.save_commit_now(HardState(3, "1", 2))
    assert s.hard_state == HardState(3, "2", 2)
    s = reopen(s)
    assert s.hard_state == HardState(3, "2", 2)
    s.close()


async def test_conflicting_suffix_is_replaced_after_restart(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await s.save(HardState(1, "1", 0), [ent(1, i) for i in range(1, 11)])
    await s.save(HardState(2, "2", 5), [ent(2, 6, b"new6"), ent(2, 7, b"new7")])
    assert s.last_index() == 7
    s = reopen(s)
    assert s.last_index() == 7
    assert [e.term for e in s.entries(1, 8)] == [1] * 5 + [2, 2]
    assert s.entries(6, 8)[0].data == b"new6"
    s.close()


def last_segment(s: Storage) -> Path:
    return s.segment_paths()[-1]


async def test_truncated_tail_is_recovered(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await fill(s, 1, 20)
    seg = last_segment(s)
    s.close()
    size = seg.stat().st_size
    os.truncate(seg, size - 3)  # tear the last record (entry 20's hard state)
    s = Storage.open(tmp_path / "d")
    assert s.recovery.truncated_tail is not None
    assert s.recovery.truncated_tail[0] == str(seg)
    # The torn batch held entry 20 and its hard state; everything before survives.
    assert s.last_index() >= 19
    assert all_entries(s)[:19] == [(1, i, b"e%d" % i) for i in range(1, 20)]
    # And the log keeps working after the truncation.
    await s.save(HardState(1, "1", 19), [ent(1, s.last_index() + 1, b"after")])
    s = reopen(s)
    assert s.entries(s.last_index(), s.last_index() + 1)[0].data == b"after"
    s.close()


async def test_garbled_tail_is_recovered(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await fill(s, 1, 10)
    await s.save(None, [ent(1, 11, b"x" * 100)])
    seg = last_segment(s)
    s.close()
    raw = bytearray(seg.read_bytes())
    raw[-50] ^= 0xFF  # inside entry 11's payload, the last record
    seg.write_bytes(bytes(raw))
    s = Storage.open(tmp_path / "d")
    assert s.last_index() == 10
    assert s.recovery.truncated_tail is not None
    s.close()


async def test_zero_filled_tail_is_recovered(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await fill(s, 1, 5)
    seg = last_segment(s)
    s.close()
    # The filesystem extended the file but the data never landed.
    seg.write_bytes(seg.read_bytes() + b"\0" * 4096)
    s = Storage.open(tmp_path / "d")
    assert s.last_index() == 5
    assert s.recovery.truncated_tail == (str(seg), seg.stat().st_size, 4096)
    s.close()


async def test_garbled_middle_record_refuses_to_start(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await fill(s, 1, 10)
    seg = last_segment(s)
    s.close()
    raw = bytearray(seg.read_bytes())
    # Find entry 3's payload and flip one bit in it.
    pos = raw.find(b"e3")
    assert pos > 0
    raw[pos] ^= 0x01
    seg.write_bytes(bytes(raw))
    before = seg.read_bytes()
    with pytest.raises(CorruptWAL) as info:
        Storage.open(tmp_path / "d")
    err = info.value
    assert err.path == str(seg)
    assert 8 <= err.offset < pos
    assert str(seg) in str(err) and f"offset {err.offset}" in str(err)
    assert seg.read_bytes() == before, "a refused start must not modify the WAL"
    # The lock was released: fixing the file lets the member start again.
    raw[pos] ^= 0x01
    seg.write_bytes(bytes(raw))
    s = Storage.open(tmp_path / "d")
    assert s.last_index() == 10
    s.close()


async def test_damage_in_an_older_segment_is_never_a_torn_tail(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=512))
    await fill(s, 1, 60)
    segs = s.segment_paths()
    assert len(segs) >= 3
    s.close()
    first = segs[0]
    os.truncate(first, first.stat().st_size - 2)
    with pytest.raises(CorruptWAL) as info:
        Storage.open(tmp_path / "d")
    assert info.value.path == str(first)


async def test_segments_are_cut_and_replayed_in_order(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=256))
    await fill(s, 1, 100)
    assert len(s.segment_paths()) > 5
    s = reopen(s)
    assert all_entries(s) == [(1, i, b"e%d" % i) for i in range(1, 101)]
    assert s.hard_state.commit == 99
    s.close()


def test_second_process_cannot_open_a_locked_data_dir(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    with pytest.raises(DataDirLocked, match="in use by another process"):
        Storage.open(tmp_path / "d")
    code = (
        "import sys\n"
        "from meshraft.raft.storage import Storage\n"
        "from meshraft.raft.errors import DataDirLocked\n"
        "try:\n"
        f"    Storage.open({str(tmp_path / 'd')!r})\n"
        "except DataDirLocked as e:\n"
        "    print(e); sys.exit(7)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.returncode == 7, res.stderr
    assert f"pid {os.getpid()}" in res.stdout
    s.close()
    s = Storage.open(tmp_path / "d")  # released on close
    s.close()


async def test_snapshot_compacts_wal_and_keeps_two_files(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=1024))
    cs = ConfState(voters=["1", "2", "3"])
    await fill(s, 1, 100)
    for at in (30, 60, 90):
        meta = await s.create_snapshot(at, cs, b"state@%d" % at)
        assert meta.index == at and meta.term == 1
        await fill(s, s.last_index() + 1, s.last_index() + 40)
    snaps = sorted(p.name for p in (tmp_path / "d" / "snap").glob("*.snap"))
    assert len(snaps) == 2 and snaps[-1].startswith(f"{90:020d}")
    assert s.first_index() == 91
    # The WAL is kept back to the older kept snapshot (60), no further: no segment
    # survives whose entries all precede it.
    segs = s.segment_paths()
    s = reopen(s, options=StorageOptions(segment_bytes=1024))
    assert s.segment_paths() == segs
    assert s.recovery.records > 0
    first_seg = segs[0].read_bytes()
    assert b"e61" in first_seg or b"e60" in first_seg or b"e59" in first_seg
    assert b"e30" not in b"".join(p.read_bytes() for p in segs)
    last = s.last_index()
    s = reopen(s)
    snap = s.snapshot()
    assert snap.meta.index == 90 and snap.data == b"state@90"
    assert snap.meta.conf_state.voters == ["1", "2", "3"]
    assert s.first_index() == 91 and s.last_index() == last
    assert all_entries(s) == [(1, i, b"e%d" % i) for i in range(91, last + 1)]
    with pytest.raises(IndexError):
        s.entries(50, 60)
    s.close()


async def test_installed_snapshot_replaces_the_log(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=512))
    await fill(s, 1, 40, term=1)  # a stale follower's log, partly conflicting
    snap = Snapshot(SnapshotMeta(index=500, term=4, conf_state=ConfState(["1", "2"])), b"S" * 1000)
    await s.save(HardState(4, None, 500), [ent(4, 501)], snapshot=snap)
    assert s.first_index() == 501 and s.last_index() == 501
    assert len(s.segment_paths()) <= 2
    s = reopen(s)
    assert s.snapshot().meta.index == 500 and s.snapshot().data == b"S" * 1000
    assert all_entries(s) == [(4, 501, b"e501")]
    assert s.hard_state == HardState(4, None, 500)
    assert s.initial_state()[1].voters == ["1", "2"]
    s.close()


async def test_leftover_tmp_snapshot_is_removed_and_corrupt_snapshot_refused(
        tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await fill(s, 1, 10)
    await s.create_snapshot(5, ConfState(["1"]), b"five")
    s.close()
    snap_dir = tmp_path / "d" / "snap"
    (snap_dir / "x.snap.tmp").write_bytes(b"half")
    s = Storage.open(tmp_path / "d")
    assert not (snap_dir / "x.snap.tmp").exists()
    s.close()
    path = next(snap_dir.glob("*.snap"))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptSnapshot, match="checksum") as info:
        Storage.open(tmp_path / "d")
    assert info.value.path == str(path)


async def test_snapshot_is_written_to_a_temp_file_synced_renamed_then_the_dir_synced(
        tmp_path: Path, monkeypatch) -> None:
    events: list[tuple[str, ...]] = []

    def real(path) -> str:
        return os.path.realpath(path)

    def where(fd: int) -> str:
        return real(os.readlink(f"/proc/self/fd/{fd}"))

    class RecordingIO(DiskIO):
        def write(self, fd: int, data) -> None:
            events.append(("write", where(fd)))
            super().write(fd, data)

        def fsync(self, fd: int) -> None:
            events.append(("fsync", where(fd)))
            super().fsync(fd)

    real_replace = os.replace

    def replace(src, dst) -> None:
        events.append(("rename", real(src), real(dst)))
        real_replace(src, dst)

    s = Storage.open(tmp_path / "d")
    await fill(s, 1, 10)
    s.io = RecordingIO()
    monkeypatch.setattr(storage_mod.os, "replace", replace)
    await s.create_snapshot(5, ConfState(["1"]), b"five")
    monkeypatch.undo()
    snap_dir = real(tmp_path / "d" / "snap")
    final = f"{snap_dir}/{snapshot_file_name(5, 1)}"
    tmp = final + ".tmp"
    k = events.index(("rename", tmp, final))
    before, after = events[:k], events[k + 1:]
    assert ("write", tmp) in before and before[-1] == ("fsync", tmp)  # synced, then renamed
    assert ("fsync", snap_dir) in after
    # Only once the renamed file is durable does the WAL record the snapshot.
    wal_writes = [i for i, e in enumerate(after) if e[0] == "write" and e[1].endswith(".wal")]
    assert wal_writes and after.index(("fsync", snap_dir)) < wal_writes[0]
    s = reopen(s)
    assert s.snapshot().data == b"five" and s.first_index() == 6
    s.close()


class FailingIO(DiskIO):
    """Works for ``ok_calls`` write/fsync calls, then raises ``error`` forever."""

    def __init__(self, ok_calls: int, error: int, on: str) -> None:
        self.left = ok_calls
        self.error = error
        self.on = on

    def _maybe_fail(self, op: str) -> None:
        if op != self.on:
            return
        if self.left <= 0:
            raise OSError(self.error, os.strerror(self.error))
        self.left -= 1

    def write(self, fd: int, data) -> None:
        self._maybe_fail("write")
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        super().fsync(fd)


@pytest.mark.parametrize("on,error", [("fsync", errno.EIO), ("write", errno.ENOSPC)])
async def test_failing_disk_stops_writes_and_loses_nothing_acknowledged(
        tmp_path: Path, on: str, error: int) -> None:
    io = FailingIO(ok_calls=25, error=error, on=on)
    s = Storage.open(tmp_path / "d", io=io)
    acked = 0
    with pytest.raises(StorageFailed, match=os.strerror(error)):
        for i in range(1, 100):
            await s.save(HardState(1, "1", i - 1), [ent(1, i)])
            acked = i
    assert 5 < acked < 99
    assert s.failed is not None and os.strerror(error) in s.failed
    # Every later write is refused, with the reason, even if the disk recovered.
    io.left = 1000
    with pytest.raises(StorageFailed, match="refusing writes"):
        await s.save(HardState(1, "1", 0), [ent(1, acked + 1)])
    with pytest.raises(StorageFailed):
        await s.create_snapshot(1, ConfState(["1"]), b"")
    s = reopen(s)
    assert s.last_index() >= acked
    assert all_entries(s)[:acked] == [(1, i, b"e%d" % i) for i in range(1, acked + 1)]
    s.close()


async def test_random_histories_survive_restart(tmp_path: Path) -> None:
    """Random appends, conflicting rewrites, snapshots, installs and segment cuts;
    after every reopen the log equals a plain in-memory model of it."""
    for seed in range(6):
        rng = random.Random(seed)
        d = tmp_path / f"d{seed}"
        s = Storage.open(d, options=StorageOptions(segment_bytes=rng.choice([200, 700, 5000])))
        model: dict[int, tuple[int, bytes]] = {}
        snap_index, term, commit = 0, 1, 0
        for step in range(150):
            op = rng.random()
            last = s.last_index()
            if op < 0.6:
                n = rng.randint(1, 5)
                start = last + 1
                if rng.random() < 0.2 and last > commit:
                    start = rng.randint(commit + 1, last)  # overwrite an uncommitted suffix
                    term += 1
                ents = [Entry(term, i, data=rng.randbytes(rng.randint(0, 40)))
                        for i in range(start, start + n)]
                for k in [k for k in model if k >= start]:
                    del model[k]
                model.update({e.index: (e.term, e.data) for e in ents})
                commit = rng.randint(commit, max(commit, start - 1))
                await s.save(HardState(term, "1", commit), ents)
            elif op < 0.75 and commit > snap_index:
                snap_index = rng.randint(snap_index + 1, commit)
                await s.create_snapshot(snap_index, ConfState(["1"]), b"snap%d" % snap_index)
            elif op < 0.8:
                term += 1
                snap_index = commit = last + rng.randint(1, 20)
                model = {}
                await s.save(HardState(term, None, commit), [], snapshot=Snapshot(
                    SnapshotMeta(snap_index, term, ConfState(["1"])), b"inst%d" % snap_index))
            elif op < 0.9:
                s = reopen(s, options=s.options)
            got = {i: (e.term, e.data) for i, e in
                   zip(range(s.first_index(), s.last_index() + 1),
                       s.entries(s.first_index(), s.last_index() + 1), strict=True)}
            want = {i: v for i, v in model.items() if i > s.snapshot_meta.index}
            assert got == want, (seed, step)
            assert s.snapshot_meta.index == snap_index, (seed, step)
            assert s.hard_state.commit == commit
        s.close()


async def test_torn_segment_header_is_rewritten(tmp_path: Path) -> None:
    """A crash right after a segment was created (its header record torn), then
    more writes and a compaction that deletes every segment before it."""
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=300))
    await fill(s, 1, 30)
    segs = s.segment_paths()
    s.close()
    # Tear the newest segment's header (and anything after it).
    newest = segs[-1]
    os.truncate(newest, 8 + 5)
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=300))
    last = s.last_index()
    assert last >= 25
    await fill(s, last + 1, last + 30)
    # A snapshot just inside that segment: every segment before it is deleted and
    # it becomes the first one a restart reads.
    # (The WAL is kept back to the older of the two kept snapshots.)
    await s.create_snapshot(last + 1, ConfState(["1"]), b"snap")
    await s.create_snapshot(last + 30, ConfState(["1"]), b"snap2")
    await fill(s, last + 31, last + 35)
    assert s.segment_paths()[0] == newest
    s = reopen(s, options=StorageOptions(segment_bytes=300))
    assert s.first_index() == last + 31 and s.last_index() == last + 35
    assert all_entries(s)[-1] == (1, last + 35, b"e%d" % (last + 35))
    s.close()


async def test_damaged_newest_snapshot_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=400))
    await fill(s, 1, 50)
    await s.create_snapshot(20, ConfState(["1"]), b"state@20")
    await fill(s, 51, 80)
    await s.create_snapshot(70, ConfState(["1"]), b"state@70")
    await fill(s, 81, 90)
    s.close()
    newest = tmp_path / "d" / "snap" / f"{70:020d}-{1:020d}.snap"
    raw = bytearray(newest.read_bytes())
    raw[-3] ^= 0x01
    newest.write_bytes(bytes(raw))
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=400))
    assert s.recovery.fell_back_from == str(newest)
    assert s.snapshot().data == b"state@20" and s.snapshot_meta.index == 20
    assert all_entries(s) == [(1, i, b"e%d" % i) for i in range(21, 91)]
    assert newest.with_name(newest.name + ".damaged").exists()
    # It goes on: a new snapshot, and the next restart needs no fallback.
    await s.create_snapshot(85, ConfState(["1"]), b"state@85")
    s = reopen(s, options=StorageOptions(segment_bytes=400))
    assert s.recovery.fell_back_from is None and s.snapshot().data == b"state@85"
    s.close()
    # Both snapshot files damaged: refuse, naming the newest.
    for p in (tmp_path / "d" / "snap").glob("*.snap"):
        raw = bytearray(p.read_bytes())
        raw[-1] ^= 0x01
        p.write_bytes(bytes(raw))
    with pytest.raises(CorruptSnapshot, match=f"{85:020d}"):
        Storage.open(tmp_path / "d")


def test_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("not a dir")
    with pytest.raises(StorageError, match="data dir"):
        Storage.open(f)
    with pytest.raises(StorageError, match="data dir"):
        Storage.open(f / "sub")


async def test_failed_snapshot_write_leaves_no_temp_file(tmp_path: Path) -> None:
    io = FailingIO(ok_calls=0, error=errno.ENOSPC, on="write")
    s = Storage.open(tmp_path / "d")
    await fill(s, 1, 5)
    s.io = io
    with pytest.raises(StorageFailed, match="No space"):
        await s.create_snapshot(3, ConfState(["1"]), b"x" * 1000)
    assert list((tmp_path / "d" / "snap").iterdir()) == []
    s = reopen(s)
    assert s.last_index() == 5 and s.snapshot_meta.index == 0
    s.close()


async def _build_for_damage(d: Path) -> tuple[list[tuple[Path, int, int]], list[tuple]]:
    """A WAL over several segments; returns (segment, size after, last index) for
    every save, and the full log."""
    s = Storage.open(d, options=StorageOptions(segment_bytes=1500))
    marks = []
    rng = random.Random(99)
    i = 0
    while i < 150:
        n = rng.randint(1, 4)
        await s.save(HardState(1, "1", i), [ent(1, k, rng.randbytes(rng.randint(0, 30)))
                                            for k in range(i + 1, i + n + 1)])
        i += n
        seg = s.segment_paths()[-1]
        marks.append((seg, seg.stat().st_size, i))
    log = all_entries(s)
    s.close()
    return marks, log


def _acked_before(marks, seg: Path, pos: int) -> int:
    """The last index of the last save that ended at or before ``pos`` in ``seg``
    (or in an earlier segment)."""
    best = 0
    for path, size, last in marks:
        if path.name < seg.name or (path == seg and size <= pos):
            best = max(best, last)
    return best


async def test_random_wal_damage_never_loses_synced_data_silently(tmp_path: Path) -> None:
    """Flip one random byte anywhere, or cut the newest segment anywhere: the
    member either refuses to start naming the damaged file, or recovers a prefix
    of the log that keeps every save completed before the damage, and only when
    the damage is in the newest segment."""
    base = tmp_path / "base"
    marks, log = await _build_for_damage(base)
    segs = sorted((base / "wal").glob("*.wal"))
    assert len(segs) >= 3
    rng = random.Random(2024)
    outcomes = {"refused": 0, "recovered": 0}
    for trial in range(120):
        d = tmp_path / f"t{trial}"
        shutil.copytree(base, d)
        victim_seg = rng.choice(segs) if trial % 2 else segs[-1]
        path = d / "wal" / victim_seg.name
        raw = bytearray(path.read_bytes())
        cut = trial % 3 == 0 and victim_seg == segs[-1]
        if cut:
            pos = rng.randrange(8, len(raw))
            del raw[pos:]  # a crash cut the file here
        else:
            pos = rng.randrange(len(raw))
            if trial % 4 == 1 and victim_seg == segs[-1]:
                # Aim at a length field: the high bytes of a record header.
                starts = [size for seg, size, _ in marks if seg == victim_seg][:-1]
                pos = rng.choice(starts) + rng.randint(1, 3)
            raw[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
        try:
            s = Storage.open(d)
        except CorruptWAL as exc:
            assert exc.path == str(path), (trial, exc)
            outcomes["refused"] += 1
            continue
        got = all_entries(s)
        s.close()
        assert victim_seg == segs[-1], f"trial {trial}: damage in an older segment ignored"
        assert got == log[:len(got)], f"trial {trial}: recovered log is not a prefix"
        assert len(got) >= _acked_before(marks, victim_seg, pos), (trial, pos, len(got))
        if not cut:
            # A flipped bit is only forgiven in the very last write (it may be torn);
            # every save before that was synced and must be there.
            assert len(got) >= marks[-2][2], (trial, pos, len(got))
        outcomes["recovered"] += 1
    assert outcomes["refused"] > 10 and outcomes["recovered"] > 10, outcomes


async def test_lost_wal_with_snapshots_refuses_to_start_empty(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d")
    await fill(s, 1, 10)
    await s.create_snapshot(5, ConfState(["1"]), b"five")
    s.close()
    shutil.rmtree(tmp_path / "d" / "wal")
    with pytest.raises(StorageError, match="WAL was lost"):
        Storage.open(tmp_path / "d")


async def test_missing_middle_segment_is_named(tmp_path: Path) -> None:
    s = Storage.open(tmp_path / "d", options=StorageOptions(segment_bytes=256))
    await fill(s, 1, 40)
    segs = s.segment_paths()
    s.close()
    segs[1].unlink()
    with pytest.raises(CorruptWAL, match="segment missing") as info:
        Storage.open(tmp_path / "d")
    assert info.value.path == str(segs[1])
