"""The `digitserve` command: training, the model registry, init, the one-command run, compose."""
import re
import signal
import urllib.request

import pytest
import yaml

from conftest import ROOT, process_env, wait_until
from server.cli.main import build_parser, main
from server.cli.processes import Subcommand, free_port


def test_train_registers_and_activates_a_version(cli_env, services, capsys):
    assert main(["train", "softmax", "--limit", "3000", "--epochs", "2", "--activate", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"registered softmax:1 \(active\), test accuracy 0\.\d+", out)
    info = services.registry.get("softmax")
    assert info.test_accuracy > 0.6  # chance is 0.1
    assert info.hyperparameters["limit"] == 3000 and len(info.confusion_matrix) == 10
    assert len(info.curves["loss"]) == info.hyperparameters["epochs_run"]
    assert info.dataset_sha256 and info.train_seconds > 0


def test_models_list_show_activate_delete(cli_env, services, tiny_mlp_file, capsys):
    assert main(["models", "list"]) == 0
    assert "no models registered" in capsys.readouterr().out
    services.registry.register("mlp", "mlp", tiny_mlp_file, test_accuracy=0.95, activate=True)
    services.registry.register("mlp", "mlp", tiny_mlp_file, test_accuracy=0.96)
    assert main(["models", "list"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows[0][:4] == ["mlp", "1", "mlp", "yes"] and rows[1][:3] == ["mlp", "2", "mlp"]
    assert main(["models", "activate", "mlp", "2"]) == 0
    assert services.registry.get("mlp").version == 2
    assert main(["models", "delete", "mlp", "2"]) == 1
    assert "active version" in capsys.readouterr().err
    assert main(["models", "delete", "mlp", "1"]) == 0
    assert main(["models", "show", "mlp"]) == 0
    assert '"version": 2' in capsys.readouterr().out
    assert main(["models", "show", "nope"]) == 1


def test_users_create_admin(cli_env, services, monkeypatch, capsys):
    monkeypatch.setenv("DIGITSERVE_PASSWORD", "a-long-admin-password-1")
    assert main(["users", "create", "root@example.com", "--admin"]) == 0
    assert "created admin root@example.com" in capsys.readouterr().out
    assert main(["users", "create", "root@example.com"]) == 1


def test_db_upgrade_and_downgrade_on_sqlite(tmp_path, monkeypatch, capsys):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "downgrade", "0001"]) == 0
    engine = sa.create_engine(url)
    assert "users" not in sa.inspect(engine).get_table_names()
    assert main(["db", "upgrade"]) == 0
    assert "users" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_prepare_trains_the_default_model_when_none_is_registered(settings, services, make_user, capsys):
    from server.cli.local import prepare

    prepare(settings, train_args=("--limit", "2000", "--epochs", "1", "--quiet"))
    assert services.registry.get("mlp").version == 1
    assert "no administrator yet" in capsys.readouterr().out
    make_user(role="admin")
    prepare(settings)  # idempotent: nothing new is trained
    assert [v.version for v in services.registry.list()] == [1]
    assert "no administrator" not in capsys.readouterr().out


@pytest.mark.slow
def test_run_starts_web_and_worker_and_stops_on_ctrl_c(settings, tiny_mlp_file, tmp_path, redis_prefix):
    """`digitserve run` on SQLite (the local default) with the tiny model already registered."""
    from server.services.bootstrap import build
    from core.migrate import upgrade

    sqlite = settings.replace(database_url=f"sqlite:///{tmp_path / 'var' / 'digitserve.db'}", port=free_port())
    upgrade(sqlite.database_url)
    local = build(sqlite)
    local.registry.register("mlp", "mlp", tiny_mlp_file, activate=True)
    local.close()
    env = process_env(sqlite)
    del env["SECRET_KEY"]  # generated into var/secret_key for a local run
    run = Subcommand(["run"], env, tmp_path / "run.log")
    url = f"http://127.0.0.1:{sqlite.port}/readyz"

    def ready():
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except Exception:
            return False

    try:
        wait_until(ready, 90, 0.3, "`digitserve run` to be ready")
        assert f"running at http://127.0.0.1:{sqlite.port}/" in run.output()
        assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o777 == 0o600
    finally:
        code = run.stop(signal.SIGINT)
    assert code == 0, run.output()
    assert run.output().rstrip().endswith("stopped")


def test_train_family_choices_are_the_family_records(capsys):
    from models import families

    parser = build_parser()
    train = next(action for action in parser._subparsers._group_actions[0].choices["train"]._actions
                 if action.dest == "family")
    assert tuple(train.choices) == families.names()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    help_text = capsys.readouterr().out
    for family in families.all_families():
        assert f"{family.name}  " in help_text and family.description in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "resnet"])
    assert "invalid choice: 'resnet'" in capsys.readouterr().err


