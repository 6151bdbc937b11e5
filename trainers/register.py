"""Train a network on MNIST and register it as a new model version."""
from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from core.db import unit_of_work
from core.preprocess import from_png
from core.repositories import predictions
from core.settings import Settings
from models.registry import CGAN, ModelRegistry, VersionInfo
from trainers.mnist import MnistData, load_mnist


def feedback_examples(sessions: sessionmaker[Session]) -> tuple[np.ndarray, np.ndarray]:
    """Users' corrections: the 28x28 images the network saw, with the label the user gave."""
    with unit_of_work(sessions) as session:
        rows = predictions.labelled_images(session)
    if not rows:
        return np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8)
    return np.stack([from_png(png) for png, _ in rows]), np.array([label for _, label in rows], np.uint8)


def with_feedback(data: MnistData, images: np.ndarray, labels: np.ndarray) -> MnistData:
    """MNIST plus the feedback examples, placed first so a --limit slice and training always see them."""
    if not len(images):
        return data
    digest = hashlib.sha256(data.sha256.encode() + images.tobytes() + labels.tobytes()).hexdigest()
    return dataclasses.replace(data, x_train=np.concatenate([images, data.x_train]),
                               y_train=np.concatenate([labels, data.y_train]), sha256=digest)


def train_and_register(
    settings: Settings,
    registry: ModelRegistry,
    family: str,
    *,
    name: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    activate: bool = False,
    progress: bool = True,
    overrides: dict | None = None,
    use_feedback: bool = False,
    gan_samples: int = 0,
    gan_model: str = CGAN,
) -> VersionInfo:
    """``gan_samples``: that many digits (balanced over the classes, drawn with ``seed``) from
    the generator ``gan_model`` (``name`` or ``name:version``) join the training split."""
    from trainers.train import train  # TensorFlow loads here, not at CLI start-up

    data = load_mnist(settings.mnist_dir, mirrors=settings.mnist_mirrors, progress=progress)
    feedback_count = 0
    if use_feedback:
        images, labels = feedback_examples(registry.sessions)
        data, feedback_count = with_feedback(data, images, labels), len(labels)
    extra, gan_record = None, {}
    if gan_samples:
        from trainers.gan import generated_examples

        images, labels, generator = generated_examples(registry, int(gan_samples), seed, gan_model)
        extra = (images, labels)
        gan_record = {"gan_samples": int(gan_samples), "gan_model": f"{generator.name}:{generator.version}"}
    result = train(
        family, data, epochs=epochs, batch_size=batch_size, limit=limit, seed=seed,
        progress=progress, overrides=overrides, threads=settings.training_threads(), extra=extra,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{family}.keras"
        result.model.save(path)
        return registry.register(
            name or family,
            family,
            path,
            hyperparameters={**result.hyperparameters, "feedback_examples": feedback_count, **gan_record},
            dataset_sha256=data.sha256,
            test_accuracy=result.test_accuracy,
            metrics=result.metrics,
            confusion_matrix=result.confusion_matrix,
            curves=result.curves,
            train_seconds=result.train_seconds,
            activate=activate,
        )
