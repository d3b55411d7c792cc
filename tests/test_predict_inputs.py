"""Issue 22, points 3 and 8: prediction as users call it (image files and folders for a run
trained on arrays, a `.npy` that is no NumPy file, named results, top-k only where it says
something) and a confusion matrix that counts only (target, prediction) pairs that happened."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import FAST
from PIL import Image
from sklearn import metrics as skm

import trainlab
import trainlab.api
from trainlab.cli import main
from trainlab.errors import DataError, RecipeError
from trainlab.evaluate.classification import ClassificationMeter, confusion_matrix


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-inputs")
    return trainlab.fit("digits-mlp", [*FAST, f"run.dir={root / 'run'}"], quiet=True)


@pytest.fixture(scope="module")
def digit_images():
    from trainlab.data.digits import load_digits_arrays

    images, _ = load_digits_arrays()
    return images[:4]  # (4, 8, 8) float32, values 0..16


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ image files
def test_a_run_trained_on_arrays_reads_an_image_of_its_input_size(digits_run, digit_images, tmp_path, capsys):
    """Issue 22 (3), D1: a digits run (arrays of values 0..16) takes an 8x8 grayscale PNG; its
    0..255 pixels are rescaled to the run's range, so it predicts as the same array does."""
    pixels = np.round(digit_images[0] / 16 * 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "seven.png")
    from_file = digits_run.predict(tmp_path / "seven.png")
    from_array = digits_run.predict(pixels.astype(np.float32) * (16 / 255))
    np.testing.assert_allclose(from_file.probs, from_array.probs, rtol=1e-5, atol=1e-6)
    assert from_file.inputs == [str(tmp_path / "seven.png")]
    # a grey picture stored as RGB is still one channel of grey
    Image.fromarray(np.repeat(pixels[..., None], 3, axis=2), mode="RGB").save(tmp_path / "grey-rgb.png")
    np.testing.assert_allclose(digits_run.predict(tmp_path / "grey-rgb.png").probs, from_file.probs, rtol=1e-5,
                               atol=1e-6)
    assert main(["predict", str(digits_run.dir), str(tmp_path / "seven.png")]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'seven.png'}: ")


def test_a_run_trained_on_arrays_refuses_an_image_of_another_size(digits_run, tmp_path, capsys):
    """Issue 22 (3): an image whose size or channels differ from the model input is refused in
    one line naming the file, its size and the expected one (never silently resized)."""
    Image.fromarray(np.zeros((16, 12), np.uint8), mode="L").save(tmp_path / "big.png")
    line = one_line_error(capsys, ["predict", str(digits_run.dir), str(tmp_path / "big.png")])
    assert str(tmp_path / "big.png") in line and "16x12" in line and "8x8" in line
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour, mode="RGB").save(tmp_path / "red.png")
    with pytest.raises(DataError, match=r"red\.png.*3 channels.*1x8x8"):
        digits_run.predict(tmp_path / "red.png")


# ---------------------------------------------------------------------------------- folders
def test_a_folder_argument_expands_to_its_image_and_npy_files(digits_run, digit_images, tmp_path, capsys):
    """Issue 22 (3): a folder stands for its image and .npy files, sorted by name; hidden and
    other files are skipped; an empty folder is a one-line error."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(np.round(digit_images[1] / 16 * 255).astype(np.uint8), mode="L").save(folder / "b.png")
    np.save(folder / "a.npy", digit_images[2])
    Image.fromarray(np.round(digit_images[3] / 16 * 255).astype(np.uint8), mode="L").save(folder / "c.bmp")
    (folder / "notes.txt").write_text("not an input")
    np.save(folder / ".hidden.npy", digit_images[0])
    p = digits_run.predict(folder)
    assert p.inputs == [str(folder / "a.npy"), str(folder / "b.png"), str(folder / "c.bmp")]
    assert p.probs.shape == (3, 10)
    assert main(["predict", str(digits_run.dir), str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in out] == p.inputs
    (tmp_path / "empty").mkdir()
    line = one_line_error(capsys, ["predict", str(digits_run.dir), str(tmp_path / "empty")])
    assert str(tmp_path / "empty") in line and "no image" in line


# ----------------------------------------------------------------------------- .npy files
@pytest.mark.parametrize("kind", ["text", "pickle", "empty"])
def test_a_npy_that_is_not_a_numpy_file_gets_trainlabs_own_error(kind, digits_run, tmp_path, capsys):
    """Issue 22 (3): a renamed text file or pickle is 'not a NumPy .npy file', in trainlab's own
    words: NumPy's advice about allow_pickle is no advice to a user of the CLI."""
    path = tmp_path / "x.npy"
    if kind == "text":
        path.write_text("0 1 2 3\n4 5 6 7\n")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(np.zeros((8, 8))))
    else:
        path.write_bytes(b"")
    line = one_line_error(capsys, ["predict", str(digits_run.dir), str(path)])
    assert f"{path}: not a NumPy .npy file" in line and "pickle" not in line.lower(), line
    with pytest.raises(DataError, match="not a NumPy .npy file"):
        digits_run.predict(path)


