#!/usr/bin/env bash
# `make setup` timed from clean clones, one setup after another, with empty and warm caches:
# uv from pylock.toml, pip from the same lock, and (BEFORE=<commit>) the pip setup that a
# commit before the lock had. Also the serving profile's environment beside the whole one.
#
#   bench/setup.sh [OUT]          OUT: a scratch folder (default /tmp/loopline-setup-bench)
#   BEFORE=cc96688 bench/setup.sh   ... and the old pip setup of that commit
#
# Each setup runs from a plain shell (env -i: HOME and a PATH without the project's venv),
# as the README's commands do. Nothing else should run on the machine meanwhile.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-/tmp/loopline-setup-bench}
PLAIN=(env -i "HOME=$HOME" "PATH=/usr/local/bin:/usr/bin:/bin:${PYENV_ROOT:-$HOME/.pyenv}/shims")

rm -rf "$OUT" && mkdir -p "$OUT"

clone() {  # clone NAME [COMMIT]
    git clone --quiet "$ROOT" "$OUT/$1" && if [ -n "${2:-}" ]; then
        git -C "$OUT/$1" checkout --quiet "$2"
    fi
}

# timed LABEL DIR COMMAND...: one line, "label  seconds  what setup said it used"
timed() {
    local label=$1 dir=$2 start end said
    shift 2
    start=$(date +%s.%N)
    (cd "$dir" && "${PLAIN[@]}" "$@") >"$OUT/last.log" 2>&1 || {
        echo "$label: failed"; tail -5 "$OUT/last.log"; return 1
    }
    end=$(date +%s.%N)
    said=$(grep -m1 '^setup:' "$OUT/last.log" || echo "-")
    printf '%-52s %6.1f s   %s\n' "$label" "$(echo "$end - $start" | bc)" "$said"
}

UV_CACHE=(XDG_CACHE_HOME="$OUT/cache")  # uv's cache and the private uv, empty at first
clone cold && clone warm && clone pip
timed "uv, empty cache" "$OUT/cold" "${UV_CACHE[@]}" make setup
timed "uv, warm cache, a new clone" "$OUT/warm" "${UV_CACHE[@]}" make setup
timed "uv, nothing changed (make setup again)" "$OUT/warm" "${UV_CACHE[@]}" make setup
rm "$OUT/warm/.venv/.installed"
timed "uv, the venv there but its stamp gone" "$OUT/warm" "${UV_CACHE[@]}" make setup
timed "uv, serving profile, empty cache" "$OUT/cold" XDG_CACHE_HOME="$OUT/cache-serve" \
    PROFILE=serve VENV="$OUT/serve-venv" scripts/setup
timed "pip, same lock, empty pip cache" "$OUT/pip" PIP_CACHE_DIR="$OUT/pip-cache" \
    make setup INSTALLER=pip
rm -rf "$OUT/pip/.venv"
timed "pip, same lock, warm pip cache" "$OUT/pip" PIP_CACHE_DIR="$OUT/pip-cache" \
    make setup INSTALLER=pip
if [ -n "${BEFORE:-}" ]; then
    clone before "$BEFORE"
    timed "before ($BEFORE): pip, empty pip cache" "$OUT/before" \
        PIP_CACHE_DIR="$OUT/pip-cache-before" make setup
    rm -rf "$OUT/before/.venv"
    timed "before ($BEFORE): pip, warm pip cache" "$OUT/before" \
        PIP_CACHE_DIR="$OUT/pip-cache-before" make setup
fi

packages() { find "$1" -maxdepth 4 -name '*.dist-info' -path '*site-packages*' | wc -l; }
for venv in "$OUT/cold/.venv" "$OUT/serve-venv"; do
    printf '%-52s %s, %s packages\n' "$venv" "$(du -sh --apparent-size "$venv" | cut -f1)" \
        "$(packages "$venv")"
done
