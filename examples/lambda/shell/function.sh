# The handler of examples/lambda/shell/bootstrap: prints each message's body to
# stderr (sqsrun's log) and answers with the records whose body is not JSON.
handler() {
  local event=$1
  echo "$event" | jq -r '.Records[].body' >&2
  echo "$event" | jq -c '{batchItemFailures: [.Records[] | select((.body | try fromjson catch null | type) != "object") | {itemIdentifier: .messageId}]}'
}
