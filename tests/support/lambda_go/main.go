// A Lambda SQS handler built with aws-lambda-go, for tests/lambda_test.ts and the
// benchmarks: it runs under sqsrun --lambda exactly as it would on AWS Lambda.
//
// A record whose body starts with "fail" fails on its first receive (a partial
// batch response), "sleep:MS" sleeps that long; every other record succeeds.
// With SQSRUN_TEST_ECHO set, each record that succeeded prints "processed BODY".
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
)

var echo = os.Getenv("SQSRUN_TEST_ECHO") != ""

func handler(ctx context.Context, event events.SQSEvent) (events.SQSEventResponse, error) {
	var response events.SQSEventResponse
	for _, record := range event.Records {
		if strings.HasPrefix(record.Body, "fail") && record.Attributes["ApproximateReceiveCount"] == "1" {
			response.BatchItemFailures = append(response.BatchItemFailures,
				events.SQSBatchItemFailure{ItemIdentifier: record.MessageId})
			continue
		}
		if ms, found := strings.CutPrefix(record.Body, "sleep:"); found {
			if n, err := strconv.Atoi(ms); err == nil {
				time.Sleep(time.Duration(n) * time.Millisecond)
			}
		}
		if echo {
			fmt.Printf("processed %s\n", record.Body)
		}
	}
	return response, nil
}

func main() {
	lambda.Start(handler)
}
