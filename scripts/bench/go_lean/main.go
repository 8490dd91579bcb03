// Command go_lean is the Go lean loop `deno task bench` compares sqsrun against: the
// leanest loop a Go programmer would write for sqsrun's job. N goroutines (N = the
// concurrency), each one: ReceiveMessage(MaxNumberOfMessages 10, WaitTimeSeconds 1),
// then one job per message in turn, then DeleteMessageBatch of the successes. No
// visibility extension, no kill timeout, no retries beyond the SDK's, no logs.
//
//	go_lean QUEUE_URL CONCURRENCY COMMAND [ARGS...]
//	go_lean -post URL QUEUE_URL CONCURRENCY
//
// The exec mode starts COMMAND per message in a process group of its own, the body on
// its stdin, stdout and stderr to /dev/null; exit status 0 is a success. The -post mode
// POSTs each body to URL (Content-Type application/json) through one shared keep-alive
// http.Client; a 2xx answer is a success.
//
// Endpoint, credentials and region come from the standard AWS environment variables
// (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION). It runs
// until killed: the bench stops it once the queue is empty. (Stopping after empty
// receives ended runs early: an answer lost on a dropped connection, retried by the
// SDK, leaves its messages invisible for a visibility timeout.)
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

const usage = "usage: go_lean QUEUE_URL CONCURRENCY COMMAND [ARGS...]\n" +
	"       go_lean -post URL QUEUE_URL CONCURRENCY\n"

func main() {
	args := os.Args[1:]
	postURL := ""
	if len(args) > 0 && args[0] == "-post" {
		if len(args) != 4 {
			fail(usage)
		}
		postURL, args = args[1], args[2:]
	} else if len(args) < 3 {
		fail(usage)
	}
	queueURL := args[0]
	concurrency, err := strconv.Atoi(args[1])
	if err != nil || concurrency < 1 {
		fail("go_lean: CONCURRENCY must be a positive integer\n")
	}

	var job func(body string) bool
	if postURL != "" {
		job = poster(postURL, concurrency)
	} else {
		job = executor(args[2], args[3:])
	}

	ctx := context.Background()
	// Keep one idle connection per goroutine, as the SDK's default keeps only 10.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = concurrency + 10
		t.MaxIdleConnsPerHost = concurrency + 10
	})
	cfg, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(httpClient))
	if err != nil {
		fail(fmt.Sprintf("go_lean: AWS config: %v\n", err))
	}
	client := sqs.NewFromConfig(cfg)

	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx, client, queueURL, job)
		}()
	}
	wg.Wait()
}

// loop receives up to 10 messages, runs each one's job in turn, deletes the successes,
// and goes on until the program is killed.
func loop(ctx context.Context, client *sqs.Client, queueURL string, job func(string) bool) {
	for {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:            aws.String(queueURL),
			MaxNumberOfMessages: 10,
			WaitTimeSeconds:     1,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "go_lean: receive: %v\n", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if len(out.Messages) == 0 {
			continue
		}
		done := make([]types.DeleteMessageBatchRequestEntry, 0, len(out.Messages))
		for i, message := range out.Messages {
			if job(aws.ToString(message.Body)) {
				done = append(done, types.DeleteMessageBatchRequestEntry{
					Id:            aws.String(strconv.Itoa(i)),
					ReceiptHandle: message.ReceiptHandle,
				})
			}
		}
		if len(done) == 0 {
			continue
		}
		if _, err := client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{
			QueueUrl: aws.String(queueURL),
			Entries:  done,
		}); err != nil {
			fmt.Fprintf(os.Stderr, "go_lean: delete: %v\n", err)
		}
	}
}

// executor runs command per message: own process group, body on stdin, output discarded.
func executor(command string, args []string) func(string) bool {
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		fail(fmt.Sprintf("go_lean: %v\n", err))
	}
	return func(body string) bool {
		cmd := exec.Command(command, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Stdin = strings.NewReader(body)
		cmd.Stdout = devNull
		cmd.Stderr = devNull
		return cmd.Run() == nil
	}
}

// poster POSTs each body to url through one keep-alive client; a 2xx is a success.
func poster(url string, concurrency int) func(string) bool {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = concurrency
	transport.MaxIdleConnsPerHost = concurrency
	client := &http.Client{Transport: transport}
	return func(body string) bool {
		response, err := client.Post(url, "application/json", bytes.NewBufferString(body))
		if err != nil {
			return false
		}
		// Read to the end so the connection goes back to the pool.
		_, _ = io.Copy(io.Discard, response.Body)
		_ = response.Body.Close()
		return response.StatusCode >= 200 && response.StatusCode < 300
	}
}

func fail(message string) {
	fmt.Fprint(os.Stderr, message)
	os.Exit(2)
}
