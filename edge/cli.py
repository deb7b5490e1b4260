"""`microplate-edge`: the appliance's command line.

Commands: serve, analyze (edge.services.analyze), demo, enroll, export-csv, calibrate,
db migrate|check|backup|restore-drill, validate-config. A user error prints one clear message
and exits non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.signals import stop_on_signals

logger = logging.getLogger(__name__)

EXIT_USER = 1
EXIT_CONFIG = 2


class UserError(Exception):
    """A problem the user can fix; printed as is."""


def _settings() -> Any:
    from edge.config import EdgeSettings, describe_validation_error

    try:
        return EdgeSettings()
    except (ValidationError, ValueError) as exc:
        raise ConfigProblem(describe_validation_error(exc)) from exc


class ConfigProblem(Exception):
    pass


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


# -- commands ---------------------------------------------------------------------------------
def cmd_validate_config(args: argparse.Namespace) -> int:
    settings = _settings()  # the detector section included: EdgeSettings validates it
    problems = []
    if settings.mode == "production":
        auth = settings.auth
        if auth.operator_secret is None and auth.operator_secret_file is None:
            problems.append("auth.operator_secret: production mode needs an operator secret")
        if auth.supervisor_pin_hash is None:
            problems.append("auth.supervisor_pin_hash: production mode needs a supervisor PIN")
    if problems:
        raise ConfigProblem("\n".join(problems))
    if args.show:
        print(settings.model_dump_json(indent=2, exclude={"auth"}))
    print("The configuration is valid.")
    return 0


def _appliance(settings: Any) -> Any:
    from edge.app import Appliance

    return Appliance(settings)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings()
    try:
        from edge.api.server import serve
    except ImportError as exc:
        raise UserError(f"The HTTP API is not installed in this build ({exc}).") from exc
    app = _appliance(settings)
    with stop_on_signals():
        try:
            app.start()
            host, port = args.host or settings.http.host, args.port or settings.http.port
            print(f"Microplate appliance on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
            # serve() refuses a production configuration without proper credentials
            # (edge.auth's AuthConfigError, an ApplianceError) before it binds the port.
            serve(app, host, port)
        finally:
            app.stop()
    return 0


def cmd_export_csv(args: argparse.Namespace) -> int:
    app = _appliance(_settings())
    if not app.store.path.exists():
        raise UserError(f"There is no database at {app.store.path} yet: nothing to export.")
    with app.offline():
        path = app.runs.export_csv(args.sample)
    print(f"Wrote {path}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from core.calibration import CalibrationGrid
    from edge.detect.imageio import read_image

    settings = _settings()
    app = _appliance(settings)
    image = read_image(Path(args.image))
    console = _console()
    with console.status("loading the detector and reading the plate..."):
        app.reading.load()
        grid: CalibrationGrid = app.calibration.propose_from_image(image)
    text = json.dumps(grid.to_legacy(), indent=2)
    if args.output:
        from edge.files.fsutil import atomic_write

        atomic_write(Path(args.output), text.encode("utf-8"))
        print(f"Saved the proposed grid to {args.output}")
    elif args.save:
        with app.offline():
            app.calibration.set(grid, actor="cli")
        print(f"Saved the proposed grid as the appliance's calibration ({grid.grid_id[:12]})")
    else:
        print(text)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from edge.db.store import Store

    settings = _settings()
    store = Store(settings.resolved_db_path, settings.resolved_backup_dir)
    if args.db_command != "migrate" and not store.path.exists():
        raise UserError(f"There is no database at {store.path}.")
    store.open()
    try:
        if args.db_command == "migrate":
            console = _console()
            with console.status("migrating...") as status:
                applied = store.migrate(progress=lambda m: status.update(m))
            print(f"Applied {len(applied)} migration(s); schema version {store.version}.")
        elif args.db_command == "check":
            problems = store.check()
            if problems:
                for p in problems:
                    print(p)
                return EXIT_USER
            print(f"{store.path}: integrity ok, foreign keys ok, schema version {store.version}.")
        else:
            dest = store.backup(Path(args.output) if args.output else None)
            print(f"Backed up to {dest}")
    finally:
        store.close()
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from edge.config import CONFIG_FILE_ENV
    from edge.services.enroll import EnrollError, enroll, read_bundle, summary

    config = os.environ.get(CONFIG_FILE_ENV)
    if not config:
        raise UserError(
            "Name the appliance's settings file: microplate-edge --config /etc/microplate/"
            f"edge.json enroll BUNDLE (or set {CONFIG_FILE_ENV})."
        )
    try:
        result = enroll(
            read_bundle(args.bundle),
            config_path=Path(config),
            credentials_dir=Path(args.credentials_dir) if args.credentials_dir else None,
            credentials_path=Path(args.credentials_path) if args.credentials_path else None,
            site=args.site,
            base_path=Path(args.base) if args.base else None,
        )
    except EnrollError as exc:
        raise UserError(str(exc)) from None
    print(summary(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import run_demo

    return run_demo(args)


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microplate-edge",
        description="Microplate edge appliance: reads HI plates, stores and exports results.",
    )
    parser.add_argument("--config", help="JSON settings file (else environment MICROPLATE_EDGE_*)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the appliance with its HTTP API and touchscreen UI")
    p.add_argument("--host", help="bind address (default: settings http.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: settings http.port)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run the appliance over the bundled plate images")
    p.add_argument("--once", action="store_true", help="process the images, print, and exit")
    p.add_argument("--data-dir", default="demo-data", help="where the demo keeps its files")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--images", help="folder of plate images (default: models/samples)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "enroll", help="take the cloud's enrollment bundle: identity, sync settings, credentials"
    )
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle file ('-' reads stdin)")
    p.add_argument("--site", help="the site this appliance belongs to (default: its site_id)")
    p.add_argument(
        "--credentials-dir",
        help="where to write the secret files, mode 0600 (default: credentials/ beside the "
        "settings file)",
    )
    p.add_argument(
        "--credentials-path",
        help="where the appliance will read them, if not there (systemd credentials: "
        "/run/credentials/microplate-edge.service)",
    )
    p.add_argument(
        "--base",
        help="start from this settings file instead of the current one (an installer renders "
        "the base; enroll adds the enrollment)",
    )
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("export-csv", help="write a sample's LabWare CSV into the share now")
    p.add_argument("sample", metavar="SAMPLE")
    p.set_defaults(func=cmd_export_csv)

    p = sub.add_parser("calibrate", help="propose a calibration grid from a plate image")
    p.add_argument("image", metavar="IMAGE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--save", action="store_true", help="make it the appliance's calibration")
    g.add_argument("--output", "-o", help="write it to this file (old-system format)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("db", help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dbsub.add_parser("migrate", help="apply pending migrations (backs up first)")
    dbsub.add_parser("check", help="integrity and foreign-key check")
    b = dbsub.add_parser("backup", help="consistent online copy of the database")
    b.add_argument("--output", "-o", help="backup file (default: backups/ beside the db)")
    p.set_defaults(func=cmd_db)
    from edge.db.litestream import add_restore_drill

    add_restore_drill(dbsub)  # its own func: restore from the Litestream replica and compare

    p = sub.add_parser("validate-config", help="check the settings; names the bad key")
    p.add_argument("--show", action="store_true", help="print the effective settings (no secrets)")
    p.set_defaults(func=cmd_validate_config)

    _add_analyze(sub)
    return parser


def _add_analyze(sub: Any) -> None:
    try:
        from edge.services import analyze
    except ImportError:  # the detect helper's module is not in this build
        return
    p = analyze.add_parser(sub)
    if isinstance(p, argparse.ArgumentParser):
        p.set_defaults(func=analyze.run)
    else:
        # add_parser may return nothing; find the subparser it registered.
        choice = sub.choices.get("analyze")
        if choice is not None:
            choice.set_defaults(func=analyze.run)


def _handle(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from edge.errors import ApplianceError

    try:
        return func(args)
    except ConfigProblem as exc:
        print(f"The configuration is invalid:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (UserError, ApplianceError) as exc:
        print(getattr(exc, "message", None) or str(exc), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a folder that can't be created, a file that can't be read, ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{exc.strerror or exc}{where}. Check the path and its permissions.", file=sys.stderr)
        return EXIT_USER
    except Exception as exc:
        # Known user-facing errors from other packages (detector, image, calibration).
        name = type(exc).__name__
        if name in (
            "DetectorError",
            "ModelError",
            "BackendUnavailable",
            "ImageDecodeError",
            "CalibrationError",
            "SampleNumberError",
            "ShareError",
            "StoreError",
        ):
            print(str(exc), file=sys.stderr)
            return EXIT_USER
        raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs each request's URL at INFO: a presigned URL (image upload, model download)
    # carries its signature in the query, a credential that must not reach the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.config:
        os.environ["MICROPLATE_EDGE_CONFIG_FILE"] = args.config
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    return _handle(func, args)


if __name__ == "__main__":
    sys.exit(main())
