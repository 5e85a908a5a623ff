#!/bin/sh
# libevent's own samples (sample/hello-world.c, http-server.c, https-client.c,
# le-proxy.c) over hush, from Debian's source of the installed libevent (see
# libevent-source.sh), each built from a copy with test/libevent/hush-shim.h
# force-included: their bufferevent constructors make hush bufferevents, and each gets
# a hush loop on first use. The edits to the samples' code, made on the copies: one
# setup line in http-server.c (evhttp_set_bevcb, since evhttp makes its bufferevents
# itself), and in hello-world.c the line hush/bufferevent.h asks of an accept-side event
# callback that takes every event for the end (hush reports CONNECTED there). The
# peers: hushpipe (hush's tunnel) in front of the servers for curl and plain clients,
# and the ported https-client and le-proxy against the ported http-server, hush on both
# ends. Prints one line per check and a summary; with HUSH_LIBEVENT_DOC (as `make
# check-libevent` sets it) also writes them as a section of that file. Exits 77 when
# the source cannot be had, 1 if a check fails.
#
# Environment: as run-libevent-regress.sh (HUSH_SRCDIR, HUSH_BUILDDIR,
# HUSH_LIBEVENT_WORK, HUSH_LIBEVENT_SRC).
set -eu
. "${HUSH_SRCDIR:?}/test/libevent/libevent-source.sh"
for t in curl python3 sha256sum; do
	command -v "$t" >/dev/null 2>&1 || skip "$t is needed"
done
[ -f "$HUSH_BUILDDIR/libhush.la" ] || { echo "build hush first (make)" >&2; exit 1; }
le_fetch
le_build

sb=$LE_BUILD/hush-samples
rm -rf "$sb"
mkdir -p "$sb/keys" "$sb/docroot"
cc=$(le_make_var CC)
cppflags="$(le_make_var DEFS) -I$LE_BUILD -I$LE_SRC -I$LE_SRC/compat -I$LE_BUILD/include \
	-I$LE_SRC/include -I$HUSH_SRCDIR/include -I$HUSH_BUILDDIR/include"
cflags="-g -O2"
libs="$LE_BUILD/libevent_core.la $LE_BUILD/libevent_extra.la $LE_BUILD/libevent_openssl.la \
	$HUSH_BUILDDIR/libhush.la -lssl -lcrypto -ldl -lpthread"

# A sample's copy, compiled with the shim; $1 the sample, $2 the shim's mode, then any
# other sources of the sample's own.
build_sample() {
	name=$1
	mode=$2
	shift 2
	objs=
	for src in "$name" "$@"; do
		# shellcheck disable=SC2086
		$cc $cppflags $cflags -include "$here/hush-shim.h" -D"$mode" \
			-c "$sb/$src.c" -o "$sb/$src.o" >>"$sb/build.log" 2>&1 || return 1
		objs="$objs $sb/$src.o"
	done
	# shellcheck disable=SC2086
	(cd "$LE_BUILD" && /bin/sh ./libtool --silent --tag=CC --mode=link $cc $cflags \
		-o "$sb/$name" $objs "$sb/hush-shim.o" $libs) >>"$sb/build.log" 2>&1
}

for f in hello-world http-server https-client le-proxy hostcheck openssl_hostname_validation; do
	cp "$LE_SRC/sample/$f.c" "$sb/$f.c"
done
cp "$LE_SRC/sample/"*.h "$sb/"
# The port's one setup line: evhttp makes its own bufferevents, so a hush server says
# which with evhttp_set_bevcb().
sed -i 's/^\(\thttp = evhttp_new(base);\)$/\1 evhttp_set_bevcb(http, hush_shim_evhttp_bevcb, NULL);/' \
	"$sb/http-server.c"
[ "$(grep -c 'hush_shim_evhttp_bevcb' "$sb/http-server.c")" = 1 ] ||
	{ echo "http-server.c's evhttp_new() line was not found: update the sed above" >&2; exit 1; }
# hello-world's conn_eventcb frees the connection on any event ("None of the other
# events can happen here"): without this line it frees it at hush's CONNECTED, before
# the greeting is sent, and the client sees the stream cut (HUSH_ETRUNCATED).
sed -i '/^conn_eventcb(struct bufferevent \*bev, short events, void \*user_data)$/,/^{$/ s/^{$/{ if (events \& BEV_EVENT_CONNECTED) return;/' \
	"$sb/hello-world.c"
[ "$(grep -c 'if (events & BEV_EVENT_CONNECTED) return;' "$sb/hello-world.c")" = 1 ] ||
	{ echo "hello-world.c's conn_eventcb was not found: update the sed above" >&2; exit 1; }
# shellcheck disable=SC2086
$cc $cppflags -g -O2 -c "$here/hush-shim.c" -o "$sb/hush-shim.o" >"$sb/build.log" 2>&1 &&
	build_sample hello-world HUSH_SHIM_SOCKET &&
	build_sample http-server HUSH_SHIM_SOCKET &&
	build_sample https-client HUSH_SHIM_SSL hostcheck openssl_hostname_validation &&
	build_sample le-proxy HUSH_SHIM_SSL || { cat "$sb/build.log" >&2; exit 1; }

