#!/usr/bin/env bash
# Prepare this checkout: Debian packages the tests need (only with --services), a
# virtualenv in .venv, and the project installed from the lock file. Idempotent and
# quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.tensorguard-install"

# Debian packages whose binaries the test suite starts itself (PostgreSQL, SoftHSM2,
# Mosquitto, Pebble as the ACME server, Redis as the Celery broker, ...).
need_packages=()
if [[ "${1:-}" == "--services" ]]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_packages+=(postgresql)
  command -v softhsm2-util >/dev/null 2>&1 || need_packages+=(softhsm2)
  command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || need_packages+=(mosquitto)
  command -v pebble >/dev/null 2>&1 || need_packages+=(pebble)
  command -v redis-server >/dev/null 2>&1 || need_packages+=(redis-server)
  [[ -x /usr/bin/chromium ]] || need_packages+=(chromium)
fi
if ((${#need_packages[@]})); then
  echo "bootstrap: installing Debian packages: ${need_packages[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need_packages[@]}" >/dev/null
  # The Debian postgresql package starts a cluster of its own; the tests start theirs.
  command -v pg_ctlcluster >/dev/null 2>&1 && $SUDO service postgresql stop >/dev/null 2>&1 || true
  # Likewise Redis (the Celery broker of the distributed-executor test).
  command -v redis-server >/dev/null 2>&1 && $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "bootstrap: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
  echo "bootstrap: installing TensorGuard and its pinned dependencies (first time: ~2 min)"
  # This machine's pip configuration names local indexes that may be absent; their
  # "Location ... is ignored" warnings are noise. pipefail keeps pip's exit status.
  # The base install is only what an edge node needs (keys, TGSP, the agent); `make demo`
  # and `make test` need the whole pipeline: training, HE, registry, Dagster (docs/CLI.md).
  "$VENV/bin/pip" install -q --disable-pip-version-check -c constraints.txt \
    -e '.[pipeline,dev,scale,service]' 2>&1 \
    | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  echo "$want" > "$STAMP"
fi
