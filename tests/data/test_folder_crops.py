"""D10, issue 25: folder images are cropped from the decoded original (checked against torchvision's
resized_crop and Resize + CenterCrop on the same parameters), start-up reads a bounded sample
whose findings are cached, and unreadable files are found when read."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from trainlab.cli import main
from trainlab.data import build_data
from trainlab.data import decode
from trainlab.data.augment import RandomResizedCrop, SamplePipeline
from trainlab.data.bundle import DataInfo
from trainlab.data.loader import BatchLoader
from trainlab.errors import DataError
from trainlab.recipe import load_recipe


def photo(h: int, w: int, seed: int = 0, period: float = 3.0) -> np.ndarray:
    """A colour image: gradients, rings of about ``period`` pixels, mild noise (uint8 HWC)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ring = 60 * np.sin(np.hypot(yy - h / 2, xx - w / 3) / (period + seed % 3))
    img = np.stack([xx * 200 / w + ring, yy * 200 / h - ring, (xx + yy) * 100 / (h + w) + 60], -1)
    return np.clip(img + rng.normal(0, 4, img.shape) + 20, 0, 255).astype(np.uint8)


def write(path, arr, fmt=None, quality=95):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=quality) if (fmt or path.suffix) in (".jpg", "JPEG") else \
        Image.fromarray(arr).save(path)
    return path


def chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1).contiguous()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLAB_CACHE", str(tmp_path / "cache"))


def test_crop_from_the_original_matches_torchvision_resized_crop(tmp_path):
    """D10, issue 25: a random_resized_crop of a file is torchvision's resized_crop of the decoded original
    on the same (top, left, height, width): within 1 grey level for a PNG (the same antialiased
    bilinear kernel, full-scale decode), and within 2 levels on average for a JPEG crop far larger
    than the output, which is decoded at a reduced DCT scale (draft) rather than resized."""
    arr = photo(150, 200)
    png = decode.read_encoded(write(tmp_path / "a.png", arr), 3)
    op = RandomResizedCrop(24)
    for seed in range(5):
        torch.manual_seed(seed)
        params = op.params_for(150, 200)
        torch.manual_seed(seed)
        got = op.apply_encoded(png, (24, 24), "crop", 0.875).as_subclass(torch.Tensor)
        box = [params[k] for k in ("top", "left", "height", "width")]
        want = TF.resized_crop(chw(arr), *box, size=[24, 24], antialias=True)
        assert got.shape == (3, 24, 24) and got.dtype == torch.uint8
        assert (got.int() - want.int()).abs().max() <= 1, seed

    big = photo(480, 640, seed=1, period=12.0)
    data = io.BytesIO()
    Image.fromarray(big).save(data, "JPEG", quality=95)
    (tmp_path / "b.jpg").write_bytes(data.getvalue())
    jpg = decode.read_encoded(tmp_path / "b.jpg", 3)
    full = chw(np.asarray(Image.open(tmp_path / "b.jpg").convert("RGB")))
    from trainlab.data.augment import resize_image

    box = (40, 60, 400, 480)
    for out, scale, shape in ((24, 4, (100, 120)), (64, 4, (100, 120)), (128, 2, (200, 240))):
        assert decode._draft_scale(box[2:], (out, out)) == scale  # never 1/8 (see _draft_scale)
        region = decode.decode_region(jpg, box, (out, out))
        assert tuple(region.shape[1:]) == shape
        got = resize_image(region, (out, out))
        want = TF.resized_crop(full, *box, size=[out, out], antialias=True)
        assert (got.float() - want.float()).abs().mean() < 1.0, out
        assert abs(float((got.float() - want.float()).mean())) < 0.1, out
    # at full scale (no reduction possible) the JPEG crop equals torchvision's on the same decode
    box = (10, 20, 60, 50)
    got = resize_image(decode.decode_region(jpg, box, (32, 32)), (32, 32))
    want = TF.resized_crop(full, *box, size=[32, 32], antialias=True)
    assert (got.int() - want.int()).abs().max() <= 2


def test_eval_view_is_resize_shorter_side_and_centre_crop(tmp_path):
    """D10, issue 25: validation images are resized so that the short side is floor(size / crop_pct)
    (torchvision's Resize(S) rounding) and centre-cropped, as timm's crop_pct and torchvision's
    Resize + CenterCrop evaluate; eval_resize=squash resizes to the size; an image of the output
    size is used as it is."""
    for h, w in ((150, 200), (200, 130)):
        arr = photo(h, w, seed=h)
        enc = decode.read_encoded(write(tmp_path / f"{h}.png", arr), 3)
        got = decode.eval_view(enc, (56, 56), "crop", 0.875)
        s = math.floor(56 / 0.875)  # 64
        want = TF.center_crop(TF.resize(chw(arr), [s], antialias=True), [56, 56])
        assert got.shape == want.shape == (3, 56, 56)
        assert (got.int() - want.int()).abs().max() <= 1
        got = decode.eval_view(enc, (40, 60), "squash")
        want = TF.resize(chw(arr), [40, 60], antialias=True)
        assert (got.int() - want.int()).abs().max() <= 1
        assert torch.equal(decode.eval_view(enc, (h, w), "crop"), chw(arr))


