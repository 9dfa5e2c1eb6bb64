"""The backend set as a policy sees it, kept up to date from backend events."""

from typing import Dict, Iterator, List, Optional, Sequence

from . import host
from .types import Added, Backend, BackendEvent, BackendId, Eligibility, Removed, Updated


class Pool:
    """Every backend the host told the plugin about, and which are eligible.

    ``eligible`` is a dense list, so a policy picks by index in O(1) (a random
    number or a counter); eligibility changes cost O(1) too (swap-remove).
    The same rules as the Rust SDK's ``Pool``: a backend starts eligible when
    added, an event for an unknown id is ignored, a re-added id replaces the
    old backend.
    """

    def __init__(self) -> None:
        self._backends: Dict[BackendId, Backend] = {}
        self.eligible: List[BackendId] = []
        self._position: Dict[BackendId, int] = {}

    def apply(self, events: Sequence[BackendEvent]) -> None:
        """Applies a batch of events in order."""
        for event in events:
            if isinstance(event, Added):
                self._backends[event.backend.id] = event.backend
                self._set_eligible(event.backend.id, True)
            elif isinstance(event, Updated):
                if event.backend.id in self._backends:
                    self._backends[event.backend.id] = event.backend
            elif isinstance(event, Removed):
                if self._backends.pop(event.id, None) is not None:
                    self._set_eligible(event.id, False)
            elif isinstance(event, Eligibility):
                if event.id in self._backends:
                    self._set_eligible(event.id, event.eligible)

    def _set_eligible(self, backend_id: BackendId, eligible: bool) -> None:
        position = self._position.get(backend_id)
        if eligible and position is None:
            self._position[backend_id] = len(self.eligible)
            self.eligible.append(backend_id)
        elif not eligible and position is not None:
            last = self.eligible.pop()
            del self._position[backend_id]
            if last != backend_id:
                self.eligible[position] = last
                self._position[last] = position

    def is_eligible(self, backend_id: BackendId) -> bool:
        return backend_id in self._position

    def get(self, backend_id: BackendId) -> Optional[Backend]:
        return self._backends.get(backend_id)

    def find(self, name: str) -> Optional[Backend]:
        """The backend with this name (O(n): for configure, not for picks)."""
        return next((b for b in self._backends.values() if b.name == name), None)

    def backends(self) -> Iterator[Backend]:
        return iter(self._backends.values())

    def __len__(self) -> int:
        return len(self._backends)

    def candidates(self, exclude: Optional[BackendId]) -> int:
        """How many eligible backends other than ``exclude`` there are."""
        return len(self.eligible) - (1 if exclude is not None and exclude in self._position else 0)

    def candidate(self, index: int, exclude: Optional[BackendId]) -> Optional[BackendId]:
        """The ``index``-th eligible backend other than ``exclude``, O(1)."""
        if exclude is not None:
            skipped = self._position.get(exclude)
            if skipped is not None and index >= skipped:
                index += 1
        return self.eligible[index] if 0 <= index < len(self.eligible) else None

    def random_eligible(self, exclude: Optional[BackendId] = None) -> Optional[BackendId]:
        """A uniformly random eligible backend other than ``exclude``, O(1)."""
        count = self.candidates(exclude)
        if count == 0:
            return None
        return self.candidate(host.random_below(count), exclude)
