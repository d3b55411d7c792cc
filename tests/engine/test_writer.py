"""T3: the background writer puts files on disk durably, in the order they were handed over."""
from __future__ import annotations

import threading

import pytest

from trainlab import atomic
from trainlab.engine.writer import DurableWriter
from trainlab.errors import RunError


def recording(monkeypatch):
    """Record the order of the writer thread's writes (atomic.write_bytes is looked up per call)."""
    order = []
    real = atomic.write_bytes

    def write(path, data):
        real(path, data)
        order.append((path.name, data))

    monkeypatch.setattr(atomic, "write_bytes", write)
    return order


def handed_over(w: DurableWriter, order: list) -> bool:
    """Whether anything reached the writer thread: queued and not yet done, or already written
    (a write is recorded before its task is marked done, so one of the two shows)."""
    return w._queue.unfinished_tasks > 0 or bool(order)


def test_writes_keep_their_order_and_deferred_data_is_made_on_the_thread(tmp_path, monkeypatch):
    """T3: later writes of one path replace earlier ones in order; a callable is serialized by the thread."""
    order = recording(monkeypatch)
    threads = []

    def blob():
        threads.append(threading.current_thread().name)
        return b"made"

    w = DurableWriter(max_pending=2)
    for i in range(6):
        w.submit(tmp_path / "a.txt", str(i).encode())
    w.submit(tmp_path / "b.bin", blob)
    w.close()
    assert [d for n, d in order if n == "a.txt"] == [str(i).encode() for i in range(6)]
    assert (tmp_path / "a.txt").read_bytes() == b"5" and (tmp_path / "b.bin").read_bytes() == b"made"
    assert threads == ["trainlab-writer"]
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
            w.submit(tmp_path / "last.safetensors", lambda: b"ckpt")
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

    def slow_blob():
        go.wait(5)
        return b"{}"

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
