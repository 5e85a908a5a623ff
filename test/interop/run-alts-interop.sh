#!/bin/sh
# Interoperability of hush's ALTS records with gRPC's own Go record code
# (grpc-go credentials/alts/internal/conn, Debian golang-google-grpc-dev), both ways,
# both ALTS record protocols, across the 2^16-record rekey boundary. Prints TAP.
set -u
: "${HUSH_BUILDDIR:?}" "${HUSH_SRCDIR:?}"
GRPC=${GRPC_GO_SRC:-/usr/share/gocode}/src/google.golang.org/grpc
if ! command -v go >/dev/null 2>&1 || [ ! -d "$GRPC/credentials/alts/internal/conn" ]; then
	echo "1..0 # SKIP go or golang-google-grpc-dev not installed"
	exit 0
fi
ECHO=$HUSH_BUILDDIR/examples/altsrp-echo
WORK=$HUSH_BUILDDIR/test/interop/work
mkdir -p "$WORK"
PEER=$WORK/hushpeer

# Go's internal-package rule: the peer must live inside the grpc tree, so build it in a
# private GOPATH holding a copy of that tree (4 MB), in GOPATH mode, offline.
if [ ! -x "$PEER" ] || [ "$HUSH_SRCDIR/test/interop/go/hushpeer/main.go" -nt "$PEER" ]; then
	GP=$WORK/gopath
	rm -rf "$GP"
	mkdir -p "$GP/src/google.golang.org"
	cp -r "$GRPC" "$GP/src/google.golang.org/grpc"
	chmod -R u+w "$GP"
	mkdir -p "$GP/src/google.golang.org/grpc/credentials/alts/hushpeer"
	cp "$HUSH_SRCDIR/test/interop/go/hushpeer/main.go" "$GP/src/google.golang.org/grpc/credentials/alts/hushpeer/"
	if ! GOPATH="$GP:${GRPC_GO_SRC:-/usr/share/gocode}" GO111MODULE=off GOFLAGS= GOPROXY=off \
		GOCACHE="$WORK/gocache" go build -o "$PEER" google.golang.org/grpc/credentials/alts/hushpeer \
		>"$WORK/go-build.log" 2>&1; then
		echo "1..1"
		echo "not ok 1 - build the grpc-go peer"
		sed 's/^/# /' "$WORK/go-build.log"
		exit 0
	fi
fi

KEY44=$(od -An -tx1 -v -N44 /dev/urandom | tr -d ' \n')
KEY16=$(od -An -tx1 -v -N16 /dev/urandom | tr -d ' \n')
OTHER44=$(od -An -tx1 -v -N44 /dev/urandom | tr -d ' \n')
head -c 3000000 /dev/urandom >"$WORK/data-3m"
head -c 8388608 /dev/urandom >"$WORK/data-8m"
SUM3=$(sha256sum "$WORK/data-3m" | cut -d' ' -f1)
SUM8=$(sha256sum "$WORK/data-8m" | cut -d' ' -f1)

n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; shift; for f in "$@"; do [ -f "$f" ] && sed 's/^/# /' "$f"; done; }

