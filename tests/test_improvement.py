"""Continuous improvement on small MNIST slices: the feedback dataset (review, export), gated retraining
and the genetic search, against the real MariaDB and Redis."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from conftest import login, png_bytes
from core.db import unit_of_work
from core.preprocess import from_png
from core.repositories import feedback as feedback_repo
from server.services import feedback, predictions, training
from trainers.register import FeedbackSet

FEEDBACK_SLICE = slice(59000, 59060)  # training images far beyond every --limit used here


def correct(services, user_id, images, labels) -> list[tuple[str, int]]:
    """Submit `images` as predictions (16 a request) and correct each with its label; (prediction id, index)."""
    refs = []
    for start in range(0, len(images), 16):
        chunk = [png_bytes(image) for image in images[start:start + 16]]
        document, _ = predictions.submit(services, user_id, predictions.Submission(chunk))
        for index, label in enumerate(labels[start:start + 16]):
            predictions.feedback(services, user_id, document["id"], {"index": index, "label": int(label)})
            refs.append((document["id"], index))
    return refs


def accept_all(services, refs) -> None:
    for pid, index in refs:
        feedback.review(services, None, pid, {"index": index, "state": "accepted"})


# -- the feedback dataset --------------------------------------------------------------------------


def test_corrections_are_reviewed_and_exported_as_idx(app, services, make_user, account, registered_mlp, mnist,
                                                      digit_pngs, tmp_path, cli_env, capsys):
    from server.cli.main import main
    from trainers.mnist import read_idx

    files = [("image", f"{d}.png", digit_pngs[d]) for d in (3, 5, 8)]
    pid = app.post("/api/v1/predictions", upload_files=files, headers=account.headers).json["id"]
    for index, label in ((0, 3), (2, 9)):
        app.post_json(f"/api/v1/predictions/{pid}/feedback", {"index": index, "label": label}, headers=account.headers)
    assert app.get("/api/v1/feedback", expect_errors=True).status_int == 403  # users may not review

    admin = login(app, make_user(role="admin"))
    listed = app.get("/api/v1/feedback").json
    assert listed["counts"] == {"pending": 2, "accepted": 0, "excluded": 0}
    first = listed["samples"][0]
    assert (first["prediction_id"], first["index"], first["label"], first["state"]) == (pid, 0, 3, "pending")
    assert first["user_id"] == account.user_id and first["model"] == {"name": "mlp", "version": 1}
    assert first["feedback_at"] and first["reviewed_at"] is None
    thumbnail = Image.open(io.BytesIO(base64.b64decode(first["image"])))
    assert thumbnail.size == (28, 28)

    reviewed = app.patch_json(f"/api/v1/feedback/{pid}", {"index": 0, "state": "accepted"}, headers=admin.headers).json
    assert reviewed["state"] == "accepted" and reviewed["reviewed_by"] == admin.user_id and reviewed["reviewed_at"]
    app.patch_json(f"/api/v1/feedback/{pid}", {"index": 2, "state": "excluded"}, headers=admin.headers)
    assert app.patch_json(f"/api/v1/feedback/{pid}", {"index": 1, "state": "accepted"}, headers=admin.headers,
                          expect_errors=True).status_int == 404  # image 1 was never corrected
    bad = app.patch_json(f"/api/v1/feedback/{pid}", {"state": "maybe"}, headers=admin.headers, expect_errors=True)
    assert bad.status_int == 400 and bad.json["error"]["code"] == "bad_state"
    assert app.get("/api/v1/feedback?state=nope", expect_errors=True).status_int == 400
    accepted = app.get("/api/v1/feedback?state=accepted").json["samples"]
    assert [(s["prediction_id"], s["index"]) for s in accepted] == [(pid, 0)]

    # the user changes an accepted label: it waits for a review again
    app.post_json(f"/api/v1/predictions/{pid}/feedback", {"index": 0, "label": 8}, headers=admin.headers,
                  expect_errors=True)  # not the owner: 404, nothing changes
    assert app.get("/api/v1/feedback").json["counts"] == {"pending": 0, "accepted": 1, "excluded": 1}
    user = login(app, account.email)
    app.post_json(f"/api/v1/predictions/{pid}/feedback", {"index": 2, "label": 8}, headers=user.headers)
    with unit_of_work(services.sessions) as session:
        assert feedback_repo.counts(session) == {"pending": 1, "accepted": 1, "excluded": 0}

    # more accepted corrections, then the export through the CLI, read back with the one IDX reader
    refs = correct(services, account.user_id, mnist.x_train[FEEDBACK_SLICE][:5], mnist.y_train[FEEDBACK_SLICE][:5])
    accept_all(services, refs)
    out = tmp_path / "export"
    assert main(["feedback", "export", str(out)]) == 0
    assert "exported 6 accepted corrections" in capsys.readouterr().out
    images = read_idx(out / feedback.IMAGES_FILE, 3)
    labels = read_idx(out / feedback.LABELS_FILE, 1)
    with unit_of_work(services.sessions) as session:
        expected = feedback_repo.samples(session, feedback_repo.ACCEPTED)
    assert images.shape == (6, 28, 28) and labels.tolist() == [s.label for s in expected]
    assert labels.tolist() == [3] + [int(y) for y in mnist.y_train[FEEDBACK_SLICE][:5]]
    for image, sample in zip(images, expected):
        np.testing.assert_array_equal(image, from_png(sample.png))
    assert (out / feedback.IMAGES_FILE).read_bytes()[:4] == b"\x00\x00\x08\x03"  # MNIST's own header


# -- gated retraining ------------------------------------------------------------------------------


def test_gate_rule():
    from trainers.retrain import decide

    def fig(mnist, fb):
        return {"mnist_accuracy": mnist, "feedback_accuracy": fb}

    assert decide(fig(0.900, 0.8), fig(0.901, 0.7), 0.002)["activated"]            # within the tolerance
    assert not decide(fig(0.897, 0.9), fig(0.900, 0.7), 0.002)["activated"]        # worse on MNIST
    assert not decide(fig(0.950, 0.7), fig(0.900, 0.7), 0.002)["activated"]        # a tie on feedback
    no_held = decide(fig(0.990, None), fig(0.900, None), 0.002)
    assert not no_held["activated"] and "no held-out feedback" in no_held["reason"]


def test_held_out_split_is_seeded_and_disjoint():
    from trainers.retrain import split_feedback

    accepted = FeedbackSet(np.zeros((10, 28, 28), np.uint8), np.arange(10, dtype=np.uint8),
                           tuple(f"p:{i}" for i in range(10)))
    train, held = split_feedback(accepted, 0.2, seed=5)
    assert len(held) == 2 and len(train) == 8 and not set(train.refs) & set(held.refs)
    assert split_feedback(accepted, 0.2, seed=5)[1].refs == held.refs
    assert len(split_feedback(accepted.take([0]), 0.2, seed=5)[1]) == 0  # one correction: nothing held out
    assert len(split_feedback(accepted.take([0, 1]), 0.2, seed=5)[1]) == 1


def _recompute(services, info, mnist):
    """Both versions' figures recomputed from the stored model files and the stored held-out refs."""
    import keras

    from trainers.train import evaluate

    gate = info.gate
    active = services.registry.get(info.name, gate["active"]["version"])
    held = [tuple(ref.rsplit(":", 1)) for ref in gate["feedback"]["held_out_refs"]]
    with unit_of_work(services.sessions) as session:
        samples = [feedback_repo.one(session, pid, int(index)) for pid, index in held]
    x_fb = np.stack([from_png(s.png) for s in samples])
    y_fb = np.array([s.label for s in samples])
    figures = {}
    for who, version in (("candidate", info), ("active", active)):
        model = keras.models.load_model(services.registry.fetch_file(version), compile=False)
        figures[who] = {"mnist_accuracy": evaluate(model, mnist.x_test, mnist.y_test)[0],
                        "feedback_accuracy": evaluate(model, x_fb, y_fb)[0]}
    return figures


