"""The training loop and evaluation (trainers.train) on small MNIST slices."""
from __future__ import annotations

import json

import numpy as np
import pytest

import keras

from trainers.train import TrainResult, evaluate, train, validation_size

# Small, fast configurations: a couple of seconds each on 2 cores.
FAST = {
    "softmax": {"learning_rate": 1e-2, "translate": 0},
    "mlp": {"hidden": [128], "learning_rate": 3e-3, "translate": 0},
    "cnn": {"filters": [8, 16], "dense": 32, "batch_norm": False, "learning_rate": 5e-3,
            "translate": 0, "label_smoothing": 0.0, "warmup_epochs": 0},
    "dbn": {"hidden": [128, 64], "rbm_epochs": 2, "rbm_learning_rate": 0.05, "learning_rate": 1e-2,
            "translate": 0, "dropout": 0.0},
    "dae": {"hidden": [128, 64], "dae_epochs": 2, "learning_rate": 1e-2, "translate": 0, "dropout": 0.0},
    "lstm": {"units": [64], "learning_rate": 1e-2, "dropout": 0.0},
}
LIMIT = 2000   # 1800 train + 200 validation
EPOCHS = 2


@pytest.fixture(scope="module")
def results(mnist) -> dict[str, TrainResult]:
    return {family: train(family, mnist, epochs=EPOCHS, batch_size=32, limit=LIMIT, seed=0,
                          progress=False, overrides=overrides)
            for family, overrides in FAST.items()}


@pytest.mark.parametrize("family", list(FAST))
def test_family_learns_far_above_chance(results, family):
    # chance is 0.10; these small runs reach 0.82-0.90 on the 10k test set
    assert results[family].test_accuracy > 0.7, results[family].test_accuracy


@pytest.mark.parametrize("family", list(FAST))
def test_result_is_well_formed(results, mnist, family):
    r = results[family]
    assert r.family == family
    assert isinstance(r.model, keras.Model)
    assert tuple(r.model.output_shape) == (None, 10)
    cm = np.array(r.confusion_matrix)
    assert cm.shape == (10, 10) and cm.dtype.kind == "i"
    assert cm.sum() == len(mnist.y_test) == r.metrics["test_size"]
    assert cm.sum(axis=1).tolist() == np.bincount(mnist.y_test, minlength=10).tolist()   # rows = true label
    assert r.metrics["accuracy"] == r.test_accuracy == pytest.approx(np.trace(cm) / cm.sum())
    assert [c["digit"] for c in r.metrics["per_class"]] == list(range(10))
    for c in r.metrics["per_class"]:
        assert 0.0 <= c["precision"] <= 1.0 and 0.0 <= c["recall"] <= 1.0
        assert c["support"] == cm[c["digit"]].sum()
    assert 0.0 <= r.metrics["validation_accuracy"] <= 1.0
    assert r.epochs_run == EPOCHS
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(r.curves[key]) == r.epochs_run
        assert all(np.isfinite(v) for v in r.curves[key])
    hp = r.hyperparameters
    assert hp["epochs"] == EPOCHS and hp["batch_size"] == 32 and hp["seed"] == 0 and hp["limit"] == LIMIT
    assert hp["validation_size"] == 200 and hp["train_size"] == 1800
    assert isinstance(hp["architecture"], str) and hp["architecture"]
    json.dumps(hp), json.dumps(r.metrics), json.dumps(r.curves), json.dumps(r.confusion_matrix)
    assert r.train_seconds > 0
    if family == "dbn":
        rec = r.curves["rbm_reconstruction_error"]
        assert len(rec) == 2 and all(len(layer) == 2 for layer in rec)
        assert hp["hidden"] == [128, 64]


def test_evaluate_matches_predictions(results, mnist):
    model = results["mlp"].model
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    accuracy, per_class, confusion = evaluate(model, x, y)
    pred = np.argmax(keras.ops.convert_to_numpy(model(x.astype(np.float32) / 255.0)), axis=1)
    assert accuracy == pytest.approx(float(np.mean(pred == y)))
    assert np.array(confusion).sum() == 300
    assert sum(c["support"] for c in per_class) == 300


def test_validation_split_is_sane():
    assert validation_size(60000) == 5000
    assert validation_size(2000) == 200
    assert validation_size(15) == 1
    assert validation_size(1) == 0


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("family,overrides", [
    ("mlp", {"hidden": [32], "translate": 2.0}),            # dropout + augmentation randomness
    ("cnn", {"filters": [4, 8], "dense": 16, "translate": 2.0, "rotate": 8.0}),
    ("dbn", {"hidden": [32], "rbm_epochs": 1, "translate": 0}),
])
def test_same_seed_same_result(mnist, family, overrides):
    runs = [train(family, mnist, epochs=1, batch_size=64, limit=600, seed=s, progress=False, overrides=overrides)
            for s in (3, 3, 4)]
    a, b, c = runs
    for wa, wb in zip(_weights(a.model), _weights(b.model)):
        np.testing.assert_array_equal(wa, wb)
    assert a.test_accuracy == b.test_accuracy and a.confusion_matrix == b.confusion_matrix
    assert a.curves == b.curves
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(_weights(a.model), _weights(c.model)))


def test_early_stopping_restores_best_weights(mnist):
    # a huge constant learning rate makes validation accuracy peak early and then stall/diverge
    r = train("mlp", mnist, epochs=6, batch_size=64, limit=1200, seed=0, progress=False,
              overrides={"hidden": [32], "translate": 0, "learning_rate": 1e-2, "schedule": "constant",
                         "early_stopping_patience": 1})
    assert 1 <= r.epochs_run <= 6 and len(r.curves["val_accuracy"]) == r.epochs_run
    assert r.metrics["validation_accuracy"] == max(r.curves["val_accuracy"])
    x_val = mnist.x_train[1200 - r.hyperparameters["validation_size"]:1200]
    y_val = mnist.y_train[1200 - r.hyperparameters["validation_size"]:1200]
    val_acc, _, _ = evaluate(r.model, x_val, y_val)
    assert val_acc == pytest.approx(r.metrics["validation_accuracy"], abs=1e-6)


def test_progress_bar_and_unknown_family(mnist, capsys):
    train("softmax", mnist, epochs=1, limit=300, seed=0, progress=True, overrides={"translate": 0})
    err = capsys.readouterr().err
    assert "softmax epoch 1/1" in err
    with pytest.raises(ValueError, match="'svm'.*softmax.*dbn"):
        train("svm", mnist, limit=100)


def test_pretraining_progress_lines(mnist, capsys):
    r = train("dbn", mnist, epochs=1, limit=300, seed=0, progress=True,
              overrides={"hidden": [16, 8], "rbm_epochs": 2, "translate": 0})
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "dbn RBM 1 (16 hidden) epoch 1/2", "dbn RBM 1 (16 hidden) epoch 2/2",
        "dbn RBM 2 (8 hidden) epoch 1/2", "dbn RBM 2 (8 hidden) epoch 2/2"]
    assert all(": reconstruction error " in line for line in out)
    assert r.hyperparameters["pretrain_seconds"] >= 0
    assert [len(layer) for layer in r.curves["rbm_reconstruction_error"]] == [2, 2]
    assert r.hyperparameters["architecture"].startswith("DBN 784-16-8: greedy RBM pretraining")
