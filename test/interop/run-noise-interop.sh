#!/bin/sh
# hush's handshake and close signal on the wire, against a peer written again from
# docs/PROTOCOL.md alone (Part II for the handshake, Part I for the records):
# test/interop/go/hushnoise, on github.com/flynn/noise for Noise (Debian
# golang-github-flynn-noise-dev) and grpc-go's own ALTS record code for the records
# (Debian golang-google-grpc-dev). The hush end is examples/hush-echo: a hush_listener
# as the server, hush_conn_start_handshake() as the client. Prints TAP.
#
# For every Noise protocol hush speaks, a 1 MiB random file goes each way through an
# echo: hush-echo server with the Go client, and the Go server with a hush-echo client.
# Neither end names a record protocol, so each derives it from the Noise name (section
# 8): ChaChaPoly handshakes carry HUSHRP_CHACHA20_POLY1305_REKEY records (the Go peer's
# own implementation of section 3.3), AESGCM ones grpc-go's ALTSRP_GCM_AES128_REKEY.
# Then records chosen explicitly with --rp at both ends: ALTSRP_GCM_AES128 (grpc-go's
# non-rekeying protocol) through XX and NNpsk0 handshakes, both roles, and
# ALTSRP_GCM_AES128_REKEY through a ChaChaPoly handshake.
# Both ends must report the file's size and sha256 sent and received, the same handshake
# hash, and the other end's static key (remote_static=- with NNpsk0). Each end requires
# the other's close record, so these also check the close signal both ways. Then the
# failures that must be failures, each named by the end that finds it: a peer key not
# allowed (EPEER), a wrong PSK (EHANDSHAKE), another Noise protocol (EPARAMS at the
# hello), another record protocol (EPARAMS in the parameter block, also when one end
# chooses explicitly what the other's default is not), and a stream ended
# without the close record (ETRUNCATED).
set -u
: "${HUSH_BUILDDIR:?}" "${HUSH_SRCDIR:?}"
GOSRC=${GRPC_GO_SRC:-/usr/share/gocode}
GRPC=$GOSRC/src/google.golang.org/grpc
if ! command -v go >/dev/null 2>&1 || [ ! -d "$GRPC/credentials/alts/internal/conn" ] ||
	[ ! -d "$GOSRC/src/github.com/flynn/noise" ] ||
	[ ! -d "$GOSRC/src/golang.org/x/crypto/hkdf" ]; then
	echo "1..0 # SKIP go, golang-google-grpc-dev or golang-github-flynn-noise-dev not installed"
	exit 0
fi
ECHO=$HUSH_BUILDDIR/examples/hush-echo
KEYGEN=$HUSH_BUILDDIR/tools/hush-keygen
# The Go program and its build cache stay between runs; keys, data and outputs do not.
BUILD=$HUSH_BUILDDIR/test/interop/noise-work
GOPEER=$BUILD/hushnoise
MAIN_GO=$HUSH_SRCDIR/test/interop/go/hushnoise/main.go
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hush-noise-interop.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT

. "$HUSH_SRCDIR/test/interop/interop-lib.sh"
build_peer_or_bail hushnoise "$MAIN_GO" "$GOPEER" "$BUILD"

# Identities: S for the servers, C for the clients, X a stranger nobody allows.
K=$WORK/keys
mkdir "$K" || exit 1
S=$("$KEYGEN" "$K/s") && C=$("$KEYGEN" "$K/c") && X=$("$KEYGEN" "$K/x") &&
	"$KEYGEN" --psk "$K/psk" >/dev/null && "$KEYGEN" --psk "$K/psk2" >/dev/null || {
	echo "1..1"
	echo "not ok 1 - hush-keygen makes the test identities"
	exit 0
}
DATA=$WORK/data-1m
head -c 1048576 /dev/urandom >"$DATA"
SIZE=$(wc -c <"$DATA" | tr -d ' ')
SUM=$(sha256sum "$DATA" | cut -d' ' -f1)

PROTOCOLS="Noise_XX_25519_AESGCM_SHA256 Noise_XX_25519_ChaChaPoly_SHA256
Noise_XXpsk3_25519_AESGCM_SHA256 Noise_XXpsk3_25519_ChaChaPoly_SHA256
Noise_NNpsk0_25519_AESGCM_SHA256 Noise_NNpsk0_25519_ChaChaPoly_SHA256"
echo "1..$((6 * 2 + 3 + 4 + 17))"

