#!/usr/bin/env bash
# Idempotent setup: .venv with torch==2.13.0 (the local CPU build) and roboloop with its sim and dev
# extras, and the Debian packages headless MuJoCo rendering needs.
#   bash scripts/setup.sh            everything (what `./run test` runs)
#   bash scripts/setup.sh --no-dev   without the dev extra (pytest, ruff): what `./run demo` needs
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
STAMP=.venv/.roboloop-setup
EXTRAS="sim,dev"
[[ "${1:-}" == "--no-dev" ]] && EXTRAS="sim"

# 1. Debian packages for headless EGL rendering (software llvmpipe).
APT_PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]} (headless MuJoCo rendering)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages for headless rendering; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
  fi
fi

# 2. Virtual environment.
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv

# The native Rerun viewer decodes H.264 camera streams with an `ffmpeg` executable on
# PATH. imageio-ffmpeg (a gym-aloha dependency) ships one: link it into .venv/bin, which
# ./run puts on PATH.
link_ffmpeg() {
  [[ -e .venv/bin/ffmpeg ]] && return 0
  local exe
  exe=$(.venv/bin/python -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())" 2>/dev/null) || return 0
  [[ -x "$exe" ]] && ln -sf "$exe" .venv/bin/ffmpeg
  return 0
}

# 3. Python packages: only when pyproject.toml changed since the last successful setup, or the dev
#    extra is wanted and that setup went without it. The stamp holds "<pyproject hash> <extras>".
want="$(sha256sum pyproject.toml | cut -c1-16)"
have="" have_extras=""
if [[ -f "$STAMP" ]]; then read -r have have_extras < "$STAMP" || true; fi
if [[ "$have" == "$want" && ( "$EXTRAS" == "sim" || "${have_extras:-sim,dev}" == "sim,dev" ) ]] \
   && .venv/bin/python -c "import roboloop, torch" 2>/dev/null; then
  link_ffmpeg
  exit 0
fi
echo "setup: installing Python packages into .venv (first run takes a minute)"
pip_install() {  # quiet pip; on failure show its output (minus index-location noise) and stop
  local out
  if ! out=$(.venv/bin/python -m pip install -q "$@" 2>&1); then
    echo "$out" | grep -v "is ignored" >&2
    echo "setup: pip install $* failed" >&2
    exit 1
  fi
}
# One pip run, torch pinned to the local CPU build (any other resolution pulls GBs of CUDA wheels), and no pip
# self-upgrade (the venv's pip installs this pyproject as is). Everything installed must be byte-compiled: with
# PYTHONDONTWRITEBYTECODE=1 (set on some machines) nothing compiled at import time is ever cached, and every worker
# process would compile torch and MuJoCo's Python anew. pip compiles on one core (~30 s of CPU for torch, scipy,
# sympy, ...), so it installs without compiling and compileall then compiles the same files on every core. A file
# that does not compile (pip skips those too) only makes compileall's exit status non-zero.
pip_install --no-compile torch==2.13.0 -e ".[$EXTRAS]"
.venv/bin/python -m compileall -qq -j 0 .venv/lib >/dev/null 2>&1 || true
.venv/bin/python -c "import roboloop, torch, rerun, gym_aloha"
link_ffmpeg
echo "$want $EXTRAS" > "$STAMP"
echo "setup: done"
