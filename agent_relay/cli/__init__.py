"""The ``agent-relay`` command. Reserved: the ledger commands (runs, show, diff, export) come next."""

from __future__ import annotations

import argparse
import sys

from .._version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent-relay", description="Inspect the AgentRelay ledger.")
    parser.add_argument("--version", action="version", version=f"agent-relay {__version__}")
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
