"""Gated retraining: a candidate of the active version's family and hyper-parameters, trained on MNIST
plus the accepted corrections, replaces the active version only when the evidence says it is better.

The rule (`decide`), with both versions evaluated here on the same data:

- MNIST: the candidate's accuracy on the 10k test set is at least the active version's minus the
  tolerance (RETRAIN_MNIST_TOLERANCE, 0.002 = 0.2 percentage points), and
- feedback: on the held-out share of the accepted corrections (RETRAIN_HOLDOUT_SHARE, split with a
  fixed seed and never trained on) the candidate is strictly more accurate. A tie is not better.
- No held-out corrections (fewer than two accepted): nothing says the candidate serves users better,
  so it is registered but never activated automatically.

The candidate is always registered; the decision and both sets of figures are stored with it (`gate`).
"""
from __future__ import annotations

import numpy as np

from core.settings import Settings
from models import families
from models.registry import ModelRegistry, VersionInfo
from trainers.mnist import load_mnist
from trainers.progress import OnEpoch
from trainers.register import FeedbackSet, accepted_feedback, register_result, with_feedback

# what a trained version's hyper-parameters record about its run rather than its network and training
RUN_KEYS = ("seed", "limit", "train_size", "validation_size", "architecture", "parameters", "epochs_run",
            "pretrain_seconds", "feedback_examples")


def split_feedback(accepted: FeedbackSet, share: float, seed: int) -> tuple[FeedbackSet, FeedbackSet]:
    """(train, held out): a seeded shuffle, then `round(share * n)` held out (at least one when n >= 2,
    none when n < 2: one correction is better trained on than judged by)."""
    n = len(accepted)
    if n < 2:
        return accepted, accepted.take([])
    held = min(n - 1, max(1, int(round(share * n))))
    order = np.random.default_rng(seed).permutation(n)
    return accepted.take(np.sort(order[held:])), accepted.take(np.sort(order[:held]))


def decide(candidate: dict, active: dict, tolerance: float) -> dict:
    """Whether the candidate replaces the active version. `candidate` and `active` carry `mnist_accuracy`
    and `feedback_accuracy` (None without held-out corrections)."""
    mnist_ok = candidate["mnist_accuracy"] >= active["mnist_accuracy"] - tolerance
    held_out = candidate["feedback_accuracy"] is not None and active["feedback_accuracy"] is not None
    feedback_better = held_out and candidate["feedback_accuracy"] > active["feedback_accuracy"]
    activated = bool(mnist_ok and feedback_better)
    if not held_out:
        reason = "no held-out feedback: registered, never activated automatically"
    elif activated:
        reason = "not worse on MNIST (within the tolerance) and better on the held-out feedback"
    elif not mnist_ok and not feedback_better:
        reason = "worse on MNIST beyond the tolerance and not better on the held-out feedback"
    elif not mnist_ok:
        reason = "worse on the MNIST test set than the tolerance allows"
    else:
        reason = "not better on the held-out feedback (a tie is not better)"
    return {"activated": activated, "reason": reason, "mnist_not_worse": bool(mnist_ok),
            "feedback_better": bool(feedback_better), "tolerance": tolerance,
            "rule": "activate when candidate MNIST accuracy >= active - tolerance AND candidate held-out "
                    "feedback accuracy > active (strictly); never without held-out feedback"}


def retrain(settings: Settings, registry: ModelRegistry, name: str, *, epochs: int | None = None,
            limit: int | None = None, seed: int = 0, tolerance: float | None = None,
            holdout_share: float | None = None, progress: bool = True, on_epoch: OnEpoch | None = None) -> VersionInfo:
    """Train, evaluate and register a candidate for `name`'s active version; activate it if the gate says so."""
    import keras

    from trainers.train import evaluate, train

    tolerance = settings.retrain_mnist_tolerance if tolerance is None else float(tolerance)
    share = settings.retrain_holdout_share if holdout_share is None else float(holdout_share)
    active = registry.get(name)  # ModelNotFound without an active version
    family = families.get(active.family)
    overrides = {k: v for k, v in active.hyperparameters.items() if k in family.defaults and k not in RUN_KEYS}

    data = load_mnist(settings.mnist_dir, mirrors=settings.mnist_mirrors, progress=progress)
    accepted = accepted_feedback(registry.sessions)
    fb_train, fb_held = split_feedback(accepted, share, seed)
    data = with_feedback(data, fb_train.images, fb_train.labels)
    result = train(active.family, data, epochs=epochs, limit=limit, seed=seed, progress=progress,
                   overrides=overrides, threads=settings.training_threads(), on_epoch=on_epoch)

    active_model = keras.models.load_model(registry.fetch_file(active), compile=False)
    active_mnist, _, _ = evaluate(active_model, data.x_test, data.y_test)
    held = len(fb_held) > 0
    candidate_fig = {"mnist_accuracy": result.test_accuracy,
                     "feedback_accuracy": evaluate(result.model, fb_held.images, fb_held.labels)[0] if held else None}
    active_fig = {"name": active.name, "version": active.version, "mnist_accuracy": active_mnist,
                  "feedback_accuracy": evaluate(active_model, fb_held.images, fb_held.labels)[0] if held else None}
    gate = {**decide(candidate_fig, active_fig, tolerance), "candidate": candidate_fig, "active": active_fig,
            "mnist_test_size": int(len(data.y_test)),
            "feedback": {"accepted": len(accepted), "trained_on": len(fb_train), "held_out": len(fb_held),
                         "holdout_share": share, "seed": seed, "held_out_refs": list(fb_held.refs)}}
    return register_result(registry, name, result, data.sha256, extra_hp={"feedback_examples": len(fb_train)},
                           activate=gate["activated"], gate=gate)
