/*
 * Tests for hush bufferevents of the socket flavour (src/transport/bufferevent-sock.c):
 * plain libevent programs, libevent's HTTP stack, a raw ALTS peer, watermarks,
 * truncation and tampering.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/thread.h>

#include <hush/bufferevent.h>
#include <hush/conn.h>
#include <hush/handshake.h>
#include <hush/keys.h>

#include "bevlib.h"
#include "testlib.h"
#include "common/common-internal.h"


/* A client and an echoing server over a socketpair with raw keys, each with the
 * fixture's application as its callbacks, both enabled. */
static void echo_pair(struct bev_fx *fx, struct bufferevent **c, struct bufferevent **s)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fx->s.echo = 1;
	*c = bev_raw_socket(&fx->e, sv[0], HUSH_SIDE_CLIENT, 0);
	*s = bev_raw_socket(&fx->e, sv[1], HUSH_SIDE_SERVER, 0);
	bufferevent_setcb(*c, bev_app_read, NULL, bev_app_event, &fx->c);
	bufferevent_setcb(*s, bev_app_read, NULL, bev_app_event, &fx->s);
	bufferevent_enable(*c, EV_READ | EV_WRITE);
	bufferevent_enable(*s, EV_READ | EV_WRITE);
}

static void bev_echo_between_two_hush_bufferevents(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct bev_app *ca = &fx->c;
	struct bufferevent *c, *s;
	echo_pair(fx, &c, &s);
	assert_int_equal(bufferevent_write(c, "hello, hush", 11), 0);
	ca->stop_at = 11;
	run(e);
	assert_int_equal(evbuffer_get_length(ca->got), 11);
	assert_memory_equal(evbuffer_pullup(ca->got, -1), "hello, hush", 11);
	/* Raw keys start the connection open: no CONNECTED, as with bufferevent_openssl. */
	assert_int_equal(ca->connected, 0);
	assert_int_equal(fx->s.connected, 0);
	assert_int_equal(hush_bufferevent_get_error(c), 0);
	uint8_t peer[HUSH_KEY_SIZE];
	assert_int_equal(hush_bufferevent_peer_key(c, peer), HUSH_ESTATE); /* raw keys */
	assert_int_equal(hush_bufferevent_peer_key(NULL, peer), HUSH_EINVAL);
	bufferevent_free(c);
	bufferevent_free(s);
}

/* ---- Writing enabled later ---- */

static void two_raw_sockets(struct bev_fx *fx)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	bev_app_attach(&fx->c, bev_raw_socket(&fx->e, sv[0], HUSH_SIDE_CLIENT, 0));
	bev_app_attach(&fx->s, bev_raw_socket(&fx->e, sv[1], HUSH_SIDE_SERVER, 0));
}

static void bev_written_while_disabled_is_sent_when_enabled(void **state)
{
	struct bev_fx *fx = *state;
	two_raw_sockets(fx);
	bev_check_write_enabled_later(&fx->e, &fx->c, &fx->s, 5);
}

/* 32 KiB, two of libevent's 16 KiB single writes, make the connection send at once,
 * inside bufferevent_enable(): the write callback still waits for the loop. */
static void bev_much_written_while_disabled_is_sent_when_enabled(void **state)
{
	struct bev_fx *fx = *state;
	two_raw_sockets(fx);
	bev_check_write_enabled_later(&fx->e, &fx->c, &fx->s, 32768);
}

/* libevent's regress_ssl ping-pong (ssl/bufferevent_socketpair). */
static void bev_ping_pong_switching_reading_and_writing_reaches_the_end(void **state)
{
	struct bev_fx *fx = *state;
	two_raw_sockets(fx);
	assert_int_equal(bev_ping_pong(&fx->e, fx->c.bev, fx->s.bev, 100), 100);
}

static void bev_speaks_alts_records_to_a_raw_peer(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bev_app *ca = &fx->c;
	struct bufferevent *c = bev_app_use(ca, bev_raw_socket(e, sv[0], HUSH_SIDE_CLIENT, 0));
	assert_int_equal(bufferevent_write(c, "ping", 4), 0);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	struct hush_record *peer = bev_raw_peer();
	uint8_t frame[64];
	assert_int_equal(read(sv[1], frame, sizeof(frame)), 4 + HUSH_RECORD_OVERHEAD);
	struct hush_iovec pt;
	assert_int_equal(hush_record_open(peer, frame, 4 + HUSH_RECORD_OVERHEAD, &pt), 0);
	assert_memory_equal(pt.base, "ping", 4);
	memcpy(frame + 8, "pong", 4);
	size_t flen;
	assert_int_equal(hush_record_seal(peer, frame, sizeof(frame), 4, &flen), 0);
	assert_int_equal(write(sv[1], frame, flen), (ssize_t)flen);
	ca->stop_at = 4;
	run(e);
	assert_memory_equal(evbuffer_pullup(ca->got, -1), "pong", 4);
	hush_record_free(peer);
	close(sv[1]);
	bufferevent_free(c);
}

