"""Throughput benchmark with wrk, next to a serving peer (BentoML) on the same machine and load.

    .venv/bin/python bench/perf.py [--duration 10] [--repetitions 3] [--concurrency 1 16 64] [--no-peer]

Writes bench/results/perf.json and bench/results/perf.md. All on 127.0.0.1 and all of it
removed again at the end (databases, Redis keys, processes, the BentoML server, scratch files):

1. `Stack` (bench/load.py): a scratch database, a short MLP training (default architecture),
   ONE `digitserve serve` and ONE `digitserve worker` with ALLOW_BEARER_KEYS=1,
   RATE_LIMIT_PER_MINUTE=0, MAX_IMAGES=256; a user and an API key over HTTP;
2. raw compute: LoadedModel.probabilities at batch 1 and 256 in this process (`measure_compute`);
3. correctness: the first MNIST test digit of each class, as a 28x28 PNG, through v1 (sync, signed)
   and v2 (JSON UINT8) — and through the peer — every digit must be right, or the run fails;
4. throughput cells with wrk (one thread, `--latency`, connections 1/16/64, the same 28x28 PNG,
   `Authorization: Bearer <key_id>.<secret>`): v1 sync upload (multipart, wait=10), v2 infer JSON
   and v2 infer binary (`Inference-Header-Content-Length`); the peer's cells (multipart PNG to a
   batchable BentoML API) interleaved with ours; the median of the repetitions per cell;
5. CPU ms per request of the web and the worker process during the v1 c=16 cell;
6. async at c=1 (signed Python client: submit wait=0, then GET ?wait=10), p50;
7. big requests: 16 and 256 PNG digits in one sync request (wait=30) -> images/s end to end;
8. batching: the v1 c=1 and c=64 cells again with BATCH_MAX_SIZE=1 (web and worker restarted);
9. RSS of web and worker at the end; goals of issue 9 and whether each is met.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load import DEFAULT_MNIST, ROOT, Stack, cpu_seconds, log, rss_mb, measure_compute, other_benchmarks_running  # noqa: E402,E501
from machine import cpu_model  # noqa: E402

WRK = shutil.which("wrk") or "/usr/bin/wrk"
SYNC_WAIT = 10
BIG_WAIT = 30
PEER_BATCH = 64
PEER_PACKAGES = ["bentoml==1.4.*", "tensorflow-cpu", "pillow"]

NOTES = [
    "Before each cell that needs the worker (v1, async, big requests) one queued prediction is run to completion "
    "(worker_wake_s), so a cell never starts on a worker that is still waking: before the worker listened on a "
    "Redis connection of its own, an idle one could sleep up to 60 s in RQ's reconnect back-off.",
    "The peer does less per request than DigitServe: no authentication, no database row, no queue; its "
    "preprocessing is a Pillow decode and /255 (the test digits are already MNIST-centred), where DigitServe's v1 "
    "runs its full MNIST-style preprocessing. v2 skips PNG decoding and the queue (batched in the web process).",
    "wrk, MariaDB, Redis, the peer and both DigitServe processes share the same cores; DigitServe and BentoML cells "
    "alternate per concurrency so that drifting background load hits both.",
]

GOALS = {
    "v1_sync_c16_vs_peer": "v1 sync c=16 >= 0.5 x BentoML req/s, with p99 <= 150 ms",
    "v2_c16_vs_peer": "v2 infer c=16 >= 1.0 x BentoML req/s, with p99 <= 150 ms",
    "async_c1_p50": "async (submit, then long-poll) c=1 p50 <= 15 ms",
    "big_256_images_per_s": "256 PNG digits in one request >= 3,000 images/s",
    "batching_c64": "batching at c=64 >= 3 x batch size 1, without raising c=1 p50 by more than 10 %",
}


# -- wrk ------------------------------------------------------------------------------------------


def lua_script(method: str, path: str, headers: dict[str, str], body_file: Path) -> str:
    """A wrk script sending one fixed request (body read from a file, so binary bodies survive)."""
    lines = ["local f = assert(io.open(%s, 'rb'))" % lua_string(str(body_file)),
             "wrk.body = f:read('*a')",
             "f:close()",
             f"wrk.method = {lua_string(method)}",
             f"wrk.path = {lua_string(path)}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    return "\n".join(lines) + "\n"


def lua_string(text: str) -> str:
    return '"' + "".join(c if c.isalnum() or c in " ./_-:;=+,%()[]{}<>*?!#@~" else f"\\{ord(c):03d}"
                         for c in text) + '"'


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict:
    """requests/s, p50/p99 ms, requests, non-2xx/3xx and socket errors from `wrk --latency` output."""
    result = {"requests": 0, "rps": None, "p50_ms": None, "p99_ms": None, "non_2xx": 0, "socket_errors": 0}
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", output):
        result["requests"] = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", output):
        result["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+(?:us|ms|s|m))\s*$", output, re.M):
            result[key] = round(_ms(m.group(1)), 3)
    if result["requests"] == 0:  # nothing finished within the run: wrk prints zeros, not latencies
        result["p50_ms"] = result["p99_ms"] = None
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        result["non_2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        result["socket_errors"] = sum(int(g) for g in m.groups())
    return result


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict:
    command = [WRK, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "30s",
               "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def median_cell(runs: list[dict]) -> dict:
    def med(key):
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 2) if values else None

    return {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
            "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
            "runs": runs}


# -- request bodies ---------------------------------------------------------------------------------


def mnist_digits(mnist_dir: Path):
    """The first test image of each class: (28x28 PNG bytes, label, uint8 28x28 array), by class."""
    import numpy as np
    from PIL import Image

    from trainers.mnist import load_mnist

    data = load_mnist(mnist_dir, download=False, progress=False)
    found = {}
    for image, label in zip(data.x_test, data.y_test):
        if int(label) not in found:
            buffer = io.BytesIO()
            Image.fromarray(np.asarray(image, np.uint8), "L").save(buffer, format="PNG")
            found[int(label)] = (buffer.getvalue(), int(label), np.asarray(image, np.uint8))
        if len(found) == 10:
            break
    return [found[d] for d in range(10)], np.asarray(data.x_test[:256])


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "----perfbench7d1c2e"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def v2_json(pixels) -> bytes:
    return json.dumps({"inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8",
                                   "data": [int(v) for v in pixels.reshape(-1)]}]}).encode()


def v2_binary(pixels) -> tuple[bytes, int]:
    raw = pixels.astype("u1").tobytes()
    header = json.dumps({"inputs": [{"name": "images", "shape": [1, 784], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, len(header)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read(), dict(response.headers)


# -- the peer: BentoML ------------------------------------------------------------------------------

PEER_SERVICE = '''\
"""Written by DigitServe's bench/perf.py: the same Keras MLP file behind a batchable BentoML API."""
import os

