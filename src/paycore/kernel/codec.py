"""The JSON codec of the service (MEM-9, P3-2): msgspec, one module-level encoder and decoder for
API bodies, stored responses, webhooks and JSONB.

The standard library's `json` is banned in the service package (ruff `banned-api`); the simulator and
the benchmark tools, separate programs, keep it. `pretty` and `line` are for command-line output
only: they also write types msgspec does not know as text.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder()
_cli_encoder: Final = msgspec.json.Encoder(enc_hook=str)  # anything unknown as text

encode: Final = _encoder.encode
decode: Final = _decoder.decode


def pretty(value: Any, *, indent: int = 2) -> str:
    """`value` as indented JSON text (command-line output)."""
    return msgspec.json.format(_cli_encoder.encode(value), indent=indent).decode()


def line(value: Any) -> str:
    """`value` as one line of JSON text (command-line output)."""
    return _cli_encoder.encode(value).decode()
