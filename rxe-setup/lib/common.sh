# rxe-setup/lib/common.sh — helpers sourced by every rxe-setup script: paths,
# logging and a private apt configuration that never touches /etc/apt.
# shellcheck shell=bash

# Directory of rxe-setup/ and of the repository, derived from this file.
RXE_SETUP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$RXE_SETUP_DIR/.." && pwd)

# Kernel, initramfs and apt lists live outside git; run logs under build/.
P2PTGT_VM_CACHE=${P2PTGT_VM_CACHE:-/var/cache/p2ptgt-vm}
P2PTGT_VM_BUILD=${P2PTGT_VM_BUILD:-$REPO_DIR/build/vm}

# Print a message prefixed with the script name, on stderr.
log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

# Print an error and exit 1.
die() { log "error: $*"; exit 1; }

# Fail unless running as root.
need_root() { [[ $(id -u) == 0 ]] || die "must run as root"; }

# Set APT_OPTS for a private apt config named $1 with sources lines $2...;
# lists, archives and the sources file all live in the cache directory.
private_apt_init() {
    local name=$1; shift
    local dir=$P2PTGT_VM_CACHE/apt/$name
    mkdir -p "$dir/parts" "$dir/lists/partial" "$dir/archives/partial"
    printf '%s\n' "$@" > "$dir/sources.list.new"
    if ! cmp -s "$dir/sources.list.new" "$dir/sources.list" 2>/dev/null; then
        mv "$dir/sources.list.new" "$dir/sources.list"
        rm -f "$dir/updated"
    else
        rm -f "$dir/sources.list.new"
    fi
    APT_DIR=$dir
    APT_OPTS=(-o "Dir::Etc::SourceList=$dir/sources.list"
              -o "Dir::Etc::SourceParts=$dir/parts"
              -o "Dir::State::Lists=$dir/lists"
              -o "Dir::Cache::archives=$dir/archives"
              -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
              -o "APT::Get::List-Cleanup=false"
              -o "APT::Sandbox::User=root")
}

# Run `apt-get update` on the private config unless done in the last day.
private_apt_update() {
    local stamp=$APT_DIR/updated
    if [[ -z $(find "$stamp" -mmin -1440 2>/dev/null) ]]; then
        log "updating private apt lists in $APT_DIR"
        apt-get "${APT_OPTS[@]}" -q update >&2 && touch "$stamp"
    fi
}

# One deb line for suite $1 of the Debian archive.
debian_source_line() {
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\n' "$1"
}
