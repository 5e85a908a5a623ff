/*
 * record-peer: hush's record layer alone (hush/record.h) over a plain TCP socket, as
 * the hush end of test/interop/run-alts-interop.sh. No transport, no libevent: one
 * poll() loop seals, sends, receives, parses and opens, so what reaches the wire is
 * exactly what hush_record_seal() produced and what is checked is exactly what
 * hush_record_open() accepted.
 *
 *   record-peer (--listen HOST:PORT [--ready FILE] [--count N] | --connect HOST:PORT)
 *               --rp ALTSRP_GCM_AES128_REKEY|ALTSRP_GCM_AES128|HUSHRP_... --key HEX
 *               [--side client|server] [--echo] [--send FILE] [--out FILE]
 *               [--frame BYTES]
 *
 * The listening end is the ALTS server and the connecting end the client unless --side
 * says otherwise. --echo seals every received record's plaintext back (one received
 * record gives one record back while it fits --frame); when the peer shuts down its
 * write side, the echo is flushed and ours is shut down. --send FILE sends the file in
 * records of at most --frame bytes on the wire, shuts down the write side, and reads
 * the reply until EOF. --out FILE keeps what was received. Each connection prints
 *   RESULT sent_bytes=N sent_sha256=HEX recv_bytes=N recv_sha256=HEX
 *   RECORDS sealed=N opened=N
 * and the program exits 0 after --count connections, or prints the error (with its
 * hush name, such as EAUTH or ETRUNCATED) and exits 1 at the first failure.
 *
 * One thread uses each record context, as hush/record.h requires: sending and receiving
 * interleave in the poll() loop instead of running on two threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <hush.h>

#define PROG "record-peer"
/* Room for this many bytes of sealed frames, on top of one largest frame, so that many
 * small records go out in one send(). */
#define SEND_BATCH 65536
/* A connection that makes no progress for this long fails. */
#define IDLE_TIMEOUT_MS 60000

struct opts {
	const char *listen;
	const char *connect;
	const char *ready;
	const char *send;
	const char *out;
	long count;
	enum hush_record_protocol rp;
	uint8_t key[HUSH_RECORD_MAX_KEY_SIZE];
	size_t key_len;
	int side; /* -1: by role */
	int echo;
	size_t frame; /* 0: hush's default */
};

struct peer {
	int fd;
	struct hush_record *rec;
	size_t max_payload;
	/* Received bytes not yet opened are rbuf[rstart, rend). */
	uint8_t *rbuf;
	size_t rcap;
	size_t rstart;
	size_t rend;
	int read_eof;
	/* Sealed frames not yet sent are wbuf[woff, wlen). */
	uint8_t *wbuf;
	size_t wcap;
	size_t woff;
	size_t wlen;
	/* Echo: opened plaintext not yet sealed back. It points into rbuf, which is
	 * neither compacted nor read into while it is pending. */
	const uint8_t *echo_ptr;
	size_t echo_len;
	FILE *src;
	int src_eof;
	int shut;
	FILE *out;
	EVP_MD_CTX *sent_md;
	EVP_MD_CTX *recv_md;
	uint64_t sent_bytes;
	uint64_t recv_bytes;
	uint64_t sealed;
	uint64_t opened;
};

static struct opts opt;

