#!/usr/bin/env bash
# Runs one stage of the build and prints how long it took: stage.sh NAME CMD...
set -uo pipefail
name=$1; shift
start=$(date +%s)
echo "==> stage $name"
"$@"
rc=$?
echo "==> stage $name: $(( $(date +%s) - start ))s (exit $rc)"
exit $rc
