// Turns a Policy into the `veer:picker/policy` export of a component.
//
// In the component's entry module (the one given to `jco componentize`):
//
//   import { exportPolicy } from "<sdk>/export.js";
//   export const policy = exportPolicy(MyPolicy);
//
// This is the only module that imports veer's host interface, so the policy
// and the rest of the SDK run under Node.js for tests.

import { inFlight, log, nowUs, randomU64 } from "veer:picker/host@0.1.2";
import { ConfigError, Runtime, StateError, setHost } from "./index.js";

export function exportPolicy(PolicyClass) {
  setHost({ randomU64, nowUs, log, inFlight });
  const runtime = new Runtime(PolicyClass);
  // jco turns a thrown value into the `err` of a WIT result: a string.
  const refuse = (error) =>
    error instanceof ConfigError || error instanceof StateError
      ? error.message
      : `${PolicyClass.NAME}: ${error?.name ?? "Error"}: ${error?.message ?? error}`;
  return {
    info() {
      const { name, version, outcomes } = runtime.info();
      return { name, version, feedback: { outcomes } };
    },
    configure(params) {
      try {
        runtime.configure(params);
      } catch (error) {
        throw refuse(error);
      }
    },
    backendsChanged(events) {
      runtime.backendsChanged(events);
    },
    pick(ctx) {
      return runtime.pick(ctx);
    },
    observe(outcome) {
      runtime.observe({
        backend: outcome.backend,
        picked: outcome.picked,
        status: outcome.status,
        latencyUs: Number(outcome.latencyUs),
        error: outcome.error,
      });
    },
    exportState() {
      return runtime.exportState();
    },
    importState(state) {
      try {
        runtime.importState(state);
      } catch (error) {
        throw refuse(error);
      }
    },
  };
}
