"""Load benchmark: latency and throughput of the real web + worker processes,
next to the raw compute limit of the same networks in-process.

    .venv/bin/python bench/load.py [--models mlp cnn] [--concurrency 1 16 64] [--out bench/results/load.json]

What it does, all on 127.0.0.1 and all of it removed again at the end (also on
failure or Ctrl-C):

1. creates a scratch MariaDB database and migrates it; trains an MLP and a CNN
   with their DEFAULT architectures but only briefly (``--train-limit`` images,
   ``--train-epochs`` epochs, via ``digitserve train ... --activate`` in a
   child process): accuracy is irrelevant here, only the cost of a forward pass;
2. raw compute: loads the registered model files through
   ``models.serving.LoadedModel`` (what the worker calls) and times
   ``probabilities`` at batch 1 and batch 256 (TensorFlow threads:
   ``--compute-threads``, default 1 like the worker's TF_THREADS);
3. starts ONE ``digitserve serve`` and ONE ``digitserve worker`` process
   (fresh Redis prefix and queue, RATE_LIMIT_PER_MINUTE=0 = no rate limit,
   TF_THREADS=1, WEB_THREADS=96) and creates a user and an API key over HTTP;
4. for each model, mode and concurrency drives signed requests
   (``server.cli.client.Client``) from a thread pool in this process, each a real
   MNIST test digit upscaled 4x as a PNG:
   - sync:  POST with ``wait=30`` and ``model=...``, answered 200 with the result;
   - async: POST with ``wait=0`` (202), then GET /api/v1/predictions/{id} until
     it succeeded (poll delay ``--poll-initial`` s, x1.5 per poll, at most
     ``--poll-max`` s);
   each cell runs ``max(--min-requests, --per-thread * concurrency)`` requests
   or stops starting new ones after ``--max-seconds``, whichever comes first,
   after a warm-up of ``max(5, concurrency)`` requests that are not counted.

The load generator shares the machine's cores with the web server, the worker,
MariaDB and Redis; the CPU seconds each of them used per request are recorded
so the report shows where the time goes.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import datetime as dt
import http.cookiejar
import io
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402  (bench/machine.py, beside this script)
from server.cli.processes import Subcommand, free_port  # noqa: E402

MYSQL_SERVER_URL = os.environ.get("BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DEFAULT_MNIST = os.environ.get("MNIST_DIR") or str(ROOT.parent / "shared" / "data" / "mnist")
WEB_THREADS = 96
TF_THREADS = 1
SYNC_WAIT = 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- machine -------------------------------------------------------------------------------------


def other_benchmarks_running() -> list[str]:
    """Command lines of other bench/*.py processes (e.g. the accuracy benchmark) right now."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if "bench/" in cmdline and ".py" in cmdline and "bench/load.py" not in cmdline:
            found.append(cmdline)
    return found


def pids_named(*names: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds of these processes (all their threads) so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
    return total


# -- the stack: database, Redis namespace, models, processes -------------------------------------


class Stack:
    """Everything the benchmark creates; `close()` removes all of it and is safe to call twice."""

    def __init__(self, mnist_dir: Path):
        import sqlalchemy as sa

        from core.settings import Settings

        self.tag = uuid.uuid4().hex[:8]
        self.scratch = Path(tempfile.mkdtemp(prefix=f"ds-load-{self.tag}-"))
        self.db_name = f"ds_load_{self.tag}"
        self.db_url = f"{MYSQL_SERVER_URL}/{self.db_name}?charset=utf8mb4"
        self.prefix = f"dsload:{self.tag}:"
        self.server_engine = sa.create_engine(MYSQL_SERVER_URL)
        self.db_created = False
        self.children: list[Subcommand] = []
        self.web: Subcommand | None = None
        self.worker: Subcommand | None = None
        self.services = None
        self.prediction_ids: set[str] = set()
        self.settings = Settings(
            database_url=self.db_url,
            redis_url=REDIS_URL,
            secret_key=secrets.token_urlsafe(48),
            var_dir=self.scratch / "var",
            mnist_dir=Path(mnist_dir),
            model_cache_dir=self.scratch / "models",
            port=free_port(),
            queue_name=f"dsload-{self.tag}",
            redis_prefix=self.prefix,
            web_threads=WEB_THREADS,
            tf_threads=TF_THREADS,
            rate_limit_per_minute=0,
        )
        self.url = f"http://127.0.0.1:{self.settings.port}"

    def env(self, **extra) -> dict[str, str]:
        env = {**os.environ, **self.settings.to_env(), "HOST": "127.0.0.1", "LOG_REQUESTS": "0",
               "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        env.update({k: str(v) for k, v in extra.items()})
        return env

    # database + models

    def create_database(self) -> None:
        import sqlalchemy as sa

        from core import migrate
        from server.services.bootstrap import build

        with self.server_engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {self.db_name} CHARACTER SET utf8mb4"))
        self.db_created = True
        migrate.upgrade(self.db_url)
        self.services = build(self.settings)

    def train(self, family: str, epochs: int, limit: int) -> None:
        child = Subcommand(["train", family, "--epochs", str(epochs), "--limit", str(limit), "--activate", "--quiet"],
                      self.env(), self.scratch / f"train-{family}.log")
        self.children.append(child)
        try:
            code = child.popen.wait(timeout=1800)
        finally:
            child.stop()
        if code != 0:
            raise RuntimeError(f"training {family} failed (exit {code}):\n{child.tail()}")
        log(child.tail(1))

    def mariadb_connections(self) -> int | None:
        """MariaDB's global count of connection attempts so far (all clients of the server)."""
        import sqlalchemy as sa

        try:
            with self.server_engine.connect() as conn:
                return int(conn.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Connections'")).one()[1])
        except Exception:
            return None

    # processes

    def start(self) -> None:
        self.web = Subcommand(["serve"], self.env(), self.scratch / "web.log")
        self.children.append(self.web)
        self.worker = Subcommand(["worker"], self.env(), self.scratch / "worker.log")
        self.children.append(self.worker)
        deadline = time.monotonic() + 120
        while True:
            for child in (self.web, self.worker):
                if not child.alive():
                    raise RuntimeError(f"`digitserve {child.args[0]}` exited early:\n{child.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after 120 s:\n{self.web.tail()}\n{self.worker.tail()}")
            time.sleep(0.3)

    def api_key(self) -> tuple[str, str]:
        """A user, a browser session and an API key, created over HTTP like a person would."""
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        def call(method: str, path: str, payload: dict, headers: dict | None = None) -> dict:
            request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), method=method,
                                             headers={"Content-Type": "application/json", **(headers or {})})
            with opener.open(request, timeout=30) as response:
                return json.loads(response.read())

        email, password = f"load-{self.tag}@example.com", f"bench-{secrets.token_hex(12)}"
        call("POST", "/api/v1/users", {"email": email, "password": password})
        session = call("POST", "/api/v1/sessions", {"email": email, "password": password})
        key = call("POST", "/api/v1/keys", {"name": "load benchmark", "scopes": ["predict"]},
                   {"X-CSRF-Token": session["csrf_token"]})
        return key["key_id"], key["secret"]

    # clean-up

    def close(self) -> None:
        errors = []
        worker_pid = self.worker.pid if self.worker else None
        # the web server first: with the worker gone, its waiting requests would hold it for up to 30 s
        for child in sorted(self.children, key=lambda c: c is self.worker):
            try:
                child.stop()
            except Exception as exc:  # keep cleaning
                errors.append(f"stopping {child.args[0]}: {exc}")
        self.children.clear()
        if self.db_created and self.services is not None:
            try:
                import sqlalchemy as sa

                with self.services.engine.connect() as conn:
                    self.prediction_ids.update(r[0] for r in conn.execute(sa.text("SELECT id FROM predictions")))
            except Exception as exc:
                errors.append(f"listing predictions: {exc}")
        if self.services is not None:
            self.services.close()
            self.services = None
        try:
            self._clean_redis(worker_pid)
        except Exception as exc:
            errors.append(f"cleaning Redis: {exc}")
        if self.db_created:
            try:
                import sqlalchemy as sa

                with self.server_engine.connect() as conn:
                    conn.execute(sa.text(f"DROP DATABASE IF EXISTS {self.db_name}"))
                self.db_created = False
            except Exception as exc:
                errors.append(f"dropping database {self.db_name}: {exc}")
        self.server_engine.dispose()
        for message in errors:
            log(f"clean-up problem: {message}")

    def _clean_redis(self, worker_pid: int | None) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            doomed = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            queue = self.settings.queue_name.encode()
            worker_mark = f"-{worker_pid}-".encode() if worker_pid else None
            ids = {i.encode() for i in self.prediction_ids}
            for key in client.scan_iter(match="rq:*", count=1000):
                if queue in key or (worker_mark and key.startswith(b"rq:worker:digitserve-") and worker_mark in key):
                    doomed.append(key)
                else:
                    rest = key.split(b":")
                    if any(part in ids for part in rest):
                        doomed.append(key)
            for start in range(0, len(doomed), 500):
                client.delete(*doomed[start:start + 500])
            log(f"removed {len(doomed)} Redis keys")
            if worker_mark:
                members = [m for m in client.smembers("rq:workers") if worker_mark in m and b"digitserve-" in m]
                if members:
                    client.srem("rq:workers", *members)
        finally:
            client.close()


# -- images ---------------------------------------------------------------------------------------


def digit_images(mnist_dir: Path, count: int = 10) -> tuple[list[bytes], list[int], np.ndarray]:
    """The first test image of each digit, upscaled 4x (112x112) as PNG; plus 256 raw test images."""
    from PIL import Image

    from trainers.mnist import load_mnist

    data = load_mnist(mnist_dir, download=False, progress=False)
    pngs, labels, seen = [], [], set()
    for image, label in zip(data.x_test, data.y_test):
        if int(label) in seen:
            continue
        seen.add(int(label))
        buffer = io.BytesIO()
        Image.fromarray(np.kron(image, np.ones((4, 4), np.uint8)).astype(np.uint8), "L").save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
        labels.append(int(label))
        if len(pngs) == count:
            break
    return pngs, labels, np.asarray(data.x_test[:256])


# -- raw compute ----------------------------------------------------------------------------------


def measure_compute(stack: Stack, models: list[str], x_test: np.ndarray, threads: int,
                    seconds: float) -> tuple[list[dict], dict]:
    from models.runtime import configure_tensorflow
    from models.serving import LoadedModel
    from core.preprocess import scale

    configure_tensorflow(threads)
    import tensorflow as tf

    registry = stack.services.registry
    images = np.asarray(scale(x_test), np.float32)
    rows, architectures = [], {}
    for name in models:
        info = registry.get(name)
        architectures[name] = {"version": info.version, "family": info.family,
                               "architecture": info.hyperparameters.get("architecture"),
                               "parameters": info.hyperparameters.get("parameters"),
                               "test_accuracy": info.test_accuracy}
        model = LoadedModel(info, registry.fetch_file(info))
        for batch in (1, 256):
            x = images[:batch]
            for _ in range(20 if batch == 1 else 3):
                model.probabilities(x)
            max_calls = 5000 if batch == 1 else 200
            calls, per_call = 0, []
            started = time.perf_counter()
            while calls < max_calls and time.perf_counter() - started < seconds:
                t0 = time.perf_counter()
                model.probabilities(x)
                per_call.append(time.perf_counter() - t0)
                calls += 1
            elapsed = time.perf_counter() - started
            rows.append({
                "model": name,
                "batch": batch,
                "calls": calls,
                "images_per_s": round(calls * batch / elapsed, 1),
                "ms_per_call": round(elapsed / calls * 1000, 3),
                "p50_ms_per_call": round(float(np.percentile(per_call, 50)) * 1000, 3),
            })
            log(f"compute {name} batch {batch}: {rows[-1]['ms_per_call']} ms/call, "
                f"{rows[-1]['images_per_s']} images/s")
    meta = {"tf_threads": threads, "tensorflow": tf.__version__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
    return rows, {"meta": meta, "architectures": architectures}


# -- load -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    latency: float | None = None       # seconds, only for successes
    error: str | None = None           # status code or kind, for failures
    correct: bool = False
    polls: int = 0
    timings: dict = field(default_factory=dict)
    prediction_id: str | None = None


class Load:
    def __init__(self, client, pngs: list[bytes], labels: list[int], poll_initial: float, poll_max: float,
                 request_timeout: float):
        self.client = client
        self.pngs, self.labels = pngs, labels
        self.poll_initial, self.poll_max = poll_initial, poll_max
        self.request_timeout = request_timeout
        self.ids: list[str] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set on failure: clients start no new request

    def one(self, model: str, mode: str, index: int) -> Outcome:
        from server.cli.client import ClientError

        png, label = self.pngs[index % len(self.pngs)], self.labels[index % len(self.labels)]
        outcome = Outcome()
        started = time.perf_counter()
        try:
            if mode == "sync":
                document = self.client.submit([png], model=model, wait=SYNC_WAIT)
                if document["status"] != "succeeded":
                    # 202 when the wait ran out, 200 with "failed" when the job failed
                    outcome.error = "202_not_done" if document["status"] in ("queued", "running") else "failed"
            else:
                document = self.client.submit([png], model=model, wait=0)
                delay = self.poll_initial
                deadline = started + self.request_timeout
                while document["status"] not in ("succeeded", "failed"):
                    if time.perf_counter() > deadline:
                        outcome.error = "timeout"
                        break
                    time.sleep(delay)
                    delay = min(delay * 1.5, self.poll_max)
                    document = self.client.prediction(document["id"])
                    outcome.polls += 1
                if document["status"] == "failed":
                    outcome.error = "failed"
            elapsed = time.perf_counter() - started
            outcome.prediction_id = document.get("id")
            if outcome.error is None:
                outcome.latency = elapsed
                outcome.correct = bool(document["results"]) and document["results"][0]["digit"] == label
                outcome.timings = document.get("timings") or {}
        except ClientError as exc:
            outcome.error = str(exc.status)
        except (OSError, TimeoutError) as exc:  # connection refused/reset, socket timeout
            outcome.error = type(exc).__name__
        except Exception as exc:
            outcome.error = f"{type(exc).__name__}"
        if outcome.prediction_id:
            with self._lock:
                self.ids.append(outcome.prediction_id)
        return outcome

    def burst(self, model: str, mode: str, concurrency: int, total: int, max_seconds: float | None,
              pool: futures.ThreadPoolExecutor) -> tuple[list[Outcome], float]:
        """`concurrency` closed-loop clients share `total` requests; none starts after `max_seconds`."""
        counter = iter(range(total))
        counter_lock = threading.Lock()
        started = time.perf_counter()
        stop_at = started + max_seconds if max_seconds else None

        def client_loop() -> list[Outcome]:
            done = []
            while True:
                if self.stopping.is_set() or (stop_at is not None and time.perf_counter() >= stop_at):
                    return done
                with counter_lock:
                    index = next(counter, None)
                if index is None:
                    return done
                done.append(self.one(model, mode, index))

        outcomes: list[Outcome] = []
        for job in [pool.submit(client_loop) for _ in range(concurrency)]:
            outcomes.extend(job.result())
        return outcomes, time.perf_counter() - started


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def run_cell(load: Load, stack: Stack, model: str, mode: str, concurrency: int, args,
             pool: futures.ThreadPoolExecutor, cpu_pids: dict[str, list[int]]) -> dict:
    total = max(args.min_requests, args.per_thread * concurrency)
    load.burst(model, mode, concurrency, max(5, concurrency), None, pool)  # warm-up, not counted
    connections_before = stack.mariadb_connections()
    cpu_before = {name: cpu_seconds(pids) for name, pids in cpu_pids.items()}
    outcomes, elapsed = load.burst(model, mode, concurrency, total, args.max_seconds, pool)
    cpu_used = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in cpu_pids.items()}
    connections_after = stack.mariadb_connections()

    ok = [o for o in outcomes if o.error is None]
    latencies = [o.latency for o in ok]
    errors = Counter(o.error for o in outcomes if o.error is not None)

    def server_p50(key: str) -> float | None:
        values = [o.timings.get(key) for o in ok if o.timings.get(key) is not None]
        return round(float(np.median(values)), 2) if values else None

    n = max(1, len(outcomes))
    row = {
        "model": model,
        "mode": mode,
        "concurrency": concurrency,
        "requests": len(outcomes),
        "errors": sum(errors.values()),
        "errors_by_status": dict(sorted(errors.items())),
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "mean_ms": round(float(np.mean(latencies)) * 1000, 2) if latencies else None,
        "throughput_rps": round(len(ok) / elapsed, 2) if elapsed > 0 else None,
        "elapsed_s": round(elapsed, 2),
        "stopped_by_time_limit": len(outcomes) < total,
        "correct_digits": sum(o.correct for o in ok),
        "server_p50_ms": {"queue": server_p50("queue_ms"), "compute": server_p50("compute_ms"),
                          "created_to_finished": server_p50("total_ms")},
        "cpu_ms_per_request": {name: round(used * 1000 / n, 2) for name, used in cpu_used.items()},
        "cpu_cores_busy": round(sum(cpu_used.values()) / elapsed, 2) if elapsed > 0 else None,
        "db_connections_opened_per_request": (
            round((connections_after - connections_before) / n, 3)
            if connections_before is not None and connections_after is not None else None),
    }
    if mode == "async":
        row["polls_per_request"] = round(sum(o.polls for o in ok) / max(1, len(ok)), 2)
    return row


# -- report ---------------------------------------------------------------------------------------


def table(report: dict) -> str:
    lines = ["", "Load (one web process, one worker process; load generator on the same 2 cores)",
             f"{'model':<5} {'mode':<5} {'conc':>4} {'reqs':>5} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'req/s':>7}  {'srv queue':>9} {'compute':>7}  cpu ms/req: client web worker db redis"]
    for r in report["results"]:
        cpu = r["cpu_ms_per_request"]
        srv = r["server_p50_ms"]

        def f(v, w, p=1):
            return f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"

        lines.append(
            f"{r['model']:<5} {r['mode']:<5} {r['concurrency']:>4} {r['requests']:>5} {r['errors']:>4} "
            f"{f(r['p50_ms'], 8)} {f(r['p99_ms'], 8)} {f(r['throughput_rps'], 7)}  {f(srv['queue'], 9)} "
            f"{f(srv['compute'], 7, 2)}  {cpu.get('client', 0):>6.1f} {cpu.get('web', 0):>5.1f} "
            f"{cpu.get('worker', 0):>6.1f} {cpu.get('mariadb', 0):>4.1f} {cpu.get('redis', 0):>5.1f}")
    lines += ["", f"Raw compute in-process (LoadedModel.probabilities, TF threads "
                  f"{report['setup']['compute']['tf_threads']})",
              f"{'model':<5} {'batch':>5} {'ms/call':>9} {'images/s':>10}"]
    for c in report["compute"]:
        lines.append(f"{c['model']:<5} {c['batch']:>5} {c['ms_per_call']:>9.3f} {c['images_per_s']:>10.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--modes", nargs="+", default=["sync", "async"], choices=["sync", "async"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "load.json"))
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST)
    parser.add_argument("--min-requests", type=int, default=200, help="requests per cell at least (default 200)")
    parser.add_argument("--per-thread", type=int, default=8, help="requests per cell: per-thread x concurrency")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="no new request after this (per cell)")
    parser.add_argument("--poll-initial", type=float, default=0.02, help="async: first poll delay (s)")
    parser.add_argument("--poll-max", type=float, default=0.5, help="async: longest poll delay (s)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="async: give up polling after (s)")
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--compute-threads", type=int, default=TF_THREADS)
    parser.add_argument("--compute-seconds", type=float, default=5.0, help="time per compute measurement")
    parser.add_argument("--keep-logs", action="store_true", help="keep the scratch directory with process logs")
    args = parser.parse_args(argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)

    started_at = dt.datetime.now(dt.timezone.utc)
    others_at_start = other_benchmarks_running()
    loadavg_at_start = Path("/proc/loadavg").read_text().split()[:3]
    if others_at_start:
        log(f"warning: other benchmarks are running: {others_at_start}")

    from server.cli.client import Client

    pngs, labels, x_test = digit_images(Path(args.mnist_dir))
    stack = Stack(Path(args.mnist_dir))
    failed = False
    pool: futures.ThreadPoolExecutor | None = None
    load: Load | None = None
    try:
        log(f"database {stack.db_name}, Redis prefix {stack.prefix!r}, scratch {stack.scratch}")
        stack.create_database()
        for name in args.models:
            log(f"training {name} (default architecture, {args.train_epochs} epoch(s) on {args.train_limit} images)")
            stack.train(name, args.train_epochs, args.train_limit)

        log(f"raw compute in this process (TF threads {args.compute_threads}), before the servers start")
        compute, compute_info = measure_compute(stack, args.models, x_test, args.compute_threads,
                                                args.compute_seconds)

        log(f"starting `digitserve serve` (port {stack.settings.port}) and `digitserve worker`")
        stack.start()
        key_id, secret = stack.api_key()
        client = Client(stack.url, key_id, secret, timeout=SYNC_WAIT + 10)
        load = Load(client, pngs, labels, args.poll_initial, args.poll_max, args.request_timeout)
        cpu_pids = {"client": [os.getpid()], "web": [stack.web.pid], "worker": [stack.worker.pid],
                    "mariadb": pids_named("mariadbd", "mysqld"), "redis": pids_named("redis-server")}
        pool = futures.ThreadPoolExecutor(max_workers=max(args.concurrency), thread_name_prefix="load")
        for name in args.models:  # global warm-up: first requests per model pay one-off costs
            load.burst(name, "sync", 2, 10, None, pool)

        results = []
        for name in args.models:
            for mode in args.modes:
                for concurrency in args.concurrency:
                    for child in (stack.web, stack.worker):
                        if not child.alive():
                            raise RuntimeError(f"`digitserve {child.args[0]}` died:\n{child.tail()}")
                    row = run_cell(load, stack, name, mode, concurrency, args, pool, cpu_pids)
                    results.append(row)
                    log(f"{name} {mode:<5} c={concurrency:<3} {row['requests']} requests, {row['errors']} errors "
                        f"{row['errors_by_status'] or ''}, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                        f"{row['throughput_rps']} req/s")
        stack.prediction_ids.update(load.ids)

        others_at_end = other_benchmarks_running()
        import tensorflow as tf

        report = {
            "machine": {
                "cpus": os.cpu_count(),
                "cpu_model": cpu_model(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "date": started_at.isoformat(timespec="seconds"),
            },
            "setup": {
                "processes": "one `digitserve serve` (CherryPy) + one `digitserve worker` (RQ SimpleWorker), "
                             "MariaDB and Redis on 127.0.0.1; the load generator (this script, Python threads) "
                             "runs on the same machine and shares its cores with all of them",
                "web_threads": WEB_THREADS,
                "worker_tf_threads": TF_THREADS,
                "rate_limit_per_minute": "0 (limiter disabled)",
                "max_wait_s": stack.settings.max_wait,
                "sync": f"POST /api/v1/predictions multipart, model=<name>, wait={SYNC_WAIT}; 200 with the result",
                "async": f"POST wait=0 (202), then GET /api/v1/predictions/{{id}} until succeeded; poll delay "
                         f"{args.poll_initial} s, x1.5 per poll, at most {args.poll_max} s",
                "client": "server.cli.client.Client (DS1-HMAC-SHA256 signed, urllib: a new TCP connection per request)",
                "image": "one real MNIST test digit per class (first of each), upscaled 4x to 112x112, PNG, "
                         "one image per request, cycled",
                "requests_per_cell": f"max({args.min_requests}, {args.per_thread} x concurrency), no new request "
                                     f"after {args.max_seconds:g} s; warm-up of max(5, concurrency) requests "
                                     "per cell not counted",
                "latency": "client-side perf_counter from before the POST until the succeeded document "
                           "(async: including polling); p50/p99 over successful requests (numpy percentile; with 200 "
                           "samples p99 is close to the maximum)",
                "throughput": "successful requests / wall time of the cell",
                "cpu_ms_per_request": "CPU seconds (user+system, /proc/<pid>/stat) each process used during "
                                      "the cell, divided by the requests of the cell; mariadb and redis are the "
                                      "shared servers (other users' activity would be included)",
                "db_connections_opened_per_request": "MariaDB global status `Connections` (new connections "
                                                     "to the server, any client) during the cell / requests",
                "server_p50_ms": "medians of the prediction's own timings as the API reports them: queue "
                                 "(created -> worker started), compute (the network call), created_to_finished",
                "models": compute_info["architectures"],
                "training": f"DEFAULT architectures trained briefly ({args.train_epochs} epoch(s) on the first "
                            f"{args.train_limit} training images): accuracy is irrelevant to this benchmark, "
                            "only the cost of a forward pass",
                "compute": {**compute_info["meta"],
                            "how": "models.serving.LoadedModel(info, path).probabilities in the benchmark process, "
                                   "servers not started yet; batch 1 and 256 (real test images), "
                                   f"up to {args.compute_seconds:g} s each after a warm-up"},
                "other_benchmarks_running": {"at_start": others_at_start, "at_end": others_at_end},
                "loadavg_at_start": loadavg_at_start,
            },
            "results": results,
            "compute": compute,
        }
        if others_at_start or others_at_end:
            report["setup"]["note"] = ("another benchmark was running on the same cores during this run "
                                       "(see other_benchmarks_running): the figures are distorted by it")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(out)
        print(table(report))
        log(f"wrote {out}")
        return 0
    except BaseException as exc:
        failed = True
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise
    finally:
        if load is not None:
            load.stopping.set()
            stack.prediction_ids.update(load.ids)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        log("cleaning up: processes, database, Redis keys")
        stack.close()
        if failed or args.keep_logs:
            log(f"process logs kept in {stack.scratch}")
        else:
            shutil.rmtree(stack.scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
