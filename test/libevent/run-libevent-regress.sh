#!/bin/sh
# libevent's own bufferevent regression cases with the hush bufferevent substituted
# (`make check-libevent`). Fetches Debian's source of the installed libevent (see
# libevent-source.sh), builds its regress program twice, as shipped and with
# hush-shim.h force-included into test/regress_bufferevent.c (every
# bufferevent_socket_new() becomes a hush socket bufferevent) and test/regress_ssl.c
# (the bufferevent_openssl_* constructors become hush's), runs every case of the
# bufferevent/ and ssl/ groups in both, one process per case, and writes the table to
# docs/libevent-regress.md (HUSH_LIBEVENT_DOC): each case's result with hush, the
# first failed check, and the reason from regress-notes.txt. Exits 77 (skip) when the
# source cannot be fetched; 1 if a case fails with hush for no recorded reason or a
# recorded reason no longer applies, so the notes stay true.
#
# Environment: HUSH_SRCDIR, HUSH_BUILDDIR (a built hush tree); HUSH_LIBEVENT_WORK (the
# work directory, default $HUSH_BUILDDIR/libevent-work); HUSH_LIBEVENT_SRC (an unpacked
# Debian source tree of the installed version, copied instead of fetched);
# HUSH_LIBEVENT_CASES (a space-separated subset of cases, for debugging; the doc is
# then not written); HUSH_LIBEVENT_TIMEOUT (seconds per case, default 60);
# HUSH_LIBEVENT_REUSE_RESULTS=1 (see below).
set -eu
. "${HUSH_SRCDIR:?}/test/libevent/libevent-source.sh"
doc=${HUSH_LIBEVENT_DOC:-$HUSH_SRCDIR/docs/libevent-regress.md}
per_case=${HUSH_LIBEVENT_TIMEOUT:-60}

[ -f "$HUSH_BUILDDIR/libhush.la" ] || { echo "build hush first (make)" >&2; exit 1; }
le_fetch
le_build

# The shimmed regress: the two test files compiled again from a copy, with the shim
# force-included, then linked with the shim and libhush in place of the originals.
hb=$LE_BUILD/hush
mkdir -p "$hb"
cc=$(le_make_var CC)
cppflags="$(le_make_var DEFS) -I$LE_BUILD -I$LE_SRC -I$LE_SRC/compat -I$LE_BUILD/include \
	-I$LE_SRC/include -I$LE_BUILD/test -I$LE_SRC/test $(le_make_var test_regress_CPPFLAGS)"
cflags="$(le_make_var CFLAGS) $(le_make_var AM_CFLAGS)"
hushflags="-I$HUSH_SRCDIR/include -I$HUSH_BUILDDIR/include"
# The port's edits to test bodies, each one hush/bufferevent.h asks of a port:
# - regress_bufferevent.c's event callbacks errorcb, wm_errorcb and sender_errorcb
#   take every event for a failure; after a handshake hush reports CONNECTED on both
#   sides, as bufferevent_openssl does, so each gets the header's one line first.
sed -e '/^\(errorcb\|wm_errorcb\|sender_errorcb\)(struct bufferevent \*bev, short what, void \*[a-z]*)$/,/^{$/ s/^{$/{ if (what \& BEV_EVENT_CONNECTED) return;/' \
	"$LE_SRC/test/regress_bufferevent.c" >"$hb/regress_bufferevent.c"
[ "$(grep -c 'if (what & BEV_EVENT_CONNECTED) return;' "$hb/regress_bufferevent.c")" = 3 ] ||
	{ echo "regress_bufferevent.c's event callbacks were not found: update the sed above" >&2; exit 1; }
# - regress_ssl.c checks the TLS peer certificate when connected (the server expects
#   none, the client the server's); a hush port checks instead that the handshake
#   verified the peer's static key, which XX does on both sides.
sed -e 's/tt_assert(peer_cert == NULL);/tt_assert(hush_shim_peer_verified(bev));/' \
	-e 's/tt_assert(peer_cert != NULL);/tt_assert(hush_shim_peer_verified(bev));/' \
	"$LE_SRC/test/regress_ssl.c" >"$hb/regress_ssl.c"
