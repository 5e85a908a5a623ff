# Sourced by run-libevent-regress.sh and run-libevent-samples.sh: Debian's source of
# the installed libevent, fetched at run time into a work directory and configured
# there (never into hush's tree), since libevent's tests include internal headers whose
# layout Debian's security updates change.
#
# In: HUSH_SRCDIR, HUSH_BUILDDIR; optionally HUSH_LIBEVENT_WORK (the work directory)
# and HUSH_LIBEVENT_SRC, an unpacked and patched source tree of the same version to
# copy instead of fetching. Out: HUSH_SRCDIR and HUSH_BUILDDIR made absolute, here
# (test/libevent), LE_WORK, LE_VERSION (the installed version), LE_SRC (the source
# copy), LE_BUILD (its configured build directory). Exits 77 (skip) when the source
# cannot be had.

: "${HUSH_SRCDIR:?}" "${HUSH_BUILDDIR:?}"
HUSH_SRCDIR=$(cd "$HUSH_SRCDIR" && pwd)
HUSH_BUILDDIR=$(cd "$HUSH_BUILDDIR" && pwd)
here=$HUSH_SRCDIR/test/libevent
LE_WORK=${HUSH_LIBEVENT_WORK:-$HUSH_BUILDDIR/libevent-work}

skip() {
	echo "SKIP: $*" >&2
	exit 77
}

le_version() {
	LE_VERSION=$(dpkg-query -W -f='${Version}' libevent-dev 2>/dev/null) ||
		skip "libevent-dev is not installed as a Debian package"
	[ -n "$LE_VERSION" ] || skip "libevent-dev is not installed as a Debian package"
}

# A deb-src entry for each Debian mirror already configured for binary packages (only
# if there is no deb-src entry at all), then apt-get update.
le_add_deb_src() {
	if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return 0
	fi
	out=/etc/apt/sources.list.d/hush-libevent-src.sources
	: >"$out.tmp"
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] && grep -q 'debian' "$f" || continue
		sed -n 's/^Types: deb$/Types: deb-src/; p' "$f" >>"$out.tmp"
		echo >>"$out.tmp"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		grep -E '^deb .*debian' "$f" | sed 's/^deb /deb-src /' >>"${out%.sources}.list.tmp"
	done
	[ -s "$out.tmp" ] && grep -q deb-src "$out.tmp" && mv "$out.tmp" "$out" || rm -f "$out.tmp"
	[ -s "${out%.sources}.list.tmp" ] && mv "${out%.sources}.list.tmp" "${out%.sources}.list" ||
		rm -f "${out%.sources}.list.tmp"
	echo "added a deb-src entry for the configured Debian mirror"
}

# Tools the fetch and the build need, installed from Debian when missing.
le_build_deps() {
	missing=
	command -v dpkg-source >/dev/null 2>&1 || missing="$missing dpkg-dev"
	command -v autoreconf >/dev/null 2>&1 || missing="$missing autoconf"
	command -v automake >/dev/null 2>&1 || missing="$missing automake"
	command -v libtoolize >/dev/null 2>&1 || missing="$missing libtool"
	dpkg-query -W libssl-dev >/dev/null 2>&1 || missing="$missing libssl-dev"
	dpkg-query -W zlib1g-dev >/dev/null 2>&1 || missing="$missing zlib1g-dev"
	[ -z "$missing" ] && return 0
	[ "$(id -u)" = 0 ] || skip "missing build tools ($missing) and not root to install them"
	echo "installing:$missing"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing \
		>"$LE_WORK/apt-install.log" 2>&1 || skip "cannot install$missing (see $LE_WORK/apt-install.log)"
}

le_fetch() {
	le_version
	mkdir -p "$LE_WORK"
	LE_SRC=$LE_WORK/src
	if [ -f "$LE_WORK/src/.hush-version" ] && [ "$(cat "$LE_WORK/src/.hush-version")" = "$LE_VERSION" ]; then
		return 0
	fi
	rm -rf "$LE_WORK/src" "$LE_WORK/build" "$LE_WORK/fetch"
	le_build_deps
	if [ -n "${HUSH_LIBEVENT_SRC:-}" ]; then
		[ -f "$HUSH_LIBEVENT_SRC/bufferevent.c" ] || skip "HUSH_LIBEVENT_SRC ($HUSH_LIBEVENT_SRC) is not a libevent source tree"
		echo "copying libevent's source from $HUSH_LIBEVENT_SRC"
		cp -a "$HUSH_LIBEVENT_SRC" "$LE_WORK/src"
	else
		[ "$(id -u)" = 0 ] || skip "fetching Debian's libevent source needs root (apt); or set HUSH_LIBEVENT_SRC"
		le_add_deb_src
		echo "apt-get update; apt-get source libevent=$LE_VERSION"
		apt-get update >"$LE_WORK/apt-update.log" 2>&1 || skip "apt-get update failed (no network?): $LE_WORK/apt-update.log"
		mkdir -p "$LE_WORK/fetch"
		(cd "$LE_WORK/fetch" && apt-get source "libevent=$LE_VERSION") >"$LE_WORK/apt-source.log" 2>&1 ||
			skip "apt-get source libevent=$LE_VERSION failed (no network?): $LE_WORK/apt-source.log"
		dir=$(find "$LE_WORK/fetch" -mindepth 1 -maxdepth 1 -type d -name 'libevent-*' | head -n 1)
		[ -n "$dir" ] || skip "apt-get source left no libevent-* directory"
		mv "$dir" "$LE_WORK/src"
	fi
	echo "$LE_VERSION" >"$LE_WORK/src/.hush-version"
}

# Debian builds libevent after autoreconf (its patches touch Makefile.am); so does this.
le_build() {
	LE_BUILD=$LE_WORK/build
	if [ -f "$LE_BUILD/test/regress" ] && [ -f "$LE_BUILD/.hush-built" ]; then
		return 0
	fi
	echo "building libevent $LE_VERSION in $LE_BUILD (a few minutes)"
	(cd "$LE_SRC" && autoreconf -fi) >"$LE_WORK/autoreconf.log" 2>&1 ||
		{ echo "autoreconf failed: $LE_WORK/autoreconf.log" >&2; exit 1; }
	mkdir -p "$LE_BUILD"
	(cd "$LE_BUILD" && "$LE_SRC/configure" --disable-static --disable-doxygen-html \
		--disable-dependency-tracking) >"$LE_WORK/configure.log" 2>&1 ||
		{ echo "libevent's configure failed: $LE_WORK/configure.log" >&2; exit 1; }
	(cd "$LE_BUILD" && make -j"${HUSH_LIBEVENT_JOBS:-2}" test/regress) >"$LE_WORK/make.log" 2>&1 ||
		{ echo "libevent's build failed: $LE_WORK/make.log" >&2; exit 1; }
	touch "$LE_BUILD/.hush-built"
}

# Prints the value of make variable $1 in libevent's build directory.
le_make_var() {
	printf 'hush-print-var:\n\t@echo $(%s)\n' "$1" |
		make -s -C "$LE_BUILD" -f Makefile -f - hush-print-var
}
