"""Restricted Boltzmann machines and greedy layer-wise DBN pretraining, in TensorFlow.

An ``RBM`` has Bernoulli visible and hidden units and is trained with
contrastive divergence (CD-k): the positive phase takes the hidden
probabilities given the data, k steps of block Gibbs sampling (sample h, then
the visible probabilities, then the hidden probabilities) give the negative
phase, and the weights and both biases follow the difference of the two
correlations with momentum and L2 weight decay. One minibatch update is a
single ``tf.function`` of TensorFlow ops; the Gibbs sampling uses a seeded
``tf.random.Generator`` so pretraining is reproducible.

``pretrain_dbn`` stacks RBMs greedily (Hinton, Osindero & Teh 2006): RBM 1 learns
the pixels (grey levels used as probabilities), RBM 2 learns RBM 1's hidden
probabilities, and so on. The ``(W, b_hidden)`` pairs initialise the sigmoid
layers of the DBN family's ``build`` (``models.families.dbn``) for supervised fine-tuning.

This module imports nothing of the platform.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf


class RBM(tf.Module):
    """A Bernoulli-Bernoulli restricted Boltzmann machine trained with CD-k."""

    def __init__(self, n_visible: int, n_hidden: int, *, k: int = 1, learning_rate: float = 0.05,
                 momentum: float = 0.9, initial_momentum: float = 0.5, momentum_switch_epoch: int = 1,
                 weight_decay: float = 2e-4, seed: int = 0, name: str | None = None):
        super().__init__(name=name)
        if k < 1:
            raise ValueError("CD-k needs k >= 1")
        self.n_visible, self.n_hidden, self.k = int(n_visible), int(n_hidden), int(k)
        self.learning_rate = float(learning_rate)
        self.momentum, self.initial_momentum = float(momentum), float(initial_momentum)
        self.momentum_switch_epoch = int(momentum_switch_epoch)
        self.weight_decay = float(weight_decay)
        init = np.random.default_rng(seed).normal(0.0, 0.01, (self.n_visible, self.n_hidden)).astype(np.float32)
        self.W = tf.Variable(init, name="W")
        self.b_visible = tf.Variable(tf.zeros([self.n_visible]), name="b_visible")
        self.b_hidden = tf.Variable(tf.zeros([self.n_hidden]), name="b_hidden")
        self._dW = tf.Variable(tf.zeros_like(self.W), trainable=False, name="dW")
        self._dbv = tf.Variable(tf.zeros_like(self.b_visible), trainable=False, name="dbv")
        self._dbh = tf.Variable(tf.zeros_like(self.b_hidden), trainable=False, name="dbh")
        self._rng = tf.random.Generator.from_seed(int(seed) + 7919)
        self.epochs_trained = 0

    # -- conditionals -----------------------------------------------------
    def hidden_probabilities(self, v):
        return tf.sigmoid(tf.matmul(v, self.W) + self.b_hidden)

    def visible_probabilities(self, h):
        return tf.sigmoid(tf.matmul(h, self.W, transpose_b=True) + self.b_visible)

    def _sample(self, p):
        return tf.cast(self._rng.uniform(tf.shape(p)) < p, tf.float32)

    # -- CD-k update --------------------------------------------------------
    @tf.function(reduce_retracing=True)
    def _cd_step(self, v0, learning_rate, momentum):
        batch = tf.cast(tf.shape(v0)[0], tf.float32)
        # positive phase: data-driven statistics
        ph0 = self.hidden_probabilities(v0)
        h = self._sample(ph0)
        # negative phase: k steps of block Gibbs sampling
        vk = v0
        phk = ph0
        for step in range(self.k):
            vk = self.visible_probabilities(h)          # mean-field visible (Hinton's practical guide)
            phk = self.hidden_probabilities(vk)
            if step + 1 < self.k:
                h = self._sample(phk)
        positive = tf.matmul(v0, ph0, transpose_a=True)
        negative = tf.matmul(vk, phk, transpose_a=True)
        grad_w = (positive - negative) / batch - self.weight_decay * self.W
        grad_bv = tf.reduce_mean(v0 - vk, axis=0)
        grad_bh = tf.reduce_mean(ph0 - phk, axis=0)
        self._dW.assign(momentum * self._dW + learning_rate * grad_w)
        self._dbv.assign(momentum * self._dbv + learning_rate * grad_bv)
        self._dbh.assign(momentum * self._dbh + learning_rate * grad_bh)
        self.W.assign_add(self._dW)
        self.b_visible.assign_add(self._dbv)
        self.b_hidden.assign_add(self._dbh)
        return tf.reduce_sum(tf.reduce_mean(tf.square(v0 - vk), axis=1))

    def train_epoch(self, x: np.ndarray, batch_size: int = 100, shuffle_seed: int | None = None) -> float:
        """One epoch of CD-k over ``x`` (N, n_visible) in [0, 1]; returns the mean
        squared reconstruction error of the negative-phase visible probabilities
        seen during the epoch."""
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        n = len(x)
        order = np.random.default_rng(shuffle_seed).permutation(n) if shuffle_seed is not None else np.arange(n)
        momentum = tf.constant(self.momentum if self.epochs_trained >= self.momentum_switch_epoch
                               else self.initial_momentum, tf.float32)
        lr = tf.constant(self.learning_rate, tf.float32)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = x[order[start:start + batch_size]]
            total += float(self._cd_step(tf.constant(batch), lr, momentum))
        self.epochs_trained += 1
        return total / max(n, 1)

    # -- evaluation -----------------------------------------------------------
    @tf.function(reduce_retracing=True)
    def _reconstruct(self, v):
        return self.visible_probabilities(self.hidden_probabilities(v))

    def reconstruct(self, x: np.ndarray, batch_size: int = 2000) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return np.concatenate([self._reconstruct(tf.constant(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)]) if len(x) else x

    def reconstruction_error(self, x: np.ndarray, batch_size: int = 2000) -> float:
        """Mean squared error between ``x`` and its mean-field reconstruction
        p(v | h = p(h | x)), averaged over units and examples."""
        x = np.asarray(x, dtype=np.float32)
        if not len(x):
            return 0.0
        return float(np.mean(np.square(x - self.reconstruct(x, batch_size))))

    @tf.function(reduce_retracing=True)
    def _transform(self, v):
        return self.hidden_probabilities(v)

    def transform(self, x: np.ndarray, batch_size: int = 2000) -> np.ndarray:
        """Hidden-unit probabilities p(h = 1 | x): the input of the next RBM."""
        x = np.asarray(x, dtype=np.float32)
        return np.concatenate([self._transform(tf.constant(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b_hidden)`` as numpy arrays, W of shape (n_visible, n_hidden)."""
        return self.W.numpy().copy(), self.b_hidden.numpy().copy()


