"""RQ job functions: plain values in, handed to what the worker process installed.

The worker process wires its runtime once (`install`); a job delivered to a
process that installed nothing fails loudly instead of wiring itself up.
"""
from __future__ import annotations

from typing import Callable

PredictionHandler = Callable[[list[str]], object]
TrainingHandler = Callable[[str], object]

_handler: PredictionHandler | None = None
_training: TrainingHandler | None = None


def install(handler: PredictionHandler | None) -> None:
    global _handler
    _handler = handler


def install_training(handler: TrainingHandler | None) -> None:
    global _training
    _training = handler


def run_predictions(prediction_ids: list[str]):
    """Run the predictions admitted together in one job."""
    if _handler is None:
        raise RuntimeError("no prediction handler installed: jobs run inside `digitserve worker`")
    return _handler(list(prediction_ids))


def run_prediction(prediction_id: str):
    """Jobs queued before predictions were batched carry one id."""
    return run_predictions([prediction_id])


def run_training(job_id: str):
    """Run one training job (train, retrain or tune) in this process."""
    if _training is None:
        raise RuntimeError("no training handler installed: jobs run inside `digitserve worker --queue training`")
    return _training(job_id)
