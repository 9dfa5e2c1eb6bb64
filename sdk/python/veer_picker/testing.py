"""A fake host: drive a policy the way veer does, under plain CPython.

>>> from veer_picker.testing import Harness
>>> h = Harness(MyPolicy, [("weighted", "false")])   # doctest: +SKIP
>>> a = h.add_backend("a"); b = h.add_backend("b")   # doctest: +SKIP
>>> h.pick() in (a, b)                               # doctest: +SKIP
True

Every pick is checked against the contract (an eligible backend other than
the excluded one, or ``None`` only when there is none): a violation raises
:class:`ContractViolation`, as veer would count a fault.
"""

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import host
from .policy import Runtime
from .types import (
    Added,
    Backend,
    BackendEvent,
    BackendId,
    Eligibility,
    ErrorKind,
    HttpMethod,
    LogLevel,
    Outcome,
    PickContext,
    Removed,
    Updated,
)


class ContractViolation(AssertionError):
    """The policy answered what veer would refuse."""


class FakeHost:
    """Seeded randomness, a virtual clock, captured logs, settable fleet in-flight counts."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock_us = 0
        self.logs: List[Tuple[LogLevel, str]] = []
        self.fleet_in_flight: Dict[BackendId, int] = {}

    def random_u64(self) -> int:
        return self.rng.getrandbits(64)

    def now_us(self) -> int:
        return self.clock_us

    def log(self, level: LogLevel, message: str) -> None:
        self.logs.append((LogLevel(level), message))

    def in_flight(self, backend: BackendId) -> int:
        return self.fleet_in_flight.get(backend, 0)


@dataclass
class Reply:
    """A modelled backend's answer: after ``latency_us``, a success or a 500."""

    latency_us: int
    ok: bool = True


@dataclass
class Report:
    """What :meth:`Harness.run` measured, per backend and in all."""

    requests: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    latency_us: Counter = field(default_factory=Counter)
    unpicked: int = 0
    elapsed_us: int = 0

    def total(self) -> int:
        return sum(self.requests.values())

    def share(self, backend_id: BackendId) -> float:
        return self.requests[backend_id] / max(1, self.total())

    def error_rate(self) -> float:
        return sum(self.failures.values()) / max(1, self.total())

    def mean_latency_us(self) -> float:
        return sum(self.latency_us.values()) / max(1, self.total())

    def goodput_per_s(self) -> float:
        return (self.total() - sum(self.failures.values())) / (max(1, self.elapsed_us) / 1e6)


