/**
 * The only two ways a command fails. `main.ts` maps them to exit codes and prints
 * `sqsrun: <message>` on one line; nothing else may reach the user as a stack trace.
 *
 * @module
 */

/** Exit code for bad flags, bad configuration files and bad user modules. */
export const EXIT_USAGE = 2;
/** Exit code for failures at run time: AWS errors, missing queues, unreachable endpoints. */
export const EXIT_RUNTIME = 1;

/** A mistake in how sqsrun was invoked or configured. Exit code 2. */
export class UsageError extends Error {
  override name = "UsageError";
  readonly exitCode = EXIT_USAGE;
}

/** A failure while doing what was asked. Exit code 1. */
export class RuntimeError extends Error {
  override name = "RuntimeError";
  readonly exitCode = EXIT_RUNTIME;
}

/** Returns a one-line description of any thrown value, without stack frames. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const text = error.message || error.name;
    return text.split("\n")[0].trim();
  }
  return String(error).split("\n")[0];
}

/** A one-line reason for a file system error (Deno's messages append the path and call). */
export function describeFsError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "is a directory";
  if (error instanceof Deno.errors.NotCapable) return "not allowed by the runtime permissions";
  if (error instanceof Error) {
    if (/stream did not contain valid UTF-8/i.test(error.message)) return "not UTF-8 text";
    if (/Is a directory/i.test(error.message)) return "is a directory";
    return error.message.split("\n")[0].replace(/:? ?\((os error \d+)\).*$/, "").trim();
  }
  return String(error);
}
