"""What every family shares without Keras: the common training
hyper-parameters and the training half of a description."""
from __future__ import annotations

from typing import Any

# Hyper-parameters shared by every family (the training loop reads them).
COMMON: dict[str, Any] = {
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


def describe_training(hp: dict) -> str:
    """The training half of a description: epochs, batch, optimizer and schedule,
    augmentation, early stopping. A family's ``describe`` returns
    ``f"{architecture}; {describe_training(hp)}"``."""
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
    return (f"up to {hp['epochs']} epochs, batch {hp['batch_size']}, {sched}; {aug_s}; "
            f"early stopping on validation accuracy (patience {hp['early_stopping_patience']}, best weights restored)")
