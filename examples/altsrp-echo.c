/*
 * altsrp-echo: ALTS records over TCP with a fixed key, on hush's raw-key API.
 *
 *   altsrp-echo (--listen HOST:PORT [--ready FILE] [--count N] | --connect HOST:PORT)
 *               --rp ALTSRP_GCM_AES128_REKEY|ALTSRP_GCM_AES128 --key HEX
 *               [--side client|server] [--echo] [--send FILE] [--out FILE]
 *               [--frame BYTES]
 *
 * This is how a program uses keys from an external handshaker (such as gRPC's ALTS
 * handshaker service): make a hush_loop for the event_base, wrap each connected socket
 * in a hush_conn, and start it with hush_conn_start_raw(). It speaks to gRPC's own
 * ALTS record code (see test/interop/).
 *
 * --echo sends every byte received back; when the peer shuts down its write side the
 * echo is flushed and ours is shut down too. --send FILE sends the file, shuts down the
 * write side and reads the reply until EOF. Each connection ends with one line
 *   RESULT sent_bytes=N sent_sha256=HEX recv_bytes=N recv_sha256=HEX
 * and the program exits 0, or prints the error and exits 1.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/evp.h>

#include <hush.h>
#include <hush/conn.h>

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
	size_t frame;
};

struct session {
	struct opts *o;
	struct hush_conn *conn;
	struct event_base *base;
	EVP_MD_CTX *sent_md;
	EVP_MD_CTX *recv_md;
	uint64_t sent_bytes;
	uint64_t recv_bytes;
	FILE *send_file;
	FILE *out_file;
	int eof;
	int shut;
	int failed;
	int done;
};

static struct opts opt;
static long served;
static int exit_code;
static struct event_base *base;
static struct event *listen_ev;

static void usage(void)
{
	fprintf(stderr,
		"usage: altsrp-echo (--listen HOST:PORT [--ready FILE] [--count N] | --connect "
		"HOST:PORT)\n"
		"                   --rp ALTSRP_GCM_AES128_REKEY|ALTSRP_GCM_AES128 --key HEX\n"
		"                   [--side client|server] [--echo] [--send FILE] [--out FILE]\n"
		"                   [--frame BYTES]\n");
	exit(2);
}

static int unhex(const char *s, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = strlen(s);
	if (n % 2 != 0 || n / 2 > cap) {
		return -1;
	}
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1) {
			return -1;
		}
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
	return 0;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++) {
		sprintf(out + 2 * i, "%02x", p[i]);
	}
}

/* Splits "host:port" (or "[v6]:port") into its parts. */
static int split_addr(const char *s, char *host, size_t hcap, char *port, size_t pcap)
{
	const char *colon = strrchr(s, ':');
	if (colon == NULL) {
		return -1;
	}
	const char *h = s;
	size_t hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= hcap || strlen(colon + 1) >= pcap) {
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

static void finish(struct session *s)
{
	if (s->done) {
		return;
	}
	s->done = 1;
	if (!s->failed) {
		uint8_t a[32], b[32];
		char ha[65], hb[65];
		EVP_DigestFinal_ex(s->sent_md, a, NULL);
		EVP_DigestFinal_ex(s->recv_md, b, NULL);
		hex(a, 32, ha);
		hex(b, 32, hb);
		printf("RESULT sent_bytes=%llu sent_sha256=%s recv_bytes=%llu recv_sha256=%s\n",
		       (unsigned long long)s->sent_bytes, ha, (unsigned long long)s->recv_bytes,
		       hb);
		fflush(stdout);
	} else {
		exit_code = 1;
	}
	hush_conn_free(s->conn);
	EVP_MD_CTX_free(s->sent_md);
	EVP_MD_CTX_free(s->recv_md);
	if (s->send_file != NULL) {
		fclose(s->send_file);
	}
	if (s->out_file != NULL) {
		fclose(s->out_file);
	}
	free(s);
	served++;
	if (opt.connect != NULL || exit_code != 0 || served >= opt.count) {
		event_base_loopbreak(base);
	}
}

/* The exchange is over when both directions are: our write side is shut down and the
 * peer's EOF was seen. */
static void maybe_finish(struct session *s)
{
	if (s->eof && s->shut) {
		finish(s);
	}
}

/* Sends more of the file until the queue passes the high watermark or the file ends. */
static void pump(struct session *s)
{
	static uint8_t chunk[65536];
	while (s->send_file != NULL) {
		size_t n = fread(chunk, 1, sizeof(chunk), s->send_file);
		if (n == 0) {
			fclose(s->send_file);
			s->send_file = NULL;
			if (hush_conn_shutdown(s->conn) < 0) {
				s->failed = 1;
				finish(s);
			}
			return;
		}
		int rc = hush_conn_write(s->conn, chunk, n);
		if (rc < 0) {
			fprintf(stderr, "altsrp-echo: write: %s (%s)\n", hush_err_name(rc),
				hush_strerror(rc));
			s->failed = 1;
			finish(s);
			return;
		}
		EVP_DigestUpdate(s->sent_md, chunk, n);
		s->sent_bytes += n;
		if (rc == 1) {
			return; /* above the high watermark: on_writable resumes */
		}
	}
}

static void on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct session *s = arg;
	EVP_DigestUpdate(s->recv_md, data, len);
	s->recv_bytes += len;
	if (s->out_file != NULL && fwrite(data, 1, len, s->out_file) != len) {
		fprintf(stderr, "altsrp-echo: writing --out: %s\n", strerror(errno));
		s->failed = 1;
		finish(s);
		return;
	}
	if (s->o->echo) {
		int rc = hush_conn_write(c, data, len);
		if (rc < 0) {
			fprintf(stderr, "altsrp-echo: echo: %s (%s)\n", hush_err_name(rc),
				hush_strerror(rc));
			s->failed = 1;
			finish(s);
			return;
		}
		EVP_DigestUpdate(s->sent_md, data, len);
		s->sent_bytes += len;
		if (rc == 1) {
			hush_conn_pause_reading(c); /* the peer is not reading our echo */
		}
	}
}

