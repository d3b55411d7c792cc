"""The ``text`` data set: a plain-text file cut into character windows for next-character
prediction (the Char-RNN of S1 Q23, K6).

``data.root`` is a UTF-8 ``.txt`` file; without it, a text shipped with trainlab
(``data.text.builtin``, default ``lighthouse``: a short tale written for the project). The
vocabulary is the sorted set of characters; a sample is ``data.text.seq_len`` character ids and
its target the same window shifted by one character. The text is split in order (training text
first, then validation, then test), so the held-out windows are text the model has never seen, not
overlapping copies of training windows.

With ``data.fold`` (D9) the test text stays the end of the file and the rest is cut into k
contiguous blocks: block ``index`` is the validation text and the training windows come from the
text before and after it, each part windowed on its own so that no training window reaches into
the validation block (a blocked k-fold; overlapping windows make a random one leak).
``data.subset`` keeps the first N training windows. Image-only options (augmentations, whitening,
class imbalance, image size and channels) and a batch larger than the training windows are
refused by :func:`trainlab.data.bundle.build_data`.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from ..errors import DataError
from ..registry import DATASETS
from .bundle import DataBundle, DataInfo, TensorSource, check_subset


def builtin_texts() -> dict[str, Path]:
    folder = resources.files("trainlab") / "data" / "text"
    return {p.name[:-4]: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".txt")}


def read_text(root: str | None, name: str) -> tuple[str, str]:
    """(text, where it came from) of ``data.root`` or the built-in text ``name``."""
    if root:
        path = Path(root)
        if not path.is_file():
            raise DataError(f"data.root: {root!r} is not a file (expected a UTF-8 .txt file)")
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError:
            raise DataError(f"data.root: {root!r} is not UTF-8 text") from None
    texts = builtin_texts()
    if name not in texts:
        raise DataError(f"data.text.builtin: unknown built-in text {name!r}; known: {', '.join(sorted(texts))} "
                        "(or set data.root to a .txt file)")
    return texts[name].read_text(encoding="utf-8"), f"built-in text {name!r}"


def windows(ids: torch.Tensor, seq_len: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (N, seq_len): windows of ``ids`` and the same windows one step later."""
    n = (len(ids) - 1 - seq_len) // stride + 1
    if n < 1:
        return ids.new_zeros(0, seq_len), ids.new_zeros(0, seq_len)
    starts = torch.arange(n) * stride
    idx = starts[:, None] + torch.arange(seq_len)[None, :]
    return ids[idx], ids[idx + 1]


def text_parts(n: int, val: float, test: float, fold=None) -> tuple[list[tuple[int, int]], tuple[int, int],
                                                                  tuple[int, int]]:
    """Character ranges [start, end) of a text of ``n`` characters: (training parts, validation, test).

    Without ``fold``: training text first, then ``val``, then ``test`` (fractions of ``n``). With
    ``fold`` (k, index): the last ``test`` fraction is the test text and the rest is cut into k
    contiguous blocks whose sizes differ by at most one; block ``index`` is the validation text
    and the text before and after it are the (up to two) training parts.
    """
    n_test = int(n * test)
    if fold is None:
        n_val = int(n * val)
        n_train = n - n_val - n_test
        return [(0, n_train)], (n_train, n_train + n_val), (n_train + n_val, n)
    rest = n - n_test
    lo, hi = fold.index * rest // fold.k, (fold.index + 1) * rest // fold.k
    train = [part for part in ((0, lo), (hi, rest)) if part[1] > part[0]]
    return train, (lo, hi), (rest, n)


def _held_out(part: torch.Tensor, seq_len: int) -> TensorSource | None:
    # Non-overlapping windows, shorter than seq_len when the part is short: a recurrent net reads
    # any length.
    size = min(seq_len, len(part) - 1)
    if size < 1:
        return None
    x, y = windows(part, size, size)
    return TensorSource(x, y) if len(x) else None


@DATASETS.register("text", help="characters of a .txt file (data.root) or a built-in text, for Char-RNN "
                   "next-character prediction (task: sequence)", kind="sequence", handles=("fold", "subset"),
                   uses=("root", "text"))
def text(cfg, seed: int):
    from ..recipe import TextConfig

    opts = cfg.text or TextConfig()
    content, where = read_text(cfg.root, opts.builtin)
    vocab = sorted(set(content))
    if len(vocab) < 2:
        raise DataError(f"{where}: needs at least two different characters")
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in content], dtype=torch.long)
    L = opts.seq_len
    stride = opts.stride or max(1, L // 2)
    train_parts, (v0, v1), (t0, t1) = text_parts(len(ids), cfg.split.val, cfg.split.test, cfg.fold)
    pieces = [windows(ids[a:b], L, stride) for a, b in train_parts]
    train = (torch.cat([x for x, _ in pieces]), torch.cat([y for _, y in pieces]))
    if len(train[0]) == 0:
        chars = " and ".join(str(b - a) for a, b in train_parts) or "0"
        fold = f" (data.fold k={cfg.fold.k}, index {cfg.fold.index})" if cfg.fold is not None else ""
        raise DataError(f"{where}: {len(ids)} characters leave {chars} for training{fold}, fewer than "
                        f"data.text.seq_len + 1 = {L + 1} in one piece")
    if cfg.fold is not None and v1 - v0 < 2:
        raise DataError(f"data.fold.k={cfg.fold.k}: {where} leaves {v1 - v0} characters per validation block; "
                        "use fewer folds or a longer text")
    held = [_held_out(ids[v0:v1], L), _held_out(ids[t0:t1], L)]
    if cfg.subset is not None:
        check_subset(cfg.subset, len(train[0]), "windows")
        train = (train[0][: cfg.subset], train[1][: cfg.subset])
    source = TensorSource(*train)
    info = DataInfo(
        input_shape=(L,),
        num_classes=len(vocab),
        class_names=vocab,  # the vocabulary: `trainlab sample` decodes with it
        kind="sequence",
        extra={"task": "sequence", "vocab_size": len(vocab), "source": where, "characters": len(ids)},
    )
    return DataBundle(source, held[0], held[1], info, torch.zeros(1), torch.ones(1))
