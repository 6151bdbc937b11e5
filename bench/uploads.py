"""Real-world uploads benchmark: per-kind accuracy of core.preprocess + a CNN, and preprocessing speed.

    .venv/bin/python bench/uploads.py [--count 100] [--epochs 5] [--out bench/results/uploads.json]

Uploads come from tests/uploads.py (phone photos, ruled paper, clutter, small
rotated digits, coloured ink, thin/thick strokes, and clean canvas-like ones),
generated from MNIST test digits with seeds from ``uploads.BENCH_SEED`` up -
never the seeds looked at while developing. Each goes through
``core.preprocess.preprocess_image`` exactly as an upload would, then through a
CNN trained here with ``trainers.train.train("cnn", ...)``. A refused upload
(an ImageError, e.g. 422 blank_image) counts as wrong.

Timing: median milliseconds of ``preprocess_image`` for a 12-megapixel
(4000x3000) phone-style JPEG and for a 28x28 PNG.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests", ROOT / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import numpy as np  # noqa: E402

import uploads  # noqa: E402  (tests/uploads.py: the generator)
from core.preprocess import ImageError, preprocess_with_quality, scale, to_png  # noqa: E402
from machine import cpu_model  # noqa: E402

GOAL_OVERALL = 0.97
GOAL_PER_KIND = 0.93
GOAL_12MP_MS = 150.0


def preprocess_kind(kind: str, count: int, seed: int, mnist_dir: str):
    """Preprocess ``count`` uploads of ``kind``: arrays, labels, qualities, refusals, ms per image."""
    images, labels, qualities, refused, millis = [], [], [], [], []
    for index, (data, label, _) in enumerate(uploads.uploads(kind, count, seed, mnist_dir)):
        start = time.perf_counter()
        try:
            out, quality = preprocess_with_quality(data)
        except ImageError as err:
            out, quality = np.zeros((28, 28), np.uint8), 0.0
            refused.append({"index": index, "label": label, "code": err.code})
        millis.append(1000.0 * (time.perf_counter() - start))
        images.append(out)
        labels.append(label)
        qualities.append(quality)
    return np.stack(images), np.array(labels), np.array(qualities), refused, millis


def classify(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Digits predicted for (n, 28, 28) uint8 images, calling the model in batches."""
    x = scale(images)[..., None]
    out = [np.argmax(np.asarray(model(x[i : i + batch], training=False)), axis=1) for i in range(0, len(x), batch)]
    return np.concatenate(out)


def median_ms(data: bytes, repeat: int) -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds of one preprocessing (other load on the
    machine inflates the first; the second is what the preprocessing itself costs)."""
    preprocess_with_quality(data)  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        preprocess_with_quality(data)
        wall.append(1000.0 * (time.perf_counter() - start))
        cpu.append(1000.0 * (time.process_time() - start_cpu))
    return round(statistics.median(wall), 2), round(statistics.median(cpu), 2)


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def train_cnn(mnist_dir: str, epochs: int):
    from trainers.mnist import load_mnist
    from trainers.train import train

    data = load_mnist(mnist_dir, download=False, progress=False)
    result = train("cnn", data, epochs=epochs, seed=0, progress=False)
    return result.model, {"epochs": epochs, "seed": 0, "test_accuracy": round(result.test_accuracy, 4),
                          "train_seconds": result.train_seconds}


def load_cnn(path: str):
    import keras

    model = keras.models.load_model(path)
    info_path = Path(path).with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return model, {**info, "loaded_from": str(path)}


def print_table(report: dict) -> None:
    print(f"\n{'kind':15s} {'n':>5s} {'accuracy':>9s} {'refused':>8s} {'ms p50':>7s} {'quality':>8s}")
    for kind, r in report["kinds"].items():
        print(f"{kind:15s} {r['n']:5d} {100 * r['accuracy']:8.1f}% {r['refused']:8d} "
              f"{r['preprocess_ms_median']:7.1f} {r['quality_mean']:8.3f}")
    o = report["overall"]
    print(f"{'overall':15s} {o['n']:5d} {100 * o['accuracy']:8.1f}%")
    t = report["timing"]
    print(f"\npreprocess 12 MP JPEG: {t['jpeg_12mp_ms_median']} ms median ({t['jpeg_12mp_cpu_ms_median']} ms CPU), "
          f"28x28 PNG: {t['png_28_ms_median']} ms ({t['png_28_cpu_ms_median']} ms CPU); load average {t['load_average_1min']}")
    print(f"CNN: {report['cnn']}")
    print(f"goals met: {report['goals']['met']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="uploads per kind")
    parser.add_argument("--seed", type=int, default=uploads.BENCH_SEED)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--model", help="a .keras CNN saved by an earlier run (--save-model) instead of training")
    parser.add_argument("--save-model", help="save the trained CNN here (plus a .json with its metrics)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "uploads.json"))
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR") or str(ROOT.parent / "shared" / "data" / "mnist"))
    args = parser.parse_args(argv)
    if args.seed < uploads.BENCH_SEED:
        parser.error(f"benchmark seeds start at {uploads.BENCH_SEED}; lower seeds are for development")

    from trainers.train import configure_threads

    configure_threads()
    if args.model:
        model, cnn = load_cnn(args.model)
    else:
        model, cnn = train_cnn(args.mnist_dir, args.epochs)
        if args.save_model:
            model.save(args.save_model)
            Path(args.save_model).with_suffix(".json").write_text(json.dumps(cnn))

    kinds, correct_all, n_all = {}, 0, 0
    for kind in uploads.KINDS:
        images, labels, qualities, refused, millis = preprocess_kind(kind, args.count, args.seed, args.mnist_dir)
        predicted = classify(model, images)
        correct = int((predicted == labels).sum())
        kinds[kind] = {
            "n": len(labels),
            "accuracy": round(correct / len(labels), 4),
            "refused": len(refused),
            "refusals": refused,
            "preprocess_ms_median": round(statistics.median(millis), 2),
            "quality_mean": round(float(qualities.mean()), 3),
            "quality_mean_wrong": round(float(qualities[predicted != labels].mean()), 3) if correct < len(labels) else None,
        }
        correct_all += correct
        n_all += len(labels)
        print(f"{kind}: {100 * correct / len(labels):.1f}%", flush=True)

    images, labels = uploads.mnist_test(args.mnist_dir)
    jpeg_wall, jpeg_cpu = median_ms(uploads.phone_photo_12mp(args.seed, args.mnist_dir), 21)
    png_wall, png_cpu = median_ms(to_png(images[0]), 201)
    timing = {
        "jpeg_12mp_ms_median": jpeg_wall,
        "jpeg_12mp_cpu_ms_median": jpeg_cpu,
        "png_28_ms_median": png_wall,
        "png_28_cpu_ms_median": png_cpu,
        "load_average_1min": load_average(),
    }
    overall = correct_all / n_all
    goals = {
        "overall": GOAL_OVERALL,
        "per_kind": GOAL_PER_KIND,
        "jpeg_12mp_ms": GOAL_12MP_MS,
        "met": bool(overall >= GOAL_OVERALL
                    and all(k["accuracy"] >= GOAL_PER_KIND for k in kinds.values())
                    and timing["jpeg_12mp_ms_median"] <= GOAL_12MP_MS),
    }
    report = {
        "benchmark": "uploads",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "seed": args.seed,
        "count_per_kind": args.count,
        "cnn": cnn,
        "kinds": kinds,
        "overall": {"n": n_all, "accuracy": round(overall, 4)},
        "timing": timing,
        "goals": goals,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
