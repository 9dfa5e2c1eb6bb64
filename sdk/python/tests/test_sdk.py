"""The Python SDK under its own fake host: pool, ranking, parameters, state, harness."""

import pytest

from veer_picker import (
    Added,
    Backend,
    ConfigError,
    Eligibility,
    ErrorKind,
    InFlight,
    Outcome,
    Params,
    Policy,
    Pool,
    Ranked,
    Removed,
    StateError,
    host,
    state,
)
from veer_picker.testing import ContractViolation, Harness, Reply


def backend(backend_id, weight=1):
    return Backend(backend_id, f"b{backend_id}", f"127.0.0.1:{backend_id}", weight)


def test_pool_follows_events_and_keeps_eligible_dense():
    pool = Pool()
    pool.apply([Added(backend(i)) for i in (1, 2, 3)])
    assert sorted(pool.eligible) == [1, 2, 3]
    pool.apply([Eligibility(2, False), Eligibility(9, True), Removed(7)])
    assert sorted(pool.eligible) == [1, 3] and len(pool) == 3 and not pool.is_eligible(2)
    pool.apply([Removed(1), Eligibility(2, True)])
    assert sorted(pool.eligible) == [2, 3] and pool.get(1) is None
    assert pool.candidates(3) == 1 and pool.candidate(0, 3) == 2 and pool.candidate(1, 3) is None


def test_random_eligible_is_uniform_and_never_the_excluded_one():
    h = Harness(First)
    ids = h.add_backends(4)
    seen = {b: 0 for b in ids}
    for _ in range(4000):
        choice = h.pool.random_eligible(ids[0])
        assert choice != ids[0]
        seen[choice] += 1
    assert seen[ids[0]] == 0 and all(1200 < seen[b] < 1470 for b in ids[1:]), seen
    h.set_eligible(ids[1], False)
    h.set_eligible(ids[2], False)
    h.set_eligible(ids[3], False)
    assert h.pool.random_eligible(ids[0]) is None


def test_ranked_orders_by_key_then_least_recently_set():
    ranked = Ranked()
    for backend_id, key in [(1, 3), (2, 1), (3, 2), (4, 1)]:
        ranked.set(backend_id, key)
    assert ranked.best() == 2 and ranked.best(exclude=2) == 4
    ranked.set(2, 1)  # set again: now behind 4 among equals
    assert ranked.best() == 4
    ranked.remove(4)
    ranked.remove(4)
    assert ranked.best() == 2 and len(ranked) == 3 and ranked.get(1) == 3
    for backend_id in (1, 2, 3):
        ranked.remove(backend_id)
    assert ranked.best() is None and ranked.best(exclude=1) is None


def test_ranked_agrees_with_a_sort_under_random_updates():
    import random

    rng = random.Random(5)
    ranked, keys, order = Ranked(), {}, {}
    for step in range(3000):
        backend_id = rng.randrange(40)
        if rng.random() < 0.2:
            ranked.remove(backend_id)
            keys.pop(backend_id, None)
        else:
            keys[backend_id] = rng.randrange(8)
            order[backend_id] = step
            ranked.set(backend_id, keys[backend_id])
        expected = sorted(keys, key=lambda b: (keys[b], order[b]))
        assert ranked.best() == (expected[0] if expected else None)
        if len(expected) > 1:
            assert ranked.best(exclude=expected[0]) == expected[1]


def test_params_report_every_problem_and_unknown_keys():
    reader = Params([("alpha", "2"), ("weighted", "maybe"), ("wieghted", "true"), ("n", "x")]).reader()
    assert reader.number("alpha", 0.3, 0.0, 1.0) == 0.3
    assert reader.flag("weighted", True) is True
    assert reader.number("n", 3, 1, 10) == 3
    with pytest.raises(ConfigError) as error:
        reader.finish()
    message = str(error.value)
    assert "alpha: must be between 0.0 and 1.0, got 2" in message
    assert "weighted: expected true or false, got 'maybe'" in message
    assert "n: expected an integer, got 'x'" in message
    assert "unknown parameter 'wieghted' (known: alpha, weighted, n)" in message
    Params([]).reader().finish()
    with pytest.raises(ConfigError, match="unknown parameter 'x' \\(known: none\\)"):
        Params([("x", "1")]).reader().finish()
    nan = Params([("alpha", "nan")]).reader()
    nan.number("alpha", 0.3, 0.0, 1.0)
    with pytest.raises(ConfigError, match="alpha"):
        nan.finish()


