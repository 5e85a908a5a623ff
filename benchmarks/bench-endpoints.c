/*
 * hush-bench's connections: event loops, loopback sockets, and the endpoints every
 * connection benchmark drives, one open function per variant (hush native and pinned,
 * hush as a bufferevent, OpenSSL TLS 1.3 through bufferevent_openssl, a plain
 * bufferevent). See hush-bench.c for what the program measures.
 */
#define _GNU_SOURCE /* accept4 */
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "bench-tls.h"
#include "hush-bench.h"

/* ------------------------------------------------------------------------------------ */
/* Event loops and sockets                                                              */
/* ------------------------------------------------------------------------------------ */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Sets up env; pool is shared (borrowed) when not NULL, else env makes its own. */
int env_init(struct env *env, struct hush_pool *pool)
{
	memset(env, 0, sizeof(*env));
	env->base = event_base_new();
	if (env->base == NULL) {
		return -1;
	}
	env->pool = pool;
	if (pool == NULL) {
		if (hush_pool_new(&env->pool, NULL) < 0) {
			return -1;
		}
		env->own_pool = 1;
	}
	env->tick = evtimer_new(env->base, tick_cb, NULL);
	if (env->tick == NULL || hush_loop_new(&env->loop, env->base, env->pool) < 0) {
		return -1;
	}
	return 0;
}

/* Frees env; every connection on it must have been freed. */
void env_free(struct env *env)
{
	hush_loop_free(env->loop);
	if (env->tick != NULL) {
		event_free(env->tick);
	}
	if (env->base != NULL) {
		event_base_free(env->base);
	}
	if (env->own_pool) {
		hush_pool_free(env->pool);
	}
	memset(env, 0, sizeof(*env));
}

/* Runs one loop iteration, waiting at most block_ms for something to happen. */
void env_pump(struct env *env, int block_ms)
{
	if (block_ms <= 0) {
		event_base_loop(env->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		return;
	}
	struct timeval tv = {block_ms / 1000, (block_ms % 1000) * 1000};
	evtimer_add(env->tick, &tv);
	event_base_loop(env->base, EVLOOP_ONCE);
}

/* TCP_NODELAY (every variant sends small messages at once) and non-blocking. */
int tune_socket(int fd)
{
	int one = 1;
	int fl = fcntl(fd, F_GETFL);
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 || fl < 0 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		return -1;
	}
	return 0;
}

/* A listening socket on 127.0.0.1 with an ephemeral port, written to *addr. */
int listen_loopback(struct sockaddr_in *addr, int backlog)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	socklen_t len = sizeof(*addr);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 ||
	    listen(fd, backlog) < 0 || getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
		if (fd >= 0) {
			close(fd);
		}
		return -1;
	}
	return fd;
}

/* A connected loopback TCP pair: fds[0] the client end, fds[1] the server end. */
int tcp_pair(int fds[2])
{
	struct sockaddr_in addr;
	int l = listen_loopback(&addr, 1);
	if (l < 0) {
		return -1;
	}
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int s = -1;
	if (c >= 0 && connect(c, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
		s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	}
	close(l);
	if (s < 0 || tune_socket(c) < 0 || tune_socket(s) < 0) {
		if (c >= 0) {
			close(c);
		}
		if (s >= 0) {
			close(s);
		}
		return -1;
	}
	fds[0] = c;
	fds[1] = s;
	return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Endpoints: one end of a connection, whatever the variant                             */
/* ------------------------------------------------------------------------------------ */

void ep_init(struct ep *e, const struct ep_cb *cb, void *user)
{
	memset(e, 0, sizeof(*e));
	e->cb = cb;
	e->user = user;
}

static void ep_opened(struct ep *e)
{
	e->open = 1;
	if (e->cb->on_open != NULL) {
		e->cb->on_open(e);
	}
}

static void ep_closed(struct ep *e)
{
	e->closed = 1;
	if (e->cb->on_close != NULL) {
		e->cb->on_close(e);
	}
}

static void ep_data(struct ep *e, const uint8_t *data, size_t len)
{
	e->rx += len;
	if (e->cb->on_data != NULL) {
		e->cb->on_data(e, data, len);
	}
}

/* --- hush --- */

/* Raw record keys, as an external handshaker (gRPC's ALTS service) would hand them to
 * both ends. Random per run; children inherit them. */
uint8_t hush_key[44];

static void hush_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	(void)c;
	ep_data(arg, data, len);
}

static void hush_on_writable(struct hush_conn *c, void *arg)
{
	struct ep *e = arg;
	(void)c;
	if (e->cb->on_writable != NULL) {
		e->cb->on_writable(e);
	}
}

static void hush_on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	(void)c;
	(void)err;
	if (ev == HUSH_CONN_EV_OPEN) {
		ep_opened(arg);
	} else if (ev == HUSH_CONN_EV_EOF || ev == HUSH_CONN_EV_ERROR) {
		ep_closed(arg);
	}
}

