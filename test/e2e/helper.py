#!/usr/bin/env python3
"""Servers and clients for hushpipe's end-to-end test (run-hushpipe-e2e.sh).

  helper.py httpd --port P --root DIR --ready FILE
      HTTP/1.1 file server (python's http.server) that also stores PUT bodies under
      DIR/up/, and two faulty paths: /cut/N sends a Content-Length of N bytes, then
      half of them and closes; /reset/N does the same but resets the connection.
  helper.py echo --port P --status FILE
      echo server for many connections (epoll); writes its connection count to FILE.
  helper.py idle --port P --n N --status FILE --ready FILE --go FILE [--batch B]
      opens N connections through the tunnel to the echo server (B at a time, each
      batch confirmed by the server's count), writes FILE ready, waits for the go
      file, then sends a distinct token on every connection and checks its echo.
  helper.py ping --port P [--timeout SEC]
      one connection: send a token, expect it back; exit 0 or 1.
  helper.py linger --port P
      one connection: a ping, then waits for the far end to close it; prints seconds.
  helper.py silent --port P
      connects and sends nothing; prints the seconds until the far end closes.
  helper.py tarpit --port P --ready FILE
      a listening socket whose backlog is full: connects to it hang.
  helper.py blast-server --port P --ready FILE     sends MiB-sized chunks forever
  helper.py blast-client --port P --bytes N        reads N bytes, prints MB/s
  helper.py ports --n N                            prints N free listening ports
"""
import argparse
import http.server
import os
import random
import select
import socket
import socketserver
import struct
import sys
import threading
import time


