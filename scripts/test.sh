#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs kvlab with every extra into .venv,
# vLLM's CPU build into .venv-vllm, then runs lint, types, the unit tests, and the live
# tier against real vLLM servers that the test fixtures start and stop.
#
#   ./scripts/test.sh            everything (what CI runs)
#   ./scripts/test.sh --fast     the everyday subset: no vLLM, no slow tests
set -euo pipefail
cd "$(dirname "$0")/.."
FAST=0
[ "${1:-}" = "--fast" ] && FAST=1

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pipq() { .venv/bin/pip install -q "$@" 2>&1 | grep -v '^WARNING: Location' || true; }
pipq --upgrade pip
# torch's CPU build first, so the [hf] extra's range is already satisfied.
.venv/bin/python -c "import torch" >/dev/null 2>&1 || pipq "torch==2.13.0"
pipq -e '.[all,dev]'
# promtool, prometheus and tmux for the monitor's tests (Debian/Ubuntu, as root; the tests
# say how to install them and skip only outside CI when they are missing).
for pkg in prometheus:promtool tmux:tmux cmake:cmake g++:g++; do
  if ! command -v "${pkg#*:}" >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q "${pkg%%:*}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${pkg%%:*}" >/dev/null; } \
      || echo "apt-get install ${pkg%%:*} failed"
  fi
done
.venv/bin/python -c "import kvlab, typer, pytest" >/dev/null
# Headless Chromium for the report's offline-rendering test (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) || echo "chromium not installed"
fi

# (one command a line: under set -e a failure inside an && list does not stop the script;
# no cache: import sorting depends on which files exist, which the cache does not track)
echo "== ruff"
.venv/bin/ruff check --no-cache src tests benchmarks
.venv/bin/ruff format --no-cache --check src tests benchmarks
echo "== mypy"; .venv/bin/mypy

if [ "$FAST" = 1 ]; then
  exec .venv/bin/pytest -q -n 2 -m "not slow and not live and not vllm"
fi

VLLM_PY="$(bash scripts/setup_vllm.sh)"
# llama.cpp's llama-server, built once from source into a cache outside the clone
# (~/.cache/kvlab/llama.cpp: about 14 minutes on 2 cores the first time, reused after;
# keep that directory between CI runs). If it cannot be built, the llama.cpp live tests fail.
if LLAMA_SERVER="$(KVLAB_PYTHON=.venv/bin/python bash scripts/llama_cpp.sh)"; then
  export KVLAB_LLAMA_SERVER="$LLAMA_SERVER"
fi
export KVLAB_VLLM_PYTHON="$VLLM_PY" KVLAB_REQUIRE_LIVE=1
echo "== unit and property tests"
.venv/bin/pytest -q -n 2 -m "not live and not vllm" --timeout 900 --ignore=tests/live
echo "== live-client unit tests against local stubs (serial: they time real sockets)"
.venv/bin/pytest -q -m "not live and not vllm" --timeout 900 tests/live
echo "== differential tests against vLLM's own code and live tests against a real vLLM server"
.venv/bin/pytest -q -m "live or vllm" --timeout 900