static void on_writable(struct hush_conn *c, void *arg)
{
	struct session *s = arg;
	if (s->o->echo) {
		hush_conn_resume_reading(c);
	} else {
		pump(s);
	}
}

static void on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct session *s = arg;
	(void)c;
	switch (ev) {
	case HUSH_CONN_EV_OPEN:
		if (s->send_file != NULL) {
			pump(s);
		}
		break;
	case HUSH_CONN_EV_EOF:
		s->eof = 1;
		if (s->o->echo || s->o->send == NULL) {
			if (hush_conn_shutdown(s->conn) < 0) {
				s->failed = 1;
				finish(s);
				return;
			}
		}
		maybe_finish(s);
		break;
	case HUSH_CONN_EV_SHUTDOWN:
		s->shut = 1;
		maybe_finish(s);
		break;
	case HUSH_CONN_EV_ERROR:
		fprintf(stderr, "altsrp-echo: connection failed: %s (%s)\n", hush_err_name(err),
			hush_strerror(err));
		s->failed = 1;
		finish(s);
		break;
	}
}

static struct hush_loop *loop;

static int start_session(int fd, enum hush_side side)
{
	struct session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		close(fd);
		return -1;
	}
	s->o = &opt;
	s->sent_md = EVP_MD_CTX_new();
	s->recv_md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(s->sent_md, EVP_sha256(), NULL);
	EVP_DigestInit_ex(s->recv_md, EVP_sha256(), NULL);
	if (opt.send != NULL && (s->send_file = fopen(opt.send, "rb")) == NULL) {
		fprintf(stderr, "altsrp-echo: %s: %s\n", opt.send, strerror(errno));
		return -1;
	}
	if (opt.out != NULL && (s->out_file = fopen(opt.out, "wb")) == NULL) {
		fprintf(stderr, "altsrp-echo: %s: %s\n", opt.out, strerror(errno));
		return -1;
	}
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	if (opt.frame != 0) {
		cfg.max_send_frame = opt.frame;
	}
	struct hush_conn_callbacks cb = {on_data, on_writable, on_event};
	int rc = hush_conn_new(&s->conn, loop, fd, &cfg, &cb, s);
	if (rc == 0) {
		rc = hush_conn_start_raw(s->conn, opt.rp, opt.key, opt.key_len, side);
	}
	if (rc < 0) {
		fprintf(stderr, "altsrp-echo: %s (%s)\n", hush_err_name(rc), hush_strerror(rc));
		s->failed = 1;
		finish(s);
		return -1;
	}
	return 0;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	(void)arg;
	int fd = accept(lfd, NULL, NULL);
	if (fd < 0) {
		return;
	}
	start_session(fd, opt.side < 0 ? HUSH_SIDE_SERVER : (enum hush_side)opt.side);
	if (served + 1 >= opt.count) {
		/* No more connections wanted; the ones in flight finish. */
	}
}

