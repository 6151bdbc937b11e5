"""The real deployment: build the images and run docker-compose.yml in a real container engine.

Rootful podman + podman-compose, every image built from a local Debian base
(docker-compose.local.yml), because no container registry is reachable here. Opt-in:
`make deploy-test` (or `pytest -m deploy`); `make test` leaves it out. Needs root.

What it checks, in order (the tests share one stack and run in file order):
the stack comes up healthy with two workers; an admin is created the way the README says;
a user registers, logs in and makes an API key; signed predictions of real MNIST test
digits come back right through nginx; scaled to three workers, jobs are served by more than
one worker; a worker killed while it holds a job does not lose it; `down` removes
containers, volumes and networks (the base image cache stays).
"""
from __future__ import annotations

import http.cookiejar
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import MNIST_DIR, ROOT

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1200)]

PROJECT = os.environ.get("DEPLOY_TEST_PROJECT", "dsdeploytest")
COMPOSE_FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.local.yml"]
BASE_IMAGE = "localhost/debian:bookworm"
ADMIN_EMAIL, USER_EMAIL = "admin@example.com", "deploy-user@example.com"
PASSWORD = "a-long-deploy-test-password-1"
# the default MLP init trains: small enough for CI, still right on clear digits
INIT_TRAIN_ARGS = "--limit 20000 --epochs 2 --quiet"
TIMINGS: dict[str, float] = {}


# -- running things ------------------------------------------------------------------------------


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=ROOT, env=env, input=input, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}")
    return result


