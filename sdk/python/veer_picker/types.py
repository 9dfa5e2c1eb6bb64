"""The contract's data types, as plain Python (no generated bindings needed).

They mirror the records and variants of ``wit/picker.wit``; inside a component
:mod:`veer_picker.export` converts the generated ones into these (or passes
objects through that have the same attributes), so a policy reads the same
fields under the fake host and in veer.
"""

from dataclasses import dataclass, field
from enum import IntEnum
from typing import List, Optional, Tuple, Union

BackendId = int


class ConfigError(ValueError):
    """Raised by ``configure`` to reject the parameters; the message says why."""


class StateError(ValueError):
    """Raised by ``import_state`` to refuse state bytes; the message says why."""


class HttpMethod(IntEnum):
    GET = 0
    HEAD = 1
    POST = 2
    PUT = 3
    DELETE = 4
    OPTIONS = 5
    PATCH = 6
    TRACE = 7
    CONNECT = 8
    OTHER = 9


class ErrorKind(IntEnum):
    """Why an attempt failed without an HTTP response (``outcome.error``)."""

    CONNECT = 0
    RESET = 1
    TIMEOUT = 2
    PROTOCOL = 3
    NOT_SENT = 4


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


@dataclass
class Backend:
    """One backend as the plugin sees it."""

    id: BackendId
    name: str
    address: str
    weight: int = 1
    labels: List[Tuple[str, str]] = field(default_factory=list)


@dataclass
class Added:
    """A backend joined the pool (eligible unless an Eligibility follows)."""

    backend: Backend

    @property
    def id(self) -> BackendId:
        """The backend's id (every event has one)."""
        return self.backend.id


@dataclass
class Updated:
    """A backend's weight, labels or address changed."""

    backend: Backend

    @property
    def id(self) -> BackendId:
        """The backend's id (every event has one)."""
        return self.backend.id


@dataclass
class Removed:
    """A backend left the pool for good."""

    id: BackendId


@dataclass
class Eligibility:
    """A backend became ineligible (``False``) or eligible again (``True``)."""

    id: BackendId
    eligible: bool


BackendEvent = Union[Added, Updated, Removed, Eligibility]


@dataclass
class PickContext:
    """What the host says with every pick."""

    attempt: int = 0
    exclude: Optional[BackendId] = None
    method: HttpMethod = HttpMethod.GET


@dataclass
class Outcome:
    """The result of one attempt; ``status`` is 0 when ``error`` is set."""

    backend: BackendId
    picked: bool = True
    status: int = 200
    latency_us: int = 0
    error: Optional[ErrorKind] = None

    @property
    def ok(self) -> bool:
        """A response below 500 (a 4xx is the client's doing, not the backend's)."""
        return self.error is None and 0 < self.status < 500
