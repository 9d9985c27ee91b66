#!/usr/bin/env bash
# Create (or reuse) the interop virtualenv that runs OpenFlamingo's real code in tests/test_export_openflamingo.py.
# Reused as long as requirements.txt, the open-flamingo pin and the Python version are unchanged (their sha256
# is kept in the venv's stamp file); else it is made anew. m3w is installed into it too (editable, no deps),
# so the interop scripts import the checkout's own code. Usage: make_venv.sh [VENV_DIR] (default .venv-interop).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${1:-.venv-interop}"
PYTHON="${PYTHON:-python3}"
OPEN_FLAMINGO="open-flamingo==2.0.1"
KEY="$( (cat tests/interop/requirements.txt; echo "$OPEN_FLAMINGO"; "$PYTHON" -c 'import sys; print(sys.version)') \
        | sha256sum | cut -d' ' -f1)"
STAMP="$VENV/.m3w-interop-$KEY"
if [ -f "$STAMP" ]; then
  exit 0
fi
# torch's CUDA wheels come with ~5.7 GB of libraries: say so plainly instead of failing half-way.
NEED_KB=$((8 * 1024 * 1024))
FREE_KB="$(df -Pk . | awk 'NR == 2 {print $4}')"
if [ "$FREE_KB" -lt "$NEED_KB" ]; then
  echo "make_venv.sh: the interop venv needs about 6 GB and 8 GB free to install; $((FREE_KB / 1024)) MB free" >&2
  exit 1
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -r tests/interop/requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps "$OPEN_FLAMINGO"
"$VENV/bin/python" -m pip install -q --no-deps -e .
touch "$STAMP"
