#!/usr/bin/env bash
# The library's unit tests on other torch releases, each in its own venv (.venv-torch-X.Y.Z):
# by default the oldest release pyproject.toml admits and the newest this machine's package index
# offers. Usage: scripts/test_torch_versions.sh [VERSION ...]   (make torch-versions)
# Each venv gets that torch, this package (--no-deps) and what the library's tests import, at the
# pins of requirements.txt. Off this project's machines, and here for releases not on local disk,
# pip takes PyPI's CUDA build (about 3 GB with NVIDIA's libraries); PIP_ARGS passes options.
set -uo pipefail
PIP_ARGS=${PIP_ARGS:-}
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TESTS=(tests/test_checkpoint.py tests/test_common_files.py tests/test_safety.py tests/test_properties.py tests/test_cli.py
       tests/test_hardening.py)
versions=("$@")
if [ ${#versions[@]} -eq 0 ]; then
  oldest=$(sed -n 's/.*"torch>=\([0-9.]*\)".*/\1/p' pyproject.toml)
  # the newest patch release of the oldest minor, and the newest release pip can install here
  listing=$("$PYTHON" -m pip index versions torch $PIP_ARGS 2>/dev/null | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n' | grep -v '+')
  oldest=$(echo "$listing" | grep "^${oldest}\." | sort -V | tail -1)
  newest=$("$PYTHON" -m pip install --dry-run --no-deps --ignore-installed --quiet --report - torch $PIP_ARGS 2>/dev/null \
           | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])')
  versions=("$oldest" "$newest")
fi
pins=$(grep -E '^(numpy|pandas|tqdm|psutil|pyyaml|safetensors|pytest|pytest-timeout|hypothesis|packaging)==' requirements.txt requirements-dev.txt | cut -d: -f2)
status=0
for v in "${versions[@]}"; do
  venv=".venv-torch-$v"
  echo "== torch $v in $venv"
  test -x "$venv/bin/python" || "$PYTHON" -m venv "$venv"
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q $PIP_ARGS "torch==$v" $pins \
      2> >(grep -v "is ignored: it is neither" >&2) \
      || ! "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e . ; then
    echo "torch $v: could not install"; status=1; continue
  fi
  "$venv/bin/python" -m pytest -m "not slow" -q -p no:cacheprovider "${TESTS[@]}" || status=1
  # the project's premise, on this release: does a compiled model's state_dict gain _orig_mod.?
  "$venv/bin/python" - <<'PY' || status=1
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))

compiled = torch.compile(build(), backend="eager")
try:
    build().load_state_dict(compiled.state_dict())
    outcome = "loads into the plain model"
except RuntimeError as exc:
    outcome = "plain load_state_dict fails: " + " ".join(str(exc).split())[:110]
print(f"torch {torch.__version__}: first key {next(iter(compiled.state_dict()))!r}; {outcome}")
PY
done
exit $status
