// The JavaScript SDK under its own fake host: pool, ranking, parameters, state, harness.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ConfigError,
  InFlight,
  Params,
  Policy,
  Pool,
  Ranked,
  StateError,
  decodeState,
  encodeState,
  inFlight,
  log,
  nowUs,
  randomBelow,
  randomUnit,
} from "../index.js";
import { ContractViolation, Harness } from "../testing.js";

const backend = (id, weight = 1) => ({ id, name: `b${id}`, address: `127.0.0.1:${id}`, weight, labels: [] });
const sorted = (ids) => [...ids].sort((a, b) => a - b);

class First extends Policy {
  static NAME = "first";

  pick(pool, ctx) {
    const candidates = pool.eligible.filter((id) => id !== ctx.exclude);
    return candidates.length ? Math.min(...candidates) : undefined;
  }
}

class Broken extends Policy {
  static NAME = "broken";

  pick(_pool, ctx) {
    return ctx.exclude ?? 99;
  }
}

test("the pool follows events and keeps the eligible backends dense", () => {
  const pool = new Pool();
  pool.apply([1, 2, 3].map((id) => ({ tag: "added", val: backend(id) })));
  assert.deepEqual(sorted(pool.eligible), [1, 2, 3]);
  pool.apply([
    { tag: "eligibility", val: [2, false] },
    { tag: "eligibility", val: [9, true] },
    { tag: "removed", val: 7 },
  ]);
  assert.deepEqual(sorted(pool.eligible), [1, 3]);
  assert.equal(pool.size, 3);
  pool.apply([{ tag: "removed", val: 1 }, { tag: "eligibility", val: [2, true] }]);
  assert.deepEqual(sorted(pool.eligible), [2, 3]);
  assert.equal(pool.get(1), undefined);
  assert.equal(pool.candidates(3), 1);
  assert.equal(pool.candidate(0, 3), 2);
  assert.equal(pool.candidate(1, 3), undefined);
});

test("random picks are uniform and never the excluded backend", () => {
  const h = new Harness(First);
  const ids = h.addBackends(4);
  const seen = new Map(ids.map((id) => [id, 0]));
  for (let i = 0; i < 4000; i++) {
    const choice = h.pool.randomEligible(ids[0]);
    assert.notEqual(choice, ids[0]);
    seen.set(choice, seen.get(choice) + 1);
  }
  for (const id of ids.slice(1)) assert.ok(seen.get(id) > 1200 && seen.get(id) < 1470, `${[...seen]}`);
  for (const id of ids.slice(1)) h.setEligible(id, false);
  assert.equal(h.pool.randomEligible(ids[0]), undefined);
});

test("ranked orders by key, then least recently set", () => {
  const ranked = new Ranked();
  for (const [id, key] of [[1, 3], [2, 1], [3, 2], [4, 1]]) ranked.set(id, key);
  assert.equal(ranked.best(), 2);
  assert.equal(ranked.best(2), 4);
  ranked.set(2, 1);
  assert.equal(ranked.best(), 4);
  ranked.remove(4);
  ranked.remove(4);
  assert.equal(ranked.best(), 2);
  assert.equal(ranked.size, 3);
  assert.equal(ranked.get(1), 3);
  for (const id of [1, 2, 3]) ranked.remove(id);
  assert.equal(ranked.best(), undefined);
});

test("ranked agrees with a sort under random updates", () => {
  new Harness(First, [], { seed: 5 }); // installs the seeded fake host randomBelow draws from
  const ranked = new Ranked();
  const keys = new Map();
  const order = new Map();
  for (let step = 0; step < 3000; step++) {
    const id = randomBelow(40);
    if (randomUnit() < 0.2) {
      ranked.remove(id);
      keys.delete(id);
    } else {
      keys.set(id, randomBelow(8));
      order.set(id, step);
      ranked.set(id, keys.get(id));
    }
    const expected = [...keys.keys()].sort((a, b) => keys.get(a) - keys.get(b) || order.get(a) - order.get(b));
    assert.equal(ranked.best(), expected[0]);
    if (expected.length > 1) assert.equal(ranked.best(expected[0]), expected[1]);
  }
});

