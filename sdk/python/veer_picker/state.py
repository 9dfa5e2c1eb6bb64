"""Learned state that survives a restart or a hot swap.

``encode`` writes a JSON document tagged with the policy's name and a state
format number; ``decode`` refuses anything else with a clear
:class:`StateError` (foreign bytes, another policy's state, a newer format),
which is what the contract asks of ``import-state``.
"""

import json
from typing import Any

from .types import StateError

_MAGIC = "veer-picker-state"


def encode(policy: str, value: Any, fmt: int = 1) -> bytes:
    """``value`` (anything ``json`` can write) as state bytes of ``policy``."""
    return json.dumps({"magic": _MAGIC, "policy": policy, "format": fmt, "state": value}, separators=(",", ":")).encode()


def decode(policy: str, data: bytes, max_format: int = 1) -> Any:
    """The value ``encode`` wrote for ``policy``, in a format up to ``max_format``."""
    try:
        document = json.loads(bytes(data).decode())
    except (UnicodeDecodeError, ValueError) as error:
        raise StateError(f"{policy}: state is not this SDK's format ({len(data)} bytes: {error})") from None
    if not isinstance(document, dict) or document.get("magic") != _MAGIC:
        raise StateError(f"{policy}: state is not this SDK's format ({len(data)} bytes)")
    if document.get("policy") != policy:
        raise StateError(f"{policy}: state belongs to '{document.get('policy')}'")
    fmt = document.get("format")
    if not isinstance(fmt, int) or fmt > max_format:
        raise StateError(f"{policy}: state format {fmt} is newer than {max_format}")
    return document.get("state")
