"""`digitserve`: the one command-line entry point."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from core.settings import Settings, SettingsError
from models import families  # the family records only: no Keras / TensorFlow import


def _services(settings: Settings):
    from server.services.bootstrap import build

    return build(settings)


def cmd_db(args, settings: Settings) -> int:
    from core import migrate

    if args.action == "upgrade":
        migrate.upgrade(settings.database_url, args.revision or "head")
    else:
        migrate.downgrade(settings.database_url, args.revision or "-1")
    print(f"database {args.action}d ({settings.database_url.split('@')[-1]})")
    return 0


def _submit(services, payload: dict) -> int:
    """`--queue`: hand the run to the training queue and say how to follow it."""
    from core.errors import DomainError
    from server.services import training

    try:
        job = training.submit(services, None, payload)
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"queued training job {job['id']} ({job['kind']}) on queue {services.training_queue.name!r}; "
          f"run `digitserve worker --queue training` to process it; follow it at /api/v1/training-jobs/{job['id']}")
    return 0


def _print_registered(info) -> None:
    state = "active" if info.active else "not active"
    print(f"registered {info.name}:{info.version} ({state}), test accuracy {info.test_accuracy:.4f}, "
          f"trained in {info.train_seconds:.0f} s")


def _foreground(services, payload: dict, quiet: bool):
    """Validate like the API, then run in this process; None (and a message) when refused."""
    from core.errors import DomainError
    from server.services import training

    try:
        kind, spec = training.validate(services, payload)
        return training.execute(services, kind, spec, progress=not quiet)
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return None


def _spec(args, *keys: str) -> dict:
    return {key: getattr(args, key) for key in keys if getattr(args, key) is not None}


def _training_run(settings: Settings, args, payload: dict):
    """With --queue, submit to the training queue (an exit code); else run in the foreground:
    the registered version, or 1 when it failed."""
    from core import migrate

    migrate.upgrade(settings.database_url)
    services = _services(settings)
    if args.queue:
        return _submit(services, payload)
    info = _foreground(services, payload, args.quiet)
    return 1 if info is None else info


def cmd_retrain(args, settings: Settings) -> int:
    info = _training_run(settings, args, {"kind": "retrain", "name": args.name,
                                          **_spec(args, "epochs", "limit", "seed", "tolerance", "holdout_share")})
    if isinstance(info, int):
        return info
    _print_registered(info)
    gate = info.gate
    for who in ("candidate", "active"):
        fig = gate[who]
        feedback = "-" if fig["feedback_accuracy"] is None else f"{fig['feedback_accuracy']:.4f}"
        label = "candidate" if who == "candidate" else f"active {fig['name']}:{fig['version']}"
        print(f"  {label:<16} MNIST test {fig['mnist_accuracy']:.4f}, held-out feedback {feedback} "
              f"({gate['feedback']['held_out']} images)")
    print(f"gate: {'activated' if gate['activated'] else 'not activated'}: {gate['reason']}")
    return 0


def cmd_tune(args, settings: Settings) -> int:
    info = _training_run(settings, args, {"kind": "tune", "name": args.name, **_spec(
        args, "family", "population", "generations", "seed", "epochs", "limit", "elitism")})
    if isinstance(info, int):
        return info
    search = info.search
    print(f"best of {search['evaluations']} individuals (validation accuracy {search['best_fitness']:.4f}): "
          f"{json.dumps(search['best'])}")
    _print_registered(info)
    return 0


def cmd_feedback(args, settings: Settings) -> int:
    from server.services import feedback

    exported = feedback.export(_services(settings), args.directory)
    print(f"exported {exported['count']} accepted corrections to " + ", ".join(exported["files"]))
    return 0


def cmd_train(args, settings: Settings) -> int:
    from core import migrate
    from core.errors import DomainError
    from trainers.register import train_and_register

    migrate.upgrade(settings.database_url)
    services = _services(settings)
    if args.gan_samples < 0:
        print("error: --gan-samples must be 0 or more", file=sys.stderr)
        return 2
    if args.queue:
        if args.gan_samples:
            print("error: --gan-samples trains here, not on the training queue", file=sys.stderr)
            return 2
        return _submit(services, {"kind": "train", "family": args.family, "activate": args.activate,
                                  "with_feedback": args.with_feedback,
                                  **_spec(args, "name", "epochs", "batch_size", "limit", "seed")})
    try:
        info = train_and_register(
            settings, services.registry, args.family, name=args.name, epochs=args.epochs,
            batch_size=args.batch_size, limit=args.limit, seed=args.seed, activate=args.activate,
            progress=not args.quiet, use_feedback=args.with_feedback,
            gan_samples=args.gan_samples, gan_model=args.gan_model)
    except DomainError as exc:  # e.g. --gan-samples without a registered generator
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    _print_registered(info)
    return 0


def cmd_gan(args, settings: Settings) -> int:
    from core import migrate
    from core.errors import DomainError

    migrate.upgrade(settings.database_url)
    registry = _services(settings).registry
    try:
        if args.action == "train":
            from trainers.gan import train_and_register_gan

            info = train_and_register_gan(settings, registry, name=args.name, epochs=args.epochs, limit=args.limit,
                                          seed=args.seed, activate=args.activate, progress=not args.quiet)
            agreement = info.metrics.get("label_agreement", {}).get("agreement")
            judged = (f", {info.metrics['judge']} reads {agreement * 100:.1f}% of its digits as the digit asked for"
                      if agreement is not None else "")
            print(f"registered {info.name}:{info.version} ({'active' if info.active else 'not active'}), "
                  f"trained in {info.train_seconds:.0f} s{judged}")
        else:
            from models import gan
            from trainers.gan import load_generator

            generator, info = load_generator(registry, args.model)
            with open(args.out, "wb") as f:
                f.write(gan.grid_png(generator, args.per_class, args.seed))
            print(f"{args.out}: {args.per_class} digits per class from {info.name}:{info.version}")
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _print_versions(versions) -> None:
    if not versions:
        print("no models registered; train one with: digitserve train mlp --activate")
        return
    print(f"{'name':<10} {'version':>7} {'family':<8} {'active':<6} {'accuracy':>8}  created")
    for v in versions:
        acc = f"{v.test_accuracy * 100:.2f}%" if v.test_accuracy is not None else "-"
        print(f"{v.name:<10} {v.version:>7} {v.family:<8} {'yes' if v.active else '':<6} {acc:>8}  "
              f"{v.created_at:%Y-%m-%d %H:%M}")


def cmd_models(args, settings: Settings) -> int:
    from core.errors import DomainError

    registry = _services(settings).registry
    try:
        if args.action == "list":
            _print_versions(registry.list(args.name))
        elif args.action == "show":
            info = registry.get(args.name, args.version if args.version is not None else "active")
            print(json.dumps(info.detail(), indent=2, default=str))
        elif args.action == "activate":
            info = registry.activate(args.name, args.version)
            print(f"{info.name}:{info.version} is now the active version of {info.name}")
        elif args.action == "delete":
            registry.delete(args.name, args.version)
            print(f"deleted {args.name}:{args.version}")
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _logging(settings: Settings) -> None:
    from core import logs

    logs.configure(settings.log_format)


def cmd_serve(args, settings: Settings) -> int:
    from server.web.httpd import serve

    _logging(settings)
    return serve(settings.with_secret())


def cmd_worker(args, settings: Settings) -> int:
    from server.cli.worker import run_worker

    _logging(settings)
    return run_worker(settings.with_secret(), burst=args.burst, queue=args.queue)


def cmd_run(args, settings: Settings) -> int:
    from server.cli.local import run_all

    _logging(settings)
    return run_all(settings.with_secret())


def cmd_init(args, settings: Settings) -> int:
    from server.cli.local import prepare

    prepare(settings, train_args=settings.init_train_argv())
    return 0


def cmd_users(args, settings: Settings) -> int:
    import getpass
    import os

    from core import migrate
    from core.errors import DomainError
    from server.services.accounts import create_user

    migrate.upgrade(settings.database_url)
    password = os.environ.get("DIGITSERVE_PASSWORD") or getpass.getpass(f"password for {args.email}: ")
    try:
        user = create_user(_services(settings), args.email, password, role="admin" if args.admin else "user")
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"created {user['role']} {user['email']} (id {user['id']})")
    return 0


def cmd_cleanup(args, settings: Settings) -> int:
    from server.services.predictions import purge_old

    days = args.older_than if args.older_than is not None else settings.retention_days
    if days <= 0:
        print("nothing to do: set RETENTION_DAYS or pass --older-than DAYS")
        return 0
    removed = purge_old(_services(settings), days)
    print(f"deleted {removed} finished predictions older than {days:g} days (corrected ones are kept)")
    return 0


def cmd_predict(args, settings: Settings) -> int:
    from server.cli.client import Client, ClientError

    try:
        client = Client.from_env(base_url=args.url, key_id=args.key_id, secret=args.secret)
        result = client.predict(args.images, model=args.model, wait=args.wait, timeout=args.timeout)
    except (ValueError, OSError, ClientError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["status"] == "succeeded" else 1
    if result["status"] != "succeeded":
        print(f"prediction {result['id']} failed: {result.get('error')}", file=sys.stderr)
        return 1
    model = result["model"]
    for path, item in zip(args.images, result["results"]):
        print(f"{path}: {item['digit']} ({item['confidence'] * 100:.1f}%, {model['name']}:{model['version']})")
    return 0


def _families_epilog() -> str:
    """One line per family (the family records' descriptions), for ``train --help``."""
    width = max(len(name) for name in families.names())
    lines = (f"  {f.name:<{width}}  {f.description}" for f in families.all_families())
    return "families:\n" + "\n".join(lines).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitserve", description="Handwritten-digit inference platform")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", help="target revision (default: head / one step down)")
    db.set_defaults(func=cmd_db)

    train = sub.add_parser("train", help="train a network on MNIST and register a new version",
                           epilog=_families_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("family", choices=families.names(), help="network family (listed below)")
    train.add_argument("--name", help="model name (default: the family)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--limit", type=int, help="train on the first N training images")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--activate", action="store_true", help="serve this version")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--with-feedback", action="store_true",
                       help="add the corrections an administrator accepted (images and labels) to the training set")
    train.add_argument("--queue", action="store_true",
                       help="submit a job to the training queue instead of training here")
    train.add_argument("--gan-samples", type=int, default=0, metavar="N",
                       help="add N digits made by a registered conditional GAN (balanced over the classes)")
    train.add_argument("--gan-model", default="cgan", metavar="NAME[:VERSION]",
                       help="the generator for --gan-samples (default: the active version of cgan)")
    train.set_defaults(func=cmd_train)

    gan = sub.add_parser("gan", help="train a conditional GAN that makes labelled digits; draw a grid of them")
    gsub = gan.add_subparsers(dest="action", required=True)
    gtrain = gsub.add_parser("train", help="train on MNIST and register the generator (family cgan)")
    gtrain.add_argument("--name", default="cgan", help="model name (default: cgan)")
    gtrain.add_argument("--epochs", type=int)
    gtrain.add_argument("--limit", type=int, help="train on the first N training images")
    gtrain.add_argument("--seed", type=int, default=0)
    gtrain.add_argument("--activate", action="store_true", help="make it the generator --gan-samples uses")
    gtrain.add_argument("--quiet", action="store_true", help="no progress lines")
    ggrid = gsub.add_parser("grid", help="write a PNG grid of generated digits, one row per digit")
    ggrid.add_argument("model", nargs="?", default="cgan", help="NAME[:VERSION] (default: cgan, active)")
    ggrid.add_argument("--per-class", type=int, default=8)
    ggrid.add_argument("--seed", type=int, default=0)
    ggrid.add_argument("--out", default="cgan-samples.png")
    gan.set_defaults(func=cmd_gan)

    retrain = sub.add_parser(
        "retrain", help="train a candidate of a model's active version on MNIST plus accepted feedback; "
                        "activate it only if the gate passes")
    retrain.add_argument("name", help="the model whose active version is retrained")
    retrain.add_argument("--epochs", type=int)
    retrain.add_argument("--limit", type=int, help="train on the first N training images (feedback first)")
    retrain.add_argument("--seed", type=int, default=0, help="training seed and the held-out split's seed")
    retrain.add_argument("--tolerance", type=float,
                         help="how much lower the MNIST test accuracy may be (default RETRAIN_MNIST_TOLERANCE, 0.002)")
    retrain.add_argument("--holdout-share", type=float,
                         help="share of the accepted feedback held out for evaluation (default RETRAIN_HOLDOUT_SHARE)")
    retrain.add_argument("--quiet", action="store_true", help="no progress bars")
    retrain.add_argument("--queue", action="store_true", help="submit a job to the training queue instead")
    retrain.set_defaults(func=cmd_retrain)

    tune = sub.add_parser("tune", help="genetic search over a family's hyper-parameters; registers the best "
                                       "as a candidate version (not activated)")
    tune.add_argument("name", help="model name the best individual is registered under")
    tune.add_argument("--family", required=True, choices=families.names())
    tune.add_argument("--population", type=int, default=8)
    tune.add_argument("--generations", type=int, default=5)
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--epochs", type=int, help="epochs per individual (default: the family's)")
    tune.add_argument("--limit", type=int, help="train each individual on the first N training images")
    tune.add_argument("--elitism", type=int, default=1, help="best individuals kept unchanged each generation")
    tune.add_argument("--quiet", action="store_true", help="no per-individual lines")
    tune.add_argument("--queue", action="store_true", help="submit a job to the training queue instead")
    tune.set_defaults(func=cmd_tune)

    fb = sub.add_parser("feedback", help="the feedback dataset (users' corrections)")
    fbsub = fb.add_subparsers(dest="action", required=True)
    fexport = fbsub.add_parser("export", help="write the accepted corrections as IDX files (MNIST format)")
    fexport.add_argument("directory")
    fb.set_defaults(func=cmd_feedback)

    models = sub.add_parser("models", help="list, show, activate or delete model versions")
    msub = models.add_subparsers(dest="action", required=True)
    mlist = msub.add_parser("list")
    mlist.add_argument("name", nargs="?")
    mshow = msub.add_parser("show")
    mshow.add_argument("name")
    mshow.add_argument("version", nargs="?", type=int)
    for action in ("activate", "delete"):
        p = msub.add_parser(action)
        p.add_argument("name")
        p.add_argument("version", type=int)
    models.set_defaults(func=cmd_models)

    serve = sub.add_parser("serve", help="run the web server (HOST, PORT)")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="run a prediction worker (or, with --queue training, a training worker)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--queue", choices=["predictions", "training"], default="predictions",
                        help="predictions (QUEUE_NAME) or training jobs (TRAINING_QUEUE_NAME)")
    worker.set_defaults(func=cmd_worker)
    init = sub.add_parser("init", help="migrate and make sure a model is active (trains the default MLP if none)")
    init.set_defaults(func=cmd_init)
    run = sub.add_parser("run", help="migrate, train a default model if none, start web + worker")
    run.set_defaults(func=cmd_run)

    users = sub.add_parser("users", help="create accounts (the first administrator)")
    usub = users.add_subparsers(dest="action", required=True)
    ucreate = usub.add_parser("create")
    ucreate.add_argument("email")
    ucreate.add_argument("--admin", action="store_true")
    users.set_defaults(func=cmd_users)

    cleanup = sub.add_parser("cleanup", help="delete finished predictions and their images past the retention")
    cleanup.add_argument("--older-than", type=float, metavar="DAYS", help="default RETENTION_DAYS")
    cleanup.set_defaults(func=cmd_cleanup)

    predict = sub.add_parser("predict", help="send images to a server (signed with an API key)")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--model", help="name or name:version")
    predict.add_argument("--wait", type=float, default=5.0)
    predict.add_argument("--timeout", type=float, default=60.0)
    predict.add_argument("--url", help="default DIGITSERVE_URL or http://127.0.0.1:8080")
    predict.add_argument("--key-id", help="default DIGITSERVE_KEY_ID")
    predict.add_argument("--secret", help="default DIGITSERVE_SECRET")
    predict.add_argument("--json", action="store_true", help="print the whole prediction as JSON")
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    # TensorFlow's C++ start-up chatter (oneDNN notes, CPU features, graph attribute
    # notices) is noise for operators; errors still surface as Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    func: Callable[..., int] = args.func
    return func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