class Harness:
    """Configures ``policy_class`` with ``params`` (raising its ``ConfigError``) and plays veer's part."""

    def __init__(self, policy_class: type, params: Sequence[Tuple[str, str]] = (), seed: int = 1) -> None:
        self.host = FakeHost(seed)
        host._impl = self.host
        self.runtime = Runtime(policy_class)
        self.runtime.configure(list(params))
        self._next_id = 1

    @property
    def policy(self):
        return self.runtime.policy

    @property
    def pool(self):
        return self.runtime.pool

    @property
    def logs(self) -> List[Tuple[LogLevel, str]]:
        return self.host.logs

    def reconfigure(self, params: Sequence[Tuple[str, str]]) -> None:
        host._impl = self.host
        self.runtime.configure(list(params))

    def send(self, events: Sequence[BackendEvent]) -> None:
        host._impl = self.host
        self.runtime.backends_changed(list(events))

    def add_backend(self, name: str, weight: int = 1, labels: Sequence[Tuple[str, str]] = ()) -> BackendId:
        backend_id = self._next_id
        self._next_id += 1
        self.send([Added(Backend(backend_id, name, f"127.0.0.1:{8000 + backend_id}", weight, list(labels)))])
        return backend_id

    def add_backends(self, n: int) -> List[BackendId]:
        return [self.add_backend(f"b{i}") for i in range(n)]

    def set_weight(self, backend_id: BackendId, weight: int) -> None:
        known = self.pool.get(backend_id)
        assert known is not None, f"unknown backend {backend_id}"
        self.send([Updated(Backend(known.id, known.name, known.address, weight, known.labels))])

    def set_eligible(self, backend_id: BackendId, eligible: bool) -> None:
        self.send([Eligibility(backend_id, eligible)])

    def remove_backend(self, backend_id: BackendId) -> None:
        self.send([Removed(backend_id)])

    def pick(
        self, exclude: Optional[BackendId] = None, attempt: int = 0, method: HttpMethod = HttpMethod.GET
    ) -> Optional[BackendId]:
        """One pick, checked against the contract."""
        host._impl = self.host
        choice = self.runtime.pick(PickContext(attempt, exclude, method))
        eligible = [b for b in self.pool.eligible if b != exclude]
        if choice is None:
            if eligible:
                raise ContractViolation(f"picked nothing while {eligible} were eligible")
        elif choice == exclude:
            raise ContractViolation(f"picked the excluded backend {choice}")
        elif not self.pool.is_eligible(choice):
            raise ContractViolation(f"picked {choice}, which is not eligible (eligible: {eligible})")
        return choice

    def observe(self, outcome: Outcome) -> None:
        host._impl = self.host
        if self.runtime.info()[2]:
            self.runtime.observe(outcome)

    def complete(self, backend_id: BackendId, latency_us: int = 1000, ok: bool = True) -> None:
        """The outcome of a pick: a 200 (or a 500 when not ``ok``) after ``latency_us``."""
        self.observe(Outcome(backend_id, True, 200 if ok else 500, latency_us))

    def complete_with_error(self, backend_id: BackendId, latency_us: int, error: ErrorKind) -> None:
        self.observe(Outcome(backend_id, True, 0, latency_us, error))

    def picks(self, n: int) -> Counter:
        """``n`` picks, each completed at once; how many each backend got."""
        counts: Counter = Counter()
        for _ in range(n):
            choice = self.pick()
            if choice is not None:
                counts[choice] += 1
                self.complete(choice)
        return counts

    def set_in_flight(self, backend_id: BackendId, count: int) -> None:
        """What ``host.in_flight`` answers for ``backend_id`` (the whole fleet's count)."""
        self.host.fleet_in_flight[backend_id] = count

    def advance_us(self, us: int) -> None:
        self.host.clock_us += us

    def now_us(self) -> int:
        return self.host.clock_us

    def export_state(self) -> bytes:
        host._impl = self.host
        return self.runtime.export_state()

    def import_state(self, data: bytes) -> None:
        host._impl = self.host
        self.runtime.import_state(data)

    def run(
        self,
        requests: int,
        concurrency: int,
        model: Callable[[BackendId, int, random.Random], Reply],
        seed: int = 0xC0FFEE,
    ) -> Report:
        """Plays a closed loop of ``concurrency`` clients sending ``requests`` in all, in virtual time.

        ``model(backend, in_flight, rng)`` answers one request; ``in_flight``
        counts what the backend serves including this one (for capacity
        models). Outcomes reach the policy as veer delivers them, and the clock
        jumps to each completion. The same seed gives the same report.
        """
        rng = random.Random(seed)
        report = Report()
        serving: Counter = Counter()
        pending: List[Tuple[int, int, BackendId, Reply]] = []
        start = self.now_us()
        sent = 0
        sequence = 0

        def issue() -> None:
            nonlocal sequence
            choice = self.pick()
            if choice is None:
                report.unpicked += 1
                self.advance_us(1000)  # a client's back-off: nothing to wait for
                return
            serving[choice] += 1
            reply = model(choice, serving[choice], rng)
            sequence += 1
            heapq.heappush(pending, (self.now_us() + reply.latency_us, sequence, choice, reply))

        while sent < min(requests, concurrency):
            issue()
            sent += 1
        while pending:
            at, _, backend_id, reply = heapq.heappop(pending)
            self.host.clock_us = max(self.host.clock_us, at)
            serving[backend_id] -= 1
            report.requests[backend_id] += 1
            report.latency_us[backend_id] += reply.latency_us
            report.failures[backend_id] += 0 if reply.ok else 1
            self.complete(backend_id, reply.latency_us, reply.ok)
            if sent < requests:
                issue()
                sent += 1
        report.elapsed_us = self.now_us() - start
        return report
