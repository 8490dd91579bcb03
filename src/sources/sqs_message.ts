/**
 * The default source: the message body itself is the one job's input.
 *
 * @module
 */
import type { JobSource, JobStep } from "./source.ts";
import type { JobMessage } from "../worker/message.ts";

/** Returns the source that runs one job per message, with the body as its input. */
export function messageSource(): JobSource {
  return {
    steps(message: JobMessage): JobStep[] {
      return [{
        fields: {},
        open: () => Promise.resolve({ body: message.body, env: {}, context: {} }),
      }];
    },
  };
}