@pytest.mark.slow
def test_better_candidate_is_activated_and_its_figures_match_a_recomputation(app, services, make_user, mnist):
    from trainers.register import train_and_register
    from trainers.retrain import retrain

    # a weak active version: a small MLP that saw 200 images once
    weak = train_and_register(services.settings, services.registry, "mlp", limit=200, epochs=1, seed=0,
                              activate=True, progress=False, overrides={"hidden": [32], "translate": 0})
    refs = correct(services, None, mnist.x_train[FEEDBACK_SLICE], mnist.y_train[FEEDBACK_SLICE])
    accept_all(services, refs)

    info = retrain(services.settings, services.registry, "mlp", limit=3000, epochs=3, seed=0, progress=False)
    gate = info.gate
    assert info.version == 2 and info.active and gate["activated"], gate
    assert services.registry.get("mlp").version == 2
    assert info.hyperparameters["hidden"] == [32] and info.hyperparameters["translate"] == 0  # the active's family/hp
    assert gate["feedback"] == {**gate["feedback"], "accepted": 60, "held_out": 12, "trained_on": 48}
    assert gate["candidate"]["mnist_accuracy"] == info.test_accuracy
    assert gate["active"]["version"] == weak.version
    recomputed = _recompute(services, info, mnist)
    for who in ("candidate", "active"):
        for key in ("mnist_accuracy", "feedback_accuracy"):
            assert gate[who][key] == pytest.approx(recomputed[who][key], abs=1e-9), (who, key)
    assert gate["candidate"]["feedback_accuracy"] > gate["active"]["feedback_accuracy"]

    # the dashboard's view: GET /api/v1/models/{name} carries the decision and both figures
    login(app, make_user(role="admin"))
    shown = app.get("/api/v1/models/mlp").json
    assert shown["active"]["gate"] == gate and shown["versions"][0]["gate"] is None