def make_folder(root, n=12, sizes=((30, 40), (40, 30), (36, 36)), fmt="png", classes=("a", "b")):
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        write(root / classes[i % len(classes)] / f"{i:03d}.{fmt}", photo(h, w, seed=i))
    return root


def recipe(root, *extra):
    return load_recipe("digits-cnn", ["data.name=folder", f"data.root={root}", "data.batch_size=4",
                                      "data.image_size=16", *extra])


def test_training_crops_come_from_mixed_size_originals(tmp_path):
    """D10, issue 25: a folder of mixed sizes needs data.image_size only as the output size; training reads
    the originals undecoded and crops each at that size (the crop's box drawn on the original's
    size), validation uses the evaluation view; loading is deterministic per (seed, epoch, index)."""
    root = make_folder(tmp_path / "d")
    with pytest.raises(DataError, match=r"002.png: image is 36x36 but .*000.png is 30x40; set data.image_size to the output size"):
        build_data(recipe(root, "data.image_size=null"))
    r = recipe(root, "data.augment=[random_resized_crop, hflip]")
    b = build_data(r)
    assert b.info.input_shape == (3, 16, 16)
    from trainlab.data.transforms import build_transforms

    pipe = build_transforms(r.data.augment, b.info).bind(b.train)
    assert pipe.reads_from is not None and pipe.reads_from.is_originals
    seen = []

    def count(enc, *rest):
        seen.append(enc.size)
        return real(enc, *rest)

    real = pipe.before[0].apply_encoded
    pipe.before[0].apply_encoded = count
    loader = BatchLoader(b.train, 4, seed=0, shuffle=True, transform=pipe)
    batches = [bt["input"] for bt in loader.batches(0)]
    assert all(x.shape[1:] == (3, 16, 16) and x.dtype == torch.uint8 for x in batches)
    assert len(seen) == sum(len(x) for x in batches) and {(30, 40), (40, 30), (36, 36)} >= set(seen) and len(set(seen)) > 1
    again = [bt["input"] for bt in BatchLoader(b.train, 4, seed=0, shuffle=True, transform=pipe).batches(0)]
    assert all(torch.equal(x, y) for x, y in zip(batches, again))
    assert {tuple(b.val.load(i)[0].shape) for i in range(len(b.val))} == {(3, 16, 16)}


def test_start_up_reads_a_bounded_sample_and_caches_it(tmp_path, monkeypatch):
    """D10, issue 25: start-up decodes data.stats_sample files (not the folder); the statistics are the
    mean and population std of the training files among them (numpy reference over those files);
    a second start on the same listing reads no file (see the next test for what changes the key)."""
    root = make_folder(tmp_path / "d", n=24, sizes=((16, 16),))
    reads = []
    real = decode.read_encoded
    monkeypatch.setattr(decode, "read_encoded", lambda path, *a, **k: (reads.append(path), real(path, *a, **k))[1])
    b = build_data(recipe(root, "data.stats_sample=24"))
    assert len(reads) == 24 and "statistics from" in b.info.extra["statistics"]
    pixels = np.stack([np.asarray(Image.open(p)) for p in b.train.paths]).reshape(-1, 3).astype(np.float64)
    assert np.allclose(b.mean.numpy(), pixels.mean(0), atol=1e-3)
    assert np.allclose(b.std.numpy(), pixels.std(0), atol=1e-3)
    reads.clear()
    b2 = build_data(recipe(root, "data.stats_sample=24"))
    assert reads == [] and torch.equal(b2.mean, b.mean) and "(cached)" in b2.info.extra["statistics"]
    b3 = build_data(recipe(root, "data.stats_sample=6"))
    assert len(reads) == 6 and not b3.info.extra["sample"]["cached"]


