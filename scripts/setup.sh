#!/bin/sh
# Installs the Debian packages strata needs to build, test and benchmark.
# Idempotent: packages already present are not touched, and apt is not
# consulted at all when nothing is missing.
set -eu

PKGS="build-essential cmake pkg-config git python3
libfuse3-dev liburing-dev fuse3 libcap-dev liblz4-dev libxxhash-dev libarchive-dev
libssl-dev libjansson-dev libcmocka-dev clang libclang-rt-14-dev
fuse-overlayfs bubblewrap attr acl uidmap kmod util-linux procps psmisc
busybox-static zstd umoci skopeo fio gnuplot-nox debootstrap hyperfine
zlib1g-dev podman crun conmon catatonit strace docker-registry passt slirp4netns scdoc
squashfuse squashfs-tools"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "setup: missing Debian packages:$missing" >&2
	echo "setup: run 'make setup' as root (or install them with apt-get) and retry" >&2
	exit 1
fi

echo "setup: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || { echo "setup: apt-get update failed; check the network or the apt sources" >&2; exit 1; }
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
	echo "setup: apt-get install of$missing failed; see the apt output above" >&2
	exit 1
}
