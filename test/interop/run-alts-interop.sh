#!/bin/sh
# Interoperability of hush's ALTS records with gRPC's own Go record code (grpc-go
# credentials/alts/internal/conn, Debian golang-google-grpc-dev), both ways, both ALTS
# record protocols, across the 2^16-record rekey boundary, plus the failures that must
# be failures. Prints TAP.
#
# The hush ends: test/interop/record-peer (the record layer alone over a plain socket:
# these bytes are exactly what hush_record_seal made and hush_record_open accepted) and
# examples/altsrp-echo (the same records through hush_conn and libevent). The Go end:
# test/interop/go/hushpeer, built here. Every end prints
#   RESULT sent_bytes=N sent_sha256=HEX recv_bytes=N recv_sha256=HEX
# and record-peer also "RECORDS sealed=N opened=N", which shows the rekey was crossed.
set -u
: "${HUSH_BUILDDIR:?}" "${HUSH_SRCDIR:?}"
GOSRC=${GRPC_GO_SRC:-/usr/share/gocode}
GRPC=$GOSRC/src/google.golang.org/grpc
if ! command -v go >/dev/null 2>&1 || [ ! -d "$GRPC/credentials/alts/internal/conn" ]; then
	echo "1..0 # SKIP go or golang-google-grpc-dev not installed"
	exit 0
fi
RPEER=$HUSH_BUILDDIR/test/interop/record-peer
ECHO=$HUSH_BUILDDIR/examples/altsrp-echo
WORK=$HUSH_BUILDDIR/test/interop/work
mkdir -p "$WORK"
GOPEER=$WORK/hushpeer
MAIN_GO=$HUSH_SRCDIR/test/interop/go/hushpeer/main.go

# The helpers, and the build of the Go peer inside grpc-go's tree (once, and again only
# when main.go changes).
. "$HUSH_SRCDIR/test/interop/interop-lib.sh"
build_peer_or_bail hushpeer "$MAIN_GO" "$GOPEER" "$WORK"

rand_hex() { od -An -tx1 -v -N"$1" /dev/urandom | tr -d ' \n'; }
KEY44=$(rand_hex 44)
OTHER44=$(rand_hex 44)
KEY16=$(rand_hex 16)
D3=$WORK/data-3m
D8=$WORK/data-8m
head -c 3000000 /dev/urandom >"$D3"
head -c 8388608 /dev/urandom >"$D8"
REKEY=ALTSRP_GCM_AES128_REKEY
AES=ALTSRP_GCM_AES128

HAVE_ECHO=0
[ -x "$ECHO" ] && HAVE_ECHO=1
echo "1..$((20 + 7 * HAVE_ECHO))"

# records_ok OUTFILE MIN: record-peer's RECORDS line shows at least MIN records sealed and
# MIN opened (MIN 0: no line needed).
records_ok() {
	[ "$2" -eq 0 ] && return 0
	line=$(grep '^RECORDS ' "$WORK/$1") || return 1
	sealed=$(echo "$line" | sed 's/.*sealed=\([0-9]*\).*/\1/')
	opened=$(echo "$line" | sed 's/.*opened=\([0-9]*\).*/\1/')
	[ "$sealed" -ge "$2" ] && [ "$opened" -ge "$2" ]
}

# exchange NAME FILE HUSHOUT MINREC CLIENT...: the client sends FILE to the echo server
# started before. Both ends must exit 0 and report exactly FILE's size and checksum
# (from sha256sum) sent and received, and the hush end (HUSHOUT: client.out or
# server.out) at least MINREC records each way.
exchange() {
	name=$1 file=$2 hushout=$3 minrec=$4
	shift 4
	size=$(wc -c <"$file" | tr -d ' ')
	sum=$(sha256sum "$file" | cut -d' ' -f1)
	run_client "$@" --send "$file"
	want="RESULT sent_bytes=$size sent_sha256=$sum recv_bytes=$size recv_sha256=$sum"
	if [ $CRC -eq 0 ] && [ $SRC -eq 0 ] && grep -qx "$want" "$WORK/client.out" &&
		grep -qx "$want" "$WORK/server.out" && records_ok "$hushout" "$minrec"; then
		ok "$name"
	else
		notok "$name (client exit $CRC, server exit $SRC)"
	fi
}

R=65537 # more records than one key covers: the first rekey is crossed

# -- grpc-go against itself: the peer is sound before hush is judged by it.
start_server "$GOPEER" --rp $REKEY --key "$KEY44" --echo
exchange "grpc-go self-check: REKEY, 75,000 40-byte records each way" "$D3" - 0 \
	"$GOPEER" --rp $REKEY --key "$KEY44" --chunk 40

