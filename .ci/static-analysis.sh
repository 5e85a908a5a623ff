#!/usr/bin/env bash
# Static analysis of src/ and tools/: cppcheck, then clang's static analyzer (the engine
# behind scan-build) file by file. Fails on any finding that is not suppressed, and on
# any suppression that no longer matches anything, so the lists stay honest. Every
# suppression carries its justification:
#   .ci/cppcheck-suppressions.xml       by check, file and symbol
#   .ci/clang-analyzer-suppressions.txt by file, checker and the flagged line's text
# Needs a configured tree (include/hush/version.h); runs ./bootstrap.sh if there is none.
# About a minute on 2 cores. Usage: .ci/static-analysis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[ -f include/hush/version.h ] || ./bootstrap.sh
CLANG=${CLANG:-$(command -v clang-14 || command -v clang)}
JOBS=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

mapfile -t files < <(find src tools -name '*.c' | sort)
includes=(-Iinclude -Isrc -I.)
defines=(-DHUSH_BUILDING -DHAVE_CONFIG_H)

echo "== cppcheck ($(cppcheck --version)) over ${#files[@]} files"
# System headers are left out on purpose (cppcheck's own advice); its library files
# describe libc, POSIX and OpenSSL instead. unusedFunction is off: a library's API is
# used by its callers. information is on for unmatchedSuppression.
if ! cppcheck --enable=warning,style,performance,portability,information --inconclusive \
	--std=c11 --library=posix --library=gnu --library=openssl \
	"${includes[@]}" "${defines[@]}" \
	--suppress=missingIncludeSystem --suppress-xml=.ci/cppcheck-suppressions.xml \
	--error-exitcode=1 -q --template='{file}:{line}: {severity} ({id}): {message}' \
	"${files[@]}"; then
	status=1
fi

# Checkers beyond clang's defaults: bounds and C-string checks that matter for code that
# parses bytes from strangers, and a few cheap ones. alpha.* are clang's experimental
# checkers: worth their false positives here, each of which is listed with its reason.
checkers=alpha.security.ArrayBoundV2,alpha.security.ReturnPtrRange,alpha.security.MallocOverflow
checkers+=,alpha.unix.cstring.BufferOverlap,alpha.unix.cstring.OutOfBounds
checkers+=,alpha.unix.cstring.NotNullTerminated,alpha.unix.Stream,alpha.core.CastSize
checkers+=,alpha.core.SizeofPtr,alpha.core.TestAfterDivZero,alpha.core.PointerSub
checkers+=,alpha.core.BoolAssignment,alpha.deadcode.UnreachableCode
checkers+=,optin.portability.UnixAPI,security.insecureAPI.strcpy,security.FloatLoopCounter

echo "== clang static analyzer ($("$CLANG" --version | head -1)) over ${#files[@]} files"
# Largest first, so the long ones do not finish last. The inner script's variables are
# its own (single quotes on purpose).
# shellcheck disable=SC2046,SC2016
printf '%s\n' $(ls -S "${files[@]}") |
	CLANG=$CLANG WORK=$work CHECKERS=$checkers xargs -P "$JOBS" -I{} sh -c '
		out="$WORK/$(echo "$1" | tr / _).txt"
		"$CLANG" --analyze -Xclang -analyzer-checker="$CHECKERS" -std=gnu11 \
			-Iinclude -Isrc -I. -DHUSH_BUILDING -DHAVE_CONFIG_H \
			$(pkg-config --cflags libcrypto libevent) "$1" -o /dev/null >"$out" 2>&1 ||
			echo "$1: error: the analyzer failed" >>"$out"' _ {}

supp=.ci/clang-analyzer-suppressions.txt
grep -v '^[[:space:]]*\(#\|$\)' "$supp" >"$work/supp" || true
: >"$work/used"
found=0
suppressed=0
while IFS= read -r line; do
	# file:line:col: warning: message [checker]
	file=${line%%:*}
	rest=${line#*:}
	lineno=${rest%%:*}
	checker=$(printf '%s\n' "$line" | sed -n 's/.*\[\([^]]*\)\]$/\1/p')
	code=$(sed -n "${lineno}p" "$file" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
	key="$file|$checker|$code"
	if grep -Fxq -- "$key" "$work/supp"; then
		suppressed=$((suppressed + 1))
		echo "$key" >>"$work/used"
	else
		echo "$line"
		found=$((found + 1))
	fi
done < <(cat "$work"/*.txt | grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error): |: error: ' || true)
if [ "$found" -gt 0 ]; then
	echo "clang analyzer: $found finding(s); details: $CLANG --analyze -Xclang" \
		"-analyzer-checker=$checkers -Xclang -analyzer-output=text" \
		"${includes[*]} ${defines[*]} FILE"
	status=1
fi
while IFS= read -r key; do
	if ! grep -Fxq -- "$key" "$work/used"; then
		echo "$supp: unmatched suppression: $key"
		status=1
	fi
done <"$work/supp"
echo "clang analyzer: $found finding(s), $suppressed suppressed"

if [ "$status" -eq 0 ]; then
	echo "== static analysis: clean"
else
	echo "== static analysis: FAILED"
fi
exit "$status"
