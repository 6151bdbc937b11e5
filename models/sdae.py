"""Stacked denoising autoencoders: greedy layer-wise pretraining, in Keras.

Each layer is a denoising autoencoder (Vincent et al. 2008, 2010): its input is
corrupted (``masking``: a fraction of the inputs set to 0; ``gaussian``: additive
noise, clipped to [0, 1]), a sigmoid encoder maps it to the hidden code and a
sigmoid decoder reconstructs the *clean* input, trained with binary
cross-entropy (the inputs and the sigmoid codes both lie in [0, 1]). Layer 1
learns the pixels, layer 2 the clean codes of layer 1, and so on. The encoder
``(W, b)`` pairs initialise the sigmoid stack of the ``dae`` family's ``build``
(``models.families.dae``) for supervised fine-tuning; the decoders are dropped.

The corruption and the order of the examples are drawn afresh each epoch from a
seeded NumPy generator and the initial weights from seeded initialisers, so
pretraining is reproducible for a seed.

This module imports nothing of the platform.
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np

NOISES = ("masking", "gaussian")


def corrupt(x: np.ndarray, noise: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """A corrupted copy of ``x`` (values in [0, 1]): ``masking`` zeroes each value with
    probability ``level``; ``gaussian`` adds N(0, level²) noise and clips to [0, 1]."""
    if noise == "masking":
        return (x * (rng.random(x.shape, dtype=np.float32) >= level)).astype(np.float32)
    if noise == "gaussian":
        return np.clip(x + rng.normal(0.0, level, x.shape).astype(np.float32), 0.0, 1.0)
    raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")


def _autoencoder(n_visible: int, n_hidden: int, learning_rate: float, seed: int) -> keras.Model:
    inputs = keras.Input(shape=(n_visible,), dtype="float32", name="corrupted")
    code = keras.layers.Dense(n_hidden, activation="sigmoid", name="encoder",
                              kernel_initializer=keras.initializers.GlorotUniform(seed))(inputs)
    recon = keras.layers.Dense(n_visible, activation="sigmoid", name="decoder",
                               kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(code)
    model = keras.Model(inputs, recon, name=f"dae_{n_visible}_{n_hidden}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return model


def pretrain_sdae(x: np.ndarray, layer_sizes: Sequence[int], *, epochs: int = 5, noise: str = "masking",
                  level: float = 0.25, learning_rate: float = 1e-3, batch_size: int = 128, seed: int = 0,
                  on_epoch: Callable[[int, int, float], None] | None = None, monitor_size: int = 5000,
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[list[float]]]:
    """Greedy layer-wise denoising-autoencoder pretraining.

    ``x``: float32 (N, 784) (or (N, 28, 28), flattened) in [0, 1].
    Returns ``(weights, history)``: ``weights[i] = (W, b)`` of encoder i+1 (W of
    shape (n_in, n_hidden)) and ``history[i][e]`` the mean squared error between
    (up to ``monitor_size`` of) layer i+1's clean inputs and its reconstruction of
    their corrupted copies after epoch e+1. ``on_epoch(layer, epoch, error)``
    (1-based) is called after each epoch.
    """
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    data = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if data.size and (data.min() < 0 or data.max() > 1):
        raise ValueError("pretrain_sdae expects inputs scaled to [0, 1]")
    rng = np.random.default_rng(seed)
    monitor_idx = rng.permutation(len(data))[:monitor_size]
    weights: list[tuple[np.ndarray, np.ndarray]] = []
    history: list[list[float]] = []
    for layer, n_hidden in enumerate(layer_sizes, start=1):
        ae = _autoencoder(data.shape[1], int(n_hidden), learning_rate, seed + 100 * layer)
        monitor_noisy = corrupt(data[monitor_idx], noise, level, np.random.default_rng(seed + 100 * layer))
        errors: list[float] = []
        for epoch in range(1, int(epochs) + 1):
            order = rng.permutation(len(data))  # the seeded generator shuffles, not Keras
            ae.fit(corrupt(data[order], noise, level, rng), data[order], batch_size=batch_size, epochs=1,
                   shuffle=False, verbose=0)
            # a direct call per chunk: Keras predict() costs ~150 ms of set-up per call here
            recon = np.concatenate([ae(monitor_noisy[i:i + 2000], training=False).numpy()
                                    for i in range(0, len(monitor_noisy), 2000)])
            err = float(np.mean(np.square(recon - data[monitor_idx])))
            errors.append(err)
            if on_epoch is not None:
                on_epoch(layer, epoch, err)
        w, b = ae.get_layer("encoder").get_weights()
        weights.append((np.asarray(w, np.float32), np.asarray(b, np.float32)))
        history.append(errors)
        if layer < len(layer_sizes):
            data = (1.0 / (1.0 + np.exp(-(data @ w + b)))).astype(np.float32)  # the clean codes
    return weights, history
