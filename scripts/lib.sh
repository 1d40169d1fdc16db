# Shared helpers for the setup scripts (sourced, not run).
log() { printf '[pitwall] %s\n' "$*" >&2; }
die() { printf '[pitwall] error: %s\n' "$*" >&2; exit 1; }

APT_UPDATED=${APT_UPDATED:-}
# need_pkg COMMAND PACKAGE: install PACKAGE from Debian/Ubuntu when COMMAND is missing.
need_pkg() {
  command -v "$1" >/dev/null 2>&1 && return 0
  [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] && return 0
  [ "$(id -u)" = 0 ] || die "$1 is missing; install the '$2' package (as root: apt-get install $2)"
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null \
    || die "could not install $2"
}

# wait_for SECONDS COMMAND...: retry COMMAND every 0.5 s until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until eval "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
