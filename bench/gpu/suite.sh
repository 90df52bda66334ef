#!/usr/bin/env bash
# Every GPU check of stemdb in one command, on a bare GPU machine: no network, no root needed.
#
#   make gpu-kit                                  # here, once: wheels into .whl/, the packed pool into .pool/
#   bench/gpu/suite.sh OUTDIR                     # there (carry .whl and .pool): about 6 minutes on an H100
#   bench/gpu/suite.sh --only proof --proof-minutes 2 OUTDIR
#   bench/gpu/suite.sh --dry-run OUTDIR           # here: the same parts on the CPU at smoke sizes, in a fresh
#                                                 # virtual environment holding only the GPU machine's packages
#                                                 # plus the kit's wheels (a missing wheel shows here)
#
# The wheels are installed into a temporary folder put first on PYTHONPATH; then bench/gpu/suite.py runs the parts
# (see its docstring) and writes OUTDIR/gpu.json, OUTDIR/gpu.md and OUTDIR/suite.log.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

dry=0
keep_venv=0
args=()
for a in "$@"; do
  case "$a" in
    --dry-run) dry=1; args+=("$a") ;;
    --keep-venv) keep_venv=1 ;;  # dry run: reuse the virtual environment of the last dry run
    *) args+=("$a") ;;
  esac
done

t0=$(date +%s.%N)
if [ "$dry" = 1 ]; then
  host=work/gpu-kit/host-wheels
  deps=work/gpu-kit/machine-deps.txt
  [ -d "$host" ] && [ -f "$deps" ] || { echo "suite: no $host or $deps: run make gpu-kit first" >&2; exit 2; }
  venv=work/gpu-kit/venv
  if [ "$keep_venv" = 0 ] || [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    # What the GPU machine has that the checks use: the issue's list, pytest's plugins, and the packages the
    # kit's wheels depend on there (bench/gpu/kit.py wrote them to $deps). torch: the CPU build.
    quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }
    quiet "$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0
    # shellcheck disable=SC2046
    quiet "$venv/bin/pip" install -q --disable-pip-version-check numpy pandas pyarrow scipy numba matplotlib rich \
      typer pyyaml xxhash psutil jinja2 pytest pytest-timeout hypothesis threadpoolctl $(cat "$deps")
  fi
  py="$venv/bin/python"
  wheels="$host"
else
  py=python3
  wheels=.whl
  [ -d "$wheels" ] || { echo "suite: no $wheels/: carry it (make gpu-kit makes it)" >&2; exit 2; }
fi

site=$(mktemp -d "${TMPDIR:-/tmp}/stemdb-kit-XXXXXX")
"$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
  --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "$dry" = 1 ]; then
  # the dependency check pip does: every requirement of every installed distribution is there (musdb and
  # jsonschema of museval are waived, see bench/gpu/kit.py)
  # (stemdb's own metadata is on the path from an editable install here; it is not installed there)
  problems=$("$py" -m pip check 2>&1 | grep -v -E "^museval [^ ]+ requires (musdb|jsonschema)|^stemdb " \
             | grep -v "^No broken requirements" || true)
  if [ -n "$problems" ]; then
    echo "suite: the dry-run environment misses requirements:" >&2
    echo "$problems" >&2
    exit 1
  fi
fi
t1=$(date +%s.%N)
export STEMDB_KIT_INSTALL_S
STEMDB_KIT_INSTALL_S=$(python3 -c "print(round($t1 - $t0, 1))")
echo "suite: wheels installed into $site in ${STEMDB_KIT_INSTALL_S} s"
exec "$py" bench/gpu/suite.py "${args[@]}"
