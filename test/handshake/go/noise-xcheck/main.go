// noise-xcheck: hush's handshake wire protocol (docs/PROTOCOL.md, Part II) written
// again from the document alone, on an independent Noise library (flynn/noise) and Go's
// HKDF. For each block of test/data/hush-handshake-vectors.txt it takes only the inputs
// (protocol, limits, record and application protocols, keys), runs both ends, and
// prints what the document says they produce, as key=value lines; the script
// run-noise-xcheck.sh compares them with the file.
//
// flynn/noise 1.0.0 has no accessor for the keys Split() makes (the document's record
// key derivation needs them), so rawKey reads the unexported field: test code only.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"unsafe"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
)

type block map[string]string

func readBlocks(path string) []block {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	var out []block
	var cur block
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.Contains(line, "=") {
			continue
		}
		kv := strings.SplitN(line, "=", 2)
		if kv[0] == "protocol" {
			cur = block{}
			out = append(out, cur)
		}
		cur[kv[0]] = kv[1]
	}
	return out
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func be16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

func be32(n uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, n)
	return b
}

// The parameter block: version 1, then type, length, value entries.
func params(b block) []byte {
	rp := b["record_protocol"]
	rl, _ := strconv.ParseUint(b["recv_limit"], 10, 32)
	mf, _ := strconv.ParseUint(b["max_send_frame"], 10, 32)
	p := []byte{1, 1, byte(len(rp))}
	p = append(p, rp...)
	p = append(p, 2, 4)
	p = append(p, be32(uint32(rl))...)
	p = append(p, 3, 4)
	p = append(p, be32(uint32(mf))...)
	if app, ok := b["app_protocol"]; ok {
		p = append(p, 4, byte(len(app)))
		p = append(p, app...)
	}
	return p
}

func rawKey(cs *noise.CipherState) []byte {
	v := reflect.ValueOf(cs).Elem().FieldByName("k")
	k := *(*[32]byte)(unsafe.Pointer(v.UnsafeAddr()))
	return k[:]
}

func keySize(rp string) int {
	if rp == "ALTSRP_GCM_AES128" {
		return 16
	}
	return 44
}

func run(b block) {
	name := b["protocol"]
	var cipher noise.CipherFunc
	if strings.Contains(name, "_ChaChaPoly_") {
		cipher = noise.CipherChaChaPoly
	} else {
		cipher = noise.CipherAESGCM
	}
	suite := noise.NewCipherSuite(noise.DH25519, cipher, noise.HashSHA256)
	prologue := append([]byte("hush/1\x00"), byte(len(name)))
	prologue = append(prologue, name...)
	cfg := func(initiator bool, e string, s string) noise.Config {
		c := noise.Config{CipherSuite: suite, Initiator: initiator, Prologue: prologue,
			Random: bytes.NewReader(unhex(b[e]))}
		switch {
		case strings.HasPrefix(name, "Noise_XXpsk3_"):
			c.Pattern, c.PresharedKey, c.PresharedKeyPlacement = noise.HandshakeXX, unhex(b["psk"]), 3
		case strings.HasPrefix(name, "Noise_NNpsk0_"):
			c.Pattern, c.PresharedKey, c.PresharedKeyPlacement = noise.HandshakeNN, unhex(b["psk"]), 0
		default:
			c.Pattern = noise.HandshakeXX
		}
		if c.Pattern.Name == "XX" {
			priv := unhex(b[s])
			pub, _ := curve25519.X25519(priv, curve25519.Basepoint)
			c.StaticKeypair = noise.DHKey{Private: priv, Public: pub}
		}
		return c
	}
	ini, err := noise.NewHandshakeState(cfg(true, "init_ephemeral", "init_static"))
	if err != nil {
		panic(err)
	}
	res, err := noise.NewHandshakeState(cfg(false, "resp_ephemeral", "resp_static"))
	if err != nil {
		panic(err)
	}
	nn := strings.HasPrefix(name, "Noise_NNpsk0_")
	mine := params(b)
	fmt.Printf("prologue=%x\ninit_params=%x\nresp_params=%x\n", prologue, mine, mine)
	// Message payloads: XX 1 empty, 2 responder's block, 3 initiator's; NNpsk0 1
	// initiator's block, 2 responder's.
	var payloads [][]byte
	if nn {
		payloads = [][]byte{mine, mine}
	} else {
		payloads = [][]byte{{}, mine, mine}
	}
	var c1, c2 *noise.CipherState
	for i, pl := range payloads {
		w, r := ini, res
		if i%2 == 1 {
			w, r = res, ini
		}
		msg, a, bb, err := w.WriteMessage(nil, pl)
		if err != nil {
			panic(err)
		}
		got, _, _, err := r.ReadMessage(nil, msg)
		if err != nil || !bytes.Equal(got, pl) {
			panic(fmt.Sprint("read ", i, err))
		}
		flight := []byte{}
		if i == 0 {
			flight = append(flight, be16(len(prologue))...)
			flight = append(flight, prologue...)
		}
		flight = append(flight, be16(len(msg))...)
		flight = append(flight, msg...)
		fmt.Printf("flight_%d=%x\n", i+1, flight)
		if a != nil {
			c1, c2 = a, bb
		}
	}
	if !bytes.Equal(ini.ChannelBinding(), res.ChannelBinding()) {
		panic("hashes differ")
	}
	h := ini.ChannelBinding()
	k1, k2 := rawKey(c1), rawKey(c2)
	ikm := append(append([]byte{}, k1...), k2...)
	key := make([]byte, keySize(b["record_protocol"]))
	kdf := hkdf.New(sha256.New, ikm, h, []byte("hush/1 record key "+b["record_protocol"]))
	if _, err := kdf.Read(key); err != nil {
		panic(err)
	}
	fmt.Printf("handshake_hash=%x\nsplit_k1=%x\nsplit_k2=%x\nrecord_key=%x\n", h, k1, k2, key)
}

func main() {
	for _, b := range readBlocks(os.Args[1]) {
		fmt.Printf("protocol=%s\n", b["protocol"])
		run(b)
	}
}
