// hushpeer: gRPC's own ALTS record code (grpc-go credentials/alts/internal/conn) with
// a fixed key, as the other end of hush's interoperability tests. Same command line
// and RESULT line as hush's test/interop/record-peer and examples/altsrp-echo:
//
//	hushpeer (--listen HOST:PORT [--ready FILE] [--count N] | --connect HOST:PORT)
//	         --rp ALTSRP_GCM_AES128_REKEY|ALTSRP_GCM_AES128 --key HEX
//	         [--side client|server] [--echo] [--send FILE] [--out FILE] [--chunk N]
//	         [--cut N]
//
// --chunk N writes the file in N-byte Write calls; grpc-go seals each small Write as
// one record, so small chunks make many records (to cross the rekey boundary). Each
// Read of grpc-go's conn returns at most one record's plaintext, so --echo sends back
// one record per record received, up to grpc-go's 4072-byte payload limit.
// --echo and --send exclude each other. --cut N puts only the first N bytes of what
// grpc-go writes on the wire (the peer then sees a record cut short by EOF).
//
// It must be built inside the grpc source tree (Go's internal-package rule), in
// GOPATH mode: test/interop/run-alts-interop.sh does that.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"hash"
	"io"
	"io/ioutil"
	"net"
	"os"

	core "google.golang.org/grpc/credentials/alts/internal"
	"google.golang.org/grpc/credentials/alts/internal/conn"
)

var (
	listen  = flag.String("listen", "", "HOST:PORT to listen on")
	connect = flag.String("connect", "", "HOST:PORT to connect to")
	ready   = flag.String("ready", "", "file to write the bound HOST:PORT to")
	count   = flag.Int("count", 1, "connections to serve")
	rp      = flag.String("rp", "", "record protocol")
	keyHex  = flag.String("key", "", "key material, hex")
	side    = flag.String("side", "", "client or server")
	echo    = flag.Bool("echo", false, "send back what is received")
	send    = flag.String("send", "", "file to send")
	out     = flag.String("out", "", "file to write what is received")
	chunk   = flag.Int("chunk", 65536, "bytes per Write when sending")
	cut     = flag.Int64("cut", -1, "stop putting bytes on the wire after this many (test truncation)")
)

// cutConn passes the first left bytes written through and silently drops the rest, so
// that the peer sees the stream end inside a record once we shut down the write side.
type cutConn struct {
	net.Conn
	left int64
}

func (c *cutConn) Write(b []byte) (int, error) {
	n := int64(len(b))
	if n > c.left {
		n = c.left
	}
	if n > 0 {
		if _, err := c.Conn.Write(b[:n]); err != nil {
			return 0, err
		}
		c.left -= n
	}
	return len(b), nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "hushpeer: "+format+"\n", args...)
	os.Exit(1)
}

type result struct {
	sent, recv       int64
	sentSum, recvSum hash.Hash
}

func serve(raw net.Conn, s core.Side, key []byte) {
	var wire net.Conn = raw
	if *cut >= 0 {
		wire = &cutConn{Conn: raw, left: *cut}
	}
	c, err := conn.NewConn(wire, s, *rp, key, nil)
	if err != nil {
		fail("NewConn: %v", err)
	}
	r := result{sentSum: sha256.New(), recvSum: sha256.New()}
	var outFile *os.File
	if *out != "" {
		if outFile, err = os.Create(*out); err != nil {
			fail("%v", err)
		}
		defer outFile.Close()
	}
	sendDone := make(chan error, 1)
	if *send != "" {
		data, err := ioutil.ReadFile(*send)
		if err != nil {
			fail("%v", err)
		}
		go func() {
			for off := 0; off < len(data); off += *chunk {
				end := off + *chunk
				if end > len(data) {
					end = len(data)
				}
				if _, err := c.Write(data[off:end]); err != nil {
					sendDone <- err
					return
				}
			}
			r.sent = int64(len(data))
			r.sentSum.Write(data)
			sendDone <- raw.(*net.TCPConn).CloseWrite()
		}()
	}
	buf := make([]byte, 1<<20)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			r.recv += int64(n)
			r.recvSum.Write(buf[:n])
			if outFile != nil {
				outFile.Write(buf[:n])
			}
			if *echo {
				if _, werr := c.Write(buf[:n]); werr != nil {
					fail("echo: %v", werr)
				}
				r.sent += int64(n)
				r.sentSum.Write(buf[:n])
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("read: %v", err)
		}
	}
	if *send != "" {
		if err := <-sendDone; err != nil {
			fail("send: %v", err)
		}
	} else if err := raw.(*net.TCPConn).CloseWrite(); err != nil {
		fail("shutdown: %v", err)
	}
	raw.Close()
	fmt.Printf("RESULT sent_bytes=%d sent_sha256=%s recv_bytes=%d recv_sha256=%s\n", r.sent,
		hex.EncodeToString(r.sentSum.Sum(nil)), r.recv, hex.EncodeToString(r.recvSum.Sum(nil)))
}

func main() {
	flag.Parse()
	if (*listen == "") == (*connect == "") || *rp == "" || *keyHex == "" ||
		(*echo && *send != "") || *chunk < 1 || *count < 1 {
		flag.Usage()
		os.Exit(2)
	}
	key, err := hex.DecodeString(*keyHex)
	if err != nil {
		fail("--key: %v", err)
	}
	conn.RegisterProtocol("ALTSRP_GCM_AES128_REKEY", conn.NewAES128GCMRekey)
	conn.RegisterProtocol("ALTSRP_GCM_AES128", conn.NewAES128GCM)
	pick := func(def core.Side) core.Side {
		switch *side {
		case "client":
			return core.ClientSide
		case "server":
			return core.ServerSide
		case "":
			return def
		}
		fail("--side must be client or server")
		return def
	}
	if *connect != "" {
		raw, err := net.Dial("tcp", *connect)
		if err != nil {
			fail("connect: %v", err)
		}
		serve(raw, pick(core.ClientSide), key)
		return
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail("listen: %v", err)
	}
	if *ready != "" {
		tmp := *ready + ".tmp"
		if err := ioutil.WriteFile(tmp, []byte(l.Addr().String()+"\n"), 0644); err != nil {
			fail("%v", err)
		}
		os.Rename(tmp, *ready)
	}
	for i := 0; i < *count; i++ {
		raw, err := l.Accept()
		if err != nil {
			fail("accept: %v", err)
		}
		serve(raw, pick(core.ServerSide), key)
	}
}
