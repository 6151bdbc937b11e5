"""RQ job functions: plain values in, handed to what the worker process installed.

The worker process wires its runtime once (`install`); a job delivered to a
process that installed nothing fails loudly instead of wiring itself up.
"""
from __future__ import annotations

from typing import Callable

PredictionHandler = Callable[[list[str]], object]

_handler: PredictionHandler | None = None


def install(handler: PredictionHandler | None) -> None:
    global _handler
    _handler = handler


def run_predictions(prediction_ids: list[str]):
    """Run the predictions admitted together in one job."""
    if _handler is None:
        raise RuntimeError("no prediction handler installed: jobs run inside `digitserve worker`")
    return _handler(list(prediction_ids))


def run_prediction(prediction_id: str):
    """Jobs queued before predictions were batched carry one id."""
    return run_predictions([prediction_id])
