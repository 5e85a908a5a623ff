#!/usr/bin/env bash
# hushpipe's throughput beside two plaintext relays making the same hops, in one run:
# a stream of RELAY_BYTES (1 GiB) from a sender (test/e2e/helper.py blast-server) to a
# receiver (blast-client), once through two plaintext relays in a row
# (test/e2e/plain-relay, 64 KiB blocking copies) and once through `hushpipe -e` and
# `hushpipe -d`, alternating, RELAY_COUNT (5) times each. Prints each repetition, the
# medians, their ratio, and the CPU time per GiB of the two middle processes (the
# relays, or the two hushpipes) and of the whole machine, read from /proc: on a machine
# with fewer cores than busy processes the throughput follows the CPU every byte costs.
#
#   make bench-relay                          (builds what it needs, then runs this)
#   HUSH_BUILDDIR=. HUSH_SRCDIR=. benchmarks/relay-bench.sh
#   RELAY_COUNT=N RELAY_BYTES=N RELAY_JOBS=N (hushpipe -j, default 1)
set -u
: "${HUSH_BUILDDIR:?}" "${HUSH_SRCDIR:?}"
HP=$HUSH_BUILDDIR/tools/hushpipe/hushpipe
KG=$HUSH_BUILDDIR/tools/hush-keygen
RELAY=$HUSH_BUILDDIR/test/e2e/plain-relay
BENCH=$HUSH_BUILDDIR/benchmarks/hush-bench
PY=${PYTHON:-python3}
HELPER=$HUSH_SRCDIR/test/e2e/helper.py
COUNT=${RELAY_COUNT:-5}
BYTES=${RELAY_BYTES:-1073741824}
JOBS=${RELAY_JOBS:-1}

W=$(mktemp -d /tmp/hush-relay-bench.XXXXXX)
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
die() {
	echo "relay-bench: $*" >&2
	exit 1
}

# Five listening ports below the ephemeral range, free now (helper.py ports).
read -r PSRC PR1 PR2 PD PE <<<"$("$PY" "$HELPER" ports --n 5)"

listening() {
	awk -v p="$(printf '%04X' "$1")" '$2 == "0100007F:" p && $4 == "0A" { f = 1 }
		END { exit !f }' /proc/net/tcp
}
wait_listening() {
	local t=200
	while ! listening "$1"; do
		t=$((t - 1))
		[ $t -le 0 ] && return 1
		sleep 0.05
	done
}
bg() {
	"$@" 2>>"$W/log" &
	PIDS="$PIDS $!"
	LAST=$!
}
# cpu PID...: the CPU time of the processes so far, in clock ticks (user + system).
cpu() {
	local t=0 p
	for p in "$@"; do
		t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
	done
	echo "$t"
}

"$KG" "$W/server.key" >"$W/server.pub" && "$KG" "$W/client.key" >"$W/client.pub" ||
	die "hush-keygen failed"
echo "$(cat "$W/client.pub") client" >"$W/server.peers"

bg "$PY" "$HELPER" blast-server --port "$PSRC" --ready "$W/src.ready"
bg "$RELAY" "$PR1" "$PSRC"
R1=$LAST
bg "$RELAY" "$PR2" "$PR1"
R2=$LAST
bg "$HP" -d -s "127.0.0.1:$PD" -t "127.0.0.1:$PSRC" -k "$W/server.key" \
	--peers "$W/server.peers" -j "$JOBS"
HD=$LAST
bg "$HP" -e -s "127.0.0.1:$PE" -t "127.0.0.1:$PD" -k "$W/client.key" \
	--peer "$(cat "$W/server.pub")" -j "$JOBS"
HE=$LAST
for p in "$PSRC" "$PR1" "$PR2" "$PD" "$PE"; do
	wait_listening "$p" || die "nothing listens on port $p: $(cat "$W/log")"
done

TICK=$(getconf CLK_TCK)
# busy: the whole machine's CPU time so far, in clock ticks (all but idle and iowait,
# so the kernel's softirq work on loopback counts too).
busy() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}
# run PORT PID...: streams BYTES through PORT; prints "MB/s cpu-s/GiB machine-s/GiB":
# the PIDs' CPU time per GiB, and the whole machine's.
run() {
	local port=$1 c0 c1 m0 m1 mbps
	shift
	c0=$(cpu "$@")
	m0=$(busy)
	mbps=$("$PY" "$HELPER" blast-client --port "$port" --bytes "$BYTES") || return 1
	c1=$(cpu "$@")
	m1=$(busy)
	awk -v m="$mbps" -v c=$((c1 - c0)) -v a=$((m1 - m0)) -v t="$TICK" -v b="$BYTES" \
		'BEGIN { g = b / 1073741824; printf "%.1f %.3f %.3f\n", m, c / t / g, a / t / g }'
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# $BYTES bytes per stream, $COUNT repetitions, hushpipe -j $JOBS"
row() { printf '%-6s %9s %9s %10s %10s %10s %10s\n' "$@"; }
row "" "MB/s" "" "CPU s/GiB" "" "machine" ""
row rep relays hushpipe relays hushpipe relays hushpipe
: >"$W/relays" && : >"$W/tunnel"
for i in $(seq 1 "$COUNT"); do
	r=$(run "$PR2" "$R1" "$R2") || die "the stream through the relays failed"
	t=$(run "$PE" "$HE" "$HD") || die "the stream through hushpipe failed"
	echo "$r" >>"$W/relays"
	echo "$t" >>"$W/tunnel"
	read -r r1 r2 r3 <<<"$r"
	read -r t1 t2 t3 <<<"$t"
	row "$i" "$r1" "$t1" "$r2" "$t2" "$r3" "$t3"
done
med() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { cut -d' ' -f"$2" "$W/$1" | med; }
mr=$(col relays 1) mt=$(col tunnel 1) cr=$(col relays 2) ct=$(col tunnel 2)
ar=$(col relays 3) at=$(col tunnel 3)
row median "$mr" "$mt" "$cr" "$ct" "$ar" "$at"
# The ceiling: the relays' whole-machine CPU per GiB plus nothing but the AEAD, sealing
# once and opening once (hush-bench's aes-gcm-limit row: one core, 16 KiB records, the
# median of 3).
aes=$("$BENCH" --count 3 --filter 'LargeMessage/aes-gcm-limit$' 2>/dev/null |
	awk '/^BenchmarkLargeMessage\/aes-gcm-limit/ { print $3 }')
awk -v r="$mr" -v t="$mt" -v cr="$cr" -v ct="$ct" -v ar="$ar" -v at="$at" -v aes="${aes:-0}" 'BEGIN {
	printf "hushpipe/relays: %.2fx the speed; CPU per GiB %.2fx in the middle (+%.3f s),", t / r, ct / cr, ct - cr
	printf " %.2fx on the whole machine (+%.3f s)\n", at / ar, at - ar
	if (aes > 0) {
		a = 1073741824 / (aes * 1e6)
		printf "AES-GCM %.0f MB/s on one core: sealing and opening 1 GiB cost %.3f CPU s;", aes, 2 * a
		printf " with nothing else added, CPU-bound, hushpipe could reach %.2fx the relays\n", ar / (ar + 2 * a)
	}
}'
