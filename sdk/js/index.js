// Write routing policies for veer in JavaScript.
//
// A policy extends `Policy`; `exportPolicy` (./export.js) turns it into the
// `veer:picker/policy` export of a component built with jco, and `Harness`
// (./testing.js) runs the same code under Node.js with a fake host, so its
// logic is tested with `node --test` without building anything.
//
// The SDK keeps the backend set (`Pool`: O(1) eligible picks), parses
// parameters (`ParamReader`: typed values, every problem at once, unknown keys
// rejected), counts in-flight requests from outcomes (`InFlight`), orders
// backends by a key (`Ranked`: O(log n), no scans) and encodes learned state
// (`encodeState`/`decodeState`). It mirrors the Rust SDK (sdk/) and the
// Python one (sdk/python).
//
// Shapes are jco's for wit/picker.wit: an event is `{ tag: "added" | "updated",
// val: backend }`, `{ tag: "removed", val: id }` or `{ tag: "eligibility",
// val: [id, eligible] }`; a pick context is `{ attempt, exclude, method }`
// (`exclude` undefined when none); an outcome is `{ backend, picked, status,
// latencyUs, error }` with `latencyUs` a Number (the export converts jco's
// BigInt) and `error` undefined or one of "connect", "reset", "timeout",
// "protocol", "not-sent".

/** Thrown by `configure` to reject the parameters; the message says why. */
export class ConfigError extends Error {}

/** Thrown by `importState` to refuse state bytes; the message says why. */
export class StateError extends Error {}

// --- the host's services -----------------------------------------------------

let hostImpl = null;

/** Installs the host (the export installs veer's imports, the harness a fake). */
export function setHost(impl) {
  hostImpl = impl;
}

function theHost() {
  if (hostImpl === null) throw new Error("no host: use exportPolicy in a component, Harness in tests");
  return hostImpl;
}

/** A uniformly random 64-bit number, as a BigInt. */
export function randomU64() {
  return theHost().randomU64();
}

/** A uniformly random integer in 0..bound (bound > 0). */
export function randomBelow(bound) {
  return Number((randomU64() * BigInt(bound)) >> 64n);
}

/** A uniformly random number in [0, 1). */
export function randomUnit() {
  return Number(randomU64() >> 11n) / 2 ** 53;
}

/** Monotonic time in microseconds, as a Number; only differences mean anything. */
export function nowUs() {
  return Number(theHost().nowUs());
}

/** A line in veer's log ("trace" | "debug" | "info" | "warn" | "error"), rate-limited by veer. */
export function log(level, message) {
  theHost().log(level, message);
}

/** Attempts in flight to `backend` across every worker of veer. */
export function inFlight(backend) {
  return theHost().inFlight(backend);
}

// --- the backend set -----------------------------------------------------------

/** The backend id an event is about, whatever its tag. */
export function eventBackendId(event) {
  switch (event.tag) {
    case "added":
    case "updated":
      return event.val.id;
    case "removed":
      return event.val;
    default:
      return event.val[0];
  }
}

/**
 * Every backend the host told the plugin about, and which are eligible.
 * `eligible` is a dense array, so a policy picks by index in O(1); eligibility
 * changes cost O(1) too (swap-remove). The same rules as the Rust SDK's Pool.
 */
export class Pool {
  constructor() {
    this.backends = new Map();
    this.eligible = [];
    this.position = new Map();
  }

  /** Applies a batch of events in order. */
  apply(events) {
    for (const event of events) {
      switch (event.tag) {
        case "added":
          this.backends.set(event.val.id, event.val);
          this.setEligible(event.val.id, true);
          break;
        case "updated":
          if (this.backends.has(event.val.id)) this.backends.set(event.val.id, event.val);
          break;
        case "removed":
          if (this.backends.delete(event.val)) this.setEligible(event.val, false);
          break;
        case "eligibility":
          if (this.backends.has(event.val[0])) this.setEligible(event.val[0], event.val[1]);
          break;
        default:
          break; // an event of a later contract: ignored, as the Rust SDK does
      }
    }
  }

