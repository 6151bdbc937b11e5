"""How a training run reports its epochs and learns it should stop, without knowing who listens.

`OnEpoch(entry)` receives one plain dict per finished epoch (`{"epoch": 1, "epochs": 10, "loss": ...,
"accuracy": ..., "val_loss": ..., "val_accuracy": ...}`, plus whatever the caller adds, such as the
generation and individual of a search) and returns True to stop the run: the run then ends with
`TrainingCancelled` instead of a result. Jobs pass a function that stores the entry and reads the
cancel flag; the CLI passes none.
"""
from __future__ import annotations

from typing import Callable

OnEpoch = Callable[[dict], bool]


class TrainingCancelled(Exception):
    """The run was asked to stop (between epochs) and produced nothing."""
