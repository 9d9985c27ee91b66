#!/usr/bin/env bash
# A user's plain `pip install .` with the stock pip of a fresh `python3 -m venv` (no upgrade), then a short
# real extraction that must write documents: a dependency-resolution quirk (pip 23 dropping lxml's
# `html_clean` extra once made every page an `extraction_error`) can never pass green again.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
echo "stock-pip check: $("$work/venv/bin/pip" --version)"
"$work/venv/bin/pip" install -q . 2>&1 | grep -v "^WARNING: Location" || true
"$work/venv/bin/m3w" extract --input ../shared/fixtures/warc/warcfile.warc.gz --output "$work/out"
"$work/venv/bin/python" - "$work/out/report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
extract = report["stages"]["extract"]["pages"]
errors = extract["dropped"].get("extraction_error", 0)
print(f"stock-pip check: extract in={extract['in']} out={extract['out']} extraction_error={errors}")
if extract["out"] == 0 or errors * 2 > extract["in"]:
    sys.exit("stock-pip check FAILED: the plainly installed package cannot extract")
PY
