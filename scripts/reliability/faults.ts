/**
 * What the fault-injection scenarios (9-13) share: their job scripts, which record
 * what each job read on stdin; the analysis of a run (runs at the same time and
 * whose, truncated inputs, duplicates and whose, lost messages); and the figures
 * of the table's fault columns.
 *
 * @module
 */
import {
  type DeletedAt,
  type DeliveredAt,
  type DeliveryReport,
  deliveryReport,
  findOverlaps,
  LEDGER_END,
  LEDGER_READ_INPUT,
  LEDGER_START_INPUT,
  type OverlapReport,
  type Run,
  runsByBody,
  splitOverlaps,
  truncatedInputs,
} from "./ledger.ts";
import { type Checks, sample } from "./harness.ts";
import type { Figures } from "./scenario.ts";
import type { Delivery, SqsWitness } from "./witness.ts";

/**
 * The job of scenarios 9-12: reads its whole stdin, writes a start line saying how
 * many bytes it read and `SQSRUN_BODY_BYTES`, runs `work` (shell lines; `$body` is
 * the body's key, `$ms` its last `-` field), and writes its end line.
 */
export function faultJob(
  work = "sleep \"$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))\"",
): string {
  return `${LEDGER_READ_INPUT}
${LEDGER_START_INPUT}
ms=\${body##*-}
case $ms in ''|*[!0-9]*) ms=0 ;; esac
${work}
${LEDGER_END}`;
}

/** `count` bodies `<prefix>-<n>-<ms>`, each with a job time drawn in [minMs, maxMs]. */
export function timedBodies(prefix: string, count: number, minMs: number, maxMs: number): string[] {
  return Array.from(
    { length: count },
    (_, i) =>
      `${prefix}-${String(i + 1).padStart(4, "0")}-${
        Math.round(minMs + Math.random() * (maxMs - minMs))
      }`,
  );
}

/** The job time a body of {@linkcode timedBodies} asks for, ms. */
export function bodyMs(body: string): number {
  return Number(body.split("-").at(-1));
}

/** One or more witnesses seen as one: deletes and deliveries of any of them. */
export interface WitnessView {
  deletedAt(messageId: string): number | undefined;
  timesDelivered(messageId: string, receiveCount: number): number;
  deliveriesOf(messageId: string): readonly Delivery[];
}

/** Combines witnesses (a scenario may give each worker its own). */
export function witnessView(witnesses: readonly SqsWitness[]): WitnessView {
  return {
    deletedAt(id) {
      const times = witnesses.map((w) => w.deletedAt(id)).filter((t) => t !== undefined);
      return times.length === 0 ? undefined : Math.min(...times);
    },
    timesDelivered: (id, count) =>
      witnesses.reduce((sum, witness) => sum + witness.timesDelivered(id, count), 0),
    deliveriesOf: (id) =>
      witnesses.flatMap((witness) => witness.deliveriesOf(id)).sort((a, b) => a.at - b.at),
  };
}

/** What the ledger of a fault scenario says, with the witnesses' explanations. */
export interface FaultAnalysis {
  report: DeliveryReport;
  overlaps: OverlapReport;
  /** Runs that read a truncated or empty stdin. */
  truncated: Run[];
  /**
   * Runs during which the queue delivered their message again, with a higher
   * receive count: its visibility lapsed while the job ran (whether or not the
   * new delivery ran, which the worker holding it prevents).
   */
  lapsed: Run[];
}

/**
 * Runs during which the witness saw their message delivered again with a higher
 * receive count (after the run had started, before it ended; an unfinished run
 * counts until now).
 */
export function lapsedRuns(
  runs: Run[],
  idOfBody: ReadonlyMap<string, string>,
  deliveriesOf: (messageId: string) => readonly Delivery[],
): Run[] {
  return runs.filter((run) => {
    const id = idOfBody.get(run.body);
    if (id === undefined) return false;
    const from = Number(run.startNs / 1_000_000n);
    const to = run.endNs === undefined ? Infinity : Number(run.endNs / 1_000_000n);
    return deliveriesOf(id).some((delivery) =>
      delivery.receiveCount > run.receiveCount && delivery.at > from && delivery.at < to
    );
  });
}

/**
 * Analyses the runs: a duplicate is the queue's only when the delivery it ran was
 * handed out after the queue acknowledged the message's delete (a delivery made
 * before, whose run started late, is a lapse of sqsrun's). `succeeded` holds the bodies whose success sqsrun saw (or,
 * where its log may have dropped lines, whose delete the queue acknowledged after
 * a completed run); `ids` maps message ids to bodies.
 */
