"""Recurrent network: an LSTM reads the image row by row (28 steps of 28
pixels); its last state feeds a softmax layer."""
from __future__ import annotations

from models.families import Family
from models.families._common import COMMON, describe_training


def build(hp: dict, seed: int | None = None, pretrained=None):
    import keras
    from keras import layers

    from models.families import _layers

    inputs = _layers.inputs()
    x = inputs
    if _layers.has_augmentation(hp):
        x = _layers.augment(inputs, hp, seed)
        x = layers.Reshape((28, 28), name="to_rows")(x)
    units = [int(u) for u in hp.get("units", [128])]
    dropout = float(hp.get("dropout") or 0.0)
    for i, n in enumerate(units):
        last = i == len(units) - 1
        x = layers.LSTM(n, return_sequences=not last, seed=None if seed is None else seed + 40 + i,
                        name=f"lstm_{i + 1}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, seed=None if seed is None else seed + 50 + i, name=f"dropout_{i + 1}")(x)
    return keras.Model(inputs, _layers.probabilities(x), name="lstm")


def describe(hp: dict) -> str:
    arch = (f"LSTM over the 28 rows (28 steps x 28 pixels): {' -> '.join(f'LSTM {u}' for u in hp['units'])}, "
            f"last state -> dropout {hp['dropout']:g} -> softmax 10")
    return f"{arch}; {describe_training(hp)}"


FAMILY = Family(
    name="lstm",
    description="recurrent network, an LSTM of 128 units reading the image row by row",
    defaults={
        **COMMON,
        "units": [128],
        "dropout": 0.1,
        "epochs": 12,
        "batch_size": 128,
        "learning_rate": 2e-3,
        "translate": 0.0,             # a shifted row sequence costs the LSTM more epochs than it gives
        "early_stopping_patience": 10,
    },
    build=build,
    describe=describe,
    order=60,
)
