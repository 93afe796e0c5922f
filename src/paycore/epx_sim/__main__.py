"""`python -m paycore.epx_sim [flags]`: the simulator without loading the rest of paycore.

Same flags as `paycore epx-sim`. Test helpers start it this way, so a broken import elsewhere in
paycore can never take the simulator down with it.
"""

from __future__ import annotations

import argparse
import sys

from paycore.epx_sim import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paycore.epx_sim", description="the EPX gateway simulator"
    )
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
