#!/usr/bin/env bash
# Fetch the real tools the golden template tests validate rendered files with.
#
#   tests/golden/fetch-tools.sh            # containerd 1.6 (this machine), 1.7 (trixie), 2.x (sid), etcd
#   KPROV_TOOLS_SUITES="sid" tests/golden/fetch-tools.sh
#
# - containerd 1.6 is installed on this machine from its own apt sources (policy-rc.d keeps the
#   service from starting).
# - containerd from other Debian suites is downloaded with a PRIVATE apt configuration (the
#   machine's sources are never touched) and unpacked under $KPROV_TOOLS_DIR/containerd-<suite>/.
#   Its binary runs through that suite's own ld.so + libc when the machine's libc is too old.
# - etcd-server from the machine's own suite, unpacked under $KPROV_TOOLS_DIR/etcd/ (with the lab
#   bundle's kube-apiserver it backs a throwaway loopback API server that validates the manifests).
# - The Debian mirror is read from the machine's apt configuration at run time.
# Idempotent: a suite already unpacked is kept unless KPROV_TOOLS_REFRESH=1.
set -euo pipefail

TOOLS_DIR=${KPROV_TOOLS_DIR:-/var/cache/kprov/tools}
SUITES=${KPROV_TOOLS_SUITES:-"trixie sid"}
KEYRING=${KPROV_TOOLS_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

log() { printf 'fetch-tools: %s\n' "$*" >&2; }

debian_mirror() {
    local uri=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        uri=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources \
              | grep -v -- '-security' | grep -v -- '-ports' | head -n1 || true)
    fi
    if [[ -z $uri && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2} $1 == "deb" && $2 ~ /^\[/ {print $3}' \
              /etc/apt/sources.list | grep -v -- '-security' | head -n1 || true)
    fi
    [[ -n $uri ]] || { log "cannot find a Debian mirror in the machine's apt configuration"; exit 1; }
    printf '%s\n' "${uri%/}"
}

install_local_containerd() {
    if command -v containerd >/dev/null; then
        log "containerd already installed: $(containerd --version)"
        return
    fi
    log "installing Debian's containerd on this machine"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 containerd >/dev/null
}

# fetch_suite SUITE: download containerd (+ libc6 for its loader) from SUITE and unpack it.
fetch_suite() {
    local suite=$1 mirror=$2
    local dest="$TOOLS_DIR/containerd-$suite" apt="$TOOLS_DIR/apt-$suite"
    if [[ -x $dest/containerd && -x $dest/ctr && ${KPROV_TOOLS_REFRESH:-0} != 1 ]]; then
        log "$suite: already present: $("$dest/containerd" --version 2>/dev/null || echo '?')"
        return
    fi
    local opts
    mapfile -t opts < <(private_apt_opts "$suite" "$mirror")
    log "$suite: apt-get update (private lists in $apt)"
    apt-get "${opts[@]}" update >/dev/null
    rm -f "$apt"/debs/*.deb
    (cd "$apt/debs" && apt-get "${opts[@]}" download containerd libc6 >/dev/null)
    rm -rf "$dest.new" && mkdir -p "$dest.new/root"
    local deb
    for deb in "$apt"/debs/*.deb; do dpkg-deb -x "$deb" "$dest.new/root"; done
    local bin="$dest.new/root/usr/bin/containerd"
    [[ -x $bin ]] || { log "$suite: no usr/bin/containerd in the package"; exit 1; }
    # Run with the suite's own loader and libc: a newer suite's binary may need a newer glibc.
    local ldso
    ldso=$(find "$dest.new/root" -name 'ld-linux-x86-64.so.2' -print -quit)
    local libdir
    libdir=$(dirname "$(find "$dest.new/root" -name 'libc.so.6' -print -quit)")
    local tool
    for tool in containerd ctr; do
        cat > "$dest.new/$tool" <<WRAP
#!/bin/sh
# $tool from Debian $suite, run through its own loader and libc (made by tests/golden/fetch-tools.sh)
exec "$dest/root/${ldso#"$dest.new/root/"}" --library-path "$dest/root/${libdir#"$dest.new/root/"}" "$dest/root/usr/bin/$tool" "\$@"
WRAP
        chmod +x "$dest.new/$tool"
    done
    dpkg-deb -f "$apt"/debs/containerd_*.deb Version > "$dest.new/VERSION"
    rm -rf "$dest" && mv "$dest.new" "$dest"
    log "$suite: $("$dest/containerd" --version)"
}

# private_apt SUITE: print the apt-get options of a private apt configuration for SUITE (lists updated).
private_apt_opts() {
    local suite=$1 mirror=$2 apt="$TOOLS_DIR/apt-$1"
    mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/debs"
    printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$mirror" "$suite" > "$apt/sources.list"
    printf '%s\n' -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache::archives=$apt/archives" \
        -o "Dir::Cache::pkgcache=$apt/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$apt/srcpkgcache.bin" \
        -o APT::Sandbox::User=root -q
}

fetch_etcd() {
    local mirror=$1 suite dest="$TOOLS_DIR/etcd"
    if [[ -x $dest/etcd && ${KPROV_TOOLS_REFRESH:-0} != 1 ]]; then
        log "etcd: already present: $("$dest/etcd" --version 2>/dev/null | head -n1)"
        return
    fi
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    local apt="$TOOLS_DIR/apt-$suite" opts
    mapfile -t opts < <(private_apt_opts "$suite" "$mirror")
    apt-get "${opts[@]}" update >/dev/null
    rm -f "$apt"/debs/*.deb
    (cd "$apt/debs" && apt-get "${opts[@]}" download etcd-server >/dev/null)
    rm -rf "$dest.new" && mkdir -p "$dest.new/root"
    dpkg-deb -x "$apt"/debs/etcd-server_*.deb "$dest.new/root"
    ln -s root/usr/bin/etcd "$dest.new/etcd"
    rm -rf "$dest" && mv "$dest.new" "$dest"
    log "etcd: $("$dest/etcd" --version | head -n1)"
}

main() {
    mkdir -p "$TOOLS_DIR"
    install_local_containerd
    local mirror suite
    mirror=$(debian_mirror)
    for suite in $SUITES; do fetch_suite "$suite" "$mirror"; done
    fetch_etcd "$mirror"
    # Built by scripts/lab-bundle (not fetched here): kubeadm validates v1beta2 configs, kube-apiserver the manifests.
    local b
    for b in kubeadm kube-apiserver; do
        log "$b (lab bundle): $(ls /var/cache/kprov/lab-bundle/bin/$b 2>/dev/null || echo 'absent: those checks skip')"
    done
}

main "$@"
