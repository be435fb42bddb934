#!/usr/bin/env bash
# Start, stop or check a private Docker engine for tests and CI: no iptables, no bridge (run containers
# with --network host), its own data root, exec root, pid file and socket under one state folder.
# Ref: docs/image.md and the machine notes ("Docker engine").
# Usage: scripts/dockerd.sh start|stop|status   (prints DOCKER_HOST=unix://... on start and status)
# State folder: $MODEL_CICD_DOCKERD_DIR, default /var/tmp/model-cicd-dockerd (kept between runs, so the
# local base image and the build cache persist on the same machine).
set -euo pipefail

state="${MODEL_CICD_DOCKERD_DIR:-/var/tmp/model-cicd-dockerd}"
socket="$state/docker.sock"
pidfile="$state/dockerd.pid"
log="$state/dockerd.log"
host="unix://$socket"

running() {
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

answers() {
  DOCKER_HOST="$host" docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

start() {
  if running && answers; then
    echo "DOCKER_HOST=$host"
    return 0
  fi
  command -v dockerd >/dev/null || { echo "dockerd not found: apt-get install docker.io" >&2; exit 1; }
  mkdir -p "$state/data" "$state/exec"
  # Each stop may leave the network namespace mounted; a stale one blocks the next start.
  umount "$state/exec/netns/default" 2>/dev/null || true
  rm -f "$socket" "$pidfile"
  dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
    --data-root "$state/data" --exec-root "$state/exec" --pidfile "$pidfile" \
    --host "$host" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 150); do
    if answers; then
      echo "DOCKER_HOST=$host"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "dockerd exited: $(grep -m1 -iE 'failed|error' "$log" || tail -n 1 "$log")" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "dockerd did not answer on $socket within 30 s: $(tail -n 1 "$log")" >&2
  exit 1
}

stop() {
  if running; then
    local pid
    pid="$(cat "$pidfile")"
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
  fi
  umount "$state/exec/netns/default" 2>/dev/null || true
  rm -f "$pidfile"
  echo "stopped dockerd at $host"
}

status() {
  if running && answers; then
    echo "DOCKER_HOST=$host"
  else
    echo "no dockerd at $host" >&2
    exit 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
