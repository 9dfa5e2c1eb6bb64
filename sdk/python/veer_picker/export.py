"""Turns a :class:`~veer_picker.Policy` into the ``veer:picker/policy`` export.

In the component's entry module (the one given to ``componentize-py``)::

    from veer_picker.export import export
    Policy = export(MyPolicy)

``wit_world`` (the bindings componentize-py generates from wit/picker.wit)
is imported here only, so the rest of the SDK and the policy itself run under
plain CPython and pytest.
"""

from typing import Any

from . import host
from .policy import Runtime
from .types import (
    Added,
    Backend,
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


def export(policy_class: type) -> type:
    """The class componentize-py exports for ``policy_class``; bind it to ``Policy``."""
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.imports import host as wit_host
    from wit_world.imports import types as wit

    host._impl = _WitHost(wit_host, wit)
    runtime = Runtime(policy_class)

    def backend(value: Any) -> Backend:
        return Backend(value.id, value.name, value.address, value.weight, list(value.labels))

    def event(value: Any) -> Any:
        if isinstance(value, wit.BackendEvent_Added):
            return Added(backend(value.value))
        if isinstance(value, wit.BackendEvent_Updated):
            return Updated(backend(value.value))
        if isinstance(value, wit.BackendEvent_Removed):
            return Removed(value.value)
        backend_id, eligible = value.value
        return Eligibility(backend_id, eligible)

    def refuse(error: Exception) -> Exception:
        if isinstance(error, (ConfigError, StateError)):
            return Err(str(error))
        return Err(f"{policy_class.NAME}: {type(error).__name__}: {error}")

    # componentize-py constructs this class anew for every call: the state
    # lives in `runtime`, one per component instance.
    class Export(exports.Policy):
        def info(self) -> Any:
            name, version, outcomes = runtime.info()
            feedback = wit.Feedback.OUTCOMES if outcomes else wit.Feedback(0)
            return wit.PluginInfo(name=name, version=version, feedback=feedback)

        def configure(self, params: Any) -> None:
            try:
                runtime.configure(params)
            except Exception as error:
                raise refuse(error) from None

        def backends_changed(self, events: Any) -> None:
            runtime.backends_changed([event(e) for e in events])

        def pick(self, ctx: Any) -> Any:
            return runtime.pick(PickContext(ctx.attempt, ctx.exclude, HttpMethod(ctx.method.value)))

        def observe(self, outcome: Any) -> None:
            error = None if outcome.error is None else ErrorKind(outcome.error.value)
            runtime.observe(Outcome(outcome.backend, outcome.picked, outcome.status, outcome.latency_us, error))

        def export_state(self) -> bytes:
            return runtime.export_state()

        def import_state(self, state: bytes) -> None:
            try:
                runtime.import_state(state)
            except Exception as error:
                raise refuse(error) from None

    Export.__name__ = Export.__qualname__ = "Policy"
    return Export


class _WitHost:
    """The SDK's host functions on veer's imports."""

    def __init__(self, imports: Any, wit: Any) -> None:
        self.random_u64 = imports.random_u64
        self.now_us = imports.now_us
        self.in_flight = imports.in_flight
        self._log = imports.log
        self._levels = {level: wit.LogLevel(level.value) for level in LogLevel}

    def log(self, level: LogLevel, message: str) -> None:
        self._log(self._levels[LogLevel(level)], message)