# -- hush's record layer (record-peer) against grpc-go.
# 3,000,000 bytes in 40-byte records (--frame 64, or --chunk 40 in Go) is 75,000
# records; each echo end sends one record back per record, so both directions cross
# record 65536, the first rekey (and the counter's carry into byte 2).
start_server "$GOPEER" --rp $REKEY --key "$KEY44" --echo
exchange "record-peer REKEY: hush client seals 75,000 records -> grpc-go echo, rekey crossed both ways" \
	"$D3" client.out $R "$RPEER" --rp $REKEY --key "$KEY44" --frame 64

start_server "$RPEER" --rp $REKEY --key "$KEY44" --echo
exchange "record-peer REKEY: grpc-go client seals 75,000 records -> hush echo, rekey crossed both ways" \
	"$D3" server.out $R "$GOPEER" --rp $REKEY --key "$KEY44" --chunk 40

start_server "$GOPEER" --rp $REKEY --key "$KEY44" --echo
exchange "record-peer REKEY: hush client, 8 MiB in hush's default 16 KiB frames -> grpc-go echo" \
	"$D8" client.out 0 "$RPEER" --rp $REKEY --key "$KEY44"

start_server "$RPEER" --rp $REKEY --key "$KEY44" --echo
exchange "record-peer REKEY: grpc-go client, 8 MiB in grpc-go's 4 KiB frames -> hush echo" \
	"$D8" server.out 0 "$GOPEER" --rp $REKEY --key "$KEY44"

start_server "$GOPEER" --rp $AES --key "$KEY16" --echo
exchange "record-peer AES128: hush client seals 75,000 records -> grpc-go echo" \
	"$D3" client.out $R "$RPEER" --rp $AES --key "$KEY16" --frame 64

start_server "$RPEER" --rp $AES --key "$KEY16" --echo
exchange "record-peer AES128: grpc-go client seals 75,000 records -> hush echo" \
	"$D3" server.out $R "$GOPEER" --rp $AES --key "$KEY16" --chunk 40

start_server "$RPEER" --rp $REKEY --key "$KEY44" --echo
exchange "record-peer REKEY: grpc-go client, mixed Write sizes (1..4072 and split) -> hush echo" \
	"$D3" server.out 0 "$GOPEER" --rp $REKEY --key "$KEY44" --chunk 4099

# The receive limits agree: LENGTH = 1 MiB is grpc-go's largest, one more it refuses.
start_server "$GOPEER" --rp $REKEY --key "$KEY44" --echo
exchange "record-peer REKEY: hush frames of LENGTH 1048576 (grpc-go's limit) accepted" \
	"$D3" client.out 0 "$RPEER" --rp $REKEY --key "$KEY44" --frame 1048580

start_server "$GOPEER" --rp $REKEY --key "$KEY44" --echo
run_client "$RPEER" --rp $REKEY --key "$KEY44" --frame 1048581 --send "$D3"
refused "record-peer REKEY: hush frame of LENGTH 1048577 refused by grpc-go (limit 1 MiB)" \
	server.err "larger than the limit"

# -- Failures: each must be one, on both ends, with hush naming it.
start_server "$GOPEER" --rp $REKEY --key "$OTHER44" --echo
run_client "$RPEER" --rp $REKEY --key "$KEY44" --send "$D3"
refused "record-peer wrong key, hush sends: grpc-go fails authentication, hush fails" \
	server.err "message authentication failed"

start_server "$GOPEER" --rp $REKEY --key "$OTHER44" --send "$D3"
run_client "$RPEER" --rp $REKEY --key "$KEY44"
refused "record-peer wrong key, grpc-go sends: hush client fails with EAUTH" client.err "open: EAUTH"

start_server "$RPEER" --rp $REKEY --key "$OTHER44" --echo
run_client "$GOPEER" --rp $REKEY --key "$KEY44" --send "$D3"
refused "record-peer wrong key, grpc-go client sends: hush server fails with EAUTH" \
	server.err "open: EAUTH"

start_server "$RPEER" --rp $AES --key "$KEY16" --echo
run_client "$GOPEER" --rp $AES --key "$(rand_hex 16)" --send "$D3"
refused "record-peer AES128 wrong key: hush server fails with EAUTH" server.err "open: EAUTH"

start_server "$RPEER" --rp $REKEY --key "$KEY44" --echo
run_client "$GOPEER" --rp $REKEY --key "$KEY44" --side server --send "$D3"
refused "record-peer both ends server side: hush fails with EAUTH" server.err "open: EAUTH"

