/*
 * libevent's own HTTP stack over hush bufferevents: evhttp serves through
 * evhttp_set_bevcb() and fetches through evhttp_connection_base_bufferevent_new(), the
 * way programs use bufferevent_openssl, with a Noise XX handshake on every connection.
 * Real requests: small and multi-megabyte bodies both ways, keep-alive reuse, and a
 * client that does not hold the server's key.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <hush/bufferevent.h>
#include <hush/conn.h>
#include <hush/handshake.h>
#include <hush/keys.h>

#include "testlib.h"

#define BIG (4u * 1024u * 1024u + 123u)

struct world {
	struct event_base *base;
	struct hush_pool *pool;
	struct hush_loop *loop;
	struct hush_keypair *kc, *ks;
	uint8_t pub_c[HUSH_KEY_SIZE], pub_s[HUSH_KEY_SIZE];
	struct hush_handshake_config cc, sc;
	struct hush_bufferevent_config cbev, sbev;
	struct evhttp *http;
	uint16_t port;
	int server_conns;   /* bufferevents evhttp asked for: one per TCP connection */
	int requests;       /* requests served */
	/* Client side, one request at a time. */
	int status;
	struct evbuffer *body;
	int done;
	/* The client's bufferevent, and its hush error when the response came. */
	struct bufferevent *client_bev;
	int err_at_response;
};

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 131u + (i >> 12) + 5u);
}

static struct bufferevent *server_bev(struct event_base *base, void *arg)
{
	struct world *w = arg;
	w->server_conns++;
	return hush_bufferevent_socket_new(base, -1, &w->sbev, BEV_OPT_CLOSE_ON_FREE);
}

static void serve_small(struct evhttp_request *req, void *arg)
{
	struct world *w = arg;
	w->requests++;
	/* Who is asking: the client's static key, proved by the handshake. */
	struct bufferevent *bev =
		evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
	uint8_t peer[HUSH_KEY_SIZE];
	assert_int_equal(hush_bufferevent_peer_key(bev, peer), 0);
	assert_memory_equal(peer, w->pub_c, HUSH_KEY_SIZE);
	struct evbuffer *b = evbuffer_new();
	evbuffer_add_printf(b, "hello over hush, request %d", w->requests);
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

static void serve_big(struct evhttp_request *req, void *arg)
{
	struct world *w = arg;
	w->requests++;
	struct evbuffer *b = evbuffer_new();
	uint8_t chunk[4096];
	for (size_t off = 0; off < BIG; off += sizeof(chunk)) {
		size_t n = BIG - off < sizeof(chunk) ? BIG - off : sizeof(chunk);
		for (size_t i = 0; i < n; i++) {
			chunk[i] = pattern(off + i);
		}
		evbuffer_add(b, chunk, n);
	}
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

/* Answers with the request body's length and a checksum of it. */
static void serve_upload(struct evhttp_request *req, void *arg)
{
	struct world *w = arg;
	w->requests++;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	const uint8_t *p = evbuffer_pullup(in, -1);
	size_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		bad += p[i] != pattern(i);
	}
	struct evbuffer *b = evbuffer_new();
	evbuffer_add_printf(b, "%zu %zu", n, bad);
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

static void world_init(struct world *w)
{
	memset(w, 0, sizeof(*w));
	w->base = event_base_new();
	assert_non_null(w->base);
	assert_int_equal(hush_pool_new(&w->pool, NULL), 0);
	assert_int_equal(hush_loop_new(&w->loop, w->base, w->pool), 0);
	assert_int_equal(hush_keypair_generate(&w->kc), 0);
	assert_int_equal(hush_keypair_generate(&w->ks), 0);
	hush_keypair_public(w->kc, w->pub_c);
	hush_keypair_public(w->ks, w->pub_s);
	hush_handshake_config_init(&w->cc);
	hush_handshake_config_init(&w->sc);
	w->cc.keypair = w->kc;
	w->sc.keypair = w->ks;
	w->cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])w->pub_s;
	w->sc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])w->pub_c;
	w->cc.n_allowed_peers = w->sc.n_allowed_peers = 1;
	w->cc.app_protocol = w->sc.app_protocol = "http/1.1";
	hush_bufferevent_config_init(&w->cbev);
	hush_bufferevent_config_init(&w->sbev);
	w->cbev.loop = w->sbev.loop = w->loop;
	w->cbev.handshake = &w->cc;
	w->sbev.handshake = &w->sc;
	w->cbev.side = HUSH_SIDE_CLIENT;
	w->sbev.side = HUSH_SIDE_SERVER;

	w->http = evhttp_new(w->base);
	assert_non_null(w->http);
	evhttp_set_bevcb(w->http, server_bev, w);
	assert_int_equal(evhttp_set_cb(w->http, "/small", serve_small, w), 0);
	assert_int_equal(evhttp_set_cb(w->http, "/big", serve_big, w), 0);
	assert_int_equal(evhttp_set_cb(w->http, "/upload", serve_upload, w), 0);
	evhttp_set_max_body_size(w->http, 64 * 1024 * 1024);
	struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(w->http, "127.0.0.1", 0);
	assert_non_null(s);
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	assert_int_equal(getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&sin, &sl),
			 0);
	w->port = ntohs(sin.sin_port);
	w->body = evbuffer_new();
}

