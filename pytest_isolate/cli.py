"""The ``pytest-isolate`` command, a small front end over the runtime.

    pytest-isolate doctor [--json]

``doctor`` probes this machine (``pytest_isolate.runtime.probe``) and prints what
isolation it supports, how, and for anything missing why and what would fix it. Its
exit status is 0 when full isolation is possible, 1 when something required is
missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-isolate", description="pytest-isolate's container runtime, "
        "from the command line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    doctor = sub.add_parser("doctor", help="what this machine supports for isolation, "
                            "and for anything missing, why and the fix",
                            description="Probe this machine by trying each feature in a "
                            "throwaway child. Exit status 0 when full isolation is possible.")
    doctor.add_argument("--json", action="store_true", help="print the probe as JSON")
    return parser


def doctor(as_json: bool = False) -> int:
    from .runtime.probe import probe

    result = probe(refresh=True)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0 if result.full else 1
    who = "root" if result.root else f"uid {os.geteuid()} (not root)"
    print(f"pytest-isolate doctor: {who}, Linux {os.uname().release}, "
          f"Python {sys.version.split()[0]}")
    print()
    print(result.table())
    print()
    if result.full:
        print("full isolation is possible here")
    else:
        names = ", ".join(f.name for f in result.missing)
        print(f"full isolation is not possible here: missing {names}")
    return 0 if result.full else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return doctor(args.json)
    raise AssertionError(args.command)  # argparse allows no other


if __name__ == "__main__":
    sys.exit(main())
