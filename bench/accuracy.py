"""Accuracy benchmark: train every family with its DEFAULTS on the full MNIST
training set (minus the validation split), evaluate on the 10k test set, and
write a JSON report with the targets and whether they were met.

    .venv/bin/python bench/accuracy.py [--families softmax mlp ...] [--out bench/results/accuracy.json]

Families are trained one after another; the report is rewritten after each
family (results of families not run this time are kept from an existing report).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402  (bench/machine.py, beside this script)

# target test accuracy (10k test set) and training-time budget per default run
TARGETS = {"softmax": 0.920, "mlp": 0.983, "dbn": 0.985, "cnn": 0.993, "dae": 0.983, "lstm": 0.985}
TIME_BUDGET_SECONDS = 15 * 60


def machine_info() -> dict:
    import tensorflow as tf
    import keras
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "gpu": bool(tf.config.list_physical_devices("GPU")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", help="default: every family (models.families.names())")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "accuracy.json"))
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR") or str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from models.runtime import configure_tensorflow
    configure_tensorflow(min(os.cpu_count() or 2, 8))
    from models import families
    from trainers.mnist import load_mnist
    from trainers.train import train

    args.families = args.families or list(families.names())
    for family in args.families:
        try:
            families.get(family)
        except ValueError as exc:
            parser.error(str(exc))
    data = load_mnist(args.mnist_dir, download=True, progress=not args.no_progress)
    out = Path(args.out)
    report: dict = {"results": {}}
    if out.exists():
        try:
            report = json.loads(out.read_text())
            report.setdefault("results", {})
        except (OSError, ValueError):
            report = {"results": {}}

    for family in args.families:
        spec = families.get(family)
        description = spec.describe(spec.hyperparameters())
        print(f"== {family}: {description}", flush=True)
        load_before = os.getloadavg()
        r = train(family, data, seed=args.seed, progress=not args.no_progress)
        target = TARGETS.get(family)   # a new family has no target until one is set here
        entry = {
            "family": family,
            "test_accuracy": round(r.test_accuracy, 4),
            "test_size": int(len(data.y_test)),
            "validation_accuracy": None if r.metrics["validation_accuracy"] is None
            else round(r.metrics["validation_accuracy"], 4),
            "epochs": r.epochs_run,
            "epochs_max": r.hyperparameters["epochs"],
            "train_seconds": round(r.train_seconds, 1),
            "description": description,
            "hyperparameters": r.hyperparameters,
            "parameters": r.hyperparameters.get("parameters"),
            "target": target,
            "target_met": None if target is None else bool(r.test_accuracy >= target),
            "time_budget_seconds": TIME_BUDGET_SECONDS,
            "within_time_budget": bool(r.train_seconds <= TIME_BUDGET_SECONDS),
            "per_class": r.metrics["per_class"],
            "confusion_matrix": r.confusion_matrix,
            "curves": r.curves,
            "data_sha256": getattr(data, "sha256", None),
            # the machine is shared: train_seconds is wall-clock, so say how busy it was
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in os.getloadavg()]},
        }
        report["results"][family] = entry
        report["machine"] = machine_info()
        report["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        report["targets"] = TARGETS
        report["note"] = ("train_seconds is wall-clock (includes RBM pretraining for the DBN, denoising-autoencoder pretraining for the DAE and the per-epoch "
                          "validation pass) on a 2-core machine that other jobs may share; training runs on the "
                          "training set minus a 5000-image validation split (the last 5000 images); evaluation on "
                          "the 10k test set. Runs are deterministic for a given seed.")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        verdict = ("no target" if target is None
                   else f"target {target:.3f}: {'met' if entry['target_met'] else 'NOT met'}")
        print(f"== {family}: test accuracy {r.test_accuracy:.4f} ({verdict}), {r.epochs_run} epochs, "
              f"{r.train_seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
