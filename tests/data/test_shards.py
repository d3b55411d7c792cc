"""D10, issue 25: `trainlab shard` writes a folder as WebDataset tar shards; the shards data set reads
them (checked against the tar files read with the standard library and webdataset's own reader),
indexed when they are local and streamed when they are URLs (served here from 127.0.0.1 only);
bad shards and URLs are one line and exit 2."""
from __future__ import annotations

import functools
import hashlib
import json
import socket
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.cli import main
from trainlab.data import build_data
from trainlab.data.loader import BatchLoader
from trainlab.data.shards import assign_shards, stream_samples
from trainlab.errors import DataError
from trainlab.data.transforms import build_transforms
from trainlab.recipe import load_recipe


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLAB_CACHE", str(tmp_path / "cache"))


def make_folder(root, n=18):
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = [(30, 40), (40, 30), (36, 36)][i % 3]
        (root / ("cat", "dog", "eel")[i % 3]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / ("cat", "dog", "eel")[i % 3] / f"{i}.{'jpg' if i % 2 else 'png'}", quality=90)
    return root


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_shard_command_round_trip(tmp_path, capsys):
    """D10, issue 25: shards of at most --size bytes, every file once with its class (read back with
    tarfile and with webdataset's reader), classes.json; the shards data set indexes them as the
    folder data set indexes the folder, and trains from crops of the originals."""
    import webdataset as wds

    root = make_folder(tmp_path / "photos")
    assert main(["shard", str(root), "--out", str(tmp_path / "sh"), "--size", "8KB"]) == 0
    assert "18 samples in" in capsys.readouterr().out
    shards = sorted((tmp_path / "sh").glob("shard-*.tar"))
    largest = max(p.stat().st_size for p in root.rglob("*.*"))
    for s in shards:  # webdataset closes a shard once its payload reaches --size
        with tarfile.open(s) as tar:
            assert sum(m.size for m in tar) <= 8000 + largest + 16
    assert len(shards) > 2
    assert json.loads((tmp_path / "sh" / "classes.json").read_text()) == ["cat", "dog", "eel"]
    want = sorted((digest(p.read_bytes()), ("cat", "dog", "eel").index(p.parent.name))
                  for p in root.rglob("*.*"))
    got = []
    for s in shards:
        with tarfile.open(s) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name, data in files.items():
            if not name.endswith(".cls"):
                got.append((digest(data), int(files[name.split(".")[0] + ".cls"])))
    assert sorted(got) == want
    streamed = sorted((digest(next(v for k, v in s.items() if k in ("jpg", "png"))), int(s["cls"]))
                      for s in wds.WebDataset([str(s) for s in shards], shardshuffle=False))
    assert streamed == want

    pattern = f"{tmp_path}/sh/shard-{{000000..{len(shards) - 1:06d}}}.tar"
    r = load_recipe("digits-cnn", ["data.name=shards", f"data.urls={pattern}", "data.image_size=16",
                                   "data.batch_size=4", "data.augment=[random_resized_crop, hflip]"])
    b = build_data(r)
    assert b.info.class_names == ["cat", "dog", "eel"] and b.info.input_shape == (3, 16, 16)
    assert len(b.train) + len(b.val) + len(b.test) == 18
    x, y = b.val.load(0)
    assert x.shape == (3, 16, 16) and int(y) in (0, 1, 2)
    pipe = build_transforms(r.data.augment, b.info)
    batches = list(BatchLoader(b.train, 4, seed=0, shuffle=True, transform=pipe).batches(0))
    assert batches and all(bt["input"].shape[1:] == (3, 16, 16) for bt in batches)
    assert pipe.bind(b.train).reads_from is not None


