"""Soak: a mixed load at concurrency 32 for a few minutes against the real web + worker processes.

    .venv/bin/python bench/soak.py [--seconds 180] [--concurrency 32] [--out bench/results/soak.json]

Valid uploads (synchronous with wait=10, and asynchronous: submit, then poll
until finished) mixed with invalid ones (not an image, a blank image, broken
JSON, an unknown model). At the end every accepted prediction must reach
exactly one final state: the report counts requests, accepted, final, lost,
duplicates (a prediction seen finished and later not, or more successful job
runs recorded than successful predictions), 5xx other than deliberate 503
backpressure, wrong digits, and the RSS of the web and worker processes at
the start and the end. Everything it creates is removed again.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures as futures
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load import DEFAULT_MNIST, Stack, digit_images, log, rss_mb  # noqa: E402  (bench/load.py, beside this script)
from machine import cpu_model  # noqa: E402

FINAL = ("succeeded", "failed")


class Soak:
    def __init__(self, client, pngs: list[bytes], labels: list[int]):
        self.client, self.pngs, self.labels = client, pngs, labels
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.accepted: dict[str, int] = {}  # prediction id -> expected digit
        self.finished_seen: set[str] = set()
        self.regressions = 0
        self.wrong = 0
        self.requests = 0

    def _record(self, status: int) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[status] += 1

    def _call(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        from server.cli.client import ClientError

        try:
            document = self.client.request(method, path, **kwargs)
            status = 200 if method == "GET" else (200 if document.get("status") in FINAL else 202)
        except ClientError as exc:
            status, document = exc.status, {"error": exc.code}
        except OSError:  # refused, reset or timed out: counted apart from HTTP statuses
            status, document = 0, {"error": "connection"}
        self._record(status)
        return status, document

    def _accept(self, document: dict, digit: int) -> None:
        with self.lock:
            self.accepted[document["id"]] = digit

    def _observe(self, document: dict) -> None:
        pid, status = document["id"], document["status"]
        with self.lock:
            if status in FINAL:
                self.finished_seen.add(pid)
            elif pid in self.finished_seen:
                self.regressions += 1

    def upload(self, index: int, wait: float) -> dict | None:
        from server.cli.client import _multipart

        png, digit = self.pngs[index % len(self.pngs)], self.labels[index % len(self.labels)]
        body, content_type = _multipart({"wait": str(wait)}, [("d.png", png)])
        status, document = self._call("POST", "/api/v1/predictions", body=body, content_type=content_type)
        if status in (200, 202):
            self._accept(document, digit)
            self._observe(document)
            if document["status"] == "succeeded" and document["results"][0]["digit"] != digit:
                with self.lock:
                    self.wrong += 1
            return document
        return None

    def invalid(self, index: int) -> None:
        from server.cli.client import _multipart

        kind = index % 4
        if kind == 0:
            body, content_type = _multipart({}, [("x.pdf", b"%PDF-1.4 not an image")])
        elif kind == 1:
            body, content_type = _multipart({}, [("blank.png", self.blank)])
        elif kind == 2:
            body, content_type = b'{"images": [', "application/json"
        else:
            body = json.dumps({"images": [base64.b64encode(self.pngs[0]).decode()], "model": "nope"}).encode()
            content_type = "application/json"
        self._call("POST", "/api/v1/predictions", body=body, content_type=content_type)

    def async_one(self, index: int) -> None:
        document = self.upload(index, 0)
        deadline = time.monotonic() + 60
        while document is not None and document["status"] not in FINAL and time.monotonic() < deadline:
            time.sleep(0.05)
            status, fetched = self._call("GET", f"/api/v1/predictions/{document['id']}")
            if status == 200:
                document = fetched
                self._observe(document)

    def client_loop(self, seconds: float, seed: int) -> None:
        rng = random.Random(seed)
        stop_at = time.monotonic() + seconds
        index = seed * 100_000
        while time.monotonic() < stop_at:
            index += 1
            roll = rng.random()
            if roll < 0.4:
                self.upload(index, 10)
            elif roll < 0.7:
                self.async_one(index)
            else:
                self.invalid(index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST)
    parser.add_argument("--out", default=str(HERE / "results" / "soak.json"))
    args = parser.parse_args(argv)

    import io

    import numpy as np
    from PIL import Image

    from server.cli.client import Client

    stack = Stack(Path(args.mnist_dir))
    try:
        stack.create_database()
        stack.train("mlp", epochs=3, limit=60000)  # every one of the ten digits read right
        stack.start()
        key_id, secret = stack.api_key()
        pngs, labels, _ = digit_images(Path(args.mnist_dir), 10)
        soak = Soak(Client(stack.url, key_id=key_id, secret=secret, timeout=60), pngs, labels)
        buffer = io.BytesIO()
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(buffer, format="PNG")
        soak.blank = buffer.getvalue()
        rss_start = {"web": rss_mb(stack.web.pid), "worker": rss_mb(stack.worker.pid)}
        log(f"soak: {args.concurrency} clients for {args.seconds:g} s")
        started = time.monotonic()
        with futures.ThreadPoolExecutor(args.concurrency) as pool:
            for job in [pool.submit(soak.client_loop, args.seconds, seed) for seed in range(args.concurrency)]:
                job.result()
        elapsed = time.monotonic() - started
        rss_end = {"web": rss_mb(stack.web.pid), "worker": rss_mb(stack.worker.pid)}

        import sqlalchemy as sa

        def final_rows():
            ids = list(soak.accepted)
            rows = {}
            with stack.services.engine.connect() as conn:
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    rows.update(conn.execute(
                        sa.select(sa.column("id"), sa.column("status"))
                        .select_from(sa.table("predictions")).where(sa.column("id").in_(chunk))).all())
            return rows

        deadline = time.monotonic() + 120
        rows = final_rows()
        while any(status not in FINAL for status in rows.values()) and time.monotonic() < deadline:
            time.sleep(1)
            rows = final_rows()
        statuses = Counter(rows.values())
        jobs = {k.decode(): int(v) for k, v in stack.services.redis.hgetall(f"{stack.prefix}metrics:jobs").items()}
        five_xx = {str(s): n for s, n in soak.statuses.items() if s >= 500 and s != 503}
        report = {
            "benchmark": "soak",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
            "setup": {"concurrency": args.concurrency, "seconds": round(elapsed, 1),
                      "mix": "40% sync upload (wait=10), 30% async upload + poll, 30% invalid "
                             "(not an image, blank, broken JSON, unknown model)",
                      "processes": "one digitserve serve, one digitserve worker, MariaDB, Redis, this client"},
            "requests": soak.requests,
            "requests_per_second": round(soak.requests / elapsed, 1),
            "statuses": {str(k): v for k, v in sorted(soak.statuses.items())},
            "accepted": len(soak.accepted),
            "final": sum(statuses[s] for s in FINAL),
            "succeeded": statuses["succeeded"],
            "failed": statuses["failed"],
            "lost": len(soak.accepted) - len(rows) + sum(n for s, n in statuses.items() if s not in FINAL),
            "duplicates": soak.regressions + max(0, jobs.get("succeeded", 0) - statuses["succeeded"]),
            "wrong_digits_in_sync_answers": soak.wrong,
            "unexpected_5xx": sum(five_xx.values()),
            "connection_errors": soak.statuses.get(0, 0),
            "backpressure_503": soak.statuses.get(503, 0),
            "rss_mb": {"start": rss_start, "end": rss_end},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        ok = report["lost"] == 0 and report["duplicates"] == 0 and report["unexpected_5xx"] == 0
        return 0 if ok else 1
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
