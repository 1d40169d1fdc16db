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
# The stamp holds what the environment was made from (not an mtime: a fresh clone's
# mtimes say nothing). Bytecode is compiled at install: uv writes none by default, and
# with PYTHONDONTWRITEBYTECODE set (as on CI machines) every process, each CLI call,
# worker and Jupyter server of the suite, would compile polars, SQLAlchemy and plotly
# from source again: 3.1-3.7 s instead of 1.3-1.6 s to import the CLI (docs/benchmarks.md).
stamp=.venv/.pitwall-synced
want="$(cat uv.lock pyproject.toml | sha256sum | cut -c1-16) bytecode"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "creating the Python environment (.venv) from uv.lock"
  env -u PYTHONDONTWRITEBYTECODE "$UV" sync --frozen --quiet --compile-bytecode \
    --python "$(command -v python3)"
  echo "$want" > "$stamp"
fi
# The project's own packages are installed editable: compile what changed since last time.
env -u PYTHONDONTWRITEBYTECODE .venv/bin/python -m compileall -q -j 0 sdk executor \
  server_extension >/dev/null
