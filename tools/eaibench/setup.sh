#!/usr/bin/env bash
# eaibench set-up: install what is missing, fetch + convert the tasks into
# ${M4NPU_CACHE:-~/.cache/m4npu}/eaibench/, then train and score the baselines.
# Idempotent: a second run only re-checks and prints the table again
# (fetch.py skips tasks whose stamp matches; baselines are retrained, ~1 min).
# --strong also trains the strong baselines (strong.py: CNNs, 1-D CNNs and a
# fine-tuned MiniLM, ~40 min on 2 cores; needs the MiniLM weights package in
# ${M4NPU_WEIGHTS_DIR:-~/.cache/m4npu/weights}); without it, strong entries
# already in baselines.json are kept.
#
#   tools/eaibench/setup.sh [--no-baselines | --strong] [fetch.py args...]
#
# Environment: PYTHON (default python3), M4NPU_CACHE, EAIBENCH_SKLEARN
# (pip requirement used when scikit-learn is missing; default pinned below),
# EAIBENCH_JAX / EAIBENCH_TOKENIZERS (the same for strong.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
SKLEARN_SPEC="${EAIBENCH_SKLEARN:-scikit-learn==1.9.1}"
JAX_SPEC="${EAIBENCH_JAX:-jax[cpu]==0.10.2}"
TOKENIZERS_SPEC="${EAIBENCH_TOKENIZERS:-tokenizers==0.23.3}"
run_baselines=1
run_strong=0
if [[ "${1:-}" == "--no-baselines" ]]; then run_baselines=0; shift; fi
if [[ "${1:-}" == "--strong" ]]; then run_strong=1; shift; fi

say() { printf '[eaibench] %s\n' "$*" >&2; }
start=$SECONDS

# ---- apt (root directly, otherwise non-interactive sudo, otherwise give up)
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
    else return 1; fi
}
apt_updated=0
apt_update_once() {
    if [[ $apt_updated -eq 0 ]]; then
        say "apt-get update"
        as_root apt-get update -qq && apt_updated=1
    fi
}
apt_install() {
    apt_update_once || { say "cannot run apt-get as root (no root, no passwordless sudo): install $* by hand"; return 1; }
    say "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v espeak-ng >/dev/null || apt_install espeak-ng || true
command -v npm >/dev/null || apt_install npm || true
command -v dpkg-deb >/dev/null || say "dpkg-deb missing: the fashion task will fail"
# apt-get download (fashion) needs package lists; it runs unprivileged.
if ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then apt_update_once || true; fi

# ---- python: numpy (fetch) and scikit-learn (baselines)
pip_install() {
    local user=(--user)
    # inside a virtualenv --user is refused
    if "$PY" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)'; then user=(); fi
    if ! "$PY" -m pip --version >/dev/null 2>&1; then apt_install python3-pip || true; fi
    local log; log="$(mktemp)"
    say "pip install ${user[*]} $*"
    if ! "$PY" -m pip install -q --disable-pip-version-check --no-warn-script-location "${user[@]}" "$@" >"$log" 2>&1; then
        if grep -q externally-managed-environment "$log"; then
            # Debian 12's own python3 (PEP 668): a --user install is still kept apart from apt's files
            "$PY" -m pip install -q --disable-pip-version-check --no-warn-script-location "${user[@]}" --break-system-packages "$@"
        else
            cat "$log" >&2; rm -f "$log"; return 1
        fi
    fi
    rm -f "$log"
}
"$PY" -c 'import numpy' 2>/dev/null || pip_install numpy
if [[ $run_baselines -eq 1 ]]; then
    "$PY" -c 'import sklearn, threadpoolctl' 2>/dev/null || pip_install "$SKLEARN_SPEC"
fi
if [[ $run_strong -eq 1 ]]; then
    # jaxlib's PyPI wheels are CPU-only (torch's pull the CUDA stack, ~4 GB)
    "$PY" -c 'import jax' 2>/dev/null || pip_install "$JAX_SPEC"
    "$PY" -c 'import tokenizers' 2>/dev/null || pip_install "$TOKENIZERS_SPEC"
fi

# ---- data, then baselines
fetch_rc=0
"$PY" "$here/fetch.py" "$@" || fetch_rc=$?
if [[ $run_baselines -eq 1 ]]; then
    "$PY" "$here/baselines.py"   # every task that has data
fi
if [[ $run_strong -eq 1 ]]; then
    "$PY" "$here/strong.py"      # every task that has data; ~40 min on 2 cores
fi
say "done in $((SECONDS - start)) s"
exit $fetch_rc