static void world_done(struct world *w)
{
	evhttp_free(w->http);
	event_base_loop(w->base, EVLOOP_NONBLOCK); /* bufferevents finalize from the loop */
	hush_loop_free(w->loop);
	event_base_free(w->base);
	struct hush_pool_stats st;
	hush_pool_stats(w->pool, &st);
	assert_int_equal(st.total.in_use, 0);
	hush_pool_free(w->pool);
	hush_keypair_free(w->kc);
	hush_keypair_free(w->ks);
	evbuffer_free(w->body);
}

static void on_response(struct evhttp_request *req, void *arg)
{
	struct world *w = arg;
	w->done = 1;
	w->status = req != NULL ? evhttp_request_get_response_code(req) : -1;
	if (w->client_bev != NULL) {
		w->err_at_response = hush_bufferevent_get_error(w->client_bev);
	}
	evbuffer_drain(w->body, evbuffer_get_length(w->body));
	if (req != NULL) {
		evbuffer_add_buffer(w->body, evhttp_request_get_input_buffer(req));
	}
	event_base_loopbreak(w->base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

/* Sends one request on evcon and runs the loop until its response (20 s at most). */
static void fetch(struct world *w, struct evhttp_connection *evcon, enum evhttp_cmd_type cmd,
		  const char *path, const void *body, size_t body_len)
{
	w->done = 0;
	w->status = 0;
	struct evhttp_request *req = evhttp_request_new(on_response, w);
	assert_non_null(req);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", "127.0.0.1");
	if (body != NULL) {
		evbuffer_add(evhttp_request_get_output_buffer(req), body, body_len);
	}
	assert_int_equal(evhttp_make_request(evcon, req, cmd, path), 0);
	struct timeval tv = {20, 0};
	struct event *t = evtimer_new(w->base, on_deadline, w->base);
	evtimer_add(t, &tv);
	while (!w->done && event_base_dispatch(w->base) == 0 && evtimer_pending(t, NULL)) {
	}
	event_free(t);
	assert_true(w->done);
}

static struct evhttp_connection *client(struct world *w)
{
	struct bufferevent *bev =
		hush_bufferevent_socket_new(w->base, -1, &w->cbev, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(bev);
	w->client_bev = bev;
	struct evhttp_connection *evcon =
		evhttp_connection_base_bufferevent_new(w->base, NULL, bev, "127.0.0.1", w->port);
	assert_non_null(evcon);
	evhttp_connection_set_max_body_size(evcon, 64 * 1024 * 1024);
	evhttp_connection_set_retries(evcon, 0);
	return evcon;
}

static void evhttp_serves_and_fetches_over_hush(void **state)
{
	(void)state;
	struct world w;
	world_init(&w);
	struct evhttp_connection *evcon = client(&w);

	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_int_equal(w.status, HTTP_OK);
	const char *want = "hello over hush, request 1";
	assert_int_equal(evbuffer_get_length(w.body), strlen(want));
	assert_memory_equal(evbuffer_pullup(w.body, -1), want, strlen(want));

	/* A multi-megabyte response body, byte for byte. */
	fetch(&w, evcon, EVHTTP_REQ_GET, "/big", NULL, 0);
	assert_int_equal(w.status, HTTP_OK);
	assert_int_equal(evbuffer_get_length(w.body), BIG);
	const uint8_t *p = evbuffer_pullup(w.body, -1);
	size_t bad = 0;
	for (size_t i = 0; i < BIG; i++) {
		bad += p[i] != pattern(i);
	}
	assert_int_equal(bad, 0);

	/* A multi-megabyte request body. */
	uint8_t *up = malloc(BIG);
	assert_non_null(up);
	for (size_t i = 0; i < BIG; i++) {
		up[i] = pattern(i);
	}
	fetch(&w, evcon, EVHTTP_REQ_POST, "/upload", up, BIG);
	free(up);
	assert_int_equal(w.status, HTTP_OK);
	char expect[64];
	snprintf(expect, sizeof(expect), "%u 0", BIG);
	assert_int_equal(evbuffer_get_length(w.body), strlen(expect));
	assert_memory_equal(evbuffer_pullup(w.body, -1), expect, strlen(expect));

	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_int_equal(w.status, HTTP_OK);

	/* Keep-alive: four requests, one TCP connection and one handshake. */
	assert_int_equal(w.requests, 4);
	assert_int_equal(w.server_conns, 1);
	evhttp_connection_free(evcon);
	world_done(&w);
}

/* A second connection object after the first is gone: a fresh socket and handshake. */
static void evhttp_reconnects_with_a_new_handshake(void **state)
{
	(void)state;
	struct world w;
	world_init(&w);
	for (int i = 0; i < 3; i++) {
		struct evhttp_connection *evcon = client(&w);
		fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
		assert_int_equal(w.status, HTTP_OK);
		evhttp_connection_free(evcon);
	}
	assert_int_equal(w.server_conns, 3);
	assert_int_equal(w.requests, 3);
	world_done(&w);
}

/* The client does not hold the server's key: the request fails, nothing is served. */
static void evhttp_request_fails_when_the_server_is_not_trusted(void **state)
{
	(void)state;
	struct world w;
	world_init(&w);
	uint8_t stranger[HUSH_KEY_SIZE];
	memset(stranger, 0x5a, sizeof(stranger));
	w.cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])stranger;
	struct evhttp_connection *evcon = client(&w);
	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_true(w.status != HTTP_OK);
	assert_int_equal(w.requests, 0);
	evhttp_connection_free(evcon);
	/* Let the server see its side fail and free it. */
	struct timeval tv = {0, 200000};
	event_base_loopexit(w.base, &tv);
	event_base_dispatch(w.base);
	world_done(&w);
}

/* A plaintext HTTP client gets nothing served: the server speaks only hush. */
static void evhttp_server_refuses_plaintext_http(void **state)
{
	(void)state;
	struct world w;
	world_init(&w);
	struct evhttp_connection *evcon =
		evhttp_connection_base_new(w.base, NULL, "127.0.0.1", w.port);
	assert_non_null(evcon);
	evhttp_connection_set_retries(evcon, 0);
	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_true(w.status != HTTP_OK);
	assert_int_equal(w.requests, 0);
	assert_int_equal(w.server_conns, 1);
	evhttp_connection_free(evcon);
	world_done(&w);
}

/*
 * A connect that fails (libevent's https-client against a closed port): the request
 * fails at once, and nothing of the connection is left on the loop, so a program whose
 * loop runs until it has no events ends, as with bufferevent_openssl. The write timer
 * bufferevent_socket_connect() armed with the connection's timeout (30 s here; evhttp's
 * default is 45 s) used to stay, unknown to hush, and keep the loop alive that long.
 */
static void evhttp_failed_connect_leaves_nothing_on_the_loop(void **state)
{
	(void)state;
	struct world w;
	world_init(&w);
	int before = event_base_get_num_events(w.base, EVENT_BASE_COUNT_ADDED);
	w.port = testlib_closed_port();
	struct evhttp_connection *evcon = client(&w);
	evhttp_connection_set_timeout(evcon, 30);
	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_true(w.status != HTTP_OK);
	event_base_loop(w.base, EVLOOP_NONBLOCK);
	assert_int_equal(event_base_get_num_events(w.base, EVENT_BASE_COUNT_ADDED), before);
	evhttp_connection_free(evcon);
	world_done(&w);
}

/*
 * The connection's timeout covers the connect and the handshake, as evhttp expects of
 * a bufferevent: a server that accepts but never answers fails the request through the
 * bufferevent's own timeout (1 s), not hush's handshake deadline (set to 15 s here),
 * and leaves nothing on the loop.
 */
static void evhttp_connect_timeout_covers_the_handshake(void **state)
{
	(void)state;
	struct world w;
	world_init(&w);
	int before = event_base_get_num_events(w.base, EVENT_BASE_COUNT_ADDED);
	int mute = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(mute, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(mute, 4), 0);
	socklen_t sl = sizeof(sin);
	assert_int_equal(getsockname(mute, (struct sockaddr *)&sin, &sl), 0);
	w.port = ntohs(sin.sin_port);
	w.cbev.handshake_timeout_ms = 15000;
	struct evhttp_connection *evcon = client(&w);
	evhttp_connection_set_timeout(evcon, 1);
	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_true(w.status != HTTP_OK);
	assert_int_equal(w.err_at_response, 0); /* not HUSH_ETIMEDOUT: the handshake's */
	event_base_loop(w.base, EVLOOP_NONBLOCK);
	assert_int_equal(event_base_get_num_events(w.base, EVENT_BASE_COUNT_ADDED), before);
	evhttp_connection_free(evcon);
	close(mute);
	world_done(&w);
}

/*
 * Why it failed survives evhttp's bufferevent_setfd(-1), which comes before the request
 * callback: the error stays until a new connection starts.
 */
static void evhttp_keeps_the_reason_for_a_failure(void **state)
{
	(void)state;
	struct world w;
	world_init(&w);
	uint16_t port = w.port;
	w.port = testlib_closed_port();
	struct evhttp_connection *evcon = client(&w);
	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_true(w.status != HTTP_OK);
	assert_int_equal(w.err_at_response, HUSH_EIO);
	assert_int_equal(bufferevent_getfd(w.client_bev), -1); /* evhttp let go of it */
	assert_int_equal(hush_bufferevent_get_error(w.client_bev), HUSH_EIO);
	evhttp_connection_free(evcon);

	/* A server that does not trust the client: the handshake's verdict is kept. */
	w.port = port;
	uint8_t stranger[HUSH_KEY_SIZE];
	memset(stranger, 0x5a, sizeof(stranger));
	w.cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])stranger;
	evcon = client(&w);
	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_true(w.status != HTTP_OK);
	assert_int_equal(w.err_at_response, HUSH_EPEER);

	/* A new connection on the same bufferevent starts with no error. */
	w.cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])w.pub_s;
	fetch(&w, evcon, EVHTTP_REQ_GET, "/small", NULL, 0);
	assert_int_equal(w.status, HTTP_OK);
	assert_int_equal(w.err_at_response, 0);
	evhttp_connection_free(evcon);
	struct timeval tv = {0, 200000};
	event_base_loopexit(w.base, &tv);
	event_base_dispatch(w.base);
	world_done(&w);
}

