"""What the host provides: randomness, time, logging, the fleet's in-flight counts.

Inside a component these are veer's imports; under :mod:`veer_picker.testing`
they are the fake host's, so a policy calls the same functions in both.
"""

from typing import Any

from .types import BackendId, LogLevel

# Set by veer_picker.export (the real imports) or veer_picker.testing (the fake).
_impl: Any = None


def _host() -> Any:
    if _impl is None:
        raise RuntimeError("no host: use veer_picker.export in a component, veer_picker.testing.Harness in tests")
    return _impl


def random_u64() -> int:
    """A uniformly random 64-bit number."""
    return _host().random_u64()


def random_below(bound: int) -> int:
    """A uniformly random integer in ``0..bound`` (``bound`` > 0)."""
    # Multiply-shift: no modulo bias worth measuring for pool-sized bounds.
    return (random_u64() * bound) >> 64


def random_unit() -> float:
    """A uniformly random float in ``[0, 1)``."""
    return (random_u64() >> 11) / float(1 << 53)


def now_us() -> int:
    """Monotonic time in microseconds; only differences mean anything."""
    return _host().now_us()


def log(level: LogLevel, message: str) -> None:
    """A line in veer's log, tagged with the plugin's name (rate-limited by veer)."""
    _host().log(level, message)


def in_flight(backend: BackendId) -> int:
    """Attempts in flight to ``backend`` across every worker of veer."""
    return _host().in_flight(backend)
