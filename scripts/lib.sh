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

# need_runsc: gVisor with the systrap platform when the distribution offers it.
# Debian 12's own runsc (20221219) has only the ptrace platform, where every system call
# of the sandboxed program costs a ptrace round trip (~20 µs); its backport (20240729)
# has systrap (a few µs), which halves a lock-step round trip and a cold start
# (docs/benchmarks.md). The backports suite is added from the machine's own Debian
# mirror entry; elsewhere the distribution's runsc is used as it is.
need_runsc() {
  if command -v runsc >/dev/null 2>&1 && runsc flags 2>&1 | grep -q systrap; then
    return 0
  fi
  local codename="" uri=""
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  if [ "$(id -u)" = 0 ] && [ -n "$codename" ]; then
    uri=$(debian_mirror "$codename")
  fi
  if [ -n "$uri" ]; then
    local list=/etc/apt/sources.list.d/pitwall-backports.sources
    if [ ! -f "$list" ]; then
      log "adding $codename-backports (for runsc with the systrap platform)"
      printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: %s\n' \
        "$uri" "$codename" /usr/share/keyrings/debian-archive-keyring.gpg > "$list"
    fi
    if ! apt-get update -qq; then
      log "apt-get update failed with $codename-backports; dropping it"
      rm -f "$list"
    fi
    APT_UPDATED=1
    if [ -f "$list" ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -t "$codename-backports" runsc >/dev/null 2>&1; then
      log "runsc: $(runsc --version 2>&1 | head -1) (systrap)"
      return 0
    fi
    log "runsc from $codename-backports could not be installed; using the distribution's"
  fi
  need_pkg runsc runsc
}

# debian_mirror CODENAME: the URI of the Debian archive this machine already uses for
# CODENAME (deb822 or one-line sources), if any.
debian_mirror() {
  python3 - "$1" <<'PY'
import glob, re, sys
codename = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
        if codename in fields.get("Suites", "").split() and "debian" in fields.get("URIs", ""):
            if "security" not in fields["URIs"]:
                print(fields["URIs"].split()[0]); sys.exit()
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        parts = re.sub(r"\[.*?\]", "", line).split()
        if len(parts) >= 3 and parts[0] == "deb" and parts[2] == codename \
                and "debian" in parts[1] and "security" not in parts[1]:
            print(parts[1]); sys.exit()
PY
}
