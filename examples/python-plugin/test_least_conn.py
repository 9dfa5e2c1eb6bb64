"""The Python least-connections policy under the SDK's fake host (pytest)."""

import pytest

from least_conn import LeastConn
from veer_picker import ConfigError, Outcome
from veer_picker.testing import Harness, Reply


def test_equally_loaded_backends_take_turns():
    h = Harness(LeastConn)
    ids = h.add_backends(3)
    assert h.picks(300) == {b: 100 for b in ids}


def test_in_flight_requests_steer_picks_relative_to_weight():
    h = Harness(LeastConn)
    heavy = h.add_backend("heavy", weight=3)
    light = h.add_backend("light", weight=1)
    picks = [h.pick() for _ in range(8)]  # none completes
    assert picks.count(heavy) == 6 and picks.count(light) == 2

    flat = Harness(LeastConn, [("weighted", "false")])
    heavy = flat.add_backend("heavy", weight=3)
    flat.add_backend("light", weight=1)
    assert [flat.pick() for _ in range(8)].count(heavy) == 4


def test_outcomes_count_down_only_for_its_own_picks():
    h = Harness(LeastConn)
    a, b = h.add_backends(2)
    first = h.pick()
    h.observe(Outcome(first, picked=False))  # the host's fallback: not ours
    assert h.pick() != first  # first still counts as busy
    h.complete(first)
    h.complete(first)  # a duplicate finds nothing to count down
    assert h.policy.in_flight.get(first) == 0


def test_avoids_a_slow_backend_under_load():
    h = Harness(LeastConn)
    fast1, fast2, slow = h.add_backends(3)
    report = h.run(2000, 8, lambda backend, _n, _rng: Reply(40_000 if backend == slow else 1_000))
    assert report.share(slow) < 0.1, report.requests


def test_ineligible_excluded_and_removed_backends_are_never_picked():
    h = Harness(LeastConn)
    a, b, c = h.add_backends(3)
    h.set_eligible(b, False)
    for _ in range(50):
        assert h.pick(exclude=a) == c
    h.remove_backend(c)
    assert h.pick(exclude=a) is None
    h.set_eligible(b, True)
    assert h.pick(exclude=a) == b


def test_rejects_bad_and_unknown_parameters_and_keeps_serving():
    with pytest.raises(ConfigError) as error:
        Harness(LeastConn, [("weighted", "maybe"), ("wieghted", "true")])
    assert "weighted: expected true or false, got 'maybe'" in str(error.value)
    assert "unknown parameter 'wieghted'" in str(error.value)
    h = Harness(LeastConn)
    a = h.add_backend("a")
    with pytest.raises(ConfigError):
        h.reconfigure([("weighted", "no")])
    assert h.pick() == a
    h.reconfigure([("weighted", "false")])
    assert h.pick() == a  # the fresh policy was shown the pool


def test_a_pick_does_not_scan_the_pool():
    # O(log n): the same number of key comparisons order of magnitude at 1000 as at 10.
    import veer_picker.ranked as ranked

    def comparisons(n):
        h = Harness(LeastConn)
        h.add_backends(n)
        calls = 0
        original = ranked.Ranked._less

        def counting(a, b):
            nonlocal calls
            calls += 1
            return original(a, b)

        ranked.Ranked._less = staticmethod(counting)
        try:
            for _ in range(100):
                h.complete(h.pick())
        finally:
            ranked.Ranked._less = staticmethod(original)
        return calls / 100

    small, large = comparisons(10), comparisons(1000)
    assert large < 4 * small, (small, large)
