/*
 * bev-http: libevent's HTTP server and client (evhttp) over hush, ported from the
 * plaintext program by changing only where bufferevents are made. Build it with
 * -DUSE_HUSH=0 and it is the ordinary plaintext program; the hush build differs in
 * make_bev() and the setup above it alone.
 *
 *   bev-http --listen PORT [--count N]   serve on 127.0.0.1:PORT (0 = any; prints
 *                                        "listening on PORT") until the client of
 *                                        the N-th request closes its connection
 *                                        (default: forever)
 *   bev-http --get PORT PATH [--repeat K]
 *                                        fetch PATH K times (default 1) over one
 *                                        kept-alive connection; print for each
 *                                        "status S, N bytes, sha256 HEX"
 *
 * The server answers GET /bytes/N with N bytes of a fixed pattern and anything else
 * with 404. Each connection runs a Noise NNpsk0 handshake keyed by a fixed
 * demonstration PSK; real programs load keys from files (hush/keys.h) and use XX, which
 * tells the server who the client is (hush_bufferevent_peer_key()).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
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
static const uint8_t demo_psk[HUSH_KEY_SIZE] = {'b', 'e', 'v', '-', 'h', 't', 't', 'p'};
#endif

/* The one place that differs between the plaintext program and the hush one: a
 * bufferevent with no socket yet, which evhttp connects or gives the accepted one. */
static struct bufferevent *make_bev(struct event_base *base, int server)
{
#if USE_HUSH
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = loop;
	cfg.handshake = &handshake;
	cfg.side = server ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	return hush_bufferevent_socket_new(base, -1, &cfg, BEV_OPT_CLOSE_ON_FREE);
#else
	(void)server;
	return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
#endif
}

/* ---- Everything below is ordinary libevent code. ---- */

static struct event_base *base;
static long served, count = -1, repeat = 1, fetched;
static int failed;

static struct bufferevent *server_bev(struct event_base *b, void *arg)
{
	(void)arg;
	return make_bev(b, 1);
}

static void on_closed(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	(void)arg;
	event_base_loopexit(base, NULL);
}

static void serve(struct evhttp_request *req, void *arg)
{
	(void)arg;
	const char *uri = evhttp_request_get_uri(req);
	char *end;
	unsigned long n;
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET ||
	    strncmp(uri, "/bytes/", 7) != 0 || (n = strtoul(uri + 7, &end, 10)) > (64ul << 20) ||
	    *end != '\0' || end == uri + 7) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
	} else {
		struct evbuffer *body = evbuffer_new();
		uint8_t chunk[4096];
		for (unsigned long off = 0; off < n; off += sizeof(chunk)) {
			size_t k = n - off < sizeof(chunk) ? n - off : sizeof(chunk);
			for (size_t i = 0; i < k; i++) {
				chunk[i] = (uint8_t)((off + i) * 31 + 7);
			}
			evbuffer_add(body, chunk, k);
		}
		evhttp_send_reply(req, HTTP_OK, "OK", body);
		evbuffer_free(body);
	}
	if (count > 0 && ++served >= count) {
		/* Stop once the client has closed this connection: only then has it read the
		 * whole reply, however slowly. A fixed delay here would cut a slow reader. */
		evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_closed,
					      NULL);
	}
}

static void on_response(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (req == NULL || evhttp_request_get_response_code(req) == 0) {
		fprintf(stderr, "bev-http: request failed\n");
		failed = 1;
		event_base_loopbreak(base);
		return;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	uint8_t sum[32];
	EVP_Digest(evbuffer_pullup(in, -1), n, sum, NULL, EVP_sha256(), NULL);
	printf("status %d, %zu bytes, sha256 ", evhttp_request_get_response_code(req), n);
	for (int i = 0; i < 32; i++) {
		printf("%02x", sum[i]);
	}
	printf("\n");
	if (++fetched >= repeat) {
		event_base_loopbreak(base);
	}
}

int main(int argc, char **argv)
{
	int listen_port = -1, get_port = -1;
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
			listen_port = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--get") == 0 && i + 2 < argc) {
			get_port = atoi(argv[++i]);
			path = argv[++i];
		} else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
			count = atol(argv[++i]);
		} else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
			repeat = atol(argv[++i]);
		} else {
			listen_port = get_port = -1;
			break;
		}
	}
	if ((listen_port < 0) == (get_port < 0) || repeat < 1) {
		fprintf(stderr, "usage: bev-http --listen PORT [--count N] | "
				"--get PORT PATH [--repeat K]\n");
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
	if (listen_port >= 0) {
		struct evhttp *http = evhttp_new(base);
		evhttp_set_bevcb(http, server_bev, NULL);
		evhttp_set_gencb(http, serve, NULL);
		struct evhttp_bound_socket *s =
			evhttp_bind_socket_with_handle(http, "127.0.0.1", (uint16_t)listen_port);
		if (s == NULL) {
			perror("bev-http: listen");
			return 1;
		}
		struct sockaddr_in sin;
		socklen_t sl = sizeof(sin);
		getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&sin, &sl);
		printf("listening on %d\n", ntohs(sin.sin_port));
		fflush(stdout);
		event_base_dispatch(base);
		evhttp_free(http);
	} else {
		struct evhttp_connection *evcon = evhttp_connection_base_bufferevent_new(
			base, NULL, make_bev(base, 0), "127.0.0.1", (uint16_t)get_port);
		evhttp_connection_set_max_body_size(evcon, 64 << 20);
		for (long i = 0; i < repeat; i++) {
			struct evhttp_request *req = evhttp_request_new(on_response, NULL);
			evhttp_add_header(evhttp_request_get_output_headers(req), "Host",
					  "127.0.0.1");
			evhttp_make_request(evcon, req, EVHTTP_REQ_GET, path);
		}
		event_base_dispatch(base);
		evhttp_connection_free(evcon);
	}
#if USE_HUSH
	event_base_loop(base, EVLOOP_NONBLOCK); /* bufferevents are finalized from the loop */
	hush_loop_free(loop);
#endif
	event_base_free(base);
#if USE_HUSH
	hush_pool_free(pool);
#endif
	return failed || (get_port >= 0 && fetched < repeat);
}
