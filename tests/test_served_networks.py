"""The stacked denoising autoencoder and the LSTM, trained on a slice, serve like the others:
registered, activated, answering v1 predictions (through the worker) and v2 inference."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from core.preprocess import from_png, scale

pytestmark = pytest.mark.slow

SLICE = {   # a couple of epochs on 2000 images: 0.85-0.95 on the test set
    "dae": {"hidden": [128, 64], "dae_epochs": 2, "learning_rate": 1e-2, "translate": 0, "dropout": 0.0},
    "lstm": {"units": [64], "learning_rate": 1e-2, "dropout": 0.0},
}


@pytest.fixture(scope="module", params=list(SLICE))
def trained(request, mnist, tmp_path_factory):
    from trainers.train import train

    family = request.param
    result = train(family, mnist, epochs=2, batch_size=32, limit=2000, seed=0, progress=False,
                   overrides=SLICE[family])
    path = tmp_path_factory.mktemp(family) / f"{family}.keras"
    result.model.save(path)
    return family, result, path


def test_trained_on_a_slice_it_serves_through_v1_and_v2(trained, services, account, mnist, digit_pngs, run_jobs):
    family, result, path = trained
    assert result.test_accuracy > 0.7, result.test_accuracy          # chance is 0.10
    info = services.registry.register(family, family, path, test_accuracy=result.test_accuracy,
                                      hyperparameters=result.hyperparameters, activate=True)
    assert info.kind == "classifier" and services.registry.active_versions()[family].id == info.id

    # v1: one image per digit, answered by a worker with the served network
    images = [base64.b64encode(digit_pngs[d]).decode() for d in range(10)]
    res = account.app.post_json("/api/v1/predictions", {"images": images, "model": family},
                                headers=account.headers)
    assert res.json["model"] == {"name": family, "version": 1}
    run_jobs()
    done = account.app.get(f"/api/v1/predictions/{res.json['id']}?include=preprocessed").json
    assert done["status"] == "succeeded"
    served = np.array([r["probabilities"] for r in done["results"]])
    seen = scale(np.stack([from_png(base64.b64decode(r["preprocessed"])) for r in done["results"]]))
    local = result.model(seen, training=False).numpy()
    np.testing.assert_allclose(served, local, atol=1e-4)   # the stored file, loaded and traced, is the network
    # uploads go through the preprocessing (re-centred, re-scaled): the slice-trained LSTM, which saw
    # no shifted rows, reads 6 of these 10 and the DAE more; chance is 1
    assert sum(r["digit"] == d for d, r in enumerate(done["results"])) >= 5

    # v2: 50 raw test images as a tensor
    x, y = mnist.x_test[:50], mnist.y_test[:50]
    body = {"inputs": [{"name": "images", "shape": [50, 28, 28], "datatype": "UINT8",
                        "data": x.reshape(-1).tolist()}]}
    out = account.app.post_json(f"/v2/models/{family}/infer", body, headers=account.headers).json
    probabilities = np.array(out["outputs"][0]["data"], dtype=np.float32).reshape(50, 10)
    np.testing.assert_allclose(probabilities, result.model(scale(x), training=False).numpy(), atol=1e-4)
    assert np.mean(probabilities.argmax(axis=1) == y) > 0.7
