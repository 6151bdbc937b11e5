"""All configuration, read once from the environment (12-factor).

Each setting is one dataclass field whose metadata names its environment
variable; `from_env` reads them and `to_env` writes them back, the one way
settings reach a child process.
"""
from __future__ import annotations

import os
import secrets
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "insecure"}
DEFAULT_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)


class SettingsError(ValueError):
    pass


def env(name: str, default: Any, *, doc: str = "") -> Any:
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class Settings:
    database_url: str = env("DATABASE_URL", "")  # empty: sqlite in VAR_DIR
    redis_url: str = env("REDIS_URL", "redis://127.0.0.1:6379/0")
    secret_key: str = env("SECRET_KEY", "")
    environment: str = env("DIGITSERVE_ENV", "development")
    var_dir: Path = env("VAR_DIR", Path("var"))
    mnist_dir: Path = env("MNIST_DIR", Path("data/mnist"))
    mnist_mirrors: tuple[str, ...] = env("MNIST_MIRRORS", DEFAULT_MIRRORS)
    model_cache_dir: Path = env("MODEL_CACHE_DIR", Path())  # empty: VAR_DIR/models
    host: str = env("HOST", "127.0.0.1")
    port: int = env("PORT", 8080)
    # queues and workers
    queue_name: str = env("QUEUE_NAME", "predictions")
    queue_max_length: int = env("QUEUE_MAX_LENGTH", 1000)
    job_timeout: int = env("JOB_TIMEOUT", 60)
    job_retries: int = env("JOB_RETRIES", 2)
    job_stale_after: float = env("JOB_STALE_AFTER", 30.0)  # grace before the sweeper re-queues a lost job
    batch_max_size: int = env("BATCH_MAX_SIZE", 64)  # predictions stored and queued together; 1 = one by one
    # how long a batch being formed may wait for requests still being read and preprocessed, or
    # while an earlier job still waits for a worker (a lone request to idle workers never waits);
    # 0 = take only what is already there
    batch_max_wait_ms: float = env("BATCH_MAX_WAIT_MS", 20.0)
    result_ttl: int = env("RESULT_TTL", 600)
    worker_heartbeat_ttl: float = env("WORKER_HEARTBEAT_TTL", 6.0)  # a worker silent this long is dead
    notice_ttl: int = env("NOTICE_TTL", 60)  # how long a result notice waits for a late waiter
    retention_days: float = env("RETENTION_DAYS", 0.0)  # finished predictions older than this are deleted; 0 keeps all
    max_wait: float = env("MAX_WAIT", 30.0)
    model_poll_seconds: float = env("MODEL_POLL_SECONDS", 2.0)
    tf_threads: int = env("TF_THREADS", 0)  # 0: 1 per serving process, every core for training
    default_model: str = env("DEFAULT_MODEL", "")
    web_threads: int = env("WEB_THREADS", 32)
    # a client silent this long while sending a request gets a 408 and frees its web thread
    web_read_timeout: float = env("WEB_READ_TIMEOUT", 5.0)
    # the whole request (line, headers, body) must arrive within this: a client trickling a byte now
    # and then is never silent for WEB_READ_TIMEOUT, so only a total deadline frees its thread
    web_request_deadline: float = env("WEB_REQUEST_DEADLINE", 30.0)
    # connections accepted but waiting for a free web thread; beyond this they get a 503 at once
    web_accept_queue: int = env("WEB_ACCEPT_QUEUE", 256)
    db_pool_size: int = env("DB_POOL_SIZE", 20)
    db_timeout: float = env("DB_TIMEOUT", 5.0)  # connect, read, write and pool waits on the database
    log_requests: bool = env("LOG_REQUESTS", False)
    log_format: str = env("LOG_FORMAT", "text")  # text, or json: one object a line with request ids
    metrics: str = env("METRICS", "off")  # /metrics on the web port: off, token (METRICS_TOKEN) or open
    metrics_token: str = env("METRICS_TOKEN", "")
    metrics_port: int = env("METRICS_PORT", 0)  # >0: /metrics served openly on this port of its own
    # uploads
    max_body_bytes: int = env("MAX_BODY_BYTES", 4 * 1024 * 1024)
    max_images: int = env("MAX_IMAGES", 16)
    max_image_pixels: int = env("MAX_IMAGE_PIXELS", 16_000_000)
    # security
    allow_bearer_keys: bool = env("ALLOW_BEARER_KEYS", False)
    signature_window: int = env("SIGNATURE_WINDOW", 300)
    nonce_ttl: int = env("NONCE_TTL", 900)
    # keys, users and active model versions kept in each process this long at most; changes made
    # through the platform reach every process at once (Redis pub/sub); 0 turns the caches off
    cache_ttl: float = env("CACHE_TTL", 60.0)
    session_idle_seconds: int = env("SESSION_IDLE_SECONDS", 3600)
    rate_limit_per_minute: float = env("RATE_LIMIT_PER_MINUTE", 120.0)
    rate_limit_burst: int = env("RATE_LIMIT_BURST", 30)
    login_max_failures: int = env("LOGIN_MAX_FAILURES", 5)
    login_lockout_seconds: int = env("LOGIN_LOCKOUT_SECONDS", 60)
    # training jobs: their own queue, with a long timeout
    training_queue_name: str = env("TRAINING_QUEUE_NAME", "training")
    training_job_timeout: int = env("TRAINING_JOB_TIMEOUT", 6 * 3600)
    # gated retraining: the candidate may be this much less accurate on the MNIST test set (0.002 = 0.2
    # percentage points) and must beat the active version on the held-out share of accepted feedback
    retrain_mnist_tolerance: float = env("RETRAIN_MNIST_TOLERANCE", 0.002)
    retrain_holdout_share: float = env("RETRAIN_HOLDOUT_SHARE", 0.2)
    # extra `digitserve train mlp` arguments (shell words) for the default model `digitserve init` trains
    init_train_args: str = env("INIT_TRAIN_ARGS", "")
    # which prefix Redis keys get (tests isolate themselves with it)
    redis_prefix: str = env("REDIS_PREFIX", "ds:")

    def __post_init__(self):
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{Path(self.var_dir) / 'digitserve.db'}")
        if self.model_cache_dir == Path():
            object.__setattr__(self, "model_cache_dir", Path(self.var_dir) / "models")

    @property
    def production(self) -> bool:
        return self.environment == "production"

    def init_train_argv(self) -> tuple[str, ...]:
        try:
            return tuple(shlex.split(self.init_train_args))
        except ValueError as exc:
            raise SettingsError(f"INIT_TRAIN_ARGS must be shell-style arguments: {exc}") from None

    def serving_threads(self) -> int:
        """TensorFlow threads for a web or worker process (they share the cores)."""
        return self.tf_threads or 1

    def training_threads(self) -> int:
        return self.tf_threads or min(os.cpu_count() or 2, 8)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f.metadata["env"], raw, f.default)
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """These settings as the environment variables `from_env` reads back."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                text = "1" if value else "0"
            elif isinstance(value, tuple):
                text = ",".join(value)
            else:
                text = str(value)
            out[f.metadata["env"]] = text
        return out

    def validate(self) -> None:
        if self.production and (
            self.secret_key.strip().lower() in PLACEHOLDER_SECRETS or len(self.secret_key) < 32
        ):
            raise SettingsError(
                "SECRET_KEY must be set to a random value of at least 32 characters in production"
            )
        if not 0 <= self.max_wait <= 30:
            raise SettingsError("MAX_WAIT must be between 0 and 30 seconds")
        if self.job_timeout < 1:
            raise SettingsError("JOB_TIMEOUT must be at least 1 second")
        if self.web_read_timeout <= 0 or self.web_request_deadline < self.web_read_timeout:
            raise SettingsError("WEB_READ_TIMEOUT must be positive and WEB_REQUEST_DEADLINE at least as long")
        if self.web_accept_queue < 1:
            raise SettingsError("WEB_ACCEPT_QUEUE must be at least 1")
        if self.training_job_timeout < 60:
            raise SettingsError("TRAINING_JOB_TIMEOUT must be at least 60 seconds")
        if not 0 <= self.retrain_mnist_tolerance < 1:
            raise SettingsError("RETRAIN_MNIST_TOLERANCE must be a fraction from 0 to 1 (0.002 = 0.2 points)")
        if not 0 < self.retrain_holdout_share < 1:
            raise SettingsError("RETRAIN_HOLDOUT_SHARE must be between 0 and 1")
        if self.job_stale_after < 1:
            raise SettingsError("JOB_STALE_AFTER must be at least 1 second")
        self.init_train_argv()
        if self.log_format not in ("text", "json"):
            raise SettingsError("LOG_FORMAT must be text or json")
        if self.metrics not in ("off", "token", "open"):
            raise SettingsError("METRICS must be off, token or open")
        if self.metrics == "token" and len(self.metrics_token) < 16:
            raise SettingsError("METRICS=token needs METRICS_TOKEN of at least 16 characters")

    def with_secret(self) -> "Settings":
        """Local runs: use SECRET_KEY, or one generated once into var/secret_key (never in production)."""
        if self.secret_key or self.production:
            return self
        path = self.var_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return replace(self, secret_key=path.read_text().strip())

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)


def _parse(name: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, (int, float)):
        cast = type(default)
        try:
            return cast(raw)
        except ValueError:
            kind = "an integer" if cast is int else "a number"
            raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None
    if isinstance(default, Path):
        return Path(raw)
    if isinstance(default, tuple):
        return tuple(item.strip() for item in raw.split(",") if item.strip()) or default
    return raw
