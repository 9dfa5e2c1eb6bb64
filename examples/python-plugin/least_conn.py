"""Least connections, written in Python on the veer_picker SDK (sdk/python).

Each request goes to the eligible backend with the fewest requests in flight
(relative to its weight unless ``weighted=false``); equally loaded backends
take turns. The same policy as the Rust built-in ``least-conn`` and the
JavaScript and C examples, so the four can be compared request for request
(see the README's cost table).

A pick does not scan the pool: the eligible backends sit in the SDK's
:class:`~veer_picker.Ranked` (a heap by load, least recently moved first),
so a pick or an outcome costs O(log n).

Parameters: ``weighted`` (true/false, default true). Unknown keys are
rejected, so an operator's typo does not go unnoticed.

The component's entry module is app.py; this one imports no bindings, so
test_least_conn.py runs it under pytest with the SDK's fake host.
"""

from typing import Optional, Sequence

from veer_picker import Added, BackendEvent, BackendId, InFlight, Params, PickContext, Policy, Pool, Ranked


class LeastConn(Policy):
    NAME = "least-conn-py"
    VERSION = "0.2.0"
    WANTS_OUTCOMES = True

    @classmethod
    def configure(cls, params: Params) -> "LeastConn":
        reader = params.reader()
        weighted = reader.flag("weighted", True)
        reader.finish()
        return cls(weighted)

    def __init__(self, weighted: bool) -> None:
        self.weighted = weighted
        self.in_flight = InFlight()
        self.ranked = Ranked()

    def _file(self, pool: Pool, backend_id: BackendId) -> None:
        """Files an eligible backend under its load, or takes an ineligible one out."""
        if not pool.is_eligible(backend_id):
            self.ranked.remove(backend_id)
            return
        weight = pool.get(backend_id).weight if self.weighted else 1
        self.ranked.set(backend_id, (self.in_flight.get(backend_id) + 1) / max(1, weight))

    def backends_changed(self, pool: Pool, events: Sequence[BackendEvent]) -> None:
        for event in events:
            if isinstance(event, Added):  # a re-added id is a new backend
                self.in_flight.forget(event.id)
            if pool.get(event.id) is None:  # removed: forget it
                self.ranked.remove(event.id)
                self.in_flight.forget(event.id)
            else:
                self._file(pool, event.id)

    def pick(self, pool: Pool, ctx: PickContext) -> Optional[BackendId]:
        choice = self.ranked.best(ctx.exclude)
        if choice is not None:
            self.in_flight.picked(choice)
            self._file(pool, choice)
        return choice

    def observe(self, pool: Pool, outcome) -> None:
        # Only outcomes of our own picks count down; the host's fallback
        # choices and late outcomes for removed backends change nothing.
        if self.in_flight.settle(outcome) and pool.get(outcome.backend) is not None:
            self._file(pool, outcome.backend)
