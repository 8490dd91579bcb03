/**
 * The ledger: every job of a reliability scenario appends one line when it starts
 * and one when it ends, so what ran, where, when and how often can be compared
 * with what was pushed, independently of sqsrun's own log.
 *
 *     S <body> <job pid> <worker pid> <epoch ns> <receive count>
 *     E <body> <job pid> <worker pid> <epoch ns>
 *
 * Lines are short single `echo >>` writes to a file opened with O_APPEND, so lines
 * of concurrent jobs never interleave. A job whose worker was SIGKILLed keeps
 * running (it is in a session of its own) and may still write its `E` line later:
 * the analysis never takes an `E` line alone as proof that sqsrun saw a success.
 *
 * @module
 */
import { dirname } from "node:path";

/** One run of one job, as the ledger tells it. */
export interface Run {
  /** The message body: a unique id per pushed message. */
  body: string;
  /** The job's pid (also its process group and session id). */
  jobPid: number;
  /** The worker that started it (the job's parent pid at start). */
  workerPid: number;
  /** Wall clock at the start, ns since the epoch. */
  startNs: bigint;
  /** Wall clock at the end; undefined when the job never reached its end. */
  endNs?: bigint;
  /** `SQSRUN_RECEIVE_COUNT` of this run. */
  receiveCount: number;
  /** Bytes the job read on stdin, when its start line says ({@linkcode LEDGER_START_INPUT}). */
  readBytes?: number;
  /** `SQSRUN_BODY_BYTES`, the body's length as the worker gave it; absent when unset. */
  bodyBytes?: number;
}

/** The shell lines a job script uses to write its ledger lines (`$LEDGER`, `$body` set). */
export const LEDGER_START =
  'echo "S $body $$ $PPID $(date +%s%N) $SQSRUN_RECEIVE_COUNT" >> "$LEDGER"';
/**
 * Reads the whole of stdin into `$input` (trailing newlines kept) and takes the
 * body's key, what comes before its first `.`, into `$body`: bodies may carry a
 * padding after a `.` so that they are long enough to be cut short.
 */
export const LEDGER_READ_INPUT = "export LC_ALL=C\ninput=$(cat; echo .)\ninput=${input%.}\n" +
  "body=${input%%.*}";
/**
 * The start line with what the job read: `S body pid ppid ns count read-bytes
 * body-bytes`, where body-bytes is `SQSRUN_BODY_BYTES` (`-` when unset). A job whose
 * worker died while writing its stdin reads fewer bytes than that (or none).
 * Needs {@linkcode LEDGER_READ_INPUT} first.
 */
export const LEDGER_START_INPUT = 'echo "S $body $$ $PPID $(date +%s%N) $SQSRUN_RECEIVE_COUNT ' +
  '${#input} ${SQSRUN_BODY_BYTES:--}" >> "$LEDGER"';
/** See {@linkcode LEDGER_START}. */
export const LEDGER_END = 'echo "E $body $$ $PPID $(date +%s%N)" >> "$LEDGER"';

/**
 * Parses ledger text into runs, in start order. An `E` line closes the latest open
 * run of the same body and job pid; malformed lines (a torn last line) are skipped.
 */
export function parseLedger(text: string): Run[] {
  const runs: Run[] = [];
  const open = new Map<string, Run>();
  for (const line of text.split("\n")) {
    const parts = line.trim().split(" ");
    if (parts.length < 5 || !/^\d+$/.test(parts[4])) continue;
    const [kind, body, jobPid, workerPid, ns] = parts;
    const key = `${body} ${jobPid}`;
    if (kind === "S") {
      const run: Run = {
        body,
        jobPid: Number(jobPid),
        workerPid: Number(workerPid),
        startNs: BigInt(ns),
        receiveCount: Number(parts[5] ?? 0),
      };
      if (parts.length >= 8 && /^\d+$/.test(parts[6])) {
        run.readBytes = Number(parts[6]);
        if (/^\d+$/.test(parts[7])) run.bodyBytes = Number(parts[7]);
      }
      runs.push(run);
      open.set(key, run);
    } else if (kind === "E") {
      const run = open.get(key);
      if (!run) continue;
      run.endNs = BigInt(ns);
      open.delete(key);
    }
  }
  return runs;
}

