/*
 * Tests for hush bufferevents (src/transport/bufferevent.c): plain libevent programs,
 * libevent's HTTP stack, a raw ALTS peer, watermarks, truncation and tampering.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/thread.h>

#include <hush/bufferevent.h>
#include <hush/conn.h>

#include "testlib.h"
#include "common/common-internal.h"

static const uint8_t KEY44[44] = {9, 8, 7, 6, 5, 4, 3, 2, 1};

struct env {
	struct event_base *base;
	struct hush_pool *pool;
	struct hush_loop *loop;
};

static void env_init(struct env *e)
{
	e->base = event_base_new();
	assert_non_null(e->base);
	assert_int_equal(hush_pool_new(&e->pool, NULL), 0);
	assert_int_equal(hush_loop_new(&e->loop, e->base, e->pool), 0);
}

/* Runs what is pending, then checks every pool buffer came back and nothing is left. */
static void env_done(struct env *e)
{
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	hush_loop_free(e->loop);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	struct hush_pool_stats st;
	hush_pool_stats(e->pool, &st);
	assert_int_equal(st.total.in_use, 0);
	assert_int_equal(event_base_get_num_events(e->base, EVENT_BASE_COUNT_ADDED), 0);
	event_base_free(e->base);
	hush_pool_free(e->pool);
}

static struct bufferevent *hush_bev(struct env *e, int fd, enum hush_side side)
{
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.key = KEY44;
	cfg.key_len = sizeof(KEY44);
	cfg.side = side;
	cfg.loop = e->loop;
	struct bufferevent *b = hush_bufferevent_socket_new(e->base, fd, &cfg, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(b);
	return b;
}

/* An application: collects what it reads, remembers its events, optionally echoes. */
struct app {
	struct evbuffer *got;
	int connected;
	int eof;
	int error;
	int echo;
	int no_read;       /* leave the input alone (watermark test) */
	size_t stop_at;
	struct event_base *base;
};

static void app_read(struct bufferevent *bev, void *arg)
{
	struct app *a = arg;
	if (a->no_read) {
		return;
	}
	if (a->echo) {
		bufferevent_write_buffer(bev, bufferevent_get_input(bev));
		return;
	}
	/* Copy out and drain, as most applications do (moving the chains would keep the
	 * pool buffers, which is the application's right but not what is measured). */
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);
	uint8_t *tmp = malloc(n);
	evbuffer_remove(in, tmp, n);
	evbuffer_add(a->got, tmp, n);
	free(tmp);
	if (a->stop_at != 0 && evbuffer_get_length(a->got) >= a->stop_at) {
		event_base_loopbreak(a->base);
	}
}

static void app_event(struct bufferevent *bev, short what, void *arg)
{
	struct app *a = arg;
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		a->connected++;
	}
	if (what & BEV_EVENT_EOF) {
		a->eof++;
	}
	if (what & BEV_EVENT_ERROR) {
		a->error++;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		event_base_loopbreak(a->base);
	}
}

static void app_init(struct app *a, struct env *e)
{
	memset(a, 0, sizeof(*a));
	a->got = evbuffer_new();
	a->base = e->base;
}

static void on_run_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

/* Runs the loop until a callback breaks it (10 s at most); leaves no timer behind. */
static void run(struct env *e)
{
	struct timeval tv = {10, 0};
	struct event *t = evtimer_new(e->base, on_run_timer, e->base);
	evtimer_add(t, &tv);
	event_base_dispatch(e->base);
	event_free(t);
}

