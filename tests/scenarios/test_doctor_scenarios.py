"""The doctor's scenario suite: deliberately broken recipes and healthy ones (X1-X8).

Each scenario is a recipe in this folder, reproducible from the command line
(``trainlab fit tests/scenarios/deep-sigmoid.yaml``). A broken scenario must produce its
``expect`` codes at warning level or above; a healthy one must produce nothing at that level.
``accept`` lists codes that are also true of that run, as consequences its numbers show (a far
too high LR kills ReLU units and leaves the model under-fitting; a vanishing-gradient net sits on
a plateau): they count as correct findings. Anything else counts against the doctor's precision.

Run with ``-s`` to see the findings, the timings and the precision/recall table.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import trainlab
from trainlab.doctor import diagnose_run

HERE = Path(__file__).resolve().parent

SCENARIOS: dict[str, tuple[set[str], set[str]]] = {
    # name: (expect, accept)
    "healthy-mlp": (set(), set()),
    "healthy-cnn": (set(), set()),
    "healthy-tanh": (set(), set()),
    "lr-too-high": ({"lr_too_high"}, {"dead_relu", "plateau", "underfitting", "exploding_gradients", "nan_loss"}),
    "lr-nan": ({"nan_loss"}, {"exploding_gradients", "lr_too_high", "underfitting", "dead_relu"}),
    "deep-sigmoid": ({"vanishing_gradients"}, {"plateau", "underfitting"}),
    "dead-relu": ({"dead_relu"}, {"underfitting"}),
    "tiny-subset": ({"small_dataset", "high_variance"}, {"overfitting"}),
    "unnormalized": ({"unnormalized_inputs"}, set()),
    "tiny-lr": ({"lr_too_low"}, {"underfitting", "plateau"}),
    "imbalanced": ({"class_imbalance"}, {"high_variance"}),
    "overfitting": ({"overfitting"}, {"high_variance"}),
}
SERIOUS = ("warning", "error")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs each scenario at most once per session: name -> (run, findings, seconds)."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            t0 = time.perf_counter()
            run = trainlab.fit(str(HERE / f"{name}.yaml"), quiet=True, **{
                "run.dir": str(tmp_path_factory.mktemp(name) / "run"), "run.tensorboard": False,
                "run.plots": False, "train.progress": False})
            seconds = time.perf_counter() - t0
            findings = json.loads((run.dir / "doctor.json").read_text())["findings"]
            cache[name] = (run, findings, seconds)
        return cache[name]

    return get


def test_every_scenario_file_is_in_the_table():
    assert {p.stem for p in HERE.glob("*.yaml")} == set(SCENARIOS)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name, results):
    """X1-X8: the doctor names the broken scenario's code(s) and stays quiet on healthy recipes."""
    expect, accept = SCENARIOS[name]
    run, findings, seconds = results(name)
    serious = {f["code"] for f in findings if f["severity"] in SERIOUS}
    print(f"\n{name} ({seconds:.1f} s): " + "; ".join(f"{f['severity']} {f['code']}: {f['message']}" for f in findings))
    assert expect <= serious, f"{name}: missing {expect - serious}"
    assert serious <= expect | accept, f"{name}: unexpected {serious - expect - accept}"
    # `trainlab doctor RUN` gives the same diagnosis from the recorded numbers.
    assert [f.to_dict() for f in diagnose_run(run)[0]] == findings


def test_precision_and_recall_over_the_suite(results):
    """X1-X8: precision and recall of the doctor's warning/error findings over all scenarios."""
    found = tp = strict = 0
    hit = expected = 0
    rows = []
    for name, (expect, accept) in SCENARIOS.items():
        _, findings, seconds = results(name)
        serious = {f["code"] for f in findings if f["severity"] in SERIOUS}
        found += len(serious)
        tp += len(serious & (expect | accept))
        strict += len(serious & expect)
        expected += len(expect)
        hit += len(expect & serious)
        rows.append(f"  {name:<13} {seconds:5.1f} s  expect {sorted(expect) or '-'}  got {sorted(serious) or '-'}")
    precision, recall = tp / max(found, 1), hit / max(expected, 1)
    print("\n" + "\n".join(rows))
    print(f"  findings at warning/error: {found}; precision {precision:.3f} (strict, expected codes only: "
          f"{strict / max(found, 1):.3f}); recall {recall:.3f} ({hit}/{expected} expected codes)")
    assert recall == 1.0
    assert precision == 1.0
