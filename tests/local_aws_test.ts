/**
 * The local AWS emulators the other tests rely on: both answer SQS through the
 * AWS SDK, the AWS CLI works with `awsEnv`, and moto comes back on the same port.
 */
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  ListQueuesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import assert from "node:assert/strict";
import {
  motoEndpoint,
  restartBackend,
  runAwsCli,
  sqsBackends,
  startBackend,
  stopBackend,
  uniqueName,
} from "./support/local_aws.ts";

function sqsClient(endpoint: string): SQSClient {
  return new SQSClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
    // One attempt: the outage test expects a refused connection to fail at once.
    maxAttempts: 1,
  });
}

for (const backend of sqsBackends()) {
  Deno.test(`${backend.name} creates a queue, sends and receives`, async () => {
    const client = sqsClient(backend.endpoint);
    try {
      const { QueueUrl } = await client.send(
        new CreateQueueCommand({ QueueName: uniqueName("local-aws") }),
      );
      assert(QueueUrl, "CreateQueue returned no URL");
      await client.send(new SendMessageCommand({ QueueUrl, MessageBody: "hello" }));
      const received = await client.send(
        new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: 5 }),
      );
      const message = received.Messages?.[0];
      assert.equal(message?.Body, "hello");
      await client.send(
        new DeleteMessageCommand({ QueueUrl, ReceiptHandle: message.ReceiptHandle }),
      );
      await client.send(new DeleteQueueCommand({ QueueUrl }));
    } finally {
      client.destroy();
    }
  });
}

Deno.test("the venv's AWS CLI lists moto's queues", async () => {
  const queue = uniqueName("cli");
  const client = sqsClient(motoEndpoint());
  try {
    await client.send(new CreateQueueCommand({ QueueName: queue }));
  } finally {
    client.destroy();
  }
  const result = await runAwsCli(motoEndpoint(), ["sqs", "list-queues", "--output", "json"]);
  assert.equal(result.code, 0, `aws failed: ${result.stderr}`);
  assert(result.stdout.includes(queue), `queue ${queue} not in: ${result.stdout}`);
});

Deno.test("moto stops and starts again on the same port, empty", async () => {
  const endpoint = motoEndpoint();
  const client = sqsClient(endpoint);
  try {
    const queue = uniqueName("outage");
    await client.send(new CreateQueueCommand({ QueueName: queue }));

    await stopBackend("moto");
    await assert.rejects(client.send(new ListQueuesCommand({})), "moto should be down");

    await startBackend("moto");
    const after = await client.send(new ListQueuesCommand({}));
    assert(
      !(after.QueueUrls ?? []).some((url) => url.endsWith(`/${queue}`)),
      "a restarted moto should have no queues",
    );

    await restartBackend("moto");
    const again = await client.send(new ListQueuesCommand({}));
    assert.equal(again.$metadata.httpStatusCode, 200);
  } finally {
    client.destroy();
  }
});
