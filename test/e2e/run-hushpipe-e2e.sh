#!/usr/bin/env bash
# hushpipe end to end, with real programs on both sides of the tunnel: curl through
# `hushpipe -e`, python3's http.server behind `hushpipe -d`. Downloads and uploads with
# checksums, concurrency, addresses of every kind, PSK mode, thousands of idle
# connections with the tunnel's heap per connection, two processes sharing one address
# (--reuseport), the failure cases, SIGHUP and SIGTERM, and throughput against a direct
# connection. Speaks TAP.
#
#   HUSH_BUILDDIR=... HUSH_SRCDIR=... test/e2e/run-hushpipe-e2e.sh
#   E2E_IDLE_CONNS=N    idle connections (default: as many as the open-files limit allows,
#                       at most 9800)
#   E2E_RESULTS=FILE    also write the measured figures to FILE
set -u
: "${HUSH_BUILDDIR:?}" "${HUSH_SRCDIR:?}"
HP=$HUSH_BUILDDIR/tools/hushpipe/hushpipe
KG=$HUSH_BUILDDIR/tools/hush-keygen
PY=${PYTHON:-python3}
HELPER=$HUSH_SRCDIR/test/e2e/helper.py
W=$HUSH_BUILDDIR/test/e2e/work
RESULTS=${E2E_RESULTS:-$W/results.txt}

for tool in curl "$PY" sha256sum; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "1..0 # SKIP $tool is not installed"
		exit 0
	fi
