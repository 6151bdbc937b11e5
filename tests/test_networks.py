"""Network families (models.families) and RBM/DBN pretraining (models.dbn)."""
from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

import keras

from conftest import ROOT
from models import dbn, families, sdae
from models.families import Family
from core.preprocess import scale

SMALL = {
    "softmax": {},
    "mlp": {"hidden": [64, 32]},
    "cnn": {"filters": [8, 16], "dense": 32},
    "lstm": {"units": [16]},
}


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def _build(name: str, overrides: dict | None = None, seed: int | None = 0, pretrained=None) -> keras.Model:
    family = families.get(name)
    return family.build(family.hyperparameters(overrides), seed, pretrained)


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
    assert families.names() == ("softmax", "mlp", "cnn", "dbn", "dae", "lstm")
    for name in families.names():
        family = families.get(name)
        assert family.name == name
        assert family.description and "\n" not in family.description
        hp = family.defaults
        assert hp["epochs"] > 0 and hp["batch_size"] > 0 and hp["learning_rate"] > 0
        assert isinstance(family.describe(family.hyperparameters()), str)
        with pytest.raises(TypeError):
            family.defaults["epochs"] = 1          # read-only
    assert [f.pretrain is not None for f in families.all_families()] == [False, False, False, True, True, False]
    # overrides never leak into the defaults
    hp = families.hyperparameters("mlp", {"hidden": [7]})
    hp["hidden"].append(3)
    assert families.get("mlp").defaults["hidden"] == [512, 512]
    hp = families.hyperparameters("mlp")
    hp["hidden"].append(3)
    assert families.get("mlp").defaults["hidden"] == [512, 512]


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match="resnet.*softmax.*mlp.*cnn.*dbn.*dae.*lstm"):
        families.get("resnet")
    with pytest.raises(ValueError):
        families.hyperparameters("resnet")


def test_default_descriptions_are_those_of_the_benchmarked_models():
    # the architecture strings stored with trained versions and the accuracy report stay valid
    report = json.loads((ROOT / "bench" / "results" / "accuracy.json").read_text())["results"]
    for name in families.names():
        family = families.get(name)
        described = family.describe(family.hyperparameters())
        assert described == report[name]["description"] == report[name]["hyperparameters"]["architecture"]
        benchmarked = {k: v for k, v in report[name]["hyperparameters"].items() if k in family.defaults}
        assert benchmarked == family.hyperparameters({"validation_size": benchmarked["validation_size"]})


@pytest.mark.parametrize("family", ["softmax", "mlp", "cnn", "lstm"])
def test_build_shapes_and_softmax(family):
    _check_io(_build(family, SMALL[family]))


def test_default_architectures_build_with_their_saved_layer_names():
    layer_names = {
        "softmax": ["image", "flatten", "probabilities"],
        "mlp": ["image", "to_channels", "augment_translate", "flatten", "hidden_1", "dropout_1",
                "hidden_2", "dropout_2", "probabilities"],
        "cnn": ["image", "to_channels", "augment_translate", "conv1_1", "pool1", "conv2_1", "pool2", "flatten",
                "dropout_1", "dense", "dropout_2", "probabilities"],
        "lstm": ["image", "lstm_1", "dropout_1", "probabilities"],
    }
    for name, expected in layer_names.items():
        model = _build(name, seed=None)
        _check_io(model)
        assert model.name == name
        assert [layer.name for layer in model.layers] == expected
    for pretrained_family in ("dbn", "dae"):
        with pytest.raises(ValueError, match="pretrained"):
            _build(pretrained_family)
    # the row reader keeps its augmentation inside the model and reads rows again after it
    assert [layer.name for layer in _build("lstm", {"units": [8, 8], "translate": 1.0}).layers] == [
        "image", "to_channels", "augment_translate", "to_rows", "lstm_1", "dropout_1", "lstm_2", "dropout_2",
        "probabilities"]


def test_dbn_classifier_starts_from_pretrained_weights():
    rng = np.random.default_rng(0)
    weights = [(rng.normal(size=(784, 40)).astype(np.float32), rng.normal(size=40).astype(np.float32)),
               (rng.normal(size=(40, 20)).astype(np.float32), rng.normal(size=20).astype(np.float32))]
    model = _build("dbn", {"dropout": 0.1}, pretrained=weights)
    _check_io(model)
    assert [layer.name for layer in model.layers] == [
        "image", "to_channels", "augment_translate", "flatten", "rbm_1", "dropout_1", "rbm_2", "dropout_2",
        "probabilities"]
    for i, (w, b) in enumerate(weights, start=1):
        layer = model.get_layer(f"rbm_{i}")
        got_w, got_b = layer.get_weights()
        np.testing.assert_array_equal(got_w, w)
        np.testing.assert_array_equal(got_b, b)
        assert layer.get_config()["activation"] == "sigmoid"
    with pytest.raises(ValueError):
        _build("dbn", pretrained=[(np.zeros((100, 5)), np.zeros(5))])


def test_dbn_family_pretrain_feeds_its_build(pixels):
    family = families.get("dbn")
    hp = family.hyperparameters({"hidden": [24, 12], "rbm_epochs": 2, "rbm_batch_size": 50})
    lines: list[str] = []
    weights, curves = family.pretrain(pixels[:500], hp, 0, lines.append)
    assert list(curves) == ["rbm_reconstruction_error"]
    assert [len(layer) for layer in curves["rbm_reconstruction_error"]] == [2, 2]
    assert lines[0].startswith("dbn RBM 1 (24 hidden) epoch 1/2: reconstruction error ")
    assert lines[-1].startswith("dbn RBM 2 (12 hidden) epoch 2/2: reconstruction error ")
    assert [w.shape for w, _ in weights] == [(784, 24), (24, 12)]
    _check_io(family.build(hp, 0, weights))
    # no progress callback: runs quietly, same weights for the same seed
    weights2, curves2 = family.pretrain(pixels[:500], hp, 0, None)
    np.testing.assert_array_equal(weights[0][0], weights2[0][0])
    assert curves == curves2


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


def test_dae_classifier_starts_from_the_pretrained_encoders(pixels):
    family = families.get("dae")
    hp = family.hyperparameters({"hidden": [32, 16], "dae_epochs": 2, "dae_batch_size": 50, "dropout": 0.1})
    lines: list[str] = []
    weights, curves = family.pretrain(pixels[:600], hp, 0, lines.append)
    assert list(curves) == ["dae_reconstruction_error"]
    assert [len(layer) for layer in curves["dae_reconstruction_error"]] == [2, 2]
    assert lines[0].startswith("dae layer 1 (32 hidden) epoch 1/2: reconstruction error ")
    assert lines[-1].startswith("dae layer 2 (16 hidden) epoch 2/2: reconstruction error ")
    model = family.build(hp, 0, weights)
    _check_io(model)
    assert [layer.name for layer in model.layers] == [
        "image", "to_channels", "augment_translate", "flatten", "encoder_1", "dropout_1", "encoder_2",
        "dropout_2", "probabilities"]
    for i, (w, b) in enumerate(weights, start=1):
        got_w, got_b = model.get_layer(f"encoder_{i}").get_weights()
        np.testing.assert_array_equal(got_w, w)
        np.testing.assert_array_equal(got_b, b)
    # same seed, same encoders
    weights2, curves2 = family.pretrain(pixels[:600], hp, 0, None)
    np.testing.assert_array_equal(weights[1][0], weights2[1][0])
    assert curves == curves2


def test_denoising_autoencoders_learn_to_reconstruct_the_clean_input(pixels):
    rng = np.random.default_rng(0)
    masked = sdae.corrupt(pixels[:100], "masking", 0.25, rng)
    dropped = (pixels[:100] > 0) & (masked == 0)
    assert 0.2 < dropped.sum() / (pixels[:100] > 0).sum() < 0.3
    noisy = sdae.corrupt(pixels[:100], "gaussian", 0.3, rng)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not np.array_equal(noisy, pixels[:100])
    for noise in sdae.NOISES:
        calls = []
        weights, history = sdae.pretrain_sdae(pixels[:1000], [64, 32], epochs=3, noise=noise, level=0.3,
                                              batch_size=50, seed=0, on_epoch=lambda *a: calls.append(a))
        assert [w.shape for w, _ in weights] == [(784, 64), (64, 32)]
        assert [(c[0], c[1]) for c in calls] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
        # each layer's reconstruction of corrupted inputs moves towards the clean ones
        assert history[0][-1] < history[0][0] and history[1][-1] < history[1][0], history
    with pytest.raises(ValueError):
        sdae.pretrain_sdae(pixels[:10], [4], noise="salt")


@pytest.mark.parametrize("family", ["softmax", "mlp", "cnn", "dbn", "dae", "lstm"])
def test_save_and_reload_gives_identical_outputs(family, tmp_path):
    if family in ("dbn", "dae"):
        rng = np.random.default_rng(0)
        model = _build(family, pretrained=[(rng.normal(0, 0.1, (784, 30)).astype(np.float32),
                                           np.zeros(30, np.float32))])
    else:
        model = _build(family, {**SMALL[family], "translate": 2.0, "rotate": 10.0})
    path = tmp_path / f"{family}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # plain Keras layers: no custom_objects needed
    x = _images(7, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)),
                                  keras.ops.convert_to_numpy(loaded(x, training=False)))
    assert tuple(loaded.input_shape) == (None, 28, 28)


# -- discovery: a family is one module of models/families ---------------------------------

def test_every_module_of_the_package_is_a_family():
    modules = [m.name for m in pkgutil.iter_modules(families.__path__) if not m.name.startswith("_")]
    assert sorted(families.names()) == sorted(modules)
    for module in modules:
        assert isinstance(sys.modules[f"models.families.{module}"].FAMILY, Family)


def test_the_family_records_load_without_keras_or_tensorflow():
    # `digitserve --help` reads them: importing TensorFlow there would cost seconds
    code = ("import sys, models.families as f\n"
            "for x in f.all_families(): x.describe(x.hyperparameters())\n"
            "from server.cli.main import build_parser; build_parser()\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow'))\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]", out.stdout


TOY = '''
from models.families import Family
from models.families._common import COMMON, describe_training


def pretrain(x_train_flat, hp, seed, on_epoch):
    if on_epoch is not None:
        on_epoch("toy pretraining 1/1")
    return x_train_flat.mean(axis=0), {"toy_mean_pixel": [float(x_train_flat.mean())]}


def build(hp, seed=None, pretrained=None):
    import keras
    from models.families import _layers

    assert pretrained is not None and pretrained.shape == (784,)
    inputs, x = _layers.flat_inputs(hp, seed)
    return keras.Model(inputs, _layers.probabilities(x), name="toy")


def describe(hp):
    return f"toy 784 -> 10 ({hp['note']}); {describe_training(hp)}"


FAMILY = Family(name="toy", description="a family dropped in by a test",
                defaults={**COMMON, "epochs": 1, "learning_rate": 1e-2, "note": "dropped in"},
                build=build, describe=describe, pretrain=pretrain, order=5)
'''


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """A family module dropped into the package (a second directory of its path)."""
    (tmp_path / "toy.py").write_text(TOY)
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(tmp_path)])
    families.reload()
    yield families.get("toy")
    monkeypatch.undo()
    sys.modules.pop("models.families.toy", None)
    families.reload()
    assert "toy" not in families.names()


def test_a_dropped_in_module_is_found_by_the_registry_cli_and_trainer(toy_family, mnist, capsys):
    from server.cli.main import build_parser
    from trainers.train import train

    assert families.names() == ("toy", "softmax", "mlp", "cnn", "dbn", "dae", "lstm")   # ordered by ``order``
    assert families.hyperparameters("toy")["note"] == "dropped in"
    args = build_parser().parse_args(["train", "toy"])
    assert args.family == "toy"
    r = train("toy", mnist, limit=300, seed=0, progress=True)
    assert "toy pretraining 1/1" in capsys.readouterr().out
    assert r.family == "toy" and r.epochs_run == 1 and r.model.name == "toy"
    assert r.curves["toy_mean_pixel"][0] > 0 and len(r.curves["val_accuracy"]) == 1
    assert r.hyperparameters["architecture"].startswith("toy 784 -> 10 (dropped in); up to 1 epochs")
    assert "pretrain_seconds" in r.hyperparameters


def _package(tmp_path, monkeypatch, modules: dict[str, str]) -> tuple[str, list[str]]:
    name = f"fam_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    for module, text in modules.items():
        (tmp_path / name / f"{module}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, [str(tmp_path / name)]


RECORD = ('from models.families import Family\n'
          'FAMILY = Family(name="{name}", description="d", defaults={{"epochs": 1, "batch_size": 8, '
          '"learning_rate": 0.1}}, build=print, describe=str, order={order})\n')


def test_discovery_orders_families_and_skips_private_modules(tmp_path, monkeypatch):
    name, path = _package(tmp_path, monkeypatch, {
        "beta": RECORD.format(name="beta", order=1), "alpha": RECORD.format(name="alpha", order=1),
        "gamma": RECORD.format(name="gamma", order=0), "_helpers": "X = 1\n"})
    assert list(families.discover(name, path)) == ["gamma", "alpha", "beta"]


@pytest.mark.parametrize("modules,error", [
    ({"lost": "X = 1\n"}, TypeError),                                  # a module without FAMILY
    ({"wrong": RECORD.format(name="other", order=1)}, ValueError),     # named unlike its module
    ({"bad": RECORD.format(name="bad", order=1).replace('description="d"', 'description=""')}, ValueError),
])
def test_discovery_refuses_broken_family_modules(tmp_path, monkeypatch, modules, error):
    name, path = _package(tmp_path, monkeypatch, modules)
    with pytest.raises(error):
        families.discover(name, path)
