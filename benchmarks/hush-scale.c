/*
 * hush-scale: very many idle secure connections on one machine, with a server scaled
 * out over processes that share one port (SO_REUSEPORT, hush_listener_bind()).
 *
 *   hush-scale [--conns N] [--variant hush|openssl-tls-release] [--workers W]
 *              [--clients C] [--window K] [--hold S] [--json] [--quiet]
 *
 *   --conns N      connections to open and hold (default 10000)
 *   --variant V    hush (default): hush_listener and hush_conn, a full Noise XX
 *                  handshake on every connection (both ends prove their static keys);
 *                  openssl-tls-release: OpenSSL TLS 1.3 through libevent's
 *                  bufferevent_openssl with SSL_MODE_RELEASE_BUFFERS, the configuration
 *                  of hush-bench's TLS variants (TLS_AES_128_GCM_SHA256, X25519, an
 *                  ECDSA P-256 certificate verified by the client, no tickets)
 *   --workers W    server processes (default: as many as the open-files limit needs)
 *   --clients C    client processes (default: likewise)
 *   --window K     handshakes each client process keeps in flight (default: 768 over
 *                  all client processes, between 4 and 64 each: the handshakes are
 *                  CPU-bound, so more in flight only adds to each one's wait, and a
 *                  wait past the listener's 3 s first-message deadline fails it)
 *   --hold S       seconds every connection is held idle before the heap is read
 *                  (default 2)
 *   --json         one JSON object on stdout (the text report goes to stderr)
 *   --quiet        no progress lines
 *
 * The server is W worker processes, each with its own event base, pool, hush loop and
 * listener bound with SO_REUSEPORT to one address on 127.0.0.1; the kernel spreads the
 * connections among them by a hash of the addresses and ports. W is sized from the
 * open-files limit (raised to the hard limit first), with headroom for that hash's
 * unevenness. The client is C processes, each connecting from loopback source addresses
 * of its own, 127.0.0.2, 127.0.0.3, ... (bound before connect, with
 * IP_BIND_ADDRESS_NO_PORT so the port is chosen per destination), at most
 * PER_SOURCE_ADDR connections from each: no source address runs short of ephemeral
 * ports, and none fills so much of the range that the kernel's search for a free port
 * slows down (it tries even ports first: a source address holding half the range,
 * 14,000 of 28,232 here, made each connect() scan, and opening slowed from 4,000 to 200
 * a second). Each process talks to this one, the parent, over a socket
 * pair: a command byte out, a fixed report back; the parent sums.
 *
 * The run: the clients first open 64 connections per server worker (warm-up: the one-
 * time costs of OpenSSL's caches, libevent's first map entries and hush's loop are paid
 * then); each server process takes its heap baseline; then the clients open the rest,
 * each a full handshake, with a progress line every second (established, rate, ETA,
 * heap). Every connection is then held idle for --hold seconds, and each server process
 * reports its heap (hush's, OpenSSL's and libevent's allocations, counted exactly by
 * their allocator hooks: benchlib), its RSS, its pool buffers out, and the connections
 * it holds. Then the clients send one record on every connection (a window at a time)
 * and check every echo byte for byte; the servers report again, idle once more.
 *
 * Heap per connection is the sum over the server's processes of (heap - baseline) over
 * (connections - connections at the baseline), as hush-bench's IdleConnMemory counts
 * it; each pool is trimmed first (its retained idle buffers are bounded and shared, not
 * a per-connection cost). Kernel memory per connection is the growth of Slab plus the
 * TCP socket-buffer pages (/proc/net/sockstat) from before the first connection to the
 * idle hold, over N: it covers both sockets of every connection (client and server end,
 * both on this machine), and whatever else the machine's other processes did meanwhile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <hush.h>

#include "bench-tls.h"
#include "benchlib.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Descriptors each process keeps aside from its connections: the control socket,
 * libevent's epoll and notification descriptors, stdio, the listener. */
#define FD_RESERVE 100
/* Share of a server process's descriptors it is planned to fill: SO_REUSEPORT's hash
 * spreads connections evenly only on average. */
#define SERVER_FILL 0.85
/* Share of a client process's descriptors it fills (it chooses its own count). */
#define CLIENT_FILL 0.95
/* Warm-up connections per server process, opened before the baseline. */
#define WARM_PER_WORKER 64
/* Size of the record each connection sends and gets back. */
#define PING_SIZE 32
/* Echoes each client process waits for at once while verifying. */
#define VERIFY_WINDOW 256
/* Connections from one source address, at most (see above). */
#define PER_SOURCE_ADDR 8000
/* Connections a client process may see fail and open again, in all: a tenth of its
 * own, at least 100. */
#define MAX_RETRIES(cap) ((cap) / 10 > 100 ? (cap) / 10 : 100)
/* Handshakes in flight over all client processes, by default. */
#define WINDOW_TOTAL 768
/* The run gives up when nothing moved for this long. */
#define STALL_SECONDS 60

enum variant { V_HUSH, V_TLS };

static struct {
	long conns;
	enum variant variant;
	int workers;
	int clients;
	int window;
	double hold;
	int json;
	int quiet;
} opt = {10000, V_HUSH, 0, 0, 0, 2.0, 0, 0};

static const char *variant_name(void)
{
	return opt.variant == V_HUSH ? "hush" : "openssl-tls-release";
}

/* ------------------------------------------------------------------------------------ */
/* Parent and children: commands and reports                                            */
/* ------------------------------------------------------------------------------------ */

/* A command from the parent. */
struct cmd {
	char op;     /* see the handlers: 'r' 'b' 'm' 'o' 'v' 'q' */
	int64_t arg; /* 'o': connections to have opened in all */
};

/* What a child says about itself. */
struct report {
	int64_t established; /* connections open now (handshake done) */
	int64_t opened;	     /* client: connections started, retries included */
	int64_t failed;	     /* connections that failed */
	int64_t verified;    /* client: echoes that came back intact */
	int64_t heap;	     /* live heap: hush + OpenSSL + libevent */
	int64_t heap_base;   /* at the baseline ('b') */
	int64_t conns_base;  /* established at the baseline */
	int64_t rss;	     /* resident bytes */
	int64_t rss_base;
	int64_t pool_out;      /* pool buffers handed out now */
	int64_t pool_retained; /* idle bytes the pool kept, given back by 'm' */
	int64_t errs[4];       /* failures by kind: see err_kind() */
	int32_t last_err;      /* the last failure's HUSH_E* code or ERRNO_CODE() */
	int32_t pad;
	int64_t first_timeouts; /* server: the listener's first-message deadline passed */
};

