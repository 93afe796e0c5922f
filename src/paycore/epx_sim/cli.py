"""`paycore epx-sim` arguments and entry point (placeholder until the simulator lands)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("the simulator is not built yet")