class Stack:
    def __init__(self, env: dict[str, str], port: int):
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.killed: set[str] = set()

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        return run(["podman-compose", "-p", PROJECT, *COMPOSE_FILES, *args], self.env, timeout, check)

    def containers(self, service: str | None = None, all: bool = False) -> list[str]:
        label = f"io.podman.compose.service={service}" if service else None
        argv = ["podman", "ps", "--format", "{{.Names}}", "--filter", f"label=io.podman.compose.project={PROJECT}"]
        if label:
            argv += ["--filter", f"label={label}"]
        if all:
            argv.append("-a")
        return sorted(run(argv).stdout.split())

    def one(self, service: str) -> str:
        names = self.containers(service, all=True)
        assert names, f"no {service} container"
        return names[0]

    def logs(self, tail: int = 60) -> str:
        out = []
        for name in self.containers(all=True):
            result = run(["podman", "logs", "--tail", str(tail), name], check=False)
            state = run(["podman", "inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}}", name],
                        check=False).stdout.strip()
            out.append(f"===== {name} ({state})\n{result.stdout}{result.stderr}")
        return "\n".join(out)

    def fail(self, message: str):
        pytest.fail(f"{message}\n\ncontainer logs (last lines):\n{self.logs()}", pytrace=False)

    def wait(self, what: str, predicate, timeout: float, interval: float = 2.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as exc:  # keep the last error for the message
                last = exc
            time.sleep(interval)
        self.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last!r})")

    def healthy(self, name: str) -> bool:
        """Podman runs healthchecks only when asked; this asks (what depends_on: service_healthy needs)."""
        return run(["podman", "healthcheck", "run", name], check=False, timeout=60).returncode == 0

    def redis(self, *commands: str) -> list[str]:
        """Run redis-cli commands (one per line) inside the redis container; one answer per line."""
        script = "".join(f"{c}\n" for c in commands)
        result = run(["podman", "exec", "-i", self.one("redis"), "sh", "-c",
                      'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli'], input=script, timeout=60)
        return result.stdout.splitlines()

    def sql(self, query: str) -> list[list[str]]:
        """Run one query with the mariadb client inside the database container; rows of tab-separated fields."""
        result = run(["podman", "exec", "-i", self.one("mysql"), "sh", "-c",
                      'exec mariadb -N -B -u"$MARIADB_USER" -p"$MARIADB_PASSWORD" "$MARIADB_DATABASE"'],
                     input=query, timeout=60)
        return [line.split("\t") for line in result.stdout.splitlines()]

    def http(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
             opener=None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, {"raw": raw.decode("utf-8", "replace")[:500]}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SETUP_FAILED: list[str] = []


@pytest.fixture(autouse=True)
def _one_failure_stops_the_rest(request):
    """The steps build on each other: after a failure the rest would only fail confusingly."""
    if SETUP_FAILED:
        pytest.fail(f"the stack could not be set up: {SETUP_FAILED[0]}", pytrace=False)
    if request.session.testsfailed and "down" not in request.node.name:
        pytest.skip("an earlier deploy step failed")


@pytest.fixture(scope="module")
def stack():
    try:
        yield from _stack()
    except BaseException as exc:
        if not SETUP_FAILED:
            SETUP_FAILED.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        raise


def _stack():
    if os.geteuid() != 0:
        pytest.fail("the deploy test runs rootful podman: run it as root (CI does)", pytrace=False)
    started = time.monotonic()
    run(["bash", str(ROOT / "deploy" / "podman-setup.sh"), "--base"], timeout=900)
    TIMINGS["setup (podman, base image)"] = time.monotonic() - started
    assert shutil.which("podman-compose"), "deploy/podman-setup.sh did not install podman-compose"
    assert (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists() or (MNIST_DIR / "t10k-images-idx3-ubyte").exists(), \
        f"MNIST is not in {MNIST_DIR} (set MNIST_DIR)"

    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DIGITSERVE_", "DATABASE_", "REDIS_"))},
        "MYSQL_PASSWORD": secrets.token_hex(16),
        "REDIS_PASSWORD": secrets.token_hex(16),
        "SECRET_KEY": secrets.token_hex(32),
        "HTTP_BIND": "127.0.0.1",
        "HTTP_PORT": str(port),
        "WORKERS": "2",
        "MNIST_SOURCE": str(MNIST_DIR.resolve()),
        "MNIST_MOUNT_MODE": "ro",
        "INIT_TRAIN_ARGS": INIT_TRAIN_ARGS,
        # a job held by a dead worker is re-queued by the others' sweep after this many seconds
        "JOB_TIMEOUT": "20",
        "JOB_STALE_AFTER": "3",
        "MODEL_POLL_SECONDS": "1",
        "RATE_LIMIT_PER_MINUTE": "6000",
        "RATE_LIMIT_BURST": "500",
    }
    stack = Stack(env, port)
    stack.compose("down", "-v", "-t", "5", check=False)  # leftovers of an interrupted run
    _remove_leftovers()

    started = time.monotonic()
    stack.compose("build")
    TIMINGS["build images"] = time.monotonic() - started
    try:
        yield stack
    finally:
        if os.environ.get("DEPLOY_TEST_KEEP"):
            print(f"DEPLOY_TEST_KEEP set: stack {PROJECT} left running at {stack.url}")
        else:
            stack.compose("down", "-v", "-t", "10", check=False)
            _remove_leftovers()
        print("\ndeploy test timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()))


def _remove_leftovers() -> None:
    label = f"label=io.podman.compose.project={PROJECT}"
    for name in run(["podman", "ps", "-aq", "--filter", label], check=False).stdout.split():
        run(["podman", "rm", "-f", "-t", "0", name], check=False)
    run(["podman", "pod", "rm", "-f", f"pod_{PROJECT}"], check=False)
    for volume in run(["podman", "volume", "ls", "-q", "--filter", label], check=False).stdout.split():
        run(["podman", "volume", "rm", "-f", volume], check=False)
    run(["podman", "network", "rm", "-f", f"{PROJECT}_default"], check=False)


# -- the tests -----------------------------------------------------------------------------------


def test_the_stack_comes_up_healthy_with_two_workers(stack):
    """`up` in dependency order, each step once the one before is healthy.

    podman 4.3 ignores `condition: service_healthy`, and podman-compose's `--requires` links
    between containers break `podman start` there ("generating dependency graph ... not found in
    input list"), so the test runs `up --no-deps` per step and asks for the healthchecks itself.
    `docker compose up -d` does all of this from the depends_on conditions.
    """
    started = time.monotonic()
    # 1. the data stores, until their healthchecks pass
    stack.compose("up", "-d", "--no-deps", "mysql", "redis")
    for service in ("mysql", "redis"):
        name = stack.one(service)
        stack.wait(f"{service} to be healthy", lambda: stack.healthy(name), 120)
    # 2. the one-shot init: migrate, train the default MLP (none is registered yet)
    stack.compose("up", "-d", "--no-deps", "init")
    init = stack.one("init")
    code = run(["podman", "wait", init], timeout=600).stdout.strip()
    if code != "0":
        stack.fail(f"init exited {code}")
    init_log = run(["podman", "logs", init]).stdout
    assert "training the default MLP" in init_log, init_log
    TIMINGS["init (migrate, train)"] = time.monotonic() - started
    # 3. web and the workers, until web is ready (DB, Redis, a live worker, an active model)
    stack.compose("up", "-d", "--no-deps", "web", "worker")
    web = stack.one("web")
    stack.wait("web to be healthy (/readyz)", lambda: stack.healthy(web), 240)
    # 4. nginx, the only published port
    stack.compose("up", "-d", "--no-deps", "nginx")
    stack.wait("nginx to serve /readyz", lambda: stack.http("GET", "/readyz")[0] == 200, 60, 1)
    stack.wait("nginx's healthcheck", lambda: stack.healthy(stack.one("nginx")), 30)
    TIMINGS["up until ready"] = time.monotonic() - started

    assert len(stack.containers("worker")) == 2
    status, ready = stack.http("GET", "/readyz")
    assert status == 200 and all(v == "ok" for v in ready["checks"].values()), ready
    # only nginx is published, and only on 127.0.0.1
    ports = run(["podman", "ps", "--format", "{{.Names}} {{.Ports}}", "--filter",
                 f"label=io.podman.compose.project={PROJECT}"]).stdout
    published = [line for line in ports.splitlines() if "->" in line]
    assert len(published) == 1 and "nginx" in published[0] and "127.0.0.1:" in published[0], ports


def test_an_admin_is_created_in_the_web_container(stack):
    result = run(["podman", "exec", "-e", f"DIGITSERVE_PASSWORD={PASSWORD}", stack.one("web"),
                  "digitserve", "users", "create", ADMIN_EMAIL, "--admin"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"created admin {ADMIN_EMAIL}" in result.stdout


@pytest.fixture(scope="module")
def client(stack, request):
    from server.cli.client import Client

    if request.session.testsfailed:  # module fixtures are set up before the autouse check
        pytest.skip("an earlier deploy step failed")

    status, body = stack.http("POST", "/api/v1/users", {"email": USER_EMAIL, "password": PASSWORD})
    assert status == 201, body
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    status, body = stack.http("POST", "/api/v1/sessions", {"email": USER_EMAIL, "password": PASSWORD}, opener=opener)
    assert status == 200 and body.get("csrf_token"), body
    status, key = stack.http("POST", "/api/v1/keys", {"name": "deploy-test", "scopes": ["predict"]},
                             headers={"X-CSRF-Token": body["csrf_token"]}, opener=opener)
    assert status == 201 and key["key_id"] and key["secret"], key
    return Client(stack.url, key["key_id"], key["secret"])


@pytest.fixture(scope="module")
def labelled_pngs():
    """Real MNIST test digits (the first 40), upscaled 4x as PNGs, with their labels."""
    import numpy as np

    from conftest import png_bytes
    from trainers.mnist import load_mnist

    mnist = load_mnist(MNIST_DIR, download=False, progress=False)
    return [(png_bytes(np.kron(image, np.ones((4, 4), np.uint8))), int(label))
            for image, label in zip(mnist.x_test[:40], mnist.y_test[:40])]


def test_signed_predictions_through_nginx_get_the_right_digits(stack, client, labelled_pngs):
    one_per_digit = {}
    for png, label in labelled_pngs:
        one_per_digit.setdefault(label, png)
    labels = sorted(one_per_digit)
    result = client.predict([one_per_digit[d] for d in labels], model="mlp", wait=10)
    assert result["status"] == "succeeded", result
    assert [item["digit"] for item in result["results"]] == labels, result["results"]

    results = [client.predict([png], wait=10) for png, _ in labelled_pngs]
    right = sum(r["status"] == "succeeded" and r["results"][0]["digit"] == label
                for r, (_, label) in zip(results, labelled_pngs))
    assert right >= 0.9 * len(labelled_pngs), f"{right}/{len(labelled_pngs)} right"


def _served_by(stack, prediction_ids: list[str]) -> dict[str, str]:
    """Which worker ran each prediction (the prediction's `worker` column)."""
    quoted = ",".join(f"'{pid}'" for pid in prediction_ids if pid.isalnum())
    rows = stack.sql(f"SELECT id, worker FROM predictions WHERE id IN ({quoted})")
    found = {row[0]: row[1] if len(row) > 1 and row[1] != "NULL" else "" for row in rows}
    return {pid: found.get(pid, "") for pid in prediction_ids}


def _worker_names_by_container(stack) -> dict[str, str]:
    """Live worker name -> container name, from the workers' heartbeats.
    Workers are named digitserve-<hostname>-<pid>-<random>."""
    hostnames = {run(["podman", "inspect", "-f", "{{.Config.Hostname}}", name]).stdout.strip(): name
                 for name in stack.containers("worker")}
    names = [n for n in stack.redis("ZRANGE ds:workers:predictions 0 -1") if n]
    out = {}
    for worker in names:
        for hostname, container in hostnames.items():
            if worker.startswith(f"digitserve-{hostname}-"):
                out[worker] = container
    return out


def test_scaled_to_three_workers_jobs_are_served_by_more_than_one(stack, client, labelled_pngs):
    stack.compose("up", "-d", "--no-deps", "--scale", "worker=3", "worker")
    stack.env["WORKERS"] = "3"  # podman-compose's stop and down act on the replicas the file asks for
    stack.wait("three worker containers", lambda: len(stack.containers("worker")) == 3, 60, 1)
    stack.wait("three live workers", lambda: len(set(_worker_names_by_container(stack).values())) == 3,
               120)
    ids = [client.predict([png], wait=10)["id"] for png, _ in labelled_pngs[:30]]
    served = _served_by(stack, ids)
    workers = _worker_names_by_container(stack)
    by_container: dict[str, int] = {}
    for worker in served.values():
        container = workers.get(worker, f"(gone) {worker}")
        by_container[container] = by_container.get(container, 0) + 1
    print(f"30 jobs served by: {by_container}")
    assert all(served.values()), served
    assert len(by_container) >= 2, by_container


def freeze_while_blocked(stack, container: str, attempts: int = 20) -> None:
    """`podman pause` the worker at a moment its Redis connection is blocked waiting for a job."""
    address = run(["podman", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                   container]).stdout.strip()
    assert address, f"no IP address for {container}"

    def blocked() -> bool:
        for line in stack.redis("CLIENT LIST"):
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            if fields.get("addr", "").rsplit(":", 1)[0] == address and "b" in fields.get("flags", ""):
                return True
        return False

    for _ in range(attempts):
        run(["podman", "pause", container])
        if blocked():
            return
        run(["podman", "unpause", container])
        time.sleep(0.5)
    stack.fail(f"{container} was never seen blocked on the queue")


def test_a_killed_workers_job_is_run_by_another(stack, client, labelled_pngs):
    workers = _worker_names_by_container(stack)
    victim = sorted(stack.containers("worker"))[-1]
    victim_workers = {w for w, c in workers.items() if c == victim}
    assert victim_workers, workers
    # Frozen while it waits on the queue, the victim's blocking pop still takes a job from Redis:
    # that job is then held by a worker that will never run it.
    freeze_while_blocked(stack, victim)
    try:
        ids = [client.submit([png], wait=0)["id"] for png, _ in labelled_pngs[:12]]
    except BaseException:
        run(["podman", "unpause", victim], check=False)
        raise

    def unfinished():
        return [pid for pid in ids if client.prediction(pid)["status"] not in ("succeeded", "failed")]

    seen: list[list[str]] = []

    def settled():  # the same jobs unfinished on two looks 3 s apart: the live workers are done
        seen.append(unfinished())
        return len(seen) > 1 and seen[-1] == seen[-2] and ("settled", seen[-1])

    _, held = stack.wait("the live workers to finish all but the frozen worker's jobs", settled, 60, 3)
    started = time.monotonic()
    run(["podman", "kill", victim])
    stack.killed.add(victim)
    assert held, "the frozen worker took no job"
    print(f"frozen worker {victim} held {len(held)} job(s): {held}")
    stack.wait("every prediction to finish after the kill",
               lambda: all(client.prediction(pid)["status"] == "succeeded" for pid in ids), 90, 1)
    TIMINGS["killed worker's job recovered"] = time.monotonic() - started
    served = _served_by(stack, held)
    assert all(worker and worker not in victim_workers for worker in served.values()), served
    results = {pid: client.prediction(pid)["results"][0]["digit"] for pid in ids}
    right = sum(results[pid] == label for pid, (_, label) in zip(ids, labelled_pngs[:12]))
    assert right >= 10, results


def test_stop_is_graceful_then_down_removes_containers_volumes_and_networks(stack):
    # stop: each container gets its stop signal and stop_grace_period; none may need SIGKILL (137)
    running = [name for name in stack.containers() if name not in stack.killed]
    started = time.monotonic()
    stack.compose("stop")
    TIMINGS["stop"] = time.monotonic() - started
    codes = {name: run(["podman", "inspect", "-f", "{{.State.ExitCode}}", name]).stdout.strip()
             for name in running}
    print(f"exit codes after stop: {codes}")
    killed = {name: code for name, code in codes.items() if code == "137"}
    if killed:
        stack.fail(f"killed after their stop_grace_period instead of stopping on their signal: {killed}")

    started = time.monotonic()
    stack.compose("down", "-v", "-t", "30")
    TIMINGS["down"] = time.monotonic() - started
    assert stack.containers(all=True) == []
    volumes = run(["podman", "volume", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert not [v for v in volumes if v.startswith(f"{PROJECT}_")], volumes
    networks = run(["podman", "network", "ls", "--format", "{{.Name}}"]).stdout.split()
    assert not [n for n in networks if n.startswith(f"{PROJECT}_")], networks
    assert run(["podman", "image", "exists", BASE_IMAGE], check=False).returncode == 0  # the cache stays
