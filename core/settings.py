"""All configuration, read once from the environment (12-factor)."""
from __future__ import annotations

import os
import secrets
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "insecure"}
DEFAULT_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)


class SettingsError(ValueError):
    pass


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _number(env: Mapping[str, str], name: str, default, cast=int):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return cast(raw)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return _number(env, name, default, int)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, float)


def _args(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(env.get(name) or ""))
    except ValueError as exc:
        raise SettingsError(f"{name} must be shell-style arguments: {exc}") from None


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/digitserve.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    secret_key: str = ""
    environment: str = "development"
    var_dir: Path = Path("var")
    mnist_dir: Path = Path("data/mnist")
    mnist_mirrors: tuple[str, ...] = DEFAULT_MIRRORS
    model_cache_dir: Path = Path("var/models")
    host: str = "127.0.0.1"
    port: int = 8080
    # queues and workers
    queue_name: str = "predictions"
    queue_max_length: int = 1000
    job_timeout: int = 60
    job_retries: int = 2
    job_stale_after: float = 30.0  # grace before the sweeper re-queues a lost job
    result_ttl: int = 600
    max_wait: float = 30.0
    model_poll_seconds: float = 2.0
    tf_threads: int = 1
    default_model: str = ""
    web_threads: int = 32
    db_pool_size: int = 20
    log_requests: bool = False
    # uploads
    max_body_bytes: int = 4 * 1024 * 1024
    max_images: int = 16
    max_image_pixels: int = 16_000_000
    # security
    allow_bearer_keys: bool = False
    signature_window: int = 300
    nonce_ttl: int = 900
    session_idle_seconds: int = 3600
    rate_limit_per_minute: float = 120.0
    rate_limit_burst: int = 30
    login_max_failures: int = 5
    login_lockout_seconds: int = 60
    # extra `digitserve train mlp` arguments for the default model `digitserve init` trains
    init_train_args: tuple[str, ...] = ()
    # which prefix Redis keys get (tests isolate themselves with it)
    redis_prefix: str = "ds:"

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        var_dir = Path(env.get("VAR_DIR", "var"))
        environment = env.get("DIGITSERVE_ENV", "development")
        mirrors = tuple(m.strip() for m in env.get("MNIST_MIRRORS", "").split(",") if m.strip())
        settings = cls(
            database_url=env.get("DATABASE_URL") or f"sqlite:///{var_dir / 'digitserve.db'}",
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            secret_key=env.get("SECRET_KEY", ""),
            environment=environment,
            var_dir=var_dir,
            mnist_dir=Path(env.get("MNIST_DIR") or "data/mnist"),
            mnist_mirrors=mirrors or DEFAULT_MIRRORS,
            model_cache_dir=Path(env.get("MODEL_CACHE_DIR") or var_dir / "models"),
            host=env.get("HOST") or cls.host,
            port=_int(env, "PORT", cls.port),
            queue_name=env.get("QUEUE_NAME") or cls.queue_name,
            queue_max_length=_int(env, "QUEUE_MAX_LENGTH", cls.queue_max_length),
            job_timeout=_int(env, "JOB_TIMEOUT", cls.job_timeout),
            job_retries=_int(env, "JOB_RETRIES", cls.job_retries),
            job_stale_after=_float(env, "JOB_STALE_AFTER", cls.job_stale_after),
            max_wait=_float(env, "MAX_WAIT", cls.max_wait),
            model_poll_seconds=_float(env, "MODEL_POLL_SECONDS", cls.model_poll_seconds),
            tf_threads=_int(env, "TF_THREADS", cls.tf_threads),
            default_model=env.get("DEFAULT_MODEL", ""),
            web_threads=_int(env, "WEB_THREADS", cls.web_threads),
            db_pool_size=_int(env, "DB_POOL_SIZE", cls.db_pool_size),
            log_requests=_bool(env.get("LOG_REQUESTS")),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", cls.max_body_bytes),
            max_images=_int(env, "MAX_IMAGES", cls.max_images),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", cls.max_image_pixels),
            allow_bearer_keys=_bool(env.get("ALLOW_BEARER_KEYS")),
            rate_limit_per_minute=_float(env, "RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_minute),
            rate_limit_burst=_int(env, "RATE_LIMIT_BURST", cls.rate_limit_burst),
            redis_prefix=env.get("REDIS_PREFIX") or cls.redis_prefix,
            init_train_args=_args(env, "INIT_TRAIN_ARGS"),
        )
        settings.validate()
        return settings

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
        if self.job_stale_after < 1:
            raise SettingsError("JOB_STALE_AFTER must be at least 1 second")

    def with_secret(self) -> "Settings":
        """Local runs: use SECRET_KEY, or one generated once into var/secret_key."""
        if self.secret_key:
            return self
        path = self.var_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return replace(self, secret_key=path.read_text().strip())

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)
