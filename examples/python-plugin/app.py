"""Least connections, written in Python.

Each request goes to the eligible backend with the fewest requests in flight
(relative to its weight unless ``weighted=false``); equally loaded backends
take turns. The same policy as the Rust built-in ``least-conn`` and the
JavaScript example, so the three can be compared request for request (see the
README's cost table). Unlike the built-in, a pick scans the eligible backends
(O(n)): clear code matters more here than the last microsecond.

Parameters: ``weighted`` (true/false, default true). Unknown keys are
rejected, as the contract asks, so an operator's typo does not go unnoticed.

Built with ``componentize-py`` (see build.sh): the ``Policy`` class below
implements the ``veer:picker/policy`` interface of wit/picker.wit; the
``wit_world`` package is generated from the WIT at build time.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types


@dataclass
class _Backend:
    id: int
    weight: int
    eligible: bool = True
    in_flight: int = 0


def _parse_flag(key: str, value: str, problems: List[str]) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    problems.append(f"{key}: expected true or false, got '{value}'")
    return True


class _State:
    def __init__(self) -> None:
        # Insertion-ordered, so the rotating tie-break below is deterministic.
        self.backends: dict[int, _Backend] = {}
        # The same records in a list kept in step by the events, so a pick
        # scans without building anything.
        self.order: List[_Backend] = []
        self.weighted = True
        self.cursor = 0


# componentize-py constructs the export class anew for every call, so the
# policy's state lives at module level: one per component instance.
_STATE = _State()


class Policy(exports.Policy):
    """The ``policy`` export (see the module docs)."""

    def info(self) -> types.PluginInfo:
        return types.PluginInfo(name="least-conn-py", version="0.1.0", feedback=types.Feedback.OUTCOMES)

    def configure(self, params: List[Tuple[str, str]]) -> None:
        # Validate everything, report every problem at once, then apply: a
        # rejected configure leaves the plugin as it was.
        problems: List[str] = []
        weighted = True
        for key, value in params:
            if key == "weighted":
                weighted = _parse_flag(key, value, problems)
            else:
                problems.append(f"unknown parameter '{key}' (known: weighted)")
        if problems:
            raise Err("; ".join(problems))
        _STATE.weighted = weighted

    def backends_changed(self, events: List[types.BackendEvent]) -> None:
        # Removals are collected and the list rebuilt once per batch: a batch
        # removing every backend stays O(n), not O(n²).
        gone = False
        for event in events:
            if isinstance(event, types.BackendEvent_Added):
                record = _Backend(id=event.value.id, weight=max(1, event.value.weight))
                gone = _STATE.backends.pop(record.id, None) is not None or gone
                _STATE.backends[record.id] = record
                _STATE.order.append(record)
            elif isinstance(event, types.BackendEvent_Updated):
                known = _STATE.backends.get(event.value.id)
                if known is not None:
                    known.weight = max(1, event.value.weight)
            elif isinstance(event, types.BackendEvent_Removed):
                gone = _STATE.backends.pop(event.value, None) is not None or gone
            elif isinstance(event, types.BackendEvent_Eligibility):
                backend_id, eligible = event.value
                known = _STATE.backends.get(backend_id)
                if known is not None:
                    known.eligible = eligible
        if gone:
            # Keep only the records the map still holds (a re-added id has a new one).
            _STATE.order = [b for b in _STATE.order if _STATE.backends.get(b.id) is b]

    def pick(self, ctx: types.PickContext) -> Optional[int]:
        order = _STATE.order
        n = len(order)
        if n == 0:
            return None
        start = _STATE.cursor % n
        _STATE.cursor = (start + 1) % n
        weighted = _STATE.weighted
        exclude = ctx.exclude
        best: Optional[_Backend] = None
        best_load = float("inf")
        # Visit from the cursor onwards so ties go to the next backend in turn.
        for step in range(n):
            backend = order[(start + step) % n]
            if not backend.eligible or backend.id == exclude:
                continue
            load = (backend.in_flight + 1) / (backend.weight if weighted else 1)
            if load < best_load:
                best, best_load = backend, load
        if best is None:
            return None
        best.in_flight += 1
        return best.id

    def observe(self, outcome: types.Outcome) -> None:
        # Exactly one outcome per pick of ours (`picked`); the host's own
        # fallback choices were never counted, and late outcomes for removed
        # backends find nothing to decrement.
        if not outcome.picked:
            return
        backend = _STATE.backends.get(outcome.backend)
        if backend is not None and backend.in_flight > 0:
            backend.in_flight -= 1

    def export_state(self) -> bytes:
        # In-flight counts belong to the instance that routed those requests
        # (their outcomes go back to it): nothing to hand over.
        return b""

    def import_state(self, state: bytes) -> None:
        if state:
            host.log(types.LogLevel.WARN, f"ignoring {len(state)} bytes of foreign state")
            raise Err(f"least-conn-py keeps no state, got {len(state)} bytes")