static void bev_eight_mib_round_trip(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct bev_app *ca = &fx->c;
	struct bufferevent *c, *s;
	echo_pair(fx, &c, &s);
	size_t n = 8u << 20;
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 21);
	assert_int_equal(bufferevent_write(c, msg, n), 0);
	ca->stop_at = n;
	run(e);
	assert_int_equal(evbuffer_get_length(ca->got), n);
	assert_memory_equal(evbuffer_pullup(ca->got, -1), msg, n);
	free(msg);
	bufferevent_free(c);
	bufferevent_free(s);
}

static void bev_stream_cut_inside_record_reports_truncated(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bev_app *ca = &fx->c;
	struct bufferevent *c = bev_app_use(ca, bev_raw_socket(e, sv[0], HUSH_SIDE_CLIENT, 0));
	struct hush_record *peer = bev_raw_peer();
	uint8_t frame[200];
	size_t flen;
	assert_int_equal(hush_record_seal(peer, frame, sizeof(frame), 100, &flen), 0);
	assert_int_equal(write(sv[1], frame, flen - 5), (ssize_t)flen - 5);
	close(sv[1]);
	run(e);
	assert_int_equal(ca->error, 1);
	assert_int_equal(hush_bufferevent_get_error(c), HUSH_ETRUNCATED);
	assert_int_equal(evbuffer_get_length(ca->got), 0);
	hush_record_free(peer);
	bufferevent_free(c);
}

static void bev_tampered_record_reports_eauth(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bev_app *ca = &fx->c;
	struct bufferevent *c = bev_app_use(ca, bev_raw_socket(e, sv[0], HUSH_SIDE_CLIENT, 0));
	struct hush_record *peer = bev_raw_peer();
	uint8_t frame[200];
	size_t flen;
	memset(frame, 0, sizeof(frame));
	assert_int_equal(hush_record_seal(peer, frame, sizeof(frame), 100, &flen), 0);
	frame[50] ^= 0x40;
	assert_int_equal(write(sv[1], frame, flen), (ssize_t)flen);
	run(e);
	assert_int_equal(ca->error, 1);
	assert_int_equal(hush_bufferevent_get_error(c), HUSH_EAUTH);
	assert_int_equal(evbuffer_get_length(ca->got), 0);
	assert_int_equal(hush_bufferevent_get_error(NULL), HUSH_EINVAL);
	hush_record_free(peer);
	close(sv[1]);
	bufferevent_free(c);
}

static void bev_thousands_idle_hold_zero_pool_buffers(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	/* Two descriptors a pair; the test raises its own open-files limit. */
	const int N = testlib_fd_room("bev_thousands_idle", 1000, 2, 64);
	assert_true(N > 0);
	struct bufferevent **c = calloc(N, sizeof(*c));
	struct bufferevent **s = calloc(N, sizeof(*s));
	struct bev_app *a = calloc(N, sizeof(*a));
	struct bev_app *echo = &fx->c;
	echo->echo = 1;
	for (int i = 0; i < N; i++) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		bev_app_init(&a[i], e);
		bev_new_key();
		c[i] = bev_raw_socket(e, sv[0], HUSH_SIDE_CLIENT, 0);
		s[i] = bev_raw_socket(e, sv[1], HUSH_SIDE_SERVER, 0);
		bufferevent_setcb(c[i], bev_app_read, NULL, bev_app_event, &a[i]);
		bufferevent_setcb(s[i], bev_app_read, NULL, bev_app_event, echo);
		bufferevent_enable(c[i], EV_READ | EV_WRITE);
		bufferevent_enable(s[i], EV_READ | EV_WRITE);
		assert_int_equal(bufferevent_write(c[i], "x", 1), 0);
	}
	for (int round = 0; round < 200; round++) {
		event_base_loop(e->base, EVLOOP_NONBLOCK);
	}
	struct hush_pool_stats st;
	hush_pool_stats(e->pool, &st);
	assert_int_equal(st.total.in_use, 0);
	assert_true(st.total.acquisitions >= 4 * (uint64_t)N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(evbuffer_get_length(a[i].got), 1);
		bufferevent_free(c[i]);
		bufferevent_free(s[i]);
		evbuffer_free(a[i].got);
	}
	free(c);
	free(s);
	free(a);
}


/* ---- Keyed by a hush handshake ---- */

static struct bufferevent *hs_bev(struct env *e, struct bev_hs *h, int fd, enum hush_side side,
				  int options)
{
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = e->loop;
	cfg.handshake = side == HUSH_SIDE_CLIENT ? &h->c : &h->s;
	cfg.side = side;
	struct bufferevent *b = hush_bufferevent_socket_new(e->base, fd, &cfg, options);
	assert_non_null(b);
	return b;
}

