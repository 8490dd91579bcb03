// An SQS handler written for AWS Lambda, run unchanged by `sqsrun --lambda`:
//
//     npm install aws-lambda-ric
//     sqsrun -q orders --lambda ./node_modules/.bin/aws-lambda-ric -- index.handler
//
// The records named in batchItemFailures are released, the others deleted.
// An async handler, Lambda's form for Node (a plain function would be a callback handler).
// deno-lint-ignore require-await
export const handler = async (event) => {
  const batchItemFailures = [];
  for (const record of event.Records) {
    try {
      const order = JSON.parse(record.body);
      console.log("order received", order.id);
    } catch {
      batchItemFailures.push({ itemIdentifier: record.messageId });
    }
  }
  return { batchItemFailures };
};
