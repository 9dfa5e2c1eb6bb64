// The component's entry module: exports least-conn.js's policy as
// veer:picker/policy. `jco componentize` (see build.sh) bundles it with the
// policy and the SDK.

import { exportPolicy } from "../../sdk/js/export.js";
import { LeastConn } from "./least-conn.js";

export const policy = exportPolicy(LeastConn);
