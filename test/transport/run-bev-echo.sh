#!/bin/sh
# The libevent echo example (examples/bev-echo.c), built plaintext and over hush with
# only its bufferevent constructor changed, echoes the same bytes back. Prints TAP.
set -u
: "${HUSH_BUILDDIR:?}"
W=$HUSH_BUILDDIR/test/transport/bev-echo-work
mkdir -p "$W"
echo "1..2"
n=0
for v in plain hush; do
	n=$((n + 1))
	prog=$HUSH_BUILDDIR/examples/bev-echo
	[ $v = plain ] && prog=$HUSH_BUILDDIR/examples/bev-echo-plain
	# Removed first: the redirection below happens in the child, after this shell may
	# already be reading the file, which must not still hold the last run's port.
	rm -f "$W/server.out"
	timeout 60 "$prog" --listen 0 --count 1 >"$W/server.out" 2>&1 &
	spid=$!
	i=0
	while ! grep -q listening "$W/server.out" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	port=$(sed -n 's/listening on //p' "$W/server.out")
	timeout 60 "$prog" --connect "$port" --bytes 3000000 >"$W/$v.out" 2>&1
	crc=$?
	wait $spid
	if [ $crc -eq 0 ] && grep -q "echoed 3000000 bytes" "$W/$v.out"; then
		echo "ok $n - bev-echo ($v) echoes 3,000,000 bytes"
	else
		echo "not ok $n - bev-echo ($v)"; sed 's/^/# /' "$W/$v.out" "$W/server.out"
	fi
done
if [ "$(cut -d' ' -f5 "$W/plain.out")" != "$(cut -d' ' -f5 "$W/hush.out")" ]; then
	echo "# the two builds echoed different bytes"
	exit 1
fi
