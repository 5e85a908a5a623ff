// hushnoise: a hush peer written again from docs/PROTOCOL.md alone (Part II, the
// handshake, and Part I, the records), for test/interop/run-noise-interop.sh. The handshake runs on
// github.com/flynn/noise (Debian golang-github-flynn-noise-dev); the records after it
// go through gRPC's own ALTS record code (grpc-go credentials/alts/internal/conn), with
// hush's ChaCha20-Poly1305 protocol (section 3.3) written here as a grpc-go record
// crypter on golang.org/x/crypto/chacha20poly1305. No hush code is used. Same command line, RESULT line and error form as
// examples/hush-echo:
//
//	hushnoise (--listen HOST:PORT [--ready FILE] [--count N] | --connect HOST:PORT)
//	          [--protocol NAME] [--key PRIVATE_KEY_FILE] [--peer PUBLIC_KEY_B64]...
//	          [--psk FILE] [--echo] [--send FILE] [--out FILE]
//	          [--rp RECORD_PROTOCOL] [--chunk N] [--no-close] [--hello TEXT]
//
// Keys are hush's own files (include/hush/keys.h): a private key file holds a
// "private: BASE64" line and may hold a "public: BASE64" line, which must match; a PSK
// file holds "psk: BASE64". Lines starting with '#' and blank lines are skipped.
// --peer takes a base64 public key, like hush-echo. Unlike hush, file modes are not
// checked: this is a test peer.
//
// --rp is the record protocol announced and used: ALTSRP_GCM_AES128_REKEY,
// ALTSRP_GCM_AES128 or HUSHRP_CHACHA20_POLY1305_REKEY. Without it, the one the Noise
// name announces (section 8): HUSHRP_CHACHA20_POLY1305_REKEY for ChaChaPoly,
// ALTSRP_GCM_AES128_REKEY for AESGCM. --chunk N writes the --send file in N-byte
// Write calls. --no-close leaves the close record out (to test that hush reports the
// truncation). --hello TEXT sends TEXT as the hello, as a foreign peer would (Noise
// still uses the real prologue).
//
// The close signal (section 14). grpc-go's conn.Write sends nothing for an empty slice,
// so the close record cannot go through it. The record protocol is registered with
// grpc-go under a factory that wraps the protocol's crypter (grpc-go's own
// NewAES128GCMRekey/NewAES128GCM, or newChaChaRekey below) and keeps the ALTSRecordCrypto it creates for the connection: that crypter holds the
// connection's outgoing counter, so after the last Write the close record is sealed
// with it (Encrypt of an empty plaintext behind the 8-byte header) and the 24-byte
// frame written to the socket directly. Receiving needs nothing extra: grpc-go's
// conn.Read returns (0, nil) exactly when a record opens to an empty plaintext, which is
// the peer's close; an io.EOF before it is a truncated stream, an error.
//
// Left out, as a test peer may: a handshake timeout, and the check for bytes sent out of
// turn (EOUTOFTURN in section 9): this peer reads only when it expects a message.
//
// It must be built inside the grpc source tree (Go's internal-package rule), in GOPATH
// mode: run-noise-interop.sh does that.
package main

import (
	"bytes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"io/ioutil"
	"net"
	"os"
	"reflect"
	"strings"
	"unsafe"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
	core "google.golang.org/grpc/credentials/alts/internal"
	"google.golang.org/grpc/credentials/alts/internal/conn"
)

type keyList [][]byte

func (k *keyList) String() string { return fmt.Sprint(len(*k), " keys") }

func (k *keyList) Set(v string) error {
	b, err := decodeKey(v)
	if err != nil {
		return err
	}
	*k = append(*k, b)
	return nil
}

