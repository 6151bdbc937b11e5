"""Softmax regression: 784 -> 10."""
from __future__ import annotations

from models.families import Family
from models.families._common import COMMON, describe_training


def build(hp: dict, seed: int | None = None, pretrained=None):
    import keras

    from models.families import _layers

    inputs, x = _layers.flat_inputs(hp, seed)
    return keras.Model(inputs, _layers.probabilities(x), name="softmax")


def describe(hp: dict) -> str:
    return f"multinomial logistic regression: 784 -> 10 softmax; {describe_training(hp)}"


FAMILY = Family(
    name="softmax",
    description="multinomial logistic regression, 784 -> 10 (the baseline)",
    defaults={
        **COMMON,
        "epochs": 15,
        "batch_size": 128,
        "learning_rate": 2e-3,
    },
    build=build,
    describe=describe,
    order=10,
)
