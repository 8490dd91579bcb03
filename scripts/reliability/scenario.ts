/**
 * What every reliability scenario gets and gives back: a context (one backend, a
 * temporary folder, queues that are deleted afterwards, worker environments) and
 * an outcome (figures for the table, failed checks).
 *
 * @module
 */
import type { SQSClient } from "@aws-sdk/client-sqs";
import type { SqsWitness } from "./witness.ts";

/** One SQS emulator a scenario runs against. */
export interface Backend {
  name: "moto" | "elasticmq";
  /** Endpoint URL, e.g. `http://127.0.0.1:40123`. */
  endpoint: string;
}

/** What a scenario runs with. */
export interface ScenarioContext {
  backend: Backend;
  /** The short form (`--quick`): fewer messages, shorter outages. */
  quick: boolean;
  /** A fresh folder for job scripts, the ledger and worker logs; removed afterwards. */
  dir: string;
  /** A client of the backend for pushing and inspecting. */
  client: SQSClient;
  /** Creates a queue with a unique name; every queue is deleted after the scenario. */
  queue(prefix: string, attributes?: Record<string, string>): Promise<string>;
  /** Relays workers' calls to the backend and records the deletes it acknowledged. */
  witness: SqsWitness;
  /** The whole environment of a worker talking to `endpoint` (default: the witness). */
  workerEnv(endpoint?: string): Record<string, string>;
  /** A progress line on stderr. */
  progress(message: string): void;
  /** Aborted when the scenario ran out of its time budget (or the run was interrupted). */
  signal: AbortSignal;
  /** `SQSRUN_TEST_*` of both running emulators, for scenarios that run `deno test`. */
  testEnv?: Record<string, string>;
}

/** The figures of one scenario run; any may be absent when it does not apply. */
export interface Figures {
  messages?: number;
  /** Workers killed (SIGKILL) or stopped (SIGTERM) during the run. */
  kills?: number;
  /** Job runs beyond the first per message. */
  duplicates?: number;
  /** Whose the duplicates are, already formatted (`3 sqsrun's, 1 queue's`); shown when some. */
  duplicatesWhose?: string;
  /** Fault injected (fault scenarios): its kind, e.g. `delayed receive answers`. */
  fault?: string;
  /** Its magnitude, e.g. `3-8 s`. */
  magnitude?: string;
  /** Pairs of runs of one message that ran at the same time. */
  overlaps?: number;
  /** Of those, the queue's (it handed one delivery out twice). */
  queueOverlaps?: number;
  /** Jobs that read a truncated or empty stdin. */
  truncated?: number;
  /** Jobs whose message the queue delivered again while they ran (visibility lapsed). */
  lapsed?: number;
  /** Messages without a run that sqsrun saw succeed. */
  lost?: number;
  /** Highest VmRSS of a worker, MiB. */
  peakRssMiB?: number;
  /** CPU figure, already formatted. */
  cpu?: string;
  /** Other findings, one short sentence each. */
  notes: string[];
}

/** What a scenario reports. */
export interface ScenarioOutcome {
  figures: Figures;
  /** Failed checks; empty when the scenario passed. */
  failures: string[];
}

/** One scenario of the suite. */
export interface Scenario {
  id: number;
  name: string;
  /** Needs both emulators at once (runs once, not per backend). */
  bothBackends?: boolean;
  /** Upper bound of its run time, for the watchdog, in ms. */
  budgetMs(quick: boolean): number;
  run(context: ScenarioContext): Promise<ScenarioOutcome>;
}