/* Writes made before the handshake finished wait for it, then go out. */
static void bev_handshake_then_echo_with_threadsafe_deferred_callbacks(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct bev_hs h;
	bev_hs_init(&h, true);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bev_app *ca = &fx->c, *sa = &fx->s;
	sa->echo = 1;
	int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_THREADSAFE | BEV_OPT_DEFER_CALLBACKS;
	struct bufferevent *c = hs_bev(e, &h, sv[0], HUSH_SIDE_CLIENT, opts);
	struct bufferevent *s = hs_bev(e, &h, sv[1], HUSH_SIDE_SERVER, opts);
	bufferevent_setcb(c, bev_app_read, NULL, bev_app_event, ca);
	bufferevent_setcb(s, bev_app_read, NULL, bev_app_event, sa);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	size_t n = 300000;
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 5);
	assert_int_equal(bufferevent_write(c, msg, n), 0);
	ca->stop_at = n;
	run(e);
	assert_int_equal(ca->connected, 1);
	assert_int_equal(sa->connected, 1);
	assert_int_equal(evbuffer_get_length(ca->got), n);
	assert_memory_equal(evbuffer_pullup(ca->got, -1), msg, n);
	/* Each end knows the other's verified static key. */
	uint8_t peer[HUSH_KEY_SIZE];
	assert_int_equal(hush_bufferevent_peer_key(c, peer), 0);
	assert_memory_equal(peer, h.pub_s, HUSH_KEY_SIZE);
	assert_int_equal(hush_bufferevent_peer_key(s, peer), 0);
	assert_memory_equal(peer, h.pub_c, HUSH_KEY_SIZE);
	free(msg);
	bufferevent_free(c);
	bufferevent_free(s);
	bev_hs_done(&h);
}

/* An application that drains its input only to below the read high watermark: records
 * hush had already read are delivered at once, though the peer sends nothing more. */
struct wm_app {
	struct evbuffer *got;
	size_t want;
	size_t max_seen;
	struct event_base *base;
};

static void wm_read(struct bufferevent *bev, void *arg)
{
	struct wm_app *a = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in);
	if (len > a->max_seen) {
		a->max_seen = len;
	}
	evbuffer_remove_buffer(in, a->got, len);
	if (evbuffer_get_length(a->got) >= a->want) {
		event_base_loopbreak(a->base);
	}
}

static void wm_event(struct bufferevent *bev, short what, void *arg)
{
	struct wm_app *a = arg;
	(void)bev;
	assert_false(what & (BEV_EVENT_ERROR | BEV_EVENT_EOF));
	if (what & BEV_EVENT_CONNECTED) {
		event_base_loopbreak(a->base);
	}
}

