/*
 * Tests for the handshake phase of src/transport/conn.c and for src/transport/listener.c:
 * hush connections keyed by a hush handshake over socketpairs and loopback TCP, the
 * close record, the handshake's timeout and failures, and the listener's cap. Every
 * test ends with no connection, no event and no pool buffer left.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include <hush/listener.h>

#include "envlib.h"
#include "testlib.h"
#include "transport/transport-internal.h"

/* ---- Fixture ---- */

/* What one end saw. */
struct end {
	struct hush_conn *conn;
	uint8_t *data;
	size_t len;
	size_t cap;
	int opened;
	int eof;
	int shut;
	int err;
	bool got_result;
	int result_rc_outside;
	struct hush_handshake_result res;
	const uint8_t *greeting;   /* written from inside OPEN */
	size_t greeting_len;
	bool shutdown_on_eof;      /* answer the peer's close with ours */
	bool free_on_open;
};

static void end_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct end *x = arg;
	(void)c;
	if (x->len + len > x->cap) {
		x->cap = (x->len + len) * 2;
		x->data = realloc(x->data, x->cap);
		assert_non_null(x->data);
	}
	memcpy(x->data + x->len, data, len);
	x->len += len;
}

static void end_on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct end *x = arg;
	switch (ev) {
	case HUSH_CONN_EV_OPEN:
		x->opened++;
		x->got_result = hush_conn_handshake_result(c, &x->res) == 0;
		if (x->free_on_open) {
			hush_conn_free(c);
			x->conn = NULL;
			return;
		}
		if (x->greeting != NULL) {
			assert_true(hush_conn_write(c, x->greeting, x->greeting_len) >= 0);
		}
		break;
	case HUSH_CONN_EV_EOF:
		x->eof++;
		if (x->shutdown_on_eof) {
			assert_int_equal(hush_conn_shutdown(c), 0);
		}
		break;
	case HUSH_CONN_EV_SHUTDOWN:
		x->shut++;
		break;
	case HUSH_CONN_EV_ERROR:
		x->err = err;
		break;
	}
}

static const struct hush_conn_callbacks end_cb = {end_on_data, NULL, end_on_event};

static void end_free(struct end *x)
{
	hush_conn_free(x->conn);
	x->conn = NULL;
	free(x->data);
	x->data = NULL;
}

static struct hush_conn *start(struct env *e, int fd, struct end *x,
			       const struct hush_conn_config *cfg,
			       const struct hush_handshake_config *hc, enum hush_side side)
{
	struct hush_conn *c;
	assert_int_equal(hush_conn_new(&c, e->loop, fd, cfg, &end_cb, x), 0);
	assert_int_equal(hush_conn_start_handshake(c, hc, side), 0);
	x->conn = c;
	return c;
}

struct two {
	struct end *a;
	struct end *b;
};

static bool both_open_or_failed(void *arg)
{
	struct two *t = arg;
	return (t->a->opened || t->a->err) && (t->b->opened || t->b->err);
}

static bool both_failed_or_open(void *arg)
{
	return both_open_or_failed(arg);
}

static bool both_closed(void *arg)
{
	struct two *t = arg;
	return (t->a->eof && t->b->eof && t->a->shut && t->b->shut) || t->a->err || t->b->err;
}

static bool one_failed(void *arg)
{
	struct two *t = arg;
	return t->a->err != 0 || t->b->err != 0;
}

/* ---- Tests ---- */

/*
 * For every Noise protocol: the handshake completes over a socketpair, both ends see the
 * same handshake hash and each other's static key, data written from inside OPEN (so
 * that it follows the last handshake message at once) arrives intact both ways, and
 * the close records end both directions cleanly.
 */
static void handshake_conn_every_protocol_opens_exchanges_and_closes(void **state)
{
	(void)state;
	for (int p = HUSH_NOISE_XX_25519_AESGCM_SHA256; p <= HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256;
	     p++) {
		struct env e;
		env_init(&e, NULL);
		struct ids d;
		ids_init(&d, (enum hush_noise_protocol)p);
		uint8_t ga[70000], gb[3000];
		testlib_fill(ga, sizeof(ga), 1);
		testlib_fill(gb, sizeof(gb), 2);
		struct end a = {.greeting = ga, .greeting_len = sizeof(ga)};
		struct end b = {.greeting = gb, .greeting_len = sizeof(gb), .shutdown_on_eof = true};
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		start(&e, sv[0], &a, NULL, &d.cc, HUSH_SIDE_CLIENT);
		start(&e, sv[1], &b, NULL, &d.sc, HUSH_SIDE_SERVER);
		struct two t = {&a, &b};
		run_until(&e, 5000, both_open_or_failed, &t);
		assert_int_equal(a.err, 0);
		assert_int_equal(b.err, 0);
		assert_int_equal(a.opened, 1);
		assert_int_equal(b.opened, 1);
		assert_true(a.got_result && b.got_result);
		assert_memory_equal(a.res.handshake_hash, b.res.handshake_hash,
				    HUSH_HANDSHAKE_HASH_SIZE);
		assert_int_equal(a.res.side, HUSH_SIDE_CLIENT);
		assert_int_equal(b.res.side, HUSH_SIDE_SERVER);
		assert_int_equal(a.res.key_len, 0);
		static const uint8_t zero[HUSH_RECORD_MAX_KEY_SIZE];
		assert_memory_equal(a.res.key, zero, sizeof(zero));
		if (ids_has_static((enum hush_noise_protocol)p)) {
			assert_true(a.res.has_remote_static && b.res.has_remote_static);
			assert_memory_equal(a.res.remote_static, d.pub_s, HUSH_KEY_SIZE);
			assert_memory_equal(b.res.remote_static, d.pub_c, HUSH_KEY_SIZE);
		} else {
			assert_false(a.res.has_remote_static || b.res.has_remote_static);
		}
		/* Outside the OPEN callback the result is gone. */
		struct hush_handshake_result r;
		assert_int_equal(hush_conn_handshake_result(a.conn, &r), HUSH_ESTATE);
		assert_int_equal(hush_conn_shutdown(a.conn), 0);
		run_until(&e, 5000, both_closed, &t);
		assert_int_equal(a.err, 0);
		assert_int_equal(b.err, 0);
		assert_int_equal(b.len, sizeof(ga));
		assert_memory_equal(b.data, ga, sizeof(ga));
		assert_int_equal(a.len, sizeof(gb));
		assert_memory_equal(a.data, gb, sizeof(gb));
		assert_int_equal(a.eof, 1);
		assert_int_equal(b.eof, 1);
		end_free(&a);
		end_free(&b);
		ids_done(&d);
		env_done(&e);
	}
}

