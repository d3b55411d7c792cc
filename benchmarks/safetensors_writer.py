"""Checkpoint files: the hand-written safetensors serializer against the safetensors library.

A checkpoint is made the way the Checkpointer makes it (engine/callbacks.py: a snapshot of the
tensors and the JSON state on the training thread) and written the way the trainer's
DurableWriter writes it: on a background thread, into a temporary file, flushed, fsynced, renamed
over the old one, the folder fsynced (``trainlab.atomic``). Three ways to write it:

- ``hand``: the hand-written serializer trainlab used until this benchmark (``hand_written_bytes``
  below, kept here verbatim: one ``b"".join`` of the tensors' buffers, byte for byte what the
  library writes, checked), then ``atomic.write_bytes``;
- ``save``: ``safetensors.torch.save`` (the library, bytes), then ``atomic.write_bytes``;
- ``save_file``: what trainlab does now (``engine/checkpoint.py``): ``safetensors.torch.save_file``
  into the temporary file, then the same fsync, rename and folder fsync (``atomic.write_file``).

Two checkpoints: the default digits-cnn recipe's (model, AdamW state, RNG state and the JSON state
after one epoch, 0.8 MB) and a ~100 MB one (torchvision's resnet50 state dict, with the same
RNG tensor and JSON state). For each, the ways alternate in a shuffled order per repetition so
that machine noise hits them alike, and three numbers are printed (medians):

- ``serialize``: making the bytes on the calling thread (nothing for ``save_file``, which
  serializes while writing);
- ``write``: the whole durable write on a writer thread, submit to done (what the disk and the
  thread see);
- ``stall``: how much a training-like loop on the main thread (small tensor ops, GIL-bound like a
  small model's step) is slowed while the writer thread writes: elapsed time minus the loop's
  progress at its undisturbed speed, measured just before. This is what training pays.

    python benchmarks/safetensors_writer.py [--repeats 15] [--big-repeats 8]

Last line: ``hand-written writer speed-up = <library write time / hand-written write time>`` on
the writer thread for the ~100 MB checkpoint, the best library way against ``hand`` (below 1: the
library is faster). The default run takes about 20 seconds.

Measured (two runs on 2 CPU cores shared with another job, safetensors 0.8.0, torch 2.14.1):
digits-cnn, the three ways within 2 ms of each other (medians 4.8-10 ms per checkpoint, the
order changing between runs); resnet50, hand-written 195-292 ms, save_file 136-206 ms, save
326-523 ms on the writer thread, and the training-like loop lost 94-165 ms (hand-written) against
45-81 ms (save_file). Speed-up 0.70-0.71: the hand-written serializer was removed, checkpoints
use ``save_file``.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from trainlab import atomic  # noqa: E402
from trainlab.engine.checkpoint import FORMAT, STATE_KEY, snapshot  # noqa: E402

# safetensors' names for torch dtypes, in the order its writer lays tensors out (largest alignment
# first, then by name), so that each tensor starts at a multiple of its element size.
_DTYPES = {
    torch.uint64: "U64", torch.int64: "I64", torch.float64: "F64", torch.complex64: "C64",
    torch.float32: "F32", torch.uint32: "U32", torch.int32: "I32", torch.bfloat16: "BF16",
    torch.float16: "F16", torch.uint16: "U16", torch.int16: "I16", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
_RANK = {dtype: rank for rank, dtype in enumerate(_DTYPES)}


def hand_written_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The removed ``trainlab.engine.checkpoint.safetensors_bytes`` (contiguous little-endian CPU
    tensors of the dtypes above): an 8-byte little-endian header length, the JSON header padded
    with spaces to a multiple of 8, then the tensors' bytes, joined in one copy."""
    names = sorted(tensors, key=lambda k: (_RANK[tensors[k].dtype], k))
    header: dict = {} if metadata is None else {"__metadata__": metadata}
    start, parts = 0, []
    for name in names:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [start, start + size]}
        start += size
        if size:
            parts.append(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return b"".join([len(text).to_bytes(8, "little"), text, *parts])


def digits_checkpoint() -> tuple[dict[str, torch.Tensor], str]:
    """The default recipe's checkpoint after one epoch: (snapshot tensors, JSON state text)."""
    from trainlab.api import build_components
    from trainlab.recipe import load_recipe

    recipe = load_recipe("digits-cnn", {"train.epochs": 1, "train.early_stop": None, "run.tensorboard": False})
    trainer = build_components(recipe)
    trainer._emit("on_fit_start")
    trainer.train_epoch()
    tensors, state = trainer.checkpoint_state()
    trainer.close()
    return snapshot(tensors), atomic.dumps({"format": FORMAT, **state}, indent=None)


def resnet50_checkpoint(state_text: str) -> tuple[dict[str, torch.Tensor], str]:
    from torchvision.models import resnet50

    from trainlab.rng import rng_state

    tensors = {f"model.{k}": v for k, v in resnet50().state_dict().items()}
    tensors.update({f"rng.{k}": v for k, v in rng_state()[0].items()})
    return snapshot(tensors), state_text


def write_hand(path: Path, tensors, meta) -> None:
    atomic.write_bytes(path, hand_written_bytes(tensors, meta))


def write_save(path: Path, tensors, meta) -> None:
    from safetensors.torch import save

    atomic.write_bytes(path, save(tensors, metadata=meta))


def write_save_file(path: Path, tensors, meta) -> None:
    """As the checkpointer does: save_file into the temporary file, fsync, rename, folder fsync."""
    from safetensors.torch import save_file

    atomic.write_file(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def serialize_hand(tensors, meta) -> bytes:
    return hand_written_bytes(tensors, meta)


def serialize_save(tensors, meta) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=meta)


class Loop:
    """A GIL-bound stand-in for the training thread: small tensor ops in a Python loop."""

    def __init__(self):
        self.a, self.b = torch.randn(256), torch.randn(256)

    def unit(self, n: int = 20) -> None:
        a, b = self.a, self.b
        for _ in range(n):
            a = a.mul(0.999).add_(b)
        self.a = a

    def speed(self, seconds: float) -> float:
        """Seconds per unit, undisturbed."""
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.unit()
            count += 1
        return (time.perf_counter() - t0) / count


def on_writer_thread(write, path, tensors, meta, loop: Loop) -> tuple[float, float]:
    """(write wall time on a thread, main-loop time lost while it ran), in seconds."""
    per_unit = loop.speed(0.05)
    done = [0.0]

    def run():
        t = time.perf_counter()
        write(path, tensors, meta)
        done[0] = time.perf_counter() - t

    thread = threading.Thread(target=run, name="trainlab-writer")
    count, t0 = 0, time.perf_counter()
    thread.start()
    while thread.is_alive():
        loop.unit()
        count += 1
    elapsed = time.perf_counter() - t0
    thread.join()
    return done[0], max(0.0, elapsed - count * per_unit)


def measure(name: str, tensors, meta, repeats: int, folder: Path, loop: Loop) -> dict[str, float]:
    ways = {"hand": (write_hand, serialize_hand), "save": (write_save, serialize_save),
            "save_file": (write_save_file, None)}
    assert serialize_hand(tensors, meta) == serialize_save(tensors, meta)  # the same file, byte for byte
    mb = sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20
    ser: dict[str, list[float]] = {w: [] for w in ways}
    wr: dict[str, list[float]] = {w: [] for w in ways}
    stall: dict[str, list[float]] = {w: [] for w in ways}
    order = list(ways)
    rnd = random.Random(0)
    for rep in range(repeats + 1):  # the first repetition warms up (imports, page cache, allocator)
        rnd.shuffle(order)
        for way in order:
            write, serialize = ways[way]
            path = folder / f"{name}-{way}.safetensors"
            if serialize is not None:
                t = time.perf_counter()
                data = serialize(tensors, meta)
                s = time.perf_counter() - t
                del data
            else:
                s = float("nan")
            w, lost = on_writer_thread(write, path, tensors, meta, loop)
            if rep:
                ser[way].append(s)
                wr[way].append(w)
                stall[way].append(lost)
    check(folder, name, list(ways), tensors, meta)
    print(f"{name}: {len(tensors)} tensors, {mb:.1f} MB, {repeats} repetitions (medians, ms)")
    med = {}
    for way in ways:
        med[way] = statistics.median(wr[way])
        serialized = "in write" if ways[way][1] is None else f"{statistics.median(ser[way]) * 1e3:8.2f}"
        print(f"  {way:9s}  serialize {serialized:>8s}   "
              f"write on thread {med[way] * 1e3:8.2f} (min {min(wr[way]) * 1e3:8.2f})   "
              f"training stall {statistics.median(stall[way]) * 1e3:8.2f}")
    return med


def check(folder: Path, name: str, ways, tensors, meta) -> None:
    """Every way wrote a file the library reads back to the same tensors and metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    for way in ways:
        path = folder / f"{name}-{way}.safetensors"
        back = load_file(path)
        assert set(back) == set(tensors) and all(torch.equal(back[k], v) for k, v in tensors.items()), way
        with safe_open(path, "pt") as f:
            assert f.metadata() == meta, way


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed repetitions for the digits checkpoint")
    ap.add_argument("--big-repeats", type=int, default=8, help="timed repetitions for the ~100 MB checkpoint")
    args = ap.parse_args()
    import safetensors

    small, text = digits_checkpoint()
    big, _ = resnet50_checkpoint(text)
    meta = {STATE_KEY: text}
    loop = Loop()
    print(f"safetensors {safetensors.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"JSON state {len(text) / 1024:.1f} KB")
    with tempfile.TemporaryDirectory(prefix="trainlab-st-") as tmp:
        folder = Path(tmp)
        small_med = measure("digits-cnn", small, meta, args.repeats, folder, loop)
        big_med = measure("resnet50", big, meta, args.big_repeats, folder, loop)
    for label, med in (("digits-cnn", small_med), ("resnet50", big_med)):
        lib = min(med["save"], med["save_file"])
        print(f"{label}: hand-written {med['hand'] * 1e3:.2f} ms vs best library {lib * 1e3:.2f} ms "
              f"(difference {(lib - med['hand']) * 1e3:+.2f} ms per checkpoint)")
    lib = min(big_med["save"], big_med["save_file"])
    print(f"hand-written writer speed-up = {lib / big_med['hand']:.2f}")


if __name__ == "__main__":
    main()
