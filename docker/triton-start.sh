#!/usr/bin/env bash
# The Triton image's entry point: tritonserver with the given arguments, then the start-time
# parity check (docker/served_parity.py) against it. The check passing writes the marker the
# HEALTHCHECK waits for; failing stops the server and the container (exit 1): a GPU route that
# answers differently from the CPU graph never becomes healthy.
set -uo pipefail
marker=/tmp/served-parity-ok
rm -f "$marker"
tritonserver "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM INT
if ! python3 /opt/matting/served_parity.py --url 127.0.0.1:8001 \
    --repository /opt/matting/model_repository --marker "$marker"; then
  echo "served parity failed: stopping tritonserver" >&2
  kill -TERM "$server" 2>/dev/null
  wait "$server"
  exit 1
fi
wait "$server"