var (
	listen   = flag.String("listen", "", "HOST:PORT to listen on")
	connect  = flag.String("connect", "", "HOST:PORT to connect to")
	ready    = flag.String("ready", "", "file to write the bound HOST:PORT to")
	count    = flag.Int("count", 1, "connections to serve")
	protocol = flag.String("protocol", "Noise_XX_25519_AESGCM_SHA256", "Noise protocol name")
	keyFile  = flag.String("key", "", "hush private key file")
	pskFile  = flag.String("psk", "", "hush pre-shared key file")
	rp       = flag.String("rp", "", "record protocol (default: the one the Noise name announces)")
	echo     = flag.Bool("echo", false, "send back what is received")
	send     = flag.String("send", "", "file to send")
	out      = flag.String("out", "", "file to write what is received")
	chunk    = flag.Int("chunk", 65536, "bytes per Write when sending")
	noClose  = flag.Bool("no-close", false, "end without the close record")
	hello    = flag.String("hello", "", "send this as the hello instead of the prologue")
	peers    keyList
)

// The limits of docs/PROTOCOL.md section 9 and the parameter block values this peer
// announces (section 12). grpc-go accepts records of LENGTH up to 1 MiB and
// seals frames of 4 KiB.
const (
	maxHello      = 263
	maxMessage    = 2048
	ourRecvLimit  = 1 << 20
	ourMaxFrame   = 4096
	minRecvLimit  = 60
	minMaxFrame   = 64
	recordKeyInfo = "hush/1 record key "
)

// hushError is a failure named with the hush error code the document gives for it.
type hushError struct {
	code string
	msg  string
}

func (e *hushError) Error() string { return e.msg + " (" + e.code + ")" }

func errf(code, format string, args ...interface{}) error {
	return &hushError{code, fmt.Sprintf(format, args...)}
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "hushnoise: %s: %v\n", what, err)
	os.Exit(1)
}

func decodeKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return nil, errf("EBADKEY", "not the base64 of a 32-byte key")
	}
	return b, nil
}

// readKeyFile returns the keys of a hush key file by line name ("private", "public",
// "psk").
func readKeyFile(path string) (map[string][]byte, error) {
	text, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys := map[string][]byte{}
	for _, line := range strings.Split(string(text), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		kv := strings.SplitN(line, ":", 2)
		if len(kv) != 2 {
			return nil, errf("EBADKEY", "%s: not a key file", path)
		}
		if _, dup := keys[kv[0]]; dup {
			return nil, errf("EBADKEY", "%s: %s twice", path, kv[0])
		}
		if keys[kv[0]], err = decodeKey(kv[1]); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
	}
	return keys, nil
}

// strictDH is X25519 that refuses an all-zero result (a low-order peer key), as
// section 11 requires of every hush peer, whatever the library underneath does.
type strictDH struct{ noise.DHFunc }

var errLowOrder = errf("EBADKEY", "X25519 result is all zero (low-order key)")

func (d strictDH) DH(priv, pub []byte) ([]byte, error) {
	out, err := d.DHFunc.DH(priv, pub)
	if err != nil || bytes.Equal(out, make([]byte, len(out))) {
		return nil, errLowOrder
	}
	return out, nil
}

// The parameter block (section 12).
type params struct {
	recordProtocol string
	recvLimit      uint32
	maxFrame       uint32
	appProtocol    string
}

func (p params) encode() []byte {
	b := []byte{1, 1, byte(len(p.recordProtocol))}
	b = append(b, p.recordProtocol...)
	b = append(b, 2, 4, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(b)-4:], p.recvLimit)
	b = append(b, 3, 4, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(b)-4:], p.maxFrame)
	if p.appProtocol != "" {
		b = append(b, 4, byte(len(p.appProtocol)))
		b = append(b, p.appProtocol...)
	}
	return b
}

var recordKeySize = map[string]int{
	"ALTSRP_GCM_AES128_REKEY":        44,
	"ALTSRP_GCM_AES128":              16,
	"HUSHRP_CHACHA20_POLY1305_REKEY": 44,
}