static int hush_write(struct ep *e, const void *data, size_t len)
{
	int rc = hush_conn_write(e->hc, data, len);
	return rc < 0 ? -1 : rc;
}

static size_t hush_queued(const struct ep *e)
{
	return hush_conn_queued(e->hc);
}

static void hush_free(struct ep *e)
{
	hush_conn_free(e->hc);
	e->hc = NULL;
}

static const struct ep_ops hush_ops = {hush_write, hush_queued, hush_free};

static int open_hush_flags(struct ep *e, struct env *env, int fd, int server, unsigned flags)
{
	static const struct hush_conn_callbacks cb = {hush_on_data, hush_on_writable,
						      hush_on_event};
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.flags |= flags;
	if (hush_conn_new(&e->hc, env->loop, fd, &cfg, &cb, e) < 0) {
		return -1; /* the socket was closed (HUSH_CONN_CLOSE_ON_FREE) */
	}
	if (hush_conn_start_raw(e->hc, HUSH_RP_ALTS_AES128_GCM_REKEY, hush_key, sizeof(hush_key),
				server ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT) < 0) {
		hush_conn_free(e->hc);
		e->hc = NULL;
		return -1;
	}
	e->ops = &hush_ops;
	return 0;
}

/* hush as designed: buffers borrowed from the pool only while bytes move. */
int open_hush(struct ep *e, struct env *env, int fd, int server)
{
	return open_hush_flags(e, env, fd, server, 0);
}

/* hush's baseline: read and write buffers and cipher contexts held for life. */
int open_hush_pinned(struct ep *e, struct env *env, int fd, int server)
{
	return open_hush_flags(e, env, fd, server, HUSH_CONN_PINNED);
}

/* --- libevent bufferevents (plain and OpenSSL) --- */

static void bev_on_read(struct bufferevent *bev, void *arg)
{
	struct ep *e = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	/* The plaintext is viewed in place and drained, as hush's on_data views it. */
	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v[16];
		int k = evbuffer_peek(in, -1, NULL, v, 16);
		size_t done = 0;
		for (int i = 0; i < k && i < 16; i++) {
			ep_data(e, v[i].iov_base, v[i].iov_len);
			done += v[i].iov_len;
		}
		evbuffer_drain(in, done);
	}
}

/* Runs when the output buffer drained to the low watermark (0). */
static void bev_on_write(struct bufferevent *bev, void *arg)
{
	struct ep *e = arg;
	(void)bev;
	if (e->over_high) {
		e->over_high = 0;
		if (e->cb->on_writable != NULL) {
			e->cb->on_writable(e);
		}
	}
}

static void bev_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		ep_opened(arg);
	} else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		ep_closed(arg);
	}
}

static int bev_write(struct ep *e, const void *data, size_t len)
{
	if (bufferevent_write(e->bev, data, len) < 0) {
		return -1;
	}
	if (evbuffer_get_length(bufferevent_get_output(e->bev)) > BEV_HIGH_WATER) {
		e->over_high = 1;
		return 1;
	}
	return 0;
}

static size_t bev_queued(const struct ep *e)
{
	return evbuffer_get_length(bufferevent_get_output(e->bev));
}

static void bev_free(struct ep *e)
{
	bufferevent_free(e->bev);
	e->bev = NULL;
}

static const struct ep_ops bev_ops = {bev_write, bev_queued, bev_free};