/* Heap held by one established, idle pair: hush's allocations only. */
static uint64_t idle_pair_bytes(struct env *e, struct ids *d, bool handshake)
{
	static const uint8_t key[44] = {1, 2, 3};
	struct testlib_alloc_stats before, after;
	struct end a = {0}, b = {0};
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	testlib_alloc_get(&before);
	if (handshake) {
		start(e, sv[0], &a, NULL, &d->cc, HUSH_SIDE_CLIENT);
		start(e, sv[1], &b, NULL, &d->sc, HUSH_SIDE_SERVER);
	} else {
		assert_int_equal(hush_conn_new(&a.conn, e->loop, sv[0], NULL, &end_cb, &a), 0);
		assert_int_equal(hush_conn_new(&b.conn, e->loop, sv[1], NULL, &end_cb, &b), 0);
		assert_int_equal(hush_conn_start_raw(a.conn, HUSH_RP_ALTS_AES128_GCM_REKEY, key,
						     sizeof(key), HUSH_SIDE_CLIENT),
				 0);
		assert_int_equal(hush_conn_start_raw(b.conn, HUSH_RP_ALTS_AES128_GCM_REKEY, key,
						     sizeof(key), HUSH_SIDE_SERVER),
				 0);
	}
	struct two t = {&a, &b};
	run_until(e, 5000, both_open_or_failed, &t);
	assert_int_equal(a.opened + b.opened, 2);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	assert_int_equal(hush_conn_buffers_held(a.conn), 0);
	assert_int_equal(hush_conn_buffers_held(b.conn), 0);
	hush_pool_trim(e->pool);
	testlib_alloc_get(&after);
	end_free(&a);
	end_free(&b);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	return after.live_bytes - before.live_bytes;
}

/* A loop and identities for both ends of one protocol, for tests that make their own
 * ends; the protocol comes as the test's initial state (PROTO()). */
struct proto_fx {
	struct env e;
	struct ids d;
};

static int proto_setup(void **state)
{
	const enum hush_noise_protocol *protocol = *state;
	struct proto_fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	env_init(&f->e, NULL);
	ids_init(&f->d, *protocol);
	*state = f;
	return 0;
}

static int proto_teardown(void **state)
{
	struct proto_fx *f = *state;
	ids_done(&f->d);
	env_done(&f->e);
	free(f);
	return 0;
}

static const enum hush_noise_protocol XX_AESGCM = HUSH_NOISE_XX_25519_AESGCM_SHA256;
static const enum hush_noise_protocol XX_CHACHAPOLY = HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256;
static const enum hush_noise_protocol NNPSK0_AESGCM = HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256;
static const enum hush_noise_protocol NNPSK0_CHACHAPOLY =
    HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256;

#define PROTO(fn, protocol)                                                                 \
	cmocka_unit_test_prestate_setup_teardown(fn, proto_setup, proto_teardown, (void *)&(protocol))

static const enum hush_noise_protocol XXPSK3_AESGCM = HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256;
static const enum hush_noise_protocol XXPSK3_CHACHAPOLY =
    HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256;

/* Identities alone, for tests that make their own loops (run_failing(), one per case). */
static int ids_setup(void **state)
{
	const enum hush_noise_protocol *protocol = *state;
	struct ids *d = calloc(1, sizeof(*d));
	assert_non_null(d);
	ids_init(d, *protocol);
	*state = d;
	return 0;
}

static int ids_teardown(void **state)
{
	ids_done(*state);
	free(*state);
	return 0;
}

#define IDS(fn, protocol)                                                                   \
	cmocka_unit_test_prestate_setup_teardown(fn, ids_setup, ids_teardown, (void *)&(protocol))

/* The handshake's state is freed when it ends: an established connection holds exactly
 * what one started from raw keys holds, and no pool buffer. */
static void handshake_conn_established_costs_what_raw_keys_cost(void **state)
{
	struct proto_fx *f = *state;
	testlib_alloc_install();
	/* Warm the loop's interned configuration and lists first. */
	(void)idle_pair_bytes(&f->e, &f->d, false);
	uint64_t raw = idle_pair_bytes(&f->e, &f->d, false);
	uint64_t hs = idle_pair_bytes(&f->e, &f->d, true);
	testlib_alloc_uninstall();
	assert_true(raw > 0);
	assert_int_equal(hs, raw);
}

/* A connection keyed by a handshake whose peer goes away without a close record was
 * truncated, even at a record boundary. */
static void handshake_conn_eof_without_close_record_is_truncated(void **state)
{
	struct proto_fx *f = *state;
	uint8_t g[100];
	testlib_fill(g, sizeof(g), 3);
	struct end a = {0}, b = {.greeting = g, .greeting_len = sizeof(g)};
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	start(&f->e, sv[0], &a, NULL, &f->d.cc, HUSH_SIDE_CLIENT);
	start(&f->e, sv[1], &b, NULL, &f->d.sc, HUSH_SIDE_SERVER);
	struct two t = {&a, &b};
	run_until(&f->e, 5000, both_open_or_failed, &t);
	assert_int_equal(a.opened + b.opened, 2);
	/* b's record goes out at the end of the iteration; then b vanishes. */
	event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	hush_conn_free(b.conn);
	b.conn = NULL;
	run_until(&f->e, 5000, one_failed, &t);
	assert_int_equal(a.err, HUSH_ETRUNCATED);
	assert_int_equal(a.eof, 0);
	assert_int_equal(a.len, sizeof(g));
	end_free(&a);
	end_free(&b);
}

struct mismatch {
	const char *what;
	int client_err;  /* 0: any error or none */
	int server_err;
};

/* Runs a handshake that must fail; returns both ends' errors. */
static void run_failing(struct ids *d, int *ce, int *se)
{
	struct env e;
	env_init(&e, NULL);
	struct end a = {0}, b = {0};
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	start(&e, sv[0], &a, NULL, &d->cc, HUSH_SIDE_CLIENT);
	start(&e, sv[1], &b, NULL, &d->sc, HUSH_SIDE_SERVER);
	struct two t = {&a, &b};
	run_until(&e, 5000, both_failed_or_open, &t);
	*ce = a.err;
	*se = b.err;
	assert_int_equal(a.opened + b.opened, 0);
	end_free(&a);
	end_free(&b);
	env_done(&e);
}

static void handshake_conn_unknown_server_fails_with_epeer_at_client(void **state)
{
	struct ids *d = *state;
	uint8_t other[HUSH_KEY_SIZE];
	testlib_fill(other, sizeof(other), 9);
	d->cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])other;
	int ce, se;
	run_failing(d, &ce, &se);
	assert_int_equal(ce, HUSH_EPEER);
	assert_int_equal(se, HUSH_ECLOSED); /* the client closed without message 3 */
}

static void handshake_conn_unknown_client_fails_with_epeer_at_server(void **state)
{
	struct ids *d = *state;
	uint8_t other[HUSH_KEY_SIZE];
	testlib_fill(other, sizeof(other), 10);
	d->sc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])other;
	struct env e;
	env_init(&e, NULL);
	struct end a = {0}, b = {0};
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	start(&e, sv[0], &a, NULL, &d->cc, HUSH_SIDE_CLIENT);
	start(&e, sv[1], &b, NULL, &d->sc, HUSH_SIDE_SERVER);
	struct two t = {&a, &b};
	/* The client is done after message 3 and opens; the server refuses it. */
	run_until(&e, 5000, one_failed, &t);
	assert_int_equal(b.err, HUSH_EPEER);
	assert_int_equal(b.opened, 0);
	end_free(&a);
	end_free(&b);
	env_done(&e);
}

static void handshake_conn_wrong_psk_fails_with_ehandshake(void **state)
{
	struct ids *d = *state;
	uint8_t other[HUSH_KEY_SIZE];
	testlib_fill(other, sizeof(other), 11);
	d->sc.psk = other;
	int ce, se;
	run_failing(d, &ce, &se);
	assert_int_equal(se, HUSH_EHANDSHAKE);
	assert_int_equal(ce, HUSH_ECLOSED);
}

