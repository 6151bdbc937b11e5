"""Shared fixtures: real MariaDB and Redis, a clean state per test, tiny trained models."""
from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
import sqlalchemy as sa

from core import migrate
from core.db import Base, make_engine
from server.cli.processes import Subcommand, free_port
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("MNIST_DIR") or ROOT.parent / "shared" / "data" / "mnist")
MYSQL_SERVER_URL = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_SECRET = "test-secret-key-0123456789abcdef0123456789"


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from trainers.mnist import load_mnist

    return load_mnist(mnist_dir, download=False, progress=False)


@contextlib.contextmanager
def scratch_database(prefix: str):
    """A new MariaDB database migrated to head, dropped afterwards."""
    wait_for_port("127.0.0.1", 3306)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(MYSQL_SERVER_URL)
    with server.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    url = f"{MYSQL_SERVER_URL}/{name}?charset=utf8mb4"
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        server.dispose()


@pytest.fixture(scope="session")
def mysql_url():
    """A fresh MariaDB database for this test session, migrated to head."""
    with scratch_database("ds_test") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'digitserve.db'}"
    migrate.upgrade(url)
    return url


def _clean(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        else:
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=0"))
            for table in Base.metadata.sorted_tables:
                conn.execute(sa.text(f"TRUNCATE TABLE {table.name}"))
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=1"))
    engine.dispose()


@pytest.fixture(params=["mysql", "sqlite"])
def database_url(request):
    """Each test using this runs on MariaDB and on SQLite, from empty tables."""
    url = request.getfixturevalue(f"{request.param}_url")
    _clean(url)
    return url


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own on a free port, to stop and start at will."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


class PrivateRedis:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self, persistent: bool = False) -> None:
        import subprocess

        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--dir", str(self.directory), *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for_port("127.0.0.1", self.port, 10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def mysql_db(mysql_url):
    _clean(mysql_url)
    return mysql_url


@pytest.fixture
def redis_prefix():
    """A private Redis namespace per test, removed afterwards."""
    wait_for_port("127.0.0.1", 6379)
    prefix = f"dstest:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis_lib.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    keys += list(client.scan_iter(match=f"rq:*{prefix.rstrip(':').replace(':', '-')}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def make_settings(database_url: str, prefix: str, tmp_path: Path, **changes) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        secret_key=TEST_SECRET,
        var_dir=tmp_path / "var",
        mnist_dir=MNIST_DIR,
        model_cache_dir=tmp_path / "models",
        queue_name=prefix.rstrip(":").replace(":", "-"),
        training_queue_name=prefix.rstrip(":").replace(":", "-") + "-training",
        redis_prefix=prefix,
    ).replace(**changes)


@pytest.fixture
def settings(mysql_db, redis_prefix, tmp_path) -> Settings:
    return make_settings(mysql_db, redis_prefix, tmp_path)


@pytest.fixture
def services(settings):
    from server.services.bootstrap import build

    built = build(settings)
    yield built
    built.close()


@pytest.fixture(scope="session")
def tiny_mlp_file(mnist, tmp_path_factory) -> Path:
    """An MLP trained once per session on a slice of MNIST (a few seconds), saved as .keras."""
    from trainers.train import train

    import json

    result = train("mlp", mnist, epochs=3, limit=12000, seed=1, progress=False)
    path = tmp_path_factory.mktemp("models") / "mlp.keras"
    result.model.save(path)
    path.with_suffix(".json").write_text(str(result.test_accuracy))
    # what the trainer registers with a version: the models dashboard draws it
    path.with_suffix(".meta.json").write_text(json.dumps({
        "hyperparameters": result.hyperparameters, "test_accuracy": result.test_accuracy, "metrics": result.metrics,
        "confusion_matrix": result.confusion_matrix, "curves": result.curves, "train_seconds": result.train_seconds}))
    return path


def training_record(model_file: Path) -> dict:
    """The keyword arguments `registry.register` takes for the tiny model's training record."""
    import json

    return json.loads(model_file.with_suffix(".meta.json").read_text())


@pytest.fixture
def registered_mlp(services, tiny_mlp_file):
    """The session's tiny MLP registered and active as `mlp` in this test's database."""
    accuracy = float(tiny_mlp_file.with_suffix(".json").read_text())
    return services.registry.register(
        "mlp", "mlp", tiny_mlp_file, test_accuracy=accuracy, hyperparameters={"tiny": True}, activate=True
    )


# -- the web app under WebTest ------------------------------------------------------------------

PASSWORD = "digits-are-fun-42"


@pytest.fixture
def app(services):
    from webtest import TestApp

    from server.web.app import create_app

    return TestApp(create_app(services.settings, services))