static void bev_read_high_watermark_never_stalls(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct bev_hs h;
	bev_hs_init(&h, false);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bev_app *sa = &fx->c;
	/* 28 KiB fits one socket read: once reading stops at the watermark, every record
	 * left is in hush's buffer and the socket holds nothing to wake it. */
	struct wm_app ca = {evbuffer_new(), 28 * 1024, 0, e->base};
	enum { REC = 1024, WM = 4096 };
	/* Deferred callbacks: the application drains after reading stopped, from the
	 * loop, not from inside hush's delivery. */
	struct bufferevent *c = hs_bev(e, &h, sv[0], HUSH_SIDE_CLIENT,
				       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	struct bufferevent *s = hs_bev(e, &h, sv[1], HUSH_SIDE_SERVER, BEV_OPT_CLOSE_ON_FREE);
	/* The application is called with 4 KiB at least, and reading stops there. */
	bufferevent_setwatermark(c, EV_READ, WM, WM);
	bufferevent_setcb(c, wm_read, NULL, wm_event, &ca);
	bufferevent_setcb(s, bev_app_read, NULL, bev_app_event, sa);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	uint8_t *msg = malloc(ca.want);
	testlib_fill(msg, ca.want, 9);
	run(e); /* until CONNECTED: writes made before would be coalesced */
	/* In NNpsk0 the server is connected last, on the client's confirmation record. */
	for (int i = 0; i < 1000 && sa->connected == 0; i++) {
		event_base_loop(e->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	assert_int_equal(sa->connected, 1);
	/* Everything at once, in 1 KiB records: then the peer falls silent. */
	for (size_t off = 0; off < ca.want; off += REC) {
		assert_int_equal(bufferevent_write(s, msg + off, REC), 0);
		assert_int_equal(bufferevent_flush(s, EV_WRITE, BEV_FLUSH) >= 0, 1);
	}
	run(e);
	assert_int_equal(evbuffer_get_length(ca.got), ca.want);
	assert_memory_equal(evbuffer_pullup(ca.got, -1), msg, ca.want);
	/* The watermark held: reading stopped at the record that reached it. */
	assert_int_equal(ca.max_seen, WM);
	free(msg);
	bufferevent_free(c);
	bufferevent_free(s);
	evbuffer_free(ca.got);
	bev_hs_done(&h);
}

/* Freed from inside its own callbacks: on CONNECTED, on data, on EOF. */
struct freeing_app {
	int when; /* 0: CONNECTED, 1: read, 2: EOF */
	int freed;
	struct event_base *base;
};

static void freeing_read(struct bufferevent *bev, void *arg)
{
	struct freeing_app *a = arg;
	if (a->when == 1) {
		bufferevent_free(bev);
		a->freed = 1;
		event_base_loopbreak(a->base);
	}
}

static void freeing_event(struct bufferevent *bev, short what, void *arg)
{
	struct freeing_app *a = arg;
	if ((a->when == 0 && (what & BEV_EVENT_CONNECTED)) ||
	    (a->when == 2 && (what & BEV_EVENT_EOF))) {
		bufferevent_free(bev);
		a->freed = 1;
		event_base_loopbreak(a->base);
	}
}

static void bev_freed_from_its_own_callbacks(void **state)
{
	(void)state;
	for (int when = 0; when < 3; when++) {
		struct env e;
		bev_env_init(&e);
		struct bev_hs h;
		bev_hs_init(&h, false);
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		struct freeing_app fa = {when, 0, e.base};
		struct bev_app sa;
		bev_app_init(&sa, &e);
		struct bufferevent *c =
			hs_bev(&e, &h, sv[0], HUSH_SIDE_CLIENT, BEV_OPT_CLOSE_ON_FREE);
		struct bufferevent *s =
			hs_bev(&e, &h, sv[1], HUSH_SIDE_SERVER, BEV_OPT_CLOSE_ON_FREE);
		bufferevent_setcb(c, freeing_read, NULL, freeing_event, &fa);
		bufferevent_setcb(s, bev_app_read, NULL, bev_app_event, &sa);
		bufferevent_enable(c, EV_READ | EV_WRITE);
		bufferevent_enable(s, EV_READ | EV_WRITE);
		/* Freed at CONNECTED, the client reads nothing: the server, connected only
		 * on the client's NNpsk0 confirmation, writes nothing (its bytes would meet
		 * a closed socket, which is not what this checks). */
		if (when != 0) {
			assert_int_equal(bufferevent_write(s, "some data", 9), 0);
		}
		if (when == 2) {
			assert_int_equal(hush_bufferevent_shutdown(s), 0);
		}
		run(&e);
		assert_int_equal(fa.freed, 1);
		/* The server sees the end: a clean one (the client sent its close record
		 * when freed) or, freed on EOF, after its own shutdown. */
		if (when != 2) {
			run(&e);
			assert_int_equal(sa.eof, 1);
			assert_int_equal(sa.error, 0);
		}
		bufferevent_free(s);
		evbuffer_free(sa.got);
		bev_hs_done(&h);
		env_done(&e);
	}
}

/* The graceful close: data, then the close record, then HUSH_BEV_EVENT_SHUTDOWN; the
 * peer sees every byte and a clean EOF. */
struct shut_app {
	struct bev_app a;
	int shutdown_done;
};

static void shut_event(struct bufferevent *bev, short what, void *arg)
{
	struct shut_app *s = arg;
	if (what == HUSH_BEV_EVENT_SHUTDOWN) {
		s->shutdown_done++;
		return;
	}
	bev_app_event(bev, what, &s->a);
}

/* Through hush_bufferevent_shutdown(), or libevent's bufferevent_flush(BEV_FINISHED). */
static void graceful_close(void **state, bool by_flush)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct bev_hs h;
	bev_hs_init(&h, false);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct shut_app ca;
	struct bev_app *sa = &fx->c;
	bev_app_init(&ca.a, e);
	ca.shutdown_done = 0;
	struct bufferevent *c = hs_bev(e, &h, sv[0], HUSH_SIDE_CLIENT, BEV_OPT_CLOSE_ON_FREE);
	struct bufferevent *s = hs_bev(e, &h, sv[1], HUSH_SIDE_SERVER, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c, bev_app_read, NULL, shut_event, &ca);
	bufferevent_setcb(s, bev_app_read, NULL, bev_app_event, sa);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	size_t n = 1u << 20;
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 3);
	assert_int_equal(bufferevent_write(c, msg, n), 0);
	/* Called before the handshake finished: it waits for it. Twice does nothing more. */
	for (int i = 0; i < 2; i++) {
		if (by_flush) {
			assert_int_equal(bufferevent_flush(c, EV_WRITE, BEV_FINISHED), 0);
		} else {
			assert_int_equal(hush_bufferevent_shutdown(c), 0);
		}
	}
	run(e);
	assert_int_equal(sa->eof, 1);
	assert_int_equal(sa->error, 0);
	assert_int_equal(evbuffer_get_length(sa->got), n);
	assert_memory_equal(evbuffer_pullup(sa->got, -1), msg, n);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	/* libevent's types tell the writer nothing of a BEV_FINISHED flush. */
	assert_int_equal(ca.shutdown_done, by_flush ? 0 : 1);
	/* Reading goes on after the shutdown. */
	assert_int_equal(bufferevent_write(s, "late", 4), 0);
	ca.a.stop_at = 4;
	run(e);
	assert_int_equal(evbuffer_get_length(ca.a.got), 4);
	struct bufferevent *plain = bufferevent_socket_new(e->base, -1, 0);
	assert_int_equal(hush_bufferevent_shutdown(plain), HUSH_EINVAL);
	assert_int_equal(hush_bufferevent_get_error(plain), HUSH_EINVAL);
	bufferevent_free(plain);
	free(msg);
	bufferevent_free(c);
	bufferevent_free(s);
	evbuffer_free(ca.a.got);
	bev_hs_done(&h);
}

static void bev_graceful_shutdown_delivers_everything_then_a_clean_eof(void **state)
{
	graceful_close(state, false);
}

static void bev_flush_finished_is_a_graceful_shutdown(void **state)
{
	graceful_close(state, true);
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) != -1;
}

