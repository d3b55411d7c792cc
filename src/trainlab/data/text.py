"""The ``text`` data set: a plain-text file cut into character windows for next-character
prediction (the Char-RNN of S1 Q23, K6).

``data.root`` is a UTF-8 ``.txt`` file; without it, a text shipped with trainlab
(``data.options.text``, default ``lighthouse``: a short tale written for the project). The
vocabulary is the sorted set of characters; a sample is ``seq_len`` character ids and its target
the same window shifted by one character. The text is split in order (training text first, then
validation, then test), so the held-out windows are text the model has never seen, not
overlapping copies of training windows.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from pydantic import Field

from ..errors import DataError
from ..models.options import Options, parse_options
from ..registry import DATASETS
from .bundle import DataBundle, DataInfo, TensorSource


class TextOptions(Options):
    text: str = Field("lighthouse", description="built-in text, used when data.root is not set")
    seq_len: int = Field(64, ge=2, description="characters per training window")
    stride: int | None = Field(None, ge=1, description="start-to-start distance of training windows "
                               "(default seq_len // 2: overlapping windows)")


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
        raise DataError(f"data.options.text: unknown built-in text {name!r}; known: {', '.join(sorted(texts))} "
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


@DATASETS.register("text", help="characters of a .txt file (data.root) or a built-in text, for Char-RNN "
                   "next-character prediction (task: sequence)", kind="sequence")
def text(cfg, seed: int):
    opts = parse_options(cfg.options, TextOptions, "data set text")
    content, where = read_text(cfg.root, opts.text)
    vocab = sorted(set(content))
    if len(vocab) < 2:
        raise DataError(f"{where}: needs at least two different characters")
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([index[ch] for ch in content], dtype=torch.long)
    L = opts.seq_len
    n_test = int(len(ids) * cfg.split.test)
    n_val = int(len(ids) * cfg.split.val)
    n_train = len(ids) - n_val - n_test
    if n_train < L + 1:
        raise DataError(f"{where}: {len(ids)} characters leave {n_train} for training, fewer than "
                        f"data.options.seq_len + 1 = {L + 1}")
    train = windows(ids[:n_train], L, opts.stride or max(1, L // 2))
    held = []
    for part in (ids[n_train:n_train + n_val], ids[n_train + n_val:]):
        # Non-overlapping windows, shorter than seq_len when the part is short: a recurrent net
        # reads any length.
        size = min(L, len(part) - 1)
        x, y = windows(part, size, size) if size >= 1 else (None, None)
        held.append(TensorSource(x, y) if x is not None and len(x) else None)
    if cfg.subset is not None:
        if cfg.subset > len(train[0]):
            raise DataError(f"data.subset={cfg.subset} is larger than the training split ({len(train[0])} windows)")
        train = (train[0][: cfg.subset], train[1][: cfg.subset])
    source = TensorSource(*train)
    if isinstance(cfg.batch_size, int) and cfg.batch_size > len(source):
        raise DataError(f"data.batch_size={cfg.batch_size} is larger than the training split ({len(source)} windows); "
                        f"use at most {len(source)} or 'full'")
    info = DataInfo(
        input_shape=(L,),
        num_classes=len(vocab),
        class_names=vocab,  # the vocabulary: `trainlab sample` decodes with it
        kind="sequence",
        extra={"task": "sequence", "vocab_size": len(vocab), "source": where, "characters": len(ids)},
    )
    return DataBundle(source, held[0], held[1], info, torch.zeros(1), torch.ones(1))
