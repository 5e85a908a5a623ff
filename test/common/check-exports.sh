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
if [ -f "$L/libhush.a" ]; then
	n=$((n + 1))
	bad=$(nm -g --defined-only "$L/libhush.a" | awk 'NF == 3 && $3 !~ /^hush_/ { print $3 }' | sort -u)
	if [ -z "$bad" ]; then
		echo "ok $n - libhush.a defines only hush_ global symbols"
	else
		echo "not ok $n - libhush.a defines global symbols outside hush_:"
		echo "$bad" | sed 's/^/#   /'
		fail=1
	fi
fi
if [ -f "$L/libhush.so" ]; then
	n=$((n + 1))
	bad=$(nm -D --defined-only "$L/libhush.so" | awk 'NF == 3 && $3 !~ /^hush_[a-z0-9]/ { print $3 }' | sort -u)
	if [ -z "$bad" ]; then
		echo "ok $n - libhush.so exports only the public hush_ API"
	else
		echo "not ok $n - libhush.so exports symbols outside the public API:"
		echo "$bad" | sed 's/^/#   /'
		fail=1
	fi
fi
echo "1..$n"
exit $fail
