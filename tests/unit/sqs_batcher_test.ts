/**
 * Unit tests of the SQS batcher on a fake clock: up to ten entries per call, a
 * linger for company (longer for deletes on a standard queue), a promise per
 * entry that refusals reject, and a flush that waits for the calls in flight.
 */
import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import {
  BatchEntryError,
  SQS_BATCH_LIMIT,
  SqsBatcher,
  type SqsBatcherOptions,
} from "../../src/worker/sqs_batcher.ts";
import { FakeClock } from "../support/fake_clock.ts";
import { deferred, hasSettled } from "../support/unit.ts";

interface SentCommand {
  kind: "delete" | "change";
  queueUrl: string | undefined;
  entries: { Id?: string; ReceiptHandle?: string; VisibilityTimeout?: number }[];
}

type FakeReply = (command: SentCommand) => Promise<unknown>;

function fakeClient(reply: FakeReply = () => Promise.resolve({})) {
  const sent: SentCommand[] = [];
  const client = {
    send(command: unknown): Promise<unknown> {
      let record: SentCommand;
      if (command instanceof DeleteMessageBatchCommand) {
        record = {
          kind: "delete",
          queueUrl: command.input.QueueUrl,
          entries: command.input.Entries ?? [],
        };
      } else if (command instanceof ChangeMessageVisibilityBatchCommand) {
        record = {
          kind: "change",
          queueUrl: command.input.QueueUrl,
          entries: command.input.Entries ?? [],
        };
      } else {
        throw new Error("unexpected command");
      }
      sent.push(record);
      return reply(record);
    },
  };
  return { sent, client: client as unknown as SQSClient };
}

const BATCH_QUEUE = "https://sqs.us-east-1.amazonaws.com/1/q";

/** A batcher of `client` on a fake clock. */
function batcherOn(client: SQSClient, options: Partial<SqsBatcherOptions> = {}) {
  const clock = new FakeClock();
  const batcher = new SqsBatcher({ client, queueUrl: BATCH_QUEUE, clock, ...options });
  return { clock, batcher };
}

Deno.test("SqsBatcher: groups up to 10 entries per call and resolves every caller", async () => {
  const { sent, client } = fakeClient();
  const { clock, batcher } = batcherOn(client, { lingerMs: 20 });
  strictEqual(SQS_BATCH_LIMIT, 10);
  const handles = Array.from({ length: 25 }, (_, i) => `h${i}`);
  const results = handles.map((handle) => batcher.delete(handle));
  strictEqual(sent.length, 2, "full batches go out at once");
  await clock.advance(20);
  await Promise.all(results);
  deepStrictEqual(sent.map((command) => command.entries.length), [10, 10, 5]);
  ok(sent.every((command) => command.kind === "delete" && command.queueUrl === BATCH_QUEUE));
  deepStrictEqual(sent.flatMap((command) => command.entries.map((e) => e.ReceiptHandle)), handles);
  deepStrictEqual(
    sent[0].entries.map((entry) => entry.Id),
    ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
  );
  await batcher.flush();
});

Deno.test("SqsBatcher: entries wait lingerMs for company; deletes and changes go apart", async () => {
  const { sent, client } = fakeClient();
  const { clock, batcher } = batcherOn(client, { lingerMs: 150 });
  const results = [batcher.delete("d1"), batcher.changeVisibility("c1", 12.9)];
  await clock.advance(20);
  strictEqual(sent.length, 0, "sent before lingerMs");
  results.push(batcher.changeVisibility("c2", -4), batcher.delete("d2"));
  await clock.advance(129);
  strictEqual(sent.length, 0, "sent before lingerMs");
  await clock.advance(1);
  await Promise.all(results);
  deepStrictEqual(sent, [
    {
      kind: "delete",
      queueUrl: BATCH_QUEUE,
      entries: [{ Id: "0", ReceiptHandle: "d1" }, { Id: "1", ReceiptHandle: "d2" }],
    },
    {
      kind: "change",
      queueUrl: BATCH_QUEUE,
      entries: [
        { Id: "0", ReceiptHandle: "c1", VisibilityTimeout: 12 },
        { Id: "1", ReceiptHandle: "c2", VisibilityTimeout: 0 },
      ],
    },
  ]);
});

