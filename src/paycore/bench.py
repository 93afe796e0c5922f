"""`paycore bench` (placeholder until the load benchmark lands)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=20.0)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("the benchmark is not built yet")