def pretrain_dbn(x: np.ndarray, layer_sizes: Sequence[int], epochs: int = 5, k: int = 1,
                 learning_rate: float = 0.05, batch_size: int = 100, seed: int = 0,
                 on_epoch: Callable[[int, int, float], None] | None = None, *,
                 momentum: float = 0.9, weight_decay: float = 2e-4, monitor_size: int = 5000,
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[list[float]]]:
    """Greedy layer-wise pretraining of a stack of RBMs.

    ``x``: float32 (N, 784) (or (N, 28, 28), flattened) in [0, 1].
    ``layer_sizes``: the hidden layer sizes, e.g. ``[1000, 1000]`` for 784-1000-1000.

    Returns ``(weights, history)``: ``weights[i] = (W, b_hidden)`` of RBM i+1 and
    ``history[i][e]`` the reconstruction error of RBM i+1 on (up to
    ``monitor_size`` of) its training input after epoch e+1.
    ``on_epoch(layer, epoch, error)`` (1-based layer and epoch) is called after each epoch.
    """
    data = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if data.size and (data.min() < 0 or data.max() > 1):
        raise ValueError("pretrain_dbn expects inputs scaled to [0, 1]")
    weights: list[tuple[np.ndarray, np.ndarray]] = []
    history: list[list[float]] = []
    monitor_idx = np.random.default_rng(seed).permutation(len(data))[:monitor_size]
    for layer, n_hidden in enumerate(layer_sizes, start=1):
        rbm = RBM(data.shape[1], int(n_hidden), k=k, learning_rate=learning_rate, momentum=momentum,
                  weight_decay=weight_decay, seed=seed + 1000 * layer, name=f"rbm_{layer}")
        errors: list[float] = []
        for epoch in range(1, int(epochs) + 1):
            rbm.train_epoch(data, batch_size=batch_size, shuffle_seed=seed + 1000 * layer + epoch)
            err = rbm.reconstruction_error(data[monitor_idx])
            errors.append(err)
            if on_epoch is not None:
                on_epoch(layer, epoch, err)
        weights.append(rbm.weights())
        history.append(errors)
        if layer < len(layer_sizes):
            data = rbm.transform(data)
    return weights, history
