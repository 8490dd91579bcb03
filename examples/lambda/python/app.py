"""An SQS handler written for AWS Lambda, run unchanged by `sqsrun --lambda`.

    python3 -m venv .venv && .venv/bin/pip install awslambdaric aws-lambda-powertools
    sqsrun -q orders --lambda .venv/bin/python3 -- -m awslambdaric app.handler

Powertools' BatchProcessor answers with the records that failed
(batchItemFailures): sqsrun releases exactly those and deletes the rest.
"""

import json

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

processor = BatchProcessor(event_type=EventType.SQS)
logger = Logger()


def record_handler(record: SQSRecord):
    order = json.loads(record.body)  # a body that is not JSON fails its record alone
    logger.info("order received", order_id=order.get("id"))


@logger.inject_lambda_context
def handler(event, context):
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