done
rm -rf "$W" && mkdir -p "$W/srv"
# Unix socket paths must stay short (108 bytes), whatever the build directory.
S=$(mktemp -d /tmp/hushpipe-e2e.XXXXXX)
: >"$RESULTS"
# Each tunnelled connection costs a descriptor in the client and the server and two in
# each hushpipe: raise the soft limit as far as the hard one allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; }
check() { if eval "$2"; then ok "$1"; else notok "$1"; fi; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
diag() { echo "# $*"; }
result() { echo "$*" >>"$RESULTS"; diag "$*"; }
# figure LABEL VALUE: a row of the figure table printed at the end (and written to
# $RESULTS). The README's table of this suite's figures uses these labels; `make check`
# (test/docs/check-readme.sh) fails when the two no longer match.
FIGURES=""
figure() { FIGURES="$FIGURES$(printf '    %-50s %s' "$1" "$2")
"; }

PIDS=""
cleanup() {
	for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$S"
}
trap cleanup EXIT

c() { curl -sS --noproxy '*' --max-time 120 "$@"; }
# For `cbg ... &`: $! is then curl's own pid, so it can be killed.
cbg() { exec curl -sS --noproxy '*' --max-time 120 "$@"; }
sha() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }
same() { [ -f "$2" ] && [ "$(sha "$1")" = "$(sha "$2")" ]; }

# wait_until SECONDS COMMAND...: polls COMMAND every 50 ms.
wait_until() {
	local t=$(($1 * 20))
	shift
	while ! "$@" 2>/dev/null; do
		t=$((t - 1))
		[ $t -le 0 ] && return 1
		sleep 0.05
	done
}
log_has() { grep -q -- "$2" "$W/$1.log"; }
log_count() { grep -c -- "$2" "$W/$1.log"; }
log_more() { [ "$(log_count "$1" "$2")" -gt "$3" ]; }
# listening PORT: a TCP socket listens on 127.0.0.1:PORT (read from /proc, so that
# checking connects to nothing).
listening() {
	awk -v p="$(printf '%04X' "$1")" '$2 == "0100007F:" p && $4 == "0A" { f = 1 }
		END { exit !f }' /proc/net/tcp
}
alive() { kill -0 "$1" 2>/dev/null; }
gone() { [ -n "$1" ] && ! kill -0 "$1" 2>/dev/null; }

# start NAME ARGS...: runs hushpipe with its log in $W/NAME.log; pid in PID_NAME.
start() {
	local name=$1
	shift
	"$HP" "$@" 2>"$W/$name.log" &
	local pid=$!
	PIDS="$PIDS $pid"
	eval "PID_$name=$pid"
	if ! wait_until 10 log_has "$name" "listening on"; then
		diag "hushpipe $name did not start:"
		sed 's/^/#   /' "$W/$name.log"
		return 1
	fi
}
# stop NAME: ends hushpipe NAME; nothing when it never started (a case that failed to
# start fails alone, and every later case still runs and reports).
stop() {
	local p
	eval "p=\${PID_$1:-}"
	[ -n "$p" ] || return 0
	kill "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	return 0
}

# background NAME CMD...: a helper process, pid in PID_NAME.
background() {
	local name=$1
	shift
	"$@" >"$W/$name.out" 2>&1 &
	local pid=$!
	PIDS="$PIDS $pid"
	eval "PID_$name=$pid"
}

stats_more() { [ "$(grep -c ' stats: ' "$W/$1.log")" -gt "$2" ]; }
# snap NAME: sends SIGUSR1 and prints the statistics line hushpipe NAME logs for it.
snap() {
	local p before
	eval "p=\${PID_$1:-}"
	[ -n "$p" ] || return 1
	before=$(grep -c ' stats: ' "$W/$1.log")
	kill -USR1 "$p"
	wait_until 5 stats_more "$1" "$before" || return 1
	grep ' stats: ' "$W/$1.log" | tail -1
}
# field LINE NAME: the value of NAME=... in a statistics line.
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# stat_is NAME FIELD VALUE
stat_is() { [ "$(field "$(snap "$1")" "$2")" = "$3" ]; }

read -r PH PD PE PD6 PE6 PDP PEP PEQ DEAD PDX PEX PEY PEO PEW PECHO PDR PER PEN PDI PEI \
	PBLAST PDB PEB PDD PED PTARPIT PDT PET PDH PDL PEL PDM PEM PR1 PR2 PRA PRE <<<"$("$PY" "$HELPER" ports --n 37)"

# ---- Identities and files ----
"$KG" "$W/server.key" >"$W/server.pub" && "$KG" "$W/client.key" >"$W/client.pub" &&
	"$KG" "$W/other.key" >"$W/other.pub" && "$KG" "$W/new.key" >"$W/new.pub" &&
	"$KG" --psk "$W/psk" && "$KG" --psk "$W/psk2" || {
	echo "Bail out! hush-keygen failed"
	exit 1
}
echo "$(cat "$W/client.pub") client" >"$W/server.peers"
printf '# the server\n%s\n' "$(cat "$W/server.pub")" >"$W/client.peers"
SERVER_PUB=$(cat "$W/server.pub")
head -c 1 /dev/urandom >"$W/srv/f1"
head -c 1048576 /dev/urandom >"$W/srv/f1m"
head -c 67108864 /dev/urandom >"$W/srv/f64m"

background httpd "$PY" "$HELPER" httpd --port "$PH" --root "$W/srv" --ready "$W/httpd.ready"
wait_until 10 test -f "$W/httpd.ready" || {
	echo "Bail out! the HTTP server did not start"
	exit 1
}

SRV_ID=(-k "$W/server.key" --peers "$W/server.peers")
CLI_ID=(-k "$W/client.key" --peer "$SERVER_PUB")

# ---- Configuration that must be refused ----
"$HP" -e -s 127.0.0.1:0 -t 127.0.0.1:1 -k "$W/client.key" 2>"$W/noverify.log"
rc=$?
check "-k without --peer or --peers is refused (fails closed)" \
	'[ $rc -eq 1 ] && grep -q "no peer verification" "$W/noverify.log"'
"$HP" -e -s 127.0.0.1:0 -t 127.0.0.1:1 2>"$W/noid.log"
rc=$?
check "no identity at all is refused" '[ $rc -eq 1 ] && grep -q "no identity" "$W/noid.log"'
"$HP" -e -s 127.0.0.1:0 2>/dev/null
rc=$?
check "bad usage exits 2" '[ $rc -eq 2 ]'

# ---- The main tunnel: curl -> hushpipe -e -> hushpipe -d -> http.server ----
start d -d -s "127.0.0.1:$PD" -t "127.0.0.1:$PH" "${SRV_ID[@]}" -j 2 &&
	start e -e -s "127.0.0.1:$PE" -t "127.0.0.1:$PD" "${CLI_ID[@]}" -j 2
check "both ends start (-j 2)" 'alive ${PID_d:-} && alive ${PID_e:-}'

for f in f1 f1m f64m; do
	c -o "$W/dl.$f" "http://127.0.0.1:$PE/$f"
	check "download $f through the tunnel: sha256 identical" 'same "$W/srv/$f" "$W/dl.$f"'
done
for f in f1 f1m f64m; do
	c -T "$W/srv/$f" "http://127.0.0.1:$PE/up-$f" >/dev/null
	check "upload $f through the tunnel (curl -T): sha256 identical" \
		'same "$W/srv/$f" "$W/srv/up/up-$f"'
done
check "each connection logs one close line with the bytes both ways" \
	'grep -q "closed (done): from 127.0.0.1:[0-9]*, [0-9]* B plain->hush, 6710[0-9]\{4\} B hush->plain" "$W/e.log"'
check "the server end logs the client's key on open" \
	'grep -q "open: from 127.0.0.1:[0-9]*, to 127.0.0.1:$PH, peer key $(cat "$W/client.pub")" "$W/d.log"'

# Many concurrent transfers, downloads and uploads mixed.
pids=""
for i in $(seq 1 40); do
	if [ $((i % 2)) -eq 0 ]; then
		c -o "$W/cdl.$i" "http://127.0.0.1:$PE/f1m" &
	else
		c -T "$W/srv/f1m" "http://127.0.0.1:$PE/cup-$i" -o /dev/null &
	fi
	pids="$pids $!"
done
cfail=0
for p in $pids; do wait "$p" || cfail=$((cfail + 1)); done
cbad=0
for i in $(seq 1 40); do
	if [ $((i % 2)) -eq 0 ]; then
		same "$W/srv/f1m" "$W/cdl.$i" || cbad=$((cbad + 1))
	else
		same "$W/srv/f1m" "$W/srv/up/cup-$i" || cbad=$((cbad + 1))
	fi
done
check "40 concurrent curls (20 down, 20 up, 1 MiB each): all succeed, all intact" \
	'[ $cfail -eq 0 ] && [ $cbad -eq 0 ]'

# ---- Addresses: Unix sockets, IPv6, host names ----
# Every other case uses numeric addresses; this one names its target by host name, when
# the machine can resolve one (containers and minimal roots may lack /etc/hosts).
if "$PY" -c 'import socket; socket.getaddrinfo("localhost", 80, socket.AF_INET)' 2>/dev/null; then
	TARGET_HOST=localhost
else
	TARGET_HOST=127.0.0.1
fi
start du -d -s "$S/d.sock" -t "$TARGET_HOST:$PH" "${SRV_ID[@]}" -j 1 &&
	start eu -e -s "$S/e.sock" -t "$S/d.sock" "${CLI_ID[@]}" -j 2
c --unix-socket "$S/e.sock" -o "$W/dl.unix" "http://tunnel/f1m"
check "Unix socket in, Unix socket between" 'same "$W/srv/f1m" "$W/dl.unix"'
if [ "$TARGET_HOST" = localhost ]; then
	check "a target named by host name (localhost)" 'same "$W/srv/f1m" "$W/dl.unix"'
else
	skip "a target named by host name" "localhost does not resolve on this machine"
fi
if "$PY" -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
	start d6 -d -s "[::1]:$PD6" -t "127.0.0.1:$PH" "${SRV_ID[@]}" -j 1 &&
		start e6 -e -s "[::1]:$PE6" -t "[::1]:$PD6" "${CLI_ID[@]}" -j 1
	c -g -o "$W/dl.v6" "http://[::1]:$PE6/f1m"
	check "IPv6 addresses on both hops" 'same "$W/srv/f1m" "$W/dl.v6"'
	stop e6
	stop d6
else
	skip "IPv6 addresses on both hops" "no IPv6 loopback"
fi
stop eu
stop du
check "a Unix listening socket is removed at exit" '[ ! -e "$S/e.sock" ] && [ ! -e "$S/d.sock" ]'

# ---- Pre-shared key mode (NNpsk0), with ChaCha20-Poly1305 ----
start dp -d -s "127.0.0.1:$PDP" -t "127.0.0.1:$PH" --psk "$W/psk" --cipher chacha20-poly1305 -j 1 &&
	start ep -e -s "127.0.0.1:$PEP" -t "127.0.0.1:$PDP" --psk "$W/psk" --cipher chacha20-poly1305 -j 1 &&
	start eq -e -s "127.0.0.1:$PEQ" -t "127.0.0.1:$PDP" --psk "$W/psk2" --cipher chacha20-poly1305 -j 1
c -o "$W/dl.psk" "http://127.0.0.1:$PEP/f1m"
check "--psk mode with ChaCha20-Poly1305: download intact" 'same "$W/srv/f1m" "$W/dl.psk"'
c -o "$W/dl.psk2" "http://127.0.0.1:$PEQ/f1m" 2>/dev/null
rc=$?
check "a wrong pre-shared key: no data, the handshake fails" \
	'[ $rc -ne 0 ] && [ ! -s "$W/dl.psk2" ] && wait_until 5 log_has dp "handshake failed: handshake message malformed"'
stop eq
stop ep
stop dp

# ---- Failure cases ----
# Unknown peer: a client key the server does not list.
start eo -e -s "127.0.0.1:$PEO" -t "127.0.0.1:$PD" -k "$W/other.key" --peer "$SERVER_PUB" -j 1
c -o "$W/dl.other" "http://127.0.0.1:$PEO/f1" 2>/dev/null
rc=$?
check "unknown peer: refused by the server, curl gets nothing" \
	'[ $rc -ne 0 ] && [ ! -s "$W/dl.other" ] && wait_until 5 log_has d "refusing peer key $(cat "$W/other.pub")" && log_has d "handshake failed: peer.s static key is not allowed"'
stop eo
# Wrong key: the client expects another server key.
start ew -e -s "127.0.0.1:$PEW" -t "127.0.0.1:$PD" -k "$W/client.key" --peer "$(cat "$W/other.pub")" -j 1
c -o "$W/dl.wrong" "http://127.0.0.1:$PEW/f1" 2>/dev/null
rc=$?
check "wrong server key: the client refuses the server, curl gets nothing" \
	'[ $rc -ne 0 ] && [ ! -s "$W/dl.wrong" ] && wait_until 5 log_has ew "refusing peer key $SERVER_PUB"'
stop ew

# Target down, on either hop; failures must be quick, not hangs.
start dx -d -s "127.0.0.1:$PDX" -t "127.0.0.1:$DEAD" "${SRV_ID[@]}" -j 1 &&
	start ex -e -s "127.0.0.1:$PEX" -t "127.0.0.1:$PDX" "${CLI_ID[@]}" -j 1 &&
	start ey -e -s "127.0.0.1:$PEY" -t "127.0.0.1:$DEAD" "${CLI_ID[@]}" -j 1
t0=$(date +%s)
c -o /dev/null "http://127.0.0.1:$PEX/f1" 2>/dev/null
rc=$?
t1=$(date +%s)
check "plaintext target down: curl fails at once, the server end logs it" \
	'[ $rc -ne 0 ] && [ $((t1 - t0)) -lt 5 ] && wait_until 5 log_has dx "cannot connect to 127.0.0.1:$DEAD"'
c -o /dev/null "http://127.0.0.1:$PEY/f1" 2>/dev/null
rc=$?
check "hush endpoint down: curl fails, the client end logs it" \
	'[ $rc -ne 0 ] && wait_until 5 log_has ey "cannot connect to 127.0.0.1:$DEAD"'
stop ey
stop ex
stop dx

# The target closes (or resets) in the middle of a response: curl must see an error,
# never a clean end, and the tunnel goes on working.
c -o "$W/dl.cut" "http://127.0.0.1:$PE/cut/8388608" 2>/dev/null
rc=$?
check "target closes mid-transfer: curl reports a partial transfer (exit 18)" '[ $rc -eq 18 ]'
c -o "$W/dl.reset" "http://127.0.0.1:$PE/reset/8388608" 2>/dev/null
rc=$?
check "target resets mid-transfer: curl fails" '[ $rc -ne 0 ]'
c -o "$W/dl.after" "http://127.0.0.1:$PE/f1m"
check "the tunnel still works afterwards" 'same "$W/srv/f1m" "$W/dl.after"'

# One client killed mid-transfer; the others complete intact.
pids=""
for i in 1 2 3 4; do
	cbg --limit-rate 24M -o "$W/kdl.$i" "http://127.0.0.1:$PE/f64m" &
	pids="$pids $!"
done
victim=${pids##* }
# Killed once its transfer is under way (it has bytes), while it has most still to come.
wait_until 20 test -s "$W/kdl.4"
kill -9 "$victim"
kfail=0
for p in $pids; do
	[ "$p" = "$victim" ] && continue
	wait "$p" || kfail=$((kfail + 1))
done
wait "$victim" 2>/dev/null
kbad=0
for i in 1 2 3; do same "$W/srv/f64m" "$W/kdl.$i" || kbad=$((kbad + 1)); done
check "one client killed mid-transfer: the 3 others complete intact" \
	'[ $kfail -eq 0 ] && [ $kbad -eq 0 ]'
check "the killed client's connection is logged as failed" \
	'wait_until 5 grep -q "closed (plaintext [a-z]*: \(Broken pipe\|Connection reset by peer\))" "$W/e.log"'

background echo "$PY" "$HELPER" echo --port "$PECHO" --status "$W/echo.count"
wait_until 10 test -f "$W/echo.count"

# ---- Limits and timeouts ----
background tarpit "$PY" "$HELPER" tarpit --port "$PTARPIT" --ready "$W/tarpit.ready"
wait_until 10 test -f "$W/tarpit.ready"
start dt -d -s "127.0.0.1:$PDT" -t "127.0.0.1:$PTARPIT" "${SRV_ID[@]}" -j 1 --connect-timeout 1 &&
	start et -e -s "127.0.0.1:$PET" -t "127.0.0.1:$PDT" "${CLI_ID[@]}" -j 1
t0=$(date +%s.%N)
c -o /dev/null "http://127.0.0.1:$PET/f1" 2>/dev/null
rc=$?
dt=$(awk "BEGIN { print $(date +%s.%N) - $t0 }")
check "--connect-timeout 1 against a target that never answers: curl fails after about 1 s ($dt s)" \
	'[ $rc -ne 0 ] && awk "BEGIN { exit !($dt >= 0.9 && $dt < 4) }" && log_has dt "cannot connect to 127.0.0.1:$PTARPIT: Connection timed out"'
stop et
stop dt

start dh -d -s "127.0.0.1:$PDH" -t "127.0.0.1:$PECHO" "${SRV_ID[@]}" -j 1 --handshake-timeout 1
dt=$("$PY" "$HELPER" silent --port "$PDH")
check "--handshake-timeout 1: a peer that says nothing is dropped after about 1 s ($dt s)" \
	'awk "BEGIN { exit !($dt >= 0.9 && $dt < 4) }" && wait_until 2 log_has dh "handshake failed: timed out (ETIMEDOUT)"'
stop dh

start dl -d -s "127.0.0.1:$PDL" -t "127.0.0.1:$PECHO" "${SRV_ID[@]}" -j 1 --idle-timeout 1 &&
	start el -e -s "127.0.0.1:$PEL" -t "127.0.0.1:$PDL" "${CLI_ID[@]}" -j 1
dt=$("$PY" "$HELPER" linger --port "$PEL")
check "--idle-timeout 1: a connection that went quiet is closed within 1-3 s ($dt s)" \
	'awk "BEGIN { exit !($dt >= 0.9 && $dt < 4) }" && wait_until 2 log_has dl "closed (idle timeout)"'
stop el
stop dl

start dm -d -s "127.0.0.1:$PDM" -t "127.0.0.1:$PECHO" "${SRV_ID[@]}" -j 2 --max-conns 2 &&
	start em -e -s "127.0.0.1:$PEM" -t "127.0.0.1:$PDM" "${CLI_ID[@]}" -j 1
background full "$PY" "$HELPER" idle --port "$PEM" --n 2 --status "$W/echo.count" \
	--ready "$W/full.ready" --go "$W/full.go"
wait_until 20 test -f "$W/full.ready"
"$PY" "$HELPER" ping --port "$PEM" --timeout 2
rc=$?
check "--max-conns 2: a third connection waits while two are open" \
	'[ $rc -ne 0 ] && log_has dm "connection limit 2 reached; accepting paused"'
touch "$W/full.go"
wait "${PID_full:-}"
check "--max-conns 2: accepting resumes once they close" \
	'wait_until 10 "$PY" "$HELPER" ping --port "$PEM" --timeout 2 && log_has dm "accepting again"'
stop em
stop dm

# ---- --reuseport: two hushpipe processes share one listening address ----
start dra -d -s "127.0.0.1:$PRA" -t "127.0.0.1:$PECHO" "${SRV_ID[@]}" -j 1 --reuseport &&
	start drb -d -s "127.0.0.1:$PRA" -t "127.0.0.1:$PECHO" "${SRV_ID[@]}" -j 1 --reuseport &&
	start era -e -s "127.0.0.1:$PRE" -t "127.0.0.1:$PRA" "${CLI_ID[@]}" -j 1
check "--reuseport: a second -d process starts on the same address" \
	'alive ${PID_dra:-} && alive ${PID_drb:-} && log_has drb "shared with other processes"'
"$HP" -d -s "127.0.0.1:$PRA" -t "127.0.0.1:$PECHO" "${SRV_ID[@]}" -j 1 2>"$W/drc.log"
rc=$?
check "without --reuseport a third refuses the address in use" \
	'[ $rc -ne 0 ] && grep -q "Address already in use" "$W/drc.log"'
background shared "$PY" "$HELPER" idle --port "$PRE" --n 64 --status "$W/echo.count" \
	--ready "$W/shared.ready" --go "$W/shared.go"
wait_until 30 test -f "$W/shared.ready"
touch "$W/shared.go"
wait "${PID_shared:-}"
rc=$?
acc_a=$(field "$(snap dra)" accepted)
acc_b=$(field "$(snap drb)" accepted)
# The kernel hashes each connection to one of the two: all 64 on one has odds 2^-63.
check "--reuseport: 64 connections pushed through both processes, every echo intact ($acc_a and $acc_b accepted)" \
	'[ $rc -eq 0 ] && [ "${acc_a:-0}" -gt 0 ] && [ "${acc_b:-0}" -gt 0 ] && [ $((acc_a + acc_b)) -eq 64 ]'
stop era
stop dra
stop drb

# ---- SIGHUP: the peers file is reloaded, established connections stay ----
echo "$(cat "$W/client.pub")" >"$W/reload.peers"
start dr -d -s "127.0.0.1:$PDR" -t "127.0.0.1:$PECHO" -k "$W/server.key" --peers "$W/reload.peers" -j 2 &&
	start er -e -s "127.0.0.1:$PER" -t "127.0.0.1:$PDR" "${CLI_ID[@]}" -j 1 &&
	start en -e -s "127.0.0.1:$PEN" -t "127.0.0.1:$PDR" -k "$W/new.key" --peer "$SERVER_PUB" -j 1
background held "$PY" "$HELPER" idle --port "$PER" --n 3 --status "$W/echo.count" \
	--ready "$W/held.ready" --go "$W/held.go"
wait_until 20 test -f "$W/held.ready"
"$PY" "$HELPER" ping --port "$PEN"
rc=$?
check "before SIGHUP a new key is refused" '[ $rc -ne 0 ]'
echo "$(cat "$W/new.pub") new" >"$W/reload.peers"
kill -HUP "${PID_dr:-}"
wait_until 5 log_has dr "reloaded: 1 peer keys"
"$PY" "$HELPER" ping --port "$PEN"
rc=$?
check "after SIGHUP the new key is accepted" '[ $rc -eq 0 ]'
"$PY" "$HELPER" ping --port "$PER"
rc=$?
check "after SIGHUP the removed key is refused for new connections" '[ $rc -ne 0 ]'
touch "$W/held.go"
wait "${PID_held:-}"
rc=$?
check "connections established before SIGHUP (with the removed key) still carry data" \
	'[ $rc -eq 0 ]'
echo "not a key" >"$W/reload.peers"
kill -HUP "${PID_dr:-}"
wait_until 5 log_has dr "not reloaded"
"$PY" "$HELPER" ping --port "$PEN"
rc=$?
check "a malformed peers file is not loaded: the previous list stays" \
	'[ $rc -eq 0 ] && log_has dr "reload.peers:1: not a peer key line"'
stop en
stop er

# ---- Thousands of idle connections: heap per connection, then each used once ----
IDLE=${E2E_IDLE_CONNS:-}
if [ -z "$IDLE" ]; then
	nofile=$(ulimit -n)
	IDLE=$(((nofile - 300) / 2))
	[ "$IDLE" -gt 9800 ] && IDLE=9800
	[ "$IDLE" -lt 100 ] && IDLE=100
fi
start di -d -s "127.0.0.1:$PDI" -t "127.0.0.1:$PECHO" "${SRV_ID[@]}" -j 2 --max-conns "$IDLE" &&
	start ei -e -s "127.0.0.1:$PEI" -t "127.0.0.1:$PDI" "${CLI_ID[@]}" -j 2 --max-conns "$IDLE"
# One connection first, so that what the first handshake sets up once (OpenSSL's
# algorithm fetches, the loops' cipher context caches) is not charged to the others.
"$PY" "$HELPER" ping --port "$PEI"
wait_until 10 stat_is ei conns 0 && wait_until 10 stat_is di conns 0
s0_d=$(snap di) && s0_e=$(snap ei)
done0_e=$(field "$s0_e" closed_clean) && done0_d=$(field "$s0_d" closed_clean)
t0=$(date +%s.%N)
background idle "$PY" "$HELPER" idle --port "$PEI" --n "$IDLE" --status "$W/echo.count" \
	--ready "$W/idle.ready" --go "$W/idle.go"
wait_until 240 test -f "$W/idle.ready"
t1=$(date +%s.%N)
opened=$(cat "$W/idle.ready" 2>/dev/null || echo 0)
check "$IDLE idle connections open end to end through the tunnel" '[ "$opened" = "$IDLE" ]'
# Both ends have counted every connection before the heap is read.
wait_until 20 stat_is ei conns "$IDLE" && wait_until 20 stat_is di conns "$IDLE"
s1_d=$(snap di) && s1_e=$(snap ei)
conns_d=$(field "$s1_d" conns) && conns_e=$(field "$s1_e" conns)
out_d=$(field "$s1_d" pool_bufs_out) && out_e=$(field "$s1_e" pool_bufs_out)
heap0_d=$(field "$s0_d" heap) && heap0_e=$(field "$s0_e" heap)
heap1_d=$(field "$s1_d" heap) && heap1_e=$(field "$s1_e" heap)
ret0_d=$(field "$s0_d" pool_bytes_retained) && ret0_e=$(field "$s0_e" pool_bytes_retained)
ret1_d=$(field "$s1_d" pool_bytes_retained) && ret1_e=$(field "$s1_e" pool_bytes_retained)
hush0_e=$(field "$s0_e" hush_heap) && hush1_e=$(field "$s1_e" hush_heap)
hush0_d=$(field "$s0_d" hush_heap) && hush1_d=$(field "$s1_d" hush_heap)
check "both ends count them ($conns_e and $conns_d)" \
	'[ "$conns_d" = "$IDLE" ] && [ "$conns_e" = "$IDLE" ]'
check "idle, they hold no pool buffer at either end" '[ "$out_d" = 0 ] && [ "$out_e" = 0 ]'
if [ "$heap1_e" = 0 ] || [ "$heap1_d" = 0 ]; then
	skip "heap per idle tunnelled connection" "mallinfo2() reports no heap (AddressSanitizer's allocator)"
elif [ "$opened" = "$IDLE" ] && [ "$IDLE" -gt 0 ]; then
	per_e=$(((heap1_e - heap0_e - (ret1_e - ret0_e)) / IDLE))
	per_d=$(((heap1_d - heap0_d - (ret1_d - ret0_d)) / IDLE))
	figure "idle tunnelled connections open at once" "$IDLE"
	figure "heap per idle tunnelled connection, -e end (B)" "$per_e"
	figure "heap per idle tunnelled connection, -d end (B)" "$per_d"
	figure "pool buffers held while they are idle" "$((out_d + out_e))"
	result "idle_conns=$IDLE open_seconds=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")"
	result "heap_per_idle_conn_encrypt_end=$per_e B (heap $heap0_e -> $heap1_e, pool retained $ret0_e -> $ret1_e; hush's own $(((hush1_e - hush0_e - (ret1_e - ret0_e)) / IDLE)) B)"
	result "heap_per_idle_conn_decrypt_end=$per_d B (heap $heap0_d -> $heap1_d, pool retained $ret0_d -> $ret1_d; hush's own $(((hush1_d - hush0_d - (ret1_d - ret0_d)) / IDLE)) B)"
	check "heap per idle tunnelled connection is under 2 KiB at each end ($per_e B, $per_d B)" \
		'[ "$per_e" -lt 2048 ] && [ "$per_d" -lt 2048 ]'
else
	notok "heap per idle tunnelled connection measured"
fi
touch "$W/idle.go"
wait "${PID_idle:-}"
rc=$?
check "then every idle connection is used once and its echo checked" '[ $rc -eq 0 ]'
diag "$(cat "$W/idle.out")"
check "all of them close cleanly at both ends" \
	'wait_until 30 stat_is ei closed_clean $((done0_e + IDLE)) && wait_until 10 stat_is di closed_clean $((done0_d + IDLE)) && stat_is ei closed_error 0 && stat_is di closed_error 0'
stop ei
stop di

# ---- Throughput: the tunnel against a direct connection, same run ----
background blast "$PY" "$HELPER" blast-server --port "$PBLAST" --ready "$W/blast.ready"
wait_until 10 test -f "$W/blast.ready"
start db -d -s "127.0.0.1:$PDB" -t "127.0.0.1:$PBLAST" "${SRV_ID[@]}" -j 2 &&
	start eb -e -s "127.0.0.1:$PEB" -t "127.0.0.1:$PDB" "${CLI_ID[@]}" -j 2
# The same three hops without cryptography: two plaintext relays in a row.
RELAY=$HUSH_BUILDDIR/test/e2e/plain-relay
"$RELAY" "$PR1" "$PBLAST" 2>/dev/null &
PIDS="$PIDS $!"
"$RELAY" "$PR2" "$PR1" 2>/dev/null &
PIDS="$PIDS $!"
BYTES=$((1024 * 1048576))
wait_until 10 listening "$PR1" && wait_until 10 listening "$PR2"
direct=$("$PY" "$HELPER" blast-client --port "$PBLAST" --bytes $BYTES)
relayed=$("$PY" "$HELPER" blast-client --port "$PR2" --bytes $BYTES)
tunnel=$("$PY" "$HELPER" blast-client --port "$PEB" --bytes $BYTES)
figure "1 GiB stream: direct connection (MB/s)" "$direct"
figure "  two plaintext relays, the tunnel's hops (MB/s)" "$relayed"
figure "  through the tunnel (MB/s)" "$tunnel"
result "throughput_1GiB_stream direct=$direct MB/s two_plain_relays=$relayed MB/s tunnel=$tunnel MB/s"
check "a 1 GiB stream through the tunnel arrives whole" '[ -n "$tunnel" ]'
cd_direct=$(c -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$PH/f64m")
cd_tunnel=$(c -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$PE/f64m")
figure "64 MiB curl download: direct (MB/s)" "$(awk "BEGIN { printf \"%.0f\", $cd_direct / 1e6 }")"
figure "  through the tunnel (MB/s)" "$(awk "BEGIN { printf \"%.0f\", $cd_tunnel / 1e6 }")"
result "throughput_64MiB_curl direct=$(awk "BEGIN { printf \"%.1f\", $cd_direct / 1e6 }") MB/s tunnel=$(awk "BEGIN { printf \"%.1f\", $cd_tunnel / 1e6 }") MB/s"
stop eb
stop db

# ---- SIGTERM: stop accepting, drain, exit ----
opens=$(log_count d " open: ")
c --limit-rate 16M -o "$W/dl.drain" "http://127.0.0.1:$PE/f64m" &
slow=$!
# SIGTERM once the transfer is in flight: its connection has reached the target.
wait_until 20 log_more d " open: " "$opens"
kill -TERM "${PID_d:-}"
wait_until 5 log_has d "SIGTERM: no longer accepting; draining 1 connections"
c -o /dev/null "http://127.0.0.1:$PE/f1" 2>/dev/null
rc=$?
check "SIGTERM: new connections are refused while draining" '[ $rc -ne 0 ]'
check "SIGTERM: the connection in flight is still being served" 'alive ${PID_d:-}'
wait "$slow"
rc=$?
check "SIGTERM: the transfer in flight completes intact" '[ $rc -eq 0 ] && same "$W/srv/f64m" "$W/dl.drain"'
wait_until 10 gone "${PID_d:-}"
wait "${PID_d:-}"
rc=$?
check "SIGTERM: then hushpipe exits with status 0" '[ $rc -eq 0 ] && log_has d "exiting"'

start dd -d -s "127.0.0.1:$PDD" -t "127.0.0.1:$PECHO" "${SRV_ID[@]}" -j 1 --drain-timeout 1 \
	--pidfile "$W/dd.pid" &&
	start ed -e -s "127.0.0.1:$PED" -t "127.0.0.1:$PDD" "${CLI_ID[@]}" -j 1
background held2 "$PY" "$HELPER" idle --port "$PED" --n 2 --status "$W/echo.count" \
	--ready "$W/held2.ready" --go "$W/held2.go"
wait_until 20 test -f "$W/held2.ready"
check "--pidfile holds the process id" '[ "$(cat "$W/dd.pid" 2>/dev/null)" = "${PID_dd:-}" ]'
kill -TERM "${PID_dd:-}"
check "SIGTERM with idle connections: aborted at the drain deadline, then exit" \
	'wait_until 5 gone ${PID_dd:-} && log_has dd "drain deadline passed: aborting 2 connections"'
check "the pidfile is removed at exit" '[ ! -e "$W/dd.pid" ]'
kill -INT "${PID_ed:-}"
check "SIGINT drains too" 'wait_until 5 gone ${PID_ed:-}'
touch "$W/held2.go"

stop e
result "    measured by run-hushpipe-e2e.sh"
printf '%s' "$FIGURES" >>"$RESULTS"
printf '%s' "$FIGURES" | sed 's/^/# /'
echo "1..$n"
