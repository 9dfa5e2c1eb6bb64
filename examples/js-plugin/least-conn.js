// Least connections, written in JavaScript: each request goes to the eligible
// backend with the fewest requests in flight (relative to its weight unless
// `weighted=false`); equally loaded backends take turns.
//
// The same policy as the Rust built-in `least-conn` and the Python example, so
// the three can be compared request for request (see the README's cost table).
// Unlike the built-in, a pick scans the eligible backends (O(n)): clear code
// matters more here than the last microsecond, and at tens of backends the
// scan is cheap next to the boundary crossing.
//
// Parameters: `weighted` (true/false, default true). Unknown keys are
// rejected, as the contract asks, so an operator's typo does not go unnoticed.
//
// Built with `jco componentize` (see build.sh); this module's `policy` export
// implements the `veer:picker/policy` interface of wit/picker.wit.

import { log } from "veer:picker/host@0.1.2";

/** id -> { id, weight, eligible, inFlight } for every backend in the pool. */
const backends = new Map();
/** The same records in a dense array, kept in step by the events, so a pick
 * scans without allocating (an interpreter inside Wasm pays for every object). */
let order = [];
let weighted = true;
/** Rotates the tie-break so equally loaded backends take turns. */
let cursor = 0;

function parseFlag(key, value, problems) {
  if (value === "true") return true;
  if (value === "false") return false;
  problems.push(`${key}: expected true or false, got '${value}'`);
  return weighted;
}

export const policy = {
  info() {
    return { name: "least-conn-js", version: "0.1.0", feedback: { outcomes: true } };
  },

  configure(params) {
    // Validate everything first and report every problem at once; only then
    // apply, so a rejected configure leaves the plugin as it was.
    const problems = [];
    let nextWeighted = true;
    for (const [key, value] of params) {
      if (key === "weighted") nextWeighted = parseFlag(key, value, problems);
      else problems.push(`unknown parameter '${key}' (known: weighted)`);
    }
    if (problems.length > 0) {
      // jco turns a thrown value into the `err` of the WIT result.
      throw problems.join("; ");
    }
    weighted = nextWeighted;
  },

  backendsChanged(events) {
    // Removals are collected and the array rebuilt once per batch: a batch
    // removing every backend stays O(n), not O(n²).
    let gone = false;
    for (const event of events) {
      const value = event.val;
      switch (event.tag) {
        case "added": {
          const record = { id: value.id, weight: Math.max(1, value.weight), eligible: true, inFlight: 0 };
          if (backends.has(value.id)) gone = true;
          backends.set(value.id, record);
          order.push(record);
          break;
        }
        case "updated": {
          const known = backends.get(value.id);
          if (known) known.weight = Math.max(1, value.weight);
          break;
        }
        case "removed":
          if (backends.delete(value)) gone = true;
          break;
        case "eligibility": {
          const [id, eligible] = value;
          const known = backends.get(id);
          if (known) known.eligible = eligible;
          break;
        }
        default:
          log("warn", `unknown backend event '${event.tag}'`);
      }
    }
    if (gone) {
      // Keep only the records the map still holds (a re-added id has a new one).
      order = order.filter((b) => backends.get(b.id) === b);
    }
  },

  pick(ctx) {
    const exclude = ctx.exclude ?? null;
    const n = order.length;
    if (n === 0) return undefined;
    const start = cursor % n;
    cursor = (start + 1) % n;
    let best;
    let bestLoad = Infinity;
    // Visit from the cursor onwards so ties go to the next backend in turn.
    for (let step = 0; step < n; step++) {
      const backend = order[(start + step) % n];
      if (!backend.eligible || backend.id === exclude) continue;
      const load = (backend.inFlight + 1) / (weighted ? backend.weight : 1);
      if (load < bestLoad) {
        bestLoad = load;
        best = backend;
      }
    }
    if (best === undefined) return undefined;
    best.inFlight += 1;
    return best.id;
  },

  observe(outcome) {
    // Exactly one outcome per pick of ours (`picked`); the host's own
    // fallback choices were never counted. Late outcomes for removed
    // backends find nothing to decrement.
    if (!outcome.picked) return;
    const backend = backends.get(outcome.backend);
    if (backend && backend.inFlight > 0) backend.inFlight -= 1;
  },

  exportState() {
    // In-flight counts belong to the instance that routed those requests
    // (their outcomes go back to it), so there is nothing to hand over.
    return new Uint8Array(0);
  },

  importState(state) {
    if (state.length !== 0) {
      throw `least-conn-js keeps no state, got ${state.length} bytes`;
    }
  },
};
