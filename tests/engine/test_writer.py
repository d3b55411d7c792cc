"""T3: the background writer puts files on disk durably, in the order they were handed over."""
from __future__ import annotations

import threading

import pytest

from trainlab import atomic
from trainlab.engine.writer import DurableWriter
from trainlab.errors import RunError


def recording(monkeypatch):
    """Record the order of the writer thread's writes, of bytes and of files written by a function
    (atomic.write_bytes and atomic.write_file are looked up per call)."""
    order = []
    real_bytes, real_file = atomic.write_bytes, atomic.write_file

    def write_bytes(path, data):
        real_bytes(path, data)
        order.append((path.name, data))

    def write_file(path, fill):
        real_file(path, fill)
        order.append((path.name, path.read_bytes()))

    monkeypatch.setattr(atomic, "write_bytes", write_bytes)
    monkeypatch.setattr(atomic, "write_file", write_file)
    return order


def handed_over(w: DurableWriter, order: list) -> bool:
    """Whether anything reached the writer thread: queued and not yet done, or already written
    (a write is recorded before its task is marked done, so one of the two shows)."""
    return w._queue.unfinished_tasks > 0 or bool(order)


def test_writes_keep_their_order_and_deferred_data_is_made_on_the_thread(tmp_path, monkeypatch):
    """T3: later writes of one path replace earlier ones in order; a callable writes the file, on the
    thread, at a temporary path that is renamed into place."""
    order = recording(monkeypatch)
    threads, paths = [], []

    def blob(tmp):
        threads.append(threading.current_thread().name)
        paths.append(tmp)
        tmp.write_bytes(b"made")

    w = DurableWriter(max_pending=2)
    for i in range(6):
        w.submit(tmp_path / "a.txt", str(i).encode())
    w.submit(tmp_path / "b.bin", blob)
    w.close()
    assert [d for n, d in order if n == "a.txt"] == [str(i).encode() for i in range(6)]
    assert (tmp_path / "a.txt").read_bytes() == b"5" and (tmp_path / "b.bin").read_bytes() == b"made"
    assert threads == ["trainlab-writer"] and paths[0].parent == tmp_path and paths[0].name != "b.bin"
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file is left behind


def test_holding_hands_files_over_only_when_the_block_ends(tmp_path, monkeypatch):
    """T3: inside holding() nothing reaches the thread (the epoch-end snapshots run undisturbed);
    at the end of the block everything is written in submission order; nested blocks hand over
    once, at the outer end; flush() inside a block still puts what is held on disk."""
    order = recording(monkeypatch)
    w = DurableWriter()
    with w.holding():
        w.submit(tmp_path / "metrics.jsonl", b"m")
        with w.holding():
            w.submit(tmp_path / "last.safetensors", lambda tmp: tmp.write_bytes(b"ckpt"))
        w.submit(tmp_path / "last.json", b"j")
        assert not handed_over(w, order)
    w.flush()
    assert order == [("metrics.jsonl", b"m"), ("last.safetensors", b"ckpt"), ("last.json", b"j")]

    with w.holding():
        w.submit(tmp_path / "x", b"1")
        w.flush()
        assert (tmp_path / "x").read_bytes() == b"1"
        seen = len(order)
        w.submit(tmp_path / "x", b"2")  # still held after the flush
        assert not handed_over(w, order[seen:])
    w.close()
    assert (tmp_path / "x").read_bytes() == b"2"


def test_held_files_are_written_even_when_the_block_fails(tmp_path):
    """T3: a callback raising at epoch end does not lose the checkpoint submitted before it."""
    w = DurableWriter()
    with pytest.raises(KeyboardInterrupt), w.holding():
        w.submit(tmp_path / "last.safetensors", b"saved")
        raise KeyboardInterrupt
    w.close()
    assert (tmp_path / "last.safetensors").read_bytes() == b"saved"


def test_a_failed_write_is_raised_naming_the_file(tmp_path):
    """T3: a write that fails on the thread surfaces on the training thread as one RunError."""
    w = DurableWriter()
    w.submit(tmp_path / "missing-folder" / "last.json", b"{}")
    with pytest.raises(RunError, match="could not write .*missing-folder/last.json"):
        w.flush()
    w.close()


def test_a_callback_error_in_the_block_is_not_masked_by_an_earlier_write_error(tmp_path):
    """T3: a callback raising inside holding() surfaces as itself even when a background write
    failed meanwhile; that write error is raised at the next flush."""
    go = threading.Event()

    def slow_blob(tmp):
        go.wait(5)
        tmp.write_bytes(b"{}")

    w = DurableWriter()
    w.submit(tmp_path / "missing-folder" / "old.json", slow_blob)
    with pytest.raises(KeyError, match="callback bug"), w.holding():
        w.submit(tmp_path / "metrics.jsonl", b"m")  # held: the failure is not recorded yet
        go.set()
        w._queue.join()  # now it is
        raise KeyError("callback bug")
    with pytest.raises(RunError, match="missing-folder/old.json"):
        w.flush()
    w.close()


def test_a_file_writer_failing_halfway_leaves_the_previous_file(tmp_path):
    """T3: a function writing the file that fails after writing part of it leaves the previous
    file whole and no temporary file; the error is raised naming the file."""
    w = DurableWriter()
    w.submit(tmp_path / "last.safetensors", lambda tmp: tmp.write_bytes(b"old"))
    w.flush()

    def torn(tmp):
        tmp.write_bytes(b"ne")
        raise OSError(28, "No space left on device")

    w.submit(tmp_path / "last.safetensors", torn)
    with pytest.raises(RunError, match="could not write .*last.safetensors: No space left on device"):
        w.flush()
    w.close()
    assert (tmp_path / "last.safetensors").read_bytes() == b"old"
    assert not list(tmp_path.glob(".*tmp*"))