/* Makes e drive bev, which it owns from now on. */
static void bev_attach(struct ep *e, struct bufferevent *bev)
{
	e->bev = bev;
	e->ops = &bev_ops;
	bufferevent_setcb(bev, bev_on_read, bev_on_write, bev_on_event, e);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* A plain libevent socket bufferevent: no crypto, the floor for any bufferevent. */
int open_plain(struct ep *e, struct env *env, int fd, int server)
{
	(void)server;
	struct bufferevent *bev = bufferevent_socket_new(env->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return -1;
	}
	bev_attach(e, bev);
	ep_opened(e); /* nothing to negotiate */
	return 0;
}

/*
 * A hush bufferevent refuses a raw key that keyed one before in the process (a key
 * twice would repeat nonces), so each connection's key is hush_key hashed with the
 * connection's addresses, client's first: both ends derive the same one, and no two
 * connections open at once share it.
 */
static int bev_conn_key(int fd, int server, uint8_t out[44])
{
	struct sockaddr_storage a[2];
	socklen_t la = sizeof(a[0]), lb = sizeof(a[1]);
	memset(a, 0, sizeof(a));
	if (getsockname(fd, (struct sockaddr *)&a[server ? 1 : 0], &la) != 0 ||
	    getpeername(fd, (struct sockaddr *)&a[server ? 0 : 1], &lb) != 0) {
		return -1;
	}
	uint8_t md[2][32];
	unsigned int n;
	if (EVP_Digest(a, sizeof(a), md[0], &n, EVP_sha256(), NULL) != 1) {
		return -1;
	}
	memcpy(md[1], hush_key, 32);
	for (int i = 0; i < 32; i++) {
		md[1][i] ^= md[0][i];
	}
	if (EVP_Digest(md, sizeof(md), md[0], &n, EVP_sha256(), NULL) != 1 ||
	    EVP_Digest(md[0], 32, md[1], &n, EVP_sha256(), NULL) != 1) {
		return -1;
	}
	memcpy(out, md, 44);
	return 0;
}

/* hush as a bufferevent (include/hush/bufferevent.h), keyed by raw keys or, with hc, a
 * hush handshake, whose end CONNECTED reports. */
static int open_hush_bev_with(struct ep *e, struct env *env, int fd, int server,
			      const struct hush_handshake_config *hc)
{
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = env->loop;
	cfg.handshake = hc;
	uint8_t key[44];
	if (hc == NULL && bev_conn_key(fd, server, key) != 0) {
		close(fd);
		return -1;
	}
	cfg.key = key;
	cfg.key_len = sizeof(key);
	cfg.side = server ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	struct bufferevent *bev =
	    hush_bufferevent_socket_new(env->base, fd, &cfg, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return -1;
	}
	bev_attach(e, bev);
	if (hc == NULL) {
		ep_opened(e); /* raw keys start open: no CONNECTED, as bufferevent_openssl */
	}
	return 0;
}

int open_hush_bev(struct ep *e, struct env *env, int fd, int server)
{
	return open_hush_bev_with(e, env, fd, server, NULL);
}

/* Keyed by a Noise XX handshake (static keys, both verified): what an evhttp server
 * over hush holds per idle client. The bench accepts any peer key; the verification
 * itself is measured by the Handshake benchmark. */
static int bench_accept_any_peer(const uint8_t remote_static[HUSH_KEY_SIZE], void *arg)
{
	(void)remote_static;
	(void)arg;
	return 0;
}

int open_hush_bev_xx(struct ep *e, struct env *env, int fd, int server)
{
	static struct hush_keypair *kp;
	static struct hush_handshake_config hc;
	if (kp == NULL) {
		if (hush_keypair_generate(&kp) != 0) {
			close(fd);
			return -1;
		}
		hush_handshake_config_init(&hc);
		hc.keypair = kp;
		hc.verify = bench_accept_any_peer;
	}
	return open_hush_bev_with(e, env, fd, server, &hc);
}

/* Made once at start-up (before any fork); see tls_init. */
SSL_CTX *tls_server_ctx;
SSL_CTX *tls_client_ctx;

static int open_tls_mode(struct ep *e, struct env *env, int fd, int server, long mode)
{
	SSL *ssl = SSL_new(server ? tls_server_ctx : tls_client_ctx);
	if (ssl == NULL) {
		close(fd);
		return -1;
	}
	if (mode != 0) {
		SSL_set_mode(ssl, mode);
	}
	struct bufferevent *bev = bufferevent_openssl_socket_new(
	    env->base, fd, ssl, server ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		/* libevent 2.1 does not say who owns ssl and fd after this failure: leak
		 * them rather than free twice. */
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	bev_attach(e, bev);
	return 0;
}

/* OpenSSL TLS 1.3 through libevent's bufferevent_openssl, OpenSSL's defaults. */
int open_tls(struct ep *e, struct env *env, int fd, int server)
{
	return open_tls_mode(e, env, fd, server, 0);
}

/* The same with SSL_MODE_RELEASE_BUFFERS: OpenSSL frees its record buffers when empty. */
int open_tls_release(struct ep *e, struct env *env, int fd, int server)
{
	return open_tls_mode(e, env, fd, server, SSL_MODE_RELEASE_BUFFERS);
}

/* The contexts every OpenSSL variant shares (bench-tls.c), each SSL given its mode. */
int tls_init(void)
{
	return bench_tls_init(&tls_server_ctx, &tls_client_ctx, 0);
}
