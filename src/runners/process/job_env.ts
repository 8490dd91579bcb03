/**
 * The environment a job's process sees: shared by every runner that spawns
 * processes (`--exec` today), so each describes a message the same way.
 *
 * @module
 */
import type { JobMessage } from "../../worker/message.ts";

/** Turns a message attribute name into the suffix of an environment variable name. */
export function attributeEnvName(name: string): string {
  return name.toUpperCase().replace(/[^A-Z0-9_]/g, "_");
}

/**
 * The variables sqsrun adds to a job's environment: `--env` pairs, then the
 * message's own `SQSRUN_*` description (which `--env` cannot override).
 */
export function jobEnvironment(
  message: JobMessage,
  extra: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = { ...extra };
  for (const [name, value] of Object.entries(message.attributes)) {
    env[`SQSRUN_ATTR_${attributeEnvName(name)}`] = value;
  }
  env.SQSRUN_MESSAGE_ID = message.id;
  env.SQSRUN_RECEIVE_COUNT = String(message.receiveCount);
  env.SQSRUN_QUEUE_URL = message.queueUrl;
  if (message.sentTimestamp !== undefined) {
    env.SQSRUN_SENT_TIMESTAMP = String(message.sentTimestamp);
  }
  if (message.groupId !== undefined) env.SQSRUN_GROUP_ID = message.groupId;
  return env;
}