def test_bad_shards_and_urls_are_one_line(tmp_path, monkeypatch, capsys):
    """D10, issue 25 (6): a truncated shard, a shard that does not exist, a remote URL, a folder that cannot
    be sharded: exit 2, one line naming it, nothing written."""
    monkeypatch.chdir(tmp_path)
    root = make_folder(tmp_path / "photos", n=9)
    assert main(["shard", str(root), "--out", "sh", "--size", "1GB"]) == 0
    data = (tmp_path / "sh" / "shard-000000.tar").read_bytes()
    (tmp_path / "sh" / "cut-000000.tar").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    fit = ["fit", "data.name=shards", "data.image_size=16", "run.dir=out", "train.epochs=1"]
    cases = [
        (["data.urls=sh/cut-000000.tar"], "sh/cut-000000.tar is truncated"),
        (["data.urls=sh/shard-{000000..000001}.tar"], "shard sh/shard-000001.tar does not exist"),
        (["data.urls=ftp://127.0.0.1/shard-000000.tar"], "ftp://127.0.0.1/shard-000000.tar has a scheme that is not read"),
        (["data.urls=sh/shard-000000.tar", "data.epoch_samples=9"], "data.epoch_samples: applies to shards streamed"),
    ]
    for extra, needle in cases:
        code = main([*fit, *extra])
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], lines
        assert not (tmp_path / "out").exists()
    assert main(["shard", "nowhere", "--out", "sh2"]) == 2
    assert "data.root: folder 'nowhere' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "sh2").exists()
    assert main(["shard", str(root), "--out", "sh3", "--size", "lots"]) == 2
    assert "--size: 'lots' is no size" in capsys.readouterr().err


# ------------------------------------------------------------------------ shards streamed from URLs
class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines in the test output
        pass


@pytest.fixture
def serve():
    """serve(folder) -> 'http://127.0.0.1:PORT': a thread serving the folder on the loopback
    address only, shut down at the end of the test."""
    servers = []

    def start(folder):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        srv.timeout = 5
        thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((srv, thread))
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv, thread in servers:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_folder(root, n=24, side=16):
    """n PNG images of side x side (lossless: a streamed sample's pixels equal the file's), 3 classes."""
    rng = np.random.default_rng(1)
    for i in range(n):
        cls = ("cat", "dog", "eel")[i % 3]
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def shard_pattern(base, out, count):
    return f"{base}/shard-{{000000..{count - 1:06d}}}.tar"


def make_shards(tmp_path, n=24, size="2KB"):
    root = png_folder(tmp_path / "photos", n)
    assert main(["shard", str(root), "--out", str(tmp_path / "sh"), "--size", size]) == 0
    return root, sorted((tmp_path / "sh").glob("shard-*.tar"))


def stream_recipe(urls, *extra):
    return load_recipe("digits-cnn", ["data.name=shards", f"data.urls={urls}", "data.eval_resize=squash",
                                      "data.image_size=16", "data.batch_size=4", *extra])


def seen(batches):
    """(pixel digest, class) of every sample of the batches, in order."""
    out = []
    for b in batches:
        for x, y in zip(b["input"], b["target"]):
            out.append((digest(x.permute(1, 2, 0).contiguous().numpy().tobytes()), int(y)))
    return out


def folder_samples(root):
    return sorted((digest(np.asarray(Image.open(p).convert("RGB")).tobytes()), ("cat", "dog", "eel").index(p.parent.name))
                  for p in root.rglob("*.png"))