# Keys shared by the processes through files (hush-shim.c reads HUSH_SHIM_KEYDIR).
"$HUSH_BUILDDIR/tools/hush-keygen" "$sb/keys/client.key" >/dev/null
"$HUSH_BUILDDIR/tools/hush-keygen" "$sb/keys/server.key" >/dev/null
spub=$("$HUSH_BUILDDIR/tools/hush-keygen" --public "$sb/keys/server.key")
HUSH_SHIM_KEYDIR=$sb/keys
export HUSH_SHIM_KEYDIR
echo "a small file served over hush" >"$sb/docroot/small.txt"
head -c 20000000 /dev/urandom >"$sb/docroot/big.bin"
bigsum=$(sha256sum <"$sb/docroot/big.bin" | cut -d ' ' -f 1)

# A free port below Linux's ephemeral range (32768 and up), so that no connection's
# own end takes it between this check and a server's bind.
free_port() {
	python3 -c 'import random, socket
while True:
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", p))
        print(p)
        break
    except OSError:
        pass
    finally:
        s.close()'
}
# Waits until something listens on port $1 (5 s at most).
wait_port() {
	python3 - "$1" <<'EOF'
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}
pids=
cleanup() {
	for p in $pids; do
		kill "$p" 2>/dev/null || true
	done
}
trap cleanup EXIT INT TERM
start() {
	log=$1
	shift
	"$@" >"$sb/$log.log" 2>&1 &
	pids="$pids $!"
}
# A plaintext port in front of hush port $2: hushpipe encrypting, as the client.
pipe_to() {
	start "hushpipe-$1" "$HUSH_BUILDDIR/tools/hushpipe/hushpipe" -e -s "127.0.0.1:$1" \
		-t "127.0.0.1:$2" -k "$sb/keys/client.key" --peer "$spub" -q
	wait_port "$1"
}

results=$sb/results.txt
: >"$results"
check() {
	# $1 ok|known|fail (known: a limit hush/bufferevent.h documents), $2 sample, $3 what
	# was tried and seen
	what=$(echo "$3" | tr '\n|' '  ')
	printf '%s\t%s\t%s\n' "$1" "$2" "$what" >>"$results"
	printf '%-5s %-14s %s\n' "$1" "$2" "$what"
}

# hello-world: listens on its fixed port 9995, greets each client and closes.
if python3 -c 'import socket; socket.create_connection(("127.0.0.1", 9995), 0.2)' 2>/dev/null; then
	check fail hello-world "port 9995 is taken: not run"
else
	start hello-world "$sb/hello-world"
	wait_port 9995 || true
	p=$(free_port)
	pipe_to "$p" 9995
	got=$(python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5)
data = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    data += b
sys.stdout.write(data.decode())' "$p" 2>&1 || true)
	if [ "$got" = "Hello, World!" ]; then
		check ok hello-world "a client through hushpipe got \"Hello, World!\" and a clean end"
	else
		check fail hello-world "a client through hushpipe got: $(echo "$got" | head -c 200)"
	fi
fi

# http-server: evhttp with hush bufferevents, behind hushpipe for curl.
hp=$(free_port)
start http-server "$sb/http-server" -p "$hp" "$sb/docroot"
wait_port "$hp" || true
cp=$(free_port)
pipe_to "$cp" "$hp"
got=$(curl -sS --max-time 20 "http://127.0.0.1:$cp/small.txt" 2>&1 || true)
if [ "$got" = "a small file served over hush" ]; then
	check ok http-server "curl through hushpipe: GET /small.txt returned the file"
else
	check fail http-server "curl through hushpipe: GET /small.txt returned: $(echo "$got" | head -c 200)"
fi
sum=$(curl -sS --max-time 60 "http://127.0.0.1:$cp/big.bin" | sha256sum | cut -d ' ' -f 1)
if [ "$sum" = "$bigsum" ]; then
	check ok http-server "curl through hushpipe: GET /big.bin (20 MB) arrived intact"
else
	check fail http-server "curl through hushpipe: GET /big.bin (20 MB) differs (sha256 $sum)"
fi
n_ok=0
for i in 1 2 3 4 5 6 7 8; do
	(curl -sS --max-time 120 "http://127.0.0.1:$cp/big.bin" | sha256sum | cut -d ' ' -f 1 >"$sb/par.$i") &
done
wait_curls=0
while [ "$(ls "$sb"/par.* 2>/dev/null | wc -l)" -lt 8 ] || [ "$(cat "$sb"/par.* | wc -l)" -lt 8 ]; do
	sleep 1
	wait_curls=$((wait_curls + 1))
	[ "$wait_curls" -lt 150 ] || break
done
for i in 1 2 3 4 5 6 7 8; do
	[ "$(cat "$sb/par.$i" 2>/dev/null)" = "$bigsum" ] && n_ok=$((n_ok + 1))
done
if [ "$n_ok" = 8 ]; then
	check ok http-server "8 concurrent curls of /big.bin through hushpipe: all 8 intact"