/* A system error number among the HUSH_E* codes of the report, apart from them. */
#define ERRNO_CODE(e) (-10000 - (e))

static const char *err_text(int err)
{
	return err <= -10000 ? strerror(-10000 - err) : hush_err_name(err);
}

/* Failures by kind, for the report: timed out, evicted at the listener's cap, the peer
 * went away, anything else. */
static const char *const err_kinds[4] = {"timed out", "evicted", "peer gone", "other"};

static int err_kind(int err)
{
	switch (err) {
	case HUSH_ETIMEDOUT:
		return 0;
	case HUSH_EBUSY:
		return 1;
	case HUSH_ECONNRESET:
	case HUSH_ECLOSED:
	case HUSH_ETRUNCATED:
	case HUSH_EPIPE:
		return 2;
	default:
		return 3;
	}
}

/* Counts one failed connection in r. */
static void count_failure(struct report *r, int err)
{
	r->failed++;
	r->errs[err_kind(err)]++;
	r->last_err = err;
}

struct child {
	pid_t pid;
	int ctl;
	struct report r;
};

static double now_s(void)
{
	return (double)bench_now_ns() / 1e9;
}

static int64_t rss_bytes(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f != NULL) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2) {
			resident = 0;
		}
		fclose(f);
	}
	return (int64_t)resident * sysconf(_SC_PAGESIZE);
}

/* ------------------------------------------------------------------------------------ */
/* What every child process shares: its base, pool and loop, its control socket         */
/* ------------------------------------------------------------------------------------ */

static struct {
	struct event_base *base;
	struct hush_pool *pool;
	struct hush_loop *loop;
	int ctl;
	struct report r;
	int is_client;
} me;

static void (*on_command)(const struct cmd *c); /* the role's own commands */
static struct hush_listener *listener;	      /* server, hush variant */

static void fill_report(int trim)
{
	struct bench_alloc_counts a;
	struct hush_pool_stats st;
	hush_pool_stats(me.pool, &st);
	me.r.pool_out = (int64_t)st.total.in_use;
	if (trim) {
		me.r.pool_retained = (int64_t)st.total.bytes_retained;
		hush_pool_trim(me.pool);
	}
	if (listener != NULL) {
		struct hush_listener_stats ls;
		hush_listener_get_stats(listener, &ls);
		me.r.first_timeouts = (int64_t)ls.first_timeouts;
	}
	bench_alloc_read(&a);
	me.r.heap = a.live_bytes;
	me.r.rss = rss_bytes();
}

static void on_ctl(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	struct cmd c;
	if (bench_read_full(fd, &c, sizeof(c)) < 0 || c.op == 'q') {
		_exit(0);
	}
	if (c.op == 'b') {
		fill_report(1);
		me.r.heap_base = me.r.heap;
		me.r.rss_base = me.r.rss;
		me.r.conns_base = me.r.established;
	} else {
		fill_report(c.op == 'm');
	}
	if (on_command != NULL) {
		on_command(&c);
	}
	if (bench_write_full(fd, &me.r, sizeof(me.r)) < 0) {
		_exit(1);
	}
}

/* The child's base, pool and loop, and its control socket on the base. */
static void child_init(int ctl)
{
	me.ctl = ctl;
	me.base = event_base_new();
	struct event *ev = me.base != NULL ? event_new(me.base, ctl, EV_READ | EV_PERSIST, on_ctl, NULL)
					   : NULL;
	if (ev == NULL || event_add(ev, NULL) < 0 || hush_pool_new(&me.pool, NULL) < 0 ||
	    hush_loop_new(&me.loop, me.base, me.pool) < 0) {
		fprintf(stderr, "hush-scale: a child could not set up its loop\n");
		_exit(1);
	}
}

/* Tells the parent the child is ready (one byte), then runs until told to quit. */
static void child_run(void)
{
	char ok = 'k';
	if (bench_write_full(me.ctl, &ok, 1) < 0) {
		_exit(1);
	}
	event_base_dispatch(me.base);
	_exit(0);
}

/* ------------------------------------------------------------------------------------ */
/* Keys and TLS contexts, made once in the parent before any fork                       */
/* ------------------------------------------------------------------------------------ */

static struct hush_keypair *server_kp, *client_kp;
static uint8_t server_pub[HUSH_KEY_SIZE], client_pub[HUSH_KEY_SIZE];
static struct hush_handshake_config server_hs, client_hs;
static SSL_CTX *tls_server_ctx, *tls_client_ctx;

static int hush_keys_init(void)
{
	if (hush_keypair_generate(&server_kp) < 0 || hush_keypair_generate(&client_kp) < 0) {
		return -1;
	}
	hush_keypair_public(server_kp, server_pub);
	hush_keypair_public(client_kp, client_pub);
	hush_handshake_config_init(&server_hs);
	hush_handshake_config_init(&client_hs);
	server_hs.keypair = server_kp;
	server_hs.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])client_pub;
	server_hs.n_allowed_peers = 1;
	client_hs.keypair = client_kp;
	client_hs.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])server_pub;
	client_hs.n_allowed_peers = 1;
	return 0;
}

/* The benchmarks' TLS 1.3 contexts (bench-tls.c), with OpenSSL's record buffers
 * released whenever they are empty. */
static int tls_init(void)
{
	return bench_tls_init(&tls_server_ctx, &tls_client_ctx, SSL_MODE_RELEASE_BUFFERS);
}

/* ------------------------------------------------------------------------------------ */
/* The server: one worker process                                                        */
/* ------------------------------------------------------------------------------------ */

/* A hush connection's arg once it is open, so that its end knows to count it down. */
static char srv_open_mark;

static void srv_hush_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	(void)arg;
	int rc = hush_conn_write(c, data, len);
	if (rc < 0) {
		count_failure(&me.r, rc);
	}
}

static void srv_hush_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	if (ev == HUSH_CONN_EV_OPEN) {
		me.r.established++;
		hush_conn_set_arg(c, &srv_open_mark);
		return;
	}
	if (ev == HUSH_CONN_EV_ERROR || ev == HUSH_CONN_EV_EOF) {
		if (arg == &srv_open_mark) {
			me.r.established--;
		}
		if (ev == HUSH_CONN_EV_ERROR) {
			count_failure(&me.r, err);
		}
		hush_conn_free(c);
	}
}