/* A handshake that fails: ERROR with the hush code; the bufferevent stays the
 * application's to free, and the socket is closed only with BEV_OPT_CLOSE_ON_FREE. */
static void bev_handshake_failure_reports_epeer_and_keeps_ownership_rules(void **state)
{
	(void)state;
	for (int close_on_free = 0; close_on_free < 2; close_on_free++) {
		struct env e;
		bev_env_init(&e);
		struct bev_hs h;
		bev_hs_init(&h, true);
		uint8_t stranger[HUSH_KEY_SIZE];
		memset(stranger, 0x33, sizeof(stranger));
		h.c.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])stranger;
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		struct bev_app ca, sa;
		bev_app_init(&ca, &e);
		bev_app_init(&sa, &e);
		int opts = close_on_free ? BEV_OPT_CLOSE_ON_FREE : 0;
		struct bufferevent *c = hs_bev(&e, &h, sv[0], HUSH_SIDE_CLIENT, opts);
		struct bufferevent *s = hs_bev(&e, &h, sv[1], HUSH_SIDE_SERVER, opts);
		bufferevent_setcb(c, bev_app_read, NULL, bev_app_event, &ca);
		bufferevent_setcb(s, bev_app_read, NULL, bev_app_event, &sa);
		bufferevent_enable(c, EV_READ | EV_WRITE);
		bufferevent_enable(s, EV_READ | EV_WRITE);
		assert_int_equal(bufferevent_write(c, "never sent", 10), 0);
		run(&e);
		assert_int_equal(ca.error, 1);
		assert_int_equal(ca.connected, 0);
		assert_int_equal(hush_bufferevent_get_error(c), HUSH_EPEER);
		/* The failed one holds no connection state: no pool buffer is left. */
		struct hush_pool_stats st;
		hush_pool_stats(e.pool, &st);
		assert_int_equal(st.total.in_use, 0);
		assert_int_equal(bufferevent_getfd(c), sv[0]);
		bufferevent_free(c);
		bufferevent_free(s);
		assert_int_equal(fd_open(sv[0]), !close_on_free);
		assert_int_equal(fd_open(sv[1]), !close_on_free);
		if (!close_on_free) {
			close(sv[0]);
			close(sv[1]);
		}
		evbuffer_free(ca.got);
		evbuffer_free(sa.got);
		bev_hs_done(&h);
		env_done(&e);
	}
}

/* TCP on loopback: the client connects with bufferevent_socket_connect() on a hush
 * bufferevent made with no socket; the peer then resets the connection. */
struct tcp_server {
	int lfd;
	struct env *e;
	struct bev_hs *h;
	struct bufferevent *bev;
	struct bev_app app;
};