// parseParams applies every receiver rule of section 12, in its two groups: malformed
// (EHANDSHAKE) first, then missing or unacceptable (EPARAMS).
func parseParams(b []byte, want string) (params, error) {
	var p params
	if len(b) == 0 {
		return p, errf("EHANDSHAKE", "empty parameter block")
	}
	if b[0] != 1 {
		return p, errf("EPARAMS", "parameter block version %d", b[0])
	}
	seen := map[byte]bool{}
	for rest := b[1:]; len(rest) > 0; {
		if len(rest) < 2 || len(rest) < 2+int(rest[1]) {
			return p, errf("EHANDSHAKE", "parameter entry runs past the block")
		}
		typ, val := rest[0], rest[2:2+int(rest[1])]
		rest = rest[2+len(val):]
		if typ < 1 || typ > 4 {
			continue // unknown: skipped, whatever its length
		}
		if seen[typ] {
			return p, errf("EHANDSHAKE", "parameter type %d twice", typ)
		}
		seen[typ] = true
		switch typ {
		case 1, 4:
			if len(val) == 0 {
				return p, errf("EHANDSHAKE", "parameter type %d empty", typ)
			}
			if typ == 1 {
				p.recordProtocol = string(val)
			} else if bytes.IndexByte(val, 0) >= 0 {
				return p, errf("EHANDSHAKE", "application protocol holds a 00 byte")
			} else {
				p.appProtocol = string(val)
			}
		case 2, 3:
			if len(val) != 4 {
				return p, errf("EHANDSHAKE", "parameter type %d of length %d", typ, len(val))
			}
			if typ == 2 {
				p.recvLimit = binary.BigEndian.Uint32(val)
			} else {
				p.maxFrame = binary.BigEndian.Uint32(val)
			}
		}
	}
	switch {
	case !seen[1] || !seen[2] || !seen[3]:
		return p, errf("EPARAMS", "parameter block lacks a required entry")
	case recordKeySize[p.recordProtocol] == 0:
		return p, errf("EPARAMS", "unknown record protocol %q", p.recordProtocol)
	case p.recordProtocol != want:
		return p, errf("EPARAMS", "peer uses record protocol %s, we use %s", p.recordProtocol, want)
	case p.recvLimit < minRecvLimit:
		return p, errf("EPARAMS", "peer's receive limit %d below %d", p.recvLimit, minRecvLimit)
	case p.maxFrame < minMaxFrame:
		return p, errf("EPARAMS", "peer's max send frame %d below %d", p.maxFrame, minMaxFrame)
	case p.recvLimit+4 < ourMaxFrame:
		// Not a rule of the protocol: grpc-go's conn always seals 4 KiB frames, so
		// this peer cannot honour a smaller limit.
		return p, errf("EPARAMS", "peer's receive limit %d is below grpc-go's frames", p.recvLimit)
	}
	return p, nil
}

// Handshake framing (section 9): a 2-byte big-endian length, then the message.
func frame(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = append(b, byte(len(m)>>8), byte(len(m)))
		b = append(b, m...)
	}
	return b
}

// readMessage reads exactly one framed message, so that the first record byte after
// the handshake stays in the socket for grpc-go's conn.
func readMessage(r io.Reader, max int) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, errf("ECLOSED", "peer went away during the handshake: %v", err)
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n == 0 || n > max {
		return nil, errf("EHANDSHAKE", "handshake message length %d (limit %d)", n, max)
	}
	m := make([]byte, n)
	if _, err := io.ReadFull(r, m); err != nil {
		return nil, errf("ECLOSED", "peer went away during the handshake: %v", err)
	}
	return m, nil
}

func noiseErr(err error) error {
	var he *hushError
	if errors.As(err, &he) {
		return he
	}
	return errf("EHANDSHAKE", "Noise: %v", err)
}

// rawKey reads the key of a CipherState that Split() made: flynn/noise 1.0.0 has no
// accessor for it, and the record key derivation needs it (section 13). Test code only.
func rawKey(cs *noise.CipherState) []byte {
	v := reflect.ValueOf(cs).Elem().FieldByName("k")
	k := *(*[32]byte)(unsafe.Pointer(v.UnsafeAddr()))
	return append([]byte{}, k[:]...)
}

type identity struct {
	static *noise.DHKey
	psk    []byte
}

type outcome struct {
	hash         []byte
	remoteStatic []byte // nil for NNpsk0
	recordKey    []byte
	peer         params
}