static struct addrinfo *resolve(const char *addr, int passive)
{
	char host[256], port[32];
	if (split_addr(addr, host, sizeof(host), port, sizeof(port)) < 0) {
		fprintf(stderr, "altsrp-echo: bad address %s\n", addr);
		exit(1);
	}
	struct addrinfo hints = {0}, *res;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	int e = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (e != 0) {
		fprintf(stderr, "altsrp-echo: %s: %s\n", addr, gai_strerror(e));
		exit(1);
	}
	return res;
}

static int do_listen(void)
{
	struct addrinfo *ai = resolve(opt.listen, 1);
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		fprintf(stderr, "altsrp-echo: listen %s: %s\n", opt.listen, strerror(errno));
		exit(1);
	}
	freeaddrinfo(ai);
	if (opt.ready != NULL) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char host[128], port[16], tmp[4096];
		getsockname(fd, (struct sockaddr *)&ss, &sl);
		getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			    NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(tmp, sizeof(tmp), "%s.tmp", opt.ready);
		FILE *f = fopen(tmp, "w");
		if (f == NULL) {
			fprintf(stderr, "altsrp-echo: %s: %s\n", tmp, strerror(errno));
			exit(1);
		}
		fprintf(f, ss.ss_family == AF_INET6 ? "[%s]:%s\n" : "%s:%s\n", host, port);
		fclose(f);
		rename(tmp, opt.ready);
	}
	evutil_make_socket_nonblocking(fd);
	listen_ev = event_new(base, fd, EV_READ | EV_PERSIST, on_accept, NULL);
	event_add(listen_ev, NULL);
	return fd;
}

static int do_connect(void)
{
	struct addrinfo *ai = resolve(opt.connect, 0);
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		fprintf(stderr, "altsrp-echo: connect %s: %s\n", opt.connect, strerror(errno));
		exit(1);
	}
	freeaddrinfo(ai);
	return start_session(fd, opt.side < 0 ? HUSH_SIDE_CLIENT : (enum hush_side)opt.side);
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
			opt.frame = (size_t)atol(v);
		} else {
			usage();
		}
#undef ARG
	}
	if ((opt.listen == NULL) == (opt.connect == NULL) || rp == NULL || key == NULL ||
	    opt.count < 1) {
		usage();
	}
	if (hush_record_protocol_from_name(rp, &opt.rp) < 0) {
		fprintf(stderr, "altsrp-echo: unknown record protocol %s\n", rp);
		return 2;
	}
	if (unhex(key, opt.key, sizeof(opt.key), &opt.key_len) < 0) {
		fprintf(stderr, "altsrp-echo: --key must be hex\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	base = event_base_new();
	struct hush_pool *pool;
	if (base == NULL || hush_pool_new(&pool, NULL) < 0 || hush_loop_new(&loop, base, pool) < 0) {
		fprintf(stderr, "altsrp-echo: out of memory\n");
		return 1;
	}
	int lfd = -1;
	if (opt.listen != NULL) {
		lfd = do_listen();
	} else if (do_connect() < 0) {
		return 1;
	}
	event_base_dispatch(base);
	if (listen_ev != NULL) {
		event_free(listen_ev);
		close(lfd);
	}
	hush_loop_free(loop);
	hush_pool_free(pool);
	event_base_free(base);
	return exit_code;
}