@pytest.mark.slow
def test_worse_candidate_is_registered_but_not_activated(services, registered_mlp, mnist, cli_env, capsys):
    from server.cli.main import main

    accept_all(services, correct(services, None, mnist.x_train[FEEDBACK_SLICE][:20],
                                 mnist.y_train[FEEDBACK_SLICE][:20]))
    # the active version saw 12,000 images three times; this candidate sees 200 once
    assert main(["retrain", "mlp", "--limit", "200", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "registered mlp:2 (not active)" in out and "gate: not activated" in out
    candidate = services.registry.get("mlp", 2)
    gate = candidate.gate
    assert not gate["activated"] and not gate["mnist_not_worse"] and gate["feedback"]["held_out"] == 4
    assert gate["candidate"]["mnist_accuracy"] < gate["active"]["mnist_accuracy"] - gate["tolerance"]
    assert services.registry.get("mlp").version == registered_mlp.version == 1
    assert main(["retrain", "nope", "--quiet"]) == 1
    assert "no model named 'nope'" in capsys.readouterr().err


# -- the genetic search ----------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_search_is_reproducible_and_registers_its_best_unactivated(services, cli_env, capsys):
    from server.cli.main import main

    args = ["--family", "mlp", "--population", "4", "--generations", "2", "--seed", "3", "--epochs", "1",
            "--limit", "600"]
    assert main(["tune", "mlp-ga", *args, "--quiet"]) == 0
    assert "registered mlp-ga:1 (not active)" in capsys.readouterr().out
    kind, spec = training.validate(services, {"kind": "tune", "name": "mlp-ga", "family": "mlp", "population": 4,
                                              "generations": 2, "seed": 3, "epochs": 1, "limit": 600})
    again = training.execute(services, kind, spec)
    first = services.registry.get("mlp-ga", 1)
    assert again.version == 2 and not first.active and not again.active
    assert first.search["history"] == again.search["history"] and first.search["best"] == again.search["best"]
    history = first.search["history"]
    assert [h["generation"] for h in history] == [1, 2] and all(len(h["individuals"]) == 4 for h in history)
    assert history[1]["best"] >= history[0]["best"]  # the elite survives
    for h in history:
        fits = [i["fitness"] for i in h["individuals"]]
        assert h["best"] == max(fits) and h["mean"] == pytest.approx(sum(fits) / 4)
    best = first.search["best"]
    assert first.search["best_fitness"] == max(h["best"] for h in history)
    for key, value in best.items():
        assert first.hyperparameters[key] == value
    # the registered version is the best individual trained again with the same seed: same validation figure
    assert first.metrics["validation_accuracy"] == pytest.approx(first.search["best_fitness"], abs=1e-9)
    assert 0.1 < first.test_accuracy <= 1.0