def test_stream_epoch_over_http_workers_order_and_resume(tmp_path, serve, capsys):
    """D10, issue 25 (4): shards served over http are streamed; over 2 loader workers an epoch of
    data.epoch_samples = the data set's size yields every sample exactly once (pixels equal the PNG
    files' as PIL reads them); the order is the same for the same (seed, epoch), differs between
    epochs and with a shuffle buffer; a resumed epoch gives the remaining batches of the full one."""
    root, shards = make_shards(tmp_path)
    assert len(shards) >= 4
    urls = shard_pattern(serve(tmp_path / "sh"), tmp_path / "sh", len(shards))
    b = build_data(stream_recipe(urls, "data.epoch_samples=24"))
    assert b.val is None and b.test is None and len(b.train) == 24
    assert b.info.class_names == ["cat", "dog", "eel"] and b.info.input_shape == (3, 16, 16)
    assert "first 24 samples of the stream" in capsys.readouterr().err
    want = folder_samples(root)
    loader = BatchLoader(b.train, 4, seed=0, shuffle=True, workers=2)
    assert len(loader) == 6
    epoch0 = seen(loader.batches(0))
    assert sorted(epoch0) == want  # each sample exactly once
    assert seen(loader.batches(0)) == epoch0
    epoch1 = seen(loader.batches(1))
    assert sorted(epoch1) == want and epoch1 != epoch0
    assert seen(loader.batches(0, start=2)) == epoch0[8:]  # resume at batch 2: the same remaining batches

    buffered = build_data(stream_recipe(urls, "data.epoch_samples=24", "data.shuffle_buffer=8"))
    one = BatchLoader(buffered.train, 4, seed=0, shuffle=True)
    first = seen(one.batches(0))
    assert sorted(first) == want and first == seen(one.batches(0))
    assert first != seen(BatchLoader(b.train, 4, seed=0, shuffle=True).batches(0))


def test_shard_assignment_partitions_over_ranks_and_workers():
    """D10, issue 25 (4): rank r of n takes every n-th shard of the (seed, epoch) permutation and
    worker w of m every m-th of those: the pieces partition the shards, interleave back into the
    one-process order, and the permutation changes with the epoch."""
    urls = [f"http://127.0.0.1:1/s-{i}.tar" for i in range(11)]
    whole = assign_shards(urls, seed=3, epoch=0)
    assert sorted(whole) == sorted(urls)
    assert whole == assign_shards(urls, seed=3, epoch=0) and whole != assign_shards(urls, seed=3, epoch=1)
    for world in (2, 3):
        pieces = {(r, w): assign_shards(urls, 3, 0, r, world, w, 2) for r in range(world) for w in range(2)}
        flat = [u for p in pieces.values() for u in p]
        assert sorted(flat) == sorted(urls) and len(set(flat)) == len(urls)
        for r in range(world):
            mine = whole[r::world]
            assert assign_shards(urls, 3, 0, r, world) == mine
            assert pieces[r, 0] == mine[0::2] and pieces[r, 1] == mine[1::2]


def test_stream_fit_one_epoch_from_http(tmp_path, serve, monkeypatch):
    """D10, issue 25 (4): `trainlab fit` trains an epoch on shards streamed over http with 2 loader
    workers and a crop from the original; the epoch has data.epoch_samples / batch size steps."""
    monkeypatch.chdir(tmp_path)
    _, shards = make_shards(tmp_path)
    urls = shard_pattern(serve(tmp_path / "sh"), tmp_path / "sh", len(shards))
    code = main(["fit", "digits-cnn", "data.name=shards", f"data.urls={urls}", "data.image_size=16",
                 "data.epoch_samples=24", "data.batch_size=8", "data.workers=2", "train.epochs=1",
                 "train.early_stop=null", "data.augment=[random_resized_crop, hflip]", "run.dir=out",
                 "run.tensorboard=false", "doctor.enabled=false"])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "train_loss" in r]
    assert epochs and epochs[-1]["step"] == 3


