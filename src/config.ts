/**
 * The resolved configuration of one sqsrun invocation, its defaults, and YAML
 * load/save for `-f` and `--configure`.
 *
 * @module
 */

/** What one invocation does. Exactly one is chosen. */
export type Command =
  | "list"
  | "create"
  | "delete"
  | "attr"
  | "push"
  | "configure"
  | "exec"
  | "run";

/** Output format of the structured logger. */
export type LogFormat = "json" | "text";

/** Exponential back-off of a failed message: `BASE * 2^(receives-1)`, capped at `MAX`. */
export interface Backoff {
  /** Delay in seconds after the first failed receive. */
  base: number;
  /** Upper bound in seconds (at most 43200, the SQS limit). */
  max: number;
}

/** A message attribute given to `--push` with `--message-attr Name=Value`. */
export interface PushAttribute {
  name: string;
  value: string;
}

/** Everything an invocation needs, after files and flags were merged and defaults applied. */
export interface Options {
  command: Command;
  // AWS access
  keyId?: string;
  secretKey?: string;
  region?: string;
  endpointUrl?: string;
  profile?: string;
  queue?: string;
  // admin
  attrs: Record<string, string>;
  push?: string;
  groupId?: string;
  dedupId?: string;
  messageAttrs: PushAttribute[];
  counts: boolean;
  json: boolean;
  configure?: string;
  // job
  exec?: string;
  run?: string;
  args: string[];
  env: Record<string, string>;
  shell: boolean;
  // timing, in seconds
  timeout: number;
  extendTimeout: number;
  killTimeout: number;
  killRetry: number;
  killGrace: number;
  interval: number;
  wait: number;
  shutdownTimeout: number;
  // worker
  concurrency: number;
  batchSize: number;
  backoff?: Backoff;
  maxReceives?: number;
  daemon?: string;
  log?: string;
  logFormat?: LogFormat;
  logLevel: "debug" | "info" | "warn" | "error";
  files: string[];
}