static const struct hush_conn_callbacks srv_hush_cb = {srv_hush_data, NULL, srv_hush_event};

static void srv_hush_accept(struct hush_listener *l, struct hush_conn *c, const struct sockaddr *sa,
			    socklen_t len, void *arg)
{
	(void)l;
	(void)c;
	(void)sa;
	(void)len;
	(void)arg;
}

static void srv_tls_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (bufferevent_write_buffer(bev, bufferevent_get_input(bev)) < 0) {
		count_failure(&me.r, HUSH_ENOMEM);
	}
}

static void srv_tls_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & BEV_EVENT_CONNECTED) {
		me.r.established++;
		bufferevent_setcb(bev, srv_tls_read, NULL, srv_tls_event, &srv_open_mark);
		return;
	}
	if (arg == &srv_open_mark) {
		me.r.established--;
	}
	if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		count_failure(&me.r, (what & BEV_EVENT_TIMEOUT) ? HUSH_ETIMEDOUT : HUSH_EIO);
	}
	bufferevent_free(bev);
}

static void srv_tls_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			   int len, void *arg)
{
	(void)lev;
	(void)sa;
	(void)len;
	(void)arg;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	SSL *ssl = SSL_new(tls_server_ctx);
	struct bufferevent *bev =
	    ssl == NULL ? NULL
			: bufferevent_openssl_socket_new(me.base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
							 BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		count_failure(&me.r, HUSH_ENOMEM);
		close(fd); /* libevent 2.1 leaves ssl's fate unsaid on failure: leaked */
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	bufferevent_setcb(bev, srv_tls_read, NULL, srv_tls_event, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void server_main(int ctl, const struct sockaddr_in *addr)
{
	child_init(ctl);
	if (opt.variant == V_HUSH) {
		struct hush_listener_config lc;
		hush_listener_config_init(&lc);
		lc.handshake = &server_hs;
		lc.callbacks = &srv_hush_cb;
		lc.on_accept = srv_hush_accept;
		lc.reuseport = 1;
		lc.backlog = 4096;
		int rc = hush_listener_bind(&listener, me.loop, (const struct sockaddr *)addr, sizeof(*addr),
					    &lc);
		if (rc < 0) {
			fprintf(stderr, "hush-scale: server: hush_listener_bind: %s (%s)\n",
				hush_strerror(rc), strerror(errno));
			_exit(1);
		}
	} else {
		struct evconnlistener *lev = evconnlistener_new_bind(
		    me.base, srv_tls_accept, NULL,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
			LEV_OPT_REUSEABLE_PORT,
		    4096, (const struct sockaddr *)addr, sizeof(*addr));
		if (lev == NULL) {
			fprintf(stderr, "hush-scale: server: listen: %s\n", strerror(errno));
			_exit(1);
		}
	}
	child_run();
}

/* ------------------------------------------------------------------------------------ */
/* The client: one process, its own source address                                      */
/* ------------------------------------------------------------------------------------ */

enum { C_IDLE, C_CONNECTING, C_OPEN, C_SENT, C_VERIFIED, C_FAILED };

/* One connection of the client (the benchmark's own bookkeeping: plain malloc). */
struct cconn {
	void *h; /* struct hush_conn or struct bufferevent */
	uint32_t slot;
	uint8_t state;
	uint8_t got; /* bytes of the echo received */
	int fd;
};

static struct {
	uint32_t index;
	struct sockaddr_in src[8]; /* its source addresses, slot by slot in turn */
	uint32_t nsrc;
	struct sockaddr_in dst;
	struct cconn *v;
	int64_t cap;	   /* slots */
	int64_t target;	   /* slots to have opened ('o') */
	int64_t next;	   /* next slot never opened */
	int64_t inflight;  /* connecting or in the handshake */
	uint32_t *retry;   /* slots to open again */
	int64_t nretry;
	int64_t retries;
	int verifying;
	int64_t next_verify; /* next slot to send on */
	int64_t sent;	     /* echoes awaited */
} cl;

/* The record of a connection: its slot and client index, then a fixed pattern. */
static void ping_of(const struct cconn *x, uint8_t out[PING_SIZE])
{
	for (int i = 0; i < PING_SIZE; i++) {
		out[i] = (uint8_t)(0xa5 ^ i);
	}
	memcpy(out, &x->slot, sizeof(x->slot));
	memcpy(out + 4, &cl.index, sizeof(cl.index));
}

static void open_more(void);
static void verify_more(void);

static void conn_failed(struct cconn *x, int err)
{
	if (x->state == C_CONNECTING) {
		cl.inflight--;
	} else if (x->state >= C_OPEN && x->state != C_FAILED) {
		me.r.established--;
	}
	if (x->state == C_SENT) {
		cl.sent--;
	}
	count_failure(&me.r, err);
	x->state = C_FAILED;
	if (opt.variant == V_HUSH) {
		hush_conn_free(x->h);
	} else if (x->h != NULL) {
		bufferevent_free(x->h);
	}
	x->h = NULL;
	/* Opened again, up to a bound, unless verification already began. */
	if (!cl.verifying && cl.retries < MAX_RETRIES(cl.cap)) {
		cl.retries++;
		cl.retry[cl.nretry++] = x->slot;
	}
	open_more();
}

static void conn_opened(struct cconn *x)
{
	cl.inflight--;
	x->state = C_OPEN;
	me.r.established++;
	open_more();
}

static void conn_data(struct cconn *x, const uint8_t *data, size_t len)
{
	uint8_t want[PING_SIZE];
	ping_of(x, want);
	if (x->state != C_SENT || x->got + len > PING_SIZE ||
	    memcmp(data, want + x->got, len) != 0) {
		fprintf(stderr, "hush-scale: client %u: connection %u: a wrong echo\n", cl.index,
			x->slot);
		conn_failed(x, HUSH_EAUTH);
		return;
	}
	x->got = (uint8_t)(x->got + len);
	if (x->got == PING_SIZE) {
		x->state = C_VERIFIED;
		me.r.verified++;
		cl.sent--;
		verify_more();
	}
}

static void cli_hush_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	(void)c;
	conn_data(arg, data, len);
}

static void cli_hush_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	(void)c;
	if (ev == HUSH_CONN_EV_OPEN) {
		conn_opened(arg);
	} else if (ev == HUSH_CONN_EV_ERROR || ev == HUSH_CONN_EV_EOF) {
		conn_failed(arg, ev == HUSH_CONN_EV_EOF ? HUSH_ECLOSED : err);
	}
}

static const struct hush_conn_callbacks cli_hush_cb = {cli_hush_data, NULL, cli_hush_event};

static void cli_tls_read(struct bufferevent *bev, void *arg)
{
	uint8_t buf[PING_SIZE];
	size_t n;
	while ((n = bufferevent_read(bev, buf, sizeof(buf))) > 0) {
		struct cconn *x = arg;
		conn_data(x, buf, n);
		if (x->state == C_FAILED) {
			return;
		}
	}
}

static void cli_tls_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		conn_opened(arg);
	} else {
		conn_failed(arg, (what & BEV_EVENT_TIMEOUT)	? HUSH_ETIMEDOUT
				 : (what & BEV_EVENT_EOF) ? HUSH_ECLOSED
							  : HUSH_EIO);
	}
}