static void usage(void)
{
	fprintf(stderr,
		"usage: " PROG " (--listen HOST:PORT [--ready FILE] [--count N] | "
		"--connect HOST:PORT)\n"
		"                   --rp PROTOCOL --key HEX [--side client|server] [--echo]\n"
		"                   [--send FILE] [--out FILE] [--frame BYTES]\n");
	exit(2);
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* A hush error: its name first, so that scripts can match it. */
static void die_hush(const char *what, int err)
{
	die("%s: %s: %s", what, hush_err_name(err), hush_strerror(err));
}

static int unhex(const char *s, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = strlen(s);
	if (n % 2 != 0 || n / 2 > cap) {
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		int c = s[i];
		int v = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (v < 0) {
			return -1;
		}
		if (i % 2 == 0) {
			out[i / 2] = (uint8_t)(v << 4);
		} else {
			out[i / 2] |= (uint8_t)v;
		}
	}
	*len = n / 2;
	return 0;
}

static void digest_hex(EVP_MD_CTX *md, char out[65])
{
	uint8_t d[32];
	EVP_DigestFinal_ex(md, d, NULL);
	for (size_t i = 0; i < sizeof(d); i++) {
		snprintf(out + 2 * i, 3, "%02x", d[i]);
	}
}

static void open_records(struct peer *p);

/* Seals the n plaintext bytes already placed at the payload position of the next frame
 * in the send buffer (wbuf + wlen + HUSH_RECORD_HEADER_SIZE). */
static void seal_in_place(struct peer *p, size_t n)
{
	uint8_t *frame = p->wbuf + p->wlen;
	size_t frame_len;
	EVP_DigestUpdate(p->sent_md, frame + HUSH_RECORD_HEADER_SIZE, n);
	int rc = hush_record_seal(p->rec, frame, p->wcap - p->wlen, n, &frame_len);
	if (rc < 0) {
		die_hush("seal", rc);
	}
	p->wlen += frame_len;
	p->sent_bytes += n;
	p->sealed++;
}

/* Fills the empty send buffer with sealed records of at most max_payload plaintext
 * bytes each: the pending echo, or the next part of the file. */
static void fill(struct peer *p)
{
	p->woff = 0;
	p->wlen = 0;
	for (;;) {
		if (opt.echo && p->echo_len == 0) {
			open_records(p); /* the next received record, if complete */
		}
		size_t room = p->wcap - p->wlen;
		uint8_t *payload = p->wbuf + p->wlen + HUSH_RECORD_HEADER_SIZE;
		size_t n;
		if (p->echo_len > 0) {
			n = p->echo_len < p->max_payload ? p->echo_len : p->max_payload;
			if (room < n + HUSH_RECORD_OVERHEAD) {
				return;
			}
			memcpy(payload, p->echo_ptr, n);
			p->echo_ptr += n;
			p->echo_len -= n;
		} else if (p->src != NULL && !p->src_eof) {
			if (room < p->max_payload + HUSH_RECORD_OVERHEAD) {
				return;
			}
			n = fread(payload, 1, p->max_payload, p->src);
			if (n < p->max_payload) {
				if (ferror(p->src)) {
					die("read %s: %s", opt.send, strerror(errno));
				}
				p->src_eof = 1;
			}
			if (n == 0) {
				return; /* hush never sends an empty record here */
			}
		} else {
			return;
		}
		seal_in_place(p, n);
	}
}

/* Opens every complete record in the receive buffer, stopping while an echo is
 * pending (its plaintext lives in the buffer). */
static void open_records(struct peer *p)
{
	while (p->echo_len == 0 && p->rend > p->rstart) {
		size_t need;
		uint8_t *frame = p->rbuf + p->rstart;
		int rc = hush_record_parse(p->rec, frame, p->rend - p->rstart, &need);
		if (rc == HUSH_EAGAIN) {
			return;
		}
		if (rc < 0) {
			die_hush("parse", rc);
		}
		struct hush_iovec pt;
		rc = hush_record_open(p->rec, frame, need, &pt);
		if (rc < 0) {
			die_hush("open", rc);
		}
		p->rstart += need;
		p->opened++;
		p->recv_bytes += pt.len;
		EVP_DigestUpdate(p->recv_md, pt.base, pt.len);
		if (p->out != NULL && pt.len > 0 && fwrite(pt.base, 1, pt.len, p->out) != pt.len) {
			die("write %s: %s", opt.out, strerror(errno));
		}
		if (opt.echo) {
			p->echo_ptr = pt.base;
			p->echo_len = pt.len;
		}
	}
}

/* Reads what the socket has; at EOF, bytes left over are a truncated record. */
static void do_read(struct peer *p)
{
	if (p->rstart > 0) {
		/* Only the start of one record is left: moving it is cheap. */
		memmove(p->rbuf, p->rbuf + p->rstart, p->rend - p->rstart);
		p->rend -= p->rstart;
		p->rstart = 0;
	}
	ssize_t n = recv(p->fd, p->rbuf + p->rend, p->rcap - p->rend, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			return;
		}
		die("recv: %s", strerror(errno));
	}
	if (n == 0) {
		p->read_eof = 1;
		if (p->rend > p->rstart) {
			fprintf(stderr, PROG ": %zu bytes of an incomplete record at EOF\n",
				p->rend - p->rstart);
			die_hush("recv", HUSH_ETRUNCATED);
		}
		return;
	}
	p->rend += (size_t)n;
}