/**
 * Reads and parses a ledger file; an absent file is an empty ledger (no job wrote
 * yet), but an absent folder is a {@linkcode FolderGoneError}.
 */
export async function readLedger(path: string): Promise<Run[]> {
  try {
    return parseLedger(await Deno.readTextFile(path));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    await assertFolderOf(path);
    return [];
  }
}

/** A scenario's folder vanished while it ran: its ledger and logs cannot be read. */
export class FolderGoneError extends Error {
  override name = "FolderGoneError";
}

/**
 * Throws a {@linkcode FolderGoneError} when the folder of `path` (a ledger or a
 * worker log that was not found) no longer exists: something outside the suite
 * removed it (a /tmp cleaner, a `rm -rf /tmp/sqsrun-*`), since the suite removes a
 * folder only after its scenario passed. Reading its files as empty would report
 * every message as lost and no job as run. It is the only reading that fits the
 * one failed run of scenario 4 on ElasticMQ (quick form): "0 ran jobs; 0 finished",
 * 6 lost, the queue empty after the usual 13.4 s (so the 10 s jobs had run and
 * their messages had been deleted on time), and the folder it named as kept gone.
 */
export async function assertFolderOf(path: string): Promise<void> {
  const folder = dirname(path);
  try {
    await Deno.stat(folder);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new FolderGoneError(
      `the scenario's folder ${folder} was removed while the scenario ran (not by the suite); ` +
        "its ledger and worker logs are gone, so no delivery check can be made",
    );
  }
}

/** Groups runs by body, each list in start order. */
export function runsByBody(runs: Run[]): Map<string, Run[]> {
  const byBody = new Map<string, Run[]>();
  for (const run of runs) {
    const list = byBody.get(run.body) ?? [];
    list.push(run);
    byBody.set(run.body, list);
  }
  for (const list of byBody.values()) list.sort((a, b) => compare(a.startNs, b.startNs));
  return byBody;
}

/** Two runs of one message that were running at the same time. */
export interface Overlap {
  body: string;
  first: Run;
  second: Run;
}

/**
 * Finds runs of the same body whose intervals intersect. A run without an end is
 * taken to run forever: when it cannot be shown not to overlap, it overlaps.
 */
export function findOverlaps(runs: Run[]): Overlap[] {
  const overlaps: Overlap[] = [];
  for (const [body, list] of runsByBody(runs)) {
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const end = list[i].endNs;
        if (end === undefined || list[j].startNs < end) {
          overlaps.push({ body, first: list[i], second: list[j] });
        }
      }
    }
  }
  return overlaps;
}

/** When the queue acknowledged deleting a body's message (ns since the epoch), if it did. */
export type DeletedAt = (body: string) => bigint | undefined;

/**
 * Runs that started after the queue had acknowledged deleting their message: the
 * queue delivered it again (SQS's at-least-once delivery; moto's lost deletes).
 */
export function redeliveredAfterDelete(
  runs: Run[],
  deletedAt: DeletedAt,
  deliveredAt?: DeliveredAt,
): Run[] {
  return runs.filter((run) => {
    const at = deletedAt(run.body);
    return at !== undefined && (deliveredAt?.(run) ?? run.startNs) > at;
  });
}

/**
 * When the queue handed out the delivery a run ran (ns since the epoch), if known.
 * A run can start well after its delivery (an answer held on the way, a message
 * held ahead): what counts for "delivered again after the delete" is the delivery.
 */
export type DeliveredAt = (run: Run) => bigint | undefined;

