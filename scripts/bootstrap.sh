#!/usr/bin/env bash
# Installs what Pitwall needs to run on this machine when it is missing: Python 3.11+
# with venv, uv (in a private tools venv), runsc (gVisor), and the project's locked
# Python environment in .venv. Idempotent: a second run only checks.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

need_pkg python3 python3
python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
  || die "Python 3.11 or newer is needed; found $(python3 --version 2>&1)"
python3 -c 'import venv, ensurepip' 2>/dev/null || { need_pkg __none__ python3-venv; }
need_runsc
need_pkg git git

UV=$(command -v uv || true)
if [ -z "$UV" ]; then
  tools=/opt/pitwall-tools
  if [ ! -x "$tools/bin/uv" ]; then
    log "installing uv into $tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q uv
  fi
  UV="$tools/bin/uv"
fi

cd "$root"
stamp=.venv/.pitwall-synced
if [ ! -f "$stamp" ] || [ uv.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "creating the Python environment (.venv) from uv.lock"
  "$UV" sync --frozen --quiet --python "$(command -v python3)"
  touch "$stamp"
fi
