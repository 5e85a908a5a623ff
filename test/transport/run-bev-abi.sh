#!/bin/sh
# The layout guard against a real libevent of another layout: bev-abi-probe, built
# against the installed libevent, is accepted with it and must be refused
# (HUSH_ELIBEVENT) when another build of libevent_core is loaded in its place.
# HUSH_ALT_LIBEVENT names the directory holding that other libevent_core-2.1.so.7 (for
# example Debian's libevent source built without CVE-2026-63388.patch, whose struct
# bufferevent_private is 536 bytes where the installed one's is 632); without it the
# second check skips. Prints TAP.
set -u
: "${HUSH_BUILDDIR:?}"
probe=$HUSH_BUILDDIR/test/transport/bev-abi-probe
echo "1..2"
if out=$("$probe" OK); then
	echo "ok 1 - accepted with the installed libevent"
else
	echo "not ok 1 - refused with the installed libevent"
fi
echo "$out" | sed -n 's/^.*ok 1 - /# /p'
if [ -z "${HUSH_ALT_LIBEVENT:-}" ]; then
	echo "ok 2 # SKIP HUSH_ALT_LIBEVENT names no other libevent_core build"
	exit 0
fi
if out=$(LD_LIBRARY_PATH="$HUSH_ALT_LIBEVENT" "$probe" ELIBEVENT); then
	echo "ok 2 - refused with $HUSH_ALT_LIBEVENT"
else
	echo "not ok 2 - not refused with $HUSH_ALT_LIBEVENT"
fi
echo "$out" | sed -n 's/^.*ok 1 - /# /p'
