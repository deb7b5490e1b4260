"""`microplate-cloud`: the cloud service's command line."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from typing import Any

from pydantic import ValidationError

from cloud.settings import CloudSettings, SettingsError, load_settings

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microplate-cloud",
        description="Microplate cloud service: accounts, sites, devices, results, ingest.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="prestart (wait, migrate, first admin), then run the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-prestart", action="store_true", help="skip the prestart step")
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: /metrics counts requests, and a log line "
        "per request costs throughput)",
    )

    from cloud.ingest.cli import add_parser as add_ingest_parser

    add_ingest_parser(sub)

    from cloud.ota_cli import add_parser as add_models_parser

    add_models_parser(sub)

    dataset = sub.add_parser("dataset", help="training data from reviewed plates")
    dsub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    export = dsub.add_parser(
        "export",
        help="reviewed plates of the sites that allow training: raw photos, YOLO labels, manifest",
    )
    export.add_argument("--since", required=True, help="reviewed on or after this day (YYYY-MM-DD)")
    export.add_argument("--out", required=True, help="a new (or empty) directory")

    migrate = sub.add_parser("migrate", help="apply (or revert) database migrations")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument("--downgrade", action="store_true", help="downgrade to --revision")

    admin = sub.add_parser("create-admin", help="create an admin user")
    admin.add_argument("--email", required=True)
    admin.add_argument(
        "--password-file",
        help="read the password from this file (else MICROPLATE_CLOUD_FIRST_ADMIN_PASSWORD, "
        "else a prompt when there is a terminal)",
    )
    admin.add_argument("--full-name", default="")

    dev = sub.add_parser("provision-device", help="register a device; prints its enrollment bundle")
    dev.add_argument("--site", required=True, help="site slug (created with --site-name if new)")
    dev.add_argument("--site-name", default=None)
    dev.add_argument("--device", required=True, help="device slug, unique within the site")
    dev.add_argument("--name", default="")
    dev.add_argument("--output", default="-", help="write the bundle here (mode 600), '-' = stdout")
    return parser


def server_options(*, access_log: bool) -> dict[str, Any]:
    """uvicorn's options. Its own proxy-header handling is off: by default it believes
    X-Forwarded-For from 127.0.0.1, which let any local caller choose its address and dodge
    the sign-in limits; `cloud.api.deps.client_ip` believes only `trusted_proxies`."""
    return {
        "loop": "uvloop",
        "http": "httptools",
        "access_log": access_log,
        "proxy_headers": False,
    }


def _serve(settings: CloudSettings, args: argparse.Namespace) -> int:
    import uvicorn

    from cloud.prestart import prestart

    if not args.no_prestart:
        prestart(settings)
    # uvloop and httptools (uvicorn[standard]) named outright: a missing one should fail the
    # start, not silently halve throughput with the pure-Python fallbacks.
    options = server_options(access_log=args.access_log)
    if args.workers > 1:
        uvicorn.run(
            "cloud.asgi:app", host=args.host, port=args.port, workers=args.workers, **options
        )
    else:
        from cloud.app import create_app

        uvicorn.run(create_app(settings), host=args.host, port=args.port, **options)
    return 0


def _admin_password(settings: CloudSettings, args: argparse.Namespace) -> str | None:
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise _CliError(f"--password-file {args.password_file}: {exc.strerror}") from None
    if settings.first_admin_password is not None:
        return settings.first_admin_password.get_secret_value()
    if not sys.stdin.isatty():
        return None
    return getpass.getpass("Password for the admin: ")


class _CliError(Exception):
    """Printed as `error: ...`, exit 2."""


def _create_admin(settings: CloudSettings, args: argparse.Namespace) -> int:
    from cloud.crud import audit, users
    from cloud.db import make_engine, make_sessionmaker, session_scope
    from cloud.models import Role

    password = _admin_password(settings, args)
    if password is None:
        print(
            "error: no password and no terminal to ask for one: pass --password-file FILE or "
            "set MICROPLATE_CLOUD_FIRST_ADMIN_PASSWORD",
            file=sys.stderr,
        )
        return 2
    if len(password) < 12:
        print("error: the password needs at least 12 characters", file=sys.stderr)
        return 2
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            user = users.create_user(
                session,
                email=args.email,
                password=password,
                role=Role.admin,
                full_name=args.full_name,
            )
            audit.record(
                session,
                action="user.created",
                target_type="user",
                target_id=user.id,
                detail={"role": "admin", "by": "cli"},
            )
    except users.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"admin {args.email} created")
    return 0


def _provision(settings: CloudSettings, args: argparse.Namespace) -> int:
    from cloud.provision import ProvisionError, provision_from_cli

    try:
        bundle = provision_from_cli(
            settings, site=args.site, site_name=args.site_name, device=args.device, name=args.name
        )
    except ProvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(bundle, indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"enrollment bundle written to {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        settings = load_settings()
    except (SettingsError, ValidationError) as exc:
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    from cloud.logs import configure_logging

    configure_logging(settings.log_level, json_lines=settings.log_json)
    from cloud.startup import FIXABLE, explain

    try:
        return _dispatch(settings, args)
    except _CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FIXABLE as exc:
        sentence = explain(exc, settings)
        if sentence is None:
            raise
        print(f"error: {sentence}", file=sys.stderr)
        return 2


def _dispatch(settings: CloudSettings, args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "ingest":
        from cloud.ingest.cli import run_ingest

        return run_ingest(settings, args)
    if args.command == "migrate":
        from cloud.db import downgrade, migrate

        if args.downgrade:
            downgrade(settings.database_url, args.revision)
        else:
            migrate(settings.database_url, args.revision)
        return 0
    if args.command == "create-admin":
        return _create_admin(settings, args)
    if args.command == "provision-device":
        return _provision(settings, args)
    if args.command == "dataset":
        from cloud.dataset import run_dataset

        return run_dataset(settings, args)
    if args.command == "models":
        from cloud.ota_cli import run_models

        return run_models(settings, args)
    raise _CliError(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
