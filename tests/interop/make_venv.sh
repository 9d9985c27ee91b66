#!/usr/bin/env bash
# Create (or reuse) the interop virtualenv that runs OpenFlamingo's real code in tests/test_export_openflamingo.py,
# and print its directory. torch 2.14.1's CUDA wheels make it ~5.7 GB and a few CPU-minutes to install, so it
# lives outside the checkout, keyed by the sha256 of requirements.txt, the open-flamingo pin and the Python
# version: every checkout and CI run on a machine shares it until the requirement set changes, and then the
# old one is removed. m3w is not installed into it: the check script imports the checkout under test (its
# own folder's repository root), so the code tested is always the code checked out.
# Usage: make_venv.sh [VENV_DIR]   (default: $M3W_INTEROP_VENV, else ~/.cache/m3w/interop-venv-KEY)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
OPEN_FLAMINGO="open-flamingo==2.0.1"
KEY="$( (cat tests/interop/requirements.txt; echo "$OPEN_FLAMINGO"; "$PYTHON" -c 'import sys; print(sys.version)') \
        | sha256sum | cut -c1-16)"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/m3w"
VENV="${1:-${M3W_INTEROP_VENV:-$CACHE_ROOT/interop-venv-$KEY}}"
STAMP="$VENV/.m3w-interop-$KEY"
if [ -f "$STAMP" ]; then
  echo "$VENV"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
# torch's CUDA wheels come with ~5.7 GB of libraries: say so plainly instead of failing half-way.
NEED_KB=$((8 * 1024 * 1024))
FREE_KB="$(df -Pk "$(dirname "$VENV")" | awk 'NR == 2 {print $4}')"
if [ "$FREE_KB" -lt "$NEED_KB" ]; then
  echo "make_venv.sh: the interop venv needs about 6 GB and 8 GB free to install; $((FREE_KB / 1024)) MB free" >&2
  exit 1
fi
echo "make_venv.sh: creating the interop venv in $VENV (a few minutes, once per requirement set)" >&2
rm -rf "$VENV"
if [ -z "${1:-}${M3W_INTEROP_VENV:-}" ]; then
  find "$CACHE_ROOT" -maxdepth 1 -name 'interop-venv-*' ! -name "interop-venv-$KEY" -exec rm -rf {} +
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -r tests/interop/requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps "$OPEN_FLAMINGO"
touch "$STAMP"
echo "$VENV"
