#!/bin/sh
# hush-scale at 200 connections over 2 server and 2 client processes, so that the
# benchmark cannot rot: every connection established and verified, the JSON report
# complete, no pool buffer held while idle. A few seconds; works at an open-files soft
# limit of 1024. Speaks TAP.
set -u
: "${HUSH_BUILDDIR:?}"
out=$("$HUSH_BUILDDIR/benchmarks/hush-scale" --conns 200 --workers 2 --clients 2 --hold 0.2 \
	--json --quiet)
rc=$?
echo "1..2"
if [ $rc -eq 0 ]; then
	echo "ok 1 - hush-scale --conns 200 exits 0"
else
	echo "not ok 1 - hush-scale --conns 200 exits $rc"
fi
echo "$out" | sed 's/^/# /'
if echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
keys = ["conns", "established", "verified", "heap_per_conn_bytes", "rss_per_conn_bytes",
        "kernel_per_conn_bytes", "pool_buffers_idle", "establish_seconds", "handshakes_per_s"]
missing = [k for k in keys if k not in r]
assert not missing, missing
assert r["conns"] == 200 and r["established"] == 200 and r["verified"] == 200, r
assert r["pool_buffers_idle"] == 0, r["pool_buffers_idle"]
assert 0 < r["heap_per_conn_bytes"] < 4096, r["heap_per_conn_bytes"]
'; then
	echo "ok 2 - the JSON report has every key; 200 established and verified, 0 pool buffers idle"
else
	echo "not ok 2 - the JSON report"
fi