// handshake runs this end's side of a hush/1 handshake on c (sections 8 to 13).
func handshake(c net.Conn, initiator bool, id identity) (*outcome, error) {
	name := *protocol
	var pattern noise.HandshakePattern
	placement := 0
	switch {
	case strings.HasPrefix(name, "Noise_XX_"):
		pattern = noise.HandshakeXX
	case strings.HasPrefix(name, "Noise_XXpsk3_"):
		pattern, placement = noise.HandshakeXX, 3
	case strings.HasPrefix(name, "Noise_NNpsk0_"):
		pattern = noise.HandshakeNN
	default:
		return nil, errf("EINVAL", "unknown Noise protocol %s", name)
	}
	var cipher noise.CipherFunc
	switch {
	case strings.HasSuffix(name, "_25519_AESGCM_SHA256"):
		cipher = noise.CipherAESGCM
	case strings.HasSuffix(name, "_25519_ChaChaPoly_SHA256"):
		cipher = noise.CipherChaChaPoly
	default:
		return nil, errf("EINVAL", "unknown Noise protocol %s", name)
	}
	nn := pattern.Name == "NN"
	if nn != (id.static == nil) || (placement != 0 || nn) != (id.psk != nil) ||
		(!nn && len(peers) == 0) || (nn && len(peers) > 0) {
		return nil, errf("EINVAL", "%s needs: static key %v, PSK %v, --peer %v", name,
			!nn, placement != 0 || nn, !nn)
	}
	// Section 10: prologue = "hush/1" 00 n name.
	prologue := append([]byte("hush/1\x00"), byte(len(name)))
	prologue = append(prologue, name...)
	cfg := noise.Config{
		CipherSuite: noise.NewCipherSuite(strictDH{noise.DH25519}, cipher, noise.HashSHA256),
		Pattern:     pattern,
		Initiator:   initiator,
		Prologue:    prologue,
	}
	if id.static != nil {
		cfg.StaticKeypair = *id.static
	}
	if id.psk != nil {
		cfg.PresharedKey, cfg.PresharedKeyPlacement = id.psk, placement
	}
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, errf("ECRYPTO", "Noise: %v", err)
	}
	ours := params{recordProtocol: *rp, recvLimit: ourRecvLimit, maxFrame: ourMaxFrame}
	mine := ours.encode()
	o := &outcome{}
	var cs1, cs2 *noise.CipherState

	// write sends one message; the initiator's first goes in one write with the hello.
	write := func(payload []byte, first bool) error {
		msg, a, b, err := hs.WriteMessage(nil, payload)
		if err != nil {
			return noiseErr(err)
		}
		if a != nil {
			cs1, cs2 = a, b
		}
		var wire []byte
		if first && *hello != "" {
			wire = frame([]byte(*hello), msg)
		} else if first {
			wire = frame(prologue, msg)
		} else {
			wire = frame(msg)
		}
		if _, err := c.Write(wire); err != nil {
			return errf("ECONNRESET", "write: %v", err)
		}
		return nil
	}
	read := func() ([]byte, error) {
		m, err := readMessage(c, maxMessage)
		if err != nil {
			return nil, err
		}
		payload, a, b, err := hs.ReadMessage(nil, m)
		if err != nil {
			return nil, noiseErr(err)
		}
		if a != nil {
			cs1, cs2 = a, b
		}
		return payload, nil
	}
	// Peer verification (section 11): the static key on the allow-list, or EPEER.
	verify := func() error {
		for _, k := range peers {
			if bytes.Equal(k, hs.PeerStatic()) {
				o.remoteStatic = append([]byte{}, k...)
				return nil
			}
		}
		return errf("EPEER", "peer's static key %s is not allowed",
			base64.StdEncoding.EncodeToString(hs.PeerStatic()))
	}
	takeParams := func(payload []byte) error {
		p, err := parseParams(payload, *rp)
		o.peer = p
		return err
	}

	if initiator {
		// Flight 1: hello and message 1 (XX: empty payload; NNpsk0: our block).
		payload1 := []byte{}
		if nn {
			payload1 = mine
		}
		if err := write(payload1, true); err != nil {
			return nil, err
		}
		// Message 2: the responder's static key (XX), checked before our message 3
		// reveals ours, then its block.
		payload, err := read()
		if err != nil {
			return nil, err
		}
		if !nn {
			if err := verify(); err != nil {
				return nil, err
			}
		}
		if err := takeParams(payload); err != nil {
			return nil, err
		}
		if !nn {
			if err := write(mine, false); err != nil {
				return nil, err
			}
		}
	} else {
		hello, err := readMessage(c, maxHello)
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(hello, []byte("hush/")) {
			return nil, errf("EHANDSHAKE", "not a hush peer")
		}
		if !bytes.Equal(hello, prologue) {
			return nil, errf("EPARAMS", "peer runs another hush version or Noise protocol: %q",
				hello)
		}
		payload, err := read()
		if err != nil {
			return nil, err
		}
		if nn {
			if err := takeParams(payload); err != nil {
				return nil, err
			}
		} else if len(payload) != 0 {
			return nil, errf("EHANDSHAKE", "XX message 1 with a payload")
		}
		if err := write(mine, false); err != nil {
			return nil, err
		}
		if !nn {
			payload, err := read()
			if err != nil {
				return nil, err
			}
			if err := verify(); err != nil {
				return nil, err
			}
			if err := takeParams(payload); err != nil {
				return nil, err
			}
		}
	}
	if cs1 == nil {
		return nil, errf("ESTATE", "handshake did not finish")
	}
	// Section 13: K = HKDF-SHA256(salt h, IKM k1 || k2, info "hush/1 record key " ||
	// wire name), k1 from initiator to responder.
	o.hash = append([]byte{}, hs.ChannelBinding()...)
	ikm := append(rawKey(cs1), rawKey(cs2)...)
	o.recordKey = make([]byte, recordKeySize[*rp])
	kdf := hkdf.New(sha256.New, ikm, o.hash, []byte(recordKeyInfo+*rp))
	if _, err := io.ReadFull(kdf, o.recordKey); err != nil {
		return nil, errf("ECRYPTO", "HKDF: %v", err)
	}
	return o, nil
}

