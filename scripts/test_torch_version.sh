#!/usr/bin/env bash
# Runs the test suite under another torch version, in a venv of its own (never the project's .venv).
#
#   scripts/test_torch_version.sh 2.11.0                 # the whole suite (all of it runs on CPU)
#   scripts/test_torch_version.sh 2.11.0 -m "not inductor and not export"    # pytest args override
#
# torch is installed first and pinned, then the package with its test extra, so pip resolves
# diffusers and transformers against that torch as a new user's install would. Versions other than
# the local CPU build of 2.13 come from PyPI as the default CUDA wheels (several GB, runnable on
# CPU): this is a by-hand check, kept out of .ci/run. The venv is kept and reused
# (TS_TORCH_VENVS, default ~/.cache/ts-compile/torch-venvs/<version>); delete it to start afresh.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 TORCH_VERSION [pytest args...]   e.g. $0 2.11.0 -m 'not inductor'" >&2
    exit 2
fi
version="$1"; shift
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TS_TORCH_VENVS:-$HOME/.cache/ts-compile/torch-venvs}/$version"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "torch==$version"
    "$venv/bin/python" -m pip install -q -e "$repo[test]"
fi
# The editable install points at whichever checkout made the venv: run this one's code regardless.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md, sys
print("python", sys.version.split()[0], "|", ", ".join(
    f"{name} {md.version(name)}" for name in ("torch", "diffusers", "transformers", "hypothesis")))
PY
cd "$repo"
if [[ $# -eq 0 ]]; then
    set -- -q
fi
exec "$venv/bin/python" -m pytest "$@"
