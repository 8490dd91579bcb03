#!/bin/sh
# Drains sqsrun before Auto Scaling terminates this instance (scale-in, instance
# refresh). Run by sqsrun-scale-in-drain.service; needs the lifecycle hook of
# asg-target-tracking.yaml, which holds the instance for its DrainSeconds.
#
# Auto Scaling announces the coming termination in the instance metadata
# (autoscaling/target-lifecycle-state becomes "Terminated"). Then: `systemctl stop
# sqsrun`, which returns once sqsrun drained (SIGTERM: no new messages, running jobs
# finish or are killed and their messages released; TimeoutStopSec bounds it), and
# tell Auto Scaling to go on. Without the AWS CLI, or without the permission
# autoscaling:CompleteLifecycleAction, the hook's timeout ends the wait instead.
set -u
IMDS=http://169.254.169.254/latest
HOOK=${SQSRUN_LIFECYCLE_HOOK:-sqsrun-drain}
UNITS=${SQSRUN_UNITS:-sqsrun.service}

metadata() {
  # IMDSv2: a session token per request keeps this working when v1 is disabled.
  token=$(curl -fsS -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60") &&
    curl -fsS -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/$1"
}

while [ "$(metadata autoscaling/target-lifecycle-state 2>/dev/null)" != Terminated ]; do
  sleep 5
done
echo "termination announced: stopping $UNITS (drain)"
# shellcheck disable=SC2086 # several units, space-separated
systemctl stop $UNITS
echo "sqsrun stopped"

if command -v aws >/dev/null 2>&1; then
  instance=$(metadata instance-id)
  group=$(metadata tags/instance/aws:autoscaling:groupName 2>/dev/null) || group=${SQSRUN_ASG_NAME:-}
  if [ -n "$group" ]; then
    aws autoscaling complete-lifecycle-action --lifecycle-hook-name "$HOOK" \
      --auto-scaling-group-name "$group" --instance-id "$instance" \
      --lifecycle-action-result CONTINUE ||
      echo "complete-lifecycle-action failed; the hook's timeout will end the wait"
  fi
fi