# start_server PROGRAM ARGS...: runs an echo server in the background; sets ADDR, SPID.
start_server() {
	rm -f "$WORK/ready"
	timeout 120 "$@" --listen 127.0.0.1:0 --ready "$WORK/ready" >"$WORK/server.out" 2>"$WORK/server.err" &
	SPID=$!
	i=0
	while [ ! -s "$WORK/ready" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
	ADDR=$(cat "$WORK/ready" 2>/dev/null)
}

# exchange NAME SUM CLIENT... : the client sends a file to the echo server; both RESULT
# lines must show the file's checksum both ways.
exchange() {
	name=$1 sum=$2
	shift 2
	timeout 120 "$@" --connect "$ADDR" >"$WORK/client.out" 2>"$WORK/client.err"
	crc=$?
	wait $SPID
	src=$?
	want="sent_sha256=$sum recv_bytes=[0-9]* recv_sha256=$sum"
	if [ $crc -eq 0 ] && [ $src -eq 0 ] && grep -q "$want" "$WORK/client.out" &&
		grep -q "$want" "$WORK/server.out"; then
		ok "$name"
	else
		notok "$name (client exit $crc, server exit $src)" "$WORK/client.out" "$WORK/client.err" \
			"$WORK/server.out" "$WORK/server.err"
	fi
}

echo "1..9"

# 3,000,000 bytes in 40-byte records is 75,000 records each way: past the first rekey.
start_server "$PEER" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --echo
exchange "REKEY: hush client (75k records) -> grpc-go echo server, rekey crossed both ways" "$SUM3" \
	"$ECHO" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --send "$WORK/data-3m" --frame 64

start_server "$ECHO" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --echo --frame 64
exchange "REKEY: grpc-go client (75k records) -> hush echo server, rekey crossed both ways" "$SUM3" \
	"$PEER" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --send "$WORK/data-3m" --chunk 40

start_server "$PEER" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --echo
exchange "REKEY: hush client, 8 MiB in default 16 KiB records -> grpc-go echo server" "$SUM8" \
	"$ECHO" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --send "$WORK/data-8m"

start_server "$ECHO" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --echo
exchange "REKEY: grpc-go client, 8 MiB in grpc-go's 4 KiB records -> hush echo server" "$SUM8" \
	"$PEER" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --send "$WORK/data-8m"

start_server "$PEER" --rp ALTSRP_GCM_AES128 --key "$KEY16" --echo
exchange "AES128: hush client -> grpc-go echo server" "$SUM3" \
	"$ECHO" --rp ALTSRP_GCM_AES128 --key "$KEY16" --send "$WORK/data-3m" --frame 1024

start_server "$ECHO" --rp ALTSRP_GCM_AES128 --key "$KEY16" --echo
exchange "AES128: grpc-go client -> hush echo server" "$SUM3" \
	"$PEER" --rp ALTSRP_GCM_AES128 --key "$KEY16" --send "$WORK/data-3m" --chunk 1000

# Negative: a different key, and the same side on both ends, fail authentication.
start_server "$PEER" --rp ALTSRP_GCM_AES128_REKEY --key "$OTHER44" --echo
timeout 60 "$ECHO" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --send "$WORK/data-3m" \
	--connect "$ADDR" >"$WORK/client.out" 2>"$WORK/client.err"
crc=$?
wait $SPID
src=$?
if [ $crc -ne 0 ] && [ $src -ne 0 ] && grep -q "authentication failed" "$WORK/server.err"; then
	ok "wrong key, hush sends: grpc-go fails authentication, hush fails too"
else
	notok "wrong key, hush sends (client exit $crc, server exit $src)" "$WORK/client.err" "$WORK/server.err"
fi

start_server "$ECHO" --rp ALTSRP_GCM_AES128_REKEY --key "$OTHER44" --echo
timeout 60 "$PEER" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --send "$WORK/data-3m" \
	--connect "$ADDR" >"$WORK/client.out" 2>"$WORK/client.err"
crc=$?
wait $SPID
src=$?
if [ $src -ne 0 ] && grep -q EAUTH "$WORK/server.err"; then
	ok "wrong key, grpc-go sends: hush fails authentication (EAUTH)"
else
	notok "wrong key, grpc-go sends (client exit $crc, server exit $src)" "$WORK/client.err" "$WORK/server.err"
fi

start_server "$ECHO" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --echo
timeout 60 "$PEER" --rp ALTSRP_GCM_AES128_REKEY --key "$KEY44" --side server \
	--send "$WORK/data-3m" --connect "$ADDR" >"$WORK/client.out" 2>"$WORK/client.err"
crc=$?
wait $SPID
src=$?
if [ $src -ne 0 ] && grep -q EAUTH "$WORK/server.err"; then
	ok "same side on both ends: hush fails authentication (EAUTH)"
else
	notok "same side (client exit $crc, server exit $src)" "$WORK/client.err" "$WORK/server.err"
fi
