/**
 * Every scenario of the reliability suite, in the order of docs/reliability.md.
 *
 * @module
 */
import { batchKillScenario } from "./batchkill.ts";
import { deleteBurstScenario } from "./bursts.ts";
import { crashScenario, gracefulScenario } from "./crash.ts";
import { delayedExtensionScenario, delayedReceiveScenario } from "./delays.ts";
import { hostileScenario } from "./hostile.ts";
import { loadScenario } from "./load.ts";
import { outageScenario } from "./outage.ts";
import { poisonScenario } from "./poison.ts";
import { postScenario } from "./post.ts";
import { runawayScenario } from "./runaway.ts";
import type { Scenario } from "./scenario.ts";
import { slowScenario } from "./slow.ts";
import { stalledStdoutScenario } from "./stall.ts";

/** The scenarios, by id. */
export const SCENARIOS: readonly Scenario[] = [
  crashScenario,
  gracefulScenario,
  outageScenario,
  slowScenario,
  poisonScenario,
  runawayScenario,
  hostileScenario,
  loadScenario,
  delayedReceiveScenario,
  delayedExtensionScenario,
  stalledStdoutScenario,
  deleteBurstScenario,
  batchKillScenario,
  postScenario,
];