/* A client that sends one request and its close record at once, then reads to EOF. */
struct closer {
	struct world *w;
	struct bufferevent *bev;
	struct evbuffer *got;
	int ended;
	int clean; /* the server's close record came: an EOF without error */
};

static void closer_read(struct bufferevent *bev, void *arg)
{
	struct closer *c = arg;
	evbuffer_add_buffer(c->got, bufferevent_get_input(bev));
}

static void closer_event(struct bufferevent *bev, short what, void *arg)
{
	struct closer *c = arg;
	if (what & BEV_EVENT_CONNECTED) {
		static const char req[] = "GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
		assert_int_equal(bufferevent_write(bev, req, sizeof(req) - 1), 0);
		/* The close record goes out right behind the request, in the same write. */
		assert_int_equal(hush_bufferevent_shutdown(bev), 0);
		return;
	}
	if (what == HUSH_BEV_EVENT_SHUTDOWN) {
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		c->ended = 1;
		c->clean = what == (BEV_EVENT_READING | BEV_EVENT_EOF) &&
			   hush_bufferevent_get_error(bev) == 0;
		event_base_loopbreak(c->w->base);
	}
}

/*
 * 300 clients each send a request followed at once by their close record, so the
 * server reads both together: every request is answered (the peer's close record ends
 * only its sending, as a TCP FIN does for plain evhttp), and every answer ends with the
 * server's close record, which hush sends when evhttp frees the bufferevent, before
 * evhttp's own shutdown(fd, SHUT_WR).
 */
