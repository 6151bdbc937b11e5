"""`digitserve`: the one command-line entry point."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from server.settings import Settings, SettingsError

FAMILIES = ("softmax", "mlp", "cnn", "dbn")


def _services(settings: Settings):
    from server.bootstrap import build

    return build(settings)


def cmd_db(args, settings: Settings) -> int:
    from server import migrate

    if args.action == "upgrade":
        migrate.upgrade(settings.database_url, args.revision or "head")
    else:
        migrate.downgrade(settings.database_url, args.revision or "-1")
    print(f"database {args.action}d ({settings.database_url.split('@')[-1]})")
    return 0


def cmd_train(args, settings: Settings) -> int:
    from server import migrate
    from trainers.register import train_and_register

    migrate.upgrade(settings.database_url)
    services = _services(settings)
    info = train_and_register(
        settings,
        services.registry,
        args.family,
        name=args.name,
        epochs=args.epochs,
        batch_size=args.batch_size,
        limit=args.limit,
        seed=args.seed,
        activate=args.activate,
        progress=not args.quiet,
    )
    state = "active" if info.active else "not active"
    print(f"registered {info.name}:{info.version} ({state}), test accuracy {info.test_accuracy:.4f}, "
          f"trained in {info.train_seconds:.0f} s")
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
    from models.registry import RegistryError

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
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitserve", description="Handwritten-digit inference platform")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", help="target revision (default: head / one step down)")
    db.set_defaults(func=cmd_db)

    train = sub.add_parser("train", help="train a network on MNIST and register a new version")
    train.add_argument("family", choices=FAMILIES)
    train.add_argument("--name", help="model name (default: the family)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--limit", type=int, help="train on the first N training images")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--activate", action="store_true", help="serve this version")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)

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
    return parser


def main(argv: list[str] | None = None) -> int:
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
