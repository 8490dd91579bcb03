/**
 * Long-lived slots: something loaded once that then runs one job at a time (a Web
 * Worker with the `--run` module loaded; a `--lambda` runtime process), reused while it
 * is sound and replaced once it is not. Every slot is in one named state, and the
 * pool refuses a transition the diagram does not show, as `SupervisedJob` does
 * for one job:
 *
 *     loading ──(loaded)──> idle ──(acquired)──> busy ──(job ended, reusable)──> idle
 *        │                   │                    │
 *        │                   │ (lost)             │ (job ended, not reusable; lost)
 *        └──(load failed)────┴──────> dead <──────┘
 *
 * A slot acquired while none is idle is busy from its start: it loads for the job
 * that waits for it. A dead slot's resource is disposed of once, and the slot
 * leaves the pool.
 *
 * @module
 */

/** The states of a slot. */
export type SlotState = "loading" | "idle" | "busy" | "dead";

/** The transitions the diagram shows. */
const NEXT_STATES: Readonly<Record<SlotState, readonly SlotState[]>> = {
  loading: ["idle", "dead"],
  idle: ["busy", "dead"],
  busy: ["idle", "dead"],
  dead: [],
};

/** What a slot holds. */
export interface SlotResource {
  /** Ends it; called once, when its slot dies or the pool closes. */
  dispose(): void;
}

/** Slots of one kind of resource, each in one {@linkcode SlotState}. */
export class SlotPool<R extends SlotResource> {
  #create: () => R;
  #states = new Map<R, SlotState>();
  /** Idle slots, the most recently used last. */
  #idle: R[] = [];

  /** `create` makes the resource of a new slot, which starts loading at once. */
  constructor(create: () => R) {
    this.#create = create;
  }

  /** A new slot, loading ahead of any job (at start-up). */
  spawn(): R {
    return this.#add("loading");
  }

  /**
   * The most recently used idle slot, now busy (its caches are the warmest), or a
   * new slot, busy loading for the caller's job.
   */
  acquire(): R {
    const idle = this.#idle.pop();
    if (idle === undefined) return this.#add("busy");
    this.#move(idle, "busy");
    return idle;
  }

  /** A slot loading ahead of any job has loaded: it is idle. A busy slot stays busy. */
  loaded(slot: R): void {
    if (this.stateOf(slot) === "loading") this.#move(slot, "idle");
  }

  /** The job of a busy slot ended: the slot is idle again when `reusable`, else dead. */
  release(slot: R, reusable: boolean): void {
    if (this.stateOf(slot) === "busy") this.#move(slot, reusable ? "idle" : "dead");
  }

  /** The slot must not run anything any more (it failed to load, it ended, it was killed). */
  kill(slot: R): void {
    this.#move(slot, "dead");
  }

  /** The state of `slot`: `dead` once it left the pool. */
  stateOf(slot: R): SlotState {
    return this.#states.get(slot) ?? "dead";
  }

  /** How many slots are in `state` (never counts the dead: they left). */
  count(state: Exclude<SlotState, "dead">): number {
    let count = 0;
    for (const current of this.#states.values()) if (current === state) count++;
    return count;
  }

  /** Kills every slot. */
  close(): void {
    for (const slot of [...this.#states.keys()]) this.kill(slot);
  }

  #add(state: "loading" | "busy"): R {
    const slot = this.#create();
    this.#states.set(slot, state);
    return slot;
  }

  /** Moves `slot` to `next` if the diagram allows it from its state; returns whether it moved. */
  #move(slot: R, next: SlotState): boolean {
    const state = this.stateOf(slot);
    if (!NEXT_STATES[state].includes(next)) return false;
    if (state === "idle") this.#idle = this.#idle.filter((other) => other !== slot);
    if (next === "idle") this.#idle.push(slot);
    if (next === "dead") {
      this.#states.delete(slot);
      slot.dispose();
    } else {
      this.#states.set(slot, next);
    }
    return true;
  }
}
