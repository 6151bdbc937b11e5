"""RQ job functions: plain values in, handed to what the worker process installed.

The worker process wires its runtime once (`install`); a job delivered to a
process that installed nothing fails loudly instead of wiring itself up.
"""
from __future__ import annotations

from typing import Callable

PredictionHandler = Callable[[str], str]

_handler: PredictionHandler | None = None


def install(handler: PredictionHandler | None) -> None:
    global _handler
    _handler = handler


def run_prediction(prediction_id: str) -> str:
    if _handler is None:
        raise RuntimeError("no prediction handler installed: jobs run inside `digitserve worker`")
    return _handler(prediction_id)