test("parameters report every problem and unknown keys", () => {
  const reader = new Params([["alpha", "2"], ["weighted", "maybe"], ["wieghted", "true"], ["n", "1.5"]]).reader();
  assert.equal(reader.number("alpha", 0.3, 0, 1), 0.3);
  assert.equal(reader.flag("weighted", true), true);
  assert.equal(reader.number("n", 3, 1, 10, { integer: true }), 3);
  assert.throws(
    () => reader.finish(),
    (error) =>
      error instanceof ConfigError &&
      error.message.includes("alpha: must be between 0 and 1, got 2") &&
      error.message.includes("weighted: expected true or false, got 'maybe'") &&
      error.message.includes("n: expected an integer, got '1.5'") &&
      error.message.includes("unknown parameter 'wieghted' (known: alpha, weighted, n)"),
  );
  new Params([]).reader().finish();
  assert.throws(() => new Params([["x", "1"]]).reader().finish(), /unknown parameter 'x' \(known: none\)/);
  const empty = new Params([["alpha", ""]]).reader();
  empty.number("alpha", 0.3, 0, 1);
  assert.throws(() => empty.finish(), /alpha: expected a number/);
});

test("in-flight counts only its own picks", () => {
  const counts = new InFlight();
  counts.picked(1);
  counts.picked(1);
  assert.equal(counts.settle({ backend: 1, picked: false }), false);
  assert.equal(counts.settle({ backend: 1, picked: true }), true);
  assert.equal(counts.get(1), 1);
  counts.settle({ backend: 1, picked: true });
  assert.equal(counts.settle({ backend: 1, picked: true }), false);
  assert.equal(counts.settle({ backend: 5, picked: true }), false);
});

test("state round-trips and foreign bytes are refused", () => {
  assert.deepEqual(decodeState("mine", encodeState("mine", { q: [1, 2] })), { q: [1, 2] });
  for (const [bytes, reason] of [
    [new Uint8Array([0xff, 0, 1]), /not this SDK's format/],
    [new TextEncoder().encode("[1,2]"), /not this SDK's format/],
    [encodeState("theirs", 1), /belongs to 'theirs'/],
    [encodeState("mine", 1, 2), /format 2 is newer/],
  ]) {
    assert.throws(() => decodeState("mine", bytes), (error) => error instanceof StateError && reason.test(error.message));
  }
});

test("a policy without parameters rejects any", () => {
  assert.throws(() => new Harness(First, [["x", "1"]]), /unknown parameter 'x'/);
});

test("the harness refuses contract violations", () => {
  const h = new Harness(Broken);
  const a = h.addBackend("a");
  assert.throws(() => h.pick(), (error) => error instanceof ContractViolation && /not eligible/.test(error.message));
  assert.throws(() => h.pick({ exclude: a }), /excluded/);
});

test("a stateless policy refuses foreign state, and the harness drives it", () => {
  const h = new Harness(First);
  const [a, b] = h.addBackends(2);
  assert.equal(h.pick(), a);
  assert.equal(h.pick({ exclude: a }), b);
  h.setEligible(a, false);
  assert.equal(h.pick(), b);
  assert.equal(h.pick({ exclude: b }), undefined);
  assert.equal(h.exportState().length, 0);
  assert.throws(() => h.importState(new Uint8Array([1, 2, 3])), /keeps no state/);
  h.importState(new Uint8Array(0));
});

test("host functions come from the fake host", () => {
  const h = new Harness(First, [], { seed: 3 });
  h.advanceUs(250);
  assert.equal(nowUs(), 250);
  log("warn", "hello");
  assert.deepEqual(h.logs.at(-1), ["warn", "hello"]);
  h.setInFlight(7, 4);
  assert.equal(inFlight(7), 4);
  assert.equal(inFlight(8), 0);
  for (let i = 0; i < 100; i++) assert.ok(randomBelow(5) < 5);
});

test("run is deterministic and delivers every outcome", () => {
  class Counting extends First {
    static NAME = "counting";
    static WANTS_OUTCOMES = true;
    seen = 0;

    observe() {
      this.seen += 1;
    }
  }
  const model = (_backend, _inFlight, rng) => ({ latencyUs: 1000 + rng.below(100), ok: rng.unit() > 0.1 });
  const reports = [0, 1].map(() => {
    const h = new Harness(Counting);
    h.addBackends(3);
    const report = h.run(500, 8, model);
    assert.equal(h.policy.seen, 500);
    return report;
  });
  assert.deepEqual(reports[0], reports[1]);
  assert.equal(reports[0].total(), 500);
  assert.ok(reports[0].errorRate() > 0.05 && reports[0].errorRate() < 0.15);
});
