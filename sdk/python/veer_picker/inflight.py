"""In-flight bookkeeping from picks and outcomes."""

from typing import Dict

from .types import BackendId


class InFlight:
    """Requests this plugin sent to each backend whose outcome has not come yet.

    Call :meth:`picked` when ``pick`` returns a backend and :meth:`settle`
    from ``observe``: the contract delivers exactly one outcome with
    ``picked`` per pick, so the count is exact. Outcomes of the host's own
    fallback choices (``picked`` false) were never counted and are ignored;
    a late outcome for a forgotten backend finds nothing. It is this
    instance's share: veer runs one instance per worker, and
    ``host.in_flight`` counts across all of them.
    """

    def __init__(self) -> None:
        self._counts: Dict[BackendId, int] = {}

    def get(self, backend_id: BackendId) -> int:
        return self._counts.get(backend_id, 0)

    def picked(self, backend_id: BackendId) -> int:
        """Counts a pick; returns the new count."""
        count = self._counts.get(backend_id, 0) + 1
        self._counts[backend_id] = count
        return count

    def settle(self, outcome) -> bool:
        """Counts an outcome off; ``True`` when a count went down."""
        if not outcome.picked:
            return False
        count = self._counts.get(outcome.backend, 0)
        if count == 0:
            return False
        self._counts[outcome.backend] = count - 1
        return True

    def forget(self, backend_id: BackendId) -> None:
        self._counts.pop(backend_id, None)
