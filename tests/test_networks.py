"""Network definitions and RBM/DBN pretraining (models.networks, models.dbn)."""
from __future__ import annotations

import numpy as np
import pytest

import keras

from models import dbn, networks
from core.preprocess import scale

SMALL = {
    "softmax": {},
    "mlp": {"hidden": [64, 32]},
    "cnn": {"filters": [8, 16], "dense": 32},
}


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def pixels(mnist) -> np.ndarray:
    """2000 training images as float32 (N, 784) in [0, 1]."""
    return scale(mnist.x_train[:2000]).reshape(2000, 784)


def _check_io(model: keras.Model) -> None:
    assert tuple(model.input_shape) == (None, 28, 28)
    assert tuple(model.output_shape) == (None, 10)
    out = keras.ops.convert_to_numpy(model(_images(5), training=False))
    assert out.shape == (5, 10) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert (out >= 0).all()


def test_families_and_defaults():
    assert networks.FAMILIES == ("softmax", "mlp", "cnn", "dbn")
    for family in networks.FAMILIES:
        hp = networks.DEFAULTS[family]
        assert hp["epochs"] > 0 and hp["batch_size"] > 0 and hp["learning_rate"] > 0
        assert isinstance(networks.describe(family), str)
    # overrides never leak into DEFAULTS
    hp = networks.hyperparameters("mlp", {"hidden": [7]})
    hp["hidden"].append(3)
    assert networks.DEFAULTS["mlp"]["hidden"] != [7, 3]


@pytest.mark.parametrize("family", ["softmax", "mlp", "cnn"])
def test_build_shapes_and_softmax(family):
    _check_io(networks.build(family, SMALL[family], seed=0))


def test_default_architectures_build():
    for family in ("softmax", "mlp", "cnn"):
        _check_io(networks.build(family))
    with pytest.raises(ValueError):
        networks.build("dbn")
    with pytest.raises(ValueError):
        networks.build("resnet")


def test_dbn_classifier_starts_from_pretrained_weights():
    rng = np.random.default_rng(0)
    weights = [(rng.normal(size=(784, 40)).astype(np.float32), rng.normal(size=40).astype(np.float32)),
               (rng.normal(size=(40, 20)).astype(np.float32), rng.normal(size=20).astype(np.float32))]
    model = networks.build_dbn_classifier(weights, {"dropout": 0.1}, seed=0)
    _check_io(model)
    for i, (w, b) in enumerate(weights, start=1):
        layer = model.get_layer(f"rbm_{i}")
        got_w, got_b = layer.get_weights()
        np.testing.assert_array_equal(got_w, w)
        np.testing.assert_array_equal(got_b, b)
        assert layer.get_config()["activation"] == "sigmoid"
    with pytest.raises(ValueError):
        networks.build_dbn_classifier([(np.zeros((100, 5)), np.zeros(5))], {})


def test_rbm_cd_k_lowers_reconstruction_error(pixels):
    rbm = dbn.RBM(784, 64, k=1, learning_rate=0.05, seed=0)
    before = rbm.reconstruction_error(pixels)
    errors = [rbm.train_epoch(pixels, batch_size=50, shuffle_seed=e) for e in range(3)]
    after = rbm.reconstruction_error(pixels)
    assert after < 0.6 * before, (before, after)
    assert errors[-1] < errors[0]
    # CD-2 runs too (two Gibbs steps) and also learns
    rbm2 = dbn.RBM(784, 32, k=2, learning_rate=0.05, seed=1)
    rbm2.train_epoch(pixels[:500], batch_size=50, shuffle_seed=0)
    assert rbm2.reconstruction_error(pixels[:500]) < before
    h = rbm.transform(pixels[:10])
    assert h.shape == (10, 64) and (h >= 0).all() and (h <= 1).all()


def test_pretrain_dbn_history_and_shapes(pixels):
    calls = []
    weights, history = dbn.pretrain_dbn(pixels[:1000], [48, 24], epochs=3, k=1, learning_rate=0.05,
                                        batch_size=50, seed=0, on_epoch=lambda *a: calls.append(a))
    assert [w.shape for w, _ in weights] == [(784, 48), (48, 24)]
    assert [b.shape for _, b in weights] == [(48,), (24,)]
    assert len(history) == 2 and all(len(h) == 3 for h in history)
    assert all(np.isfinite(e) and e >= 0 for h in history for e in h)
    assert history[0][-1] < history[0][0]          # layer 1 keeps learning
    assert [(c[0], c[1]) for c in calls] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    # same seed -> same pretrained weights
    weights2, history2 = dbn.pretrain_dbn(pixels[:1000], [48, 24], epochs=3, k=1, learning_rate=0.05,
                                          batch_size=50, seed=0)
    for (w1, b1), (w2, b2) in zip(weights, weights2):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)
    assert history == history2


@pytest.mark.parametrize("family", ["softmax", "mlp", "cnn", "dbn"])
def test_save_and_reload_gives_identical_outputs(family, tmp_path):
    if family == "dbn":
        rng = np.random.default_rng(0)
        model = networks.build_dbn_classifier(
            [(rng.normal(0, 0.1, (784, 30)).astype(np.float32), np.zeros(30, np.float32))], {}, seed=0)
    else:
        model = networks.build(family, {**SMALL[family], "translate": 2.0, "rotate": 10.0}, seed=0)
    path = tmp_path / f"{family}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # plain Keras layers: no custom_objects needed
    x = _images(7, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)),
                                  keras.ops.convert_to_numpy(loaded(x, training=False)))
    assert tuple(loaded.input_shape) == (None, 28, 28)