class Account:
    """A logged-in browser user: the TestApp carries its cookie; unsafe calls add the CSRF header."""

    def __init__(self, app, email: str, csrf: str, user_id: int):
        self.app, self.email, self.csrf, self.user_id = app, email, csrf, user_id

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf}

    def create_key(self, scopes=("predict",)) -> tuple[str, str]:
        res = self.app.post_json("/api/v1/keys", {"name": "test", "scopes": list(scopes)}, headers=self.headers)
        return res.json["key_id"], res.json["secret"]


def login(app, email: str, password: str = PASSWORD) -> Account:
    res = app.post_json("/api/v1/sessions", {"email": email, "password": password})
    return Account(app, email, res.json["csrf_token"], res.json["user"]["id"])


@pytest.fixture
def make_user(services):
    from server.services.accounts import create_user

    def make(email: str | None = None, role: str = "user") -> str:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        create_user(services, email, PASSWORD, role=role)
        return email

    return make


@pytest.fixture
def account(app, make_user) -> Account:
    return login(app, make_user())


@pytest.fixture
def signed(app):
    """Send a request signed with (key_id, secret), exactly as a client would."""
    from core import signing

    def send(key, method: str, path: str, body: bytes = b"", content_type: str | None = None,
             query: str = "", headers: dict | None = None, expect_errors: bool = True, **sign_kwargs):
        all_headers = signing.signed_headers(key[0], key[1], method, path, query, body, **sign_kwargs)
        if content_type:
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        url = path + (f"?{query}" if query else "")
        # a fresh cookie jar: only the signature authenticates
        app.reset()
        return app.request(url, method=method, body=body, headers=all_headers, expect_errors=expect_errors)

    return send


@pytest.fixture
def run_jobs(services):
    """Run every queued job in this process (a burst worker), as `digitserve worker` would."""
    from server.cli.worker import start_runner
    from server.queue import jobs

    name = f"test-{uuid.uuid4().hex[:6]}"
    start_runner(services, name)

    def run() -> None:
        services.queue.work(name, burst=True)

    yield run
    jobs.install(None)


def png_bytes(array) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def digit_pngs(mnist) -> dict[int, bytes]:
    """One real test-set image per digit, upscaled 4x as a PNG (white on black)."""
    import numpy as np

    found = {}
    for image, label in zip(mnist.x_test, mnist.y_test):
        if int(label) not in found:
            found[int(label)] = png_bytes(np.kron(image, np.ones((4, 4), np.uint8)))
        if len(found) == 10:
            break
    return found


# -- real processes ------------------------------------------------------------------------------


def process_env(settings: Settings, **extra) -> dict[str, str]:
    env = {**os.environ, **settings.replace(model_poll_seconds=0.5, tf_threads=1).to_env(),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_for_worker(services, timeout: float = 60.0) -> None:
    wait_until(lambda: services.queue.live_workers(), timeout, 0.2, "a worker on the queue")


@pytest.fixture
def cli_env(monkeypatch, settings):
    """`digitserve` subcommands called in this process (`main([...])`) use this test's settings."""
    for name, value in process_env(settings).items():
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture
def start_worker(settings, tmp_path):
    """Start `digitserve worker` processes on this test's database and queue."""
    started: list[Subcommand] = []

    def start(**extra) -> Subcommand:
        process = Subcommand(["worker"], process_env(settings, **extra), tmp_path / f"worker{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        # pytest shows this only when the test failed: the workers' side of the story
        print(f"--- {process.log_path.name} ---\n{process.output()[-20000:]}")


class LiveServer:
    def __init__(self, url: str, settings: Settings, services, web: Subcommand, worker: Subcommand):
        self.url, self.settings, self.services, self.web, self.worker = url, settings, services, web, worker


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, tiny_mlp_file):
    """`digitserve serve` + `digitserve worker` on their own MariaDB database, with the tiny MLP active."""
    with scratch_database("ds_live") as url:
        yield from _live_server(url, tmp_path_factory, tiny_mlp_file)


def _live_server(url, tmp_path_factory, tiny_mlp_file):
    import urllib.request

    from server.services.bootstrap import build

    base = tmp_path_factory.mktemp("live")
    prefix = f"dslive:{uuid.uuid4().hex[:8]}:"
    settings = make_settings(url, prefix, base, port=free_port())
    services = build(settings)
    services.registry.register("mlp", "mlp", tiny_mlp_file, activate=True, **training_record(tiny_mlp_file))
    # bearer keys on: v2 tooling such as tritonclient cannot sign requests
    web = Subcommand(["serve"], process_env(settings, ALLOW_BEARER_KEYS=1), base / "web.log")
    worker = Subcommand(["worker"], process_env(settings), base / "worker.log")
    live = LiveServer(f"http://127.0.0.1:{settings.port}", settings, services, web, worker)

    def up():
        try:
            return urllib.request.urlopen(live.url + "/readyz", timeout=2).status == 200
        except Exception:
            return False

    try:
        wait_until(up, 90, 0.3, "the live server to be ready")
        yield live
    finally:
        web.stop()
        worker.stop()
        services.close()
