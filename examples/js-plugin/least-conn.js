// Least connections, written in JavaScript on the veer-picker SDK (sdk/js):
// each request goes to the eligible backend with the fewest requests in
// flight (relative to its weight unless `weighted=false`); equally loaded
// backends take turns.
//
// The same policy as the Rust built-in `least-conn` and the Python and C
// examples, so the four can be compared request for request (see the README's
// cost table). A pick does not scan the pool: the eligible backends sit in the
// SDK's `Ranked` (a heap by load, least recently moved first), so a pick or an
// outcome costs O(log n).
//
// Parameters: `weighted` (true/false, default true). Unknown keys are
// rejected, so an operator's typo does not go unnoticed.
//
// The component's entry module is app.js; this one imports no host interface,
// so least-conn.test.js runs it under `node --test` with the SDK's fake host.

import { InFlight, Policy, Ranked, eventBackendId } from "../../sdk/js/index.js";

export class LeastConn extends Policy {
  static NAME = "least-conn-js";
  static VERSION = "0.2.0";
  static WANTS_OUTCOMES = true;

  static configure(params) {
    const reader = params.reader();
    const weighted = reader.flag("weighted", true);
    reader.finish();
    return new LeastConn(weighted);
  }

  constructor(weighted) {
    super();
    this.weighted = weighted;
    this.inFlight = new InFlight();
    this.ranked = new Ranked();
  }

  /** Files an eligible backend under its load, or takes an ineligible one out. */
  file(pool, id) {
    if (!pool.isEligible(id)) {
      this.ranked.remove(id);
      return;
    }
    const weight = this.weighted ? Math.max(1, pool.get(id).weight) : 1;
    this.ranked.set(id, (this.inFlight.get(id) + 1) / weight);
  }

  backendsChanged(pool, events) {
    for (const event of events) {
      const id = eventBackendId(event);
      if (event.tag === "added") this.inFlight.forget(id); // a re-added id is a new backend
      if (pool.get(id) === undefined) {
        this.ranked.remove(id);
        this.inFlight.forget(id);
      } else {
        this.file(pool, id);
      }
    }
  }

  pick(pool, ctx) {
    const choice = this.ranked.best(ctx.exclude);
    if (choice !== undefined) {
      this.inFlight.picked(choice);
      this.file(pool, choice);
    }
    return choice;
  }

  observe(pool, outcome) {
    // Only outcomes of our own picks count down; the host's fallback choices
    // and late outcomes for removed backends change nothing.
    if (this.inFlight.settle(outcome) && pool.get(outcome.backend) !== undefined) this.file(pool, outcome.backend);
  }
}
