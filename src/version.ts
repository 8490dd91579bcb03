/**
 * The version of sqsrun, taken from deno.json at build time: a JSON import is
 * embedded in a compiled binary, where reading files next to the module would fail.
 *
 * @module
 */
import meta from "../deno.json" with { type: "json" };

/** The version of this build, e.g. `0.1.0`. */
export const VERSION: string = meta.version;
