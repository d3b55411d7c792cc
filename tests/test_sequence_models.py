"""Sequence models and the sequence task (M7, K6): text windows, Char-RNN training and sampling, and an LSTM
that classifies digits read row by row."""
from __future__ import annotations

import math

import pytest
import torch

from trainlab import fit
from trainlab.data.bundle import build_data
from trainlab.errors import DataError, RecipeError
from trainlab.models.sequence import CharRNN, sample_text
from trainlab.recipe import load_recipe

from conftest import FAST


def test_text_windows_are_shifted_by_one_character(tmp_path):
    """K6: each target is its input shifted by one character; the vocabulary is the sorted character set;
    validation and test are the end of the text, in order."""
    text = "abcabcabd" * 40
    path = tmp_path / "t.txt"
    path.write_text(text)
    bundle = build_data(load_recipe("char-rnn", [f"data.root={path}", "data.text.seq_len=8"]))
    vocab = bundle.info.class_names
    assert vocab == ["a", "b", "c", "d"] and bundle.info.kind == "sequence" and bundle.info.input_shape == (8,)
    x, y = bundle.train.inputs, bundle.train.targets
    decode = lambda ids: "".join(vocab[i] for i in ids.tolist())  # noqa: E731
    assert decode(x[0]) == text[:8] and decode(y[0]) == text[1:9]
    assert decode(x[1]) == text[4:12]  # default stride seq_len // 2
    n_test = int(len(text) * 0.05)
    tail = "".join(decode(row) for row in bundle.test.inputs)  # non-overlapping windows of the last n_test chars
    assert len(tail) == 8 * ((n_test - 1) // 8) and text[-n_test:].startswith(tail)
    assert torch.equal(bundle.mean, torch.zeros(1))


def test_text_errors(tmp_path):
    """K6: a missing file, an unknown built-in text and a text too short for one window are DataErrors."""
    with pytest.raises(DataError, match="data.root"):
        build_data(load_recipe("char-rnn", [f"data.root={tmp_path / 'missing.txt'}"]))
    with pytest.raises(DataError, match="data.text.builtin: unknown built-in text 'moby'"):
        build_data(load_recipe("char-rnn", ["data.text.builtin=moby"]))
    short = tmp_path / "s.txt"
    short.write_text("tiny")
    with pytest.raises(DataError, match="seq_len"):
        build_data(load_recipe("char-rnn", [f"data.root={short}"]))
    text = tmp_path / "t.txt"
    text.write_text("abcabcabd" * 40)
    with pytest.raises(DataError, match=r"^data.subset=1000 is larger than the training split \(\d+ windows\)$"):
        build_data(load_recipe("char-rnn", [f"data.root={text}", "data.subset=1000"]))
    # Issue 22: a batch larger than the split (of a data set with its own splits) is not refused;
    # training uses one batch of the whole split and says so in windows.
    from trainlab.data.bundle import batch_size_note
    from trainlab.optim.optimizers import train_batch_size

    big = load_recipe("char-rnn", [f"data.root={text}", "data.batch_size=1000"])
    n = len(build_data(big, statistics=False).train)
    assert train_batch_size(big, n) == n < 1000
    assert batch_size_note(1000, n, "windows") == (f"data: data.batch_size=1000 is larger than the training split "
                                                  f"({n} windows); training with one batch of {n}")


def test_char_rnn_learns_and_samples(tmp_path, capsys):
    """M7/K6, S1 Q23: a Char-RNN trained a few epochs beats the uniform guess (loss < ln V); perplexity is exp(loss);
    `trainlab sample` prints the prime followed by --len generated characters."""
    run = fit("char-rnn", FAST + ["train.epochs=4", "model.width=64", f"run.dir={tmp_path / 'run'}"], quiet=True)
    summary = run.summary()
    vocab = len(summary["class_names"])
    val = summary["val"]
    assert val["loss"] < 0.8 * math.log(vocab)
    assert abs(val["perplexity"] - math.exp(val["loss"])) < 1e-6 * val["perplexity"]
    assert abs(val["bits_per_char"] - val["loss"] / math.log(2)) < 1e-9
    from trainlab.cli import main

    assert main(["sample", str(run.dir), "--len", "80", "--prime", "The ", "--temperature", "0.5"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("The ") and len(text) == 4 + 80
    assert set(text) <= set(summary["class_names"])


def test_sampling_rules():
    """M7: temperature 0 is greedy and repeatable; the same seed gives the same text; unknown prime characters are
    a one-line error."""
    torch.manual_seed(0)
    net = CharRNN(vocab=5, hidden=16, layers=1)
    vocab = list("abcde")
    greedy = sample_text(net, vocab, "ab", 20, 0.0)
    assert greedy == sample_text(net, vocab, "ab", 20, 0.0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert sample_text(net, vocab, "a", 30, 1.0, g1) == sample_text(net, vocab, "a", 30, 1.0, g2)
    with pytest.raises(RecipeError, match="'xz'"):
        sample_text(net, vocab, "zax", 5)


def test_lstm_classifies_digits_row_by_row(tmp_path):
    """M7/K6, S1 Q23: an LSTM reading the 8 rows of a digit as 8 frames learns to classify it."""
    run = fit("digits-lstm", FAST + ["train.epochs=8", f"run.dir={tmp_path / 'run'}"], quiet=True)
    assert run.summary()["test"]["accuracy"] > 0.8


def test_models_and_tasks_must_agree():
    """K6: a Char-RNN needs the sequence task; the text data set needs the sequence task; the sequence task needs a
    per-step model."""
    from trainlab.api import build_components

    with pytest.raises(RecipeError, match="built for task sequence"):
        build_components(load_recipe("char-rnn", ["task=classification"]))
    with pytest.raises(RecipeError, match="data set for task 'sequence'"):
        build_components(load_recipe("char-rnn", ["task=classification", "model.name=lstm"]))
    with pytest.raises(RecipeError, match="does not predict a token per step"):
        build_components(load_recipe("char-rnn", ["model.name=lstm"]))


@pytest.mark.parametrize("override, field", [
    ("data.augment=[{name: hflip, p: 1.0}]", "data.augment"),  # would reverse every window, targets forward
    ("data.augment=[rotate]", "data.augment"),
    ("data.batch_augment=[mixup]", "data.batch_augment"),
    ("data.batch_augment=[cutout]", "data.batch_augment"),
    ("data.whiten=pca", "data.whiten"),
    ("data.imbalance=0.5", "data.imbalance"),
    ("data.image_size=16", "data.image_size"),
    ("data.channels=3", "data.channels"),
])
def test_text_refuses_image_options(override, field, tmp_path):
    """K6, D7/D2: image-only data options on token sequences are a one-line RecipeError before anything is
    written, instead of being ignored (whiten, imbalance) or breaking the windows (hflip) or the run (mixup)."""
    with pytest.raises(RecipeError, match=rf"^{field}: data set 'text' gives token sequences, not images;") as err:
        fit("char-rnn", FAST + [override, f"run.dir={tmp_path / 'run'}"], quiet=True)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_text_has_no_images_to_preview(tmp_path, capsys):
    """K6, D11: `trainlab augment char-rnn` is a one-line error (it used to end in a traceback in the preview)."""
    from trainlab.cli import main

    with pytest.raises(RecipeError, match="data.name: data set 'text' gives token sequences"):
        build_data(load_recipe("char-rnn"), annotations=True)
    assert main(["augment", "char-rnn", "--out", str(tmp_path / "g.png")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "token sequences" in lines[0] and not (tmp_path / "g.png").exists()


def test_text_options_are_typed(tmp_path):
    """K6: data.text is a typed section (builtin, seq_len, stride): a misspelt key or a bad value names the field,
    and the old free-form data.options is an unknown key."""
    with pytest.raises(RecipeError, match=r"data.text.seqlen: unknown key; did you mean data.text.seq_len\?"):
        load_recipe("char-rnn", ["data.text.seqlen=8"])
    with pytest.raises(RecipeError, match=r"data.text.seq_len: .*greater than or equal to 2"):
        load_recipe("char-rnn", ["data.text.seq_len=1"])
    with pytest.raises(RecipeError, match="data.options: unknown key"):
        load_recipe("char-rnn", ["data.options.seq_len=8"])
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 20)
    bundle = build_data(load_recipe("char-rnn", [f"data.root={path}", "data.text={seq_len: 10, stride: 10}",
                                                 "data.batch_size=4"]))
    assert bundle.train.inputs.shape[1] == 10 and torch.equal(bundle.train.inputs[1], bundle.train.inputs[0])


def test_text_folds_are_contiguous_blocks(tmp_path):
    """D9, K6: with data.fold the text (minus the test tail) is cut into k contiguous blocks; block `index` is
    the validation text and training windows come from the text before and after it, never reaching into it.
    The k validation blocks partition the text, so k-fold scores differ per fold (they used to be one split
    trained k times)."""
    g = torch.Generator().manual_seed(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz "
    text = "".join(alphabet[i] for i in torch.randint(len(alphabet), (1500,), generator=g).tolist())
    path = tmp_path / "t.txt"
    path.write_text(text)
    n, k, L, stride = len(text), 3, 8, 4
    rest = n - int(n * 0.1)
    seen = []
    for index in range(k):
        b = build_data(load_recipe("char-rnn", [f"data.root={path}", "data.text.seq_len=8", "data.split.test=0.1",
                                                "data.fold={k: 3, index: %d}" % index, "data.batch_size=8"]))
        vocab = b.info.class_names
        decode = lambda ids: "".join(vocab[i] for i in ids.tolist())  # noqa: E731
        lo, hi = index * rest // k, (index + 1) * rest // k
        val = "".join(decode(row) for row in b.val.inputs)  # non-overlapping windows from the block's start
        assert val == text[lo:lo + L * ((hi - lo - 1) // L)]
        seen.append((lo, hi))
        parts = [(0, lo), (hi, rest)]
        assert len(b.train) == sum(max(0, (e - s - 1 - L) // stride + 1) for s, e in parts)
        for x, y in zip(b.train.inputs, b.train.targets):
            start = text.find(decode(x) + decode(y)[-1])
            assert any(s <= start and start + L + 1 <= e for s, e in parts), (index, start)
        assert "".join(decode(row) for row in b.test.inputs) == text[rest:rest + L * ((n - rest - 1) // L)]
    assert seen[0][0] == 0 and seen[-1][1] == rest and all(a[1] == b[0] for a, b in zip(seen, seen[1:]))