# ids PROTOCOL: sets SID and CID, the identity options of the server and the client for
# PROTOCOL (each allowing the other), and SPUB and CPUB, the remote_static each end must
# report about the other.
ids() {
	case $1 in
	*_NNpsk0_*)
		SID="--psk $K/psk" CID="--psk $K/psk" SPUB=- CPUB=-
		;;
	*_XXpsk3_*)
		SID="--key $K/s --peer $C --psk $K/psk" CID="--key $K/c --peer $S --psk $K/psk"
		SPUB=$S CPUB=$C
		;;
	*)
		SID="--key $K/s --peer $C" CID="--key $K/c --peer $S" SPUB=$S CPUB=$C
		;;
	esac
}

# field NAME OUTFILE: the value of NAME= on the RESULT line of OUTFILE.
field() {
	sed -n "s/^RESULT .* $1=\([^ ]*\).*/\1/p" "$WORK/$2"
}

# exchange NAME CLIENT...: after start_server with an echo server, the client sends
# DATA. Both ends exit 0 and report DATA's size and sha256 sent and received, the same
# 32-byte handshake hash, and each other's static key.
exchange() {
	name=$1
	shift
	run_client "$@" --send "$DATA"
	want="RESULT sent_bytes=$SIZE sent_sha256=$SUM recv_bytes=$SIZE recv_sha256=$SUM"
	ch=$(field handshake_hash client.out)
	sh=$(field handshake_hash server.out)
	if [ $CRC -eq 0 ] && [ $SRC -eq 0 ] &&
		grep -q "^$want handshake_hash=" "$WORK/client.out" &&
		grep -q "^$want handshake_hash=" "$WORK/server.out" &&
		[ ${#ch} -eq 64 ] && [ "$ch" = "$sh" ] &&
		[ "$(field remote_static client.out)" = "$SPUB" ] &&
		[ "$(field remote_static server.out)" = "$CPUB" ]; then
		ok "$name"
	else
		notok "$name (client exit $CRC, server exit $SRC)"
	fi
}

# -- Both ways, every protocol.
for p in $PROTOCOLS; do
	ids "$p"
	# shellcheck disable=SC2086 # the identity options are words
	start_server "$ECHO" --protocol "$p" $SID --echo
	# shellcheck disable=SC2086
	exchange "$p: hush-echo server (listener), Go client sends 1 MiB" \
		"$GOPEER" --protocol "$p" $CID
	# shellcheck disable=SC2086
	start_server "$GOPEER" --protocol "$p" $SID --echo
	# shellcheck disable=SC2086
	exchange "$p: Go server, hush-echo client sends 1 MiB" \
		"$ECHO" --protocol "$p" $CID
done

# -- Other shapes: the hush end sending first as the server, a listener serving two
# connections in turn, and the default protocol with no --protocol at all.
ids Noise_XX_25519_AESGCM_SHA256
# shellcheck disable=SC2086
start_server "$ECHO" $SID --send "$DATA"
# shellcheck disable=SC2086
run_client "$GOPEER" $CID --echo
want="RESULT sent_bytes=$SIZE sent_sha256=$SUM recv_bytes=$SIZE recv_sha256=$SUM"
if [ $CRC -eq 0 ] && [ $SRC -eq 0 ] && grep -q "^$want " "$WORK/client.out" &&
	grep -q "^$want " "$WORK/server.out" &&
	[ "$(field handshake_hash client.out)" = "$(field handshake_hash server.out)" ]; then
	ok "default protocol: hush-echo server sends 1 MiB to the Go client's echo"
else
	notok "default protocol: hush-echo server sends (client exit $CRC, server exit $SRC)"
fi

# shellcheck disable=SC2086
start_server "$ECHO" $SID --echo --count 2
# shellcheck disable=SC2086
timeout 60 "$GOPEER" $CID --send "$DATA" --connect "$ADDR" >"$WORK/first.out" 2>&1
first=$?
# shellcheck disable=SC2086
run_client "$GOPEER" $CID --send "$DATA"
h1=$(field handshake_hash first.out)
h2=$(field handshake_hash client.out)
if [ $first -eq 0 ] && [ $CRC -eq 0 ] && [ $SRC -eq 0 ] &&
	[ "$(grep -c "^$want " "$WORK/server.out")" -eq 2 ] && [ ${#h1} -eq 64 ] &&
	[ "$h1" != "$h2" ] && grep -q "handshake_hash=$h1 " "$WORK/server.out" &&
	grep -q "handshake_hash=$h2 " "$WORK/server.out"; then
	ok "hush-echo --count 2: two connections in turn, each with its own handshake hash"
else
	notok "hush-echo --count 2 (first client exit $first, client exit $CRC, server exit $SRC)"
fi

# shellcheck disable=SC2086
start_server "$GOPEER" $SID --echo
# shellcheck disable=SC2086
run_client "$ECHO" $CID --send "$DATA"
if [ $CRC -eq 0 ] && [ $SRC -eq 0 ] && grep -q "^$want " "$WORK/client.out" &&
	[ "$(field remote_static client.out)" = "$S" ]; then
	ok "default protocol: hush-echo client without --protocol speaks XX with AESGCM"
else
	notok "default protocol: hush-echo client (client exit $CRC, server exit $SRC)"
fi

# -- Record protocols chosen explicitly (hush-echo --rp, the Go peer's --rp), the same at
# both ends: ALTSRP_GCM_AES128 is not any Noise name's default, so only an explicit
# choice reaches it.
A128=ALTSRP_GCM_AES128
ids Noise_XX_25519_AESGCM_SHA256
# shellcheck disable=SC2086
start_server "$ECHO" --rp $A128 $SID --echo
# shellcheck disable=SC2086
exchange "XX, --rp $A128: hush-echo server, Go client sends 1 MiB" "$GOPEER" --rp $A128 $CID
# shellcheck disable=SC2086
start_server "$GOPEER" --rp $A128 $SID --echo
# shellcheck disable=SC2086
exchange "XX, --rp $A128: Go server, hush-echo client sends 1 MiB" "$ECHO" --rp $A128 $CID
ids Noise_NNpsk0_25519_ChaChaPoly_SHA256
# shellcheck disable=SC2086
start_server "$ECHO" --protocol Noise_NNpsk0_25519_ChaChaPoly_SHA256 --rp $A128 $SID --echo
# shellcheck disable=SC2086
exchange "NNpsk0 ChaChaPoly, --rp $A128: hush-echo server, Go client sends 1 MiB" \
	"$GOPEER" --protocol Noise_NNpsk0_25519_ChaChaPoly_SHA256 --rp $A128 $CID
ids Noise_XX_25519_ChaChaPoly_SHA256
# shellcheck disable=SC2086
start_server "$GOPEER" --protocol Noise_XX_25519_ChaChaPoly_SHA256 \
	--rp ALTSRP_GCM_AES128_REKEY $SID --echo
# shellcheck disable=SC2086
exchange "XX ChaChaPoly, --rp ALTSRP_GCM_AES128_REKEY: Go server, hush-echo client sends 1 MiB" \
	"$ECHO" --protocol Noise_XX_25519_ChaChaPoly_SHA256 --rp ALTSRP_GCM_AES128_REKEY $CID

# -- Failures. Both ends must exit 1; the one that finds the problem names it.
XX=Noise_XX_25519_AESGCM_SHA256
PSK3=Noise_XXpsk3_25519_AESGCM_SHA256
NN=Noise_NNpsk0_25519_AESGCM_SHA256

start_server "$ECHO" --key "$K/s" --peer "$C" --echo
run_client "$GOPEER" --key "$K/x" --peer "$S" --send "$DATA"
refused "XX: hush-echo server refuses a client key not on its allow-list (EPEER)" \
	server.err "handshake failed: .*(EPEER)"

start_server "$GOPEER" --key "$K/x" --peer "$C" --echo
run_client "$ECHO" --key "$K/c" --peer "$S" --send "$DATA"
refused "XX: hush-echo client refuses a server key not on its allow-list (EPEER)" \
	client.err "handshake failed: .*(EPEER)"

start_server "$GOPEER" --key "$K/s" --peer "$X" --echo
run_client "$ECHO" --key "$K/c" --peer "$S" --send "$DATA"
refused "XX: the Go server refuses hush-echo's key (EPEER); hush-echo fails" \
	server.err "handshake failed: .*(EPEER)"

start_server "$ECHO" --protocol $PSK3 --key "$K/s" --peer "$C" --psk "$K/psk" --echo
run_client "$GOPEER" --protocol $PSK3 --key "$K/c" --peer "$S" --psk "$K/psk2" --send "$DATA"
refused "XXpsk3: wrong PSK, hush-echo server fails message 3 (EHANDSHAKE)" \
	server.err "handshake failed: .*(EHANDSHAKE)"

start_server "$GOPEER" --protocol $PSK3 --key "$K/s" --peer "$C" --psk "$K/psk2" --echo
run_client "$ECHO" --protocol $PSK3 --key "$K/c" --peer "$S" --psk "$K/psk" --send "$DATA"
refused "XXpsk3: wrong PSK, the Go server fails message 3 (EHANDSHAKE); hush-echo fails" \
	server.err "handshake failed: .*(EHANDSHAKE)"

start_server "$ECHO" --protocol $NN --psk "$K/psk" --echo
run_client "$GOPEER" --protocol $NN --psk "$K/psk2" --send "$DATA"
refused "NNpsk0: wrong PSK, hush-echo server fails message 1 (EHANDSHAKE)" \
	server.err "handshake failed: .*(EHANDSHAKE)"

# A server serves the next client after a bad one.
start_server "$ECHO" --protocol $NN --psk "$K/psk" --echo --count 2
timeout 60 "$GOPEER" --protocol $NN --psk "$K/psk2" --send "$DATA" --connect "$ADDR" \
	>"$WORK/client.out" 2>"$WORK/client.err"
BAD=$?
run_client "$GOPEER" --protocol $NN --psk "$K/psk" --send "$DATA"
if [ $BAD -eq 1 ] && [ $CRC -eq 0 ] && [ $SRC -eq 1 ] && grep -q "^RESULT" "$WORK/server.out" &&
	grep -q "handshake failed: .*(EHANDSHAKE)" "$WORK/server.err"; then
	ok "NNpsk0: hush-echo --listen serves the next client after one with a wrong PSK"
else
	notok "hush-echo --listen after a bad client (bad $BAD, client exit $CRC, server exit $SRC)"
fi

start_server "$GOPEER" --protocol $NN --psk "$K/psk2" --echo
run_client "$ECHO" --protocol $NN --psk "$K/psk" --send "$DATA"
refused "NNpsk0: wrong PSK, the Go server fails message 1 (EHANDSHAKE); hush-echo fails" \
	server.err "handshake failed: .*(EHANDSHAKE)"

start_server "$ECHO" --key "$K/s" --peer "$C" --echo
run_client "$GOPEER" --protocol Noise_XX_25519_ChaChaPoly_SHA256 --key "$K/c" --peer "$S" \
	--send "$DATA"
refused "XX AESGCM server, ChaChaPoly client: hush-echo refuses the hello (EPARAMS)" \
	server.err "handshake failed: .*(EPARAMS)"

start_server "$ECHO" --protocol $NN --psk "$K/psk" --echo
run_client "$GOPEER" --protocol $PSK3 --key "$K/c" --peer "$S" --psk "$K/psk" --send "$DATA"
refused "NNpsk0 server, XXpsk3 client: hush-echo refuses the hello (EPARAMS)" \
	server.err "handshake failed: .*(EPARAMS)"

start_server "$GOPEER" --key "$K/s" --peer "$C" --echo
run_client "$ECHO" --protocol $PSK3 --key "$K/c" --peer "$S" --psk "$K/psk" --send "$DATA"
refused "XX server, XXpsk3 hush-echo client: the Go server refuses the hello (EPARAMS)" \
	server.err "handshake failed: .*(EPARAMS)"

start_server "$GOPEER" --key "$K/s" --peer "$C" --rp ALTSRP_GCM_AES128 --echo
run_client "$ECHO" --key "$K/c" --peer "$S" --send "$DATA"
refused "record protocol ALTSRP_GCM_AES128 against hush's REKEY: hush-echo client refuses message 2 (EPARAMS)" \
	client.err "handshake failed: .*(EPARAMS)"

start_server "$ECHO" --protocol $NN --psk "$K/psk" --echo
run_client "$GOPEER" --protocol $NN --psk "$K/psk" --rp ALTSRP_GCM_AES128 --send "$DATA"
refused "NNpsk0, record protocol ALTSRP_GCM_AES128 against REKEY: hush-echo server refuses message 1 (EPARAMS)" \
	server.err "handshake failed: .*(EPARAMS)"

start_server "$ECHO" --protocol Noise_XX_25519_ChaChaPoly_SHA256 --key "$K/s" --peer "$C" --echo
run_client "$GOPEER" --protocol Noise_XX_25519_ChaChaPoly_SHA256 --rp ALTSRP_GCM_AES128_REKEY \
	--key "$K/c" --peer "$S" --send "$DATA"
refused "XX ChaChaPoly, Go client --rp ALTSRP_GCM_AES128_REKEY against hush-echo's default (ChaCha20 records): the Go client refuses message 2 (EPARAMS)" \
	client.err "handshake failed: .*(EPARAMS)"

start_server "$ECHO" --key "$K/s" --peer "$C" --echo
run_client "$GOPEER" --key "$K/c" --peer "$S" --send "$DATA" --no-close
refused "close signal: Go client ends without the close record, hush-echo server reports ETRUNCATED" \
	server.err "(ETRUNCATED)"

start_server "$GOPEER" --key "$K/s" --peer "$C" --send "$DATA" --no-close
run_client "$ECHO" --key "$K/c" --peer "$S" --echo
refused "close signal: Go server ends without the close record, hush-echo client reports ETRUNCATED" \
	client.err "(ETRUNCATED)"

# A peer that is not hush at all: its first message is not a hello starting "hush/".
start_server "$ECHO" --key "$K/s" --peer "$C" --echo
run_client "$GOPEER" --key "$K/c" --peer "$S" --hello SSH-2.0-OpenSSH_9.2 --send "$DATA"
refused "a first message not starting with hush/: hush-echo server refuses it (EHANDSHAKE)" \
	server.err "handshake failed: .*(EHANDSHAKE)"
