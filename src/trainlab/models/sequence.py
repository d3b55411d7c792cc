"""Recurrent networks (M7, S1 Q23-25): RNN / LSTM / GRU sequence classifiers and the Char-RNN.

A recurrent layer carries a hidden state h_t = f(W_h h_{t-1} + W_x x_t) from step to step, so it
reads sequences of any length. The LSTM adds a cell state C_t = f_t ⊙ C_{t-1} + i_t ⊙ C̃_t whose
additive path keeps gradients alive over long spans; the GRU does the same with two gates.

- ``rnn``, ``lstm``, ``gru`` classify a whole sequence from the last hidden state. An image
  (C, H, W) is read as H frames of C·W values (row by row: 8 frames of 8 pixels for a digit), a
  (T, D) input as T frames of D features and a (T,) input as T tokens (embedded).
- ``char_rnn`` predicts the next character at every step (outputs (N, T, vocabulary)) and
  generates text one character at a time with :func:`sample_text`.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import RecipeError
from ..registry import MODELS
from .blocks import as_head
from .options import Options, parse_options

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentOptions(Options):
    bidirectional: bool = Field(False, description="also read the sequence backwards")
    embed: int = Field(32, ge=1, description="embedding width for token inputs")
    drop_connect: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect probability on the classifier weights")


def _recurrent(cell: str, input_size: int, hidden: int, layers: int, dropout: float, activation: str,
               bidirectional: bool = False) -> nn.RNNBase:
    kwargs = dict(num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0,
                  bidirectional=bidirectional)
    if cell == "rnn":
        act = "tanh" if activation == "auto" else activation
        if act not in ("tanh", "relu"):
            raise RecipeError(f"model.activation: a plain RNN cell takes tanh or relu (got {activation!r})")
        kwargs["nonlinearity"] = act
    elif activation not in ("auto", "tanh"):
        raise RecipeError(f"model.activation: {cell.upper()} gates use sigmoid and tanh; set auto (got {activation!r})")
    return CELLS[cell](input_size, hidden, **kwargs)


class SequenceClassifier(nn.Module):
    """A recurrent layer over frames or tokens, then a linear classifier of the last hidden state.

    Input (N, C, H, W) images (H frames), (N, T, D) frames or (N, T) token ids; output (N, classes).
    """

    def __init__(self, cell: str, input_shape: tuple[int, ...], num_classes: int, hidden: int, layers: int,
                 dropout: float = 0.0, activation: str = "auto", vocab: int | None = None,
                 bidirectional: bool = False, embed: int = 32, drop_connect: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed) if vocab else None
        if vocab:
            frame = embed
        elif len(input_shape) == 3:
            frame = input_shape[0] * input_shape[2]
        elif len(input_shape) == 2:
            frame = input_shape[1]
        else:
            raise RecipeError(f"model.name: cannot read input of shape {list(input_shape)} as a sequence")
        self.rnn = _recurrent(cell, frame, hidden, layers, dropout, activation, bidirectional)
        self.head = as_head(nn.Linear(hidden * (2 if bidirectional else 1), num_classes), dropout, drop_connect)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) frames of the input: image rows, given frames, or embedded tokens."""
        if self.embedding is not None:
            return self.embedding(x.long())
        if x.dim() == 4:
            n, c, h, w = x.shape
            return x.permute(0, 2, 1, 3).reshape(n, h, c * w)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.frames(x))
        if self.rnn.bidirectional:
            half = out.shape[-1] // 2
            # forward direction's last step, backward direction's first step: both have read everything
            last = torch.cat([out[:, -1, :half], out[:, 0, half:]], dim=1)
        else:
            last = out[:, -1]
        return self.head(last)


