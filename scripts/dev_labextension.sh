#!/usr/bin/env bash
# Builds the labextension when its sources changed and makes the dev venv see it (and the
# server extension), as a `pip install` of the wheel would.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"
cd "$root/labextension"
out="$root/server_extension/pitwall_server/labextension"
need_pkg node nodejs
need_pkg npm npm
if [ ! -f "$out/package.json" ] || [ -n "$(find src style package.json -newer "$out/package.json" 2>/dev/null | head -1)" ]; then
  log "building the labextension"
  export PATH="$root/.venv/bin:$PATH"
  jlpm install --immutable >/dev/null 2>&1 || jlpm install >/dev/null
  jlpm build:prod >/dev/null
fi
share="$root/.venv/share/jupyter/labextensions"
mkdir -p "$share" "$root/.venv/etc/jupyter/jupyter_server_config.d"
[ -L "$share/pitwall-labextension" ] || rm -rf "$share/pitwall-labextension"
ln -sfn "$out" "$share/pitwall-labextension"
cp "$root/jupyter-config/server-config/pitwall_server.json" \
   "$root/.venv/etc/jupyter/jupyter_server_config.d/pitwall_server.json"
