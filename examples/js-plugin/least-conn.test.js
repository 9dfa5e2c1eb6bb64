// The JavaScript least-connections policy under the SDK's fake host (node --test).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Ranked } from "../../sdk/js/index.js";
import { Harness } from "../../sdk/js/testing.js";
import { LeastConn } from "./least-conn.js";

test("equally loaded backends take turns", () => {
  const h = new Harness(LeastConn);
  const ids = h.addBackends(3);
  assert.deepEqual([...h.picks(300)].sort(), ids.map((id) => [id, 100]));
});

test("in-flight requests steer picks relative to weight", () => {
  const h = new Harness(LeastConn);
  const heavy = h.addBackend("heavy", 3);
  h.addBackend("light", 1);
  const picks = Array.from({ length: 8 }, () => h.pick());
  assert.equal(picks.filter((id) => id === heavy).length, 6);

  const flat = new Harness(LeastConn, [["weighted", "false"]]);
  const flatHeavy = flat.addBackend("heavy", 3);
  flat.addBackend("light", 1);
  assert.equal(Array.from({ length: 8 }, () => flat.pick()).filter((id) => id === flatHeavy).length, 4);
});

test("outcomes count down only for its own picks", () => {
  const h = new Harness(LeastConn);
  h.addBackends(2);
  const first = h.pick();
  h.observe({ backend: first, picked: false });
  assert.notEqual(h.pick(), first);
  h.complete(first);
  h.complete(first);
  assert.equal(h.policy.inFlight.get(first), 0);
});

test("avoids a slow backend under load", () => {
  const h = new Harness(LeastConn);
  const [, , slow] = h.addBackends(3);
  const report = h.run(2000, 8, (backend) => ({ latencyUs: backend === slow ? 40_000 : 1_000, ok: true }));
  assert.ok(report.share(slow) < 0.1, `${[...report.requests]}`);
});

test("ineligible, excluded and removed backends are never picked", () => {
  const h = new Harness(LeastConn);
  const [a, b, c] = h.addBackends(3);
  h.setEligible(b, false);
  for (let i = 0; i < 50; i++) assert.equal(h.pick({ exclude: a }), c);
  h.removeBackend(c);
  assert.equal(h.pick({ exclude: a }), undefined);
  h.setEligible(b, true);
  assert.equal(h.pick({ exclude: a }), b);
});

test("rejects bad and unknown parameters and keeps serving", () => {
  assert.throws(
    () => new Harness(LeastConn, [["weighted", "maybe"], ["wieghted", "true"]]),
    (error) =>
      error.message.includes("weighted: expected true or false, got 'maybe'") &&
      error.message.includes("unknown parameter 'wieghted'"),
  );
  const h = new Harness(LeastConn);
  const a = h.addBackend("a");
  assert.throws(() => h.reconfigure([["weighted", "no"]]));
  assert.equal(h.pick(), a);
  h.reconfigure([["weighted", "false"]]);
  assert.equal(h.pick(), a); // the fresh policy was shown the pool
});

test("a pick does not scan the pool", () => {
  // O(log n): heap swaps per pick and outcome grow by a few at 1000 backends, not 100-fold.
  const swaps = (n) => {
    const h = new Harness(LeastConn);
    h.addBackends(n);
    let calls = 0;
    const original = Ranked.prototype.swap;
    Ranked.prototype.swap = function (i, j) {
      calls += 1;
      return original.call(this, i, j);
    };
    try {
      for (let i = 0; i < 100; i++) h.complete(h.pick());
    } finally {
      Ranked.prototype.swap = original;
    }
    return calls / 100;
  };
  const small = swaps(10);
  const large = swaps(1000);
  assert.ok(large < 4 * Math.max(1, small), `${small} vs ${large}`);
});
