"""`python -m edge.auth hash`: make the supervisor PIN hash for the settings."""

from __future__ import annotations

import argparse
import getpass
import sys

from edge.auth.credentials import hash_pin


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.auth hash`: print the argon2 hash of a PIN typed twice (never echoed)."""
    parser = argparse.ArgumentParser(prog="python -m edge.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="hash a supervisor PIN or password for the settings")
    parser.parse_args(argv)
    pin = getpass.getpass("Supervisor PIN or password: ")
    if len(pin) < 4:
        print("Too short: use at least 4 characters.", file=sys.stderr)
        return 2
    if getpass.getpass("Again: ") != pin:
        print("The two entries differ; nothing was written.", file=sys.stderr)
        return 2
    print(hash_pin(pin))
    return 0