static void handshake_conn_protocol_or_parameter_mismatch_fails_with_eparams(void **state)
{
	(void)state;
	struct ids d;
	int ce, se;
	/* Another Noise protocol: the server refuses the hello. */
	ids_init(&d, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	d.sc.protocol = HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256;
	run_failing(&d, &ce, &se);
	assert_int_equal(se, HUSH_EPARAMS);
	assert_int_equal(ce, HUSH_ECLOSED);
	ids_done(&d);
	/* Another record protocol: the client finds it in message 2. */
	ids_init(&d, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	d.sc.record_protocol = HUSH_RP_ALTS_AES128_GCM;
	run_failing(&d, &ce, &se);
	assert_int_equal(ce, HUSH_EPARAMS);
	assert_int_equal(se, HUSH_ECLOSED);
	ids_done(&d);
}

/* A raw socket peer: what it writes, and when. */
struct raw_peer {
	int fd;
	struct event *ev;
	const uint8_t *bytes;
	size_t len;
	size_t off;
	size_t step;   /* bytes per tick */
	int tick_ms;
};

static void raw_tick(evutil_socket_t fd, short what, void *arg)
{
	struct raw_peer *r = arg;
	(void)fd;
	(void)what;
	if (r->off < r->len) {
		size_t k = r->len - r->off < r->step ? r->len - r->off : r->step;
		assert_int_equal(write(r->fd, r->bytes + r->off, k), (ssize_t)k);
		r->off += k;
	}
	struct timeval tv = {0, r->tick_ms * 1000};
	evtimer_add(r->ev, &tv);
}

static bool end_failed(void *arg)
{
	return ((struct end *)arg)->err != 0;
}

/* A server facing a peer that stalls, or trickles bytes so slowly that the handshake
 * cannot finish in time, fails with HUSH_ETIMEDOUT at the deadline. */
static void handshake_conn_stalling_or_trickling_peer_times_out(void **state)
{
	struct ids *d = *state;
	/* A real first flight, then nothing: the server waits for message 3. */
	struct hush_handshake *hc;
	assert_int_equal(hush_handshake_new(&hc, &d->cc, HUSH_SIDE_CLIENT), 0);
	uint8_t flight[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t flen;
	assert_int_equal(hush_handshake_next(hc, flight, sizeof(flight), &flen), 0);
	hush_handshake_free(hc);
	for (int trickle = 0; trickle <= 1; trickle++) {
		struct env e;
		env_init(&e, NULL);
		struct hush_conn_config cfg;
		hush_conn_config_init(&cfg);
		cfg.handshake_timeout_ms = 300;
		struct end b = {0};
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		struct raw_peer r = {.fd = sv[0], .bytes = flight, .len = flen,
				     .step = trickle ? 1 : flen, .tick_ms = 20};
		r.ev = evtimer_new(e.base, raw_tick, &r);
		raw_tick(-1, 0, &r);
		struct timeval t0, t1;
		gettimeofday(&t0, NULL);
		start(&e, sv[1], &b, &cfg, &d->sc, HUSH_SIDE_SERVER);
		run_until(&e, 3000, end_failed, &b);
		gettimeofday(&t1, NULL);
		long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
		assert_int_equal(b.err, HUSH_ETIMEDOUT);
		assert_true(ms >= 290 && ms < 2000);
		if (trickle) {
			print_message("trickled %zu of %zu bytes\n", r.off, flen);
			assert_true(r.off > 0 && r.off < flen); /* bytes kept coming */
		}
		event_free(r.ev);
		close(sv[0]);
		end_free(&b);
		env_done(&e);
	}
}

/* Garbage, a peer that closes mid-handshake, and a peer that sends bytes before its
 * turn (records before the handshake ended) each fail the server with its own code. */
static void handshake_conn_bad_peer_bytes_fail_with_specific_codes(void **state)
{
	struct ids *d = *state;
	struct hush_handshake *hc;
	assert_int_equal(hush_handshake_new(&hc, &d->cc, HUSH_SIDE_CLIENT), 0);
	uint8_t flight[HUSH_HANDSHAKE_MAX_OUTPUT + 64];
	size_t flen;
	assert_int_equal(hush_handshake_next(hc, flight, sizeof(flight), &flen), 0);
	hush_handshake_free(hc);
	uint8_t early[sizeof(flight)];
	memcpy(early, flight, flen);
	memset(early + flen, 0x17, 40); /* "records" right after message 1 */
	static const uint8_t garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct {
		const uint8_t *bytes;
		size_t len;
		bool close_after;
		int want;
	} cases[] = {
	    {garbage, sizeof(garbage) - 1, false, HUSH_EHANDSHAKE},
	    {flight, 10, true, HUSH_ECLOSED},
	    {early, flen + 40, false, HUSH_EOUTOFTURN},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct env e;
		env_init(&e, NULL);
		struct end b = {0};
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		assert_int_equal(write(sv[0], cases[i].bytes, cases[i].len), (ssize_t)cases[i].len);
		if (cases[i].close_after) {
			close(sv[0]);
			sv[0] = -1;
		}
		start(&e, sv[1], &b, NULL, &d->sc, HUSH_SIDE_SERVER);
		run_until(&e, 3000, end_failed, &b);
		assert_int_equal(b.err, cases[i].want);
		assert_int_equal(b.opened, 0);
		if (sv[0] >= 0) {
			close(sv[0]);
		}
		end_free(&b);
		env_done(&e);
	}
}

/* Copies a's bytes to b; after a's EOF it adds junk, then ends b's stream too. */
struct relay {
	int from;
	int to;
	struct event *ev;
	bool done;
};

static void relay_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	uint8_t buf[4096];
	(void)what;
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n > 0) {
		assert_int_equal(write(r->to, buf, (size_t)n), n);
		return;
	}
	static const char junk[] = "trailing junk after the close record";
	assert_int_equal(write(r->to, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	shutdown(r->to, SHUT_WR);
	event_del(r->ev);
	r->done = true;
}

/* Bytes after the peer's close record are ignored, not delivered, and do not turn the
 * clean end into an error. */
static void handshake_conn_bytes_after_close_record_are_ignored(void **state)
{
	struct proto_fx *f = *state;
	struct end a = {0}, b = {0};
	int sa[2], sb[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sa), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sb), 0);
	/* a -> relay -> b; b's replies go straight to a through the other pair's end. */
	start(&f->e, sa[0], &a, NULL, &f->d.cc, HUSH_SIDE_CLIENT);
	struct relay r = {.from = sa[1], .to = sb[0]};
	r.ev = event_new(f->e.base, sa[1], EV_READ | EV_PERSIST, relay_on_read, &r);
	event_add(r.ev, NULL);
	struct relay back = {.from = sb[0], .to = sa[1]};
	back.ev = event_new(f->e.base, sb[0], EV_READ | EV_PERSIST, relay_on_read, &back);
	event_add(back.ev, NULL);
	start(&f->e, sb[1], &b, NULL, &f->d.sc, HUSH_SIDE_SERVER);
	struct two t = {&a, &b};
	run_until(&f->e, 5000, both_open_or_failed, &t);
	assert_int_equal(a.opened + b.opened, 2);
	assert_int_equal(hush_conn_write(a.conn, "hi", 2), 0);
	assert_int_equal(hush_conn_shutdown(a.conn), 0);
	for (int i = 0; i < 20 && !(b.eof || b.err) ; i++) {
		event_base_loop(f->e.base, EVLOOP_ONCE);
	}
	for (int i = 0; i < 5; i++) {
		event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	}
	assert_true(r.done);
	assert_int_equal(a.shut, 1);
	assert_int_equal(b.eof, 1);
	assert_int_equal(b.err, 0);
	assert_int_equal(b.len, 2);
	assert_memory_equal(b.data, "hi", 2);
	event_free(r.ev);
	event_free(back.ev);
	close(sa[1]);
	close(sb[0]);
	end_free(&a);
	end_free(&b);
}

/* Freeing a connection in the middle of its handshake, or from inside OPEN, is clean. */
static void handshake_conn_free_during_handshake_or_in_open_is_clean(void **state)
{
	struct ids *d = *state;
	testlib_alloc_install();
	for (int mode = 0; mode < 2; mode++) {
		struct env e;
		env_init(&e, NULL);
		struct end a = {.free_on_open = mode == 1}, b = {0};
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		start(&e, sv[0], &a, NULL, &d->cc, HUSH_SIDE_CLIENT);
		start(&e, sv[1], &b, NULL, &d->sc, HUSH_SIDE_SERVER);
		if (mode == 0) {
			/* Started, its first flight not even sent. */
			hush_conn_free(a.conn);
			a.conn = NULL;
		}
		run_until(&e, 3000, end_failed, &b);
		assert_int_equal(b.err, mode == 0 ? HUSH_ECLOSED : HUSH_ETRUNCATED);
		end_free(&a);
		end_free(&b);
		env_done(&e);
		struct testlib_alloc_stats st;
		testlib_alloc_get(&st);
		assert_int_equal(st.live, 0);
	}
	testlib_alloc_uninstall();
}

/* The handshake phase's state (keys' result, Noise state pointers, the record context
 * until OPEN) is zero when its memory goes back, whichever way the handshake ended. */
static void handshake_conn_state_is_wiped_when_freed(void **state)
{
	(void)state;
	testlib_alloc_install();
	testlib_alloc_watch_size(hush__conn_hs_size());
	struct ids d;
	ids_init(&d, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	int ce, se;
	/* Two that open, then a failure at each end. */
	struct env e;
	env_init(&e, NULL);
	struct end a = {0}, b = {0};
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	start(&e, sv[0], &a, NULL, &d.cc, HUSH_SIDE_CLIENT);
	start(&e, sv[1], &b, NULL, &d.sc, HUSH_SIDE_SERVER);
	struct two t = {&a, &b};
	run_until(&e, 5000, both_open_or_failed, &t);
	assert_int_equal(a.opened + b.opened, 2);
	end_free(&a);
	end_free(&b);
	env_done(&e);
	uint8_t other[HUSH_KEY_SIZE];
	testlib_fill(other, sizeof(other), 12);
	d.cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])other;
	run_failing(&d, &ce, &se);
	assert_int_equal(ce, HUSH_EPEER);
	uint64_t freed, zeroed;
	testlib_alloc_watched(&freed, &zeroed);
	assert_int_equal(freed, 4);
	assert_int_equal(zeroed, 4);
	testlib_alloc_watch_size(0);
	testlib_alloc_uninstall();
	ids_done(&d);
}