// chachaRekey is HUSHRP_CHACHA20_POLY1305_REKEY (section 3.3, with the counters of
// section 2), as a grpc-go record crypter: 44 bytes of key material, a KDF key K[0..32)
// and a nonce mask K[32..44); frame i of a direction uses the key
// HMAC-SHA256(K[0..32), kdf_counter || 01), all 32 bytes, where kdf_counter is i >> 16
// as 6 bytes LE, and the nonce counter(i) XOR mask.
type chachaRekey struct {
	kdfKey, mask []byte
	in, out      chachaDirection
}

// chachaDirection is one direction: the index of its next frame, the side byte of its
// counters, and the AEAD of the current kdf_counter (nil before the first frame).
type chachaDirection struct {
	index uint64
	side  byte
	epoch uint64
	aead  cipher.AEAD
}

func newChaChaRekey(s core.Side, key []byte) (conn.ALTSRecordCrypto, error) {
	if len(key) != 44 {
		return nil, errf("EKEYLEN", "HUSHRP_CHACHA20_POLY1305_REKEY takes 44 bytes of key")
	}
	c := &chachaRekey{kdfKey: append([]byte{}, key[:32]...), mask: append([]byte{}, key[32:]...)}
	// Byte 11 of the counter: 00 in the direction the client sends, 80 in the server's.
	c.out.side, c.in.side = 0x00, 0x80
	if s == core.ServerSide {
		c.out.side, c.in.side = 0x80, 0x00
	}
	return c, nil
}

// next returns the AEAD and nonce of the direction's next frame. Overflow: the last
// index, 2^64 - 1, is the only one a uint64 cannot go past; a test never reaches it.
func (c *chachaRekey) next(d *chachaDirection) (cipher.AEAD, []byte, error) {
	if d.aead == nil || d.index>>16 != d.epoch {
		kdfCounter := make([]byte, 8)
		binary.LittleEndian.PutUint64(kdfCounter, d.index>>16)
		mac := hmac.New(sha256.New, c.kdfKey)
		mac.Write(kdfCounter[:6])
		mac.Write([]byte{1})
		aead, err := chacha20poly1305.New(mac.Sum(nil))
		if err != nil {
			return nil, nil, err
		}
		d.aead, d.epoch = aead, d.index>>16
	}
	nonce := make([]byte, 12)
	binary.LittleEndian.PutUint64(nonce, d.index)
	nonce[11] = d.side
	for i := range nonce {
		nonce[i] ^= c.mask[i]
	}
	return d.aead, nonce, nil
}