static void tcp_accept(evutil_socket_t fd, short what, void *arg)
{
	struct tcp_server *t = arg;
	(void)what;
	int cfd = accept(fd, NULL, NULL);
	assert_true(cfd >= 0);
	t->bev = hs_bev(t->e, t->h, cfd, HUSH_SIDE_SERVER, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(t->bev, bev_app_read, NULL, bev_app_event, &t->app);
	bufferevent_enable(t->bev, EV_READ | EV_WRITE);
}

static void bev_socket_connect_then_peer_reset(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct bev_hs h;
	bev_hs_init(&h, false);
	struct tcp_server t = {.e = e, .h = &h};
	bev_app_init(&t.app, e);
	t.app.echo = 1;
	t.lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(t.lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(t.lfd, 4), 0);
	socklen_t sl = sizeof(sin);
	assert_int_equal(getsockname(t.lfd, (struct sockaddr *)&sin, &sl), 0);
	struct event *lev = event_new(e->base, t.lfd, EV_READ | EV_PERSIST, tcp_accept, &t);
	event_add(lev, NULL);

	struct bev_app *ca = &fx->c;
	struct bufferevent *c = hs_bev(e, &h, -1, HUSH_SIDE_CLIENT, BEV_OPT_CLOSE_ON_FREE);
	assert_int_equal(bufferevent_getfd(c), -1);
	bufferevent_setcb(c, bev_app_read, NULL, bev_app_event, ca);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	assert_int_equal(bufferevent_socket_connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_true(bufferevent_getfd(c) >= 0);
	assert_int_equal(bufferevent_write(c, "over tcp", 8), 0);
	ca->stop_at = 8;
	run(e);
	assert_int_equal(ca->connected, 1);
	assert_int_equal(evbuffer_get_length(ca->got), 8);
	assert_memory_equal(evbuffer_pullup(ca->got, -1), "over tcp", 8);

	/* The peer aborts: SO_LINGER 0 makes its close a reset. */
	struct linger lg = {1, 0};
	int sfd = bufferevent_getfd(t.bev);
	assert_int_equal(setsockopt(sfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	bufferevent_free(t.bev);
	run(e);
	assert_int_equal(ca->error, 1);
	assert_int_equal(hush_bufferevent_get_error(c), HUSH_ECONNRESET);
	bufferevent_free(c);
	event_free(lev);
	close(t.lfd);
	evbuffer_free(t.app.got);
	bev_hs_done(&h);
}

/* Raw keys serve one socket: a second would reuse nonces under the same key. */
static void bev_raw_keys_refuse_a_second_socket(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	int sv[2], sv2[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv2), 0);
	struct bufferevent *c = bev_raw_socket(e, sv[0], HUSH_SIDE_CLIENT, 0);
	/* bufferevent_setfd() never closes the socket it replaces. */
	assert_int_equal(bufferevent_setfd(c, -1), 0);
	assert_true(fd_open(sv[0]));
	assert_int_equal(bufferevent_setfd(c, sv2[0]), -1);
	assert_int_equal(hush_bufferevent_get_error(c), HUSH_ESTATE);
	bufferevent_free(c); /* closes the socket it holds, sv2[0] */
	assert_false(fd_open(sv2[0]));
	assert_true(fd_open(sv[0]));
	close(sv[0]);
	close(sv[1]);
	close(sv2[1]);
}

/* The read timeout: BEV_EVENT_TIMEOUT | BEV_EVENT_READING, reading disabled. */
struct timeout_app {
	short what;
	struct event_base *base;
};

static void timeout_event(struct bufferevent *bev, short what, void *arg)
{
	struct timeout_app *a = arg;
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		return;
	}
	a->what = what;
	event_base_loopbreak(a->base);
}

/* The timeout tests' pair, handshaking over a socketpair: c reports its events to ta,
 * s is the fixture's application. */
struct timeout_pair {
	struct bev_hs h;
	struct timeout_app ta;
	struct bufferevent *c, *s;
};

/* Opens t with c's read and write timeouts (NULL: none) set and c enabled both ways. */
static void timeout_pair_open(struct bev_fx *fx, struct timeout_pair *t, const struct timeval *rd,
			      const struct timeval *wr)
{
	struct env *e = &fx->e;
	bev_hs_init(&t->h, false);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	t->ta = (struct timeout_app){0, e->base};
	t->c = hs_bev(e, &t->h, sv[0], HUSH_SIDE_CLIENT, BEV_OPT_CLOSE_ON_FREE);
	t->s = hs_bev(e, &t->h, sv[1], HUSH_SIDE_SERVER, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(t->c, NULL, NULL, timeout_event, &t->ta);
	bufferevent_setcb(t->s, bev_app_read, NULL, bev_app_event, &fx->c);
	bufferevent_set_timeouts(t->c, rd, wr);
	bufferevent_enable(t->c, EV_READ | EV_WRITE);
}

static void timeout_pair_close(struct timeout_pair *t)
{
	bufferevent_free(t->c);
	bufferevent_free(t->s);
	bev_hs_done(&t->h);
}

static void bev_read_timeout_fires_when_the_peer_is_silent(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct timeout_pair t;
	struct timeval tv = {0, 150000};
	timeout_pair_open(fx, &t, &tv, NULL);
	bufferevent_enable(t.s, EV_READ | EV_WRITE);
	run(e);
	assert_int_equal(t.ta.what, BEV_EVENT_TIMEOUT | BEV_EVENT_READING);
	assert_false(bufferevent_get_enabled(t.c) & EV_READ);
	assert_int_equal(hush_bufferevent_get_error(t.c), 0);
	timeout_pair_close(&t);
}

/* The write timeout: the peer stops reading, the bytes stop moving, and after a whole
 * timeout without progress BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING comes, writing
 * disabled. */
static void bev_write_timeout_fires_when_the_peer_stops_reading(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct timeout_pair t;
	struct timeval tv = {0, 200000};
	timeout_pair_open(fx, &t, NULL, &tv);
	/* The server never enables reading: after its handshake, nothing is read. */
	size_t n = 8u << 20;
	uint8_t *msg = calloc(1, n);
	assert_int_equal(bufferevent_write(t.c, msg, n), 0);
	run(e);
	assert_int_equal(t.ta.what, BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING);
	assert_false(bufferevent_get_enabled(t.c) & EV_WRITE);
	assert_true(evbuffer_get_length(bufferevent_get_output(t.c)) > 0);
	free(msg);
	timeout_pair_close(&t);
}

/*
 * Timeouts cleared while the write timer is armed (bytes stuck behind a peer that does
 * not read) leave no timer behind: neither timer is pending, no timeout comes for
 * longer than the old timeout, and writing stays enabled; more bytes written then arm
 * nothing either, since without a timeout nothing is armed or asked per record.
 */
static void bev_timeouts_cleared_while_armed_leave_no_timer(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct timeout_pair t;
	struct timeval tv = {0, 150000};
	timeout_pair_open(fx, &t, &tv, &tv);
	size_t n = 8u << 20;
	uint8_t *msg = calloc(1, n);
	assert_non_null(msg);
	assert_int_equal(bufferevent_write(t.c, msg, n), 0);
	run_for_ms(e, 50);
	assert_true(event_pending(&t.c->ev_write, EV_TIMEOUT, NULL));
	bufferevent_set_timeouts(t.c, NULL, NULL);
	assert_false(event_pending(&t.c->ev_read, EV_TIMEOUT, NULL));
	assert_false(event_pending(&t.c->ev_write, EV_TIMEOUT, NULL));
	run_for_ms(e, 400);
	assert_int_equal(t.ta.what, 0);
	assert_int_equal(bufferevent_write(t.c, msg, 1000), 0);
	run_for_ms(e, 50);
	assert_false(event_pending(&t.c->ev_read, EV_TIMEOUT, NULL));
	assert_false(event_pending(&t.c->ev_write, EV_TIMEOUT, NULL));
	assert_int_equal(t.ta.what, 0);
	assert_true(bufferevent_get_enabled(t.c) & EV_WRITE);
	assert_true(bufferevent_get_enabled(t.c) & EV_READ);
	free(msg);
	timeout_pair_close(&t);
}

/* BEV_OPT_THREADSAFE: another thread writes while the loop runs here, then frees the
 * bufferevent; the loop's thread carries both out. */
struct writer {
	struct bufferevent *bev;
	const uint8_t *msg;
	size_t n;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (size_t off = 0; off < w->n; off += 1000) {
		size_t k = w->n - off < 1000 ? w->n - off : 1000;
		assert_int_equal(bufferevent_write(w->bev, w->msg + off, k), 0);
	}
	return NULL;
}

static void *freer_main(void *arg)
{
	bufferevent_free(arg);
	return NULL;
}

static void bev_threadsafe_writes_and_free_from_another_thread(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct bev_hs h;
	bev_hs_init(&h, false);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bev_app *ca = &fx->c, *sa = &fx->s;
	sa->echo = 1;
	int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_THREADSAFE;
	struct bufferevent *c = hs_bev(e, &h, sv[0], HUSH_SIDE_CLIENT, opts);
	struct bufferevent *s = hs_bev(e, &h, sv[1], HUSH_SIDE_SERVER, opts);
	bufferevent_setcb(c, bev_app_read, NULL, bev_app_event, ca);
	bufferevent_setcb(s, bev_app_read, NULL, bev_app_event, sa);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	size_t n = 2u << 20;
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 13);
	struct writer w = {c, msg, n};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
	ca->stop_at = n;
	run(e);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(evbuffer_get_length(ca->got), n);
	assert_memory_equal(evbuffer_pullup(ca->got, -1), msg, n);
	/* Freed over there; finished here, with the close record: a clean end. */
	assert_int_equal(pthread_create(&t, NULL, freer_main, c), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	run(e);
	assert_int_equal(sa->eof, 1);
	assert_int_equal(sa->error, 0);
	assert_false(fd_open(sv[0]));
	free(msg);
	bufferevent_free(s);
	bev_hs_done(&h);
}

/* A connect that is refused: one ERROR, and nothing held afterwards. */
static void bev_refused_connect_reports_an_error(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	struct bev_hs h;
	bev_hs_init(&h, false);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(testlib_closed_port())};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct bev_app *ca = &fx->c;
	struct bufferevent *c = hs_bev(e, &h, -1, HUSH_SIDE_CLIENT, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c, bev_app_read, NULL, bev_app_event, ca);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	assert_int_equal(bufferevent_socket_connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
	run(e);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	assert_int_equal(ca->error, 1);
	assert_int_equal(ca->connected, 0);
	assert_int_equal(hush_bufferevent_get_error(c), HUSH_EIO); /* the socket error */
	bufferevent_free(c);
	bev_hs_done(&h);
}

/* libevent's rate limits apply: a 64 KiB/s read limit slows a 128 KiB transfer. */
static void bev_read_rate_limit_applies(void **state)
{
	struct bev_fx *fx = *state;
	struct env *e = &fx->e;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bev_app *ca = &fx->c, *sa = &fx->s;
	struct bufferevent *c = bev_raw_socket(e, sv[0], HUSH_SIDE_CLIENT, 0);
	struct bufferevent *s = bev_raw_socket(e, sv[1], HUSH_SIDE_SERVER, 0);
	struct timeval tick = {0, 100000};
	struct ev_token_bucket_cfg *rl = ev_token_bucket_cfg_new(6554, 6554, EV_RATE_LIMIT_MAX,
								 EV_RATE_LIMIT_MAX, &tick);
	assert_int_equal(bufferevent_set_rate_limit(c, rl), 0);
	bufferevent_setcb(c, bev_app_read, NULL, bev_app_event, ca);
	bufferevent_setcb(s, bev_app_read, NULL, bev_app_event, sa);
	bufferevent_enable(c, EV_READ | EV_WRITE);
	bufferevent_enable(s, EV_READ | EV_WRITE);
	size_t n = 128 * 1024;
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 8);
	assert_int_equal(bufferevent_write(s, msg, n), 0);
	ca->stop_at = n;
	struct timeval t0, t1;
	evutil_gettimeofday(&t0, NULL);
	run(e);
	evutil_gettimeofday(&t1, NULL);
	assert_int_equal(evbuffer_get_length(ca->got), n);
	assert_memory_equal(evbuffer_pullup(ca->got, -1), msg, n);
	/* Unlimited, this takes milliseconds; limited, several ticks at least. A lower
	 * bound only: a slow machine passes it too. */
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
	assert_true(ms >= 1000);
	free(msg);
	bufferevent_free(c);
	bufferevent_free(s);
	ev_token_bucket_cfg_free(rl);
}

int main(void)
{
	evthread_use_pthreads();
	const struct CMUnitTest tests[] = {
		BEV_FX_TEST(bev_echo_between_two_hush_bufferevents),
		BEV_FX_TEST(bev_speaks_alts_records_to_a_raw_peer),
		BEV_FX_TEST(bev_written_while_disabled_is_sent_when_enabled),
		BEV_FX_TEST(bev_much_written_while_disabled_is_sent_when_enabled),
		BEV_FX_TEST(bev_ping_pong_switching_reading_and_writing_reaches_the_end),
		BEV_FX_TEST(bev_eight_mib_round_trip),
		BEV_FX_TEST(bev_stream_cut_inside_record_reports_truncated),
		BEV_FX_TEST(bev_tampered_record_reports_eauth),
		BEV_FX_TEST(bev_thousands_idle_hold_zero_pool_buffers),
		BEV_FX_TEST(bev_handshake_then_echo_with_threadsafe_deferred_callbacks),
		BEV_FX_TEST(bev_read_high_watermark_never_stalls),
		cmocka_unit_test(bev_freed_from_its_own_callbacks),
		BEV_FX_TEST(bev_graceful_shutdown_delivers_everything_then_a_clean_eof),
		BEV_FX_TEST(bev_flush_finished_is_a_graceful_shutdown),
		cmocka_unit_test(bev_handshake_failure_reports_epeer_and_keeps_ownership_rules),
		BEV_FX_TEST(bev_socket_connect_then_peer_reset),
		BEV_FX_TEST(bev_raw_keys_refuse_a_second_socket),
		BEV_FX_TEST(bev_read_timeout_fires_when_the_peer_is_silent),
		BEV_FX_TEST(bev_write_timeout_fires_when_the_peer_stops_reading),
		BEV_FX_TEST(bev_timeouts_cleared_while_armed_leave_no_timer),
		BEV_FX_TEST(bev_threadsafe_writes_and_free_from_another_thread),
		BEV_FX_TEST(bev_refused_connect_reports_an_error),
		BEV_FX_TEST(bev_read_rate_limit_applies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