[ "$(grep -c 'hush_shim_peer_verified' "$hb/regress_ssl.c")" = 2 ] ||
	{ echo "regress_ssl.c's certificate checks were not found: update the sed above" >&2; exit 1; }
echo "building libevent's regress with the hush shim"
# shellcheck disable=SC2086
{
	$cc $cppflags $cflags -include "$here/hush-shim.h" -DHUSH_SHIM_SOCKET $hushflags \
		-c "$hb/regress_bufferevent.c" -o "$hb/regress_bufferevent.o" &&
	$cc $cppflags $cflags -include "$here/hush-shim.h" -DHUSH_SHIM_SSL $hushflags \
		-c "$hb/regress_ssl.c" -o "$hb/regress_ssl.o" &&
	$cc $cppflags -g -O2 -Wall -Wextra $hushflags -c "$here/hush-shim.c" -o "$hb/hush-shim.o"
} >"$hb/compile.log" 2>&1 || { cat "$hb/compile.log" >&2; exit 1; }
objs=
for o in $(le_make_var test_regress_OBJECTS); do
	case $o in
	*regress_bufferevent.o) objs="$objs $hb/regress_bufferevent.o" ;;
	*regress_ssl.o) objs="$objs $hb/regress_ssl.o" ;;
	*) objs="$objs $o" ;;
	esac
done
# shellcheck disable=SC2086
(cd "$LE_BUILD" && /bin/sh ./libtool --silent --tag=CC --mode=link $cc $cflags \
	$(le_make_var test_regress_LDFLAGS) -o test/regress-hush $objs "$hb/hush-shim.o" \
	"$HUSH_BUILDDIR/libhush.la" $(le_make_var test_regress_LDADD) $(le_make_var LIBS) -ldl) \
	>"$hb/link.log" 2>&1 || { cat "$hb/link.log" >&2; exit 1; }

# The reduction of the filter cases' stall (filter-enable-stall.c), hush's filter
# flavour against libevent's own filter type.
# shellcheck disable=SC2086
{
	$cc $cppflags -g -O2 -Wall -Wextra $hushflags -c "$here/filter-enable-stall.c" \
		-o "$hb/filter-enable-stall.o" &&
	(cd "$LE_BUILD" && /bin/sh ./libtool --silent --tag=CC --mode=link $cc -g -O2 \
		-o "$hb/filter-enable-stall" "$hb/filter-enable-stall.o" libevent_core.la \
		"$HUSH_BUILDDIR/libhush.la" -lcrypto)
} >"$hb/stall-build.log" 2>&1 || { cat "$hb/stall-build.log" >&2; exit 1; }
stall=
for m in hush libevent; do
	for d in "" defer; do
		# shellcheck disable=SC2086
		line=$("$hb/filter-enable-stall" "$m" $d 2>&1 || true)
		stall="$stall
    $line"
	done
done
echo "filter-enable-stall:$stall"

# One process per case: a case that hangs is cut at the timeout and counted failed.
# Prints "status<TAB>used<TAB>first failed check", used being "hush" when the shim
# made a hush bufferevent in the case (it says so once on stderr) and "-" otherwise.
run_case() {
	log=$hb/logs/$(echo "$2" | tr / _).$1.log
	rc=0
	t0=$(date +%s)
	(cd "$LE_BUILD" && timeout -k 5 "$per_case" "./test/$1" --verbose "$2") >"$log" 2>&1 || rc=$?
	t1=$(date +%s)
	first=$(grep -m 1 -E '^ *FAIL ' "$log" | sed -e 's/^ *FAIL *//' -e 's#^[^ ]*/##' \
		-e "s#$2: exited.*##" -e 's/\[Lost connection!\].*//' -e 's/[|`]/ /g' | cut -c 1-150 || true)
	used=-
	grep -q 'hush-shim: made a hush bufferevent' "$log" && used=hush
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		printf 'fail\t%s\ttimed out after %ss %s\n' "$used" "$per_case" "$first"
	elif grep -qE '^0 tests ok\.  \([1-9][0-9]* skipped\)' "$log"; then
		printf 'skip\t%s\t\n' "$used"
	elif [ "$rc" = 0 ] && grep -q '^1 tests ok.  (0 skipped)' "$log"; then
		printf 'pass\t%s\t\n' "$used"
	else
		if grep -q 'Lost connection!' "$log"; then
			first="${first:+$first; }the case's process died after $((t1 - t0)) s (tinytest: [Lost connection!]; its alarm is 30 s)"
		fi
		[ -n "$first" ] || first=$(grep -v '^ *$' "$log" | tail -n 1 | sed 's/[|`]/ /g' | cut -c 1-150)
		printf 'fail\t%s\t%s\n' "$used" "$first"
	fi
}

