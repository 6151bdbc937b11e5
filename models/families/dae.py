"""Stacked denoising autoencoder: greedy layer-wise denoising-autoencoder
pretraining (``models.sdae``), then the encoder stack plus a softmax layer,
fine-tuned with supervision."""
from __future__ import annotations

from typing import Sequence

from models.families import Family, ProgressLine
from models.families._common import COMMON, describe_training


def pretrain(x_train_flat, hp: dict, seed: int, on_epoch: ProgressLine | None = None):
    """Greedy denoising-autoencoder pretraining of ``hp["hidden"]`` on (N, 784) images
    in [0, 1]: ``(weights, {"dae_reconstruction_error": history})`` (see
    ``models.sdae.pretrain_sdae``)."""
    from models.sdae import pretrain_sdae

    def report(layer: int, epoch: int, err: float) -> None:
        if on_epoch is not None:
            on_epoch(f"dae layer {layer} ({hp['hidden'][layer - 1]} hidden) epoch {epoch}/{hp['dae_epochs']}: "
                     f"reconstruction error {err:.5f}")

    weights, history = pretrain_sdae(
        x_train_flat, hp["hidden"], epochs=int(hp["dae_epochs"]), noise=str(hp["dae_noise"]),
        level=float(hp["dae_noise_level"]), learning_rate=float(hp["dae_learning_rate"]),
        batch_size=int(hp["dae_batch_size"]), seed=seed, on_epoch=report)
    return weights, {"dae_reconstruction_error": history}


def build(hp: dict, seed: int | None = None, pretrained: Sequence | None = None):
    """The encoder stack (sigmoid Dense layers ``encoder_1, ...`` initialised with the
    pretrained ``[(W, b), ...]``) plus a softmax output layer, ready for fine-tuning."""
    if not pretrained:
        raise ValueError("a 'dae' is built from pretrained autoencoders: pass the (W, b) pairs of FAMILY.pretrain")
    import keras

    from models.families import _layers

    inputs, x = _layers.flat_inputs(hp, seed)
    x, load = _layers.pretrained_sigmoid_stack(x, pretrained, "encoder", float(hp.get("dropout") or 0.0), seed)
    model = keras.Model(inputs, _layers.probabilities(x), name="dae")
    load()
    return model


def describe(hp: dict) -> str:
    noise = (f"masking noise {hp['dae_noise_level']:g}" if hp["dae_noise"] == "masking"
             else f"Gaussian noise σ {hp['dae_noise_level']:g}")
    arch = (f"stacked denoising autoencoder 784-{'-'.join(str(h) for h in hp['hidden'])}: greedy layer-wise "
            f"pretraining ({noise}, sigmoid encoder/decoder, cross-entropy to the clean input, "
            f"{hp['dae_epochs']} epochs/layer, Adam lr {hp['dae_learning_rate']:g}), then the encoder stack + "
            f"softmax 10 fine-tuned with dropout {hp['dropout']:g}")
    return f"{arch}; {describe_training(hp)}"


FAMILY = Family(
    name="dae",
    description="stacked denoising autoencoder, two 1000-unit layers pretrained one by one, then fine-tuned",
    defaults={
        **COMMON,
        # greedy layer-wise denoising-autoencoder pretraining (models.sdae.pretrain_sdae)
        "hidden": [1000, 1000],
        "dae_epochs": 5,
        "dae_noise": "masking",       # "masking" or "gaussian"
        "dae_noise_level": 0.25,      # masked fraction, or the Gaussian standard deviation
        "dae_learning_rate": 1e-3,
        "dae_batch_size": 128,
        # supervised fine-tuning of the encoder stack + softmax layer
        "dropout": 0.2,
        "epochs": 25,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "translate": 2.0,
        "early_stopping_patience": 10,
    },
    build=build,
    describe=describe,
    pretrain=pretrain,
    order=50,
)
