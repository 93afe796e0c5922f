"""The JSON codec of the service (MEM-9): msgspec, one module-level encoder and decoder.

The standard library's `json` is banned in the service package (ruff `banned-api`); the simulator and
the benchmark tools, separate programs, keep it. `pretty` is for command-line output only.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

_encoder: Final = msgspec.json.Encoder(enc_hook=str)  # UUIDs, datetimes natively; anything else as text
_decoder: Final = msgspec.json.Decoder()

encode: Final = _encoder.encode
decode: Final = _decoder.decode


def pretty(value: Any, *, indent: int = 2) -> str:
    """`value` as indented JSON text (command-line output)."""
    return msgspec.json.format(_encoder.encode(value), indent=indent).decode()


def line(value: Any) -> str:
    """`value` as one line of JSON text (command-line output)."""
    return _encoder.encode(value).decode()