static void do_write(struct peer *p)
{
	ssize_t n = send(p->fd, p->wbuf + p->woff, p->wlen - p->woff, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			return;
		}
		die("send: %s", strerror(errno));
	}
	p->woff += (size_t)n;
}

/* A record context for the options given; any error in them is fatal. */
static struct hush_record *new_record(enum hush_side side)
{
	struct hush_record *rec;
	int rc = hush_record_new(&rec, opt.rp, opt.key, opt.key_len, side);
	if (rc < 0) {
		die_hush("--key", rc);
	}
	rc = hush_record_set_limits(rec, opt.frame, 0);
	if (rc < 0) {
		die_hush("--frame", rc);
	}
	return rec;
}

static void run(int fd, enum hush_side side)
{
	struct peer p;
	memset(&p, 0, sizeof(p));
	p.fd = fd;
	p.rec = new_record(side);
	p.max_payload = hush_record_max_payload(p.rec);
	p.rcap = hush_record_max_frame(p.rec);
	p.wcap = p.max_payload + HUSH_RECORD_OVERHEAD + SEND_BATCH;
	p.rbuf = malloc(p.rcap);
	p.wbuf = malloc(p.wcap);
	p.sent_md = EVP_MD_CTX_new();
	p.recv_md = EVP_MD_CTX_new();
	if (p.rbuf == NULL || p.wbuf == NULL || p.sent_md == NULL || p.recv_md == NULL ||
	    !EVP_DigestInit_ex(p.sent_md, EVP_sha256(), NULL) ||
	    !EVP_DigestInit_ex(p.recv_md, EVP_sha256(), NULL)) {
		die("out of memory");
	}
	if (opt.send != NULL && (p.src = fopen(opt.send, "rb")) == NULL) {
		die("%s: %s", opt.send, strerror(errno));
	}
	if (opt.out != NULL && (p.out = fopen(opt.out, "wb")) == NULL) {
		die("%s: %s", opt.out, strerror(errno));
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		die("fcntl: %s", strerror(errno));
	}

	for (;;) {
		open_records(&p);
		if (p.woff == p.wlen) {
			fill(&p);
		}
		/* Nothing more will be sent: the file is all out, or (echo and plain
		 * receiving) the peer has finished and everything it sent is echoed. */
		int done_sending = p.src != NULL ? p.src_eof : p.read_eof && p.echo_len == 0;
		if (p.woff == p.wlen && done_sending && !p.shut) {
			if (shutdown(fd, SHUT_WR) < 0) {
				die("shutdown: %s", strerror(errno));
			}
			p.shut = 1;
		}
		if (p.shut && p.read_eof) {
			break;
		}
		struct pollfd pfd = {.fd = fd, .events = 0};
		int want_read = !p.read_eof && p.echo_len == 0;
		int want_write = p.woff < p.wlen;
		if (want_read) {
			pfd.events |= POLLIN;
		}
		if (want_write) {
			pfd.events |= POLLOUT;
		}
		int n = poll(&pfd, 1, IDLE_TIMEOUT_MS);
		if (n < 0 && errno != EINTR) {
			die("poll: %s", strerror(errno));
		}
		if (n == 0) {
			die_hush("poll", HUSH_ETIMEDOUT);
		}
		if (n < 0) {
			continue;
		}
		/* POLLERR and POLLHUP come unasked: the call that fails reports them. */
		if (want_read && (pfd.revents & (POLLIN | POLLERR | POLLHUP))) {
			do_read(&p);
		}
		if (want_write && (pfd.revents & (POLLOUT | POLLERR | POLLHUP))) {
			do_write(&p);
		}
	}

	char sent_hex[65], recv_hex[65];
	digest_hex(p.sent_md, sent_hex);
	digest_hex(p.recv_md, recv_hex);
	printf("RESULT sent_bytes=%llu sent_sha256=%s recv_bytes=%llu recv_sha256=%s\n",
	       (unsigned long long)p.sent_bytes, sent_hex, (unsigned long long)p.recv_bytes,
	       recv_hex);
	printf("RECORDS sealed=%llu opened=%llu\n", (unsigned long long)p.sealed,
	       (unsigned long long)p.opened);
	fflush(stdout);
	if (p.src != NULL) {
		fclose(p.src);
	}
	if (p.out != NULL && fclose(p.out) != 0) {
		die("write %s: %s", opt.out, strerror(errno));
	}
	EVP_MD_CTX_free(p.sent_md);
	EVP_MD_CTX_free(p.recv_md);
	free(p.rbuf);
	free(p.wbuf);
	hush_record_free(p.rec);
	close(fd);
}