import bentoml
import numpy as np
from PIL import Image as PILImage

MODEL_PATH = os.environ["PERF_MODEL_PATH"]


@bentoml.service(workers=1, traffic={"timeout": 60})
class Digits:
    def __init__(self) -> None:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        model = keras.models.load_model(MODEL_PATH, compile=False)

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.float32)], reduce_retracing=True)
        def forward(x):
            return model(x, training=False)

        self.forward = forward
        self.forward(np.zeros((1, 28, 28), np.float32))

    @bentoml.api(batchable=True, max_batch_size=%(batch)d, max_latency_ms=10000)
    def classify(self, image: list[PILImage.Image]) -> list[dict]:
        x = np.stack([np.asarray(i.convert("L").resize((28, 28)), np.float32) / 255.0 for i in image])
        p = self.forward(x).numpy()
        return [{"digit": int(row.argmax()), "confidence": float(row.max())} for row in p]
'''


class Peer:
    """A BentoML server in its own virtual environment, serving the MLP file DigitServe registered."""

    def __init__(self, venv: Path, scratch: Path):
        self.venv, self.scratch = venv, scratch
        self.process: subprocess.Popen | None = None
        self.port = None
        self.version = None
        self.log_path = scratch / "bentoml.log"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def ensure_venv(self, install_timeout: float) -> None:
        if self.python.exists() and subprocess.run([str(self.python), "-c", "import bentoml, tensorflow, PIL"],
                                                   capture_output=True, timeout=300).returncode == 0:
            return
        log(f"creating the BentoML virtual environment {self.venv} ({' '.join(PEER_PACKAGES)})")
        subprocess.run(["python3", "-m", "venv", str(self.venv)], check=True, timeout=120)
        subprocess.run([str(self.python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True,
                       timeout=install_timeout)

    def start(self, model_path: Path, startup_timeout: float = 180) -> None:
        self.version = subprocess.run([str(self.python), "-c", "import bentoml; print(bentoml.__version__)"],
                                      capture_output=True, text=True, timeout=120).stdout.strip()
        service = self.scratch / "peer_service.py"
        service.write_text(PEER_SERVICE % {"batch": PEER_BATCH})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "PERF_MODEL_PATH": str(model_path), "TF_CPP_MIN_LOG_LEVEL": "2",
               "BENTOML_HOME": str(self.scratch / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "True",
               "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(self.venv / "bin" / "bentoml"), "serve", "peer_service:Digits", "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=self.scratch, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
        log_file.close()
        deadline = time.monotonic() + startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited ({self.process.returncode}): {self.tail()}")
            try:
                if http("GET", f"{self.url}/readyz", timeout=2)[0] == 200:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bentoml serve not ready after {startup_timeout:g} s: {self.tail()}")
            time.sleep(0.5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def classify(self, png: bytes) -> dict:
        body, content_type = multipart({}, [("image", "digit.png", png)])
        status, raw, _ = http("POST", f"{self.url}/classify", body, {"Content-Type": content_type})
        document = json.loads(raw)
        return document[0] if isinstance(document, list) else document

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # its own session: bentoml and its workers
                self.process.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        self.process = None


# -- DigitServe helpers -------------------------------------------------------------------------------


def restart(stack: Stack, **changes) -> None:
    """Stop web and worker, change their settings, start them again (same database and key)."""
    from server.cli.processes import free_port

    for child in sorted((stack.web, stack.worker), key=lambda c: c is stack.worker):
        child.stop()
        stack.children.remove(child)
    stack.settings = stack.settings.replace(port=free_port(), **changes)
    stack.url = f"http://127.0.0.1:{stack.settings.port}"
    stack.start()


def check_digits(stack: Stack, client, digits, bearer: str, peer: Peer | None) -> dict:
    """Every class's PNG through v1 sync and v2 JSON (and the peer); fails loudly on a wrong digit."""
    import numpy as np

    rows, wrong = [], []
    for png, label, pixels in digits:
        document = client.submit([png], model="mlp", wait=SYNC_WAIT)
        v1 = document["results"][0]["digit"] if document.get("status") == "succeeded" else None
        _, raw, _ = http("POST", f"{stack.url}/v2/models/mlp/infer", v2_json(pixels),
                         {"Content-Type": "application/json", "Authorization": bearer})
        output = json.loads(raw)["outputs"][0]
        v2 = int(np.argmax(output["data"]))
        row = {"label": label, "v1": v1, "v2": v2}
        if peer is not None:
            row["peer"] = peer.classify(png)["digit"]
        rows.append(row)
        wrong += [f"{k} answered {v} for a {label}" for k, v in row.items() if k != "label" and v != label]
    if wrong:
        raise RuntimeError("wrong digits: " + "; ".join(wrong))
    return {"all_correct": True, "digits": rows}


def wake_worker(client, png: bytes, timeout: float = 120) -> float:
    """Seconds until one queued prediction finishes (how long an idle worker takes to wake).

    The worker's Redis connection has socket_timeout=5 s while RQ's blocking dequeue waits far longer, so
    after ~5 s without jobs RQ sees a TimeoutError and sleeps 1, 2, 4 ... up to 60 s before listening again
    (worker.log: "could not connect to Redis instance: Timeout reading from socket"). Cells that need the
    worker start after it has answered once, so they measure the steady state; the wake-up time is recorded.
    """
    started = time.perf_counter()
    document = client.submit([png], model="mlp", wait=0)
    while document["status"] not in ("succeeded", "failed"):
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"the worker did not run a job within {timeout:g} s")
        document = client.prediction(document["id"], wait=SYNC_WAIT)
    return round(time.perf_counter() - started, 2)


def async_cell(client, png: bytes, seconds: float) -> dict:
    latencies = []
    stop = time.perf_counter() + seconds
    for _ in range(3):  # warm-up
        document = client.submit([png], model="mlp", wait=0)
        client.prediction(document["id"], wait=SYNC_WAIT)
    errors = 0
    while time.perf_counter() < stop:
        started = time.perf_counter()
        document = client.submit([png], model="mlp", wait=0)
        while document["status"] not in ("succeeded", "failed"):
            document = client.prediction(document["id"], wait=SYNC_WAIT)
        if document["status"] == "succeeded":
            latencies.append(time.perf_counter() - started)
        else:
            errors += 1
    latencies.sort()
    return {"requests": len(latencies) + errors, "errors": errors,
            "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2)
            if latencies else None}


def canvas_png(pixels) -> bytes:
    """An MNIST digit as a browser canvas sends it: 280x280, black strokes on white."""
    import numpy as np
    from PIL import Image

    big = Image.fromarray(255 - np.asarray(pixels, np.uint8), "L").resize((280, 280), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    return buffer.getvalue()


def big_requests(client, digits, sizes: list[int], runs: int) -> dict:
    """One signed multipart upload of N digits: as 28x28 MNIST-form PNGs, and as 280x280 canvas PNGs."""
    out = {}
    labels = [d[1] for d in digits]
    kinds = {"28x28": [d[0] for d in digits], "canvas 280x280": [canvas_png(d[2]) for d in digits]}
    for kind, pngs in kinds.items():
        for size in sizes:
            images = [pngs[i % 10] for i in range(size)]
            client.submit(images, model="mlp", wait=BIG_WAIT)  # warm-up
            seconds, wrong = [], 0
            for _ in range(runs):
                started = time.perf_counter()
                document = client.submit(images, model="mlp", wait=BIG_WAIT)
                elapsed = time.perf_counter() - started
                if document.get("status") != "succeeded":
                    raise RuntimeError(f"a {size}-image request did not finish within {BIG_WAIT} s: {document}")
                wrong += sum(r["digit"] != labels[i % 10] for i, r in enumerate(document["results"]))
                seconds.append(elapsed)
            median = statistics.median(seconds)
            key = str(size) if kind == "28x28" else f"{size} {kind}"
            out[key] = {"kind": kind, "images": size, "runs": runs, "median_ms": round(median * 1000, 1),
                        "images_per_s": round(size / median, 1), "wrong_digits": wrong}
    return out


# -- report ---------------------------------------------------------------------------------------------


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# DigitServe throughput (bench/perf.py), {report['date']}", "",
             f"{m['cpu_model']}, {m['cores']} cores; load average at start {' '.join(m['loadavg_start'])}, "
             f"at end {' '.join(m['loadavg_end'])}. {report['settings']['method']}", "",
             "| cell | conc | req/s | p50 ms | p99 ms | errors | BentoML req/s | BentoML p50 / p99 ms | ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    peer = report["cells"].get("bentoml", {})
    for name in ("v1_sync", "v2_json", "v2_binary", "v1_sync_batch1"):
        for conc, cell in report["cells"].get(name, {}).items():
            p = peer.get(conc) if name != "v1_sync_batch1" else None
            ratio = report["ratios"].get(name, {}).get(conc) if p else None
            lines.append(f"| {name} | {conc} | {fmt(cell['rps'])} | {fmt(cell['p50_ms'], 2)} | "
                         f"{fmt(cell['p99_ms'], 2)} | {cell['errors']} | {fmt(p['rps']) if p else '-'} | "
                         f"{(fmt(p['p50_ms'], 2) + ' / ' + fmt(p['p99_ms'], 2)) if p else '-'} | "
                         f"{fmt(ratio, 2) if ratio else '-'} |")
    wakes = {f"{n} c={c}": v["worker_wake_s"] for n in ("v1_sync", "v1_sync_batch1")
             for c, v in report["cells"].get(n, {}).items() if v.get("worker_wake_s") is not None}
    if wakes:
        lines += ["", "Worker wake-up before the v1 cells (s): " + ", ".join(f"{k} {v}" for k, v in wakes.items())
                  + f"; async {report['async_c1'].get('worker_wake_s')}."]
    if "error" in report["peer"]:
        lines += ["", f"BentoML: not measured — {report['peer']['error']}"]
    a = report["async_c1"]
    lines += ["", "Big requests: one signed multipart sync request (wait=30) with N PNG digits, median of the "
                  "runs, images/s = N / latency; 28x28 digits are already in MNIST's form (taken as they are), "
                  "280x280 canvas digits go through the whole preprocessing."]
    lines += ["", f"Async c=1 (signed client, submit then GET ?wait=10): p50 {fmt(a['p50_ms'], 2)} ms, "
                  f"p99 {fmt(a['p99_ms'], 2)} ms, {a['requests']} requests, {a['errors']} errors.", "",
              "| images in one request (sync) | PNG | median ms | images/s | wrong digits |",
              "| ---: | --- | ---: | ---: | ---: |"]
    for big in report["big_requests"].values():
        lines.append(f"| {big['images']} | {big['kind']} | {fmt(big['median_ms'])} | {fmt(big['images_per_s'])} | "
                     f"{big['wrong_digits']} |")
    lines += ["", "| raw compute (LoadedModel.probabilities, 1 TF thread) | ms/call | images/s |",
              "| --- | ---: | ---: |"]
    for c in report["compute"]:
        lines.append(f"| batch {c['batch']} | {c['ms_per_call']:.3f} | {fmt(c['images_per_s'])} |")
    cpu = report["cpu_ms_per_request_v1_c16"]
    lines += ["", f"CPU per request, v1 sync c=16: web {cpu['web']} ms, worker {cpu['worker']} ms "
                  f"({cpu['note']}). RSS at the end: web {report['rss_mb']['web']} MB, "
                  f"worker {report['rss_mb']['worker']} MB.", "",
              "| goal | measured | met |", "| --- | --- | --- |"]
    for key, goal in report["goals"].items():
        met = "yes" if goal["met"] else "no" if goal["met"] is False else "n/a"
        if goal.get("caveat"):
            met += f" ({goal['caveat']})"
        lines.append(f"| {goal['goal']} | {goal['measured']} | {met} |")
    lines += ["", "Correctness: " + ("every digit right" if report["correctness"]["all_correct"] else "WRONG") +
              " (" + ", ".join(f"{r['label']}: v1 {r['v1']}, v2 {r['v2']}" + (f", BentoML {r['peer']}"
                                                                              if "peer" in r else "")
                                for r in report["correctness"]["digits"]) + ")."]
    if report.get("notes"):
        lines += [""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def goals(report: dict) -> dict:
    cells, peer = report["cells"], report["cells"].get("bentoml")
    out = {}

    def vs_peer(key, name, factor):
        ours = cells[name].get("16")
        theirs = peer.get("16") if peer else None
        if not ours or not theirs or not theirs["rps"]:
            out[key] = {"goal": GOALS[key], "measured": f"{fmt(ours and ours['rps'])} req/s, no peer", "met": None}
            return
        ratio = ours["rps"] / theirs["rps"]
        out[key] = {"goal": GOALS[key], "ratio": round(ratio, 2),
                    "measured": f"{ours['rps']:.0f} vs {theirs['rps']:.0f} req/s = {ratio:.2f} x, "
                                f"p99 {ours['p99_ms']:.0f} ms",
                    "met": ratio >= factor and ours["p99_ms"] <= 150}

    vs_peer("v1_sync_c16_vs_peer", "v1_sync", 0.5)
    best_v2 = max(("v2_json", "v2_binary"), key=lambda n: (cells[n].get("16") or {}).get("rps") or 0)
    vs_peer("v2_c16_vs_peer", best_v2, 1.0)
    out["v2_c16_vs_peer"]["measured"] += f" ({best_v2})"
    a = report["async_c1"]["p50_ms"]
    out["async_c1_p50"] = {"goal": GOALS["async_c1_p50"], "measured": f"p50 {fmt(a, 2)} ms",
                           "met": a is not None and a <= 15}
    big = report["big_requests"].get("256", {}).get("images_per_s")
    canvas = report["big_requests"].get("256 canvas 280x280", {}).get("images_per_s")
    out["big_256_images_per_s"] = {"goal": GOALS["big_256_images_per_s"],
                                   "measured": f"{fmt(big)} images/s (28x28 MNIST-form PNGs; 280x280 canvas PNGs: "
                                               f"{fmt(canvas)} images/s)",
                                   "met": big is not None and big >= 3000}
    on, off = cells["v1_sync"], cells.get("v1_sync_batch1", {})
    if "64" in on and "64" in off and "1" in on and "1" in off:
        gain = on["64"]["rps"] / off["64"]["rps"]
        p50_change = on["1"]["p50_ms"] / off["1"]["p50_ms"] - 1
        out["batching_c64"] = {"goal": GOALS["batching_c64"],
                               "measured": f"c=64 {on['64']['rps']:.0f} vs {off['64']['rps']:.0f} req/s = "
                                           f"{gain:.2f} x; c=1 p50 {on['1']['p50_ms']:.2f} vs "
                                           f"{off['1']['p50_ms']:.2f} ms ({p50_change:+.0%})",
                               "met": gain >= 3 and p50_change <= 0.10}
    else:
        out["batching_c64"] = {"goal": GOALS["batching_c64"], "measured": "not measured", "met": None}
    return out


# -- main -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--repetitions", type=int, default=3, help="wrk runs per cell; the median is reported")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--async-seconds", type=float, default=10.0)
    parser.add_argument("--big-runs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=60000)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--compute-seconds", type=float, default=3.0)
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST)
    parser.add_argument("--peer-venv", default="/tmp/bentoml-venv",
                        help="BentoML's virtual environment (created with pip when missing)")
    parser.add_argument("--peer-install-timeout", type=float, default=900)
    parser.add_argument("--no-peer", action="store_true", help="skip BentoML")
    parser.add_argument("--no-batching-comparison", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "perf.json"))
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    if not Path(WRK).exists():
        raise SystemExit("wrk is needed (apt-get install wrk)")

    from server.cli.client import Client

    started_at = dt.datetime.now(dt.timezone.utc)
    loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
    others = {"at_start": other_benchmarks_running()}
    digits, x_test = mnist_digits(Path(args.mnist_dir))
    stack = Stack(Path(args.mnist_dir))
    # batching as shipped (BATCH_MAX_SIZE, BATCH_MAX_WAIT_MS defaults)
    stack.settings = stack.settings.replace(allow_bearer_keys=True, rate_limit_per_minute=0, max_images=256)
    shipped_batching = {"batch_max_size": stack.settings.batch_max_size,
                        "batch_max_wait_ms": stack.settings.batch_max_wait_ms}
    peer: Peer | None = None
    peer_info: dict = {}
    notes: list[str] = []
    failed = False
    try:
        log(f"database {stack.db_name}, Redis prefix {stack.prefix!r}, scratch {stack.scratch}")
        stack.create_database()
        log(f"training the MLP (default architecture, {args.train_epochs} epoch(s) on {args.train_limit} images)")
        stack.train("mlp", args.train_epochs, args.train_limit)
        compute, compute_info = measure_compute(stack, ["mlp"], x_test, 1, args.compute_seconds)
        info = stack.services.registry.get("mlp")
        model_path = Path(stack.services.registry.fetch_file(info))

        log(f"starting `digitserve serve` (port {stack.settings.port}) and `digitserve worker`")
        stack.start()
        key_id, secret = stack.api_key()
        bearer = f"Bearer {key_id}.{secret}"
        client = Client(stack.url, key_id, secret, timeout=BIG_WAIT + 20)

        if not args.no_peer:
            peer = Peer(Path(args.peer_venv), stack.scratch)
            try:
                started = time.monotonic()
                peer.ensure_venv(args.peer_install_timeout)
                peer.start(model_path)
                peer_info = {"bentoml": peer.version, "venv": str(peer.venv),
                             "setup_s": round(time.monotonic() - started, 1),
                             "service": f"@bentoml.service(workers=1), @bentoml.api(batchable=True, "
                                        f"max_batch_size={PEER_BATCH}, max_latency_ms=10000), input "
                                        "list[PIL.Image.Image] posted as multipart field `image`; Pillow decode, "
                                        "/255, the same .keras file through a tf.function, 1 TF thread"}
                log(f"BentoML {peer.version} serving on {peer.url}")
            except Exception as exc:
                log(f"BentoML could not be started: {exc}")
                peer_info = {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
                peer.stop()
                peer = None
        else:
            peer_info = {"error": "skipped (--no-peer)"}

        log("correctness: each class's PNG through v1 sync and v2" + (" and BentoML" if peer else ""))
        correctness = check_digits(stack, client, digits, bearer, peer)
        log("every digit right")

        png, _, pixels = digits[7]
        scripts = stack.scratch / "wrk"
        scripts.mkdir()

        def script(name: str, method: str, path: str, headers: dict, body: bytes) -> Path:
            body_file = scripts / f"{name}.body"
            body_file.write_bytes(body)
            lua = scripts / f"{name}.lua"
            lua.write_text(lua_script(method, path, headers, body_file))
            return lua

        def ds_scripts() -> dict[str, Path]:
            body, ctype = multipart({"wait": str(SYNC_WAIT), "model": "mlp"}, [("image", "digit.png", png)])
            binary, header_len = v2_binary(pixels)
            return {
                "v1_sync": script("v1", "POST", "/api/v1/predictions",
                                  {"Authorization": bearer, "Content-Type": ctype}, body),
                "v2_json": script("v2json", "POST", "/v2/models/mlp/infer",
                                  {"Authorization": bearer, "Content-Type": "application/json"}, v2_json(pixels)),
                "v2_binary": script("v2bin", "POST", "/v2/models/mlp/infer",
                                    {"Authorization": bearer, "Content-Type": "application/octet-stream",
                                     "Inference-Header-Content-Length": str(header_len)}, binary),
            }

        lua = ds_scripts()
        if peer:
            body, ctype = multipart({}, [("image", "digit.png", png)])
            lua["bentoml"] = script("peer", "POST", "/classify", {"Content-Type": ctype}, body)

        def cell(name: str, url: str, conc: int) -> dict:
            wake = wake_worker(client, png) if name == "v1_sync" else None
            run_wrk(url, lua[name], conc, min(3.0, args.duration))  # warm-up, not counted
            runs = [run_wrk(url, lua[name], conc, args.duration) for _ in range(args.repetitions)]
            result = median_cell(runs)
            if wake is not None:
                result["worker_wake_s"] = wake
            log(f"{name:<10} c={conc:<3} {fmt(result['rps'])} req/s, p50 {fmt(result['p50_ms'], 2)} ms, "
                f"p99 {fmt(result['p99_ms'], 2)} ms, errors {result['errors']}")
            return result

        cells: dict[str, dict] = {"v1_sync": {}, "v2_json": {}, "v2_binary": {}}
        cpu_c16 = None
        for conc in args.concurrency:
            if peer:
                cells.setdefault("bentoml", {})[str(conc)] = cell("bentoml", peer.url, conc)
            for name in ("v1_sync", "v2_json", "v2_binary"):
                if name == "v1_sync" and conc == 16:
                    pids = {"web": [stack.web.pid], "worker": [stack.worker.pid]}
                    before = {k: cpu_seconds(v) for k, v in pids.items()}
                    result = cell(name, stack.url, conc)
                    used = {k: cpu_seconds(v) - before[k] for k, v in pids.items()}
                    # warm-up run included in the CPU time: count its requests too (approximately)
                    counted = result["requests"] * (1 + min(3.0, args.duration) / (args.duration * args.repetitions))
                    cpu_c16 = {k: round(v * 1000 / max(1, counted), 2) for k, v in used.items()}
                    cpu_c16["note"] = ("user+system CPU of each process during the warm-up and the measured runs, "
                                       "divided by their requests; warm-up requests estimated from its duration")
                else:
                    result = cell(name, stack.url, conc)
                cells[name][str(conc)] = result
                for child in (stack.web, stack.worker):
                    if not child.alive():
                        raise RuntimeError(f"`digitserve {child.args[0]}` died:\n{child.tail()}")

        log(f"async c=1 for {args.async_seconds:g} s")
        wake_async = wake_worker(client, png)
        async_c1 = async_cell(client, png, args.async_seconds)
        async_c1["worker_wake_s"] = wake_async
        log(f"async c=1 p50 {async_c1['p50_ms']} ms")
        log("big requests: 16 and 256 PNG digits in one sync request")
        wake_worker(client, png)
        big = big_requests(client, digits, [16, 256], args.big_runs)
        log(f"big requests: {big}")
        rss = {"web": rss_mb(stack.web.pid), "worker": rss_mb(stack.worker.pid)}
        if peer:
            peer.stop()

        if not args.no_batching_comparison:
            others["before_batching_comparison"] = other_benchmarks_running()
            log("batching comparison: restarting web and worker with BATCH_MAX_SIZE=1")
            restart(stack, batch_max_size=1)
            client = Client(stack.url, key_id, secret, timeout=BIG_WAIT + 20)
            cells["v1_sync_batch1"] = {}
            for conc in (1, 64):
                cells["v1_sync_batch1"][str(conc)] = cell("v1_sync", stack.url, conc)

        ratios = {}
        if "bentoml" in cells:
            for name in ("v1_sync", "v2_json", "v2_binary"):
                ratios[name] = {c: round(cells[name][c]["rps"] / cells["bentoml"][c]["rps"], 2)
                                for c in cells[name] if cells["bentoml"].get(c, {}).get("rps")}

        import tensorflow as tf

        report = {
            "date": started_at.isoformat(timespec="seconds"),
            "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "loadavg_start": loadavg_start,
                        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
                        "tensorflow": tf.__version__},
            "settings": {
                "method": (f"wrk -t1 --latency, {args.repetitions} run(s) of {args.duration:g} s per cell after a "
                           f"{min(3.0, args.duration):g} s warm-up; medians of the runs; one web + one worker "
                           "process; wrk, MariaDB, Redis and the peer share the same cores"),
                "duration_s": args.duration, "repetitions": args.repetitions, "concurrency": args.concurrency,
                "web_threads": stack.settings.web_threads, "tf_threads": stack.settings.tf_threads,
                **shipped_batching, "allow_bearer_keys": True,
                "rate_limit_per_minute": 0, "max_images": 256,
                "image": "MNIST test digit 7 (first of its class) as a 28x28 PNG",
                "v1_sync": f"POST /api/v1/predictions multipart image + model=mlp + wait={SYNC_WAIT}, Bearer key",
                "v2_json": "POST /v2/models/mlp/infer JSON, UINT8 [1,784]",
                "v2_binary": "POST /v2/models/mlp/infer, binary tensor extension, UINT8 [1,784]",
                "model": compute_info["architectures"]["mlp"],
                "training": f"{args.train_epochs} epoch(s) on the first {args.train_limit} training images",
            },
            "peer": peer_info,
            "correctness": correctness,
            "cells": cells,
            "ratios": ratios,
            "async_c1": async_c1,
            "big_requests": big,
            "compute": compute,
            "cpu_ms_per_request_v1_c16": cpu_c16,
            "rss_mb": rss,
            "notes": notes,
        }
        others["at_end"] = other_benchmarks_running()
        report["other_benchmarks_running"] = others
        notes += NOTES
        if any(others.values()):
            notes.append(f"Other benchmarks ran on the same machine during this run: {others}")
        if max(float(loadavg_start[0]), float(report["machine"]["loadavg_end"][0])) > (os.cpu_count() or 1):
            notes.append("The load average exceeded the number of cores during the run: other jobs used the same "
                         "cores, so absolute figures are depressed (ratios less so: the cells alternate).")
        report["goals"] = goals(report)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(report))
        print(markdown(report))
        log(f"wrote {out} and {out.with_suffix('.md')}")
        return 0
    except BaseException as exc:
        failed = True
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise
    finally:
        if peer is not None:
            peer.stop()
        log("cleaning up: processes, database, Redis keys")
        stack.close()
        if failed or args.keep_logs:
            log(f"process logs kept in {stack.scratch}")
        else:
            shutil.rmtree(stack.scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
