"""The ``trainlab`` command line: a thin layer over the library.

Each subcommand lives in its own module here with two functions, ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the command being run is imported, so ``trainlab --help``
and ``trainlab recipes`` start in a fraction of a second. Errors the user can cause
(:class:`~trainlab.errors.TrainlabError`) become one line on stderr and exit code 2, and so does an
operating-system error (a full disk, a read-only folder): the path and the reason, no traceback.

Exit codes: 0 done; 1 a failed check (an export's parity); 2 a user or OS error; 128 + N a run
stopped by signal N after saving a checkpoint (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; `trainlab fit
--resume RUN` continues it).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import TrainlabError, closest

# name -> (module, one-line help). Order is the order of `trainlab --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("fit", "train a recipe (built-in name or YAML path) and write a run directory"),
    "recipes": ("recipes", "list the built-in recipes"),
    "evaluate": ("evaluate", "evaluate a run's checkpoint on its val or test split"),
    "predict": ("predict", "print the top-k classes for image or .npy files"),
    "eval-detections": ("eval_detections", "COCO box or mask evaluation of a detections JSON against ground truth"),
    "schedule": ("schedule", "draw a recipe's learning-rate schedule without training"),
    "lr-find": ("lr_find", "run the LR range test and suggest a learning rate"),
    "kfold": ("kfold", "k-fold cross-validation of one or more recipes, ranked"),
    "tune": ("tune", "hyper-parameter search (Optuna) over recipe keys, with pruning and resumable studies"),
    "baseline": ("baseline", "SVM, k-NN and gradient-boosted trees on a recipe's split, beside the network"),
    "ensemble": ("ensemble", "evaluate runs (or a run's snapshots) as an ensemble: mean, vote or weighted"),
    "augment": ("augment", "write a grid image of augmented samples"),
    "doctor": ("doctor", "print a run's diagnosis from its recorded numbers"),
    "show": ("show", "draw inside a trained network: filters, feature maps, saliency, t-SNE of features"),
    "compare": ("compare", "one HTML page putting several runs side by side"),
    "models": ("models", "list the model architectures"),
    "profile": ("profile", "per-layer shapes, parameters and MACs of a model"),
    "export": ("export", "export a run's model to TorchScript, torch.export or ONNX with a parity check"),
    "sample": ("sample", "generate text from a Char-RNN run"),
    "embed": ("embed", "write the embeddings of image or .npy files from an embedding run"),
    "identify": ("identify", "name the identity of probe images among a gallery folder (k-NN)"),
    "verify": ("verify", "decide whether two images show the same identity"),
    "prune": ("prune", "zero a run's smallest weights (optionally fine-tune) into a new run"),
    "quantize": ("quantize", "int8 quantization of a run's model: accuracy, latency and size vs float"),
    "shard": ("shard", "write an image folder as WebDataset tar shards (the shards data set reads them)"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<16} {text}" for name, (_, text) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="trainlab",
        description="Deep-learning training for computer vision, with a training doctor.",
        epilog=f"commands:\n{lines}\n\nRun 'trainlab COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from .. import __version__

        print(f"trainlab {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        near = closest(name, COMMANDS)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        print(f"trainlab: error: unknown command {name!r}{hint} (see 'trainlab --help')", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser(prog=f"trainlab {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except TrainlabError as err:
        print(f"trainlab {name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"trainlab {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as err:
        print(f"trainlab {name}: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:
        # A run stopped by a signal inside another command (kfold): the trainer saved it.
        trainer = sys.modules.get("trainlab.engine.trainer")
        if trainer is None or not isinstance(err, trainer.Interrupted):
            raise
        print(f"trainlab {name}: stopped by {err.signal_name} at {err}; checkpoint saved in {err.run_dir}",
              file=sys.stderr)
        return err.exit_code


def os_error_line(err: OSError) -> str:
    """'PATH: reason' of an operating-system error (both paths of a failed rename)."""
    reason = err.strerror or str(err) or type(err).__name__
    paths = [str(p) for p in (err.filename, getattr(err, "filename2", None)) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason
