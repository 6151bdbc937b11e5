"""The conditional GAN: it learns to draw the digit asked for, its digits join a training set on
request, its grid is served as a PNG, and it never answers a prediction."""
from __future__ import annotations

import io

import numpy as np
import pytest

from core.errors import NotFound
from models.registry import WrongKind

pytestmark = pytest.mark.slow

# A rough generator (a few steps): enough for the plumbing, not for drawing digits.
ROUGH = {"max_steps": 20, "limit": 500}
# A short run that does draw recognisable digits (projection discriminator, lr 1e-3).
SHORT = {"max_steps": 200, "limit": 2000, "overrides": {"batch_size": 64, "learning_rate": 1e-3}}


@pytest.fixture(scope="module")
def rough_cgan_file(mnist, tmp_path_factory):
    from trainers.gan import train_gan

    result = train_gan(mnist, epochs=1, seed=0, progress=False, max_steps=ROUGH["max_steps"], limit=ROUGH["limit"])
    path = tmp_path_factory.mktemp("cgan") / "cgan.keras"
    result.generator.save(path)
    return path


@pytest.fixture
def rough_cgan(services, rough_cgan_file):
    return services.registry.register("cgan", "cgan", rough_cgan_file, hyperparameters={"rough": True},
                                      activate=True)


def test_a_short_run_draws_the_digit_asked_for(services, registered_mlp, capsys):
    from models import gan
    from models.serving import ModelCache
    from trainers.gan import load_generator, train_and_register_gan

    info = train_and_register_gan(services.settings, services.registry, seed=0, progress=True, epochs=10, **SHORT)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("cgan epoch")]
    assert lines[0].startswith("cgan epoch 1/10 (32/32 steps): d_loss ")
    assert lines[-1].startswith("cgan epoch 7/10 (8/32 steps): d_loss ")   # 200 steps = 6 x 32 + 8
    assert info.family == "cgan" and info.kind == "generator" and not info.active
    assert info.hyperparameters["steps"] == 200 and info.test_accuracy is None
    assert len(info.curves["d_loss"]) == info.hyperparameters["epochs_run"] and np.isfinite(info.curves["g_loss"]).all()
    stored = info.metrics["label_agreement"]
    assert info.metrics["judge"] == "mlp:1"

    # recompute: the active classifier (loaded the way workers load it) reads the generated digits
    generator, loaded = load_generator(services.registry, "cgan:1")
    assert loaded.id == info.id
    classifier = ModelCache(services.registry).get(registered_mlp)
    images, labels = gan.generate_balanced(generator, 1000, seed=0)
    assert np.bincount(labels).tolist() == [100] * 10
    read = classifier.probabilities(images.astype(np.float32) / 255.0).argmax(axis=1)
    assert np.mean(read == labels) == pytest.approx(stored["agreement"], abs=1e-9)
    assert stored["agreement"] > 0.3, stored   # chance is 0.10; this seeded run reads about 0.5-0.7
    # asked for one digit, it draws that digit more often than any other
    threes = gan.generate(generator, [3] * 200, seed=1)
    assert np.bincount(classifier.probabilities(threes / np.float32(255)).argmax(axis=1), minlength=10).argmax() == 3


def test_generation_is_seeded_and_balanced(rough_cgan_file):
    import keras

    from models import gan

    generator = keras.models.load_model(rough_cgan_file)
    a, labels = gan.generate_balanced(generator, 25, seed=4)
    b, _ = gan.generate_balanced(generator, 25, seed=4)
    c, _ = gan.generate_balanced(generator, 25, seed=5)
    assert a.shape == (25, 28, 28) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.bincount(labels, minlength=10).tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    with pytest.raises(ValueError):
        gan.generate(generator, [10])


def test_gan_samples_join_the_training_split_only(services, rough_cgan, mnist):
    from trainers.register import train_and_register

    common = dict(epochs=1, limit=600, seed=2, progress=False,
                  overrides={"hidden": [32], "translate": 0, "dropout": 0.0})
    plain = train_and_register(services.settings, services.registry, "mlp", name="plain", **common)
    more = train_and_register(services.settings, services.registry, "mlp", name="more", gan_samples=55, **common)
    hp, base = more.hyperparameters, plain.hyperparameters
    assert base["train_size"] == 540 and "extra_train_size" not in base and "gan_samples" not in base
    assert hp["train_size"] == 540 + 55 and hp["extra_train_size"] == 55 and hp["gan_samples"] == 55
    assert hp["validation_size"] == base["validation_size"] == 60   # validation stays MNIST
    assert hp["gan_model"] == "cgan:1"
    mnist_counts = np.bincount(mnist.y_train[:540], minlength=10)
    assert hp["train_class_counts"] == (mnist_counts + [6, 6, 6, 6, 6, 5, 5, 5, 5, 5]).tolist()
    assert more.metrics["test_size"] == plain.metrics["test_size"] == 10000
    # the generator must be a generator
    with pytest.raises(WrongKind):
        train_and_register(services.settings, services.registry, "mlp", gan_samples=10, gan_model="plain:1", **common)
    with pytest.raises(NotFound):
        train_and_register(services.settings, services.registry, "mlp", gan_samples=10, gan_model="nope", **common)


def test_the_generator_never_answers_predictions(services, registered_mlp, rough_cgan, account, digit_pngs,
                                                 run_jobs):
    from models.serving import LoadedModel, ModelCache

    registry = services.registry
    # cgan was activated last, yet the default model is still the classifier
    assert list(registry.active_versions(None)) == ["cgan", "mlp"]
    assert list(registry.active_versions()) == ["mlp"]
    assert list(registry.active_versions("generator")) == ["cgan"]
    upload = [("image", "a.png", digit_pngs[7])]
    res = account.app.post("/api/v1/predictions", upload_files=upload, headers=account.headers)
    assert res.json["model"] == {"name": "mlp", "version": 1}
    run_jobs()
    assert account.app.get(res.headers["Location"]).json["status"] == "succeeded"
    # asked for by name: refused before anything is queued
    for spec in ("cgan", "cgan:1"):
        res = account.app.post("/api/v1/predictions", upload_files=upload, params={"model": spec},
                               headers=account.headers, expect_errors=True)
        assert res.status_int == 422 and res.json["error"]["code"] == "wrong_model_kind"
    body = {"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
    for path in ("/v2/models/cgan/infer", "/v2/models/cgan/versions/1/infer", "/v2/models/cgan"):
        res = (account.app.post_json(path, body, headers=account.headers, expect_errors=True) if path.endswith("infer")
               else account.app.get(path, expect_errors=True))
        assert res.status_int == 422, path
    # workers load only classifiers, and the serving cache refuses a generator outright
    cache = ModelCache(registry)
    assert [info.name for info in cache.preload_active()] == ["mlp"]
    with pytest.raises(ValueError, match="only classifiers are served"):
        cache.get(rough_cgan)
    with pytest.raises(ValueError):
        LoadedModel(rough_cgan, registry.fetch_file(rough_cgan))
    # listed like any model, with its kind
    listed = {m["name"]: m for m in account.app.get("/api/v1/models").json["models"]}
    assert listed["cgan"]["versions"][0]["kind"] == "generator" and listed["mlp"]["versions"][0]["kind"] == "classifier"


def test_samples_png_grid(app, account, registered_mlp, rough_cgan):
    from PIL import Image

    doc = app.get("/api/openapi.json").json
    operation = doc["paths"]["/api/v1/models/{name}/versions/{version}/samples.png"]["get"]
    res = account.app.get("/api/v1/models/cgan/versions/1/samples.png?per_class=3&seed=7")
    assert res.status_int == 200 and res.content_type == "image/png"
    assert "image/png" in operation["responses"]["200"]["content"]
    grid = Image.open(io.BytesIO(res.body))
    assert grid.mode == "L" and grid.size == (3 * 30 + 2, 10 * 30 + 2)
    pixels = np.asarray(grid)
    assert pixels[2:30, 2:30].max() > 0          # a digit in the first cell
    assert res.body == account.app.get("/api/v1/models/cgan/versions/active/samples.png?per_class=3&seed=7").body
    assert res.body != account.app.get("/api/v1/models/cgan/versions/1/samples.png?per_class=3&seed=8").body
    assert Image.open(io.BytesIO(account.app.get("/api/v1/models/cgan/versions/1/samples.png").body)).size == (
        8 * 30 + 2, 10 * 30 + 2)
    for url, status in [("/api/v1/models/mlp/versions/1/samples.png", 422),
                        ("/api/v1/models/cgan/versions/2/samples.png", 404),
                        ("/api/v1/models/cgan/versions/x/samples.png", 404),
                        ("/api/v1/models/cgan/versions/1/samples.png?per_class=0", 400),
                        ("/api/v1/models/cgan/versions/1/samples.png?per_class=17", 400),
                        ("/api/v1/models/cgan/versions/1/samples.png?seed=-1", 400)]:
        res = account.app.get(url, expect_errors=True)
        assert res.status_int == status, url
        assert str(status) in operation["responses"]
    app.reset()
    assert app.get("/api/v1/models/cgan/versions/1/samples.png", expect_errors=True).status_int == 401


def test_cli_trains_a_gan_draws_its_grid_and_adds_its_digits(services, monkeypatch, tmp_path, capsys):
    from PIL import Image

    from conftest import process_env
    from server.cli.main import main

    for name, value in process_env(services.settings).items():
        monkeypatch.setenv(name, value)
    assert main(["train", "mlp", "--gan-samples", "10", "--limit", "300", "--quiet"]) == 1
    assert "no model named 'cgan'" in capsys.readouterr().err
    assert main(["gan", "train", "--epochs", "1", "--limit", "256", "--seed", "3", "--activate", "--quiet"]) == 0
    assert "registered cgan:1 (active), trained in" in capsys.readouterr().out
    info = services.registry.get("cgan")
    assert info.family == "cgan" and info.hyperparameters["steps"] == 2 and info.hyperparameters["seed"] == 3
    out = tmp_path / "grid.png"
    assert main(["gan", "grid", "--per-class", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * 30 + 2, 10 * 30 + 2)
    assert main(["train", "mlp", "--gan-samples", "30", "--gan-model", "cgan:1", "--limit", "300", "--epochs", "1",
                 "--quiet"]) == 0
    trained = services.registry.get("mlp", 1)
    assert trained.hyperparameters["gan_samples"] == 30 and trained.hyperparameters["train_size"] == 270 + 30
    assert main(["train", "mlp", "--gan-samples", "-1"]) == 2


def test_init_activates_a_classifier_never_the_generator(services, tiny_mlp_file, rough_cgan_file, capsys):
    from server.cli.local import prepare

    registry = services.registry
    registry.register("mlp", "mlp", tiny_mlp_file)
    registry.register("cgan", "cgan", rough_cgan_file)   # registered last: the latest version
    prepare(services.settings)
    assert "no active model: activated mlp:1" in capsys.readouterr().out
    assert list(registry.active_versions(None)) == ["mlp"]
