#!/usr/bin/env python3
"""Writes the fuzz harnesses' seed corpora under test/fuzz/corpus/ (a maintainer's
tool: the seeds are committed, and nothing in the build runs this).

Handshake seeds are the real messages of the worked examples in
test/data/hush-handshake-vectors.txt, behind the 5-byte header of test/fuzz/fuzzlib.h;
the harnesses use the same keys and ephemerals, so these messages are valid for them.
Key-file and peers seeds are files written by tools/hush-keygen (throwaway keys).

usage: make-seeds.py SRCDIR HUSH_KEYGEN
"""
import os
import subprocess
import sys
import tempfile

# The 5-byte header (fuzzlib.h): protocol - 1, mode | options, record protocol - 1,
# piece size, allocation to fail.
MODE_RAW, MODE_REAL_FIRST, MODE_STRUCTURED = 0, 1, 2
OPT_APP, OPT_STRANGER, OPT_CALLBACK = 0x10, 0x20, 0x40
PROTOCOLS = {
    "Noise_XX_25519_AESGCM_SHA256": 1,
    "Noise_XX_25519_ChaChaPoly_SHA256": 2,
    "Noise_XXpsk3_25519_AESGCM_SHA256": 3,
    "Noise_XXpsk3_25519_ChaChaPoly_SHA256": 4,
    "Noise_NNpsk0_25519_AESGCM_SHA256": 5,
    "Noise_NNpsk0_25519_ChaChaPoly_SHA256": 6,
}
RECORD_PROTOCOLS = {
    "ALTSRP_GCM_AES128_REKEY": 1,
    "ALTSRP_GCM_AES128": 2,
    "HUSHRP_CHACHA20_POLY1305_REKEY": 3,
}


def examples(path):
    out, cur = [], {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            if cur:
                out.append(cur)
                cur = {}
            continue
        k, v = line.split("=", 1)
        cur[k] = v
    if cur:
        out.append(cur)
    return out


def header(ex, mode, opts=0, piece=0, fail=0xff):
    p = PROTOCOLS[ex["protocol"]]
    rp = RECORD_PROTOCOLS[ex["record_protocol"]]
    if "app_protocol" in ex:
        opts |= OPT_APP
    return bytes([p - 1, mode | opts, rp - 1, piece, fail])


def frames(flight):
    """Splits a flight into its framed messages (length included)."""
    out = []
    while flight:
        n = 2 + (flight[0] << 8 | flight[1])
        out.append(flight[:n])
        flight = flight[n:]
    return out


def write(dirname, name, data):
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, name), "wb") as f:
        f.write(data)


def handshake_seeds(corpus, exs):
    resp = os.path.join(corpus, "handshake-responder")
    init = os.path.join(corpus, "handshake-initiator")
    # A record after the handshake: the bytes an end leaves unread.
    record = bytes.fromhex("1400000006000000") + bytes(16)
    for i, ex in enumerate(exs, 1):
        f1 = bytes.fromhex(ex["flight_1"])
        f2 = bytes.fromhex(ex["flight_2"])
        f3 = bytes.fromhex(ex.get("flight_3", ""))
        nn = not f3
        params_i = bytes.fromhex(ex["init_params"])
        params_r = bytes.fromhex(ex["resp_params"])
        # Responder: what the initiator sends, whole and in pieces.
        write(resp, "example%d-raw" % i, header(ex, MODE_RAW) + f1 + f3 + record)
        write(resp, "example%d-raw-pieces" % i, header(ex, MODE_RAW, piece=7) + f1 + f3)
        # After a real first flight (NNpsk0: a real hello), the next message.
        nxt = frames(f1)[1] if nn else f3
        write(resp, "example%d-real-first" % i, header(ex, MODE_REAL_FIRST) + nxt)
        # The initiator's parameter block, as the payload a Noise peer sends.
        write(resp, "example%d-structured" % i, header(ex, MODE_STRUCTURED) + params_i)
        write(resp, "example%d-structured-stranger" % i,
              header(ex, MODE_STRUCTURED, OPT_STRANGER | OPT_CALLBACK) + params_i)
        # Initiator: message 2, then a record.
        write(init, "example%d-raw" % i, header(ex, MODE_RAW) + f2 + record)
        write(init, "example%d-raw-pieces" % i, header(ex, MODE_RAW, piece=3) + f2)
        write(init, "example%d-structured" % i, header(ex, MODE_STRUCTURED) + params_r)
        write(init, "example%d-structured-stranger" % i,
              header(ex, MODE_STRUCTURED, OPT_STRANGER) + params_r)
    # An allocation failing while a message comes in pieces.
    ex = exs[0]
    write(resp, "example1-nomem", header(ex, MODE_RAW, piece=5, fail=2) +
          bytes.fromhex(ex["flight_1"]))


def key_seeds(corpus, keygen):
    kf = os.path.join(corpus, "keyfile")
    peers = os.path.join(corpus, "peers")
    with tempfile.TemporaryDirectory() as d:
        pubs = []
        for name in ("a", "b"):
            path = os.path.join(d, name + ".key")
            subprocess.run([keygen, path], check=True, stdout=subprocess.DEVNULL)
            pubs.append(subprocess.run([keygen, "--public", path], check=True,
                                       stdout=subprocess.PIPE).stdout.decode().strip())
            with open(path, "rb") as f:
                write(kf, "hush-keygen-" + name, f.read())
        psk = os.path.join(d, "p.psk")
        subprocess.run([keygen, "--psk", psk], check=True)
        with open(psk, "rb") as f:
            text = f.read()
        write(kf, "hush-keygen-psk", text)
        write(kf, "psk-crlf", text.replace(b"\n", b"\r\n"))
    write(peers, "two-named", ("# allowed peers\n%s alice\n\n%s\tbob's laptop\n" %
                               (pubs[0], pubs[1])).encode())
    write(peers, "crlf-indented-duplicate",
          ("  # indented\r\n\t%s  a\r\n%s\r\n%s again" % (pubs[0], pubs[1], pubs[0])).encode())
    write(peers, "empty", b"")


def main():
    srcdir, keygen = sys.argv[1], sys.argv[2]
    corpus = os.path.join(srcdir, "test", "fuzz", "corpus")
    handshake_seeds(corpus, examples(os.path.join(srcdir, "test", "data",
                                                  "hush-handshake-vectors.txt")))
    key_seeds(corpus, keygen)


if __name__ == "__main__":
    main()
