"""Write routing policies for veer in Python.

A policy subclasses :class:`Policy`; :func:`veer_picker.export.export` turns
it into the ``veer:picker/policy`` export of a component (built with
componentize-py), and :class:`veer_picker.testing.Harness` runs the same code
under plain CPython with a fake host, so its logic is tested with pytest.

The SDK keeps the backend set (:class:`Pool`: O(1) eligible picks), parses
parameters (:class:`ParamReader`: typed values, every problem at once, unknown
keys rejected), counts in-flight requests from outcomes (:class:`InFlight`),
orders backends by a key (:class:`Ranked`: O(log n), no scans) and encodes
learned state (:mod:`veer_picker.state`). It mirrors the Rust SDK (``sdk/``)
and the JavaScript one (``sdk/js``).
"""

from . import host, state
from .inflight import InFlight
from .params import ParamReader, Params
from .policy import Policy
from .pool import Pool
from .ranked import Ranked
from .types import (
    Added,
    Backend,
    BackendEvent,
    BackendId,
    ConfigError,
    Eligibility,
    ErrorKind,
    HttpMethod,
    LogLevel,
    Outcome,
    PickContext,
    Removed,
    StateError,
    Updated,
)

__all__ = [
    "Added",
    "Backend",
    "BackendEvent",
    "BackendId",
    "ConfigError",
    "Eligibility",
    "ErrorKind",
    "HttpMethod",
    "InFlight",
    "LogLevel",
    "Outcome",
    "ParamReader",
    "Params",
    "PickContext",
    "Policy",
    "Pool",
    "Ranked",
    "Removed",
    "StateError",
    "Updated",
    "host",
    "state",
]