def test_the_statistics_cache_is_keyed_by_the_listing_and_the_sampled_files(tmp_path, monkeypatch):
    """D10, issue 25: the cache key is the sorted file names (no per-file stat); a file added, removed or
    renamed misses it, the same listing hits it; a sampled file rewritten in place (new size or
    modification time) is re-read, a file outside the sample changes nothing the cache holds."""
    import os

    from trainlab.data.folder import list_folder

    root = make_folder(tmp_path / "d", n=24, sizes=((16, 16),))
    reads = []
    real = decode.read_encoded
    monkeypatch.setattr(decode, "read_encoded", lambda path, *a, **k: (reads.append(path), real(path, *a, **k))[1])

    def start() -> bool:
        reads.clear()
        return build_data(recipe(root, "data.stats_sample=6")).info.extra["sample"]["cached"]

    assert not start() and len(reads) == 6
    assert start() and reads == []
    write(root / "a" / "100.png", photo(16, 16, seed=100))  # added
    assert not start() and len(reads) == 6
    assert start()
    os.rename(root / "b" / "001.png", root / "b" / "201.png")  # renamed
    assert not start()
    assert start()
    os.remove(root / "a" / "100.png")  # removed
    assert not start()
    b = build_data(recipe(root, "data.stats_sample=6"))
    paths = list_folder(root)[1]
    sampled = sorted(b.train.sample)
    assert len(b.train.sample) == 6 and b.info.extra["sample"]["cached"]
    unsampled = next(p for i, p in enumerate(paths) if i not in b.train.sample)
    write(Path(unsampled), photo(16, 16, seed=7))  # rewritten in place
    assert start() and reads == []
    mean = b.mean.clone()
    target = paths[sampled[0]]
    write(Path(target), np.full((16, 16, 3), 255, np.uint8))  # rewritten in place: its stamp tells
    b2 = build_data(recipe(root, "data.stats_sample=6"))
    assert not b2.info.extra["sample"]["cached"] and target in reads
    in_train = sampled[0] in set(b2.train.ids)
    assert (b2.mean > mean).all() if in_train else torch.equal(b2.mean, mean)
    assert start() and reads == []


def test_sampled_statistics_at_draft_scale_match_full_decodes(tmp_path):
    """D10, issue 25: the start-up sample decodes JPEGs at a reduced DCT scale (1/4 here). On real photos
    (scikit-learn's two sample images, cut into 150x200 to 427x640 pieces) the mean stays within 1%
    of a std of that of the full decodes (numpy over PIL's full decode of the same training files)
    and the std within 5% (the variance inside 4x4 blocks is lost: the std comes out low)."""
    from sklearn.datasets import load_sample_image

    i = 0
    for name in ("china.jpg", "flower.jpg"):
        img = load_sample_image(name)
        for (h, w) in ((150, 200), (200, 150), (300, 400), (427, 640)):
            for top, left in ((0, 0), (img.shape[0] - h, img.shape[1] - w)):
                write(tmp_path / "d" / "ab"[i % 2] / f"{i:03d}.jpg", img[top:top + h, left:left + w], quality=90)
                i += 1
    b = build_data(recipe(tmp_path / "d", "data.split.val=0", "data.split.test=0"))
    s = np.zeros(3)
    sq = np.zeros(3)
    n = 0
    for p in b.train.paths:
        a = np.asarray(Image.open(p).convert("RGB"), np.float64).reshape(-1, 3)
        s, sq, n = s + a.sum(0), sq + (a * a).sum(0), n + len(a)
    mean = s / n
    std = np.sqrt(sq / n - mean * mean)
    assert np.abs(b.mean.numpy() - mean).max() < 0.01 * std.min()
    assert (np.abs(b.std.numpy() / std - 1) < 0.05).all()


def test_corrupt_files_are_found_when_read(tmp_path, capsys):
    """D10, issue 25: a corrupt file outside the start-up sample is found when a batch reads it: an error
    naming it, or with data.skip_corrupt=true the next readable file in its place and the file named
    at the end of the epoch."""
    root = make_folder(tmp_path / "d", n=16, sizes=((16, 16),))
    (root / "a" / "zz_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    for skip in (False, True):
        b = build_data(recipe(root, "data.stats_sample=2", "data.split.val=0", "data.split.test=0",
                            f"data.skip_corrupt={str(skip).lower()}", "data.augment=[random_resized_crop]"))
        from trainlab.data.transforms import build_transforms

        loader = BatchLoader(b.train, 4, seed=0, shuffle=False, drop_singleton=False,
                             transform=build_transforms(["random_resized_crop"], b.info))
        bad = [str(p) for p in b.train.paths].index(str(root / "a" / "zz_bad.png"))
        if not skip:
            with pytest.raises(DataError, match=r"zz_bad.png: (not a readable image|corrupt)"):
                list(loader.batches(0))
            continue
        for loader in (loader, BatchLoader(b.train, 4, seed=0, shuffle=False, drop_singleton=False)):
            capsys.readouterr()
            xs = torch.cat([bt["input"] for bt in loader.batches(0)])
            assert len(xs) == len(b.train)
            err = capsys.readouterr().err
            assert "skipped 1 unreadable image file(s) this epoch" in err and "zz_bad.png" in err
        # the evaluation view shows the replacement: the next file of the split
        assert torch.equal(xs[bad], xs[(bad + 1) % len(xs)])


def test_an_all_corrupt_folder_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """D10, issue 25 (6): a folder none of whose images can be read: exit 2, one line naming the folder,
    no run directory, with or without data.skip_corrupt."""
    monkeypatch.chdir(tmp_path)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / c / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for extra in ([], ["data.skip_corrupt=true"]):
        code = main(["fit", "data.name=folder", "data.root=data", "run.dir=out", "train.epochs=1", *extra])
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1, lines
        assert "data.root: no image under data can be read (6 of 6 sampled files" in lines[0]
        assert not (tmp_path / "out").exists()
