"""Deep belief network: greedy layer-wise RBM pretraining (``models.dbn``), then
the unrolled sigmoid stack plus a softmax layer, fine-tuned with supervision."""
from __future__ import annotations

from typing import Sequence

from models.families import Family, ProgressLine
from models.families._common import COMMON, describe_training


def pretrain(x_train_flat, hp: dict, seed: int, on_epoch: ProgressLine | None = None):
    """Greedy RBM pretraining of ``hp["hidden"]`` on (N, 784) images in [0, 1]:
    ``(weights, {"rbm_reconstruction_error": history})`` (see ``models.dbn.pretrain_dbn``)."""
    from models.dbn import pretrain_dbn

    def report(layer: int, epoch: int, err: float) -> None:
        if on_epoch is not None:
            on_epoch(f"dbn RBM {layer} ({hp['hidden'][layer - 1]} hidden) epoch {epoch}/{hp['rbm_epochs']}: "
                     f"reconstruction error {err:.5f}")

    weights, history = pretrain_dbn(
        x_train_flat, hp["hidden"], epochs=int(hp["rbm_epochs"]), k=int(hp["rbm_k"]),
        learning_rate=float(hp["rbm_learning_rate"]), batch_size=int(hp["rbm_batch_size"]), seed=seed,
        on_epoch=report, momentum=float(hp["rbm_momentum"]), weight_decay=float(hp["rbm_weight_decay"]))
    return weights, {"rbm_reconstruction_error": history}


def build(hp: dict, seed: int | None = None, pretrained: Sequence | None = None):
    """The unrolled DBN: sigmoid Dense layers initialised with the pretrained RBM
    weights ``[(W, b_hidden), ...]`` (W of shape (n_visible, n_hidden)), plus a
    softmax output layer, ready for supervised fine-tuning.

    The RBM parameters are copied with ``set_weights`` (not baked into an
    initializer), so the saved model holds only plain Keras layers.
    """
    if not pretrained:
        raise ValueError("a 'dbn' is built from pretrained RBMs: pass the (W, b_hidden) pairs of FAMILY.pretrain")
    import keras
    from keras import layers

    from models.families import _layers

    inputs, x = _layers.flat_inputs(hp, seed)
    if float(hp.get("input_dropout") or 0.0) > 0:
        x = layers.Dropout(float(hp["input_dropout"]), seed=None if seed is None else seed + 30,
                           name="input_dropout")(x)
    x, load = _layers.pretrained_sigmoid_stack(x, pretrained, "rbm", float(hp.get("dropout") or 0.0), seed)
    model = keras.Model(inputs, _layers.probabilities(x), name="dbn")
    load()
    return model


def describe(hp: dict) -> str:
    arch = (f"DBN 784-{'-'.join(str(h) for h in hp['hidden'])}: greedy RBM pretraining "
            f"(Bernoulli, CD-{hp['rbm_k']}, {hp['rbm_epochs']} epochs/layer, lr {hp['rbm_learning_rate']:g}, "
            f"momentum {hp['rbm_momentum']:g}, weight decay {hp['rbm_weight_decay']:g}), then sigmoid stack + "
            f"softmax 10 fine-tuned with dropout {hp['dropout']:g}")
    return f"{arch}; {describe_training(hp)}"


FAMILY = Family(
    name="dbn",
    description="deep belief network, two 1000-unit RBMs pretrained with CD-1, then fine-tuned",
    defaults={
        **COMMON,
        # greedy layer-wise RBM pretraining (models.dbn.pretrain_dbn)
        "hidden": [1000, 1000],
        "rbm_epochs": 10,
        "rbm_k": 1,
        "rbm_learning_rate": 0.05,
        "rbm_momentum": 0.9,
        "rbm_weight_decay": 2e-4,
        "rbm_batch_size": 100,
        # supervised fine-tuning of the unrolled stack + softmax layer
        "dropout": 0.2,
        "input_dropout": 0.0,
        "epochs": 30,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "translate": 2.0,
        "early_stopping_patience": 10,
    },
    build=build,
    describe=describe,
    pretrain=pretrain,
    order=40,
)
