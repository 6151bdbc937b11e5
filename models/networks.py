"""Network definitions: softmax regression, MLP, CNN and the DBN classifier.

Every network takes float32 images of shape (N, 28, 28) in [0, 1] (white digit on
black, MNIST convention) and returns softmax probabilities of shape (N, 10). Any
reshape / flatten / augmentation lives inside the model. Only plain Keras layers
are used, so ``keras.models.load_model(path)`` needs no custom objects.

Augmentation layers (``RandomTranslation``/``RandomRotation``) are part of the
model and are the identity at inference (``training=False``, the default when a
model is called directly or inside a ``tf.function``).

``build`` returns an *uncompiled* model: ``trainers.train`` compiles it (loss,
optimizer, learning-rate schedule come from the same hyper-parameter dict).

This module imports nothing of the platform.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import keras
import numpy as np
from keras import layers

FAMILIES = ("softmax", "mlp", "cnn", "dbn")

# Hyper-parameters shared by every family (the training loop reads them).
_COMMON: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 128,
    "learning_rate": 1e-3,        # peak learning rate of Adam
    "schedule": "cosine",         # "cosine" (with linear warm-up) or "constant"
    "warmup_epochs": 0.0,
    "weight_decay": 0.0,          # > 0 -> AdamW
    "label_smoothing": 0.0,
    "validation_size": 5000,      # held out of the (limited) training set; max 10 %
    "early_stopping_patience": 5, # on validation accuracy, best weights restored
    "translate": 0.0,             # augmentation: max shift in pixels (0 = off)
    "rotate": 0.0,                # augmentation: max rotation in degrees (0 = off)
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "softmax": {
        **_COMMON,
        "epochs": 15,
        "batch_size": 128,
        "learning_rate": 2e-3,
    },
    "mlp": {
        **_COMMON,
        "hidden": [512, 512],
        "activation": "relu",
        "dropout": 0.2,
        "epochs": 30,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "translate": 2.0,
        "early_stopping_patience": 10,
    },
    "cnn": {
        **_COMMON,
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
    "dbn": {
        **_COMMON,
        # greedy layer-wise RBM pretraining (models.dbn.pretrain_dbn)
        "hidden": [1000, 1000],
        "rbm_epochs": 10,
        "rbm_k": 1,
        "rbm_learning_rate": 0.05,
        "rbm_momentum": 0.9,
        "rbm_weight_decay": 2e-4,
        "rbm_batch_size": 100,
        # supervised fine-tuning of the unrolled stack + softmax layer
        "dropout": 0.2,
        "input_dropout": 0.0,
        "epochs": 30,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "translate": 2.0,
        "early_stopping_patience": 10,
    },
}


def hyperparameters(family: str, overrides: dict | None = None) -> dict[str, Any]:
    """The defaults of ``family`` updated with ``overrides`` (a deep copy)."""
    if family not in DEFAULTS:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    hp = copy.deepcopy(DEFAULTS[family])
    for key, value in (overrides or {}).items():
        hp[key] = copy.deepcopy(value)
    return hp


def _inputs(name: str = "image") -> keras.KerasTensor:
    return keras.Input(shape=(28, 28), dtype="float32", name=name)


def _augment(x, hp: dict, seed: int | None):
    """Reshape to (28, 28, 1) and apply the training-time augmentation of ``hp``."""
    x = layers.Reshape((28, 28, 1), name="to_channels")(x)
    translate = float(hp.get("translate") or 0.0)
    rotate = float(hp.get("rotate") or 0.0)
    if rotate > 0:
        x = layers.RandomRotation(rotate / 360.0, fill_mode="constant", fill_value=0.0,
                                  seed=seed, name="augment_rotate")(x)
    if translate > 0:
        f = translate / 28.0
        x = layers.RandomTranslation(f, f, fill_mode="constant", fill_value=0.0,
                                     seed=None if seed is None else seed + 1,
                                     name="augment_translate")(x)
    return x


def _has_augmentation(hp: dict) -> bool:
    return bool(hp.get("translate")) or bool(hp.get("rotate"))


def build_softmax(hp: dict, seed: int | None = None) -> keras.Model:
    inputs = _inputs()
    x = _augment(inputs, hp, seed) if _has_augmentation(hp) else inputs
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="softmax")


def build_mlp(hp: dict, seed: int | None = None) -> keras.Model:
    inputs = _inputs()
    x = _augment(inputs, hp, seed) if _has_augmentation(hp) else inputs
    x = layers.Flatten(name="flatten")(x)
    dropout = float(hp.get("dropout") or 0.0)
    for i, units in enumerate(hp.get("hidden", [512, 512])):
        x = layers.Dense(int(units), activation=hp.get("activation", "relu"), name=f"hidden_{i + 1}")(x)
        if dropout > 0:
            x = layers.Dropout(dropout, seed=None if seed is None else seed + 10 + i, name=f"dropout_{i + 1}")(x)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_cnn(hp: dict, seed: int | None = None) -> keras.Model:
    policy = "mixed_bfloat16" if hp.get("bfloat16") else None
    inputs = _inputs()
    x = _augment(inputs, hp, seed)
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
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_dbn_classifier(weights: Sequence[tuple[np.ndarray, np.ndarray]], hp: dict | None = None,
                         seed: int | None = None) -> keras.Model:
    """The unrolled DBN: sigmoid Dense layers initialised with the pretrained RBM
    weights ``[(W, b_hidden), ...]`` (W of shape (n_visible, n_hidden)), plus a
    softmax output layer, ready for supervised fine-tuning.

    The RBM parameters are copied with ``set_weights`` (not baked into an
    initializer), so the saved model holds only plain Keras layers.
    """
    hp = hyperparameters("dbn", hp)
    if not weights:
        raise ValueError("build_dbn_classifier needs at least one pretrained (W, b_hidden) pair")
    inputs = _inputs()
    x = _augment(inputs, hp, seed) if _has_augmentation(hp) else inputs
    x = layers.Flatten(name="flatten")(x)
    if float(hp.get("input_dropout") or 0.0) > 0:
        x = layers.Dropout(float(hp["input_dropout"]), seed=None if seed is None else seed + 30,
                           name="input_dropout")(x)
    dropout = float(hp.get("dropout") or 0.0)
    dense_layers = []
    n_in = 784
    for i, (w, b) in enumerate(weights):
        w = np.asarray(w, dtype=np.float32)
        b = np.asarray(b, dtype=np.float32)
        if w.shape[0] != n_in or b.shape != (w.shape[1],):
            raise ValueError(f"RBM {i + 1}: W {w.shape} / b {b.shape} do not follow a {n_in}-unit layer")
        layer = layers.Dense(w.shape[1], activation="sigmoid", name=f"rbm_{i + 1}")
        x = layer(x)
        dense_layers.append((layer, w, b))
        if dropout > 0:
            x = layers.Dropout(dropout, seed=None if seed is None else seed + 31 + i, name=f"dropout_{i + 1}")(x)
        n_in = w.shape[1]
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="dbn")
    for layer, w, b in dense_layers:
        layer.set_weights([w, b])
    return model


def build(family: str, hp: dict | None = None, seed: int | None = None) -> keras.Model:
    """An uncompiled model of ``family`` ("softmax", "mlp", "cnn") with ``hp``
    (missing keys come from ``DEFAULTS``). A "dbn" needs pretrained weights:
    use ``build_dbn_classifier`` (``models.dbn.pretrain_dbn`` makes them)."""
    hp = hyperparameters(family, hp)
    if family == "softmax":
        return build_softmax(hp, seed)
    if family == "mlp":
        return build_mlp(hp, seed)
    if family == "cnn":
        return build_cnn(hp, seed)
    raise ValueError("a 'dbn' is built from pretrained RBMs: use build_dbn_classifier(weights, hp)")


def describe(family: str, hp: dict | None = None) -> str:
    """A plain-language description of a configuration (for reports)."""
    hp = hyperparameters(family, hp)
    aug = []
    if hp.get("translate"):
        aug.append(f"random translation ±{hp['translate']:g} px")
    if hp.get("rotate"):
        aug.append(f"random rotation ±{hp['rotate']:g}°")
    aug_s = ", ".join(aug) if aug else "no augmentation"
    opt = "AdamW" if hp.get("weight_decay") else "Adam"
    sched = (f"{opt} lr {hp['learning_rate']:g}, cosine decay"
             + (f" after {hp['warmup_epochs']:g} warm-up epoch(s)" if hp.get("warmup_epochs") else "")
             if hp.get("schedule") == "cosine" else f"{opt} lr {hp['learning_rate']:g}, constant")
    if hp.get("label_smoothing"):
        sched += f", label smoothing {hp['label_smoothing']:g}"
    train = (f"up to {hp['epochs']} epochs, batch {hp['batch_size']}, {sched}; {aug_s}; "
             f"early stopping on validation accuracy (patience {hp['early_stopping_patience']}, best weights restored)")
    if family == "softmax":
        arch = "multinomial logistic regression: 784 -> 10 softmax"
    elif family == "mlp":
        arch = f"MLP 784-{'-'.join(str(h) for h in hp['hidden'])}-10, {hp['activation']}, dropout {hp['dropout']:g}"
    elif family == "cnn":
        convs = ", ".join(f"{hp['convs_per_block']}x conv{hp['kernel_size']}x{hp['kernel_size']}({f})" for f in hp["filters"])
        arch = (f"CNN: [{convs}] each block {'with batch norm, ' if hp['batch_norm'] else ''}2x2 max-pool, "
                f"dense {hp['dense']}, dropout {hp['dropout']:g}, softmax 10"
                + (", mixed bfloat16 compute" if hp.get("bfloat16") else ""))
    else:
        arch = (f"DBN 784-{'-'.join(str(h) for h in hp['hidden'])}: greedy RBM pretraining "
                f"(Bernoulli, CD-{hp['rbm_k']}, {hp['rbm_epochs']} epochs/layer, lr {hp['rbm_learning_rate']:g}, "
                f"momentum {hp['rbm_momentum']:g}, weight decay {hp['rbm_weight_decay']:g}), then sigmoid stack + "
                f"softmax 10 fine-tuned with dropout {hp['dropout']:g}")
    return f"{arch}; {train}"