/*
 * The k-th hush allocation fails, for every k, through a handshake, one write each way
 * and a shutdown: every failure is an error on that connection, and nothing leaks.
 */
static int handshake_with_failure(struct ids *d, uint64_t k)
{
	struct event_base *base = event_base_new();
	struct hush_pool *pool = NULL;
	struct hush_loop *loop = NULL;
	struct end a = {0}, b = {0};
	int failed = 0;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	testlib_alloc_fail_at(k);
	if (hush_pool_new(&pool, NULL) != 0 || hush_loop_new(&loop, base, pool) != 0) {
		close(sv[0]);
		close(sv[1]);
		failed = 1;
		goto out;
	}
	if (hush_conn_new(&a.conn, loop, sv[0], NULL, &end_cb, &a) != 0) {
		close(sv[1]);
		failed = 1;
		goto out;
	}
	if (hush_conn_new(&b.conn, loop, sv[1], NULL, &end_cb, &b) != 0 ||
	    hush_conn_start_handshake(a.conn, &d->cc, HUSH_SIDE_CLIENT) != 0 ||
	    hush_conn_start_handshake(b.conn, &d->sc, HUSH_SIDE_SERVER) != 0) {
		failed = 1;
		goto out;
	}
	for (int i = 0; i < 20 && !(a.opened && b.opened) && !a.err && !b.err; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	if (!(a.opened && b.opened)) {
		failed = 1;
		goto out;
	}
	if (hush_conn_write(a.conn, "ping", 4) < 0 || hush_conn_write(b.conn, "pong", 4) < 0 ||
	    hush_conn_shutdown(a.conn) < 0) {
		failed = 1;
	}
	for (int i = 0; i < 20; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	if (a.err || b.err || b.eof != 1 || b.len != 4 || a.len != 4) {
		failed = 1;
	}
out:
	testlib_alloc_fail_at(0);
	hush_conn_free(a.conn);
	hush_conn_free(b.conn);
	if (loop != NULL) {
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	hush_loop_free(loop);
	hush_pool_free(pool);
	event_base_free(base);
	free(a.data);
	free(b.data);
	return failed;
}

static void handshake_conn_allocation_failure_at_every_step_is_contained(void **state)
{
	struct ids *d = *state;
	testlib_alloc_install();
	int failures = 0;
	uint64_t k;
	for (k = 1; k < 400; k++) {
		failures += handshake_with_failure(d, k);
		struct testlib_alloc_stats st;
		testlib_alloc_get(&st);
		assert_int_equal(st.live, 0);
	}
	assert_true(failures > 10);
	/* Far enough along, nothing fails any more: the whole life was covered. */
	assert_int_equal(handshake_with_failure(d, 100000), 0);
	testlib_alloc_uninstall();
}

/*
 * Churn: handshake-keyed pairs opened, handshaken, used once each way and closed with
 * close records, round after round through the six protocols; hush's live allocations
 * at the end equal those after a warm-up round of each protocol (the pool trimmed), to
 * the byte, and every pool buffer is back.
 */
static void handshake_conn_churn_returns_heap_to_its_start(void **state)
{
	(void)state;
	enum { ROUNDS = 600, WARM = 12 };
	testlib_alloc_install();
	struct env e;
	env_init(&e, NULL);
	struct ids d[6];
	for (int p = 0; p < 6; p++) {
		ids_init(&d[p], (enum hush_noise_protocol)(HUSH_NOISE_XX_25519_AESGCM_SHA256 + p));
	}
	uint8_t ga[5000], gb[3000];
	testlib_fill(ga, sizeof(ga), 21);
	testlib_fill(gb, sizeof(gb), 22);
	struct testlib_alloc_stats before = {0}, after;
	struct timeval t0, t1;
	gettimeofday(&t0, NULL);
	for (int round = 0; round < ROUNDS; round++) {
		const struct ids *id = &d[round % 6];
		struct end a = {.greeting = ga, .greeting_len = sizeof(ga)};
		struct end b = {.greeting = gb, .greeting_len = sizeof(gb), .shutdown_on_eof = true};
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		start(&e, sv[0], &a, NULL, &id->cc, HUSH_SIDE_CLIENT);
		start(&e, sv[1], &b, NULL, &id->sc, HUSH_SIDE_SERVER);
		struct two t = {&a, &b};
		run_until(&e, 5000, both_open_or_failed, &t);
		assert_int_equal(a.opened + b.opened, 2);
		assert_int_equal(hush_conn_shutdown(a.conn), 0);
		run_until(&e, 5000, both_closed, &t);
		assert_int_equal(a.err, 0);
		assert_int_equal(b.err, 0);
		assert_int_equal(a.eof + b.eof + a.shut + b.shut, 4);
		assert_int_equal(b.len, sizeof(ga));
		assert_memory_equal(b.data, ga, sizeof(ga));
		assert_int_equal(a.len, sizeof(gb));
		assert_memory_equal(a.data, gb, sizeof(gb));
		end_free(&a);
		end_free(&b);
		event_base_loop(e.base, EVLOOP_NONBLOCK);
		if (round == WARM - 1) {
			hush_pool_trim(e.pool);
			testlib_alloc_get(&before);
		}
	}
	gettimeofday(&t1, NULL);
	hush_pool_trim(e.pool);
	testlib_alloc_get(&after);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
	print_message("# churn: %d handshake-keyed pairs in %ld ms (%.0f pairs/s)\n", ROUNDS, ms,
		      ms > 0 ? ROUNDS * 1000.0 / (double)ms : 0.0);
	assert_int_equal(after.live, before.live);
	assert_int_equal(after.live_bytes, before.live_bytes);
	for (int p = 0; p < 6; p++) {
		ids_done(&d[p]);
	}
	env_done(&e);
	testlib_alloc_get(&after);
	assert_int_equal(after.live, 0);
	testlib_alloc_uninstall();
}

/* ---- NNpsk0 key confirmation (PROTOCOL.md section 14.1) ---- */

static bool end_done(void *arg);

/* Reads what the server sent on fd (its message 2) without waiting long. */
static size_t drain_fd(struct env *e, int fd, uint8_t *buf, size_t cap)
{
	size_t got = 0;
	for (int i = 0; i < 200 && got == 0; i++) {
		event_base_loop(e->base, EVLOOP_NONBLOCK);
		ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
		if (n > 0) {
			got = (size_t)n;
		} else {
			usleep(1000);
		}
	}
	return got;
}

static bool all_failed(void *arg)
{
	struct end *x = arg;
	for (int i = 0; i < 5; i++) {
		if (x[i].err == 0 && !x[i].opened) {
			return false;
		}
	}
	return true;
}

/*
 * A captured NNpsk0 first flight, replayed, never opens a connection: the server
 * answers with message 2, but without the initiator's confirmation record, sealed under
 * keys that depend on the server's new ephemeral key, OPEN is never reported. Whatever
 * the replayer does next fails the handshake: silence (HUSH_ETIMEDOUT), a record of
 * another length (HUSH_EHANDSHAKE, judged at its LENGTH), a forged record of the right
 * length (HUSH_EAUTH), going away (HUSH_ECLOSED); and an initiator that completes the
 * handshake but sends data first fails it too (HUSH_EHANDSHAKE). A real client then
 * opens, and the server's first bytes reach it.
 */
static void handshake_conn_nnpsk0_replayed_first_flight_never_opens(void **state)
{
	struct proto_fx *f = *state;
	struct hush_conn_config cc;
	hush_conn_config_init(&cc);
	cc.handshake_timeout_ms = 400;
	uint8_t flight[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t flen = 0;
	struct hush_handshake *cap;
	assert_int_equal(hush_handshake_new(&cap, &f->d.cc, HUSH_SIDE_CLIENT), 0);
	assert_int_equal(hush_handshake_next(cap, flight, sizeof(flight), &flen), 0);
	struct end srv[5];
	int peer[5];
	for (int round = 0; round < 10; round++) {
		memset(srv, 0, sizeof(srv));
		for (int i = 0; i < 5; i++) {
			int sv[2];
			assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
			peer[i] = sv[1];
			start(&f->e, sv[0], &srv[i], &cc, &f->d.sc, HUSH_SIDE_SERVER);
			write_all(peer[i], flight, flen);
		}
		uint8_t m2[2048];
		for (int i = 0; i < 5; i++) {
			size_t n = drain_fd(&f->e, peer[i], m2, sizeof(m2));
			assert_true(n > 0); /* the server answered the replay */
		}
		uint8_t junk[64];
		testlib_fill(junk, sizeof(junk), (uint64_t)round);
		/* 0: silent. 1: a close-record-sized record. 2: a forged confirmation. */
		hush__store_le32(junk, 20);
		write_all(peer[1], junk, 24);
		hush__store_le32(junk + 24, 21);
		hush__store_le32(junk + 28, HUSH_RECORD_TYPE);
		write_all(peer[2], junk + 24, 25);
		/* 3: goes away. */
		close(peer[3]);
		peer[3] = -1;
		/* 4: a record announcing the receive limit. */
		hush__store_le32(junk, HUSH_RECORD_DEFAULT_RECV_LIMIT);
		write_all(peer[4], junk, 8);
		run_until(&f->e, 2000, all_failed, srv);
		assert_int_equal(srv[0].err, HUSH_ETIMEDOUT);
		assert_int_equal(srv[1].err, HUSH_EHANDSHAKE);
		assert_int_equal(srv[2].err, HUSH_EAUTH);
		assert_int_equal(srv[3].err, HUSH_ECLOSED);
		assert_int_equal(srv[4].err, HUSH_EHANDSHAKE);
		for (int i = 0; i < 5; i++) {
			assert_int_equal(srv[i].opened, 0);
			end_free(&srv[i]);
			if (peer[i] >= 0) {
				close(peer[i]);
			}
		}
	}
	hush_handshake_free(cap);
	/* An initiator that completes the handshake but whose first record is data. */
	{
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		struct end x = {0};
		start(&f->e, sv[0], &x, &cc, &f->d.sc, HUSH_SIDE_SERVER);
		struct hush_handshake *hs;
		assert_int_equal(hush_handshake_new(&hs, &f->d.cc, HUSH_SIDE_CLIENT), 0);
		assert_int_equal(hush_handshake_next(hs, flight, sizeof(flight), &flen), 0);
		write_all(sv[1], flight, flen);
		uint8_t m2[2048];
		size_t n = drain_fd(&f->e, sv[1], m2, sizeof(m2));
		size_t used = 0;
		assert_int_equal(hush_handshake_read(hs, m2, n, &used), 0);
		assert_true(hush_handshake_done(hs));
		struct hush_handshake_result res;
		assert_int_equal(hush_handshake_result(hs, &res), 0);
		struct hush_record *rec;
		assert_int_equal(hush_record_new(&rec, res.record_protocol, res.key, res.key_len,
						 res.side),
				 0);
		uint8_t frame[64];
		memcpy(frame + HUSH_RECORD_HEADER_SIZE, "hi", 2);
		size_t fl;
		assert_int_equal(hush_record_seal(rec, frame, sizeof(frame), 2, &fl), 0);
		write_all(sv[1], frame, fl);
		run_until(&f->e, 2000, end_done, &x);
		assert_int_equal(x.opened, 0);
		assert_int_equal(x.err, HUSH_EHANDSHAKE);
		hush_record_free(rec);
		hush_handshake_result_wipe(&res);
		hush_handshake_free(hs);
		end_free(&x);
		close(sv[1]);
	}
	/* A real client opens, and the server's greeting written at OPEN reaches it. */
	{
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		struct end a = {0};
		struct end b = {.greeting = (const uint8_t *)"hello", .greeting_len = 5};
		start(&f->e, sv[0], &a, NULL, &f->d.cc, HUSH_SIDE_CLIENT);
		start(&f->e, sv[1], &b, NULL, &f->d.sc, HUSH_SIDE_SERVER);
		struct two t = {&a, &b};
		run_until(&f->e, 2000, both_open_or_failed, &t);
		assert_int_equal(a.opened, 1);
		assert_int_equal(b.opened, 1);
		for (int i = 0; i < 200 && a.len < 5; i++) {
			event_base_loop(f->e.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
			usleep(1000);
		}
		assert_int_equal(a.len, 5);
		assert_memory_equal(a.data, "hello", 5);
		end_free(&a);
		end_free(&b);
	}
}

/* ---- Listener ---- */

struct server {
	struct env *e;
	struct end ends[16];
	int n;
	struct hush_listener *l;
};

static void srv_on_accept(struct hush_listener *l, struct hush_conn *c,
			  const struct sockaddr *addr, socklen_t len, void *arg)
{
	struct server *s = arg;
	(void)l;
	(void)addr;
	(void)len;
	assert_true(s->n < 16);
	s->ends[s->n].conn = c;
	hush_conn_set_arg(c, &s->ends[s->n]);
	assert_ptr_equal(hush_conn_get_arg(c), &s->ends[s->n]);
	s->n++;
}

static int tcp_listener(uint16_t *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	socklen_t sl = sizeof(sa);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static int tcp_connect(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

struct cap_wait {
	struct server *s;
	int accepted;
	int failed;
	struct end *client;
};

static bool accepted_n(void *arg)
{
	struct cap_wait *w = arg;
	int failed = 0;
	for (int i = 0; i < w->s->n; i++) {
		failed += w->s->ends[i].err != 0;
	}
	return w->s->n >= w->accepted && failed >= w->failed &&
	       (w->client == NULL || w->client->opened || w->client->err);
}

/* A TCP connection to port from 127.0.0.x (x = host). */
static int tcp_connect_from(uint16_t port, int host)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in src = {.sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)host)};
	assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Sends a well-formed first flight (hello and message 1) of hc's protocol on fd, then
 * nothing more: the peer's handshake is past its first message and stalls there. */
static void send_first_flight(int fd, const struct hush_handshake_config *hc)
{
	struct hush_handshake *hs;
	uint8_t out[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t n = 0;
	assert_int_equal(hush_handshake_new(&hs, hc, HUSH_SIDE_CLIENT), 0);
	assert_int_equal(hush_handshake_next(hs, out, sizeof(out), &n), 0);
	assert_int_equal(send(fd, out, n, 0), (ssize_t)n);
	hush_handshake_free(hs);
}

static void listener_setup(struct env *e, struct server *s, struct ids *d,
			   struct hush_conn_config *cc, struct hush_listener_config *lc,
			   uint16_t *port)
{
	hush_conn_config_init(cc);
	s->e = e;
	hush_listener_config_init(lc);
	lc->handshake = &d->sc;
	lc->conn = cc;
	lc->callbacks = &end_cb;
	lc->on_accept = srv_on_accept;
	lc->accept_arg = s;
	(void)port;
}

/* The usual listener test: a server whose listener (made by the test, from lc) starts
 * XX handshakes with d's identities; the clean end frees what it accepted. */
struct lis {
	struct env e;
	struct ids d;
	struct hush_conn_config cc;
	struct server s;
	struct hush_listener_config lc;
	uint16_t port;
};

static int lis_setup(void **state)
{
	struct lis *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	env_init(&f->e, NULL);
	ids_init(&f->d, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	listener_setup(&f->e, &f->s, &f->d, &f->cc, &f->lc, &f->port);
	*state = f;
	return 0;
}

/* Frees the ends the listener accepted, then the listener (unless the test did and
 * cleared s.l), then checks the loop is clean. */
static int lis_teardown(void **state)
{
	struct lis *f = *state;
	for (int i = 0; i < f->s.n; i++) {
		end_free(&f->s.ends[i]);
	}
	hush_listener_free(f->s.l);
	ids_done(&f->d);
	env_done(&f->e);
	free(f);
	return 0;
}

#define LIS(fn) cmocka_unit_test_setup_teardown(fn, lis_setup, lis_teardown)

/* Runs the loop until the server's answer arrives on fd (its message 2: the server
 * took the first message), or 2 s pass. */
static void run_until_answered(struct env *e, int fd)
{
	for (int i = 0; i < 2000; i++) {
		event_base_loop(e->base, EVLOOP_NONBLOCK);
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, 1) == 1) {
			return;
		}
	}
	fail_msg("no answer to the first flight");
}

static bool end_done(void *arg)
{
	struct end *x = arg;
	return x->opened || x->err;
}

/*
 * At the cap the listener keeps accepting, and each newcomer evicts the handshake
 * that made the least progress: stalled peers that sent nothing go first, oldest first,
 * before a peer that sent its whole first message; a real client arriving at the cap
 * completes. A listener freed while handshakes run stays until they end.
 */
static void listener_at_cap_evicts_the_least_advanced_handshake(void **state)
{
	struct lis *f = *state;
	f->cc.handshake_timeout_ms = 5000;
	f->lc.max_handshakes = 2;
	f->lc.first_message_timeout_ms = 0;
	f->lc.min_stall_ms = 5; /* the test waits longer before each newcomer */
	int lfd = tcp_listener(&f->port);
	assert_int_equal(hush_listener_new(&f->s.l, f->e.loop, lfd, &f->lc), 0);
	/* ends[0] sends its first message, ends[1] nothing. */
	int p[5];
	p[0] = tcp_connect(f->port);
	send_first_flight(p[0], &f->d.cc);
	struct cap_wait w = {.s = &f->s, .accepted = 1};
	run_until(&f->e, 2000, accepted_n, &w);
	run_until_answered(&f->e, p[0]);
	p[1] = tcp_connect(f->port);
	w.accepted = 2;
	run_until(&f->e, 2000, accepted_n, &w);
	assert_int_equal(hush_listener_handshakes(f->s.l), 2);
	/* At the cap: the stalled one that sent nothing gives way, not the older one. */
	usleep(20000);
	p[2] = tcp_connect(f->port);
	w.accepted = 3;
	w.failed = 1;
	run_until(&f->e, 2000, accepted_n, &w);
	assert_int_equal(f->s.n, 3);
	assert_int_equal(f->s.ends[0].err, 0);
	assert_int_equal(f->s.ends[1].err, HUSH_EBUSY);
	assert_int_equal(hush_listener_handshakes(f->s.l), 2);
	/* A real client at the cap evicts ends[2] (still waiting for a first message) and
	 * completes; ends[0] is still in progress. */
	struct end client = {0};
	usleep(20000);
	start(&f->e, tcp_connect(f->port), &client, NULL, &f->d.cc, HUSH_SIDE_CLIENT);
	w.accepted = 4;
	w.failed = 2;
	w.client = &client;
	run_until(&f->e, 3000, accepted_n, &w);
	assert_int_equal(client.err, 0);
	assert_int_equal(client.opened, 1);
	assert_int_equal(f->s.ends[2].err, HUSH_EBUSY);
	/* In XX the server opens last, on message 3. */
	run_until(&f->e, 2000, end_done, &f->s.ends[3]);
	assert_int_equal(f->s.ends[3].opened, 1);
	assert_int_equal(f->s.ends[0].err, 0);
	assert_int_equal(hush_listener_handshakes(f->s.l), 1);
	/* With no peer left that is waiting for a first message, the oldest goes. */
	p[3] = tcp_connect(f->port);
	send_first_flight(p[3], &f->d.cc);
	w.accepted = 5;
	run_until(&f->e, 2000, accepted_n, &w);
	run_until_answered(&f->e, p[3]);
	usleep(20000);
	p[4] = tcp_connect(f->port);
	w.accepted = 6;
	w.failed = 3;
	w.client = NULL;
	run_until(&f->e, 2000, accepted_n, &w);
	assert_int_equal(f->s.ends[0].err, HUSH_EBUSY);
	assert_int_equal(f->s.ends[4].err, 0);
	assert_int_equal(f->s.ends[5].err, 0);
	struct hush_listener_stats st;
	hush_listener_get_stats(f->s.l, &st);
	assert_int_equal(st.accepted, 6);
	assert_int_equal(st.evicted, 3);
	assert_int_equal(st.refused_per_source, 0);
	/* Freed with two handshakes running: they go on to their deadline. */
	hush_listener_free(f->s.l);
	f->s.l = NULL;
	w.failed = 5;
	run_until(&f->e, 8000, accepted_n, &w);
	assert_int_equal(f->s.ends[4].err, HUSH_ETIMEDOUT);
	assert_int_equal(f->s.ends[5].err, HUSH_ETIMEDOUT);
	for (int i = 0; i < 5; i++) {
		close(p[i]);
	}
	end_free(&client);
}

/*
 * The first message has a deadline of its own: a peer that sends nothing fails with
 * HUSH_ETIMEDOUT at first_message_timeout_ms, well before the handshake's deadline; a
 * peer whose first message came whole is held only to the handshake's deadline.
 */
static void listener_first_message_deadline_fails_stalled_peers(void **state)
{
	struct lis *f = *state;
	f->cc.handshake_timeout_ms = 3000;
	f->lc.first_message_timeout_ms = 400;
	int lfd = tcp_listener(&f->port);
	assert_int_equal(hush_listener_new(&f->s.l, f->e.loop, lfd, &f->lc), 0);
	struct timeval t0, t1, t2;
	gettimeofday(&t0, NULL);
	int silent = tcp_connect(f->port);
	int trickle = tcp_connect(f->port);
	/* Half a first flight: not whole, so the first deadline applies. */
	assert_int_equal(send(trickle, "\x00\x24hush/", 7, 0), 7);
	int spoke = tcp_connect(f->port);
	send_first_flight(spoke, &f->d.cc);
	struct cap_wait w = {.s = &f->s, .accepted = 3, .failed = 2};
	run_until(&f->e, 6000, accepted_n, &w);
	gettimeofday(&t1, NULL);
	long ms1 = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
	int spoke_i = -1;
	for (int i = 0; i < f->s.n; i++) {
		if (f->s.ends[i].err == 0) {
			spoke_i = i;
		} else {
			assert_int_equal(f->s.ends[i].err, HUSH_ETIMEDOUT);
		}
	}
	assert_true(spoke_i >= 0);
	/* The first deadline, well before the whole handshake's (3 s). */
	assert_true(ms1 >= 390 && ms1 < 2000);
	struct hush_listener_stats st;
	hush_listener_get_stats(f->s.l, &st);
	assert_int_equal(st.first_timeouts, 2);
	w.failed = 3;
	run_until(&f->e, 6000, accepted_n, &w);
	gettimeofday(&t2, NULL);
	long ms2 = (t2.tv_sec - t0.tv_sec) * 1000 + (t2.tv_usec - t0.tv_usec) / 1000;
	assert_int_equal(f->s.ends[spoke_i].err, HUSH_ETIMEDOUT);
	assert_true(ms2 >= 2900);
	close(silent);
	close(trickle);
	close(spoke);
}

/* Reads until EOF or reset; true when the socket was closed by the peer. */
static bool closed_by_peer(int fd, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char b[64];
	ssize_t n = recv(fd, b, sizeof(b), 0);
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

/*
 * At the cap one source address holds at most max_per_source handshakes: its next
 * connection is closed at once and never reaches the application (it may not take the
 * place of another's handshake), while a client from another address evicts a stalled
 * peer and completes; once the source holds fewer, it may connect again.
 */
static void listener_at_cap_limits_handshakes_per_source(void **state)
{
	struct lis *f = *state;
	f->lc.max_handshakes = 3;
	f->lc.max_per_source = 2;
	f->lc.first_message_timeout_ms = 0;
	f->lc.min_stall_ms = 5; /* the test waits longer before each newcomer */
	int lfd = tcp_listener(&f->port);
	assert_int_equal(hush_listener_new(&f->s.l, f->e.loop, lfd, &f->lc), 0);
	int a = tcp_connect_from(f->port, 5);
	int b = tcp_connect_from(f->port, 5);
	int c = tcp_connect_from(f->port, 6);
	struct cap_wait w = {.s = &f->s, .accepted = 3};
	run_until(&f->e, 2000, accepted_n, &w);
	assert_int_equal(hush_listener_handshakes(f->s.l), 3);
	usleep(20000);
	int refused = tcp_connect_from(f->port, 5);
	struct hush_listener_stats st = {0};
	for (int i = 0; i < 2000 && st.refused_per_source == 0; i++) {
		event_base_loop(f->e.base, EVLOOP_NONBLOCK);
		usleep(1000);
		hush_listener_get_stats(f->s.l, &st);
	}
	assert_int_equal(st.refused_per_source, 1);
	assert_true(closed_by_peer(refused, 1000));
	assert_int_equal(f->s.n, 3);
	/* Another address takes the place of the oldest stalled peer. */
	struct end client = {0};
	start(&f->e, tcp_connect_from(f->port, 7), &client, NULL, &f->d.cc, HUSH_SIDE_CLIENT);
	w.accepted = 4;
	w.failed = 1;
	w.client = &client;
	run_until(&f->e, 3000, accepted_n, &w);
	assert_int_equal(client.opened, 1);
	assert_int_equal(f->s.ends[0].err, HUSH_EBUSY);
	/* The source holds one handshake now: it may connect again. */
	run_until(&f->e, 2000, end_done, &f->s.ends[3]);
	int again = tcp_connect_from(f->port, 5);
	w.accepted = 5;
	w.client = NULL;
	run_until(&f->e, 2000, accepted_n, &w);
	assert_int_equal(f->s.n, 5);
	hush_listener_get_stats(f->s.l, &st);
	assert_int_equal(st.refused_per_source, 1);
	close(a);
	close(b);
	close(c);
	close(refused);
	close(again);
	end_free(&client);
}

/* A TCP connection to [::]:port, from 127.0.0.x (host > 0, as an IPv4 client of a
 * dual-stack socket: the listener sees ::ffff:127.0.0.x) or from ::1 (host 0). */
static int dual_connect(uint16_t port, int host)
{
	if (host > 0) {
		return tcp_connect_from(port, host);
	}
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port),
				  .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static bool refused_one_more(struct env *e, struct hush_listener *l, uint64_t want)
{
	struct hush_listener_stats st = {0};
	for (int i = 0; i < 2000 && st.refused_per_source < want; i++) {
		event_base_loop(e->base, EVLOOP_NONBLOCK);
		usleep(1000);
		hush_listener_get_stats(l, &st);
	}
	return st.refused_per_source == want;
}

/*
 * Sources on a dual-stack listener: an IPv4 client (seen as ::ffff:a.b.c.d) counts by
 * its IPv4 address, not as part of one IPv6 /64 with every other IPv4 client, and ::1
 * is a source of its own. Skipped where IPv6 loopback is missing.
 */
static void listener_sources_on_a_dual_stack_socket(void **state)
{
	(void)state;
	int lfd = socket(AF_INET6, SOCK_STREAM, 0);
	int off = 0;
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};
	if (lfd < 0 || setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) < 0 ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (lfd >= 0) {
			close(lfd);
		}
		skip();
	}
	socklen_t sl = sizeof(sa);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	uint16_t port = ntohs(sa.sin6_port);
	struct env e;
	env_init(&e, NULL);
	struct ids d;
	ids_init(&d, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	struct hush_conn_config cc;
	struct server s = {0};
	struct hush_listener_config lc;
	uint16_t unused;
	listener_setup(&e, &s, &d, &cc, &lc, &unused);
	lc.max_handshakes = 2;
	lc.max_per_source = 1;
	lc.first_message_timeout_ms = 0;
	lc.min_stall_ms = 5;
	assert_int_equal(hush_listener_new(&s.l, e.loop, lfd, &lc), 0);
	int fds[5];
	fds[0] = dual_connect(port, 5);
	fds[1] = dual_connect(port, 0);
	struct cap_wait w = {.s = &s, .accepted = 2};
	run_until(&e, 2000, accepted_n, &w);
	assert_int_equal(hush_listener_handshakes(s.l), 2);
	usleep(20000);
	/* 127.0.0.5 holds its share: refused. */
	fds[2] = dual_connect(port, 5);
	assert_true(refused_one_more(&e, s.l, 1));
	/* 127.0.0.6 is another source: it takes a stalled one's place. */
	fds[3] = dual_connect(port, 6);
	w.accepted = 3;
	w.failed = 1;
	run_until(&e, 2000, accepted_n, &w);
	assert_int_equal(s.n, 3);
	usleep(20000);
	/* ::1 still holds its share: refused. */
	fds[4] = dual_connect(port, 0);
	assert_true(refused_one_more(&e, s.l, 2));
	assert_int_equal(s.n, 3);
	for (int i = 0; i < 5; i++) {
		close(fds[i]);
	}
	for (int i = 0; i < s.n; i++) {
		end_free(&s.ends[i]);
	}
	hush_listener_free(s.l);
	ids_done(&d);
	env_done(&e);
}

/*
 * A burst of real clients beyond the cap is not a flood: peers whose bytes already wait
 * are never evicted; the listener waits with the rest in the backlog, as before, and
 * every client completes.
 */
static void listener_burst_beyond_the_cap_waits_and_completes(void **state)
{
	struct lis *f = *state;
	f->lc.max_handshakes = 2;
	int lfd = tcp_listener(&f->port);
	assert_int_equal(listen(lfd, 16), 0);
	enum { N = 8 };
	struct end clients[N] = {{0}};
	for (int i = 0; i < N; i++) {
		start(&f->e, tcp_connect(f->port), &clients[i], NULL, &f->d.cc, HUSH_SIDE_CLIENT);
	}
	/* Every first flight is sent before the listener exists: it accepts them all in
	 * one burst, each with its bytes waiting. */
	for (int i = 0; i < 10; i++) {
		event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	}
	assert_int_equal(hush_listener_new(&f->s.l, f->e.loop, lfd, &f->lc), 0);
	struct cap_wait w = {.s = &f->s, .accepted = N};
	run_until(&f->e, 5000, accepted_n, &w);
	for (int i = 0; i < N; i++) {
		run_until(&f->e, 3000, end_done, &clients[i]);
		assert_int_equal(clients[i].err, 0);
		assert_int_equal(clients[i].opened, 1);
	}
	for (int i = 0; i < N; i++) {
		run_until(&f->e, 3000, end_done, &f->s.ends[i]);
		assert_int_equal(f->s.ends[i].opened, 1);
	}
	struct hush_listener_stats st;
	hush_listener_get_stats(f->s.l, &st);
	assert_int_equal(st.evicted, 0);
	for (int i = 0; i < N; i++) {
		end_free(&clients[i]);
		end_free(&f->s.ends[i]);
	}
}

static void listener_bad_configuration_fails_with_einval(void **state)
{
	struct proto_fx *f = *state;
	struct hush_listener_config lc;
	hush_listener_config_init(&lc);
	struct hush_listener *l = NULL;
	uint16_t port;
	/* Missing handshake, callbacks and on_accept: the socket is closed anyway. */
	int fd = tcp_listener(&port);
	assert_int_equal(hush_listener_new(&l, f->e.loop, fd, &lc), HUSH_EINVAL);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	lc.handshake = &f->d.sc;
	lc.callbacks = &end_cb;
	lc.on_accept = srv_on_accept;
	lc.max_handshakes = 0;
	assert_int_equal(hush_listener_new(&l, f->e.loop, tcp_listener(&port), &lc), HUSH_EINVAL);
	lc.max_handshakes = 1;
	lc.max_per_source = 0;
	assert_int_equal(hush_listener_new(&l, f->e.loop, tcp_listener(&port), &lc), HUSH_EINVAL);
	assert_null(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(handshake_conn_every_protocol_opens_exchanges_and_closes),
		PROTO(handshake_conn_established_costs_what_raw_keys_cost, XX_AESGCM),
		PROTO(handshake_conn_eof_without_close_record_is_truncated, XX_CHACHAPOLY),
		IDS(handshake_conn_unknown_server_fails_with_epeer_at_client, XX_AESGCM),
		IDS(handshake_conn_unknown_client_fails_with_epeer_at_server, XXPSK3_AESGCM),
		IDS(handshake_conn_wrong_psk_fails_with_ehandshake, NNPSK0_AESGCM),
		cmocka_unit_test(handshake_conn_protocol_or_parameter_mismatch_fails_with_eparams),
		IDS(handshake_conn_stalling_or_trickling_peer_times_out, XX_AESGCM),
		IDS(handshake_conn_bad_peer_bytes_fail_with_specific_codes, XX_AESGCM),
		PROTO(handshake_conn_bytes_after_close_record_are_ignored, NNPSK0_CHACHAPOLY),
		IDS(handshake_conn_free_during_handshake_or_in_open_is_clean, XX_AESGCM),
		cmocka_unit_test(handshake_conn_state_is_wiped_when_freed),
		IDS(handshake_conn_allocation_failure_at_every_step_is_contained, XXPSK3_CHACHAPOLY),
		cmocka_unit_test(handshake_conn_churn_returns_heap_to_its_start),
		PROTO(handshake_conn_nnpsk0_replayed_first_flight_never_opens, NNPSK0_AESGCM),
		LIS(listener_at_cap_evicts_the_least_advanced_handshake),
		LIS(listener_first_message_deadline_fails_stalled_peers),
		LIS(listener_at_cap_limits_handshakes_per_source),
		LIS(listener_burst_beyond_the_cap_waits_and_completes),
		cmocka_unit_test(listener_sources_on_a_dual_stack_socket),
		PROTO(listener_bad_configuration_fails_with_einval, XX_AESGCM),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
