#!/bin/sh
# An sqsrun --exec job: the message body arrives on stdin, exit 0 means done
# (the message is deleted), anything else means "try again later".
body=$(cat)
echo "message $SQSRUN_MESSAGE_ID (receive #$SQSRUN_RECEIVE_COUNT): $body"
case "$body" in
  *fail*)
    if [ "$SQSRUN_RECEIVE_COUNT" -lt 2 ]; then
      echo "pretending to fail on the first try" >&2
      exit 1
    fi
    ;;
esac
sleep 0.2
echo "done with $SQSRUN_MESSAGE_ID"
