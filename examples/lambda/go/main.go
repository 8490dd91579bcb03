// An SQS handler written for AWS Lambda, run unchanged by `sqsrun --lambda`:
//
//	go build -o bootstrap .
//	sqsrun -q orders --lambda ./bootstrap
//
// The records named in BatchItemFailures are released, the others deleted.
package main

import (
	"context"
	"encoding/json"
	"log"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

func handler(ctx context.Context, event events.SQSEvent) (events.SQSEventResponse, error) {
	var response events.SQSEventResponse
	for _, record := range event.Records {
		var order struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(record.Body), &order); err != nil {
			response.BatchItemFailures = append(response.BatchItemFailures,
				events.SQSBatchItemFailure{ItemIdentifier: record.MessageId})
			continue
		}
		log.Printf("order received %s", order.ID)
	}
	return response, nil
}

func main() {
	lambda.Start(handler)
}