/* The socket's connect finished (or failed): the secure connection starts on it. */
static void on_connected(evutil_socket_t fd, short what, void *arg)
{
	struct cconn *x = arg;
	int err = 0;
	socklen_t el = sizeof(err);
	if ((what & EV_TIMEOUT) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
		close(fd);
		conn_failed(x, (what & EV_TIMEOUT) ? HUSH_ETIMEDOUT : ERRNO_CODE(err));
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (opt.variant == V_HUSH) {
		struct hush_conn *c;
		int rc = hush_conn_new(&c, me.loop, fd, NULL, &cli_hush_cb, x);
		if (rc < 0) {
			conn_failed(x, rc);
			return;
		}
		x->h = c;
		rc = hush_conn_start_handshake(c, &client_hs, HUSH_SIDE_CLIENT);
		if (rc < 0) {
			conn_failed(x, rc);
		}
		return;
	}
	SSL *ssl = SSL_new(tls_client_ctx);
	struct bufferevent *bev =
	    ssl == NULL ? NULL
			: bufferevent_openssl_socket_new(me.base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
							 BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		conn_failed(x, HUSH_ENOMEM);
		return;
	}
	x->h = bev;
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	bufferevent_setcb(bev, cli_tls_read, NULL, cli_tls_event, x);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* Starts a non-blocking connect of slot's connection from the client's address. */
static void open_slot(uint32_t slot)
{
	struct cconn *x = &cl.v[slot];
	memset(x, 0, sizeof(*x));
	x->slot = slot;
	x->state = C_CONNECTING;
	x->fd = -1;
	cl.inflight++;
	me.r.opened++;
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&cl.src[slot % cl.nsrc], sizeof(cl.src[0])) < 0 ||
	    (connect(fd, (struct sockaddr *)&cl.dst, sizeof(cl.dst)) < 0 && errno != EINPROGRESS)) {
		int e = errno;
		fprintf(stderr, "hush-scale: client %u: connect: %s\n", cl.index, strerror(e));
		if (fd >= 0) {
			close(fd);
		}
		conn_failed(x, ERRNO_CODE(e));
		return;
	}
	static const struct timeval limit = {10, 0};
	if (event_base_once(me.base, fd, EV_WRITE, on_connected, x, &limit) < 0) {
		close(fd);
		conn_failed(x, HUSH_ENOMEM);
	}
}

/* Keeps opt.window connections in flight until the target is reached. */
static void open_more(void)
{
	static int depth;
	if (depth > 0) {
		return; /* a failure inside open_slot: the outer call goes on */
	}
	depth++;
	while (cl.inflight < opt.window) {
		if (cl.nretry > 0) {
			open_slot(cl.retry[--cl.nretry]);
		} else if (cl.next < cl.target) {
			open_slot((uint32_t)cl.next++);
		} else {
			break;
		}
	}
	depth--;
}

static void send_ping(struct cconn *x)
{
	uint8_t p[PING_SIZE];
	ping_of(x, p);
	x->state = C_SENT;
	x->got = 0;
	cl.sent++;
	int rc = opt.variant == V_HUSH ? hush_conn_write(x->h, p, sizeof(p))
				       : bufferevent_write(x->h, p, sizeof(p));
	if (rc < 0) {
		conn_failed(x, opt.variant == V_HUSH ? rc : HUSH_ENOMEM);
	}
}

/* Keeps VERIFY_WINDOW echoes awaited until every open connection sent its record. */
static void verify_more(void)
{
	static int depth;
	if (!cl.verifying || depth > 0) {
		return;
	}
	depth++;
	while (cl.sent < VERIFY_WINDOW && cl.next_verify < cl.next) {
		struct cconn *x = &cl.v[cl.next_verify++];
		if (x->state == C_OPEN) {
			send_ping(x);
		}
	}
	depth--;
}

static void client_command(const struct cmd *c)
{
	if (c->op == 'o') {
		cl.target = c->arg < cl.cap ? c->arg : cl.cap;
		open_more();
	} else if (c->op == 'v') {
		cl.verifying = 1;
		verify_more();
	}
}

static void client_main(int ctl, uint32_t index, int64_t cap, const struct sockaddr_in *dst)
{
	child_init(ctl);
	me.is_client = 1;
	on_command = client_command;
	cl.index = index;
	cl.cap = cap;
	cl.dst = *dst;
	cl.nsrc = (uint32_t)((cap + PER_SOURCE_ADDR - 1) / PER_SOURCE_ADDR);
	cl.nsrc = cl.nsrc < 1 ? 1 : cl.nsrc > 8 ? 8 : cl.nsrc;
	for (uint32_t k = 0; k < cl.nsrc; k++) {
		/* 127.0.0.2, 127.0.0.3, ...: 250 to a /24, then the next /24. */
		uint32_t a = index * cl.nsrc + k;
		cl.src[k].sin_family = AF_INET;
		cl.src[k].sin_addr.s_addr = htonl(0x7f000000u | ((a / 250) << 8) | (2 + a % 250));
	}
	cl.v = calloc((size_t)cap, sizeof(*cl.v));
	cl.retry = calloc((size_t)MAX_RETRIES(cap), sizeof(*cl.retry));
	if (cl.v == NULL || cl.retry == NULL) {
		_exit(1);
	}
	child_run();
}

