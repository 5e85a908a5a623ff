#!/bin/sh
# Prepares a checkout for `make`: installs the Debian packages hush needs (when run as
# root; otherwise prints the exact command), generates the build system and configures.
# Safe to run again: each step is skipped when already done.
# Extra arguments are passed to ./configure (and force it to run again).
set -eu
cd "$(dirname "$0")"

# Build tools, libraries, what the interoperability tests use (Go and Debian's
# grpc-go source for gRPC's own ALTS record code; flynn/noise for the Noise peer),
# what `make fuzz` uses: clang, and libFuzzer's runtime, which Debian 12 ships in
# libclang-rt-14-dev (only recommended by clang, and recommends are not installed),
# what .ci/static-analysis.sh runs: cppcheck and clang's static analyzer, and the real
# client and server of hushpipe's end-to-end test: curl and python3.
PACKAGES="build-essential autoconf automake libtool pkg-config libssl-dev libevent-dev
libcmocka-dev golang-go golang-google-grpc-dev golang-github-flynn-noise-dev
clang libclang-rt-14-dev cppcheck curl python3"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "bootstrap: installing:$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $missing
	else
		# The same command the root path runs, so both install the same packages.
		echo "bootstrap: missing packages; run as root, then run bootstrap.sh again:"
		echo "  apt-get update && apt-get install -y --no-install-recommends$missing"
		exit 1
	fi
fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ] ||
	[ -n "$(find . -name local.am -newer configure 2>/dev/null)" ]; then
	echo "bootstrap: autoreconf -fi"
	autoreconf -fi
fi

if [ ! -f Makefile ] || [ ! -f config.status ] || [ configure -nt config.status ] || [ $# -gt 0 ]; then
	echo "bootstrap: ./configure $*"
	./configure "$@"
fi
echo "bootstrap: ready; run 'make check' or 'make demo'"