  setEligible(id, eligible) {
    const at = this.position.get(id);
    if (eligible && at === undefined) {
      this.position.set(id, this.eligible.length);
      this.eligible.push(id);
    } else if (!eligible && at !== undefined) {
      const last = this.eligible.pop();
      this.position.delete(id);
      if (last !== id) {
        this.eligible[at] = last;
        this.position.set(last, at);
      }
    }
  }

  isEligible(id) {
    return this.position.has(id);
  }

  get(id) {
    return this.backends.get(id);
  }

  /** The backend with this name (O(n): for configure, not for picks). */
  find(name) {
    for (const backend of this.backends.values()) if (backend.name === name) return backend;
    return undefined;
  }

  get size() {
    return this.backends.size;
  }

  /** How many eligible backends other than `exclude` there are. */
  candidates(exclude) {
    return this.eligible.length - (exclude !== undefined && this.position.has(exclude) ? 1 : 0);
  }

  /** The `index`-th eligible backend other than `exclude`, O(1). */
  candidate(index, exclude) {
    const skipped = exclude === undefined ? undefined : this.position.get(exclude);
    if (skipped !== undefined && index >= skipped) index += 1;
    return index >= 0 && index < this.eligible.length ? this.eligible[index] : undefined;
  }

  /** A uniformly random eligible backend other than `exclude`, O(1). */
  randomEligible(exclude) {
    const count = this.candidates(exclude);
    return count === 0 ? undefined : this.candidate(randomBelow(count), exclude);
  }

  /** Events that rebuild the pool as it is. */
  replay() {
    const events = [...this.backends.values()].map((val) => ({ tag: "added", val }));
    for (const id of this.backends.keys()) if (!this.isEligible(id)) events.push({ tag: "eligibility", val: [id, false] });
    return events;
  }
}

// --- ranking -------------------------------------------------------------------

/**
 * Backends ordered by a numeric key, smallest first: O(log n) `set`/`remove`,
 * O(1) `best`. An indexed binary heap; ties go to the backend whose key was set
 * least recently, so equally good backends take turns.
 */
export class Ranked {
  constructor() {
    this.heap = []; // { key, sequence, id }
    this.index = new Map();
    this.sequence = 0;
  }

  get size() {
    return this.heap.length;
  }

  has(id) {
    return this.index.has(id);
  }

  get(id) {
    const at = this.index.get(id);
    return at === undefined ? undefined : this.heap[at].key;
  }

  /** Inserts `id` or moves it to `key`. */
  set(id, key) {
    this.sequence += 1;
    const at = this.index.get(id);
    if (at === undefined) {
      this.heap.push({ key, sequence: this.sequence, id });
      this.index.set(id, this.heap.length - 1);
      this.up(this.heap.length - 1);
    } else {
      this.heap[at].key = key;
      this.heap[at].sequence = this.sequence;
      this.down(this.up(at));
    }
  }

  /** Removes `id`; does nothing if it is absent. */
  remove(id) {
    const at = this.index.get(id);
    if (at === undefined) return;
    this.index.delete(id);
    const last = this.heap.pop();
    if (at < this.heap.length) {
      this.heap[at] = last;
      this.index.set(last.id, at);
      this.down(this.up(at));
    }
  }

  /** The backend with the smallest key other than `exclude`. */
  best(exclude) {
    const heap = this.heap;
    if (heap.length === 0) return undefined;
    if (heap[0].id !== exclude) return heap[0].id;
    // The runner-up of a binary heap is one of the root's children.
    if (heap.length === 1) return undefined;
    if (heap.length === 2 || less(heap[1], heap[2])) return heap[1].id;
    return heap[2].id;
  }

  swap(i, j) {
    const heap = this.heap;
    [heap[i], heap[j]] = [heap[j], heap[i]];
    this.index.set(heap[i].id, i);
    this.index.set(heap[j].id, j);
  }

