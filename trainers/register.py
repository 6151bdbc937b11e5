"""Train a network on MNIST and register it as a new model version."""
from __future__ import annotations

import tempfile
from pathlib import Path

from models.registry import ModelRegistry, VersionInfo
from server.settings import Settings
from trainers.mnist import load_mnist


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
) -> VersionInfo:
    from trainers.train import train  # TensorFlow loads here, not at CLI start-up

    data = load_mnist(settings.mnist_dir, mirrors=settings.mnist_mirrors, progress=progress)
    result = train(
        family, data, epochs=epochs, batch_size=batch_size, limit=limit, seed=seed,
        progress=progress, overrides=overrides,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{family}.keras"
        result.model.save(path)
        return registry.register(
            name or family,
            family,
            path,
            hyperparameters=result.hyperparameters,
            dataset_sha256=data.sha256,
            test_accuracy=result.test_accuracy,
            metrics=result.metrics,
            confusion_matrix=result.confusion_matrix,
            curves=result.curves,
            train_seconds=result.train_seconds,
            activate=activate,
        )