def test_compose_runs_the_same_commands_as_the_local_run():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mysql", "redis", "init", "web", "worker", "nginx"} <= set(services)
    parser = build_parser()
    commands = {name: services[name]["command"] for name in ("init", "web", "worker")}
    assert commands == {"init": ["init"], "web": ["serve"], "worker": ["worker"]}
    for argv in commands.values():
        parser.parse_args(argv)  # each is a real subcommand
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["digitserve"]' in dockerfile and re.search(r"^USER digitserve$", dockerfile, re.M)
    assert re.search(r"^ARG BASE=python:3\.\d+-slim$", dockerfile, re.M) and "HEALTHCHECK" in dockerfile
    for name in ("web", "worker", "init"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("mysql+pymysql://") and "@mysql:3306/" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD") and env["REDIS_URL"].endswith("@redis:6379/0")
        assert env["DIGITSERVE_ENV"] == "production" and env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert services["web"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert "readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["worker"]["deploy"]["replicas"]
    # nginx is the only published port
    assert [name for name, service in services.items() if service.get("ports")] == ["nginx"]
    for copied in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (ROOT / copied).exists(), copied
    # every variable the compose file reads is listed in .env.example
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (ROOT / "docker-compose.yml").read_text()))
    assert used <= listed, used - listed
    # and every setting reaches the application containers (VAR_DIR and REDIS_PREFIX are fixed by the image)
    from dataclasses import fields

    from core.settings import Settings

    settings = {f.metadata["env"] for f in fields(Settings)} - {"VAR_DIR", "REDIS_PREFIX"}
    passed = set(compose["x-app-env"]) | set(services["web"]["environment"])
    assert settings <= passed, settings - passed
    makefile = (ROOT / "Makefile").read_text()
    assert "digitserve run" in makefile


def test_production_refuses_a_placeholder_secret(monkeypatch, capsys):
    monkeypatch.setenv("DIGITSERVE_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "changeme")
    assert main(["models", "list"]) == 2
    assert "SECRET_KEY" in capsys.readouterr().err


def test_training_with_feedback_uses_the_corrected_images(cli_env, services, account, registered_mlp, digit_pngs,
                                                           run_jobs, mnist):
    from server.services import feedback
    from trainers.register import feedback_examples

    files = [("image", f"{d}.png", digit_pngs[d]) for d in (3, 8)]
    pid = account.app.post("/api/v1/predictions", upload_files=files, headers=account.headers).json["id"]
    run_jobs()
    account.app.post_json(f"/api/v1/predictions/{pid}/feedback", {"index": 1, "label": 8}, headers=account.headers)
    assert len(feedback_examples(services.sessions)[1]) == 0  # pending: not reviewed yet
    feedback.review(services, None, pid, {"index": 1, "state": "accepted"})
    images, labels = feedback_examples(services.sessions)
    assert images.shape == (1, 28, 28) and list(labels) == [8]
    assert main(["train", "softmax", "--limit", "2000", "--epochs", "1", "--with-feedback", "--quiet"]) == 0
    info = services.registry.get("softmax", 1)
    assert info.hyperparameters["feedback_examples"] == 1
    assert info.dataset_sha256 and info.dataset_sha256 != mnist.sha256  # MNIST plus the feedback


def test_run_starts_its_own_redis_when_none_listens(settings):
    from server.cli.local import _redis_reachable, ensure_redis

    local = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    process = ensure_redis(local)
    try:
        assert process is not None and _redis_reachable(local.redis_url)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert ensure_redis(settings) is None  # one is already listening: use it


def test_run_explains_an_unreachable_redis_it_should_not_start(settings):
    from server.cli.local import ensure_redis

    # 127.0.0.2 is loopback (no traffic leaves the machine) but not the local default, so run won't start one
    url = f"redis://127.0.0.2:{free_port()}/0"
    with pytest.raises(SystemExit, match=f"Redis is not reachable at {url}.*REDIS_URL"):
        ensure_redis(settings.replace(redis_url=url))