/* Resolves "host:port" or "[v6]:port". */
static struct addrinfo *resolve(const char *addr, int passive)
{
	const char *colon = strrchr(addr, ':');
	char host[256];
	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
		die("bad address %s", addr);
	}
	size_t hl = (size_t)(colon - addr);
	const char *h = addr;
	if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	struct addrinfo hints, *res;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	int e = getaddrinfo(hl > 0 ? host : NULL, colon + 1, &hints, &res);
	if (e != 0) {
		die("%s: %s", addr, gai_strerror(e));
	}
	return res;
}

static void write_ready(int lfd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV], tmp[4096];
	if (getsockname(lfd, (struct sockaddr *)&ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		die("getsockname: %s", strerror(errno));
	}
	/* Written whole under a temporary name, then renamed: a reader never sees half. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", opt.ready);
	FILE *f = fopen(tmp, "w");
	if (f == NULL) {
		die("%s: %s", tmp, strerror(errno));
	}
	fprintf(f, ss.ss_family == AF_INET6 ? "[%s]:%s\n" : "%s:%s\n", host, port);
	if (fclose(f) != 0 || rename(tmp, opt.ready) < 0) {
		die("%s: %s", opt.ready, strerror(errno));
	}
}

int main(int argc, char **argv)
{
	const char *rp = NULL, *key = NULL;
	opt.count = 1;
	opt.side = -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v != NULL && ++i)
		if (ARG("--listen")) {
			opt.listen = v;
		} else if (ARG("--connect")) {
			opt.connect = v;
		} else if (ARG("--ready")) {
			opt.ready = v;
		} else if (ARG("--count")) {
			opt.count = atol(v);
		} else if (ARG("--rp")) {
			rp = v;
		} else if (ARG("--key")) {
			key = v;
		} else if (ARG("--side")) {
			if (strcmp(v, "client") == 0) {
				opt.side = HUSH_SIDE_CLIENT;
			} else if (strcmp(v, "server") == 0) {
				opt.side = HUSH_SIDE_SERVER;
			} else {
				usage();
			}
		} else if (strcmp(a, "--echo") == 0) {
			opt.echo = 1;
		} else if (ARG("--send")) {
			opt.send = v;
		} else if (ARG("--out")) {
			opt.out = v;
		} else if (ARG("--frame")) {
			opt.frame = (size_t)strtoul(v, NULL, 10);
		} else {
			usage();
		}
#undef ARG
	}
	if ((opt.listen == NULL) == (opt.connect == NULL) || rp == NULL || key == NULL ||
	    opt.count < 1 || (opt.echo && opt.send != NULL)) {
		usage();
	}
	if (hush_record_protocol_from_name(rp, &opt.rp) < 0) {
		fprintf(stderr, PROG ": unknown record protocol %s\n", rp);
		return 2;
	}
	if (unhex(key, opt.key, sizeof(opt.key), &opt.key_len) < 0) {
		fprintf(stderr, PROG ": --key must be at most %d bytes in hex\n",
			HUSH_RECORD_MAX_KEY_SIZE);
		return 2;
	}
	/* Refuse a bad key or frame size before touching the network. */
	hush_record_free(new_record(HUSH_SIDE_CLIENT));

	if (opt.connect != NULL) {
		struct addrinfo *ai = resolve(opt.connect, 0);
		int fd = socket(ai->ai_family, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			die("connect %s: %s", opt.connect, strerror(errno));
		}
		freeaddrinfo(ai);
		run(fd, opt.side < 0 ? HUSH_SIDE_CLIENT : (enum hush_side)opt.side);
		return 0;
	}
	struct addrinfo *ai = resolve(opt.listen, 1);
	int lfd = socket(ai->ai_family, SOCK_STREAM, 0);
	int one = 1;
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(lfd, 16) < 0) {
		die("listen %s: %s", opt.listen, strerror(errno));
	}
	freeaddrinfo(ai);
	if (opt.ready != NULL) {
		write_ready(lfd);
	}
	for (long served = 0; served < opt.count; served++) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			die("accept: %s", strerror(errno));
		}
		run(fd, opt.side < 0 ? HUSH_SIDE_SERVER : (enum hush_side)opt.side);
	}
	close(lfd);
	return 0;
}
