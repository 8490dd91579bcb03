/**
 * An sqsrun `--run` job in plain JavaScript that exports `terminate()`, as the Ruby
 * sqsrun's scripts could:
 *
 * ```sh
 * sqsrun -q jobs --run ./examples/js_job_with_terminate.js -x 60 -X 10
 * ```
 *
 * When a job runs longer than the kill timeout (-x), sqsrun calls `terminate()`,
 * and again every -X seconds while `run` has not settled; after --kill-grace it
 * gives up and ends the Web Worker the module runs in (the job fails, the message
 * comes back). A job that was terminated never counts as a success.
 *
 * @module
 */

/** The timer of the job running in this slot (a slot runs one job at a time). */
let pending;

/**
 * Waits as many seconds as the body says, then returns: the message is deleted.
 *
 * @param {string} body e.g. "5"
 * @param {{ messageId: string, receiveCount: number }} context
 */
export function run(body, context) {
  const seconds = Number(body) || 1;
  console.log(`message ${context.messageId}: working for ${seconds} s`);
  return new Promise((resolve) => {
    const done = () => {
      pending = undefined;
      resolve();
    };
    pending = { timer: setTimeout(done, seconds * 1000), done };
  });
}

/** Stops the work in progress: `run` settles, the worker slot is free again. */
export function terminate() {
  if (!pending) return;
  console.error("terminate(): stopping early");
  clearTimeout(pending.timer);
  pending.done();
}
