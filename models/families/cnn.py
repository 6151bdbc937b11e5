"""Convolutional network: blocks of k x k convolutions, each followed by 2x2
max-pooling, then an optional dense layer and the softmax output."""
from __future__ import annotations

from models.families import Family
from models.families._common import COMMON, describe_training


def build(hp: dict, seed: int | None = None, pretrained=None):
    import keras
    from keras import layers

    from models.families import _layers

    policy = "mixed_bfloat16" if hp.get("bfloat16") else None
    inputs = _layers.inputs()
    x = _layers.augment(inputs, hp, seed)
    k = int(hp.get("kernel_size", 3))
    for b, filters in enumerate(hp.get("filters", [32, 64])):
        for c in range(int(hp.get("convs_per_block", 1))):
            name = f"conv{b + 1}_{c + 1}"
            if hp.get("batch_norm", True):
                x = layers.Conv2D(int(filters), k, padding="same", use_bias=False, dtype=policy, name=name)(x)
                x = layers.BatchNormalization(dtype=policy, name=name + "_bn")(x)
                x = layers.Activation("relu", dtype=policy, name=name + "_relu")(x)
            else:
                x = layers.Conv2D(int(filters), k, padding="same", activation="relu", dtype=policy, name=name)(x)
        x = layers.MaxPooling2D(2, dtype=policy, name=f"pool{b + 1}")(x)
    x = layers.Flatten(dtype=policy, name="flatten")(x)
    dropout = float(hp.get("dropout") or 0.0)
    if hp.get("dense"):
        if dropout > 0:
            x = layers.Dropout(dropout, seed=None if seed is None else seed + 20, dtype=policy, name="dropout_1")(x)
        x = layers.Dense(int(hp["dense"]), activation="relu", dtype=policy, name="dense")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, seed=None if seed is None else seed + 21, dtype=policy, name="dropout_2")(x)
    # the output layer always computes and returns float32
    return keras.Model(inputs, _layers.probabilities(x, dtype="float32"), name="cnn")


def describe(hp: dict) -> str:
    convs = ", ".join(f"{hp['convs_per_block']}x conv{hp['kernel_size']}x{hp['kernel_size']}({f})" for f in hp["filters"])
    arch = (f"CNN: [{convs}] each block {'with batch norm, ' if hp['batch_norm'] else ''}2x2 max-pool, "
            f"dense {hp['dense']}, dropout {hp['dropout']:g}, softmax 10"
            + (", mixed bfloat16 compute" if hp.get("bfloat16") else ""))
    return f"{arch}; {describe_training(hp)}"


FAMILY = Family(
    name="cnn",
    description="convolutional network, two conv5x5 + max-pool blocks, dense 256 (most accurate, slowest)",
    defaults={
        **COMMON,
        # blocks of k x k convolutions, each block followed by 2x2 max-pooling
        "filters": [32, 64],
        "convs_per_block": 1,
        "kernel_size": 5,
        "batch_norm": False,      # BN doubles the CPU cost per epoch here
        "dense": 256,
        "dropout": 0.3,
        "epochs": 25,
        "batch_size": 128,
        "learning_rate": 2e-3,
        "warmup_epochs": 1.0,
        "label_smoothing": 0.1,
        "translate": 2.0,
        "rotate": 0.0,
        "bfloat16": False,        # mixed_bfloat16 compute: measured no faster on this CPU
        "early_stopping_patience": 10,
    },
    build=build,
    describe=describe,
    order=30,
)
