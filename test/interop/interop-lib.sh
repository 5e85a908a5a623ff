# Shared by run-alts-interop.sh and run-noise-interop.sh, which source it: building a Go
# peer inside grpc-go's source tree, and the TAP and process helpers. The caller sets
# GOSRC (the system GOPATH, /usr/share/gocode), GRPC ($GOSRC/src/google.golang.org/grpc)
# and WORK, a directory of its own: under `make -j check` the scripts run at once.

# build_grpc_peer NAME MAIN_GO OUT BUILDDIR: builds MAIN_GO as the package
# google.golang.org/grpc/credentials/alts/NAME into the program OUT, offline, in GOPATH
# mode, with its GOPATH and build cache under BUILDDIR.
#
# Go's internal-package rule (checked on directories in GOPATH mode) only lets code under
# .../grpc/credentials/alts/ import .../alts/internal/..., and the first GOPATH entry
# holding a directory for an import path wins. So the private GOPATH gets a grpc tree
# made of symlinks into the system one, with real directories only on the path down to
# our package: grpc/ and grpc/credentials/ and grpc/credentials/alts/ link every entry but
# the next one down, and alts/NAME/ holds main.go. Everything else (protobuf,
# golang.org/x/..., github.com/flynn/noise) comes from the system GOPATH.
build_grpc_peer() {
	gp=$4/gopath-$1
	rm -rf "$gp"
	t=$gp/src/google.golang.org/grpc
	mkdir -p "$t/credentials/alts/$1" || return 1
	for e in "$GRPC"/*; do
		[ "${e##*/}" = credentials ] || ln -s "$e" "$t/${e##*/}" || return 1
	done
	for e in "$GRPC"/credentials/*; do
		[ "${e##*/}" = alts ] || ln -s "$e" "$t/credentials/${e##*/}" || return 1
	done
	for e in "$GRPC"/credentials/alts/*; do
		ln -s "$e" "$t/credentials/alts/${e##*/}" || return 1
	done
	cp "$2" "$t/credentials/alts/$1/main.go" || return 1
	(cd "$gp" && env GOPATH="$gp:$GOSRC" GO111MODULE=off GOFLAGS= GOPROXY=off GOENV=off \
		CGO_ENABLED=0 GOCACHE="$4/gocache" \
		go build -o "$3" "google.golang.org/grpc/credentials/alts/$1")
}

# build_peer_or_bail NAME MAIN_GO OUT BUILDDIR: builds (again only when MAIN_GO changed);
# on failure prints a one-test plan that fails with the build log, and exits.
build_peer_or_bail() {
	if [ ! -x "$3" ] || [ "$2" -nt "$3" ]; then
		mkdir -p "$4"
		if ! build_grpc_peer "$@" >"$4/go-build-$1.log" 2>&1; then
			echo "1..1"
			echo "not ok 1 - build the Go peer $1"
			sed 's/^/# /' "$4/go-build-$1.log"
			exit 0
		fi
	fi
}

n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() {
	n=$((n + 1))
	echo "not ok $n - $1"
	for f in client.out client.err server.out server.err; do
		[ -s "$WORK/$f" ] && sed "s/^/# $f: /" "$WORK/$f"
	done
	return 0
}

# start_server PROGRAM ARGS...: an echo or send server in the background on a free
# loopback port (port 0; the server writes the one it got to its --ready file). Sets
# ADDR and SPID.
start_server() {
	rm -f "$WORK/ready" "$WORK/server.out" "$WORK/server.err" "$WORK/client.out" \
		"$WORK/client.err"
	timeout 60 "$@" --listen 127.0.0.1:0 --ready "$WORK/ready" \
		>"$WORK/server.out" 2>"$WORK/server.err" &
	SPID=$!
	i=0
	while [ ! -s "$WORK/ready" ] && [ $i -lt 200 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	ADDR=$(cat "$WORK/ready" 2>/dev/null)
}

# run_client PROGRAM ARGS...: connects to ADDR, then waits for the server. Sets CRC, SRC.
run_client() {
	timeout 60 "$@" --connect "${ADDR:-127.0.0.1:1}" >"$WORK/client.out" 2>"$WORK/client.err"
	CRC=$?
	wait $SPID
	SRC=$?
}

# refused NAME FILE PATTERN: after run_client, both ends failed (exit 1) and FILE
# (client.err or server.err) matches PATTERN.
refused() {
	if [ $CRC -eq 1 ] && [ $SRC -eq 1 ] && grep -q "$3" "$WORK/$2"; then
		ok "$1"
	else
		notok "$1 (client exit $CRC, server exit $SRC)"
	fi
}
