/*
 * The hush socket bufferevent as a drop-in for libevent's own types: the guard on
 * libevent's internal layout, and the semantics libevent programs rely on, as
 * bufferevent_openssl gives them (watermarks, events, timeouts, disabled reading).
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/thread.h>

#include <hush/bufferevent.h>
#include <hush/conn.h>
#include <hush/handshake.h>

#include "bevlib.h"
#include "config.h"
#include "testlib.h"
#include "transport/bufferevent-internal.h"

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

/* ---- The layout guard ---- */

/* The run-time measurement agrees with configure's, made another way (the first
 * allocation of bufferevent_socket_new()). */
static void bev_layout_of_the_running_libevent_matches_the_build(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	hush__bev_layout_expect(0);
	assert_int_equal(hush_bufferevent_check_libevent(e->base), 0);
	assert_int_equal(hush_bufferevent_check_libevent(NULL), 0); /* remembered */
}

/*
 * A hush built against a libevent of another layout, simulated by the expected size:
 * 536 bytes is struct bufferevent_private before Debian's 2.1.12-stable-8+deb12u1 (632
 * after), and a few bytes either way stand for any other change. Every construction is
 * refused with HUSH_ELIBEVENT, the socket stays the caller's, and nothing is allocated.
 */
static void bev_refuses_a_libevent_whose_layout_differs(void **state)
{
	(void)state;
	const size_t sizes[] = {536, HUSH_LIBEVENT_BEV_PRIVATE_SIZE + 8,
				HUSH_LIBEVENT_BEV_PRIVATE_SIZE - 8};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct env e;
		bev_env_init(&e);
		hush__bev_layout_expect(sizes[i]);
		assert_int_equal(hush_bufferevent_check_libevent(e.base), HUSH_ELIBEVENT);
		/* The verdict is kept: no base is needed to ask again. */
		assert_int_equal(hush_bufferevent_check_libevent(NULL), HUSH_ELIBEVENT);
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		struct hush_bufferevent_config cfg;
		hush_bufferevent_config_init(&cfg);
		cfg.key = BEV_KEY44;
		cfg.key_len = sizeof(BEV_KEY44);
		cfg.loop = e.loop;
		assert_null(
		    hush_bufferevent_socket_new(e.base, sv[0], &cfg, BEV_OPT_CLOSE_ON_FREE));
		assert_null(hush_bufferevent_socket_new(e.base, -1, &cfg, 0));
		assert_true(fd_open(sv[0]));
		close(sv[0]);
		close(sv[1]);
		env_done(&e);
	}
	hush__bev_layout_expect(0);
	struct env e;
	bev_env_init(&e);
	assert_int_equal(hush_bufferevent_check_libevent(e.base), 0);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bufferevent *b = bev_raw_socket(&e, sv[0], HUSH_SIDE_CLIENT, 0);
	bufferevent_free(b);
	close(sv[1]);
	env_done(&e);
}

/* ---- The read high watermark ---- */

struct wm_app {
	struct event_base *base;
	struct evbuffer *got;
	size_t high, total, max_seen;
	unsigned calls;
	int events;
};

/* Checks the input against the watermark, then drains half of it or all, in turn. */
static void wm_read(struct bufferevent *bev, void *arg)
{
	struct wm_app *a = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);
	if (n > a->max_seen) {
		a->max_seen = n;
	}
	size_t take = a->calls++ % 2 == 0 ? n / 2 : n;
	assert_int_equal(evbuffer_remove_buffer(in, a->got, take), (int)take);
	if (evbuffer_get_length(a->got) + evbuffer_get_length(in) == a->total) {
		event_base_loopbreak(a->base);
	}
}

static void wm_event(struct bufferevent *bev, short what, void *arg)
{
	struct wm_app *a = arg;
	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		a->events++;
		event_base_loopbreak(a->base);
	}
}

/*
 * The input never holds more than the read high watermark, as with bufferevent_openssl:
 * the rest of a 16 KiB record waits in hush and enters as the application drains, for
 * marks inside a record (copied and by-reference parts) and across records.
 */
