#!/bin/sh
# How long `nvhook prestart` takes on the synthetic driver and what it adds to a
# container start: the `start` section of scripts/bench.sh.   scripts/bench-prestart.sh [RUNS]
exec "$(dirname "$0")/bench.sh" "${1:-40}" start