/** What a scenario's ledger says about delivery, compared with what was pushed. */
export interface DeliveryReport {
  /** Messages pushed. */
  pushed: number;
  /** Job runs started (ledger `S` lines). */
  runs: number;
  /** Runs beyond the first of each message: `runs - distinct messages run`. */
  duplicates: number;
  /**
   * Of those, runs the queue caused by delivering a message after acknowledging its
   * delete (or, when the caller says so, by handing one delivery out twice).
   */
  redelivered: number;
  /** Duplicates among the other runs: sqsrun's (or a crash's), which a clean run must not have. */
  ownDuplicates: number;
  /** Pushed messages that ran more than once, not counting the queue's redeliveries. */
  runMoreThanOnce: string[];
  /** Pushed messages without a run that sqsrun saw succeed (see `succeeded`). */
  lost: string[];
  /** Bodies in the ledger that were never pushed (a corrupt body, a foreign job). */
  unknown: string[];
}

/**
 * Compares the runs with the pushed bodies. `succeeded` holds the bodies whose
 * success sqsrun itself observed (its `job finished` log lines); a message counts as
 * lost unless it is there, whatever orphaned jobs wrote to the ledger. `deletedAt`
 * (from the witness) separates the queue's redeliveries from sqsrun's duplicates:
 * a run is the queue's when it started after the delete, or, given `deliveredAt`,
 * when the delivery it ran was handed out after the delete; `queueRuns` are other
 * runs the caller knows the queue caused (a delivery it handed out twice).
 */
export function deliveryReport(
  pushed: Iterable<string>,
  runs: Run[],
  succeeded: ReadonlySet<string>,
  deletedAt: DeletedAt = () => undefined,
  deliveredAt?: DeliveredAt,
  queueRuns: ReadonlySet<Run> = new Set(),
): DeliveryReport {
  const pushedSet = new Set(pushed);
  const redelivered = new Set([
    ...redeliveredAfterDelete(runs, deletedAt, deliveredAt),
    ...runs.filter((run) => queueRuns.has(run)),
  ]);
  const ownRuns = runs.filter((run) => !redelivered.has(run));
  const own = runsByBody(ownRuns);
  return {
    pushed: pushedSet.size,
    runs: runs.length,
    duplicates: runs.length - runsByBody(runs).size,
    redelivered: redelivered.size,
    ownDuplicates: ownRuns.length - own.size,
    runMoreThanOnce: [...own].filter(([, list]) => list.length > 1).map(([body]) => body),
    lost: [...pushedSet].filter((body) => !succeeded.has(body)),
    unknown: [...runsByBody(runs).keys()].filter((body) => !pushedSet.has(body)),
  };
}

/**
 * Runs that read a truncated or empty stdin: fewer (or more) bytes than
 * `SQSRUN_BODY_BYTES` said, or nothing at all where that is unknown. Runs whose
 * start line does not say what they read are not judged.
 */
export function truncatedInputs(runs: Run[]): Run[] {
  return runs.filter((run) =>
    run.readBytes !== undefined &&
    (run.bodyBytes === undefined ? run.readBytes === 0 : run.readBytes !== run.bodyBytes)
  );
}

/** Overlapping runs, split by who caused them. */
export interface OverlapReport {
  /** Overlaps the queue caused: it handed one delivery (same receive count) out twice. */
  queue: Overlap[];
  /** Every other overlap: sqsrun's. */
  own: Overlap[];
}

/**
 * Splits overlaps into the queue's and sqsrun's: two runs with the same receive
 * count, of a delivery the witness saw handed out twice (`deliveredTwice`), are
 * the queue's doing (moto's receive race, F13); a lapsed visibility makes a
 * redelivery with a higher count, so every other overlap is sqsrun's.
 */
export function splitOverlaps(
  overlaps: Overlap[],
  deliveredTwice: (body: string, receiveCount: number) => boolean,
): OverlapReport {
  const queue: Overlap[] = [];
  const own: Overlap[] = [];
  for (const overlap of overlaps) {
    const same = overlap.first.receiveCount === overlap.second.receiveCount;
    (same && deliveredTwice(overlap.body, overlap.first.receiveCount) ? queue : own).push(overlap);
  }
  return { queue, own };
}

/** True when the run had not ended by `ns` (it was running, or never ended). */
export function runningAt(run: Run, ns: bigint): boolean {
  return run.startNs <= ns && (run.endNs === undefined || run.endNs > ns);
}

/** Wall clock now in ns since the epoch, comparable with the ledger's `date +%s%N`. */
export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

function compare(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