static void bev_read_high_watermark_is_never_exceeded(void **state)
{
	(void)state;
	const size_t highs[] = {1000, 5000, 16384 + 100};
	for (size_t i = 0; i < sizeof(highs) / sizeof(highs[0]); i++) {
		struct env e;
		bev_env_init(&e);
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		struct bufferevent *c = bev_raw_socket(&e, sv[0], HUSH_SIDE_CLIENT, 0);
		struct bufferevent *s = bev_raw_socket(&e, sv[1], HUSH_SIDE_SERVER, 0);
		struct wm_app a = {.base = e.base, .got = evbuffer_new(), .high = highs[i]};
		a.total = 200000;
		uint8_t *msg = malloc(a.total);
		testlib_fill(msg, a.total, 77);
		bufferevent_setwatermark(c, EV_READ, 0, a.high);
		bufferevent_setcb(c, wm_read, NULL, wm_event, &a);
		bufferevent_enable(c, EV_READ | EV_WRITE);
		bufferevent_enable(s, EV_WRITE);
		assert_int_equal(bufferevent_write(s, msg, a.total), 0);
		run(&e);
		struct evbuffer *in = bufferevent_get_input(c);
		evbuffer_add_buffer(a.got, in);
		assert_int_equal(a.events, 0);
		assert_int_equal(evbuffer_get_length(a.got), a.total);
		assert_memory_equal(evbuffer_pullup(a.got, -1), msg, a.total);
		assert_int_equal(a.max_seen, a.high);
		free(msg);
		bufferevent_free(c);
		bufferevent_free(s);
		evbuffer_free(a.got);
		env_done(&e);
	}
}

/* ---- Handshakes and events ---- */

static const uint8_t PSK[HUSH_KEY_SIZE] = {0x70, 0x73, 0x6b, 0x31};

/* Socket bufferevents keyed by an NNpsk0 handshake, and what their callbacks saw. */
struct peer {
	struct event_base *base;
	struct evbuffer *got;
	int connected, eof, error, timeout, other;
	int stop_on; /* BEV_EVENT_* bits that break the loop */
	struct bufferevent *hold_at_connected; /* disabled when this one connects */
};

static void peer_read(struct bufferevent *bev, void *arg)
{
	struct peer *p = arg;
	evbuffer_add_buffer(p->got, bufferevent_get_input(bev));
}