func (c *chachaRekey) Encrypt(dst, plaintext []byte) ([]byte, error) {
	aead, nonce, err := c.next(&c.out)
	if err != nil {
		return nil, err
	}
	c.out.index++
	return aead.Seal(dst, nonce, plaintext, nil), nil
}

func (c *chachaRekey) EncryptionOverhead() int { return 16 }

func (c *chachaRekey) Decrypt(dst, ciphertext []byte) ([]byte, error) {
	aead, nonce, err := c.next(&c.in)
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(dst, nonce, ciphertext, nil)
	if err != nil {
		return nil, conn.ErrAuth // a frame that fails leaves the counter (section 2)
	}
	c.in.index++
	return pt, nil
}

// The crypter grpc-go made for the connection being set up (see the top comment).
// Connections are served one at a time, so one variable is enough.
var lastCrypter conn.ALTSRecordCrypto

func register(name string, f conn.ALTSRecordFunc) {
	conn.RegisterProtocol(name, func(s core.Side, key []byte) (conn.ALTSRecordCrypto, error) {
		c, err := f(s, key)
		lastCrypter = c
		return c, err
	})
}

// sendClose seals the close record, an empty plaintext (section 14), with the
// connection's own crypter, so it takes the next counter after the last data record.
func sendClose(raw net.Conn, crypter conn.ALTSRecordCrypto) error {
	hdr := make([]byte, 8, 8+crypter.EncryptionOverhead())
	binary.LittleEndian.PutUint32(hdr[4:], 6) // TYPE
	rec, err := crypter.Encrypt(hdr, nil)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(rec, uint32(len(rec)-4)) // LENGTH = 20
	_, err = raw.Write(rec)
	return err
}

