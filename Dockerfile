# sqsrun in a container: the release binary on Debian 12, run by tini.
#
#   docker build -t sqsrun .
#   docker run -d --stop-timeout 200 -e AWS_REGION=eu-west-1 \
#     -v /etc/sqsrun:/etc/sqsrun:ro sqsrun
#
# `docker stop -t` / `--stop-timeout` (and compose's stop_grace_period, ECS's
# stopTimeout, Kubernetes' terminationGracePeriodSeconds) must exceed the drain:
# --shutdown-timeout (default: the kill timeout, timeout*5 = 150 s) + --kill-grace
# (10 s) + a few seconds to delete the last messages. Docker's default is 10 s: after
# it, SIGKILL ends every running job and their messages come back only when their
# visibility timeout runs out.
#
# Job images build on this one: FROM it, add the job program and its tools (as root,
# then back to USER 10001), and ship the configuration (or mount it).

# --- Build: `deno compile` through scripts/build.ts, as the release does ----------
# Pinned to the Deno the project builds and tests with (.ci/run, the workflows).
# $BUILDPLATFORM (BuildKit, Docker's default builder): the compile runs natively and
# cross-compiles for the target, so a multi-platform build (docker buildx build
# --platform linux/amd64,linux/arm64) needs no emulation. `deno compile` downloads
# the Deno runtime for the target, so this stage needs the internet.
FROM --platform=$BUILDPLATFORM denoland/deno:2.9.6 AS build
ARG TARGETARCH
WORKDIR /src
# Dependencies first, checked against the lock file, in a layer of their own that a
# change to src/ does not invalidate.
COPY deno.json deno.lock ./
RUN deno install --frozen
COPY src/ src/
COPY scripts/build.ts scripts/build.ts
RUN case "${TARGETARCH:-amd64}" in \
      amd64) target=x86_64-unknown-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu ;; \
      *) echo "no sqsrun binary for ${TARGETARCH}" >&2; exit 1 ;; \
    esac \
 && deno run -A scripts/build.ts --target "$target" \
 && install -m 0755 "dist/sqsrun-$target" /sqsrun

# --- Runtime --------------------------------------------------------------------
# debian:12-slim rather than distroless: the binary needs glibc (both have it), but
# jobs usually need a shell and coreutils (--shell runs `sh -c`), and sqsrun starts
# each job through util-linux's `setsid` (essential in Debian, so already here);
# without it, it falls back to a detached spawn that costs milliseconds per job.
FROM debian:12-slim
# tini as PID 1. sqsrun handles SIGTERM itself (drain), and tini forwards it to sqsrun
# alone (no -g: jobs are not signalled directly, as with systemd's KillMode=mixed).
# What PID 1 must also do is reap orphans: a job that daemonizes out of its process
# group is re-parented to PID 1, and sqsrun (a Deno program) never waits for
# processes it did not start, so they would pile up as zombies. tini reaps them and
# exits with sqsrun's exit code.
# ca-certificates: not for sqsrun (its TLS roots are built in) but for jobs (curl, ...).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can check it without a
# runAsUser, and files on mounted volumes have a predictable owner.
RUN groupadd --system --gid 10001 sqsrun \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sqsrun --create-home \
      --shell /usr/sbin/nologin sqsrun
COPY --from=build /sqsrun /usr/local/bin/sqsrun
USER 10001:10001
# A writable home for jobs (relative paths in the configuration start here) and the
# place the AWS SDK looks for ~/.aws; with a read-only root file system, mount a
# volume here or on /tmp for jobs that write. Logs go to stdout as JSON lines.
WORKDIR /var/lib/sqsrun
ENV HOME=/var/lib/sqsrun
# What `docker stop` sends first; sqsrun drains on it (a second one kills the jobs).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sqsrun"]
# The configuration file names the queue and the job; mount it, or bake it into a job
# image. Extra flags replace this: `docker run sqsrun -f /etc/sqsrun/sqsrun.yaml -c 4`.
CMD ["-f", "/etc/sqsrun/sqsrun.yaml"]
