#!/usr/bin/env bash
# The unit tier (pytest -m "not slow") on other Python versions, each in its own venv
# (.venv-py3.X). Usage: scripts/test_pythons.sh [python ...]; by default every python3.12+ found
# on PATH or under pyenv. Note: off this project's machines, torch==2.13.0 for another Python is
# the CUDA build from PyPI (several GB); pass PIP_ARGS for the CPU index.
set -uo pipefail
cd "$(dirname "$0")/.."
candidates=("$@")
if [ ${#candidates[@]} -eq 0 ]; then
  for v in 3.12 3.13 3.14; do
    found=$(command -v "python$v" 2>/dev/null || ls -d "$HOME"/.pyenv/versions/"$v"*/bin/"python$v" 2>/dev/null | tail -1)
    [ -n "$found" ] && candidates+=("$found")
  done
fi
[ ${#candidates[@]} -gt 0 ] || { echo "no other Python found"; exit 0; }
status=0
for py in "${candidates[@]}"; do
  version=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') || { status=1; continue; }
  venv=".venv-py$version"
  echo "== Python $version ($py) in $venv"
  if ! make --no-print-directory install VENV="$venv" PYTHON="$py" PIP_ARGS="${PIP_ARGS:-}"; then
    echo "Python $version: could not install the requirements"; status=1; continue
  fi
  "$venv/bin/python" -m pytest -m "not slow" -q -p no:cacheprovider || status=1
done
exit $status
