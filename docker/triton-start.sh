#!/usr/bin/env bash
# The Triton image's entry point: tritonserver with the given arguments, then the start-time
# parity check (docker/served_parity.py) against it. The check passing writes the marker the
# HEALTHCHECK waits for; failing stops the server and the container (exit 1): a GPU route that
# answers differently from the CPU graph never becomes healthy.
# Both run in the background and are waited for with `wait`, which a signal interrupts (a
# foreground command would hold a trap until it ends): `docker stop` reaches tritonserver at once,
# and the script waits for it to drain (--exit-timeout-secs) before it exits.
# MATTING_HOME, TRITON_GRPC_URL and SERVED_PARITY_MARKER let tests/test_served_parity.py run it
# outside the image.
set -uo pipefail
home=${MATTING_HOME:-/opt/matting}
marker=${SERVED_PARITY_MARKER:-/tmp/served-parity-ok}
rm -f "$marker"
tritonserver "$@" &
server=$!
python3 "$home/served_parity.py" --url "${TRITON_GRPC_URL:-127.0.0.1:8001}" \
  --repository "$home/model_repository" --marker "$marker" &
checker=$!
trap 'kill -TERM "$checker" "$server" 2>/dev/null; wait "$server"; exit 143' TERM INT
if ! wait "$checker"; then
  echo "served parity failed: stopping tritonserver" >&2
  kill -TERM "$server" 2>/dev/null
  wait "$server"
  exit 1
fi
wait "$server"