mkdir -p "$hb/logs"
cases=${HUSH_LIBEVENT_CASES:-$(cd "$LE_BUILD" && ./test/regress --list-tests |
	sed -n 's/^ *\(\(bufferevent\|ssl\)\/[^ ]*\).*$/\1/p')}
results=$hb/results.txt
# HUSH_LIBEVENT_REUSE_RESULTS=1 writes the doc from the last run's results (to work on
# the notes or the doc without running the cases again).
[ "${HUSH_LIBEVENT_REUSE_RESULTS:-0}" = 1 ] && [ -s "$results" ] && cases=
[ -z "$cases" ] || : >"$results"
for c in $cases; do
	plain=$(run_case regress "$c")
	hush=$(run_case regress-hush "$c")
	printf '%s\t%s\t%s\n' "$c" "$(echo "$plain" | cut -f 1)" "$hush" >>"$results"
	printf '%-60s libevent %-4s  hush %s\n' "$c" "$(echo "$plain" | cut -f 1)" "$(echo "$hush" | cut -f 1)"
done

total=$(wc -l <"$results")
pass=$(awk -F '\t' '$3 == "pass"' "$results" | wc -l)
plainpass=$(awk -F '\t' '$2 == "pass"' "$results" | wc -l)
unexplained=0
stale=0
# The note for case $1 in column $2 (hush or libevent): "category<TAB>reason".
note_for() {
	awk -F '\t' -v c="$1" -v col="$2" '$1 == c && $2 == col { print $3 "\t" $4 }' \
		"$here/regress-notes.txt"
}
while IFS='	' read -r c plain st used first; do
	for col in hush libevent; do
		if [ "$col" = hush ]; then r=$st; else r=$plain; fi
		note=$(note_for "$c" "$col")
		if [ "$r" = fail ] && [ -z "$note" ]; then
			echo "UNEXPLAINED: $c fails ($col column): $first" >&2
			unexplained=$((unexplained + 1))
		elif [ "$r" != fail ] && [ -n "$note" ]; then
			echo "STALE NOTE: $c no longer fails ($col column); regress-notes.txt still explains a failure" >&2
			stale=$((stale + 1))
		fi
	done