// writeChunks writes data in Write calls of at most chunk bytes (grpc-go seals each
// small Write as records of its own).
func writeChunks(w io.Writer, data []byte, chunk int) error {
	for len(data) > 0 {
		n := len(data)
		if n > chunk {
			n = chunk
		}
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

type result struct {
	sent, recv       int64
	sentSum, recvSum hash.Hash
}

func serve(raw net.Conn, initiator bool, id identity) {
	defer raw.Close()
	o, err := handshake(raw, initiator, id)
	if err != nil {
		fail("handshake failed", err)
	}
	side := core.ServerSide
	if initiator {
		side = core.ClientSide
	}
	c, err := conn.NewConn(raw, side, *rp, o.recordKey, nil)
	if err != nil {
		fail("NewConn", err)
	}
	crypter := lastCrypter
	// Section 14.1: in NNpsk0 (no static keys) the initiator's first record is the
	// confirmation record, plaintext 01, and the responder's connection is open only
	// once that record has opened.
	if o.remoteStatic == nil {
		if initiator {
			if _, err := c.Write([]byte{1}); err != nil {
				fail("confirmation record", err)
			}
		} else {
			b := make([]byte, 64)
			n, err := c.Read(b)
			if err != nil {
				fail("confirmation record", err)
			}
			if n != 1 || b[0] != 1 {
				fail("confirmation record", errf("EHANDSHAKE",
					"the first record is not the confirmation record"))
			}
		}
	}
	finishWrite := func() error {
		if !*noClose {
			if err := sendClose(raw, crypter); err != nil {
				return err
			}
		}
		return raw.(*net.TCPConn).CloseWrite()
	}
	r := result{sentSum: sha256.New(), recvSum: sha256.New()}
	var outFile *os.File
	if *out != "" {
		if outFile, err = os.Create(*out); err != nil {
			fail("--out", err)
		}
		defer outFile.Close()
	}
	sendDone := make(chan error, 1)
	if *send != "" {
		data, err := ioutil.ReadFile(*send)
		if err != nil {
			fail("--send", err)
		}
		go func() {
			err := writeChunks(c, data, *chunk)
			if err == nil {
				r.sent = int64(len(data))
				r.sentSum.Write(data)
				err = finishWrite()
			}
			sendDone <- err
		}()
	}
	buf := make([]byte, 1<<20)
	for {
		n, err := c.Read(buf)
		if err == io.EOF {
			fail("read", errf("ETRUNCATED", "stream ended without the close record"))
		} else if err != nil {
			fail("read", err)
		}
		if n == 0 {
			break // the peer's close record: bytes after it are ignored
		}
		r.recv += int64(n)
		r.recvSum.Write(buf[:n])
		if outFile != nil {
			if _, err := outFile.Write(buf[:n]); err != nil {
				fail("--out", err)
			}
		}
		if *echo {
			if _, err := c.Write(buf[:n]); err != nil {
				fail("echo", err)
			}
			r.sent += int64(n)
			r.sentSum.Write(buf[:n])
		}
	}
	if *send != "" {
		if err := <-sendDone; err != nil {
			fail("send", err)
		}
	} else if err := finishWrite(); err != nil {
		fail("shutdown", err)
	}
	remote := "-"
	if o.remoteStatic != nil {
		remote = base64.StdEncoding.EncodeToString(o.remoteStatic)
	}
	fmt.Printf("RESULT sent_bytes=%d sent_sha256=%s recv_bytes=%d recv_sha256=%s "+
		"handshake_hash=%s remote_static=%s\n", r.sent, hex.EncodeToString(r.sentSum.Sum(nil)),
		r.recv, hex.EncodeToString(r.recvSum.Sum(nil)), hex.EncodeToString(o.hash), remote)
}

func loadIdentity() identity {
	var id identity
	if *keyFile != "" {
		keys, err := readKeyFile(*keyFile)
		if err != nil {
			fail(*keyFile, err)
		}
		priv := keys["private"]
		if priv == nil {
			fail(*keyFile, errf("EBADKEY", "no private line"))
		}
		pub, err := curve25519.X25519(priv, curve25519.Basepoint)
		if err != nil {
			fail(*keyFile, errf("EBADKEY", "%v", err))
		}
		if p, ok := keys["public"]; ok && !bytes.Equal(p, pub) {
			fail(*keyFile, errf("EBADKEY", "public line does not match the private key"))
		}
		id.static = &noise.DHKey{Private: priv, Public: pub}
	}
	if *pskFile != "" {
		keys, err := readKeyFile(*pskFile)
		if err != nil {
			fail(*pskFile, err)
		}
		if id.psk = keys["psk"]; id.psk == nil {
			fail(*pskFile, errf("EBADKEY", "no psk line"))
		}
	}
	return id
}

func main() {
	flag.Var(&peers, "peer", "allowed peer public key, base64 (repeatable)")
	flag.Parse()
	if (*listen == "") == (*connect == "") || (*echo && *send != "") || *chunk < 1 ||
		*count < 1 || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *rp == "" {
		// Section 8: the records follow the Noise cipher unless configured otherwise.
		*rp = "ALTSRP_GCM_AES128_REKEY"
		if strings.HasSuffix(*protocol, "_ChaChaPoly_SHA256") {
			*rp = "HUSHRP_CHACHA20_POLY1305_REKEY"
		}
	}
	if recordKeySize[*rp] == 0 {
		fail("--rp", errf("EPROTO_UNKNOWN", "unknown record protocol %s", *rp))
	}
	register("ALTSRP_GCM_AES128_REKEY", conn.NewAES128GCMRekey)
	register("ALTSRP_GCM_AES128", conn.NewAES128GCM)
	register("HUSHRP_CHACHA20_POLY1305_REKEY", newChaChaRekey)
	id := loadIdentity()
	if *connect != "" {
		raw, err := net.Dial("tcp", *connect)
		if err != nil {
			fail("connect", err)
		}
		serve(raw, true, id)
		return
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail("listen", err)
	}
	if *ready != "" {
		tmp := *ready + ".tmp"
		if err := ioutil.WriteFile(tmp, []byte(l.Addr().String()+"\n"), 0644); err != nil {
			fail("--ready", err)
		}
		if err := os.Rename(tmp, *ready); err != nil {
			fail("--ready", err)
		}
	}
	for i := 0; i < *count; i++ {
		raw, err := l.Accept()
		if err != nil {
			fail("accept", err)
		}
		serve(raw, false, id)
	}
}
