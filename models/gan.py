"""Conditional GAN (Mirza & Osindero 2014): the networks, sampling and a PNG grid.

The generator maps (noise, digit) to a (28, 28) image in [0, 1]; the
discriminator maps (image, digit) to a logit that the image is a real MNIST
digit of that class. Both see the digit through a learned label embedding: the
generator concatenates it with the noise, the discriminator projects its image
features on it. Dense layers keep a training epoch to seconds on a CPU. Only plain Keras
layers are used, so a saved generator loads with ``keras.models.load_model``.

A generator is registered as a version of family ``cgan`` (see
``models.registry.GENERATOR_FAMILIES``): it is never loaded to classify.

This module imports nothing of the platform but the registry's family name.
"""
from __future__ import annotations

import io

import keras
import numpy as np
from keras import layers

from models.registry import CGAN

FAMILY = CGAN


def build_generator(noise_dim: int = 64, hidden=(256, 512), embedding: int = 16,
                    seed: int | None = None) -> keras.Model:
    """(noise (N, noise_dim) float32, digit (N, 1) int32) -> images (N, 28, 28) in [0, 1]."""
    noise = keras.Input(shape=(noise_dim,), dtype="float32", name="noise")
    digit = keras.Input(shape=(1,), dtype="int32", name="digit")
    label = layers.Flatten(name="label_flat")(layers.Embedding(10, embedding, name="label_embedding")(digit))
    x = layers.Concatenate(name="noise_and_label")([noise, label])
    for i, units in enumerate(hidden):
        x = layers.Dense(int(units), kernel_initializer=keras.initializers.GlorotUniform(
            None if seed is None else seed + i), name=f"g_dense_{i + 1}")(x)
        x = layers.BatchNormalization(name=f"g_bn_{i + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"g_relu_{i + 1}")(x)
    x = layers.Dense(784, activation="tanh", name="g_pixels")(x)
    x = layers.Rescaling(0.5, offset=0.5, name="to_unit_range")(x)   # tanh's [-1, 1] -> [0, 1]
    image = layers.Reshape((28, 28), name="image")(x)
    return keras.Model([noise, digit], image, name="cgan_generator")


def build_discriminator(hidden=(512, 256), embedding: int = 16, dropout: float = 0.3,
                        seed: int | None = None) -> keras.Model:
    """(images (N, 28, 28) in [0, 1], digit (N, 1) int32) -> (N, 1) logit of "real digit of that class".

    A projection discriminator (Miyato & Koyama 2018): the logit is a linear
    function of the image features plus their inner product with an embedding of
    the digit, so the verdict depends on the class from the first steps on."""
    image = keras.Input(shape=(28, 28), dtype="float32", name="image")
    digit = keras.Input(shape=(1,), dtype="int32", name="digit")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_signed_range")(layers.Flatten(name="flatten")(image))
    for i, units in enumerate(hidden):
        x = layers.Dense(int(units), kernel_initializer=keras.initializers.GlorotUniform(
            None if seed is None else seed + 10 + i), name=f"d_dense_{i + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"d_relu_{i + 1}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, seed=None if seed is None else seed + 20 + i, name=f"d_dropout_{i + 1}")(x)
    label = layers.Flatten(name="label_flat")(layers.Embedding(10, int(hidden[-1]), name="label_projection")(digit))
    logit = layers.Add(name="logit")([layers.Dense(1, name="unconditional_logit")(x),
                                      layers.Dot(axes=1, name="class_projection")([x, label])])
    return keras.Model([image, digit], logit, name="cgan_discriminator")


def noise_dim(generator: keras.Model) -> int:
    return int(generator.inputs[0].shape[-1])


def balanced_labels(n: int) -> np.ndarray:
    """0, 1, ..., 9, 0, 1, ...: every digit n // 10 or n // 10 + 1 times."""
    return (np.arange(int(n)) % 10).astype(np.uint8)


def generate(generator: keras.Model, labels, seed: int = 0, batch_size: int = 1000) -> np.ndarray:
    """(N, 28, 28) uint8 images of the digits ``labels`` (white on black, like MNIST);
    the same seed gives the same images."""
    labels = np.asarray(labels, dtype=np.int32).reshape(-1)
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("labels must be digits 0-9")
    noise = np.random.default_rng(seed).normal(size=(len(labels), noise_dim(generator))).astype(np.float32)
    out = [keras.ops.convert_to_numpy(generator([noise[i:i + batch_size], labels[i:i + batch_size, None]],
                                                training=False))
           for i in range(0, len(labels), batch_size)]
    images = np.concatenate(out) if out else np.zeros((0, 28, 28), np.float32)
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def generate_balanced(generator: keras.Model, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled generated digits, balanced over the classes: ``(images uint8, labels uint8)``."""
    labels = balanced_labels(n)
    return generate(generator, labels, seed), labels


def grid_png(generator: keras.Model, per_class: int = 8, seed: int = 0, pad: int = 2) -> bytes:
    """A PNG of generated digits: one row per digit 0-9, ``per_class`` columns."""
    from PIL import Image

    per_class = int(per_class)
    labels = np.repeat(np.arange(10), per_class)
    images = generate(generator, labels, seed).reshape(10, per_class, 28, 28)
    cell = 28 + pad
    canvas = np.zeros((10 * cell + pad, per_class * cell + pad), np.uint8)
    for row in range(10):
        for col in range(per_class):
            canvas[pad + row * cell:pad + row * cell + 28, pad + col * cell:pad + col * cell + 28] = images[row, col]
    buffer = io.BytesIO()
    Image.fromarray(canvas, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
