// A fake host: drive a policy the way veer does, under Node.js.
//
//   import { Harness } from "<sdk>/testing.js";
//   const h = new Harness(MyPolicy, [["weighted", "false"]]);
//   const a = h.addBackend("a");
//   assert.equal(h.pick(), a);
//
// Every pick is checked against the contract (an eligible backend other than
// the excluded one, or undefined only when there is none): a violation throws
// ContractViolation, as veer would count a fault.

import { Runtime, setHost } from "./index.js";

export class ContractViolation extends Error {}

/** A small seeded generator (SplitMix64): the same seed, the same numbers. */
export class SimRng {
  constructor(seed) {
    this.state = BigInt.asUintN(64, BigInt(seed));
  }

  nextU64() {
    this.state = BigInt.asUintN(64, this.state + 0x9e3779b97f4a7c15n);
    let z = this.state;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    return z ^ (z >> 31n);
  }

  /** A number in [0, 1). */
  unit() {
    return Number(this.nextU64() >> 11n) / 2 ** 53;
  }

  /** An integer in 0..bound. */
  below(bound) {
    return Number((this.nextU64() * BigInt(bound)) >> 64n);
  }
}

/** Seeded randomness, a virtual clock, captured logs, settable fleet in-flight counts. */
export class FakeHost {
  constructor(seed) {
    this.rng = new SimRng(seed);
    this.clockUs = 0;
    this.logs = [];
    this.fleetInFlight = new Map();
  }

  randomU64() {
    return this.rng.nextU64();
  }

  nowUs() {
    return BigInt(this.clockUs);
  }

  log(level, message) {
    this.logs.push([level, message]);
  }

  inFlight(backend) {
    return this.fleetInFlight.get(backend) ?? 0;
  }
}

/** What `Harness.run` measured. */
export class Report {
  constructor() {
    this.requests = new Map();
    this.failures = new Map();
    this.latencyUs = new Map();
    this.unpicked = 0;
    this.elapsedUs = 0;
  }

  total() {
    let sum = 0;
    for (const n of this.requests.values()) sum += n;
    return sum;
  }

  failed() {
    let sum = 0;
    for (const n of this.failures.values()) sum += n;
    return sum;
  }

  share(id) {
    return (this.requests.get(id) ?? 0) / Math.max(1, this.total());
  }

  errorRate() {
    return this.failed() / Math.max(1, this.total());
  }

  meanLatencyUs() {
    let sum = 0;
    for (const n of this.latencyUs.values()) sum += n;
    return sum / Math.max(1, this.total());
  }

  goodputPerS() {
    return (this.total() - this.failed()) / (Math.max(1, this.elapsedUs) / 1e6);
  }
}

const add = (map, key, n) => map.set(key, (map.get(key) ?? 0) + n);

/** Configures `PolicyClass` with `params` (throwing its ConfigError) and plays veer's part. */
export class Harness {
  constructor(PolicyClass, params = [], { seed = 1 } = {}) {
    this.host = new FakeHost(seed);
    setHost(this.host);
    this.runtime = new Runtime(PolicyClass);
    this.runtime.configure(params);
    this.nextId = 1;
  }

  get policy() {
    return this.runtime.policy;
  }

  get pool() {
    return this.runtime.pool;
  }

  get logs() {
    return this.host.logs;
  }

  reconfigure(params) {
    setHost(this.host);
    this.runtime.configure(params);
  }

  send(events) {
    setHost(this.host);
    this.runtime.backendsChanged(events);
  }

  addBackend(name, weight = 1, labels = []) {
    const id = this.nextId++;
    this.send([{ tag: "added", val: { id, name, address: `127.0.0.1:${8000 + id}`, weight, labels } }]);
    return id;
  }

  addBackends(n) {
    return Array.from({ length: n }, (_, i) => this.addBackend(`b${i}`));
  }

  setWeight(id, weight) {
    const known = this.pool.get(id);
    if (!known) throw new Error(`unknown backend ${id}`);
    this.send([{ tag: "updated", val: { ...known, weight } }]);
  }

  setEligible(id, eligible) {
    this.send([{ tag: "eligibility", val: [id, eligible] }]);
  }