static void bev_echo_between_two_hush_bufferevents(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct app ca, sa;
	app_init(&ca, &e);
	app_init(&sa, &e);
	sa.echo = 1;
	struct bufferevent *c = hush_bev(&e, sv[0], HUSH_SIDE_CLIENT);
	struct bufferevent *s = hush_bev(&e, sv[1], HUSH_SIDE_SERVER);
	bufferevent_setcb(c, app_read, NULL, app_event, &ca);
	bufferevent_setcb(s, app_read, NULL, app_event, &sa);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	assert_int_equal(bufferevent_write(c, "hello, hush", 11), 0);
	ca.stop_at = 11;
	run(&e);
	assert_int_equal(evbuffer_get_length(ca.got), 11);
	assert_memory_equal(evbuffer_pullup(ca.got, -1), "hello, hush", 11);
	assert_int_equal(ca.connected, 1);
	assert_int_equal(sa.connected, 1);
	assert_int_equal(hush_bufferevent_get_error(c), 0);
	bufferevent_free(c);
	bufferevent_free(s);
	evbuffer_free(ca.got);
	evbuffer_free(sa.got);
	env_done(&e);
}

static void bev_speaks_alts_records_to_a_raw_peer(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct app ca;
	app_init(&ca, &e);
	struct bufferevent *c = hush_bev(&e, sv[0], HUSH_SIDE_CLIENT);
	bufferevent_setcb(c, app_read, NULL, app_event, &ca);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	assert_int_equal(bufferevent_write(c, "ping", 4), 0);
	event_base_loop(e.base, EVLOOP_NONBLOCK);
	struct hush_record *peer;
	assert_int_equal(hush_record_new(&peer, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44, 44,
					 HUSH_SIDE_SERVER),
			 0);
	uint8_t frame[64];
	assert_int_equal(read(sv[1], frame, sizeof(frame)), 4 + HUSH_RECORD_OVERHEAD);
	struct hush_iovec pt;
	assert_int_equal(hush_record_open(peer, frame, 4 + HUSH_RECORD_OVERHEAD, &pt), 0);
	assert_memory_equal(pt.base, "ping", 4);
	memcpy(frame + 8, "pong", 4);
	size_t flen;
	assert_int_equal(hush_record_seal(peer, frame, sizeof(frame), 4, &flen), 0);
	assert_int_equal(write(sv[1], frame, flen), (ssize_t)flen);
	ca.stop_at = 4;
	run(&e);
	assert_memory_equal(evbuffer_pullup(ca.got, -1), "pong", 4);
	hush_record_free(peer);
	close(sv[1]);
	bufferevent_free(c);
	evbuffer_free(ca.got);
	env_done(&e);
}

static void bev_eight_mib_round_trip(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct app ca, sa;
	app_init(&ca, &e);
	app_init(&sa, &e);
	sa.echo = 1;
	struct bufferevent *c = hush_bev(&e, sv[0], HUSH_SIDE_CLIENT);
	struct bufferevent *s = hush_bev(&e, sv[1], HUSH_SIDE_SERVER);
	bufferevent_setcb(c, app_read, NULL, app_event, &ca);
	bufferevent_setcb(s, app_read, NULL, app_event, &sa);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	size_t n = 8u << 20;
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 21);
	assert_int_equal(bufferevent_write(c, msg, n), 0);
	ca.stop_at = n;
	run(&e);
	assert_int_equal(evbuffer_get_length(ca.got), n);
	assert_memory_equal(evbuffer_pullup(ca.got, -1), msg, n);
	free(msg);
	bufferevent_free(c);
	bufferevent_free(s);
	evbuffer_free(ca.got);
	evbuffer_free(sa.got);
	env_done(&e);
}

static void bev_stream_cut_inside_record_reports_truncated(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct app ca;
	app_init(&ca, &e);
	struct bufferevent *c = hush_bev(&e, sv[0], HUSH_SIDE_CLIENT);
	bufferevent_setcb(c, app_read, NULL, app_event, &ca);
	bufferevent_enable(c, EV_READ);
	struct hush_record *peer;
	assert_int_equal(hush_record_new(&peer, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44, 44,
					 HUSH_SIDE_SERVER),
			 0);
	uint8_t frame[200];
	size_t flen;
	assert_int_equal(hush_record_seal(peer, frame, sizeof(frame), 100, &flen), 0);
	assert_int_equal(write(sv[1], frame, flen - 5), (ssize_t)flen - 5);
	close(sv[1]);
	run(&e);
	assert_int_equal(ca.error, 1);
	assert_int_equal(hush_bufferevent_get_error(c), HUSH_ETRUNCATED);
	assert_int_equal(evbuffer_get_length(ca.got), 0);
	hush_record_free(peer);
	bufferevent_free(c);
	evbuffer_free(ca.got);
	env_done(&e);
}