/* ------------------------------------------------------------------------------------ */
/* The parent                                                                           */
/* ------------------------------------------------------------------------------------ */

static struct child *servers, *clients;
static int nservers, nclients;

/* Forks a child running fn; returns 0 or -1. */
static int spawn(struct child *ch, void (*fn)(int ctl, void *arg), void *arg)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		return -1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0) {
		close(sv[0]);
		/* The siblings' control sockets are the parent's business. */
		for (int i = 0; i < nservers; i++) {
			if (servers[i].ctl > 0) {
				close(servers[i].ctl);
			}
		}
		for (int i = 0; i < nclients; i++) {
			if (clients[i].ctl > 0) {
				close(clients[i].ctl);
			}
		}
		fn(sv[1], arg);
		_exit(0);
	}
	close(sv[1]);
	ch->pid = pid;
	ch->ctl = sv[0];
	char ok;
	if (bench_read_full(ch->ctl, &ok, 1) < 0 || ok != 'k') {
		return -1;
	}
	return 0;
}

struct spawn_args {
	const struct sockaddr_in *addr;
	uint32_t index;
	int64_t cap;
};

static void run_server(int ctl, void *arg)
{
	const struct spawn_args *a = arg;
	server_main(ctl, a->addr);
}

static void run_client(int ctl, void *arg)
{
	const struct spawn_args *a = arg;
	client_main(ctl, a->index, a->cap, a->addr);
}

/*
 * Sends op to every child of the set, with args[i] (or 0 when args is NULL), then reads
 * every report: all the commands go out before the first answer is awaited, so the
 * children, busy with their connections, answer side by side. Returns 0 or -1.
 */
static int ask_each(struct child *set, int n, char op, const int64_t *args)
{
	for (int i = 0; i < n; i++) {
		struct cmd c = {op, args != NULL ? args[i] : 0};
		if (bench_write_full(set[i].ctl, &c, sizeof(c)) < 0) {
			return -1;
		}
	}
	for (int i = 0; i < n; i++) {
		if (bench_read_full(set[i].ctl, &set[i].r, sizeof(set[i].r)) < 0) {
			return -1;
		}
	}
	return 0;
}

static int ask(struct child *set, int n, char op)
{
	return ask_each(set, n, op, NULL);
}

static void sum(const struct child *set, int n, struct report *out)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < n; i++) {
		const struct report *r = &set[i].r;
		out->established += r->established;
		out->opened += r->opened;
		out->failed += r->failed;
		out->verified += r->verified;
		out->heap += r->heap;
		out->heap_base += r->heap_base;
		out->conns_base += r->conns_base;
		out->rss += r->rss;
		out->rss_base += r->rss_base;
		out->pool_out += r->pool_out;
		out->pool_retained += r->pool_retained;
		for (int k = 0; k < 4; k++) {
			out->errs[k] += r->errs[k];
		}
		out->first_timeouts += r->first_timeouts;
		if (r->last_err != 0) {
			out->last_err = r->last_err;
		}
	}
}

/* Growth per connection over the baseline, summed over a set's processes. */
static double heap_per_conn(const struct report *s)
{
	int64_t n = s->established - s->conns_base;
	return n > 0 ? (double)(s->heap - s->heap_base) / (double)n : 0;
}

static double rss_per_conn(const struct report *s)
{
	int64_t n = s->established - s->conns_base;
	return n > 0 ? (double)(s->rss - s->rss_base) / (double)n : 0;
}

/* The kernel's memory, from /proc/meminfo and /proc/net/sockstat, in bytes. */
struct kmem {
	int64_t slab, sreclaimable, sunreclaim, page_tables, kernel_stack, tcp_mem, tcp_inuse;
	int64_t mem_available;
	int64_t sock_caches; /* objects in use in sock_caches[] (/proc/slabinfo; root only) */
	int64_t cache[6];    /* each of them */
};

/*
 * The slab caches an open TCP socket on a descriptor watched by epoll takes objects
 * from: the socket itself, its inode, its file and dentry, and epoll's entry and wait
 * queue link. Their growth is the socket's own memory, without the noise the machine's
 * other processes add to Slab as a whole.
 */
static const char *const sock_caches[] = {"TCP",   "sock_inode_cache", "filp",
					  "dentry", "eventpoll_epi",	"eventpoll_pwq"};

static void kmem_read(struct kmem *k)
{
	memset(k, 0, sizeof(*k));
	char line[256];
	FILE *f = fopen("/proc/meminfo", "r");
	if (f != NULL) {
		while (fgets(line, sizeof(line), f) != NULL) {
			long long kb;
			char name[64];
			if (sscanf(line, "%63[^:]: %lld", name, &kb) != 2) {
				continue;
			}
			int64_t b = (int64_t)kb * 1024;
			if (strcmp(name, "Slab") == 0) {
				k->slab = b;
			} else if (strcmp(name, "SReclaimable") == 0) {
				k->sreclaimable = b;
			} else if (strcmp(name, "SUnreclaim") == 0) {
				k->sunreclaim = b;
			} else if (strcmp(name, "PageTables") == 0) {
				k->page_tables = b;
			} else if (strcmp(name, "KernelStack") == 0) {
				k->kernel_stack = b;
			} else if (strcmp(name, "MemAvailable") == 0) {
				k->mem_available = b;
			}
		}
		fclose(f);
	}
	f = fopen("/proc/slabinfo", "r");
	if (f != NULL) {
		while (fgets(line, sizeof(line), f) != NULL) {
			char name[64];
			long long active, num, size;
			if (sscanf(line, "%63s %lld %lld %lld", name, &active, &num, &size) != 4) {
				continue;
			}
			for (size_t i = 0; i < sizeof(sock_caches) / sizeof(sock_caches[0]); i++) {
				if (strcmp(name, sock_caches[i]) == 0) {
					k->sock_caches += (int64_t)active * size;
					k->cache[i] += (int64_t)active * size;
				}
			}
		}
		fclose(f);
	}
	f = fopen("/proc/net/sockstat", "r");
	if (f != NULL) {
		while (fgets(line, sizeof(line), f) != NULL) {
			long long inuse, orphan, tw, alloc, mem;
			if (sscanf(line, "TCP: inuse %lld orphan %lld tw %lld alloc %lld mem %lld", &inuse,
				   &orphan, &tw, &alloc, &mem) == 5) {
				k->tcp_inuse = inuse;
				k->tcp_mem = (int64_t)mem * sysconf(_SC_PAGESIZE);
			}
		}
		fclose(f);
	}
}