else
	check fail http-server "8 concurrent curls of /big.bin through hushpipe: $n_ok of 8 intact"
fi

# https-client: its bufferevent_openssl_socket_new() makes a hush client; the server is
# the ported http-server, so hush is on both ends.
t0=$(date +%s)
timeout 60 "$sb/https-client" -url "https://127.0.0.1:$hp/big.bin" -ignore-cert \
	>"$sb/https-client.out" 2>"$sb/https-client.err" || true
t1=$(date +%s)
sum=$(sha256sum <"$sb/https-client.out" | cut -d ' ' -f 1)
if [ "$sum" = "$bigsum" ]; then
	check ok https-client "GET https://.../big.bin from the ported http-server: 20 MB intact, $((t1 - t0)) s ($(grep -m 1 'Response line' "$sb/https-client.err"))"
else
	check fail https-client "GET https://.../big.bin from the ported http-server: body differs: $(tail -n 2 "$sb/https-client.err" | tr '\n' ' ' | head -c 200)"
fi
closed=$(free_port)
# (The sample exits 0 even when its request failed; it says so on stderr.)
t0=$(date +%s)
timeout 60 "$sb/https-client" -url "https://127.0.0.1:$closed/" -ignore-cert -timeout 3 \
	>/dev/null 2>"$sb/https-client-closed.err" && rc=0 || rc=$?
t1=$(date +%s)
said=$(grep -v -e '^ *$' -e '^hush-shim' "$sb/https-client-closed.err" | tr '\n' ' ' | head -c 160)
if [ "$rc" != 124 ] && grep -q 'request failed' "$sb/https-client-closed.err" && [ $((t1 - t0)) -le 5 ]; then
	check ok https-client "a closed port with -timeout 3: failed within $((t1 - t0)) s: $said"
else
	check fail https-client "a closed port with -timeout 3: exit $rc after $((t1 - t0)) s: $said"
fi

# le-proxy -s: plain clients in, hush out. By default it wraps a plain socket
# bufferevent with bufferevent_openssl_filter_new() (hush's filter flavour); with -W it
# uses bufferevent_openssl_socket_new() (hush's socket flavour).
for w in "" -W; do
	lp=$(free_port)
	case $w in
	-W) how="socket flavour" ;;
	*) how="filter flavour" ;;
	esac
	# shellcheck disable=SC2086
	start "le-proxy$w" "$sb/le-proxy" -s $w "127.0.0.1:$lp" "127.0.0.1:$hp"
	wait_port "$lp" || true
	sum=$(curl -sS --max-time 60 "http://127.0.0.1:$lp/big.bin" 2>"$sb/le-proxy$w.curl" | sha256sum | cut -d ' ' -f 1)
	if [ "$sum" = "$bigsum" ]; then
		check ok "le-proxy -s $w" "($how) curl through the proxy to the ported http-server: 20 MB intact"
	else
		check fail "le-proxy -s $w" "($how) curl through the proxy to the ported http-server: $(head -c 150 "$sb/le-proxy$w.curl") $(grep -m 1 'hush-shim' "$sb/le-proxy$w.log" | head -c 150)"
	fi
done

n=$(wc -l <"$results")
okn=$(awk -F '\t' '$1 == "ok"' "$results" | wc -l)
known=$(awk -F '\t' '$1 == "known"' "$results" | wc -l)
failn=$(awk -F '\t' '$1 == "fail"' "$results" | wc -l)
echo "libevent's samples over hush: $okn of $n checks ok, $known a documented limit, $failn failed"
if [ -n "${HUSH_LIBEVENT_DOC:-}" ] && [ -f "$HUSH_LIBEVENT_DOC" ]; then
	sed -i '/^## libevent.s samples over hush/,$d' "$HUSH_LIBEVENT_DOC"
	{
		echo "## libevent's samples over hush"
		echo
		echo "Generated by \`make check-libevent\` (test/libevent/run-libevent-samples.sh),"
		echo "$(date -u '+%Y-%m-%d %H:%M UTC'). Each sample is built from a copy of Debian's source with"
		echo "test/libevent/hush-shim.h force-included. The edits to the samples' code:"
		echo "\`evhttp_set_bevcb(http, hush_shim_evhttp_bevcb, NULL);\` after \`evhttp_new()\` in"
		echo "http-server.c, and \`if (events & BEV_EVENT_CONNECTED) return;\` first in"
		echo "hello-world.c's conn_eventcb (it frees the connection on any event; hush reports"
		echo "CONNECTED on the accepting side, as include/hush/bufferevent.h says). curl and plain"
		echo "clients reach the servers through \`hushpipe -e\`. **$okn of $n checks ok, $known a"
		echo "documented limit, $failn failed.**"
		echo
		echo "| result | sample | what was tried and seen |"
		echo "|---|---|---|"
		sed -e 's/|/ /g' -e 's/\t/ | /g' -e 's/^/| /' -e 's/$/ |/' "$results"
	} >>"$HUSH_LIBEVENT_DOC"
fi
[ "$failn" = 0 ]
