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
from core.repositories import feedback
from core.settings import Settings
from models.registry import CGAN, ModelRegistry, VersionInfo
from trainers.mnist import MnistData, load_mnist
from trainers.progress import OnEpoch


@dataclasses.dataclass(frozen=True)
class FeedbackSet:
    """Accepted corrections as training samples: 28x28 uint8 images, labels, and where each came from."""

    images: np.ndarray
    labels: np.ndarray
    refs: tuple[str, ...]  # "<prediction id>:<image index>"

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, positions) -> "FeedbackSet":
        positions = np.asarray(positions, dtype=np.int64)
        return FeedbackSet(self.images[positions], self.labels[positions], tuple(self.refs[i] for i in positions))


def accepted_feedback(sessions: sessionmaker[Session]) -> FeedbackSet:
    """The corrections an administrator accepted, oldest first: the image the network saw, the user's label."""
    with unit_of_work(sessions) as session:
        rows = feedback.samples(session, feedback.ACCEPTED)
    if not rows:
        return FeedbackSet(np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8), ())
    return FeedbackSet(np.stack([from_png(row.png) for row in rows]), np.array([row.label for row in rows], np.uint8),
                       tuple(f"{row.prediction_id}:{row.index}" for row in rows))


def feedback_examples(sessions: sessionmaker[Session]) -> tuple[np.ndarray, np.ndarray]:
    """The accepted corrections as (images, labels)."""
    accepted = accepted_feedback(sessions)
    return accepted.images, accepted.labels


def with_feedback(data: MnistData, images: np.ndarray, labels: np.ndarray) -> MnistData:
    """MNIST plus the feedback examples, placed first so a --limit slice and training always see them."""
    if not len(images):
        return data
    digest = hashlib.sha256(data.sha256.encode() + images.tobytes() + labels.tobytes()).hexdigest()
    return dataclasses.replace(data, x_train=np.concatenate([images, data.x_train]),
                               y_train=np.concatenate([labels, data.y_train]), sha256=digest)


def register_result(registry: ModelRegistry, name: str, result, dataset_sha256: str, *, extra_hp: dict | None = None,
                    activate: bool = False, gate: dict | None = None, search: dict | None = None) -> VersionInfo:
    """Save a `TrainResult`'s network and register it with its figures as the next version of `name`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{result.family}.keras"
        result.model.save(path)
        return registry.register(
            name,
            result.family,
            path,
            hyperparameters={**result.hyperparameters, **(extra_hp or {})},
            dataset_sha256=dataset_sha256,
            test_accuracy=result.test_accuracy,
            metrics=result.metrics,
            confusion_matrix=result.confusion_matrix,
            curves=result.curves,
            train_seconds=result.train_seconds,
            activate=activate,
            gate=gate,
            search=search,
        )


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
    on_epoch: OnEpoch | None = None,
    search: dict | None = None,
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
        progress=progress, overrides=overrides, threads=settings.training_threads(), on_epoch=on_epoch,
        extra=extra,
    )
    return register_result(registry, name or family, result, data.sha256,
                           extra_hp={"feedback_examples": feedback_count, **gan_record}, activate=activate,
                           search=search)