  up(i) {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(this.heap[i], this.heap[parent])) break;
      this.swap(i, parent);
      i = parent;
    }
    return i;
  }

  down(i) {
    const heap = this.heap;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= heap.length) return i;
      if (child + 1 < heap.length && less(heap[child + 1], heap[child])) child += 1;
      if (!less(heap[child], heap[i])) return i;
      this.swap(i, child);
      i = child;
    }
  }
}

function less(a, b) {
  return a.key < b.key || (a.key === b.key && a.sequence < b.sequence);
}

// --- in-flight bookkeeping -------------------------------------------------------

/**
 * Requests this plugin sent to each backend whose outcome has not come yet.
 * Call `picked` when `pick` returns a backend and `settle` from `observe`: the
 * contract delivers exactly one outcome with `picked` per pick, so the count
 * is exact. The host's own fallback choices (`picked` false) are ignored; a
 * late outcome for a forgotten backend finds nothing.
 */
export class InFlight {
  constructor() {
    this.counts = new Map();
  }

  get(id) {
    return this.counts.get(id) ?? 0;
  }

  /** Counts a pick; returns the new count. */
  picked(id) {
    const count = this.get(id) + 1;
    this.counts.set(id, count);
    return count;
  }

  /** Counts an outcome off; true when a count went down. */
  settle(outcome) {
    if (!outcome.picked) return false;
    const count = this.get(outcome.backend);
    if (count === 0) return false;
    this.counts.set(outcome.backend, count - 1);
    return true;
  }

  forget(id) {
    this.counts.delete(id);
  }
}

// --- parameters ------------------------------------------------------------------

/** `configure`'s parameters, `[key, value]` pairs; read them through `reader()`. */
export class Params {
  constructor(pairs) {
    this.pairs = pairs.map(([key, value]) => [String(key), String(value)]);
  }

  /** The last value given for `key`, or undefined. */
  get(key) {
    let value;
    for (const [k, v] of this.pairs) if (k === key) value = v;
    return value;
  }

  reader() {
    return new ParamReader(this);
  }
}

/** Reads typed values, collecting problems; `finish()` throws them all, and any unknown key. */
export class ParamReader {
  constructor(params) {
    this.params = params;
    this.known = [];
    this.problems = [];
  }

  read(key) {
    this.known.push(key);
    return this.params.get(key);
  }

  /** A number in low..=high (an integer when `integer`). */
  number(key, fallback, low, high, { integer = false } = {}) {
    const text = this.read(key);
    if (text === undefined) return fallback;
    const value = text.trim() === "" ? NaN : Number(text);
    if (Number.isNaN(value) || (integer && !Number.isInteger(value))) {
      this.problems.push(`${key}: expected ${integer ? "an integer" : "a number"}, got '${text}'`);
      return fallback;
    }
    if (!(value >= low && value <= high)) {
      this.problems.push(`${key}: must be between ${low} and ${high}, got ${text}`);
      return fallback;
    }
    return value;
  }

  /** `true` or `false`. */
  flag(key, fallback) {
    const text = this.read(key);
    if (text === undefined) return fallback;
    if (text === "true" || text === "false") return text === "true";
    this.problems.push(`${key}: expected true or false, got '${text}'`);
    return fallback;
  }

  text(key, fallback) {
    return this.read(key) ?? fallback;
  }

  /** Adds a problem of the policy's own (e.g. two parameters that contradict). */
  problem(message) {
    this.problems.push(message);
  }

  /** Throws a ConfigError naming every problem and unknown key. */
  finish() {
    const known = new Set(this.known);
    const problems = [...this.problems];
    const listed = this.known.length ? this.known.join(", ") : "none";
    for (const [key] of this.params.pairs) {
      if (!known.has(key)) {
        problems.push(`unknown parameter '${key}' (known: ${listed})`);
        known.add(key);
      }
    }
    if (problems.length) throw new ConfigError(problems.join("; "));
  }
}

// --- learned state ----------------------------------------------------------------

const MAGIC = "veer-picker-state";

/** `value` (anything JSON can write) as state bytes of `policy`. */
export function encodeState(policy, value, format = 1) {
  return new TextEncoder().encode(JSON.stringify({ magic: MAGIC, policy, format, state: value }));
}

