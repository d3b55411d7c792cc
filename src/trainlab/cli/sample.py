"""trainlab sample RUN [--len N] [--temperature T] [--prime TEXT] [--seed S]: text from a Char-RNN run."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("run", help="run directory of a Char-RNN recipe (e.g. trainlab fit char-rnn)")
    p.add_argument("--len", type=int, default=300, dest="length", help="characters to generate (default 300)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature: lower is safer, higher more varied; 0 takes the most likely (default 0.8)")
    p.add_argument("--prime", default=None, help="text to start from (default: the first character of the vocabulary "
                   "that is an upper-case letter, else the first)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")


def run(args) -> int:
    import torch

    from ..errors import RunError, TrainlabError
    from ..models.sequence import CharRNN, sample_text
    from ..run import open_run

    if args.length < 1:
        raise TrainlabError(f"--len: expected a positive number of characters, got {args.length}")
    if not args.temperature >= 0:
        raise TrainlabError(f"--temperature: expected a number >= 0, got {args.temperature}")
    run = open_run(args.run)
    model, _, recipe, info, _ = run.load_model(args.checkpoint)
    if not isinstance(model.net, CharRNN):
        raise RunError(f"{run.dir}: model {recipe.model.name!r} does not generate text (train a char_rnn recipe, "
                       "e.g. trainlab fit char-rnn)")
    vocab = list(info.class_names)
    prime = args.prime if args.prime is not None else next((c for c in vocab if c.isupper()), vocab[0])
    g = torch.Generator().manual_seed(args.seed)
    print(sample_text(model.net, vocab, prime, args.length, args.temperature, g))
    return 0