  removeBackend(id) {
    this.send([{ tag: "removed", val: id }]);
  }

  /** One pick, checked against the contract. */
  pick({ exclude = undefined, attempt = 0, method = "get" } = {}) {
    setHost(this.host);
    const choice = this.runtime.pick({ attempt, exclude, method });
    const eligible = this.pool.eligible.filter((id) => id !== exclude);
    if (choice === undefined) {
      if (eligible.length) throw new ContractViolation(`picked nothing while ${eligible} were eligible`);
    } else if (choice === exclude) {
      throw new ContractViolation(`picked the excluded backend ${choice}`);
    } else if (!this.pool.isEligible(choice)) {
      throw new ContractViolation(`picked ${choice}, which is not eligible (eligible: ${eligible})`);
    }
    return choice;
  }

  observe(outcome) {
    setHost(this.host);
    if (this.runtime.info().outcomes) this.runtime.observe({ picked: true, status: 200, latencyUs: 0, ...outcome });
  }

  /** The outcome of a pick: a 200 (or a 500 when not `ok`) after `latencyUs`. */
  complete(backend, latencyUs = 1000, ok = true) {
    this.observe({ backend, picked: true, status: ok ? 200 : 500, latencyUs, error: undefined });
  }

  completeWithError(backend, latencyUs, error) {
    this.observe({ backend, picked: true, status: 0, latencyUs, error });
  }

  /** `n` picks, each completed at once; a Map of how many each backend got. */
  picks(n) {
    const counts = new Map();
    for (let i = 0; i < n; i++) {
      const choice = this.pick();
      if (choice !== undefined) {
        add(counts, choice, 1);
        this.complete(choice);
      }
    }
    return counts;
  }

  /** What `inFlight` answers for `backend` (the whole fleet's count). */
  setInFlight(backend, count) {
    this.host.fleetInFlight.set(backend, count);
  }

  advanceUs(us) {
    this.host.clockUs += us;
  }

  nowUs() {
    return this.host.clockUs;
  }

  exportState() {
    setHost(this.host);
    return this.runtime.exportState();
  }

  importState(bytes) {
    setHost(this.host);
    this.runtime.importState(bytes);
  }

  /**
   * Plays a closed loop of `concurrency` clients sending `requests` in all, in
   * virtual time. `model(backend, inFlight, rng)` answers one request with
   * `{ latencyUs, ok }`; `inFlight` counts what the backend serves including
   * this one. Outcomes reach the policy as veer delivers them; the clock jumps
   * to each completion. The same seed gives the same report.
   */
  run(requests, concurrency, model, { seed = 0xc0ffee } = {}) {
    const rng = new SimRng(seed);
    const report = new Report();
    const serving = new Map();
    const pending = []; // sorted by [at, sequence]: a small binary heap would do, clarity wins here
    const start = this.nowUs();
    let sent = 0;
    let sequence = 0;
    const issue = () => {
      const choice = this.pick();
      if (choice === undefined) {
        report.unpicked += 1;
        this.advanceUs(1000); // a client's back-off: nothing to wait for
        return;
      }
      add(serving, choice, 1);
      const reply = model(choice, serving.get(choice), rng);
      sequence += 1;
      const entry = { at: this.nowUs() + reply.latencyUs, sequence, backend: choice, reply };
      let i = pending.length;
      while (i > 0 && (pending[i - 1].at > entry.at || (pending[i - 1].at === entry.at && pending[i - 1].sequence > entry.sequence))) i--;
      pending.splice(i, 0, entry);
    };
    while (sent < Math.min(requests, concurrency)) {
      issue();
      sent += 1;
    }
    while (pending.length) {
      const { at, backend, reply } = pending.shift();
      this.host.clockUs = Math.max(this.host.clockUs, at);
      add(serving, backend, -1);
      add(report.requests, backend, 1);
      add(report.latencyUs, backend, reply.latencyUs);
      add(report.failures, backend, reply.ok ? 0 : 1);
      this.complete(backend, reply.latencyUs, reply.ok);
      if (sent < requests) {
        issue();
        sent += 1;
      }
    }
    report.elapsedUs = this.nowUs() - start;
    return report;
  }
}
