#!/bin/sh
# The library exports only its own names: every global symbol that libhush.a defines
# starts with hush_ (internal ones with hush__, since a static archive cannot hide
# them), and libhush.so exports only the public hush_ API (no hush__, which
# -fvisibility=hidden keeps inside). A symbol of another prefix collides with other
# libraries in a static link (noise_init did, with noise-c). Speaks TAP.
set -u
: "${HUSH_BUILDDIR:?}"
L=$HUSH_BUILDDIR/.libs
n=0
fail=0
if ! command -v nm >/dev/null 2>&1; then
	echo "1..0 # SKIP nm is not installed"
	exit 0
fi
# check FILE NM_FLAGS PATTERN WHAT: every global symbol nm lists in FILE matches PATTERN.
check() {
	[ -f "$1" ] || return 0
	n=$((n + 1))
	bad=$(nm $2 --defined-only "$1" | awk -v re="$3" 'NF == 3 && $3 !~ re { print $3 }' | sort -u)
	if [ -z "$bad" ]; then
		echo "ok $n - $4"
	else
		echo "not ok $n - $4; these are not:"
		echo "$bad" | sed 's/^/#   /'
		fail=1
	fi
}
check "$L/libhush.a" -g '^hush_' "libhush.a defines only hush_ global symbols"
check "$L/libhush.so" -D '^hush_[a-z0-9]' "libhush.so exports only the public hush_ API"
echo "1..$n"
exit $fail
