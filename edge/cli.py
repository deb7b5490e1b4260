"""`microplate-edge`: the appliance's command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microplate-edge",
        description="Microplate edge appliance: reads HI plates, stores and exports results.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="run the appliance over bundled plate images (not yet)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        print("The demo is not available yet: it lands with the edge appliance issue.")
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