static void loadavg(char *out, size_t cap)
{
	snprintf(out, cap, "?");
	FILE *f = fopen("/proc/loadavg", "r");
	if (f != NULL) {
		double a, b, c;
		if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3) {
			snprintf(out, cap, "%.2f %.2f %.2f", a, b, c);
		}
		fclose(f);
	}
}

static void progress(const char *phase, double t0, int64_t done, int64_t total, double rate,
		     const struct report *srv)
{
	if (opt.quiet) {
		return;
	}
	char la[64];
	loadavg(la, sizeof(la));
	double eta = rate > 0 ? (double)(total - done) / rate : 0;
	fprintf(stderr,
		"[%6.1fs] %s %" PRId64 "/%" PRId64 "  %.0f/s  ETA %dm%02ds  server heap %.1f MB "
		"(%.0f B/conn)  failed %" PRId64 "  load %s\n",
		now_s() - t0, phase, done, total, rate, (int)eta / 60, (int)eta % 60,
		(double)srv->heap / 1e6, heap_per_conn(srv), srv->failed, la);
}

static void usage(void)
{
	fprintf(stderr, "usage: hush-scale [--conns N] [--variant hush|openssl-tls-release] "
			"[--workers W]\n"
			"                  [--clients C] [--window K] [--hold S] [--json] "
			"[--quiet]\n");
	exit(2);
}

static void parse(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--json") == 0) {
			opt.json = 1;
		} else if (strcmp(a, "--quiet") == 0) {
			opt.quiet = 1;
		} else if (v == NULL) {
			usage();
		} else if (strcmp(a, "--conns") == 0) {
			opt.conns = atol(v), i++;
		} else if (strcmp(a, "--workers") == 0) {
			opt.workers = atoi(v), i++;
		} else if (strcmp(a, "--clients") == 0) {
			opt.clients = atoi(v), i++;
		} else if (strcmp(a, "--window") == 0) {
			opt.window = atoi(v), i++;
		} else if (strcmp(a, "--hold") == 0) {
			opt.hold = atof(v), i++;
		} else if (strcmp(a, "--variant") == 0) {
			if (strcmp(v, "hush") == 0) {
				opt.variant = V_HUSH;
			} else if (strcmp(v, "openssl-tls-release") == 0) {
				opt.variant = V_TLS;
			} else {
				usage();
			}
			i++;
		} else {
			usage();
		}
	}
	if (opt.conns < 1 || opt.workers < 0 || opt.clients < 0 || opt.window < 0 || opt.hold < 0) {
		usage();
	}
}

/* Waits until cond holds over the sums, asking every interval; prints progress. */
struct waiting {
	const char *phase;
	int64_t total;
	int64_t (*done)(const struct report *srv, const struct report *cli);
};

static int64_t both_established(const struct report *srv, const struct report *cli)
{
	return srv->established < cli->established ? srv->established : cli->established;
}

static int64_t all_verified(const struct report *srv, const struct report *cli)
{
	(void)srv;
	return cli->verified;
}

/* Returns 0 when done, -1 on a dead child or a stall. */
static int wait_for(const struct waiting *w, double t0, struct report *srv, struct report *cli)
{
	double last_move = now_s(), last_print = now_s(), rate_t = now_s();
	int64_t last_done = -1, rate_done = 0;
	double rate = 0;
	for (;;) {
		if (ask(servers, nservers, 'r') < 0 || ask(clients, nclients, 'r') < 0) {
			fprintf(stderr, "hush-scale: a child process died\n");
			return -1;
		}
		sum(servers, nservers, srv);
		sum(clients, nclients, cli);
		int64_t done = w->done(srv, cli);
		double t = now_s();
		if (done != last_done) {
			last_move = t;
			last_done = done;
		}
		if (t - rate_t >= 1.0) {
			rate = (double)(done - rate_done) / (t - rate_t);
			rate_done = done;
			rate_t = t;
		}
		if (done >= w->total) {
			progress(w->phase, t0, done, w->total, rate, srv);
			return 0;
		}
		if (t - last_print >= 1.0) {
			progress(w->phase, t0, done, w->total, rate, srv);
			last_print = t;
		}
		if (t - last_move > STALL_SECONDS) {
			fprintf(stderr, "hush-scale: no progress for %d s: giving up at %" PRId64 "\n",
				STALL_SECONDS, done);
			return -1;
		}
		/* Asked every quarter second; woken in time for the next progress line. */
		double next = last_print + 1.0 - now_s();
		usleep(next > 0 && next < 0.25 ? (useconds_t)(next * 1e6) : 250 * 1000);
	}
}

static void finish(void)
{
	for (int i = 0; i < nclients; i++) {
		struct cmd c = {'q', 0};
		(void)bench_write_full(clients[i].ctl, &c, sizeof(c));
	}
	for (int i = 0; i < nservers; i++) {
		struct cmd c = {'q', 0};
		(void)bench_write_full(servers[i].ctl, &c, sizeof(c));
	}
	while (wait(NULL) > 0 || errno == EINTR) {
	}
}

static void json_kv(const char *k, double v, int last)
{
	if (v == (double)(int64_t)v) {
		printf("  \"%s\": %" PRId64 "%s\n", k, (int64_t)v, last ? "" : ",");
	} else {
		printf("  \"%s\": %.3f%s\n", k, v, last ? "" : ",");
	}
}

