#!/bin/sh
# The seeds' story with strata, on a small image made here from Debian's
# busybox-static: an image is a stack of read-only layers, a container is
# the image plus its own writable layer, many containers share one image,
# commit turns a container's layer into a new image layer, removing a
# container discards its layer and leaves the image as it was.
#
# usage: sh scripts/demo.sh [BUILDDIR]     (run as root; `make demo` does)
# The demo keeps its store in a temporary directory and removes it at the
# end; set STRATA_DEMO_KEEP=1 to keep it for a look around.
set -eu

BUILD=${1:-build}
STRATA=$BUILD/tools/strata
if [ ! -x "$STRATA" ]; then
	echo "demo: $STRATA is not built; run 'make build' first" >&2
	exit 1
fi
STRATA=$(cd "$(dirname "$STRATA")" && pwd)/strata

BUSYBOX=$(dpkg -L busybox-static 2>/dev/null | grep '/bin/busybox$' | head -n 1 || true)
if [ -z "$BUSYBOX" ] || [ ! -x "$BUSYBOX" ]; then
	echo "demo: Debian's busybox-static is not installed; run 'make setup' (or apt-get install busybox-static)" >&2
	exit 1
fi

WORK=$(mktemp -d /tmp/strata-demo.XXXXXX)
cleanup() {
	if [ "${STRATA_DEMO_KEEP:-0}" = 1 ]; then
		echo "demo: store kept in $WORK/store (strata --store $WORK/store images)"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
export STRATA_STORE="$WORK/store"

if [ -t 1 ]; then B=$(printf '\033[1m'); N=$(printf '\033[0m'); else B=; N=; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
say() { printf '%s\n' "$*"; }
run() { printf '%s$ strata %s%s\n' "$B" "$*" "$N"; "$STRATA" "$@"; }

step "A root filesystem from Debian's busybox-static ($BUSYBOX)"
R=$WORK/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/root" "$R/srv" "$R/dev" "$R/proc" "$R/sys"
chmod 1777 "$R/tmp"
cp "$BUSYBOX" "$R/bin/busybox"
for applet in $("$BUSYBOX" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$R/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"
echo 'Welcome to strata (written in layer 1)' > "$R/etc/motd"
echo 'strata demo image, layer 1' > "$R/etc/issue"
say "$(ls "$R/bin" | wc -l) programs in /bin, a few files in /etc"

step "Layer 1: import the directory as an image"
run import "rootfs:$R" demo-base:1

step "Layer 2: change it in a container, then commit (the deletion becomes a whiteout)"
run run --name builder demo-base:1 -- sh -c \
	'rm /etc/issue; echo "Welcome to strata (layer 2 replaced this)" > /etc/motd; echo "<h1>hello</h1>" > /srv/index.html'
run diff builder
run commit builder demo:latest --message "layer 2: new motd, /srv/index.html, /etc/issue deleted"
run rm builder
run rmi demo-base:1
run images
run history demo:latest
run layers demo:latest
BASE_LAYERS=$("$STRATA" inspect demo:latest | grep '"diff_id"')

step "Two containers from one image, each writing its own layer"
run create --name alice demo:latest -- sh -c 'echo "alice was here" > /srv/alice.txt; rm /srv/index.html; ls /srv'
run create --name bob demo:latest -- sh -c 'echo "bob was here" > /srv/bob.txt; chmod 600 /etc/motd; ls /srv'
say "alice runs (start -a: in the foreground):"
run start -a alice
say "bob runs (he does not see alice's files):"
run start -a bob
run ps -a

step "What each container changed (only its own writable layer is read)"
run diff alice
run diff bob

step "Commit alice into a new tag; the new image is the old layers plus one"
run commit alice demo:alice --message "alice's work"
run history demo:alice
run run --rm demo:alice -- sh -c 'ls /srv; cat /srv/alice.txt'
run diff demo:latest demo:alice

step "The base image is unchanged"
run run --rm demo:latest -- sh -c 'ls /srv; cat /etc/motd'
if [ "$("$STRATA" inspect demo:latest | grep '"diff_id"')" = "$BASE_LAYERS" ]; then
	say "demo:latest has the same layers (DiffIDs) as before the containers ran"
else
	say "demo: the base image's layers changed; this is a bug" >&2
	exit 1
fi

step "Remove a container: its layer goes, the image stays"
run rm bob
run ps -a
run images

step "A container that keeps running: a web server with a published port"
run run -d --name web -p 127.0.0.1:18080:8080 demo:latest -- httpd -f -p 8080 -h /srv
printf '%s$ busybox wget -qO- http://127.0.0.1:18080/%s\n' "$B" "$N"
tries=0
until "$BUSYBOX" wget -qO- http://127.0.0.1:18080/ 2>/dev/null; do
	tries=$((tries + 1))
	if [ "$tries" -gt 100 ]; then
		echo "demo: the web server did not answer on 127.0.0.1:18080" >&2
		"$STRATA" logs web >&2 || true
		exit 1
	fi
	sleep 0.1
done
run ps
run exec web -- sh -c 'echo "exec: $(hostname), pid 1 is $(cat /proc/1/comm)"'
run logs web
run stop web
run ps -a
run rm web

step "An image built from a Containerfile, one layer per step"
mkdir -p "$WORK/ctx/site"
echo '<h1>built by strata build</h1>' > "$WORK/ctx/site/index.html"
cat > "$WORK/ctx/Containerfile" <<'EOF2'
FROM demo:latest
COPY site/ /srv/
RUN echo "built at layer $(ls /srv | wc -l)" > /srv/version.txt
CMD ["cat", "/srv/version.txt"]
EOF2
run build --network none -t demo:built "$WORK/ctx"
run run --rm demo:built
run history demo:built

step "Images leave the machine as OCI (skopeo, podman and umoci read it)"
run export demo:alice "oci:$WORK/oci:alice"
if command -v skopeo >/dev/null 2>&1; then
	printf '%s$ skopeo inspect oci:%s/oci:alice%s\n' "$B" "$WORK" "$N"
	skopeo inspect "oci:$WORK/oci:alice" | grep -A4 '"Layers"'
fi
say ""
say "demo: done"
