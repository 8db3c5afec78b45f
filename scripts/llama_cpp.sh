#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (CPU) from the llama.cpp source tree that the
# llama-cpp-python source distribution vendors, into a cache outside the clone that later
# runs reuse. Also keeps llama.cpp's HF-to-GGUF converter (with its own gguf-py) beside it.
#
#   scripts/llama_cpp.sh            build once (several minutes on 2 cores), then print the
#                                   path of llama-server on stdout (messages go to stderr)
#   scripts/llama_cpp.sh --convert  print the path of convert_hf_to_gguf.py instead
#
# Cache: $KVLAB_LLAMA_CPP_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/kvlab/llama.cpp/<version>.
# The build time is written to <cache>/build_seconds. Exits 1 with one line saying why when
# it cannot build (no cmake or C++ compiler, source distribution not downloadable, build error;
# the log is kept at <cache>/build.log).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${KVLAB_LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="${KVLAB_LLAMA_CPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvlab/llama.cpp}"
CACHE="$ROOT/$VERSION"
BIN="$CACHE/bin/llama-server"
CONVERT="$CACHE/convert/convert_hf_to_gguf.py"
PY="${KVLAB_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

fail() { echo "llama.cpp: $*" >&2; exit 1; }

if [ ! -x "$BIN" ] || ! "$BIN" --version >/dev/null 2>&1 || [ ! -f "$CONVERT" ]; then
  for tool in cmake c++ make; do
    command -v "$tool" >/dev/null 2>&1 || fail "cannot build llama-server: '$tool' is not installed (Debian: apt-get install cmake g++ make)"
  done
  mkdir -p "$CACHE"
  LOG="$CACHE/build.log"
  : >"$LOG"
  echo "building llama-server from llama-cpp-python==$VERSION's vendored llama.cpp into $CACHE (once; log: $LOG)..." >&2
  START=$(date +%s)
  SRC="$CACHE/src"
  rm -rf "$SRC" && mkdir -p "$SRC"
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$SRC" "llama-cpp-python==$VERSION" >>"$LOG" 2>&1 \
    || fail "cannot download the llama-cpp-python==$VERSION source distribution (see $LOG)"
  tar -xzf "$SRC"/llama_cpp_python-"$VERSION".tar.gz -C "$SRC" >>"$LOG" 2>&1 \
    || fail "cannot unpack the llama-cpp-python==$VERSION source distribution (see $LOG)"
  TREE="$SRC/llama_cpp_python-$VERSION/vendor/llama.cpp"
  [ -f "$TREE/tools/server/server.cpp" ] || fail "no tools/server in the vendored llama.cpp of llama-cpp-python==$VERSION"
  JOBS="${KVLAB_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
  # Static CPU build of the server only: no network at build or run time (no prebuilt web UI,
  # no TLS, no curl), no tests or examples.
  cmake -S "$TREE" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=ON \
    >>"$LOG" 2>&1 || fail "cmake could not configure llama.cpp (see $LOG)"
  cmake --build "$CACHE/build" --target llama-server -j "$JOBS" >>"$LOG" 2>&1 \
    || fail "building llama-server failed (see $LOG)"
  mkdir -p "$CACHE/bin" "$CACHE/convert"
  cp "$CACHE/build/bin/llama-server" "$BIN"
  cp "$TREE/convert_hf_to_gguf.py" "$CACHE/convert/"
  cp -r "$TREE/conversion" "$TREE/gguf-py" "$CACHE/convert/"
  # The build tree and sources are large; the binary and the converter are all that is used.
  rm -rf "$CACHE/build" "$SRC"
  echo $(( $(date +%s) - START )) >"$CACHE/build_seconds"
  "$BIN" --version >/dev/null 2>&1 || fail "the built llama-server does not run (see $LOG)"
  echo "llama-server built in $(cat "$CACHE/build_seconds") s" >&2
fi
if [ "${1:-}" = "--convert" ]; then
  echo "$CONVERT"
else
  echo "$BIN"
fi
