#!/bin/sh
# hush-keygen end to end: key pairs, --public, --psk, modes, refusal to overwrite.
set -u
: "${HUSH_BUILDDIR:?}"
K=$HUSH_BUILDDIR/tools/hush-keygen
W=$HUSH_BUILDDIR/test/keys/keygen-work
rm -rf "$W" && mkdir -p "$W"
n=0
check() { n=$((n + 1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fi; }
echo "1..9"
pub=$("$K" "$W/id" 2>"$W/err")
check "new key pair prints a 44-character base64 public key" '[ ${#pub} -eq 44 ] && echo "$pub" | grep -qE "^[A-Za-z0-9+/]{43}=$"'
check "private key file has mode 0600" '[ "$(stat -c %a "$W/id")" = 600 ]'
check "--public prints the same key" '[ "$("$K" --public "$W/id")" = "$pub" ]'
"$K" "$W/id" >/dev/null 2>"$W/err"; rc=$?
check "refuses to overwrite a key file" '[ $rc -eq 1 ] && grep -q "refusing to overwrite" "$W/err"'
check "the refused run left the key unchanged" '[ "$("$K" --public "$W/id")" = "$pub" ]'
chmod 0644 "$W/id"
"$K" --public "$W/id" >/dev/null 2>"$W/err"; rc=$?
check "refuses a world-readable private key" '[ $rc -eq 1 ] && grep -q "readable by group or others" "$W/err"'
"$K" --psk "$W/psk" >/dev/null; rc=$?
check "--psk writes a 0600 file with a psk line" '[ $rc -eq 0 ] && [ "$(stat -c %a "$W/psk")" = 600 ] && grep -qE "^psk: [A-Za-z0-9+/]{43}=$" "$W/psk"'
"$K" --psk "$W/psk" >/dev/null 2>&1; rc=$?
check "--psk refuses to overwrite" '[ $rc -eq 1 ]'
"$K" >/dev/null 2>&1; rc=$?
check "bad usage exits 2" '[ $rc -eq 2 ]'
