#!/usr/bin/env bash
# Makes sure the image debian:bookworm-slim exists locally, for machines that reach no image
# registry. If the engine already has it (pulled from Docker Hub, or built by an earlier run of
# this script), nothing is done. Otherwise a minimal Debian bookworm is built with
# `debootstrap --variant=minbase` (plus ca-certificates) from the apt mirror this machine is
# configured with, apt caches are cleaned out of it, and it is `docker import`ed under that name.
# Unattended and idempotent; needs root (or sudo) for apt-get and debootstrap.
set -euo pipefail

IMAGE="${RANGED_BASE_IMAGE:-debian:bookworm-slim}"
SUITE=bookworm

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE: present, reused"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# The first Debian mirror listed in the machine's apt sources (one-line or deb822 format) that
# serves the suite; deb.debian.org otherwise.
mirror() {
    local f uri=""
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri=$(awk -v s="$SUITE" '$1 == "deb" {
                i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i+1) == s && $i ~ /^https?:\/\//) { print $i; exit } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        # deb822: stanzas separated by blank lines; take URIs of a stanza whose Suites has $SUITE.
        uri=$(awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" } {
                u = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); u = a[2] }
                    if ($i ~ /^Suites:/) { n = split($i, b, /[ \t]+/); for (j = 2; j <= n; j++) if (b[j] == s) ok = 1 }
                }
                if (ok && u ~ /^https?:\/\//) { print u; exit } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    echo "http://deb.debian.org/debian"
}
MIRROR=$(mirror)
echo "base image $IMAGE: missing, building it with debootstrap from $MIRROR"

if ! command -v debootstrap >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 \
        || { echo "ERROR: apt-get install debootstrap failed" >&2; exit 1; }
fi

ROOTFS=$(mktemp -d /tmp/ranged-rootfs.XXXXXX)
cleanup() { $SUDO rm -rf "$ROOTFS"; }
trap cleanup EXIT

$SUDO debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOTFS" "$MIRROR" \
    > "$ROOTFS.log" 2>&1 || { tail -n 40 "$ROOTFS.log"; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"

# What the slim image leaves out or cleans: apt caches and lists, logs, docs and man pages.
$SUDO chroot "$ROOTFS" apt-get clean
$SUDO rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/tmp/* "$ROOTFS"/root/.bash_history
# The apt sources of the image: the mirror it was built from.
echo "deb $MIRROR $SUITE main" | $SUDO tee "$ROOTFS/etc/apt/sources.list" >/dev/null
: | $SUDO tee "$ROOTFS/etc/resolv.conf" "$ROOTFS/etc/hostname" >/dev/null

$SUDO tar --numeric-owner -C "$ROOTFS" -c . \
    | docker import --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --message "debootstrap --variant=minbase $SUITE from $MIRROR" - "$IMAGE" >/dev/null
echo "base image $IMAGE: built ($(docker image inspect --format '{{.Size}}' "$IMAGE") bytes)"
