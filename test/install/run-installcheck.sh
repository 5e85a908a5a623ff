#!/bin/sh
# What a user does after `make install`: builds a program of their own against the
# installed hush with pkg-config alone, and runs it and the installed hush-keygen.
# Run by `make installcheck` (and so by `make distcheck`, which installs into a staging
# prefix first).
#
#   run-installcheck.sh LIBDIR BINDIR CONSUMER_C WORKDIR
#
# CC and PKG_CONFIG come from the environment. A prefix outside the loader's search path
# needs LD_LIBRARY_PATH (or -Wl,-rpath) to run a program, as the README says.
set -eu
libdir=$1 bindir=$2 src=$3 work=$4
: "${CC:=cc}" "${PKG_CONFIG:=pkg-config}"
rm -rf "$work" && mkdir -p "$work"
PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_PATH

flags=$($PKG_CONFIG --cflags --libs hush)
echo "installcheck: $PKG_CONFIG --cflags --libs hush: $flags"
case " $flags " in
*" -levent_core "* | *" -levent "*) ;;
*)
	echo "installcheck: pkg-config names no libevent, yet hush's headers use its types" >&2
	exit 1
	;;
esac
# shellcheck disable=SC2086
$CC -o "$work/consumer" "$src" $flags
out=$(LD_LIBRARY_PATH=$libdir "$work/consumer")
echo "installcheck: $out"
case $out in
*'received "hello"') ;;
*)
	echo "installcheck: the consumer program did not receive its message" >&2
	exit 1
	;;
esac

# The installed tool runs from its prefix (libtool gives it the library's path) and
# makes the folder the README's walkthrough keeps keys in.
pub=$("$bindir/hush-keygen" "$work/home/.hushpipe/laptop.key" 2>/dev/null)
mode=$(stat -c %a "$work/home/.hushpipe")
if [ ${#pub} -ne 44 ] || [ "$mode" != 700 ]; then
	echo "installcheck: hush-keygen gave '$pub', folder mode $mode" >&2
	exit 1
fi
echo "installcheck: hush-keygen made a key in a new folder of mode 700"
rm -rf "$work"
echo "installcheck: passed"