def test_in_flight_counts_only_its_own_picks():
    counts = InFlight()
    counts.picked(1)
    counts.picked(1)
    assert not counts.settle(Outcome(1, picked=False))
    assert counts.settle(Outcome(1)) and counts.get(1) == 1
    assert counts.settle(Outcome(1)) and not counts.settle(Outcome(1)) and counts.get(1) == 0
    assert not counts.settle(Outcome(5))


def test_state_round_trips_and_refuses_foreign_bytes():
    data = state.encode("mine", {"q": [1, 2]})
    assert state.decode("mine", data) == {"q": [1, 2]}
    for foreign, reason in [
        (b"\xff\x00garbage", "not this SDK's format"),
        (b"[1,2]", "not this SDK's format"),
        (state.encode("theirs", 1), "belongs to 'theirs'"),
        (state.encode("mine", 1, fmt=2), "format 2 is newer"),
    ]:
        with pytest.raises(StateError, match=reason):
            state.decode("mine", foreign)


class First(Policy):
    """The eligible backend with the lowest id."""

    NAME = "first"

    def pick(self, pool, ctx):
        candidates = [b for b in pool.eligible if b != ctx.exclude]
        return min(candidates) if candidates else None


class Broken(Policy):
    """Picks the excluded backend, or an ineligible one: the harness must say so."""

    NAME = "broken"

    def pick(self, pool, ctx):
        return ctx.exclude if ctx.exclude is not None else 99


def test_a_policy_without_parameters_rejects_any():
    with pytest.raises(ConfigError, match="unknown parameter 'x'"):
        Harness(First, [("x", "1")])


def test_the_harness_refuses_contract_violations():
    h = Harness(Broken)
    a = h.add_backend("a")
    with pytest.raises(ContractViolation, match="not eligible"):
        h.pick()
    with pytest.raises(ContractViolation, match="excluded"):
        h.pick(exclude=a)


def test_a_stateless_policy_refuses_foreign_state_and_the_harness_drives_it():
    h = Harness(First)
    a, b = h.add_backends(2)
    assert h.pick() == a and h.pick(exclude=a) == b
    h.set_eligible(a, False)
    assert h.pick() == b and h.pick(exclude=b) is None
    assert h.export_state() == b""
    with pytest.raises(StateError, match="keeps no state"):
        h.import_state(b"xyz")
    h.import_state(b"")


def test_host_functions_come_from_the_fake_host():
    h = Harness(First, seed=3)
    h.advance_us(250)
    assert host.now_us() == 250
    host.log(3, "hello")
    assert h.logs[-1][1] == "hello"
    h.set_in_flight(7, 4)
    assert host.in_flight(7) == 4 and host.in_flight(8) == 0
    assert all(0 <= host.random_below(5) < 5 for _ in range(100))
    assert 0.0 <= host.random_unit() < 1.0


def test_run_is_deterministic_and_delivers_outcomes():
    class Counting(First):
        NAME = "counting"
        WANTS_OUTCOMES = True

        def __init__(self):
            self.seen = 0

        def observe(self, pool, outcome):
            self.seen += 1
            assert outcome.error is None or outcome.error == ErrorKind.TIMEOUT

    def model(backend_id, in_flight, rng):
        return Reply(1000 + rng.randrange(100), ok=rng.random() > 0.1)

    reports = []
    for _ in range(2):
        h = Harness(Counting)
        h.add_backends(3)
        reports.append(h.run(500, 8, model))
        assert h.policy.seen == 500
    assert reports[0] == reports[1]
    assert reports[0].total() == 500 and 0.05 < reports[0].error_rate() < 0.15
    assert reports[0].goodput_per_s() > 0
