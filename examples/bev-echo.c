/*
 * bev-echo: a plain libevent echo server and client, ported to hush by changing only
 * the bufferevent constructor. Build it with -DUSE_HUSH=0 and it is the ordinary
 * plaintext program; the hush build differs in make_bev() alone.
 *
 *   bev-echo --listen PORT [--count N]      echo server on 127.0.0.1:PORT (0 = any;
 *                                           prints "listening on PORT")
 *   bev-echo --connect PORT --bytes N       send N bytes, read the echo, print
 *                                           "echoed N bytes, sha256 HEX"
 *
 * Each connection runs a Noise NNpsk0 handshake keyed by a fixed demonstration PSK,
 * so every connection gets fresh record keys; real programs load their keys from files
 * (hush/keys.h) and use XX to authenticate peers by static key.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/evp.h>

#ifndef USE_HUSH
#define USE_HUSH 1
#endif
#if USE_HUSH
#include <hush/bufferevent.h>
#include <hush/conn.h>
#include <hush/handshake.h>

static struct hush_pool *pool;
static struct hush_loop *loop;
static struct hush_handshake_config handshake;
static const uint8_t demo_psk[HUSH_KEY_SIZE] = {'b', 'e', 'v', '-', 'e', 'c', 'h', 'o'};
#endif

/* The one place that differs between the plaintext program and the hush one. */
static struct bufferevent *make_bev(struct event_base *base, evutil_socket_t fd, int server)
{
#if USE_HUSH
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = loop;
	cfg.handshake = &handshake;
	cfg.side = server ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	return hush_bufferevent_socket_new(base, fd, &cfg, BEV_OPT_CLOSE_ON_FREE);
#else
	(void)server;
	return bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
#endif
}

/* ---- Everything below is ordinary libevent code. ---- */

static long served, count = 1;
static size_t want, got;
static EVP_MD_CTX *md;
static struct event_base *base;

static void server_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void server_event(struct bufferevent *bev, short what, void *arg)
{
	(void)arg;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		bufferevent_free(bev);
		if (++served >= count) {
			event_base_loopexit(base, NULL);
		}
	}
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
		      int socklen, void *arg)
{
	(void)l;
	(void)sa;
	(void)socklen;
	(void)arg;
	struct bufferevent *bev = make_bev(base, fd, 1);
	if (bev == NULL) {
		close(fd);
		return;
	}
	bufferevent_setcb(bev, server_read, NULL, server_event, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void client_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);
	uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)n);
	EVP_DigestUpdate(md, p, n);
	got += n;
	evbuffer_drain(in, n);
	if (got >= want) {
		event_base_loopexit(base, NULL);
	}
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)arg;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		fprintf(stderr, "bev-echo: connection ended early\n");
		event_base_loopexit(base, NULL);
	}
}

int main(int argc, char **argv)
{
	int listen_port = -1, connect_port = -1;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--listen") == 0) {
			listen_port = atoi(argv[i + 1]);
		} else if (strcmp(argv[i], "--connect") == 0) {
			connect_port = atoi(argv[i + 1]);
		} else if (strcmp(argv[i], "--bytes") == 0) {
			want = (size_t)atol(argv[i + 1]);
		} else if (strcmp(argv[i], "--count") == 0) {
			count = atol(argv[i + 1]);
		}
	}
	if ((listen_port < 0) == (connect_port < 0)) {
		fprintf(stderr, "usage: bev-echo --listen PORT [--count N] | --connect PORT --bytes N\n");
		return 2;
	}
	base = event_base_new();
#if USE_HUSH
	if (hush_pool_new(&pool, NULL) != 0 || hush_loop_new(&loop, base, pool) != 0) {
		return 1;
	}
	hush_handshake_config_init(&handshake);
	handshake.protocol = HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256;
	handshake.psk = demo_psk;
#endif
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int rc = 0;
	if (listen_port >= 0) {
		sin.sin_port = htons((uint16_t)listen_port);
		struct evconnlistener *l = evconnlistener_new_bind(
			base, on_accept, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 16,
			(struct sockaddr *)&sin, sizeof(sin));
		if (l == NULL) {
			perror("bev-echo: listen");
			return 1;
		}
		socklen_t sl = sizeof(sin);
		getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &sl);
		printf("listening on %d\n", ntohs(sin.sin_port));
		fflush(stdout);
		event_base_dispatch(base);
		evconnlistener_free(l);
	} else {
		sin.sin_port = htons((uint16_t)connect_port);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
			perror("bev-echo: connect");
			return 1;
		}
		struct bufferevent *bev = make_bev(base, fd, 0);
		md = EVP_MD_CTX_new();
		EVP_DigestInit_ex(md, EVP_sha256(), NULL);
		bufferevent_setcb(bev, client_read, NULL, client_event, NULL);
		bufferevent_enable(bev, EV_READ | EV_WRITE);
		uint8_t chunk[4096];
		for (size_t sent = 0; sent < want; sent += sizeof(chunk)) {
			for (size_t i = 0; i < sizeof(chunk); i++) {
				chunk[i] = (uint8_t)((sent + i) * 31 + 7);
			}
			size_t n = want - sent < sizeof(chunk) ? want - sent : sizeof(chunk);
			bufferevent_write(bev, chunk, n);
		}
		event_base_dispatch(base);
		uint8_t sum[32];
		EVP_DigestFinal_ex(md, sum, NULL);
		printf("echoed %zu bytes, sha256 ", got);
		for (int i = 0; i < 32; i++) {
			printf("%02x", sum[i]);
		}
		printf("\n");
		rc = got == want ? 0 : 1;
		EVP_MD_CTX_free(md);
		bufferevent_free(bev);
	}
#if USE_HUSH
	event_base_loop(base, EVLOOP_NONBLOCK); /* bufferevents are finalized from the loop */
	hush_loop_free(loop);
#endif
	event_base_free(base);
#if USE_HUSH
	hush_pool_free(pool);
#endif
	return rc;
}
