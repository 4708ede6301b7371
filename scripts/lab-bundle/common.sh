# Shared helpers for scripts/build-lab-bundle (sourced, not executed).
# Lab/CI aid: everything here builds a *lab* bundle from Debian sources; it is not an upstream release.

log() { printf '[lab-bundle %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

APT_GET=(apt-get -q -o DPkg::Lock::Timeout=600)

# The Debian mirror this machine already uses, read from its own apt config (never hard-coded).
debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas: take the URIs of the first stanza whose Suites are not *-security
    uri=$(awk '
      BEGIN { RS=""; FS="\n" }
      { u=""; s=""
        for (i=1;i<=NF;i++) { if ($i ~ /^URIs:/) u=$i; if ($i ~ /^Suites:/) s=$i }
        if (u != "" && s !~ /-security/) { sub(/^URIs:[ \t]*/, "", u); split(u, a, /[ \t]+/); print a[1]; exit } }' "$f")
    [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
  done
  if [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 !~ /-security/ { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
  fi
  return 1
}

# A private apt configuration (own sources, lists and caches) so the machine's apt state is never touched.
# usage: private_apt_setup DIR "LINE" ["LINE"...]   -> sets PAPT=(apt-get ... options)
private_apt_setup() {
  local dir=$1; shift
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  printf '%s\n' "$@" > "$dir/sources.list.new"
  if ! cmp -s "$dir/sources.list.new" "$dir/sources.list" 2>/dev/null; then
    mv "$dir/sources.list.new" "$dir/sources.list"; rm -f "$dir/updated"
  else
    rm -f "$dir/sources.list.new"
  fi
  PAPT_OPTS=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
             -o "Dir::Cache::archives=$dir/cache/archives" -o APT::Get::List-Cleanup=0)
  if [ ! -f "$dir/updated" ]; then
    apt-get -q "${PAPT_OPTS[@]}" update >&2 || die "apt-get update (private config $dir) failed"
    touch "$dir/updated"
  fi
}
papt_get()   { apt-get -q "${PAPT_OPTS[@]}" "$@"; }
papt_cache() { apt-cache "${PAPT_OPTS[@]}" "$@"; }

# Install Debian packages on this machine only when some are missing (fast no-op when cached).
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing build dependencies: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y --no-install-recommends "${missing[@]}" >&2 && return 0
  "${APT_GET[@]}" update >&2
  DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y --no-install-recommends "${missing[@]}" >&2 \
    || die "could not install: ${missing[*]}"
}