done <"$results"
used=$(awk -F '\t' '$4 == "hush"' "$results" | wc -l)
usedpass=$(awk -F '\t' '$4 == "hush" && $3 == "pass"' "$results" | wc -l)
skipped=$(awk -F '\t' '$3 == "skip"' "$results" | wc -l)
# The hush failures by the category of their recorded reason.
bycat=$(awk -F '\t' 'NR == FNR { if ($2 == "hush") cat[$1] = $3; next }
	$3 == "fail" { n[cat[$1] == "" ? "unexplained" : cat[$1]]++ }
	END { for (c in n) printf "%s%d %s", (s++ ? ", " : ""), n[c], c }' \
	"$here/regress-notes.txt" "$results")
summary="$pass of $total cases pass with hush substituted, $skipped skipped, $((total - pass - skipped)) fail${bycat:+ ($bycat)} (libevent as shipped: $plainpass of $total pass); hush took part in $used cases, of which $usedpass pass"
echo "$summary"

if [ -z "${HUSH_LIBEVENT_CASES:-}" ]; then
	commit=$(git -C "$HUSH_SRCDIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=$(git -C "$HUSH_SRCDIR" status --porcelain --untracked-files=no -- src include \
		test/libevent 2>/dev/null | grep -q . && echo ' (with uncommitted changes to src, include or test/libevent)' || true)
	{
		echo "# libevent's bufferevent regression cases with hush substituted"
		echo
		echo "Generated by \`make check-libevent\` (test/libevent/run-libevent-regress.sh);"
		echo "do not edit. $(date -u '+%Y-%m-%d %H:%M UTC'), libevent $LE_VERSION (Debian's"
		echo "source of the installed package), hush commit $commit$dirty."
		echo
		echo "The \`bufferevent/\` and \`ssl/\` groups of libevent's \`test/regress\`, each case run in"
		echo "its own process, once as libevent ships it and once with test/libevent/hush-shim.h"
		echo "force-included: in regress_bufferevent.c every \`bufferevent_socket_new()\` makes a"
		echo "hush socket bufferevent; in regress_ssl.c \`bufferevent_openssl_socket_new()\` and"
		echo "\`bufferevent_openssl_filter_new()\` make hush's socket and filter flavours (a TLS"
		echo "handshake becomes a Noise XX handshake; a connection opened as established gets raw"
		echo "keys), and the certificate checks become checks of the peer's verified key."
		echo "Cases that make no socket bufferevent (pairs, libevent's own filters over pairs)"
		echo "run unchanged; they, and cases where the shim could make none, are marked \"no hush"
		echo "bufferevent was made\"."
		echo
		echo "**$summary.**"
		echo
		echo "Categories: *by design* is a difference include/hush/bufferevent.h lists; *hush"
		echo "bug* is a difference the header does not list; *libevent with OpenSSL 3* fails"
		echo "without hush too. The reasons come from test/libevent/regress-notes.txt, which"
		echo "the script checks against the results (a failure without a reason, or a reason for"
		echo "a case that passes, fails \`make check-libevent\`)."
		echo
		echo "The port's edits to the test bodies, made by the script on copies: in"
		echo "regress_bufferevent.c, \`if (what & BEV_EVENT_CONNECTED) return;\` first in the three"
		echo "event callbacks that take every event for a failure (errorcb, wm_errorcb,"
		echo "sender_errorcb), as include/hush/bufferevent.h asks of an accept-side callback; in"
		echo "regress_ssl.c the two peer-certificate checks become \`hush_shim_peer_verified(bev)\`."
		echo
		echo "test/libevent/filter-enable-stall.c, regress_ssl.c's ping-pong reduced (writing while"
		echo "EV_WRITE is disabled, then enabling it and disabling reading), over hush's filter"
		echo "flavour and libevent's own filter type, printed (hush's filter stalled there until its"
		echo "write callback stopped running inside bufferevent_enable(); libevent's filter sends"
		echo "nothing on bufferevent_enable(EV_WRITE)):"
		echo "$stall"
		echo
		echo "| case | libevent | hush | first failed check (hush) | why it differs |"
		echo "|---|---|---|---|---|"
		while IFS='	' read -r c plain st used first; do
			note=
			for col in hush libevent; do
				n=$(note_for "$c" "$col")
				[ -n "$n" ] && note="${note:+$note }$(echo "$n" | sed 's/^\([^\t]*\)\t/*\1* ('"$col"'): /')"
			done
			if [ "$st" = fail ] && [ -z "$(note_for "$c" hush)" ]; then
				note="**unexplained** $note"
			fi
			[ "$used" = hush ] || note="no hush bufferevent was made in this case. $note"
			echo "| $c | $plain | $st | ${first:+\`$first\`} | $note |"
		done <"$results"
	} >"$doc"
	echo "wrote $doc"
fi
[ "$unexplained" = 0 ] && [ "$stale" = 0 ]