export function analyseRuns(
  bodies: readonly string[],
  runs: Run[],
  succeeded: ReadonlySet<string>,
  ids: ReadonlyMap<string, string>,
  view: WitnessView,
): FaultAnalysis {
  const idOfBody = new Map([...ids].map(([id, body]) => [body, id]));
  const deletedAt: DeletedAt = (body) => {
    const id = idOfBody.get(body);
    const at = id === undefined ? undefined : view.deletedAt(id);
    return at === undefined ? undefined : BigInt(at) * 1_000_000n;
  };
  // The delivery a run ran is the first the witness saw with its receive count.
  const deliveredAt: DeliveredAt = (run) => {
    const id = idOfBody.get(run.body);
    const delivery = id === undefined
      ? undefined
      : view.deliveriesOf(id).find((d) => d.receiveCount === run.receiveCount);
    return delivery === undefined ? undefined : BigInt(delivery.at) * 1_000_000n;
  };
  // A delivery the queue handed to two receive calls (moto's race, F13) may run
  // twice, on two workers: every run of it but the first is the queue's.
  const handedTwice = new Set<Run>();
  for (const list of runsByBody(runs.filter((run) => run.body !== "")).values()) {
    const seen = new Set<number>();
    for (const run of list) {
      const id = idOfBody.get(run.body);
      if (seen.has(run.receiveCount) && id && view.timesDelivered(id, run.receiveCount) > 1) {
        handedTwice.add(run);
      }
      seen.add(run.receiveCount);
    }
  }
  const report = deliveryReport(
    bodies,
    runs.filter((run) => run.body !== ""),
    succeeded,
    deletedAt,
    deliveredAt,
    handedTwice,
  );
  const overlaps = splitOverlaps(findOverlaps(runs.filter((run) => run.body !== "")), (body, n) => {
    const id = idOfBody.get(body);
    return id !== undefined && view.timesDelivered(id, n) > 1;
  });
  return {
    report,
    overlaps,
    truncated: truncatedInputs(runs),
    lapsed: lapsedRuns(runs, idOfBody, (id) => view.deliveriesOf(id)),
  };
}

/** How strict the common checks are. */
export interface FaultCheckOptions {
  /** Fail on any duplicate of sqsrun's (not the queue's); default true. */
  noOwnDuplicates?: boolean;
  /** Fail on any run whose message's visibility lapsed while it ran; default true. */
  noLapses?: boolean;
}

/**
 * The checks every fault scenario makes: no two runs of a message at the same time
 * (but the queue's own double deliveries), no job on a truncated or empty input, no
 * body that was never pushed, nothing lost, and (by default) no duplicate of sqsrun's.
 */
export function checkFaultRun(
  checks: Checks,
  analysis: FaultAnalysis,
  options: FaultCheckOptions = {},
): void {
  const { report, overlaps, truncated } = analysis;
  checks.equal(
    overlaps.own.length,
    0,
    `runs of one message at the same time (${sample(overlaps.own.map(describeOverlap))})`,
  );
  checks.equal(
    truncated.length,
    0,
    `jobs that read a truncated or empty stdin (${sample(truncated.map(describeInput))})`,
  );
  checks.equal(
    report.unknown.length,
    0,
    `bodies that were never pushed (${sample(report.unknown)})`,
  );
  checks.equal(
    report.lost.length,
    0,
    `messages without a success sqsrun saw (${sample(report.lost)})`,
  );
  if (options.noLapses ?? true) {
    checks.equal(
      analysis.lapsed.length,
      0,
      "jobs whose message the queue delivered again while they ran (visibility lapsed: " +
        `${sample(analysis.lapsed.map((run) => `${run.body} #${run.receiveCount}`))})`,
    );
  }
  if (options.noOwnDuplicates ?? true) {
    checks.equal(
      report.ownDuplicates,
      0,
      `duplicate runs of sqsrun's (${sample(report.runMoreThanOnce)})`,
    );
  }
}

function describeOverlap(overlap: { body: string; first: Run; second: Run }): string {
  const { first, second } = overlap;
  return `${overlap.body}: worker ${first.workerPid} #${first.receiveCount} and ` +
    `worker ${second.workerPid} #${second.receiveCount}`;
}

function describeInput(run: Run): string {
  return `${run.body || "(empty)"}: read ${run.readBytes} of ${run.bodyBytes ?? "?"} bytes`;
}

/** The fault columns and the delivery figures of a fault scenario. */
export function faultFigures(
  analysis: FaultAnalysis,
  fault: string,
  magnitude: string,
  messages: number,
): Omit<Figures, "notes"> {
  const { report, overlaps, truncated } = analysis;
  return {
    fault,
    magnitude,
    messages,
    duplicates: report.duplicates,
    duplicatesWhose: `${report.ownDuplicates} sqsrun's, ${report.redelivered} queue's`,
    overlaps: overlaps.own.length + overlaps.queue.length,
    queueOverlaps: overlaps.queue.length,
    truncated: truncated.length,
    lapsed: analysis.lapsed.length,
    lost: report.lost.length,
  };
}

/** A note naming the queue's double deliveries, when there were any. */
export function queueOverlapNotes(analysis: FaultAnalysis): string[] {
  const queue = analysis.overlaps.queue;
  if (queue.length === 0) return [];
  return [
    `${queue.length} run(s) at the same time were the queue's: it handed one delivery ` +
    `(same receive count) to two receive calls (${sample(queue.map((o) => o.body))})`,
  ];
}

/** Seconds with one decimal. */
export function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

/** A time window, ms since the epoch: [from, to). */
export interface Window {
  from: number;
  to: number;
}

/** `count` windows of `lengthMs`, `gapMs` apart, the first from `start`. */
export function burstWindows(
  start: number,
  count: number,
  lengthMs: number,
  gapMs: number,
): Window[] {
  return Array.from({ length: count }, (_, i) => {
    const from = start + i * (lengthMs + gapMs);
    return { from, to: from + lengthMs };
  });
}

/** True when `at` falls in one of the windows. */
export function inWindows(windows: readonly Window[], at: number): boolean {
  return windows.some((window) => at >= window.from && at < window.to);
}
