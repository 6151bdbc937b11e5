"""Offline training loop and evaluation for every network family.

``train(family, data)`` slices the training set (``limit``), holds out a
validation split from its end, builds the network of the family record
(``models.families``; a family's ``pretrain`` step, e.g. the DBN's greedy RBM
pretraining, runs first and its curves join the result), fits it with Adam
(cosine schedule, early stopping on validation accuracy with the best epoch's weights restored), then
evaluates on the test set. Runs are deterministic for a given seed
(``keras.utils.set_random_seed`` + TensorFlow op determinism).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import families
from models.runtime import configure_tensorflow
from core.preprocess import scale
from trainers.progress import OnEpoch, TrainingCancelled


@dataclass
class TrainResult:
    family: str
    model: keras.Model
    hyperparameters: dict   # full effective hp incl. epochs, batch_size, seed, limit, validation size, architecture
    test_accuracy: float | None  # None when the run was told not to look at the test set (a search)
    metrics: dict           # {"accuracy", "per_class": [{"digit", "precision", "recall", "support"}], "validation_accuracy"}
    confusion_matrix: list  # 10x10 ints, rows = true label, columns = predicted
    curves: dict            # per epoch "loss", "accuracy", "val_loss", "val_accuracy" (+ the pretrain curves, dbn "rbm_reconstruction_error")
    train_seconds: float
    epochs_run: int


def _set_determinism(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # pragma: no cover - very old TF
        pass


def validation_size(n: int, requested: int = 5000) -> int:
    """The held-out validation count for ``n`` training images: ``requested``
    capped at 10 % of n, at least 1 (0 when n < 2)."""
    if n < 2:
        return 0
    return int(max(1, min(int(requested), n // 10)))


def _predict(model: keras.Model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    fn = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    out = [fn(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 10), np.float32)


def evaluate(model: keras.Model, x_test_uint8: np.ndarray, y_test: np.ndarray,
             batch_size: int = 1000) -> tuple[float, list[dict], list[list[int]]]:
    """Accuracy, per-class precision/recall/support and the 10x10 confusion
    matrix (rows = true label) of ``model`` on uint8 test images."""
    x = scale(x_test_uint8)
    y = np.asarray(y_test).astype(np.int64)
    pred = np.argmax(_predict(model, x, batch_size), axis=1)
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    accuracy = float(np.mean(pred == y)) if len(y) else 0.0
    per_class = []
    for d in range(10):
        tp = int(confusion[d, d])
        predicted = int(confusion[:, d].sum())
        support = int(confusion[d, :].sum())
        per_class.append({
            "digit": d,
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "support": support,
        })
    return accuracy, per_class, confusion.tolist()


def _optimizer(hp: dict, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    lr = float(hp["learning_rate"])
    total = max(1, steps_per_epoch * epochs)
    if hp.get("schedule", "cosine") == "cosine":
        warmup = min(int(round(float(hp.get("warmup_epochs") or 0) * steps_per_epoch)), total - 1)
        if warmup > 0:
            schedule = keras.optimizers.schedules.CosineDecay(
                lr / 10.0, decay_steps=total - warmup, alpha=0.0, warmup_target=lr, warmup_steps=warmup)
        else:
            schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=0.0)
    else:
        schedule = lr
    if float(hp.get("weight_decay") or 0) > 0:
        return keras.optimizers.AdamW(schedule, weight_decay=float(hp["weight_decay"]))
    return keras.optimizers.Adam(schedule)


class _Tqdm(keras.callbacks.Callback):
    """A one-line-per-epoch tqdm progress bar over batches."""

    def __init__(self, family: str, epochs: int, steps: int):
        super().__init__()
        self.family, self.epochs, self.steps = family, epochs, steps
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm import tqdm
        self.bar = tqdm(total=self.steps, desc=f"{self.family} epoch {epoch + 1}/{self.epochs}",
                        unit="batch", leave=True, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            if logs and batch % 20 == 0:
                self.bar.set_postfix(loss=f"{float(logs.get('loss', 0)):.4f}", acc=f"{float(logs.get('accuracy', 0)):.4f}")

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            logs = logs or {}
            self.bar.set_postfix({k: f"{float(v):.4f}" for k, v in logs.items()
                                  if k in ("loss", "accuracy", "val_loss", "val_accuracy")})
            self.bar.close()
            self.bar = None


class BestWeights(keras.callbacks.Callback):
    """Early stopping on a validation metric with the best weights restored at
    the end. Unlike ``keras.callbacks.EarlyStopping`` a tie counts as an
    improvement, so among equally accurate epochs the later (better annealed)
    weights are kept; 5000 validation images tie often near the top."""

    def __init__(self, monitor: str = "val_accuracy", mode: str = "max", patience: int = 5):
        super().__init__()
        self.monitor, self.mode, self.patience = monitor, mode, int(patience)
        self.best: float | None = None
        self.best_epoch = -1
        self.best_weights = None
        self.wait = 0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        better = self.best is None or (value >= self.best if self.mode == "max" else value <= self.best)
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = self.model.get_weights()
        else:
            self.wait += 1
            if self.patience > 0 and self.wait >= self.patience:
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class EpochReport(keras.callbacks.Callback):
    """Hands each finished epoch to an `OnEpoch` function; a True answer stops training."""

    def __init__(self, on_epoch: OnEpoch, epochs: int):
        super().__init__()
        self.on_epoch, self.epochs = on_epoch, epochs
        self.stopped_after: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1, "epochs": self.epochs}
        entry.update({k: round(float(v), 6) for k, v in (logs or {}).items()
                      if k in ("loss", "accuracy", "val_loss", "val_accuracy")})
        if self.on_epoch(entry):
            self.stopped_after = epoch + 1
            self.model.stop_training = True


def _print_line(line: str) -> None:
    print(line, flush=True)


def _json_hp(hp: dict) -> dict:
    out = {}
    for k, v in hp.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


def train(family: str, data: Any, *, epochs: int | None = None, batch_size: int | None = None,
          limit: int | None = None, seed: int = 0, progress: bool = True,
          overrides: dict | None = None, threads: int | None = None, on_epoch: OnEpoch | None = None,
          evaluate_test: bool = True, extra: tuple[np.ndarray, np.ndarray] | None = None) -> TrainResult:
    """Train ``family`` on ``data`` (an ``MnistData``: x_train/y_train/x_test/y_test
    uint8 arrays) and evaluate it on the test set. ``limit`` trains on the first
    ``limit`` training images; ``overrides`` update the family's ``defaults``.
    ``on_epoch`` hears of every epoch and may stop the run (``TrainingCancelled``);
    ``evaluate_test=False`` leaves the test set alone (a search selects on validation only).
    ``extra``: more labelled uint8 images (e.g. GAN-made digits) joining the training
    split only, after the validation split is held out: validation and test stay MNIST."""
    spec = families.get(family)   # ValueError naming the known families
    configure_tensorflow(threads or min(os.cpu_count() or 2, 8))
    hp = spec.hyperparameters(overrides)
    if epochs is not None:
        hp["epochs"] = int(epochs)
    if batch_size is not None:
        hp["batch_size"] = int(batch_size)
    epochs_n = int(hp["epochs"])
    bs = int(hp["batch_size"])

    x_all = np.asarray(data.x_train)
    y_all = np.asarray(data.y_train)
    if limit is not None:
        x_all, y_all = x_all[:int(limit)], y_all[:int(limit)]
    n = len(x_all)
    if n < 2:
        raise ValueError(f"need at least 2 training images, got {n}")
    n_val = validation_size(n, int(hp.get("validation_size", 5000)))
    x_train, y_train = scale(x_all[:n - n_val]), y_all[:n - n_val].astype(np.int64)
    n_extra = 0
    if extra is not None and len(extra[0]):
        x_extra, y_extra = np.asarray(extra[0]), np.asarray(extra[1]).astype(np.int64)
        if x_extra.shape[1:] != (28, 28) or len(x_extra) != len(y_extra) or not np.isin(y_extra, range(10)).all():
            raise ValueError("extra training examples must be (N, 28, 28) images with N labels 0-9")
        x_train, y_train = np.concatenate([x_train, scale(x_extra)]), np.concatenate([y_train, y_extra])
        n_extra = len(y_extra)
    x_val, y_val = scale(x_all[n - n_val:]), y_all[n - n_val:].astype(np.int64)
    y_train_1h = keras.utils.to_categorical(y_train, 10).astype(np.float32)
    y_val_1h = keras.utils.to_categorical(y_val, 10).astype(np.float32)

    hp.update({"seed": int(seed), "limit": None if limit is None else int(limit),
               "train_size": int(len(x_train)), "validation_size": int(n_val)})
    if n_extra:
        hp["extra_train_size"] = n_extra
        hp["train_class_counts"] = np.bincount(y_train, minlength=10).tolist()

    _set_determinism(seed)
    curves: dict[str, Any] = {}
    start = time.perf_counter()
    pretrained = None
    if spec.pretrain is not None:
        t0 = time.perf_counter()
        pretrained, pretrain_curves = spec.pretrain(x_train.reshape(len(x_train), -1), hp, seed,
                                                    _print_line if progress else None)
        hp["pretrain_seconds"] = round(time.perf_counter() - t0, 2)
        curves.update(pretrain_curves)
        _set_determinism(seed)
    model = spec.build(hp, seed, pretrained)
    hp["architecture"] = spec.describe(hp)
    hp["parameters"] = int(model.count_params())

    steps = math.ceil(len(x_train) / bs)
    model.compile(
        optimizer=_optimizer(hp, steps, epochs_n),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=float(hp.get("label_smoothing") or 0.0)),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    callbacks: list[keras.callbacks.Callback] = []
    validation = (x_val, y_val_1h) if n_val > 0 else None
    if validation is not None:
        # patience 0 = no early stop, but the best epoch's weights are still restored
        callbacks.append(BestWeights("val_accuracy", "max", int(hp.get("early_stopping_patience") or 0)))
    if progress:
        callbacks.append(_Tqdm(family, epochs_n, steps))
    report = EpochReport(on_epoch, epochs_n) if on_epoch is not None else None
    if report is not None:
        callbacks.append(report)
    history = model.fit(x_train, y_train_1h, batch_size=bs, epochs=epochs_n, validation_data=validation,
                        shuffle=True, callbacks=callbacks, verbose=0)
    train_seconds = time.perf_counter() - start
    if report is not None and report.stopped_after is not None:
        raise TrainingCancelled(f"{family}: stopped after epoch {report.stopped_after} of {epochs_n}")

    h = history.history
    epochs_run = len(h.get("loss", []))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        curves[key] = [float(v) for v in h.get(key, [])]
    best_val = max(curves["val_accuracy"]) if curves["val_accuracy"] else None

    hp["epochs_run"] = epochs_run
    if not evaluate_test:
        return TrainResult(
            family=family, model=model, hyperparameters=_json_hp(hp), test_accuracy=None,
            metrics={"validation_accuracy": best_val}, confusion_matrix=[], curves=curves,
            train_seconds=round(train_seconds, 3), epochs_run=epochs_run)
    accuracy, per_class, confusion = evaluate(model, data.x_test, data.y_test)
    return TrainResult(
        family=family, model=model, hyperparameters=_json_hp(hp), test_accuracy=accuracy,
        metrics={"accuracy": accuracy, "per_class": per_class, "validation_accuracy": best_val,
                 "test_size": int(len(data.y_test))},
        confusion_matrix=confusion, curves=curves, train_seconds=round(train_seconds, 3), epochs_run=epochs_run)