def write_file(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_PUT(self):
        name = os.path.basename(self.path)
        length = int(self.headers.get("Content-Length", "0"))
        dest = os.path.join(self.directory, "up", name)
        left = length
        with open(dest + ".part", "wb") as f:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                f.write(chunk)
                left -= len(chunk)
        if left:
            self.close_connection = True
            return
        os.rename(dest + ".part", dest)
        body = b"stored\n"
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        parts = self.path.split("/")
        if len(parts) == 3 and parts[1] in ("cut", "reset"):
            total = int(parts[2])
            self.send_response(200)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            sent, chunk = 0, b"x" * 65536
            while sent < total // 2:
                self.wfile.write(chunk)
                sent += len(chunk)
            self.wfile.flush()
            if parts[1] == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        super().do_GET()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def httpd(a):
    root = a.root
    os.makedirs(os.path.join(root, "up"), exist_ok=True)

    def make(*args, **kw):
        return Handler(*args, directory=root, **kw)

    srv = Server(("127.0.0.1", a.port), make)
    write_file(a.ready, "ready\n")
    srv.serve_forever()


def echo(a):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(4096)
    ls.setblocking(False)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns = {}
    last = -1
    while True:
        for fd, ev in ep.poll(0.2):
            if fd == ls.fileno():
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns[fd]
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if data:
                c.sendall(data)
            else:
                ep.unregister(fd)
                c.close()
                del conns[fd]
        if len(conns) != last:
            last = len(conns)
            write_file(a.status, "%d\n" % last)


def read_count(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def idle(a):
    socks = []
    deadline_per_batch = 60
    base = read_count(a.status)
    while len(socks) < a.n:
        k = min(a.batch, a.n - len(socks))
        for _ in range(k):
            s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
            socks.append(s)
        t0 = time.time()
        while read_count(a.status) < base + len(socks):
            if time.time() - t0 > deadline_per_batch:
                print("idle: only %d of %d connections reached the server"
                      % (read_count(a.status) - base, len(socks)), file=sys.stderr)
                sys.exit(1)
            time.sleep(0.05)
    write_file(a.ready, "%d\n" % len(socks))
    while not os.path.exists(a.go):
        time.sleep(0.05)
    # Every connection used once: a distinct token each, checked on its echo.
    for i, s in enumerate(socks):
        s.sendall(b"token-%08d\n" % i)
    bad = 0
    for i, s in enumerate(socks):
        want = b"token-%08d\n" % i
        got = b""
        while len(got) < len(want):
            chunk = s.recv(len(want) - len(got))
            if not chunk:
                break
            got += chunk
        if got != want:
            bad += 1
    for s in socks:
        s.close()
    print("idle: %d connections used, %d bad" % (len(socks), bad))
    sys.exit(1 if bad else 0)


def ping(a):
    try:
        s = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
        s.sendall(b"ping\n")
        got = b""
        while len(got) < 5:
            chunk = s.recv(5 - len(got))
            if not chunk:
                break
            got += chunk
        sys.exit(0 if got == b"ping\n" else 1)
    except OSError:
        sys.exit(1)


def wait_closed(s):
    t0 = time.time()
    s.settimeout(60)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    return time.time() - t0


def linger(a):
    s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
    s.sendall(b"ping\n")
    got = b""
    while len(got) < 5:
        chunk = s.recv(5 - len(got))
        if not chunk:
            sys.exit(1)
        got += chunk
    print("%.2f" % wait_closed(s))


def silent(a):
    s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
    print("%.2f" % wait_closed(s))


def tarpit(a):
    ls = socket.socket()
    ls.bind(("127.0.0.1", a.port))
    ls.listen(0)
    # Connections nobody accepts fill the backlog; once it is full, later SYNs go
    # unanswered. How many fit depends on the kernel (and on when it has moved a
    # finished handshake into the queue), so fill until a connection attempt hangs.
    fillers = []
    for _ in range(64):
        s = socket.socket()
        s.settimeout(0.3)
        try:
            s.connect(("127.0.0.1", a.port))
        except socket.timeout:
            s.close()
            break
        fillers.append(s)
    else:
        sys.exit("tarpit: the backlog never filled")
    write_file(a.ready, "ready\n")
    while True:
        time.sleep(60)


def blast_server(a):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(16)
    write_file(a.ready, "ready\n")
    chunk = os.urandom(1 << 20)

    def send_forever(c):
        try:
            while True:
                c.sendall(chunk)
        except OSError:
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=send_forever, args=(c,), daemon=True).start()


def blast_client(a):
    s = socket.create_connection(("127.0.0.1", a.port))
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    left = a.bytes
    t0 = time.perf_counter()
    while left > 0:
        n = s.recv_into(view, min(left, len(buf)))
        if n == 0:
            print("blast: stream ended with %d bytes left" % left, file=sys.stderr)
            sys.exit(1)
        left -= n
    dt = time.perf_counter() - t0
    s.close()
    print("%.1f" % (a.bytes / dt / 1e6))


def ports(a):
    # Listening ports below the kernel's ephemeral range, free now: a port from that
    # range (bind to port 0) could be taken as the source port of any outgoing
    # connection on the machine between this choice and the listen() that uses it.
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    found = []
    while len(found) < a.n:
        p = random.randrange(1024, max(low, 4096))
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        if p not in found:
            found.append(p)
    print(" ".join(map(str, found)))


# Each command: its function and its options (name, type, default; no default means
# required).
COMMANDS = {
    "httpd": (httpd, [("port", int), ("root", str), ("ready", str)]),
    "echo": (echo, [("port", int), ("status", str)]),
    "idle": (idle, [("port", int), ("n", int), ("status", str),
                                 ("ready", str), ("go", str), ("batch", int, 500)]),
    "ping": (ping, [("port", int), ("timeout", float, 5)]),
    "linger": (linger, [("port", int)]),
    "silent": (silent, [("port", int)]),
    "tarpit": (tarpit, [("port", int), ("ready", str)]),
    "blast-server": (blast_server, [("port", int), ("ready", str)]),
    "blast-client": (blast_client, [("port", int), ("bytes", int)]),
    "ports": (ports, [("n", int)]),
}


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, (_, opts) in COMMANDS.items():
        c = sub.add_parser(name)
        for o in opts:
            if len(o) == 3:
                c.add_argument("--" + o[0], type=o[1], default=o[2])
            else:
                c.add_argument("--" + o[0], type=o[1], required=True)
    a = p.parse_args()
    COMMANDS[a.cmd][0](a)


if __name__ == "__main__":
    main()