static void evhttp_answers_a_request_that_came_with_the_close_record(void **state)
{
	(void)state;
	struct world w;
	world_init(&w);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(w.port);
	int answered = 0, clean = 0;
	for (int i = 0; i < 300; i++) {
		struct closer c = {.w = &w, .got = evbuffer_new()};
		c.bev = hush_bufferevent_socket_new(w.base, -1, &w.cbev, BEV_OPT_CLOSE_ON_FREE);
		assert_non_null(c.bev);
		bufferevent_setcb(c.bev, closer_read, NULL, closer_event, &c);
		bufferevent_enable(c.bev, EV_READ | EV_WRITE);
		assert_int_equal(
			bufferevent_socket_connect(c.bev, (struct sockaddr *)&sin, sizeof(sin)), 0);
		struct timeval tv = {20, 0};
		struct event *t = evtimer_new(w.base, on_deadline, w.base);
		evtimer_add(t, &tv);
		while (!c.ended && event_base_dispatch(w.base) == 0 && evtimer_pending(t, NULL)) {
		}
		event_free(t);
		assert_true(c.ended);
		size_t n = evbuffer_get_length(c.got);
		const char *r = (const char *)evbuffer_pullup(c.got, -1);
		answered += n > 12 && memcmp(r, "HTTP/1.1 200", 12) == 0;
		clean += c.clean;
		bufferevent_free(c.bev);
		evbuffer_free(c.got);
	}
	print_message("requests %d answered %d clean %d\n", w.requests, answered, clean);
	assert_int_equal(w.requests, 300);
	assert_int_equal(answered, 300);
	assert_int_equal(clean, 300);
	struct timeval tv = {0, 100000};
	event_base_loopexit(w.base, &tv);
	event_base_dispatch(w.base);
	world_done(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(evhttp_serves_and_fetches_over_hush),
		cmocka_unit_test(evhttp_reconnects_with_a_new_handshake),
		cmocka_unit_test(evhttp_request_fails_when_the_server_is_not_trusted),
		cmocka_unit_test(evhttp_server_refuses_plaintext_http),
		cmocka_unit_test(evhttp_failed_connect_leaves_nothing_on_the_loop),
		cmocka_unit_test(evhttp_connect_timeout_covers_the_handshake),
		cmocka_unit_test(evhttp_keeps_the_reason_for_a_failure),
		cmocka_unit_test(evhttp_answers_a_request_that_came_with_the_close_record),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