def test_a_npy_of_python_objects_is_refused_without_numpys_pickle_advice(digits_run, tmp_path, capsys):
    """Issue 22 (3): a real .npy holding Python objects names the dtype, not allow_pickle."""
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    line = one_line_error(capsys, ["predict", str(digits_run.dir), str(path)])
    assert str(path) in line and "object" in line and "pickle" not in line.lower(), line


# ---------------------------------------------------------------------------- named result
def test_predict_returns_named_fields_that_do_not_unpack(digits_run, digit_images):
    """Issue 22 (3): `run.predict` returns probabilities as a NumPy array, the predicted class
    name per input and the input names, by name; tuple unpacking fails loudly instead of reading
    the input names as labels."""
    p = digits_run.predict(digit_images[:3, None], names=["batch"])
    assert isinstance(p.probs, np.ndarray) and p.probs.shape == (3, 10)
    np.testing.assert_allclose(p.probs.sum(1), 1, rtol=1e-5)
    assert p.class_names == [str(i) for i in range(10)]
    assert p.classes == [p.class_names[i] for i in p.probs.argmax(1)]
    assert p.inputs == ["batch[0]", "batch[1]", "batch[2]"]
    with pytest.raises(TypeError, match="probs"):
        probs, labels, classes = p
    # the top-level function still works after run.predict imported the input module (that module
    # was once trainlab/predict.py, whose import replaced the attribute trainlab.predict)
    q = trainlab.predict(digits_run.dir, digit_images[0])
    assert q.inputs == ["input 0"] and q.probs.shape == (1, 10) and q.classes[0] in q.class_names


# -------------------------------------------------------------------------------- top-k
def test_topk_accuracy_is_reported_only_below_the_number_of_classes():
    """Issue 22 (3), E1, T2: with 4 classes, top-5 accuracy is always 1, so it is not reported;
    the task's metrics match what its meter computes, and watching it is the usual unknown-metric
    error. With 10 classes it stays."""
    from trainlab.data.bundle import DataInfo
    from trainlab.engine.trainer import check_watched_metrics
    from trainlab.recipe import load_recipe
    from trainlab.tasks.classification import ClassificationTask

    g = torch.Generator().manual_seed(0)
    for classes, reported in ((4, False), (5, False), (10, True)):
        info = DataInfo(input_shape=(1, 8, 8), num_classes=classes, class_names=[str(i) for i in range(classes)])
        task = ClassificationTask(load_recipe("digits-cnn"), info)
        assert ("top5_accuracy" in task.val_metrics) is reported
        assert ("top5_accuracy" in task.metrics) is reported
        meter = task.eval_meter()
        target = torch.randint(0, classes, (20,), generator=g)
        meter.update(torch.randn(20, classes, generator=g), {"target": target}, torch.tensor(0.5))
        out = meter.compute()
        scalars = {k for k, v in out.items() if isinstance(v, float)}
        assert scalars == set(task.val_metrics), (scalars, task.val_metrics)
    recipe = load_recipe("digits-cnn", ["train.early_stop.monitor=val_top5_accuracy"])
    with pytest.raises(RecipeError, match="train.early_stop.monitor.*unknown metric 'val_top5_accuracy'"):
        check_watched_metrics(recipe, task_with(4, recipe), has_val=True)
    check_watched_metrics(recipe, task_with(10, recipe), has_val=True)
    assert "top3_accuracy" in ClassificationMeter(4, topk=3).compute()
    assert "top4_accuracy" not in ClassificationMeter(4, topk=4).compute()


def task_with(classes, recipe):
    from trainlab.data.bundle import DataInfo
    from trainlab.tasks.classification import ClassificationTask

    return ClassificationTask(recipe, DataInfo(input_shape=(1, 8, 8), num_classes=classes,
                                               class_names=[str(i) for i in range(classes)]))


# ------------------------------------------------------------------------ confusion matrix
def test_confusion_matrix_counts_only_pairs_that_happened():
    """Issue 22 (8), E1: a prediction outside 0..C-1 is no pair of the matrix (scikit-learn's
    confusion_matrix with labels=range(C) ignores it); before, 5 with 5 classes was counted as
    class 0 of the next row."""
    g = torch.Generator().manual_seed(3)
    c = 5
    target = torch.randint(0, c, (200,), generator=g)
    pred = torch.randint(-2, c + 2, (200,), generator=g)
    cm = confusion_matrix(pred, target, c)
    assert np.array_equal(cm.numpy(), skm.confusion_matrix(target, pred, labels=range(c)))
    inside = (pred >= 0) & (pred < c)
    assert int(cm.sum()) == int(inside.sum()) < 200


@pytest.mark.parametrize("bad", [-1, 5, 12])
def test_confusion_matrix_names_an_out_of_range_target(bad):
    """Issue 22 (8), E1: a target outside 0..C-1 is a one-line error naming the value, from the
    function and from the meter that the evaluation uses."""
    target = torch.tensor([0, 1, bad, 2])
    pred = torch.tensor([0, 1, 2, 3])
    with pytest.raises(DataError, match=rf"target {bad}\b.*0\.\.4") as err:
        confusion_matrix(pred, target, 5)
    assert "\n" not in str(err.value)
    meter = ClassificationMeter(5, topk=2)
    with pytest.raises(DataError, match=rf"target {bad}\b"):
        meter.update(torch.nn.functional.one_hot(pred, 5).float(), target)
