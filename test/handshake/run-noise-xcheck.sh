#!/bin/sh
# hush's handshake against an independent Noise library. go/noise-xcheck implements the
# wire protocol of docs/PROTOCOL.md, Part II again, on github.com/flynn/noise (Debian
# golang-github-flynn-noise-dev) and Go's HKDF, and recomputes every output of the
# worked examples in test/data/hush-handshake-vectors.txt from their inputs alone:
# prologue, parameter blocks, each flight on the wire, handshake hash, Split() keys and
# record key. test-handshake checks that hush produces the same file. Prints TAP.
set -u
: "${HUSH_SRCDIR:?}"
GOSRC=${GO_NOISE_SRC:-/usr/share/gocode}
VEC=$HUSH_SRCDIR/test/data/hush-handshake-vectors.txt
MAIN_GO=$HUSH_SRCDIR/test/handshake/go/noise-xcheck/main.go
if ! command -v go >/dev/null 2>&1 || [ ! -d "$GOSRC/src/github.com/flynn/noise" ] ||
	[ ! -d "$GOSRC/src/golang.org/x/crypto/hkdf" ]; then
	echo "1..0 # SKIP go or golang-github-flynn-noise-dev not installed"
	exit 0
fi
W=$(mktemp -d "${TMPDIR:-/tmp}/hush-xcheck.XXXXXX") || exit 1
trap 'rm -rf "$W"' EXIT

# The outputs to compare: "block key value" for every output line of every block.
OUTPUTS='prologue|init_params|resp_params|flight_[0-9]+|handshake_hash|split_k1|split_k2|record_key'
keyed() {
	awk -F= -v re="^($OUTPUTS)\$" '/^protocol=/ { b++ } b && $1 ~ re { print b, $1, $2 }' "$1"
}
keyed "$VEC" >"$W/want"
total=$(wc -l <"$W/want")
echo "1..$((total + 1))"

# Offline, in GOPATH mode, with a private build cache.
if (cd "$W" && env GOPATH="$GOSRC" GO111MODULE=off GOFLAGS= GOPROXY=off GOENV=off \
	CGO_ENABLED=0 GOCACHE="$W/cache" go build -o "$W/xcheck" "$MAIN_GO") >"$W/build.log" 2>&1 &&
	"$W/xcheck" "$VEC" >"$W/got.txt" 2>"$W/run.log"; then
	echo "ok 1 - build and run the flynn/noise implementation"
else
	echo "not ok 1 - build and run the flynn/noise implementation"
	sed 's/^/# /' "$W/build.log" "$W/run.log"
fi
keyed "$W/got.txt" >"$W/got"
n=1
while read -r block key value; do
	n=$((n + 1))
	name="example $block ($(awk -F= -v b="$block" '/^protocol=/ { if (++i == b) print $2 }' "$VEC")): $key"
	if grep -qx "$block $key $value" "$W/got"; then
		echo "ok $n - $name"
	else
		echo "not ok $n - $name"
		echo "# want $value"
		echo "# got  $(awk -v b="$block" -v k="$key" '$1 == b && $2 == k { print $3 }' "$W/got")"
	fi
done <"$W/want"
