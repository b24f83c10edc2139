#!/bin/sh
# Entry point of the ls-active-yolo image (ENTRYPOINT; the image's CMD is `serve`).
# The tests run this very script outside Docker (tests/test_docker_files.py,
# tests/e2e/test_scale_out.py), so what the image runs is what was tested.
#
#   serve (default)         ls-active-yolo serve: gunicorn on HOST:PORT with WORKERS x THREADS
#   worker                  ls-active-yolo worker: RQ training jobs when REDIS_URL is set
#   models | train          the other ls-active-yolo commands, arguments passed on
#   healthcheck             exit 0 when http://127.0.0.1:$PORT/health answers "UP" (HEALTHCHECK)
#   anything else           run as given (a shell, for a look inside)
set -eu

if [ "$#" -eq 0 ]; then
  set -- serve
fi

case "$1" in
  serve | worker | models | train)
    model_dir="${MODEL_DIR:-models}"
    # A bind mount keeps its owner from the host: say so plainly instead of a traceback.
    if ! mkdir -p "$model_dir" 2>/dev/null || [ ! -w "$model_dir" ]; then
      echo "entrypoint: MODEL_DIR $model_dir is not a writable directory for uid $(id -u);" \
        "give that uid the directory, or use a named volume" >&2
      exit 1
    fi
    exec ls-active-yolo "$@"
    ;;
  healthcheck)
    exec python -c '
import json, os, sys, urllib.request

url = "http://127.0.0.1:%s/health" % (os.environ.get("PORT") or "9090")
try:
    with urllib.request.urlopen(url, timeout=5) as answer:
        status = json.load(answer).get("status")
except (OSError, ValueError) as error:
    sys.exit("unhealthy: %s: %s" % (url, error))
if status != "UP":
    sys.exit("unhealthy: %s says status=%r" % (url, status))
'
    ;;
  *)
    exec "$@"
    ;;
esac