int main(int argc, char **argv)
{
	if (bench_alloc_install() < 0) {
		fprintf(stderr, "hush-scale: could not install the allocation counters\n");
		return 1;
	}
	parse(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	long nofile = bench_raise_nofile();
	long per_proc = nofile - FD_RESERVE - 64;
	if (per_proc < 16) {
		fprintf(stderr, "hush-scale: the open-files limit (%ld) is too low\n", nofile);
		return 1;
	}
	long srv_cap = (long)((double)(nofile - FD_RESERVE) * SERVER_FILL);
	long cli_cap = (long)((double)per_proc * CLIENT_FILL);
	nservers = opt.workers > 0 ? opt.workers : (int)((opt.conns + srv_cap - 1) / srv_cap);
	nclients = opt.clients > 0 ? opt.clients : (int)((opt.conns + cli_cap - 1) / cli_cap);
	if (opt.window == 0) {
		opt.window = WINDOW_TOTAL / nclients;
		opt.window = opt.window < 4 ? 4 : opt.window > 64 ? 64 : opt.window;
	}
	int64_t warm = (int64_t)nservers * WARM_PER_WORKER;
	if (warm > opt.conns / 2) {
		warm = opt.conns / 2;
	}
	if ((opt.conns + nclients - 1) / nclients > per_proc ||
	    (opt.conns + nservers - 1) / nservers > nofile - FD_RESERVE) {
		fprintf(stderr, "hush-scale: %ld connections need more processes than %d servers and "
				"%d clients at an open-files limit of %ld\n",
			opt.conns, nservers, nclients, nofile);
		return 1;
	}
	if ((opt.variant == V_HUSH ? hush_keys_init() : tls_init()) < 0) {
		fprintf(stderr, "hush-scale: key setup failed\n");
		return 1;
	}

	/* The port: a placeholder socket with SO_REUSEPORT holds it (bound, never
	 * listening, so it takes no connection) until every worker has bound it too. */
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(addr);
	int one = 1;
	int hold_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (hold_fd < 0 || setsockopt(hold_fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    setsockopt(hold_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(hold_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    getsockname(hold_fd, (struct sockaddr *)&addr, &al) < 0) {
		fprintf(stderr, "hush-scale: port: %s\n", strerror(errno));
		return 1;
	}

	servers = calloc((size_t)nservers, sizeof(*servers));
	clients = calloc((size_t)nclients, sizeof(*clients));
	if (servers == NULL || clients == NULL) {
		return 1;
	}
	double t_setup = now_s();
	for (int i = 0; i < nservers; i++) {
		struct spawn_args a = {&addr, (uint32_t)i, 0};
		if (spawn(&servers[i], run_server, &a) < 0) {
			fprintf(stderr, "hush-scale: server process %d did not start\n", i);
			finish();
			return 1;
		}
	}
	close(hold_fd);
	int64_t per_client = (opt.conns + nclients - 1) / nclients;
	for (int i = 0; i < nclients; i++) {
		struct spawn_args a = {&addr, (uint32_t)i, per_client};
		if (spawn(&clients[i], run_client, &a) < 0) {
			fprintf(stderr, "hush-scale: client process %d did not start\n", i);
			finish();
			return 1;
		}
	}
	if (!opt.quiet) {
		fprintf(stderr,
			"hush-scale: %s, %ld connections to 127.0.0.1:%u; %d server processes (up "
			"to %ld each), %d client processes (from 127.0.0.2 on); open-files limit "
			"%ld; started in %.1f s\n",
			variant_name(), opt.conns, ntohs(addr.sin_port), nservers, srv_cap, nclients,
			nofile, now_s() - t_setup);
	}

	struct kmem k0, k1;
	struct report srv, cli, srv_idle, cli_idle, srv_after;
	kmem_read(&k0);
	int rc = 0;
	double t0 = now_s();
	/* Warm-up, then the baseline of every process. */
	int64_t *share = calloc((size_t)nclients, sizeof(*share));
	if (share == NULL) {
		finish();
		return 1;
	}
	for (int i = 0; i < nclients; i++) {
		share[i] = warm / nclients + (i < warm % nclients);
	}
	struct waiting w_warm = {"warm-up", warm, both_established};
	if (ask_each(clients, nclients, 'o', share) < 0 || wait_for(&w_warm, t0, &srv, &cli) < 0 ||
	    ask(servers, nservers, 'b') < 0 || ask(clients, nclients, 'b') < 0) {
		finish();
		return 1;
	}
	/* Every connection. */
	for (int i = 0; i < nclients; i++) {
		share[i] = opt.conns / nclients + (i < opt.conns % nclients);
	}
	struct waiting w_all = {"established", opt.conns, both_established};
	rc = ask_each(clients, nclients, 'o', share);
	rc = rc < 0 ? rc : wait_for(&w_all, t0, &srv, &cli);
	free(share);
	double establish_s = now_s() - t0;
	/* Idle: every connection open, nothing moving. */
	struct timespec hold = {(time_t)opt.hold, (long)((opt.hold - (double)(time_t)opt.hold) * 1e9)};
	nanosleep(&hold, NULL);
	char load_idle[64];
	loadavg(load_idle, sizeof(load_idle));
	kmem_read(&k1);
	if (ask(servers, nservers, 'm') < 0 || ask(clients, nclients, 'm') < 0) {
		finish();
		return 1;
	}
	sum(servers, nservers, &srv_idle);
	sum(clients, nclients, &cli_idle);
	/* One record each way on every connection, every echo checked. */
	double t_v = now_s();
	int64_t to_verify = cli_idle.established;
	if (ask(clients, nclients, 'v') < 0) {
		finish();
		return 1;
	}
	struct waiting w_ver = {"verified", to_verify, all_verified};
	int vrc = wait_for(&w_ver, t0, &srv, &cli);
	double verify_s = now_s() - t_v;
	nanosleep(&hold, NULL);
	if (ask(servers, nservers, 'm') < 0 || ask(clients, nclients, 'r') < 0) {
		finish();
		return 1;
	}
	sum(servers, nservers, &srv_after);
	sum(clients, nclients, &cli);
	finish();

	double n = (double)opt.conns;
	double kslab = (double)(k1.slab - k0.slab);
	double ktcp = (double)(k1.tcp_mem - k0.tcp_mem);
	double ksock = (double)(k1.sock_caches - k0.sock_caches);
	struct report fails;
	memset(&fails, 0, sizeof(fails));
	fails.failed = srv_after.failed + cli.failed;
	for (int k = 0; k < 4; k++) {
		fails.errs[k] = srv_after.errs[k] + cli.errs[k];
	}
	fails.last_err = cli.last_err != 0 ? cli.last_err : srv_after.last_err;
	double kernel_per_conn = srv_idle.established > 0 ? (kslab + ktcp) / n : 0;
	double hps = establish_s > 0 ? (double)srv_idle.established / establish_s : 0;
	char date[64];
	time_t now = time(NULL);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	if (opt.json) {
		printf("{\n  \"variant\": \"%s\",\n  \"date\": \"%s\",\n  \"load_avg_idle\": \"%s\",\n",
		       variant_name(), date, load_idle);
		json_kv("conns", n, 0);
		json_kv("established", (double)srv_idle.established, 0);
		json_kv("client_established", (double)cli_idle.established, 0);
		json_kv("verified", (double)cli.verified, 0);
		json_kv("failed", (double)fails.failed, 0);
		printf("  \"failed_by_kind\": {\"server\": [%" PRId64 ", %" PRId64 ", %" PRId64
		       ", %" PRId64 "], \"client\": [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
		       "], \"kinds\": [\"%s\", \"%s\", \"%s\", \"%s\"], \"last\": \"%s\"},\n",
		       srv_after.errs[0], srv_after.errs[1], srv_after.errs[2], srv_after.errs[3],
		       cli.errs[0], cli.errs[1], cli.errs[2], cli.errs[3], err_kinds[0], err_kinds[1],
		       err_kinds[2], err_kinds[3], fails.last_err ? err_text(fails.last_err) : "");
		json_kv("retried", (double)(cli.opened - opt.conns), 0);
		json_kv("server_first_message_timeouts", (double)srv_after.first_timeouts, 0);
		json_kv("client_window", opt.window, 0);
		json_kv("server_processes", nservers, 0);
		json_kv("client_processes", nclients, 0);
		json_kv("open_files_limit", (double)nofile, 0);
		json_kv("heap_per_conn_bytes", round(heap_per_conn(&srv_idle)), 0);
		json_kv("heap_per_conn_after_echo_bytes", round(heap_per_conn(&srv_after)), 0);
		json_kv("client_heap_per_conn_bytes", round(heap_per_conn(&cli_idle)), 0);
		json_kv("server_heap_bytes", (double)srv_idle.heap, 0);
		json_kv("rss_per_conn_bytes", round(rss_per_conn(&srv_idle)), 0);
		json_kv("server_rss_bytes", (double)srv_idle.rss, 0);
		json_kv("kernel_per_conn_bytes", round(kernel_per_conn), 0);
		json_kv("kernel_slab_delta_bytes", kslab, 0);
		json_kv("kernel_tcp_mem_delta_bytes", ktcp, 0);
		json_kv("kernel_socket_caches_per_conn_bytes", round(ksock / n), 0);
		printf("  \"kernel_socket_caches_per_conn\": {");
		for (size_t i = 0; i < sizeof(sock_caches) / sizeof(sock_caches[0]); i++) {
			printf("%s\"%s\": %.0f", i ? ", " : "", sock_caches[i],
			       (double)(k1.cache[i] - k0.cache[i]) / n);
		}
		printf("},\n");
		json_kv("kernel_page_tables_delta_bytes", (double)(k1.page_tables - k0.page_tables), 0);
		json_kv("mem_available_delta_bytes", (double)(k1.mem_available - k0.mem_available), 0);
		json_kv("pool_buffers_idle", (double)srv_idle.pool_out, 0);
		json_kv("pool_buffers_after_echo", (double)srv_after.pool_out, 0);
		json_kv("pool_retained_bytes", (double)srv_idle.pool_retained, 0);
		json_kv("establish_seconds", round(establish_s * 100) / 100, 0);
		json_kv("handshakes_per_s", round(hps), 0);
		json_kv("verify_seconds", round(verify_s * 100) / 100, 1);
		printf("}\n");
	}
	{
		FILE *out = opt.json ? stderr : stdout;
		fprintf(out, "hush-scale %s, %s, load average at the idle hold %s\n", variant_name(), date,
		       load_idle);
		fprintf(out, "  connections          %" PRId64 " established of %ld (client side %" PRId64
		       "), %" PRId64 " verified, %" PRId64 " failed, %" PRId64 " opened again\n",
		       srv_idle.established, opt.conns, cli_idle.established, cli.verified,
		       fails.failed, cli.opened - opt.conns);
		if (fails.failed > 0) {
			fprintf(out, "  failures             server: %s %" PRId64 ", %s %" PRId64 ", %s %" PRId64
			       ", %s %" PRId64 "; client: %s %" PRId64 ", %s %" PRId64 ", %s %" PRId64
			       ", %s %" PRId64 "; the last: %s; first-message deadlines %" PRId64 "\n",
			       err_kinds[0], srv_after.errs[0], err_kinds[1], srv_after.errs[1],
			       err_kinds[2], srv_after.errs[2], err_kinds[3], srv_after.errs[3],
			       err_kinds[0], cli.errs[0], err_kinds[1], cli.errs[1], err_kinds[2],
			       cli.errs[2], err_kinds[3], cli.errs[3], err_text(fails.last_err),
			       srv_after.first_timeouts);
		}
		fprintf(out, "  processes            %d server, %d client (open-files limit %ld), %d "
			     "handshakes in flight per client\n",
		       nservers, nclients, nofile, opt.window);
		fprintf(out, "  establish            %.1f s, %.0f handshakes/s\n", establish_s, hps);
		fprintf(out, "  verify               %.1f s\n", verify_s);
		fprintf(out, "  server heap          %.0f B/conn idle, %.0f B/conn after the echo (%.1f MB "
		       "in all)\n",
		       heap_per_conn(&srv_idle), heap_per_conn(&srv_after), (double)srv_idle.heap / 1e6);
		fprintf(out, "  client heap          %.0f B/conn\n", heap_per_conn(&cli_idle));
		fprintf(out, "  server RSS           %.0f B/conn (%.1f MB in all)\n", rss_per_conn(&srv_idle),
		       (double)srv_idle.rss / 1e6);
		fprintf(out, "  server pool buffers  %" PRId64 " out while idle, %" PRId64
		       " after the echo (%.1f MB retained, trimmed)\n",
		       srv_idle.pool_out, srv_after.pool_out, (double)srv_idle.pool_retained / 1e6);
		fprintf(out, "  kernel               %.0f B/conn: Slab %+.1f MB, TCP buffers %+.1f MB "
		       "(both sockets; the socket caches alone %.0f B/conn; PageTables %+.1f MB, "
		       "MemAvailable %+.1f MB, not counted)\n",
		       kernel_per_conn, kslab / 1e6, ktcp / 1e6, ksock / n,
		       (double)(k1.page_tables - k0.page_tables) / 1e6,
		       (double)(k1.mem_available - k0.mem_available) / 1e6);
	}
	return rc == 0 && vrc == 0 && cli.verified == opt.conns ? 0 : 1;
}