static void bev_tampered_record_reports_eauth(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct app ca;
	app_init(&ca, &e);
	struct bufferevent *c = hush_bev(&e, sv[0], HUSH_SIDE_CLIENT);
	bufferevent_setcb(c, app_read, NULL, app_event, &ca);
	bufferevent_enable(c, EV_READ);
	struct hush_record *peer;
	assert_int_equal(hush_record_new(&peer, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44, 44,
					 HUSH_SIDE_SERVER),
			 0);
	uint8_t frame[200];
	size_t flen;
	memset(frame, 0, sizeof(frame));
	assert_int_equal(hush_record_seal(peer, frame, sizeof(frame), 100, &flen), 0);
	frame[50] ^= 0x40;
	assert_int_equal(write(sv[1], frame, flen), (ssize_t)flen);
	run(&e);
	assert_int_equal(ca.error, 1);
	assert_int_equal(hush_bufferevent_get_error(c), HUSH_EAUTH);
	assert_int_equal(evbuffer_get_length(ca.got), 0);
	assert_int_equal(hush_bufferevent_get_error(NULL), HUSH_EINVAL);
	hush_record_free(peer);
	close(sv[1]);
	bufferevent_free(c);
	evbuffer_free(ca.got);
	env_done(&e);
}

static void bev_thousands_idle_hold_zero_pool_buffers(void **state)
{
	(void)state;
	struct env e;
	env_init(&e);
	enum { N = 1000 };
	struct bufferevent **c = calloc(N, sizeof(*c));
	struct bufferevent **s = calloc(N, sizeof(*s));
	struct app *a = calloc(N, sizeof(*a));
	struct app echo;
	app_init(&echo, &e);
	echo.echo = 1;
	for (int i = 0; i < N; i++) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		app_init(&a[i], &e);
		c[i] = hush_bev(&e, sv[0], HUSH_SIDE_CLIENT);
		s[i] = hush_bev(&e, sv[1], HUSH_SIDE_SERVER);
		bufferevent_setcb(c[i], app_read, NULL, app_event, &a[i]);
		bufferevent_setcb(s[i], app_read, NULL, app_event, &echo);
		bufferevent_enable(c[i], EV_READ | EV_WRITE);
		bufferevent_enable(s[i], EV_READ | EV_WRITE);
		assert_int_equal(bufferevent_write(c[i], "x", 1), 0);
	}
	for (int round = 0; round < 200; round++) {
		event_base_loop(e.base, EVLOOP_NONBLOCK);
	}
	struct hush_pool_stats st;
	hush_pool_stats(e.pool, &st);
	assert_int_equal(st.total.in_use, 0);
	assert_true(st.total.acquisitions >= 4 * N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(evbuffer_get_length(a[i].got), 1);
		bufferevent_free(c[i]);
		bufferevent_free(s[i]);
		evbuffer_free(a[i].got);
	}
	evbuffer_free(echo.got);
	free(c);
	free(s);
	free(a);
	env_done(&e);
}

int main(void)
{
	evthread_use_pthreads();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bev_echo_between_two_hush_bufferevents),
		cmocka_unit_test(bev_speaks_alts_records_to_a_raw_peer),
		cmocka_unit_test(bev_eight_mib_round_trip),
		cmocka_unit_test(bev_stream_cut_inside_record_reports_truncated),
		cmocka_unit_test(bev_tampered_record_reports_eauth),
		cmocka_unit_test(bev_thousands_idle_hold_zero_pool_buffers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