def _classifier(cell: str):
    def build(cfg, info):
        opts = parse_options(cfg.options, RecurrentOptions, cfg.name)
        vocab = None
        if info.kind == "sequence" and len(info.input_shape) == 1:
            vocab = info.extra.get("vocab_size")
            if not vocab:
                raise RecipeError(f"model.name: {cfg.name} reads token ids but the data set declares no vocab_size")
        return SequenceClassifier(cell, tuple(info.input_shape), info.num_classes, cfg.width, cfg.depth,
                                  cfg.dropout, cfg.activation, vocab, opts.bidirectional, opts.embed,
                                  opts.drop_connect)

    build.__name__ = cell
    return build


SEQ_META = dict(options=RecurrentOptions, uses=("width", "depth", "dropout", "activation"), auto_activation="tanh",
                auto_norm="none", default_input=(1, 8, 8), default_classes=10)
MODELS.register("rnn", help="Elman RNN sequence classifier (an image is read row by row)", **SEQ_META)(_classifier("rnn"))
MODELS.register("lstm", help="LSTM sequence classifier (forget/input/output gates, cell state)",
                **SEQ_META)(_classifier("lstm"))
MODELS.register("gru", help="GRU sequence classifier (update and reset gates)", **SEQ_META)(_classifier("gru"))


# -------------------------------------------------------------------------------- Char-RNN
class CharRNNOptions(Options):
    cell: Literal["lstm", "gru", "rnn"] = Field("lstm", description="recurrent cell")
    embed: int = Field(32, ge=1, description="character embedding width")


class CharRNN(nn.Module):
    """Embedding → recurrent layers → linear over the vocabulary, at every step.

    forward: (N, T) token ids → (N, T, V) next-token logits. :meth:`step` also takes and returns
    the recurrent state, which is how text is generated one character at a time.
    """

    def __init__(self, vocab: int, hidden: int, layers: int, cell: str = "lstm", embed: int = 32,
                 dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = _recurrent(cell, embed, hidden, layers, dropout, "auto")
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(hidden, vocab)

    def step(self, tokens: torch.Tensor, state=None):
        out, state = self.rnn(self.embedding(tokens.long()), state)
        return self.head(self.dropout(out)), state

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.step(tokens)[0]


@MODELS.register("char_rnn", help="Char-RNN: embedding, LSTM/GRU/RNN, next-character logits at every step",
                 options=CharRNNOptions, uses=("width", "depth", "dropout"), auto_activation="tanh",
                 auto_norm="none", default_input=(64,), default_classes=65, tasks=("sequence",))
def char_rnn(cfg, info):
    opts = parse_options(cfg.options, CharRNNOptions, cfg.name)
    if info.kind != "sequence" or len(info.input_shape) != 1:
        raise RecipeError(f"model.name: char_rnn reads token sequences (data kind 'sequence'), "
                          f"the data gives {info.kind} {list(info.input_shape)}")
    return CharRNN(info.num_classes, cfg.width, cfg.depth, opts.cell, opts.embed, cfg.dropout)


@torch.no_grad()
def sample_text(net: CharRNN, vocab: list[str], prime: str, length: int, temperature: float = 1.0,
                generator: torch.Generator | None = None) -> str:
    """``prime`` followed by ``length`` generated characters.

    Each character is drawn from softmax(logits / temperature): below 1 the text is more
    conservative and repetitive, above 1 more surprising and misspelt. ``temperature=0`` takes the
    most likely character every time.
    """
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted({ch for ch in prime if ch not in index})
    if unknown:
        raise RecipeError(f"--prime: characters {''.join(unknown)!r} are not in the model's vocabulary")
    if not prime:
        raise RecipeError("--prime: give at least one character to start from")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    tokens = torch.tensor([[index[ch] for ch in prime]], device=device)
    logits, state = net.step(tokens)
    out = []
    for _ in range(length):
        last = logits[0, -1].float()
        if temperature <= 0:
            nxt = int(last.argmax())
        else:
            probs = F.softmax(last / temperature, dim=-1)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        out.append(vocab[nxt])
        logits, state = net.step(torch.tensor([[nxt]], device=device), state)
    net.train(was_training)
    return prime + "".join(out)
