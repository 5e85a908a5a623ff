#!/bin/sh
# The libevent HTTP example (examples/bev-http.c), built plaintext and over hush with
# only its bufferevent constructor changed: a 3,000,000-byte body fetched three times
# on one kept-alive connection, the same bytes both ways; a plaintext client gets
# nothing from the hush server. Prints TAP.
set -u
: "${HUSH_BUILDDIR:?}"
W=$HUSH_BUILDDIR/test/transport/bev-http-work
mkdir -p "$W"
echo "1..3"
fail=0
start_server() { # PROG COUNT
	rm -f "$W/server.out"
	timeout 60 "$1" --listen 0 --count "$2" >"$W/server.out" 2>&1 &
	spid=$!
	i=0
	while ! grep -q listening "$W/server.out" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	port=$(sed -n 's/listening on //p' "$W/server.out")
}
n=0
for v in plain hush; do
	n=$((n + 1))
	prog=$HUSH_BUILDDIR/examples/bev-http
	[ $v = plain ] && prog=$HUSH_BUILDDIR/examples/bev-http-plain
	start_server "$prog" 3
	timeout 60 "$prog" --get "$port" /bytes/3000000 --repeat 3 >"$W/$v.out" 2>&1
	crc=$?
	wait $spid
	if [ $crc -eq 0 ] && [ "$(grep -c '^status 200, 3000000 bytes' "$W/$v.out")" = 3 ]; then
		echo "ok $n - bev-http ($v) fetches 3,000,000 bytes three times on one connection"
	else
		echo "not ok $n - bev-http ($v)"; sed 's/^/# /' "$W/$v.out" "$W/server.out"; fail=1
	fi
done
if [ "$(sort -u "$W/plain.out")" != "$(sort -u "$W/hush.out")" ]; then
	echo "# the two builds fetched different bytes"; fail=1
fi
start_server "$HUSH_BUILDDIR/examples/bev-http" 1
timeout 20 "$HUSH_BUILDDIR/examples/bev-http-plain" --get "$port" /bytes/10 >"$W/cross.out" 2>&1
crc=$?
kill $spid 2>/dev/null; wait $spid 2>/dev/null
if [ $crc -ne 0 ] && ! grep -q '^status 200' "$W/cross.out"; then
	echo "ok 3 - a plaintext client gets nothing from the hush server"
else
	echo "not ok 3 - a plaintext client was served"; sed 's/^/# /' "$W/cross.out"; fail=1
fi
exit $fail
