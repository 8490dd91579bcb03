/**
 * The runner seam of the job lifecycle: a runner runs one job input (a child
 * process, or a module). The worker's loop in `src/worker/` is written once for
 * every runner; a source (`src/sources/`) says what the inputs are.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { JobHandle } from "../worker/job.ts";
import type { JobMessage } from "../worker/message.ts";
import type { JobInput } from "../sources/source.ts";

/** Runs job inputs. */
export interface JobRunner {
  /** Starts one job; a job that cannot start ends as a failed JobHandle, never a throw. */
  start(message: JobMessage, input: JobInput, log: Logger): JobHandle;
  /** Releases what the runner holds (module workers); running jobs are already over. */
  close(): Promise<void>;
  /** What the start-up log says about how jobs run (e.g. how they get a process group). */
  readonly details?: Record<string, string>;
}