start_server "$GOPEER" --rp $REKEY --key "$KEY44" --side client --send "$D3"
run_client "$RPEER" --rp $REKEY --key "$KEY44"
refused "record-peer both ends client side: hush fails with EAUTH" client.err "open: EAUTH"

start_server "$RPEER" --rp $REKEY --key "$KEY44" --echo
run_client "$GOPEER" --rp $REKEY --key "$KEY44" --send "$D3" --cut 10000
if [ $SRC -eq 1 ] && grep -q "recv: ETRUNCATED" "$WORK/server.err" &&
	grep -q "1808 bytes of an incomplete record" "$WORK/server.err"; then
	# Two whole 4096-byte records (8192 bytes) opened, then EOF 1808 bytes into the
	# third. grpc-go's own conn would have called this a clean io.EOF (spec section 7).
	ok "record-peer: grpc-go stream cut 1808 bytes into a record: hush reports ETRUNCATED"
else
	notok "record-peer: stream cut inside a record (client exit $CRC, server exit $SRC)"
fi

# Protocol mismatch: same 16 bytes given to both, one end rekeying. Key sizes differ,
# so it is the 44-byte key's first 16 bytes against AES128 with those bytes.
start_server "$RPEER" --rp $AES --key "$(echo "$KEY44" | cut -c1-32)" --echo
run_client "$GOPEER" --rp $REKEY --key "$KEY44" --send "$D3"
refused "record-peer AES128 vs grpc-go REKEY with the same key bytes: hush fails with EAUTH" \
	server.err "open: EAUTH"

start_server "$GOPEER" --rp $REKEY --key "$KEY44" --echo
run_client "$RPEER" --rp $REKEY --key "$KEY44" --send "$D3" --frame 64 --side server
refused "record-peer both ends server side, hush sends: grpc-go fails authentication" \
	server.err "message authentication failed"

# Go's own counterpart of the EAUTH cases, so both sides are seen to refuse.
start_server "$GOPEER" --rp $AES --key "$KEY16" --echo
run_client "$RPEER" --rp $AES --key "$(rand_hex 16)" --send "$D3"
refused "record-peer AES128 wrong key, hush sends: grpc-go fails authentication, hush fails" \
	server.err "message authentication failed"

# -- The same records through hush's transport (hush_conn over libevent).
if [ $HAVE_ECHO -eq 1 ]; then
	start_server "$GOPEER" --rp $REKEY --key "$KEY44" --echo
	exchange "altsrp-echo REKEY: hush client (75,000 records) -> grpc-go echo, rekey crossed both ways" \
		"$D3" - 0 "$ECHO" --rp $REKEY --key "$KEY44" --frame 64

	start_server "$ECHO" --rp $REKEY --key "$KEY44" --echo --frame 64
	exchange "altsrp-echo REKEY: grpc-go client (75,000 records) -> hush echo, rekey crossed both ways" \
		"$D3" - 0 "$GOPEER" --rp $REKEY --key "$KEY44" --chunk 40

	start_server "$GOPEER" --rp $REKEY --key "$KEY44" --echo
	exchange "altsrp-echo REKEY: hush client, 8 MiB in default 16 KiB frames -> grpc-go echo" \
		"$D8" - 0 "$ECHO" --rp $REKEY --key "$KEY44"

	start_server "$ECHO" --rp $REKEY --key "$KEY44" --echo
	exchange "altsrp-echo REKEY: grpc-go client, 8 MiB in 4 KiB frames -> hush echo" \
		"$D8" - 0 "$GOPEER" --rp $REKEY --key "$KEY44"

	start_server "$GOPEER" --rp $AES --key "$KEY16" --echo
	exchange "altsrp-echo AES128: hush client -> grpc-go echo" \
		"$D3" - 0 "$ECHO" --rp $AES --key "$KEY16" --frame 1024

	start_server "$ECHO" --rp $AES --key "$KEY16" --echo
	exchange "altsrp-echo AES128: grpc-go client -> hush echo" \
		"$D3" - 0 "$GOPEER" --rp $AES --key "$KEY16" --chunk 1000

	start_server "$ECHO" --rp $REKEY --key "$OTHER44" --echo
	run_client "$GOPEER" --rp $REKEY --key "$KEY44" --send "$D3"
	if [ $SRC -ne 0 ] && grep -q EAUTH "$WORK/server.err"; then
		ok "altsrp-echo wrong key, grpc-go sends: hush fails with EAUTH"
	else
		notok "altsrp-echo wrong key, grpc-go sends (client exit $CRC, server exit $SRC)"
	fi
fi
