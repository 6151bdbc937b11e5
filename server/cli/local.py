"""The local one-command run: `digitserve init` (prepare) and `digitserve run` (Redis if needed, web + worker)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import redis

from core import migrate
from core.db import wait_for_database
from core.settings import Settings
from server.cli.processes import digitserve_command
from server.services.accounts import has_admin
from server.services.bootstrap import build



def _redis_reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def ensure_redis(settings: Settings) -> subprocess.Popen | None:
    """Use the configured Redis; for a local URL with nothing listening, start redis-server for this run."""
    if _redis_reachable(settings.redis_url):
        return None
    parts = urlsplit(settings.redis_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if host not in ("127.0.0.1", "localhost", "::1") or not shutil.which("redis-server"):
        raise SystemExit(
            f"Redis is not reachable at {settings.redis_url}. Install and start it "
            f"(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL.")
    print(f"starting redis-server on {host}:{port} for this run")
    process = subprocess.Popen(
        ["redis-server", "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(50):
        if _redis_reachable(settings.redis_url):
            return process
        time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"redis-server did not start on {host}:{port}")


def prepare(settings: Settings, train_args: tuple[str, ...] = ()) -> None:
    """`digitserve init`: migrate, then make sure a model is active (training the default MLP if none exists)."""
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    services = build(settings)
    try:
        wait_for_database(services.engine, timeout=60)
        migrate.upgrade(settings.database_url)
        if not has_admin(services):
            print("no administrator yet (needed to activate models over the API): "
                  "create one with `digitserve users create EMAIL --admin`")
        if services.registry.active_versions():
            return
        registered = [v for v in services.registry.list() if v.kind == "classifier"]  # never a generator
        if registered:
            latest = max(registered, key=lambda v: v.created_at)
            services.registry.activate(latest.name, latest.version)
            print(f"no active model: activated {latest.name}:{latest.version}")
            return
        print("no model registered yet: training the default MLP on MNIST (a few minutes)")
        subprocess.run(digitserve_command("train", "mlp", "--activate", *train_args),
                       env={**os.environ, **settings.to_env()}, check=True)
    finally:
        services.close()


def run_all(settings: Settings) -> int:
    """`digitserve run`: prepare, then the web server and a worker until Ctrl-C - what compose runs, in one go."""
    redis_process = ensure_redis(settings)
    env = {**os.environ, **settings.to_env()}
    children: list[subprocess.Popen] = []
    try:
        prepare(settings)
        children.append(subprocess.Popen(digitserve_command("worker"), env=env))
        children.append(subprocess.Popen(digitserve_command("serve"), env=env))
        print(f"DigitServe is running at http://{settings.host}:{settings.port}/  (Ctrl-C to stop)", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            if any(child.poll() is not None for child in children):
                print("a process stopped; shutting down", file=sys.stderr)
                break
            stop.wait(0.5)
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"training the default model failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
        print("stopped", flush=True)
