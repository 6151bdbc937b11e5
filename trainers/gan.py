"""Train the conditional GAN on MNIST, register its generator, and draw labelled
digits from a registered generator (``digitserve train NAME --gan-samples N``).

One training step updates the discriminator on a batch of real digits (their
labels) and a batch of generated ones (random labels), then the generator
through the discriminator's verdict on fresh fakes; both with Adam (lr 3e-4,
beta_1 0.5) and binary cross-entropy on logits, the real targets smoothed to
0.9. The discriminator is a projection discriminator (``models.gan``), which
makes the class matter from the first hundred steps. Runs are deterministic for
a seed: the shuffling and the noise and labels come from seeded generators.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from core.preprocess import scale
from core.settings import Settings
from models import gan
from models.registry import CGAN, ModelRegistry, VersionInfo, parse_model_spec
from models.runtime import configure_tensorflow
from trainers.mnist import load_mnist

DEFAULTS = {
    "noise_dim": 64,
    "embedding": 16,
    "generator_hidden": [256, 512],
    "discriminator_hidden": [512, 256],
    "discriminator_dropout": 0.3,
    "epochs": 15,
    "batch_size": 128,
    "learning_rate": 3e-4,
    "beta_1": 0.5,
    "real_label": 0.9,         # one-sided label smoothing of the real targets
}


@dataclass
class GanResult:
    generator: keras.Model
    discriminator: keras.Model
    hyperparameters: dict
    curves: dict            # per epoch "d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy"
    train_seconds: float


def describe(hp: dict) -> str:
    return (f"conditional GAN: generator noise {hp['noise_dim']} + label embedding {hp['embedding']} -> "
            f"{'-'.join(str(u) for u in hp['generator_hidden'])} (batch norm, leaky ReLU) -> 784 tanh; "
            f"discriminator image -> {'-'.join(str(u) for u in hp['discriminator_hidden'])} "
            f"(leaky ReLU, dropout {hp['discriminator_dropout']:g}) -> 1 + projection on a label embedding; {hp['epochs']} epochs, batch "
            f"{hp['batch_size']}, Adam lr {hp['learning_rate']:g} beta_1 {hp['beta_1']:g}, "
            f"real targets {hp['real_label']:g}")


def train_gan(data, *, epochs: int | None = None, limit: int | None = None, seed: int = 0,
              overrides: dict | None = None, progress: bool = True, threads: int | None = None,
              max_steps: int | None = None) -> GanResult:
    """Train a conditional GAN on ``data.x_train`` (the first ``limit`` images);
    ``max_steps`` stops early after that many generator updates (tests)."""
    configure_tensorflow(threads or min(os.cpu_count() or 2, 8))
    hp = {**DEFAULTS, **(overrides or {})}
    if epochs is not None:
        hp["epochs"] = int(epochs)
    x = np.asarray(data.x_train)
    y = np.asarray(data.y_train)
    if limit is not None:
        x, y = x[:int(limit)], y[:int(limit)]
    images, labels = scale(x), y.astype(np.int32).reshape(-1, 1)
    bs = int(hp["batch_size"])
    hp.update({"seed": int(seed), "limit": None if limit is None else int(limit), "train_size": int(len(x))})

    keras.utils.set_random_seed(seed)
    generator = gan.build_generator(int(hp["noise_dim"]), hp["generator_hidden"], int(hp["embedding"]), seed)
    discriminator = gan.build_discriminator(hp["discriminator_hidden"], int(hp["embedding"]),
                                            float(hp["discriminator_dropout"]), seed)
    g_opt = keras.optimizers.Adam(float(hp["learning_rate"]), beta_1=float(hp["beta_1"]))
    d_opt = keras.optimizers.Adam(float(hp["learning_rate"]), beta_1=float(hp["beta_1"]))
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    real_target = float(hp["real_label"])
    noise_dim = int(hp["noise_dim"])
    rng = tf.random.Generator.from_seed(seed + 4099)

    @tf.function(reduce_retracing=True)
    def step(real, digits):
        n = tf.shape(real)[0]
        fake_digits = rng.uniform([n, 1], 0, 10, dtype=tf.int32)
        with tf.GradientTape() as tape:
            fake = generator([rng.normal([n, noise_dim]), fake_digits], training=True)
            real_logit = discriminator([real, digits], training=True)
            fake_logit = discriminator([fake, fake_digits], training=True)
            d_loss = (bce(tf.fill(tf.shape(real_logit), real_target), real_logit)
                      + bce(tf.zeros_like(fake_logit), fake_logit))
        d_opt.apply_gradients(zip(tape.gradient(d_loss, discriminator.trainable_variables),
                                  discriminator.trainable_variables))
        gen_digits = rng.uniform([n, 1], 0, 10, dtype=tf.int32)
        with tf.GradientTape() as tape:
            fake = generator([rng.normal([n, noise_dim]), gen_digits], training=True)
            logit = discriminator([fake, gen_digits], training=True)
            g_loss = bce(tf.ones_like(logit), logit)
        g_opt.apply_gradients(zip(tape.gradient(g_loss, generator.trainable_variables),
                                  generator.trainable_variables))
        real_acc = tf.reduce_mean(tf.cast(real_logit > 0, tf.float32))
        fake_acc = tf.reduce_mean(tf.cast(fake_logit < 0, tf.float32))
        return d_loss, g_loss, real_acc, fake_acc

    curves: dict[str, list[float]] = {"d_loss": [], "g_loss": [], "d_real_accuracy": [], "d_fake_accuracy": []}
    order_rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(images) / bs)
    done = 0
    start = time.perf_counter()
    for epoch in range(1, int(hp["epochs"]) + 1):
        order = order_rng.permutation(len(images))
        sums = np.zeros(4)
        batches = 0
        for i in range(0, len(images), bs):
            idx = order[i:i + bs]
            sums += [float(v) for v in step(tf.constant(images[idx]), tf.constant(labels[idx]))]
            batches += 1
            done += 1
            if max_steps is not None and done >= max_steps:
                break
        for key, value in zip(curves, sums / max(batches, 1)):
            curves[key].append(float(value))
        if progress:
            print(f"cgan epoch {epoch}/{hp['epochs']} ({batches}/{steps_per_epoch} steps): "
                  f"d_loss {curves['d_loss'][-1]:.4f}, g_loss {curves['g_loss'][-1]:.4f}, "
                  f"D right on real {curves['d_real_accuracy'][-1]:.3f}, on fake {curves['d_fake_accuracy'][-1]:.3f}",
                  flush=True)
        if max_steps is not None and done >= max_steps:
            break
    hp["steps"] = done
    hp["epochs_run"] = len(curves["d_loss"])
    hp["architecture"] = describe(hp)
    hp["parameters"] = int(generator.count_params())
    return GanResult(generator, discriminator, hp, curves, round(time.perf_counter() - start, 3))


def label_agreement(generator: keras.Model, classifier: keras.Model, n: int = 1000, seed: int = 0) -> dict:
    """How often ``classifier`` reads ``n`` generated digits (balanced, seeded) as the digit
    asked for: overall and per class (the classifier's recall on them)."""
    from trainers.train import evaluate

    images, labels = gan.generate_balanced(generator, n, seed)
    agreement, per_class, _ = evaluate(classifier, images, labels)
    return {"agreement": agreement, "per_class": [c["recall"] for c in per_class], "samples": int(n)}


def load_generator(registry: ModelRegistry, spec: str = CGAN) -> tuple[keras.Model, VersionInfo]:
    """The generator ``name`` (active version) or ``name:version`` from the registry."""
    name, version = parse_model_spec(spec)
    info = registry.get(name, version if version is not None else "active", kind="generator")
    return keras.models.load_model(registry.fetch_file(info), compile=False), info


def generated_examples(registry: ModelRegistry, n: int, seed: int, spec: str = CGAN
                       ) -> tuple[np.ndarray, np.ndarray, VersionInfo]:
    """``n`` labelled digits (balanced over the classes) from a registered generator."""
    generator, info = load_generator(registry, spec)
    images, labels = gan.generate_balanced(generator, n, seed)
    return images, labels, info


def train_and_register_gan(settings: Settings, registry: ModelRegistry, *, name: str = CGAN,
                           epochs: int | None = None, limit: int | None = None, seed: int = 0,
                           activate: bool = False, progress: bool = True, overrides: dict | None = None,
                           max_steps: int | None = None) -> VersionInfo:
    """Train a conditional GAN on MNIST and register its generator (family ``cgan``).
    When a classifier is active, its reading of 1,000 generated digits is stored
    with the version (``metrics["label_agreement"]``)."""
    data = load_mnist(settings.mnist_dir, mirrors=settings.mnist_mirrors, progress=progress)
    result = train_gan(data, epochs=epochs, limit=limit, seed=seed, overrides=overrides, progress=progress,
                       threads=settings.training_threads(), max_steps=max_steps)
    metrics: dict = {}
    judges = registry.active_versions("classifier")
    if judges:
        judge = next(iter(judges.values()))
        classifier = keras.models.load_model(registry.fetch_file(judge), compile=False)
        metrics = {"label_agreement": label_agreement(result.generator, classifier, 1000, seed),
                   "judge": f"{judge.name}:{judge.version}"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cgan_generator.keras"
        result.generator.save(path)
        return registry.register(
            name, CGAN, path, hyperparameters=result.hyperparameters, dataset_sha256=data.sha256,
            metrics=metrics, curves=result.curves, train_seconds=result.train_seconds, activate=activate)
