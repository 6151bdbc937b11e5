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
