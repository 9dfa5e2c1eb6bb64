"""Backends ordered by a policy-defined key, for policies that must find the
best backend without scanning the pool on every pick."""

from typing import Any, Dict, List, Optional

from .types import BackendId


class Ranked:
    """Backends by key, smallest first: O(log n) ``set``/``remove``, O(1) ``best``.

    An indexed binary heap. Ties are broken by the order in which keys were
    last set (least recently set first), so equally good backends take turns.
    Keys are anything comparable with ``<`` (numbers, tuples).
    """

    def __init__(self) -> None:
        self._heap: List[list] = []  # [key, sequence, id]
        self._index: Dict[BackendId, int] = {}
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __contains__(self, backend_id: BackendId) -> bool:
        return backend_id in self._index

    def get(self, backend_id: BackendId) -> Optional[Any]:
        """The key of ``backend_id``, if present."""
        position = self._index.get(backend_id)
        return None if position is None else self._heap[position][0]

    def set(self, backend_id: BackendId, key: Any) -> None:
        """Inserts ``backend_id`` or moves it to ``key``."""
        self._sequence += 1
        position = self._index.get(backend_id)
        if position is None:
            self._heap.append([key, self._sequence, backend_id])
            self._index[backend_id] = len(self._heap) - 1
            self._up(len(self._heap) - 1)
        else:
            self._heap[position][0] = key
            self._heap[position][1] = self._sequence
            self._down(self._up(position))

    def remove(self, backend_id: BackendId) -> None:
        """Removes ``backend_id``; does nothing if it is absent."""
        position = self._index.pop(backend_id, None)
        if position is None:
            return
        last = self._heap.pop()
        if position < len(self._heap):
            self._heap[position] = last
            self._index[last[2]] = position
            self._down(self._up(position))

    def best(self, exclude: Optional[BackendId] = None) -> Optional[BackendId]:
        """The backend with the smallest key other than ``exclude``."""
        heap = self._heap
        if not heap:
            return None
        if heap[0][2] != exclude:
            return heap[0][2]
        # The runner-up of a binary heap is one of the root's children.
        if len(heap) == 1:
            return None
        if len(heap) == 2 or self._less(heap[1], heap[2]):
            return heap[1][2]
        return heap[2][2]

    @staticmethod
    def _less(a: list, b: list) -> bool:
        return a[0] < b[0] or (not b[0] < a[0] and a[1] < b[1])

    def _swap(self, i: int, j: int) -> None:
        heap = self._heap
        heap[i], heap[j] = heap[j], heap[i]
        self._index[heap[i][2]] = i
        self._index[heap[j][2]] = j

    def _up(self, i: int) -> int:
        while i > 0:
            parent = (i - 1) // 2
            if not self._less(self._heap[i], self._heap[parent]):
                break
            self._swap(i, parent)
            i = parent
        return i

    def _down(self, i: int) -> int:
        heap = self._heap
        n = len(heap)
        while True:
            child = 2 * i + 1
            if child >= n:
                return i
            if child + 1 < n and self._less(heap[child + 1], heap[child]):
                child += 1
            if not self._less(heap[child], heap[i]):
                return i
            self._swap(i, child)
            i = child