static void peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct peer *p = arg;
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		p->connected++;
		if (p->hold_at_connected != NULL) {
			bufferevent_disable(p->hold_at_connected, EV_READ | EV_WRITE);
		}
	} else if (what & BEV_EVENT_TIMEOUT) {
		p->timeout++;
	} else if (what & BEV_EVENT_ERROR) {
		p->error++;
	} else if (what & BEV_EVENT_EOF) {
		p->eof++;
	} else {
		p->other++;
	}
	if (what & p->stop_on) {
		event_base_loopbreak(p->base);
	}
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static struct bufferevent *psk_bev(struct env *e, struct hush_handshake_config *hc, int fd,
				   enum hush_side side, struct peer *p)
{
	hush_handshake_config_init(hc);
	hc->protocol = HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256;
	hc->psk = PSK;
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = e->loop;
	cfg.handshake = hc;
	cfg.side = side;
	struct bufferevent *b = hush_bufferevent_socket_new(e->base, fd, &cfg, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(b);
	memset(p, 0, sizeof(*p));
	p->base = e->base;
	p->got = evbuffer_new();
	bufferevent_setcb(b, peer_read, NULL, peer_event, p);
	return b;
}

/*
 * A bufferevent disabled before the loop runs takes no part in its handshake (libevent's
 * regress_ssl "socketpair_timeout"): its peer connects to nothing and times out, and
 * once enabled the handshake runs and the data written meanwhile arrives.
 */
static void bev_disabled_does_not_advance_its_handshake(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct hush_handshake_config hc, hs;
	struct peer pc, ps;
	struct bufferevent *c = psk_bev(e, &hc, sv[0], HUSH_SIDE_CLIENT, &pc);
	struct bufferevent *s = psk_bev(e, &hs, sv[1], HUSH_SIDE_SERVER, &ps);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_disable(s, EV_READ | EV_WRITE);
	struct timeval t = {0, 300000};
	bufferevent_set_timeouts(c, &t, &t);
	assert_int_equal(bufferevent_write(c, "1\n", 2), 0);
	pc.stop_on = BEV_EVENT_TIMEOUT;
	run(e);
	assert_true(pc.timeout >= 1);
	assert_int_equal(pc.connected, 0);
	assert_int_equal(ps.connected, 0);
	assert_int_equal(pc.error + ps.error + ps.timeout, 0);

	/* Enabled, the server answers; the client, whose timeouts are cleared and which is
	 * enabled again, connects and its bytes arrive. */
	bufferevent_set_timeouts(c, NULL, NULL);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	struct timeval guard = {10, 0};
	struct event *t10 = evtimer_new(e->base, on_guard, NULL);
	evtimer_add(t10, &guard);
	while ((ps.connected == 0 || evbuffer_get_length(ps.got) < 2) &&
	       evtimer_pending(t10, NULL)) {
		assert_int_equal(event_base_loop(e->base, EVLOOP_ONCE), 0);
	}
	event_free(t10);
	assert_int_equal(pc.connected, 1);
	assert_int_equal(ps.connected, 1);
	assert_memory_equal(evbuffer_pullup(ps.got, -1), "1\n", 2);
	bufferevent_free(c);
	bufferevent_free(s);
	evbuffer_free(pc.got);
	evbuffer_free(ps.got);
}

static bool peer_connected(void *arg)
{
	const struct peer *p = arg;
	return p->connected > 0;
}

/*
 * A bufferevent disabled while its handshake runs holds it: the NNpsk0 server, disabled
 * when the client connects (having read the server's message 2), never reads the
 * client's confirmation record (it waits in the socket) and does not connect; enabled
 * again, its handshake goes on and it connects.
 */
static void bev_disabled_during_its_handshake_holds_it_until_enabled(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct hush_handshake_config hc, hs;
	struct peer pc, ps;
	struct bufferevent *c = psk_bev(e, &hc, sv[0], HUSH_SIDE_CLIENT, &pc);
	struct bufferevent *s = psk_bev(e, &hs, sv[1], HUSH_SIDE_SERVER, &ps);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	pc.hold_at_connected = s;
	run_for_ms(e, 200);
	int waiting = 0;
	assert_int_equal(ioctl(sv[1], FIONREAD, &waiting), 0);
	assert_true(waiting > 0); /* the confirmation record, unread */
	assert_int_equal(pc.connected, 1);
	assert_int_equal(ps.connected, 0);
	assert_int_equal(pc.error + ps.error, 0);

	bufferevent_enable(s, EV_READ | EV_WRITE);
	run_until(e, 10000, peer_connected, &ps);
	assert_int_equal(ps.connected, 1);
	bufferevent_free(c);
	bufferevent_free(s);
	evbuffer_free(pc.got);
	evbuffer_free(ps.got);
}

/* ---- Timeouts with no socket yet ---- */

struct timeouts_seen {
	struct event_base *base;
	short events[4];
	int n;
};

static void timeouts_event(struct bufferevent *bev, short what, void *arg)
{
	struct timeouts_seen *t = arg;
	(void)bev;
	if (t->n < 4) {
		t->events[t->n] = what;
	}
	if (++t->n == 2) {
		event_base_loopbreak(t->base);
	}
}

/* Runs bev, with no socket, under a 100 ms read and a 200 ms write timeout. */
static void no_socket_timeouts(struct env *e, struct bufferevent *bev, struct timeouts_seen *t)
{
	memset(t, 0, sizeof(*t));
	t->base = e->base;
	struct timeval r = {0, 100000}, w = {0, 200000};
	bufferevent_setcb(bev, NULL, NULL, timeouts_event, t);
	bufferevent_set_timeouts(bev, &r, &w);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	run(e);
	bufferevent_free(bev);
}

/* With no socket yet, the timeouts fire as on libevent's socket type: reading, then
 * writing, each disabled before its event. */
static void bev_timeouts_without_a_socket_fire_as_libevents(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct timeouts_seen plain, hush;
	no_socket_timeouts(e, bufferevent_socket_new(e->base, -1, 0), &plain);
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.key = BEV_KEY44;
	cfg.key_len = sizeof(BEV_KEY44);
	cfg.loop = e->loop;
	struct bufferevent *h = hush_bufferevent_socket_new(e->base, -1, &cfg, 0);
	assert_non_null(h);
	no_socket_timeouts(e, h, &hush);
	assert_int_equal(plain.n, 2);
	assert_int_equal(plain.events[0], BEV_EVENT_TIMEOUT | BEV_EVENT_READING);
	assert_int_equal(plain.events[1], BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING);
	assert_int_equal(hush.n, plain.n);
	assert_int_equal(hush.events[0], plain.events[0]);
	assert_int_equal(hush.events[1], plain.events[1]);
}

/* ---- Raw keys ---- */

/*
 * A raw key keys one connection in the process: a second hush bufferevent with the same
 * key, protocol and side is refused (HUSH_EKEYREUSE from the configuration check), in
 * either flavour and even after the first is gone, since the same key twice repeats
 * AES-GCM nonces. The other side of the same key is the connection's other end.
 */
static void bev_raw_key_keys_one_connection_only(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.key = BEV_KEY44;
	cfg.key_len = sizeof(BEV_KEY44);
	cfg.loop = e->loop;
	cfg.pool = e->pool;
	assert_int_equal(hush_bufferevent_config_check(&cfg), 0);
	struct bufferevent *first = hush_bufferevent_socket_new(e->base, -1, &cfg, 0);
	assert_non_null(first);
	assert_int_equal(hush_bufferevent_config_check(&cfg), HUSH_EKEYREUSE);
	assert_null(hush_bufferevent_socket_new(e->base, -1, &cfg, 0));
	struct bufferevent *pair[2];
	assert_int_equal(bufferevent_pair_new(e->base, BEV_OPT_CLOSE_ON_FREE, pair), 0);
	assert_null(hush_bufferevent_filter_new(pair[0], &cfg, BEV_OPT_CLOSE_ON_FREE));
	bufferevent_free(first);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	assert_null(hush_bufferevent_socket_new(e->base, -1, &cfg, 0));

	/* The other end of the connection holds the same key for the other side. */
	cfg.side = HUSH_SIDE_SERVER;
	struct bufferevent *other = hush_bufferevent_filter_new(pair[0], &cfg, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(other);
	assert_null(hush_bufferevent_socket_new(e->base, -1, &cfg, 0));

	/* A constructor that fails for another reason leaves the key unspent. */
	bev_new_key();
	cfg.side = HUSH_SIDE_CLIENT;
	hush__bev_layout_expect(536);
	assert_null(hush_bufferevent_socket_new(e->base, -1, &cfg, 0));
	hush__bev_layout_expect(0);
	assert_int_equal(hush_bufferevent_config_check(&cfg), 0);
	bufferevent_free(other);
	bufferevent_free(pair[1]);
}

/* ---- Freeing ---- */

static void read_nothing(struct bufferevent *bev, void *arg)
{
	(void)bev;
	(void)arg;
}

/*
 * hush_loop_free() right after the last bufferevent_free(), with no turn of the loop
 * between: nothing of the bufferevents touches the loop afterwards, though libevent
 * finalizes them later (deferred callbacks were pending, and records were held back by
 * the read high watermark). Run under valgrind or ASan to see the difference.
 */
static void bev_loop_free_right_after_the_last_free_is_safe(void **state)
{
	(void)state;
	struct env e;
	bev_env_init(&e);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.key = BEV_KEY44;
	cfg.key_len = sizeof(BEV_KEY44);
	cfg.loop = e.loop;
	int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS | BEV_OPT_THREADSAFE;
	cfg.side = HUSH_SIDE_CLIENT;
	struct bufferevent *c = hush_bufferevent_socket_new(e.base, sv[0], &cfg, opts);
	cfg.side = HUSH_SIDE_SERVER;
	struct bufferevent *s = hush_bufferevent_socket_new(e.base, sv[1], &cfg, opts);
	assert_non_null(c);
	assert_non_null(s);
	bufferevent_setcb(c, NULL, NULL, NULL, NULL);
	bufferevent_setwatermark(c, EV_READ, 0, 1000);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_WRITE);
	uint8_t msg[40000];
	memset(msg, 0x42, sizeof(msg));
	assert_int_equal(bufferevent_write(s, msg, sizeof(msg)), 0);
	for (int i = 0; i < 20; i++) {
		event_base_loop(e.base, EVLOOP_NONBLOCK);
	}
	assert_int_equal(evbuffer_get_length(bufferevent_get_input(c)), 1000);
	/* A deferred read callback holds a reference when the application lets go. */
	bufferevent_setcb(c, read_nothing, NULL, NULL, NULL);
	bufferevent_trigger(c, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	bufferevent_free(c);
	bufferevent_free(s);
	hush_loop_free(e.loop);
	event_base_loop(e.base, EVLOOP_NONBLOCK);
	struct hush_pool_stats st;
	hush_pool_stats(e.pool, &st);
	assert_int_equal(st.total.in_use, 0);
	assert_int_equal(event_base_get_num_events(e.base, EVENT_BASE_COUNT_ADDED), 0);
	event_base_free(e.base);
	hush_pool_free(e.pool);
}

/* hush's allocator for these tests: freed memory is overwritten, so that a use after
 * free reads garbage and fails the test without valgrind or ASan. */
static void *poison_alloc(void *ctx, size_t size)
{
	(void)ctx;
	return malloc(size);
}

static void poison_release(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	memset(ptr, 0xa5, size);
	free(ptr);
}

int main(void)
{
	evthread_use_pthreads();
	const struct hush_allocator poison = {poison_alloc, poison_release, NULL};
	hush_set_allocator(&poison);
	const struct CMUnitTest tests[] = {
	    BEV_FX_TEST(bev_layout_of_the_running_libevent_matches_the_build),
	    cmocka_unit_test(bev_refuses_a_libevent_whose_layout_differs),
	    cmocka_unit_test(bev_read_high_watermark_is_never_exceeded),
	    BEV_FX_TEST(bev_disabled_does_not_advance_its_handshake),
	    BEV_FX_TEST(bev_disabled_during_its_handshake_holds_it_until_enabled),
	    BEV_FX_TEST(bev_timeouts_without_a_socket_fire_as_libevents),
	    BEV_FX_TEST(bev_raw_key_keys_one_connection_only),
	    cmocka_unit_test(bev_loop_free_right_after_the_last_free_is_safe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
