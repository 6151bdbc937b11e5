"""Settings are read once from the environment; bad values are refused with the variable's name."""
from pathlib import Path

import pytest

from core.settings import Settings, SettingsError


def test_defaults_are_the_local_run():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/digitserve.db"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.model_cache_dir == Path("var/models")
    assert (settings.job_timeout, settings.job_retries, settings.job_stale_after) == (60, 2, 30.0)
    assert not settings.production


def test_values_come_from_the_environment():
    settings = Settings.from_env({
        "VAR_DIR": "/srv/ds", "JOB_TIMEOUT": "5", "JOB_STALE_AFTER": "2.5", "ALLOW_BEARER_KEYS": "yes",
        "MNIST_MIRRORS": " https://a.example/ , https://b.example/ ",
        "INIT_TRAIN_ARGS": "--limit 5000 --epochs 1 --quiet",
    })
    assert settings.database_url == "sqlite:////srv/ds/digitserve.db"
    assert settings.model_cache_dir == Path("/srv/ds/models")
    assert (settings.job_timeout, settings.job_stale_after) == (5, 2.5)
    assert settings.allow_bearer_keys
    assert settings.mnist_mirrors == ("https://a.example/", "https://b.example/")
    assert settings.init_train_argv() == ("--limit", "5000", "--epochs", "1", "--quiet")


@pytest.mark.parametrize("env, message", [
    ({"PORT": "eighty"}, "PORT must be an integer, got 'eighty'"),
    ({"MAX_WAIT": "soon"}, "MAX_WAIT must be a number"),
    ({"MAX_WAIT": "31"}, "MAX_WAIT must be between 0 and 30 seconds"),
    ({"JOB_TIMEOUT": "0"}, "JOB_TIMEOUT must be at least 1 second"),
    ({"JOB_STALE_AFTER": "-1"}, "JOB_STALE_AFTER must be at least 1 second"),
    ({"WEB_READ_TIMEOUT": "0"}, "WEB_READ_TIMEOUT must be positive"),
    ({"WEB_READ_TIMEOUT": "10", "WEB_REQUEST_DEADLINE": "5"}, "WEB_REQUEST_DEADLINE at least as long"),
    ({"WEB_ACCEPT_QUEUE": "0"}, "WEB_ACCEPT_QUEUE must be at least 1"),
    ({"INIT_TRAIN_ARGS": "--limit '5000"}, "INIT_TRAIN_ARGS must be shell-style arguments"),
    ({"DIGITSERVE_ENV": "production", "SECRET_KEY": "changeme"}, "SECRET_KEY must be set"),
    ({"DIGITSERVE_ENV": "production", "SECRET_KEY": "x" * 31}, "SECRET_KEY must be set"),
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_production_accepts_a_long_random_secret():
    assert Settings.from_env({"DIGITSERVE_ENV": "production", "SECRET_KEY": "k" * 40}).production


def test_a_local_secret_is_generated_once_and_kept_private(tmp_path):
    settings = Settings.from_env({"VAR_DIR": str(tmp_path)})
    first = settings.with_secret().secret_key
    assert len(first) >= 32
    assert settings.with_secret().secret_key == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_to_env_is_read_back_unchanged(tmp_path):
    """The one way a parent hands its settings to a child process."""
    settings = Settings.from_env({
        "VAR_DIR": str(tmp_path), "DATABASE_URL": "mysql+pymysql://u:p%40ss@db/ds", "PORT": "9000",
        "JOB_STALE_AFTER": "2.5", "ALLOW_BEARER_KEYS": "1", "MNIST_MIRRORS": "https://a.example/,https://b.example/",
        "TF_THREADS": "2", "SECRET_KEY": "s" * 40,
    })
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_tensorflow_threads_one_setting_two_defaults():
    assert (Settings().serving_threads(), Settings().training_threads() >= 1) == (1, True)
    assert (Settings(tf_threads=3).serving_threads(), Settings(tf_threads=3).training_threads()) == (3, 3)


def test_json_logs_carry_the_request_id():
    import json
    import logging

    from core import logs

    record = logging.LogRecord("digitserve.web", logging.WARNING, __file__, 1, "slow %s", ("db",), None)
    record.request_id, record.prediction_id = "req-42", "ab12"
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "slow db" and entry["level"] == "WARNING"
    assert (entry["request_id"], entry["prediction_id"]) == ("req-42", "ab12")
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})