def test_stream_bad_urls_and_truncated_shards(tmp_path, serve, monkeypatch, capsys):
    """D10, issue 25 (6): a refused connection, a 404 and a truncated shard streamed over http:
    exit 2, one line naming the URL, nothing written; a shard found truncated mid-epoch is an error
    naming it, or with data.skip_corrupt is skipped and named at the end of the epoch."""
    monkeypatch.chdir(tmp_path)
    _, shards = make_shards(tmp_path)
    data = shards[1].read_bytes()
    (tmp_path / "sh" / "cut-000001.tar").write_bytes(data[: len(data) // 2])
    base = serve(tmp_path / "sh")
    port = closed_port()
    fit = ["fit", "digits-cnn", "data.name=shards", "data.image_size=16", "data.epoch_samples=24", "run.dir=out",
           "train.epochs=1", "train.early_stop=null"]
    cases = [
        (f"http://127.0.0.1:{port}/shard-000000.tar", f"shard http://127.0.0.1:{port}/shard-000000.tar cannot be "
                                                      "reached (Connection refused)"),
        (f"{base}/{{shard-000000,nothing}}.tar", f"shard {base}/nothing.tar cannot be reached (HTTP 404"),
        (f"{base}/cut-000001.tar", f"shard {base}/cut-000001.tar is truncated or corrupt"),
        (f"{base}/shard-000000.tar", "data.epoch_samples"),
    ]
    for i, (urls, needle) in enumerate(cases):
        extra = ["data.epoch_samples=null"] if i == 3 else []
        code = main([*fit, f"data.urls={urls}", *extra])
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], lines
        assert not (tmp_path / "out").exists()

    # cut at a member boundary, the tar reader alone sees a shorter archive: its missing end blocks tell
    with tarfile.open(shards[2]) as tar:
        boundary = [m.offset for m in tar][2]
    (tmp_path / "sh" / "edge-000002.tar").write_bytes(shards[2].read_bytes()[:boundary])
    edge = (tmp_path / "sh" / "edge-000002.tar").as_uri()
    with pytest.raises(DataError, match=f"shard {edge} is truncated or corrupt"):
        list(stream_samples(edge))
    assert len(list(stream_samples(shards[2].as_uri()))) >= 1

    # the truncated shard after a good one: found while streaming, not at start-up
    urls = f"{base}/{{shard-000000,cut-000001}}.tar"
    b = build_data(stream_recipe(urls, "data.epoch_samples=6", "data.stats_sample=2"))
    with pytest.raises(DataError, match=f"^data.urls: shard {base}/cut-000001.tar is truncated or corrupt") as err:
        for _ in BatchLoader(b.train, 3, seed=0, shuffle=True, workers=2).batches(0):  # raised in a worker
            pass
    assert "\n" not in str(err.value)
    capsys.readouterr()
    b = build_data(stream_recipe(urls, "data.epoch_samples=6", "data.stats_sample=2", "data.skip_corrupt=true"))
    assert len(list(BatchLoader(b.train, 3, seed=0, shuffle=True).batches(0))) == 2
    err = capsys.readouterr().err
    assert f"{base}/cut-000001.tar" in err and "skipped" in err


def test_stream_ranks_read_their_own_shards(tmp_path):
    """D10, issue 25 (4): under torchrun (simulated by the loader's (rank, world size)), each rank
    streams only the shards assign_shards gives it (file:// URLs here), as its piece of every global
    batch: the same number of batches on every rank, and together every shard is read."""
    import io

    _, shards = make_shards(tmp_path)
    urls = [p.as_uri() for p in shards]
    pattern = f"{(tmp_path / 'sh').as_uri()}/shard-{{000000..{len(shards) - 1:06d}}}.tar"
    b = build_data(stream_recipe(pattern, "data.epoch_samples=24"))
    samples_of = {}
    for url, path in zip(urls, shards):
        with tarfile.open(path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        samples_of[url] = {(digest(np.asarray(Image.open(io.BytesIO(v)).convert("RGB")).tobytes()),
                            int(files[k.split(".")[0] + ".cls"])) for k, v in files.items() if k.endswith(".png")}
    everything = set()
    for rank in range(2):
        loader = BatchLoader(b.train, 4, seed=5, shuffle=True, shard=(rank, 2))
        batches = list(loader.batches(1))
        assert len(batches) == len(loader) == 6 and all(len(bt["target"]) == 2 for bt in batches)
        allowed = set().union(*(samples_of[u] for u in assign_shards(urls, 5, 1, rank, 2)))
        got = set(seen(batches))
        assert got <= allowed
        everything |= allowed
    assert everything == set().union(*samples_of.values())