Deno.test("SqsBatcher: deletes wait deleteLingerMs, visibility changes only lingerMs", async () => {
  const { sent, client } = fakeClient();
  const { clock, batcher } = batcherOn(client, { lingerMs: 20, deleteLingerMs: 300 });
  const deleted = batcher.delete("d1");
  const changed = batcher.changeVisibility("c1", 5);
  await clock.advance(20);
  await changed;
  deepStrictEqual(sent.map((command) => command.kind), ["change"], "the delete went early");
  ok(!(await hasSettled(deleted)), "the delete resolved before its call");
  await clock.advance(280);
  await deleted;
  deepStrictEqual(sent.map((command) => command.kind), ["change", "delete"]);
});

Deno.test("SqsBatcher: failed entries reject with BatchEntryError and their code; others resolve", async () => {
  const { client } = fakeClient(() =>
    Promise.resolve({
      Successful: [{ Id: "0" }, { Id: "2" }],
      Failed: [
        {
          Id: "1",
          Code: "ReceiptHandleIsInvalid",
          Message: "The handle is invalid",
          SenderFault: true,
        },
        { Id: "3", SenderFault: false },
      ],
    })
  );
  const { clock, batcher } = batcherOn(client);
  const settled = Promise.allSettled(["a", "b", "c", "d"].map((h) => batcher.delete(h)));
  await clock.advance(5);
  const results = await settled;
  deepStrictEqual(results.map((result) => result.status), [
    "fulfilled",
    "rejected",
    "fulfilled",
    "rejected",
  ]);
  const first = (results[1] as PromiseRejectedResult).reason;
  ok(first instanceof BatchEntryError);
  strictEqual(first.code, "ReceiptHandleIsInvalid");
  strictEqual(first.message, "ReceiptHandleIsInvalid: The handle is invalid");
  strictEqual(first.name, "BatchEntryError");
  const second = (results[3] as PromiseRejectedResult).reason;
  ok(second instanceof BatchEntryError);
  strictEqual(second.code, "Failed");
});

Deno.test("SqsBatcher: a thrown error rejects every entry of the call with that error", async () => {
  const failure = Object.assign(new Error("socket hang up"), { name: "TimeoutError" });
  const { client } = fakeClient((command) =>
    command.kind === "change" ? Promise.reject(failure) : Promise.resolve({})
  );
  const { clock, batcher } = batcherOn(client);
  const changes = ["a", "b", "c"].map((h) => batcher.changeVisibility(h, 5));
  const del = batcher.delete("d");
  const refused = Promise.all(changes.map((change) => rejects(change, (e) => e === failure)));
  await clock.advance(5);
  await refused;
  await del;
});

Deno.test("SqsBatcher: flush sends at once and waits for the calls in flight", async () => {
  const replies: ReturnType<typeof deferred<unknown>>[] = [];
  const { sent, client } = fakeClient(() => {
    const reply = deferred<unknown>();
    replies.push(reply);
    return reply.promise;
  });
  const { batcher } = batcherOn(client, { lingerMs: 10_000 });
  const results = [batcher.delete("a"), batcher.changeVisibility("b", 3)];
  const flushed = batcher.flush();
  strictEqual(sent.length, 2, "flush did not send the queued entries");
  ok(!(await hasSettled(flushed)), "flush resolved with calls in flight");
  replies[0].resolve({});
  ok(!(await hasSettled(flushed)), "flush resolved with a call still in flight");
  replies[1].resolve({});
  ok(await hasSettled(flushed), "flush did not resolve");
  await Promise.all(results);
  await batcher.flush();
});

Deno.test("SqsBatcher: flush sends a lingering entry at once and cancels the linger timer", async () => {
  const { sent, client } = fakeClient();
  const { clock, batcher } = batcherOn(client, { lingerMs: 10_000 });
  const result = batcher.delete("a");
  strictEqual(clock.pending, 1, "no linger timer");
  await batcher.flush();
  await result;
  strictEqual(sent.length, 1);
  strictEqual(clock.pending, 0, "the linger timer is still pending");
});
