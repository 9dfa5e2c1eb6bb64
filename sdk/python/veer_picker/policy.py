"""The policy interface and the glue the export and the fake host share."""

from typing import List, Optional, Sequence, Tuple

from .params import Params
from .pool import Pool
from .types import Added, BackendEvent, BackendId, Eligibility, PickContext, StateError


class Policy:
    """A routing policy: decides which backend serves each request attempt.

    Subclass it, set ``NAME`` (and ``VERSION``, ``WANTS_OUTCOMES``), and
    implement :meth:`configure` and :meth:`pick`; everything else has a
    default. ``pick`` must return an id from ``pool.eligible`` other than
    ``ctx.exclude``, or ``None`` when there is none: anything else is a fault
    the host answers with its own choice.
    """

    NAME = ""
    VERSION = "0.1.0"
    #: Ask for ``observe`` after every attempt (one more boundary crossing per
    #: attempt: only for learning or load-aware policies).
    WANTS_OUTCOMES = False

    @classmethod
    def configure(cls, params: Params) -> "Policy":
        """Builds the policy from the operator's parameters; raise ``ConfigError`` to reject them."""
        params.reader().finish()
        return cls()

    def pick(self, pool: Pool, ctx: PickContext) -> Optional[BackendId]:
        raise NotImplementedError

    def backends_changed(self, pool: Pool, events: Sequence[BackendEvent]) -> None:
        """Called after the pool applied a batch of events."""

    def observe(self, pool: Pool, outcome) -> None:
        """Called after every attempt if ``WANTS_OUTCOMES``."""

    def export_state(self, pool: Pool) -> bytes:
        """Learned state (see :mod:`veer_picker.state`); empty when none."""
        return b""

    def import_state(self, pool: Pool, data: bytes) -> None:
        """Restores ``export_state``'s bytes; raise ``StateError`` to refuse them."""
        if data:
            raise StateError(f"{self.NAME} keeps no state, got {len(data)} bytes")


class Runtime:
    """Holds a policy and the pool it picks from (used by the export and the harness)."""

    def __init__(self, policy_class: type) -> None:
        if not policy_class.NAME:
            raise TypeError(f"{policy_class.__name__}.NAME must be set")
        self.policy_class = policy_class
        self.pool = Pool()
        self.policy: Optional[Policy] = None

    def info(self) -> Tuple[str, str, bool]:
        cls = self.policy_class
        return cls.NAME, cls.VERSION, bool(cls.WANTS_OUTCOMES)

    def configure(self, params: List[Tuple[str, str]]) -> None:
        """A rejected configure (``ConfigError``) leaves the running policy as it was.

        A re-configure builds a fresh policy, shows it the current backends and
        carries learned state over, so a parameter change keeps what was learned.
        """
        fresh = self.policy_class.configure(Params(params))
        if len(self.pool) > 0:
            fresh.backends_changed(self.pool, self.replay())
        if self.policy is not None:
            state = self.policy.export_state(self.pool)
            if state:
                try:
                    fresh.import_state(self.pool, state)
                except StateError:
                    pass  # state that does not fit the new parameters is dropped, not fatal
        self.policy = fresh

    def replay(self) -> List[BackendEvent]:
        """Events that rebuild the pool as it is."""
        events: List[BackendEvent] = [Added(b) for b in self.pool.backends()]
        events += [Eligibility(b.id, False) for b in self.pool.backends() if not self.pool.is_eligible(b.id)]
        return events

    def backends_changed(self, events: Sequence[BackendEvent]) -> None:
        self.pool.apply(events)
        if self.policy is not None:
            self.policy.backends_changed(self.pool, events)

    def pick(self, ctx) -> Optional[BackendId]:
        return None if self.policy is None else self.policy.pick(self.pool, ctx)

    def observe(self, outcome) -> None:
        if self.policy is not None:
            self.policy.observe(self.pool, outcome)

    def export_state(self) -> bytes:
        return b"" if self.policy is None else bytes(self.policy.export_state(self.pool))

    def import_state(self, data: bytes) -> None:
        if self.policy is None:
            raise StateError("import-state called before configure")
        self.policy.import_state(self.pool, bytes(data))
