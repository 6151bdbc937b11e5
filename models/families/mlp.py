"""Multi-layer perceptron: 784 -> hidden Dense layers (+ dropout) -> 10."""
from __future__ import annotations

from models.families import Family
from models.families._common import COMMON, describe_training


def build(hp: dict, seed: int | None = None, pretrained=None):
    import keras
    from keras import layers

    from models.families import _layers

    inputs, x = _layers.flat_inputs(hp, seed)
    dropout = float(hp.get("dropout") or 0.0)
    for i, units in enumerate(hp.get("hidden", [512, 512])):
        x = layers.Dense(int(units), activation=hp.get("activation", "relu"), name=f"hidden_{i + 1}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, seed=None if seed is None else seed + 10 + i, name=f"dropout_{i + 1}")(x)
    return keras.Model(inputs, _layers.probabilities(x), name="mlp")


def describe(hp: dict) -> str:
    arch = f"MLP 784-{'-'.join(str(h) for h in hp['hidden'])}-10, {hp['activation']}, dropout {hp['dropout']:g}"
    return f"{arch}; {describe_training(hp)}"


FAMILY = Family(
    name="mlp",
    description="multi-layer perceptron, 784-512-512-10 ReLU with dropout",
    defaults={
        **COMMON,
        "hidden": [512, 512],
        "activation": "relu",
        "dropout": 0.2,
        "epochs": 30,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "translate": 2.0,
        "early_stopping_patience": 10,
    },
    build=build,
    describe=describe,
    order=20,
)