/** The value `encodeState` wrote for `policy`, in a format up to `maxFormat`; a StateError otherwise. */
export function decodeState(policy, bytes, maxFormat = 1) {
  let document;
  try {
    document = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    throw new StateError(`${policy}: state is not this SDK's format (${bytes.length} bytes: ${error.message})`);
  }
  if (document === null || typeof document !== "object" || document.magic !== MAGIC) {
    throw new StateError(`${policy}: state is not this SDK's format (${bytes.length} bytes)`);
  }
  if (document.policy !== policy) throw new StateError(`${policy}: state belongs to '${document.policy}'`);
  if (!Number.isInteger(document.format) || document.format > maxFormat) {
    throw new StateError(`${policy}: state format ${document.format} is newer than ${maxFormat}`);
  }
  return document.state;
}

// --- the policy interface -------------------------------------------------------------

/**
 * A routing policy. Extend it, set the static `NAME` (and `VERSION`,
 * `WANTS_OUTCOMES`), implement `pick`; override `configure` to take
 * parameters. `pick(pool, ctx)` must return an id from `pool.eligible` other
 * than `ctx.exclude`, or undefined when there is none.
 */
export class Policy {
  static NAME = "";
  static VERSION = "0.1.0";
  /** Ask for `observe` after every attempt (one more boundary crossing per attempt). */
  static WANTS_OUTCOMES = false;

  /** Builds the policy from `Params`; throw ConfigError to reject them. */
  static configure(params) {
    params.reader().finish();
    return new this();
  }

  pick(_pool, _ctx) {
    throw new Error(`${this.constructor.name}.pick is not implemented`);
  }

  /** Called after the pool applied a batch of events. */
  backendsChanged(_pool, _events) {}

  /** Called after every attempt if WANTS_OUTCOMES. */
  observe(_pool, _outcome) {}

  /** Learned state (see encodeState); empty when none. */
  exportState(_pool) {
    return new Uint8Array(0);
  }

  /** Restores exportState's bytes; throw StateError to refuse them. */
  importState(_pool, bytes) {
    if (bytes.length) throw new StateError(`${this.constructor.NAME} keeps no state, got ${bytes.length} bytes`);
  }
}

/** Holds a policy and its pool (used by the export and the harness). */
export class Runtime {
  constructor(PolicyClass) {
    if (!PolicyClass.NAME) throw new TypeError(`${PolicyClass.name}.NAME must be set`);
    this.PolicyClass = PolicyClass;
    this.pool = new Pool();
    this.policy = null;
  }

  info() {
    const { NAME, VERSION, WANTS_OUTCOMES } = this.PolicyClass;
    return { name: NAME, version: VERSION, outcomes: Boolean(WANTS_OUTCOMES) };
  }

  /**
   * A rejected configure leaves the running policy as it was. A re-configure
   * builds a fresh policy, shows it the current backends and carries learned
   * state over, so a parameter change keeps what was learned.
   */
  configure(pairs) {
    const fresh = this.PolicyClass.configure(new Params(pairs));
    if (this.pool.size > 0) fresh.backendsChanged(this.pool, this.pool.replay());
    if (this.policy !== null) {
      const state = this.policy.exportState(this.pool);
      if (state.length) {
        try {
          fresh.importState(this.pool, state);
        } catch (error) {
          if (!(error instanceof StateError)) throw error;
        }
      }
    }
    this.policy = fresh;
  }

  backendsChanged(events) {
    this.pool.apply(events);
    this.policy?.backendsChanged(this.pool, events);
  }

  pick(ctx) {
    return this.policy === null ? undefined : this.policy.pick(this.pool, ctx);
  }

  observe(outcome) {
    this.policy?.observe(this.pool, outcome);
  }

  exportState() {
    return this.policy === null ? new Uint8Array(0) : this.policy.exportState(this.pool);
  }

  importState(bytes) {
    if (this.policy === null) throw new StateError("import-state called before configure");
    this.policy.importState(this.pool, bytes);
  }
}
