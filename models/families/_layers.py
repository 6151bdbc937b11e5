"""Keras layers every family shares: the image input and the augmentation.

Augmentation layers (``RandomTranslation``/``RandomRotation``) are part of the
model and are the identity at inference (``training=False``, the default when a
model is called directly or inside a ``tf.function``). Layer names are part of
saved models: keep them.

Imports Keras: family modules import this inside ``build``.
"""
from __future__ import annotations

import keras
from keras import layers


def inputs(name: str = "image") -> keras.KerasTensor:
    """The (N, 28, 28) float32 image input."""
    return keras.Input(shape=(28, 28), dtype="float32", name=name)


def augment(x, hp: dict, seed: int | None):
    """Reshape to (28, 28, 1) and apply the training-time augmentation of ``hp``."""
    x = layers.Reshape((28, 28, 1), name="to_channels")(x)
    translate = float(hp.get("translate") or 0.0)
    rotate = float(hp.get("rotate") or 0.0)
    if rotate > 0:
        x = layers.RandomRotation(rotate / 360.0, fill_mode="constant", fill_value=0.0,
                                  seed=seed, name="augment_rotate")(x)
    if translate > 0:
        f = translate / 28.0
        x = layers.RandomTranslation(f, f, fill_mode="constant", fill_value=0.0,
                                     seed=None if seed is None else seed + 1,
                                     name="augment_translate")(x)
    return x


def has_augmentation(hp: dict) -> bool:
    return bool(hp.get("translate")) or bool(hp.get("rotate"))


def flat_inputs(hp: dict, seed: int | None):
    """``(inputs, x)``: the image input and its (augmented, when ``hp`` asks) flattened
    784 vector, the start of the dense families (softmax, MLP, DBN)."""
    image = inputs()
    x = augment(image, hp, seed) if has_augmentation(hp) else image
    return image, layers.Flatten(name="flatten")(x)


def probabilities(x, **kwargs):
    """The 10-way softmax output layer."""
    return layers.Dense(10, activation="softmax", name="probabilities", **kwargs)(x)


def pretrained_sigmoid_stack(x, pretrained, prefix: str, dropout: float, seed: int | None):
    """Sigmoid Dense layers ``{prefix}_1, ...`` (each followed by ``dropout_i`` when
    ``dropout`` > 0) for greedily pretrained ``[(W, b), ...]`` pairs, W of shape
    (n_in, n_hidden), starting from the flattened 784 input ``x``.

    Returns ``(x, load)``: call ``load()`` once the model is built to copy the
    pretrained parameters in with ``set_weights`` (not baked into an initializer,
    so the saved model holds only plain Keras layers)."""
    import numpy as np

    loaded = []
    n_in = 784
    for i, (w, b) in enumerate(pretrained):
        w = np.asarray(w, dtype=np.float32)
        b = np.asarray(b, dtype=np.float32)
        if w.ndim != 2 or w.shape[0] != n_in or b.shape != (w.shape[1],):
            raise ValueError(f"{prefix} {i + 1}: W {w.shape} / b {b.shape} do not follow a {n_in}-unit layer")
        layer = layers.Dense(w.shape[1], activation="sigmoid", name=f"{prefix}_{i + 1}")
        x = layer(x)
        loaded.append((layer, w, b))
        if dropout > 0:
            x = layers.Dropout(dropout, seed=None if seed is None else seed + 31 + i, name=f"dropout_{i + 1}")(x)
        n_in = w.shape[1]

    def load() -> None:
        for layer, w, b in loaded:
            layer.set_weights([w, b])

    return x, load
