/*
 * Tests for src/transport: hush_conn over socketpairs and loopback TCP, against a "raw
 * peer" that frames records with hush_record directly and writes ciphertext with any
 * split it likes. Every test ends with no event left on the loop and every pool buffer
 * back in the pool.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "envlib.h"
#include "testlib.h"
#include "transport/transport-internal.h"

static const uint8_t KEY44[44] = {
	1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
	23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44};

/* ---- Fixture ---- */

/* What a connection under test saw. */
struct sink {
	uint8_t *data;
	size_t len;
	size_t cap;
	int opened;
	int eof;
	int shut;
	int err;
	int writable;
	int free_on_data;   /* free the connection from inside on_data */
	int free_on_event;  /* free it from inside on_event */
	int stop_after;     /* break the loop once len reaches this (0: never) */
	int pause_on_data;  /* pause reading from inside on_data */
	struct hush_conn *conn;
	struct event_base *base;
};

static void sink_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct sink *s = arg;
	if (s->len + len > s->cap) {
		size_t cap = (s->len + len) * 2;
		s->data = realloc(s->data, cap);
		assert_non_null(s->data);
		s->cap = cap;
	}
	memcpy(s->data + s->len, data, len);
	s->len += len;
	if (s->free_on_data) {
		hush_conn_free(c);
		s->conn = NULL;
		event_base_loopbreak(s->base);
		return;
	}
	if (s->pause_on_data) {
		hush_conn_pause_reading(c);
	}
	if (s->stop_after != 0 && s->len >= (size_t)s->stop_after) {
		event_base_loopbreak(s->base);
	}
}

static void sink_on_writable(struct hush_conn *c, void *arg)
{
	struct sink *s = arg;
	(void)c;
	s->writable++;
}

static void sink_on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct sink *s = arg;
	switch (ev) {
	case HUSH_CONN_EV_OPEN:
		s->opened++;
		break;
	case HUSH_CONN_EV_EOF:
		s->eof++;
		event_base_loopbreak(s->base);
		break;
	case HUSH_CONN_EV_SHUTDOWN:
		s->shut++;
		break;
	case HUSH_CONN_EV_ERROR:
		s->err = err;
		event_base_loopbreak(s->base);
		break;
	}
	if (s->free_on_event) {
		hush_conn_free(c);
		s->conn = NULL;
	}
}

static const struct hush_conn_callbacks sink_cb = {sink_on_data, sink_on_writable,
						   sink_on_event};

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

/* A hush connection on fd with the sink s, started as side. */
static struct hush_conn *open_conn(struct env *e, int fd, struct sink *s,
				   const struct hush_conn_config *cfg, enum hush_side side)
{
	struct hush_conn *c;
	s->base = e->base;
	assert_int_equal(hush_conn_new(&c, e->loop, fd, cfg, &sink_cb, s), 0);
	assert_int_equal(hush_conn_start_raw(c, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44,
					     sizeof(KEY44), side),
			 0);
	s->conn = c;
	return c;
}

/* ---- The raw peer: blocking I/O and hush_record, any split ---- */

struct peer {
	int fd;
	struct hush_record *rec;
};

static void peer_init(struct peer *p, int fd, enum hush_side side, size_t frame)
{
	p->fd = fd;
	assert_int_equal(hush_record_new(&p->rec, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44,
					 sizeof(KEY44), side),
			 0);
	if (frame != 0) {
		assert_int_equal(hush_record_set_limits(p->rec, frame, 0), 0);
	}
}

static void peer_done(struct peer *p)
{
	hush_record_free(p->rec);
	if (p->fd >= 0) {
		close(p->fd);
	}
}

/* Seals data into records (of the peer's frame size) and returns the wire bytes. */
static uint8_t *peer_seal(struct peer *p, const uint8_t *data, size_t len, size_t *wire_len)
{
	size_t maxp = hush_record_max_payload(p->rec);
	size_t nrec = len == 0 ? 1 : (len + maxp - 1) / maxp;
	uint8_t *w = malloc(len + nrec * HUSH_RECORD_OVERHEAD);
	assert_non_null(w);
	size_t off = 0;
	size_t done = 0;
	do {
		size_t k = len - done < maxp ? len - done : maxp;
		memcpy(w + off + HUSH_RECORD_HEADER_SIZE, data + done, k);
		size_t flen;
		assert_int_equal(hush_record_seal(p->rec, w + off, k + HUSH_RECORD_OVERHEAD, k,
						  &flen),
				 0);
		off += flen;
		done += k;
	} while (done < len);
	*wire_len = off;
	return w;
}

/* Reads and opens records from the peer's socket until want plaintext bytes arrived;
 * the event loop runs between reads so the connection under test can send. */
static void peer_recv(struct env *e, struct peer *p, uint8_t *out, size_t want)
{
	size_t cap = 2 * 1024 * 1024;
	uint8_t *buf = malloc(cap);
	size_t have = 0;
	size_t got = 0;
	int idle = 0;
	assert_non_null(buf);
	fcntl(p->fd, F_SETFL, fcntl(p->fd, F_GETFL) | O_NONBLOCK);
	while (got < want) {
		ssize_t k = read(p->fd, buf + have, cap - have);
		if (k <= 0) {
			assert_true(idle++ < 20000);
			event_base_loop(e->base, EVLOOP_NONBLOCK | EVLOOP_ONCE);
			if (k < 0) {
				struct pollfd pfd = {p->fd, POLLIN, 0};
				poll(&pfd, 1, 1);
			}
			assert_true(k != 0);
			continue;
		}
		idle = 0;
		have += (size_t)k;
		size_t need;
		int rc;
		while ((rc = hush_record_parse(p->rec, buf, have, &need)) == 0) {
			struct hush_iovec pt;
			assert_int_equal(hush_record_open(p->rec, buf, need, &pt), 0);
			assert_true(got + pt.len <= want);
			memcpy(out + got, pt.base, pt.len);
			got += pt.len;
			memmove(buf, buf + need, have - need);
			have -= need;
		}
		assert_int_equal(rc, HUSH_EAGAIN);
	}
	free(buf);
}

/* ---- Tests ---- */

/* ---- The usual test: a connection on a socketpair, the raw peer at the other end ---- */

struct one {
	struct env e;
	int sv[2];
	struct sink s;
	struct peer p; /* started by the test (peer_init), on sv[1] */
};

static int one_setup(void **state)
{
	struct one *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	env_init(&f->e, NULL);
	pair(f->sv);
	*state = f;
	return 0;
}

/* The usual end: the connection (unless a callback freed it) and the peer go, then the
 * loop and the pool must be clean. */
static int one_teardown(void **state)
{
	struct one *f = *state;
	hush_conn_free(f->s.conn);
	if (f->p.rec != NULL) {
		peer_done(&f->p);
	} else {
		close(f->sv[1]); /* the test failed before it started the peer */
	}
	env_done(&f->e);
	free(f->s.data);
	free(f);
	return 0;
}

#define ONE(fn) cmocka_unit_test_setup_teardown(fn, one_setup, one_teardown)

static void conn_idle_connection_holds_no_buffers(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_CLIENT);
	run_for_ms(&f->e, 20);
	assert_int_equal(f->s.opened, 1);
	assert_int_equal(hush_conn_buffers_held(c), 0);
	struct hush_pool_stats st;
	hush_pool_stats(f->e.pool, &st);
	assert_int_equal(st.total.in_use, 0);
}

/* Timeouts are compared as signed differences of a 32-bit clock: one of 2^31 ms or more
 * is refused rather than never (or at once) expiring. */
static void conn_timeout_beyond_int32_is_refused(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	int sv[2];
	pair(sv);
	uint32_t *fields[4];
	struct hush_conn_config cfg;
	fields[0] = &cfg.read_timeout_ms;
	fields[1] = &cfg.write_timeout_ms;
	fields[2] = &cfg.handshake_timeout_ms;
	fields[3] = &cfg.record_timeout_ms;
	for (int i = 0; i < 4; i++) {
		hush_conn_config_init(&cfg);
		cfg.flags = 0;
		*fields[i] = (uint32_t)INT32_MAX + 1;
		struct hush_conn *c = (struct hush_conn *)&e; /* must stay untouched */
		assert_int_equal(hush_conn_new(&c, e.loop, sv[0], &cfg, NULL, NULL), HUSH_EINVAL);
		assert_ptr_equal(c, (struct hush_conn *)&e);
		*fields[i] = INT32_MAX;
		assert_int_equal(hush_conn_new(&c, e.loop, sv[0], &cfg, NULL, NULL), 0);
		hush_conn_free(c);
	}
	close(sv[0]);
	close(sv[1]);
	env_done(&e);
}

static void conn_records_one_byte_per_write_are_delivered_whole(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_SERVER);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_CLIENT, 0);
	uint8_t msg[3000];
	testlib_fill(msg, sizeof(msg), 1);
	size_t wl;
	uint8_t *w = peer_seal(&f->p, msg, sizeof(msg), &wl);
	for (size_t i = 0; i < wl; i++) {
		write_all(f->p.fd, w + i, 1);
		event_base_loop(f->e.base, EVLOOP_NONBLOCK);
		if (i + 1 < wl) {
			/* Between bytes the connection holds at most the partial record. */
			assert_true(hush_conn_buffers_held(c) <= 1);
		}
	}
	assert_int_equal(f->s.len, sizeof(msg));
	assert_memory_equal(f->s.data, msg, sizeof(msg));
	assert_int_equal(hush_conn_buffers_held(c), 0);
	free(w);
}

static void conn_random_split_points_deliver_exact_bytes(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_SERVER);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_CLIENT, 1000);
	size_t n = 200000;
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 2);
	size_t wl;
	uint8_t *w = peer_seal(&f->p, msg, n, &wl);
	srand(7);
	for (size_t off = 0; off < wl;) {
		size_t k = 1 + (size_t)rand() % 3000;
		if (k > wl - off) {
			k = wl - off;
		}
		write_all(f->p.fd, w + off, k);
		off += k;
		event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	}
	while (f->s.len < n) {
		event_base_loop(f->e.base, EVLOOP_ONCE);
	}
	assert_memory_equal(f->s.data, msg, n);
	assert_int_equal(hush_conn_buffers_held(c), 0);
	free(w);
	free(msg);
}

static void conn_large_records_from_peer_are_accepted(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_SERVER);
	/* 1 MiB records: LENGTH = 1 MiB exactly, the largest a gRPC peer may send. */
	peer_init(&f->p, f->sv[1], HUSH_SIDE_CLIENT, HUSH_RECORD_DEFAULT_RECV_LIMIT + 4);
	size_t n = 3 * (HUSH_RECORD_DEFAULT_RECV_LIMIT - 20);
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 3);
	size_t wl;
	uint8_t *w = peer_seal(&f->p, msg, n, &wl);
	fcntl(f->p.fd, F_SETFL, fcntl(f->p.fd, F_GETFL) | O_NONBLOCK);
	size_t off = 0;
	while (f->s.len < n) {
		if (off < wl) {
			ssize_t k = write(f->p.fd, w + off, wl - off);
			if (k > 0) {
				off += (size_t)k;
			}
		}
		event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	}
	assert_memory_equal(f->s.data, msg, n);
	assert_int_equal(hush_conn_buffers_held(c), 0);
	free(w);
	free(msg);
}

static void conn_eight_mib_message_round_trips(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_CLIENT);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_SERVER, 0);
	run_for_ms(&f->e, 1);
	size_t n = 8u << 20;
	uint8_t *msg = malloc(n);
	uint8_t *got = malloc(n);
	testlib_fill(msg, n, 4);
	int rc = hush_conn_write(c, msg, n);
	assert_true(rc == 0 || rc == 1);
	peer_recv(&f->e, &f->p, got, n);
	assert_memory_equal(got, msg, n);
	/* Everything sent: the write buffers went back to the pool. */
	event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	assert_int_equal(hush_conn_queued(c), 0);
	assert_int_equal(hush_conn_buffers_held(c), 0);
	free(msg);
	free(got);
}

static void conn_small_writes_in_one_callback_share_one_record(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	int sv[2];
	pair(sv);
	struct sink s = {0};
	struct hush_conn *c = open_conn(&e, sv[0], &s, NULL, HUSH_SIDE_CLIENT);
	run_for_ms(&e, 1);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(hush_conn_write(c, "0123456789", 10), 0);
	}
	event_base_loop(e.base, EVLOOP_NONBLOCK);
	/* One record: 24 bytes of overhead around 1000 bytes. */
	uint8_t buf[4096];
	ssize_t k = read(sv[1], buf, sizeof(buf));
	assert_int_equal(k, 1000 + HUSH_RECORD_OVERHEAD);
	assert_int_equal(hush__load_le32(buf), 1000 + 20);
	hush_conn_free(c);
	close(sv[1]);
	env_done(&e);
	free(s.data);
}

static void conn_large_small_large_writes_arrive_in_order(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_CLIENT);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_SERVER, 0);
	run_for_ms(&f->e, 1);
	size_t sizes[] = {100000, 7, 50001, 16360, 1, 40000};
	size_t n = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		n += sizes[i];
	}
	uint8_t *msg = malloc(n);
	uint8_t *got = malloc(n);
	assert_true(msg != NULL && got != NULL);
	testlib_fill(msg, n, 5);
	unsigned idle_ctx = f->e.loop->nctx;
	size_t off = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int rc = hush_conn_write(c, msg + off, sizes[i]);
		assert_true(rc == 0 || rc == 1);
		off += sizes[i];
	}
	peer_recv(&f->e, &f->p, got, n);
	assert_memory_equal(got, msg, n);
	/* Everything sent: the cipher contexts the writes sealed with are back in the
	 * loop's cache, and the buffers in the pool. */
	event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	assert_int_equal(f->e.loop->nctx, idle_ctx);
	assert_int_equal(hush_conn_buffers_held(c), 0);
	free(msg);
	free(got);
}

/* Writes in on_data, once: a small write, a large one, a small one, a large one. */
struct mixed {
	const uint8_t *msg;
	size_t n;
	int calls;
	int rc;
};

static void mixed_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct mixed *m = arg;
	(void)data;
	(void)len;
	if (m->calls++ > 0) {
		return;
	}
	size_t sizes[] = {5, 70000, 3, m->n - 70008};
	size_t off = 0;
	for (size_t i = 0; i < 4 && m->rc >= 0; i++) {
		m->rc = hush_conn_write(c, m->msg + off, sizes[i]);
		off += sizes[i];
	}
}

static void conn_large_writes_from_on_data_arrive_in_order(void **state)
{
	struct one *f = *state;
	size_t n = 200000;
	uint8_t *msg = malloc(n);
	uint8_t *got = malloc(n);
	assert_true(msg != NULL && got != NULL);
	testlib_fill(msg, n, 6);
	struct mixed m = {msg, n, 0, 0};
	static const struct hush_conn_callbacks cb = {mixed_on_data, NULL, NULL};
	struct hush_conn *c;
	assert_int_equal(hush_conn_new(&c, f->e.loop, f->sv[0], NULL, &cb, &m), 0);
	assert_int_equal(hush_conn_start_raw(c, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44,
					     sizeof(KEY44), HUSH_SIDE_CLIENT),
			 0);
	f->s.conn = c;
	peer_init(&f->p, f->sv[1], HUSH_SIDE_SERVER, 0);
	run_for_ms(&f->e, 1);
	size_t wl;
	uint8_t *w = peer_seal(&f->p, (const uint8_t *)"go", 2, &wl);
	write_all(f->p.fd, w, wl);
	free(w);
	peer_recv(&f->e, &f->p, got, n);
	assert_int_equal(m.calls, 1);
	assert_true(m.rc == 0 || m.rc == 1);
	assert_memory_equal(got, msg, n);
	free(msg);
	free(got);
}

static void conn_large_write_over_the_budget_leaves_the_queue(void **state)
{
	(void)state;
	struct hush_pool_config pc;
	hush_pool_config_init(&pc);
	/* Room for one write buffer of a record's size, not for the 64 KiB ones. */
	pc.budget = 40000;
	struct env e;
	env_init(&e, &pc);
	int sv[2];
	pair(sv);
	struct sink s = {0};
	struct peer p;
	struct hush_conn *c = open_conn(&e, sv[0], &s, NULL, HUSH_SIDE_CLIENT);
	peer_init(&p, sv[1], HUSH_SIDE_SERVER, 0);
	run_for_ms(&e, 1);
	size_t n = 100000;
	uint8_t *msg = malloc(n);
	assert_non_null(msg);
	testlib_fill(msg, n, 9);
	assert_int_equal(hush_conn_write(c, msg, 1000), 0);
	size_t queued = hush_conn_queued(c);
	unsigned held = hush_conn_buffers_held(c);
	assert_int_equal(hush_conn_write(c, msg + 1000, n - 1000), HUSH_ENOBUFS);
	assert_int_equal(hush_conn_queued(c), queued);
	assert_int_equal(hush_conn_buffers_held(c), held);
	assert_int_equal(hush_conn_error(c), 0);
	/* The peer opens what follows with the next counter: none was spent. */
	assert_int_equal(hush_conn_write(c, msg + 1000, 10), 0);
	uint8_t got[1010];
	peer_recv(&e, &p, got, sizeof(got));
	assert_memory_equal(got, msg, sizeof(got));
	hush_conn_free(c);
	peer_done(&p);
	free(msg);
	free(s.data);
	env_done(&e);
}

/* f's connection in pinned mode, client side, with its raw peer, both ready. */
static struct hush_conn *open_pinned(struct one *f)
{
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.flags |= HUSH_CONN_PINNED;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, &cfg, HUSH_SIDE_CLIENT);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_SERVER, 0);
	run_for_ms(&f->e, 1);
	return c;
}

static void conn_pinned_mode_large_write_round_trips(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_pinned(f);
	size_t n = 150000;
	uint8_t *msg = malloc(n);
	uint8_t *got = malloc(n);
	assert_true(msg != NULL && got != NULL);
	testlib_fill(msg, n, 10);
	assert_int_equal(hush_conn_write(c, msg, 3), 0);
	int rc = hush_conn_write(c, msg + 3, n - 3);
	assert_true(rc == 0 || rc == 1);
	peer_recv(&f->e, &f->p, got, n);
	assert_memory_equal(got, msg, n);
	event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	assert_int_equal(hush_conn_buffers_held(c), 2);
	free(msg);
	free(got);
}

/*
 * Replies written from on_data: what each of two connections, readable in the same loop
 * iteration, saw of the other when its own on_data ran.
 */
struct echo_pair {
	struct hush_conn *conn[2];
	struct hush_pool *pool;
	int calls[2];
	int order;	      /* on_data calls so far, both connections */
	int second;	      /* which connection ran second (-1: not yet) */
	size_t other_queued;  /* the first one's queued bytes, seen by the second */
	unsigned other_held;  /* the first one's buffers, seen by the second */
	uint64_t pool_in_use; /* pool buffers out, seen by the second */
};

static void echo_pair_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct echo_pair *ep = arg;
	int me = c == ep->conn[1];
	ep->calls[me]++;
	if (ep->calls[me] == 1 && ep->order++ == 1) {
		struct hush_pool_stats st;
		hush_pool_stats(ep->pool, &st);
		ep->second = me;
		ep->other_queued = hush_conn_queued(ep->conn[!me]);
		ep->other_held = hush_conn_buffers_held(ep->conn[!me]);
		ep->pool_in_use = st.total.in_use;
	}
	assert_int_equal(hush_conn_write(c, data, len), 0);
}

static const struct hush_conn_callbacks echo_pair_cb = {echo_pair_on_data, NULL, NULL};

/*
 * A reply written from inside on_data is sealed and sent when that connection's
 * readiness event ends, before the next connection's event runs: a loop iteration that
 * serves many connections holds the write buffers and cipher contexts of one at a time.
 * Replies to several records read in one event still share one record.
 */
static void conn_reply_from_on_data_is_sent_before_the_next_event(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	struct echo_pair ep = {.pool = e.pool, .second = -1};
	struct peer p[2];
	for (int i = 0; i < 2; i++) {
		int sv[2];
		pair(sv);
		assert_int_equal(
		    hush_conn_new(&ep.conn[i], e.loop, sv[0], NULL, &echo_pair_cb, &ep), 0);
		assert_int_equal(hush_conn_start_raw(ep.conn[i], HUSH_RP_ALTS_AES128_GCM_REKEY,
						     KEY44, sizeof(KEY44), HUSH_SIDE_SERVER),
				 0);
		peer_init(&p[i], sv[1], HUSH_SIDE_CLIENT, 0);
	}
	run_for_ms(&e, 1);
	/* Both peers send three records each before the loop runs again. */
	uint8_t msg[3][100];
	for (int i = 0; i < 2; i++) {
		for (int r = 0; r < 3; r++) {
			size_t wl;
			testlib_fill(msg[r], sizeof(msg[r]), (unsigned)(10 * i + r));
			uint8_t *w = peer_seal(&p[i], msg[r], sizeof(msg[r]), &wl);
			write_all(p[i].fd, w, wl);
			free(w);
		}
	}
	event_base_loop(e.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(ep.calls[0], 3);
	assert_int_equal(ep.calls[1], 3);
	assert_true(ep.second == 0 || ep.second == 1);
	/* The first connection's replies were already in its socket. */
	assert_int_equal(ep.other_queued, 0);
	assert_int_equal(ep.other_held, 0);
	/* Only the second connection's read buffer was out. */
	assert_int_equal(ep.pool_in_use, 1);
	for (int i = 0; i < 2; i++) {
		/* One record carries the three replies. */
		uint8_t buf[4096];
		ssize_t k = read(p[i].fd, buf, sizeof(buf));
		assert_int_equal(k, 3 * 100 + HUSH_RECORD_OVERHEAD);
		struct hush_iovec pt;
		assert_int_equal(hush_record_open(p[i].rec, buf, (size_t)k, &pt), 0);
		assert_int_equal(pt.len, 300);
		for (int r = 0; r < 3; r++) {
			testlib_fill(msg[r], sizeof(msg[r]), (unsigned)(10 * i + r));
			assert_memory_equal((uint8_t *)pt.base + 100 * r, msg[r], 100);
		}
		hush_conn_free(ep.conn[i]);
		peer_done(&p[i]);
	}
	env_done(&e);
}

/* With frames larger than the write queue's 64 KiB tier, a small write still borrows at
 * most that tier, and a large one is cut into records that each fit a buffer. */
static void conn_large_frames_small_write_borrows_at_most_64k(void **state)
{
	struct one *f = *state;
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.max_send_frame = HUSH_RECORD_DEFAULT_RECV_LIMIT + 4;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, &cfg, HUSH_SIDE_CLIENT);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_SERVER, 0);
	run_for_ms(&f->e, 1);
	assert_int_equal(hush_conn_write(c, "x", 1), 0);
	struct hush_pool_stats st;
	hush_pool_stats(f->e.pool, &st);
	assert_int_equal(st.total.in_use, 1);
	assert_true(st.total.bytes_in_use <= 65536);
	static uint8_t big[300000], got[300001];
	testlib_fill(big, sizeof(big), 77);
	assert_true(hush_conn_write(c, big, sizeof(big)) >= 0);
	peer_recv(&f->e, &f->p, got, sizeof(got));
	assert_int_equal(got[0], 'x');
	assert_memory_equal(got + 1, big, sizeof(big));
}

static void conn_eof_inside_record_reports_truncated(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_SERVER);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_CLIENT, 0);
	uint8_t msg[100] = {0};
	size_t wl;
	uint8_t *w = peer_seal(&f->p, msg, sizeof(msg), &wl);
	write_all(f->p.fd, w, wl - 1);
	shutdown(f->p.fd, SHUT_WR);
	event_base_dispatch(f->e.base);
	assert_int_equal(f->s.err, HUSH_ETRUNCATED);
	assert_int_equal(hush_conn_error(c), HUSH_ETRUNCATED);
	assert_int_equal(f->s.len, 0);
	assert_int_equal(hush_conn_buffers_held(c), 0);
	free(w);
}

static void conn_eof_at_record_boundary_is_clean(void **state)
{
	struct one *f = *state;
	open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_SERVER);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_CLIENT, 0);
	uint8_t msg[100] = {1};
	size_t wl;
	uint8_t *w = peer_seal(&f->p, msg, sizeof(msg), &wl);
	write_all(f->p.fd, w, wl);
	shutdown(f->p.fd, SHUT_WR);
	event_base_dispatch(f->e.base);
	assert_int_equal(f->s.eof, 1);
	assert_int_equal(f->s.err, 0);
	assert_int_equal(f->s.len, sizeof(msg));
	free(w);
}

static void conn_tampered_record_fails_only_that_connection(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	int a[2], b[2];
	pair(a);
	pair(b);
	struct sink sa = {0}, sb = {0};
	struct hush_conn *ca = open_conn(&e, a[0], &sa, NULL, HUSH_SIDE_SERVER);
	struct hush_conn *cb = open_conn(&e, b[0], &sb, NULL, HUSH_SIDE_SERVER);
	struct peer pa, pb;
	peer_init(&pa, a[1], HUSH_SIDE_CLIENT, 0);
	peer_init(&pb, b[1], HUSH_SIDE_CLIENT, 0);
	uint8_t msg[500];
	testlib_fill(msg, sizeof(msg), 5);
	size_t wla, wlb;
	uint8_t *wa = peer_seal(&pa, msg, sizeof(msg), &wla);
	uint8_t *wb = peer_seal(&pb, msg, sizeof(msg), &wlb);
	wa[20] ^= 1;
	write_all(pa.fd, wa, wla);
	write_all(pb.fd, wb, wlb);
	sb.stop_after = (int)sizeof(msg);
	event_base_dispatch(e.base);
	event_base_loop(e.base, EVLOOP_NONBLOCK);
	assert_int_equal(sa.err, HUSH_EAUTH);
	assert_int_equal(sa.len, 0);
	assert_int_equal(sb.err, 0);
	assert_int_equal(sb.len, sizeof(msg));
	assert_memory_equal(sb.data, msg, sizeof(msg));
	free(wa);
	free(wb);
	hush_conn_free(ca);
	hush_conn_free(cb);
	peer_done(&pa);
	peer_done(&pb);
	env_done(&e);
	free(sa.data);
	free(sb.data);
}

static void conn_peer_reset_reports_connreset(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	getsockname(lfd, (struct sockaddr *)&sin, &sl);
	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	int sfd = accept(lfd, NULL, NULL);
	close(lfd);
	struct sink s = {0};
	struct hush_conn *c = open_conn(&e, sfd, &s, NULL, HUSH_SIDE_SERVER);
	run_for_ms(&e, 1);
	/* Unread data plus SO_LINGER 0 makes close() send a reset. */
	struct linger lg = {1, 0};
	setsockopt(cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	assert_int_equal(hush_conn_write(c, "x", 1), 0);
	run_for_ms(&e, 5);
	close(cfd);
	event_base_dispatch(e.base);
	assert_int_equal(s.err, HUSH_ECONNRESET);
	hush_conn_free(c);
	env_done(&e);
	free(s.data);
}

static void conn_free_from_data_callback_is_safe(void **state)
{
	struct one *f = *state;
	f->s.free_on_data = 1;
	open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_SERVER);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_CLIENT, 100);
	uint8_t msg[1000];
	testlib_fill(msg, sizeof(msg), 6);
	size_t wl;
	uint8_t *w = peer_seal(&f->p, msg, sizeof(msg), &wl);
	write_all(f->p.fd, w, wl); /* many records in one read: freed after the first */
	event_base_dispatch(f->e.base);
	assert_int_equal(f->s.len, 76);
	assert_null(f->s.conn);
	free(w);
}

static void conn_free_from_event_callback_is_safe(void **state)
{
	struct one *f = *state;
	f->s.free_on_event = 1;
	open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_SERVER);
	run_for_ms(&f->e, 1); /* OPEN is reported and the connection freed there */
	assert_int_equal(f->s.opened, 1);
	assert_null(f->s.conn);
}

static void conn_peer_not_reading_is_bounded_by_watermarks(void **state)
{
	struct one *f = *state;
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.write_high_water = 128 * 1024;
	cfg.write_low_water = 16 * 1024;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, &cfg, HUSH_SIDE_CLIENT);
	run_for_ms(&f->e, 1);
	uint8_t chunk[16384];
	memset(chunk, 7, sizeof(chunk));
	size_t written = 0;
	int rc;
	/* Write until told to stop: the peer never reads. */
	do {
		rc = hush_conn_write(c, chunk, sizeof(chunk));
		assert_true(rc == 0 || rc == 1);
		written += sizeof(chunk);
		event_base_loop(f->e.base, EVLOOP_NONBLOCK);
		assert_true(written < (64u << 20));
	} while (rc == 0);
	assert_true(hush_conn_queued(c) > cfg.write_high_water);
	assert_true(hush_conn_queued(c) <= cfg.write_high_water + sizeof(chunk) + 4096);
	assert_int_equal(f->s.writable, 0);
	/* The peer drains: on_writable fires and the queue empties. */
	peer_init(&f->p, f->sv[1], HUSH_SIDE_SERVER, 0);
	uint8_t *got = malloc(written);
	peer_recv(&f->e, &f->p, got, written);
	event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	assert_int_equal(f->s.writable, 1);
	assert_int_equal(hush_conn_queued(c), 0);
	free(got);
}

/*
 * N connections under a budget of one read buffer, each peer sending 100,000 bytes in
 * two parts so every connection holds a partial record and most wait on the loop's
 * starved list. The connections in gone (a bit mask) are freed while starved; the rest
 * must still be woken and receive every byte.
 */
static void run_budget_starvation(unsigned gone)
{
	struct hush_pool_config pc;
	hush_pool_config_init(&pc);
	/* Room for one read buffer (32 KiB + 512) and a little more, not two. */
	pc.budget = 40000;
	struct env e;
	env_init(&e, &pc);
	enum { N = 8 };
	int sv[N][2];
	struct sink s[N];
	struct peer p[N];
	struct hush_conn *c[N];
	size_t n = 100000;
	uint8_t *msg = malloc(n);
	uint8_t *w[N];
	size_t wl[N];
	testlib_fill(msg, n, 8);
	memset(s, 0, sizeof(s));
	for (int i = 0; i < N; i++) {
		pair(sv[i]);
		c[i] = open_conn(&e, sv[i][0], &s[i], NULL, HUSH_SIDE_SERVER);
		peer_init(&p[i], sv[i][1], HUSH_SIDE_CLIENT, 0);
		w[i] = peer_seal(&p[i], msg, n, &wl[i]);
	}
	run_for_ms(&e, 1);
	/* Each peer sends one and a half records: every connection then holds a partial
	 * record between readiness events, so the budget binds. */
	size_t first = HUSH_RECORD_DEFAULT_SEND_FRAME + HUSH_RECORD_DEFAULT_SEND_FRAME / 2;
	for (int i = 0; i < N; i++) {
		write_all(p[i].fd, w[i], first);
	}
	run_for_ms(&e, 20);
	struct hush_pool_stats st;
	hush_pool_stats(e.pool, &st);
	assert_true(st.total.failures > 0);
	assert_true(st.total.bytes_in_use <= pc.budget);
	for (int i = 0; i < N; i++) {
		if (gone & (1u << i)) {
			hush_conn_free(c[i]);
			c[i] = NULL;
			continue;
		}
		fcntl(p[i].fd, F_SETFL, fcntl(p[i].fd, F_GETFL) | O_NONBLOCK);
		ssize_t k = write(p[i].fd, w[i] + first, wl[i] - first);
		assert_int_equal(k, (ssize_t)(wl[i] - first));
	}
	for (int round = 0; round < 8000; round++) {
		int done = 0;
		for (int i = 0; i < N; i++) {
			done += c[i] == NULL || s[i].len == n;
		}
		if (done == N) {
			break;
		}
		event_base_loop(e.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(100);
	}
	for (int i = 0; i < N; i++) {
		if (c[i] != NULL) {
			assert_int_equal(s[i].err, 0);
			assert_int_equal(s[i].len, n);
			assert_memory_equal(s[i].data, msg, n);
			hush_conn_free(c[i]);
		}
		peer_done(&p[i]);
		free(s[i].data);
		free(w[i]);
	}
	free(msg);
	env_done(&e);
}

static void conn_budget_exhaustion_pauses_and_loses_nothing(void **state)
{
	(void)state;
	run_budget_starvation(0);
}

/* Freed starved connections leave the list at once (by the index each keeps), and the
 * others keep their places when it is compacted: none is forgotten, none woken after
 * its free (the sanitizer build would see that). */
static void conn_starved_freed_out_of_order_leave_the_rest_served(void **state)
{
	(void)state;
	run_budget_starvation(0x52); /* connections 1, 4 and 6 */
	run_budget_starvation(0x81); /* the first and the last */
}

static void conn_thousands_idle_hold_zero_pool_buffers(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	/* Two descriptors a connection; the test raises its own open-files limit. */
	const int N = testlib_fd_room("conn_thousands_idle", 2000, 2, 64);
	assert_true(N > 0);
	int(*sv)[2] = calloc(N, sizeof(*sv));
	struct sink *s = calloc(N, sizeof(*s));
	struct peer *p = calloc(N, sizeof(*p));
	struct hush_conn **c = calloc(N, sizeof(*c));
	for (int i = 0; i < N; i++) {
		pair(sv[i]);
		c[i] = open_conn(&e, sv[i][0], &s[i], NULL, HUSH_SIDE_SERVER);
		peer_init(&p[i], sv[i][1], HUSH_SIDE_CLIENT, 0);
	}
	run_for_ms(&e, 5);
	/* Each gets one message, is echoed one back, then goes idle. */
	uint8_t msg[300];
	testlib_fill(msg, sizeof(msg), 9);
	for (int i = 0; i < N; i++) {
		size_t wl;
		uint8_t *w = peer_seal(&p[i], msg, sizeof(msg), &wl);
		write_all(p[i].fd, w, wl);
		free(w);
		assert_int_equal(hush_conn_write(c[i], msg, sizeof(msg)), 0);
	}
	for (int round = 0; round < 100; round++) {
		event_base_loop(e.base, EVLOOP_NONBLOCK);
	}
	uint8_t got[300];
	for (int i = 0; i < N; i++) {
		assert_int_equal(s[i].len, sizeof(msg));
		peer_recv(&e, &p[i], got, sizeof(got));
		assert_memory_equal(got, msg, sizeof(msg));
	}
	struct hush_pool_stats st;
	hush_pool_stats(e.pool, &st);
	assert_int_equal(st.total.in_use, 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(hush_conn_buffers_held(c[i]), 0);
		hush_conn_free(c[i]);
		peer_done(&p[i]);
		free(s[i].data);
	}
	free(sv);
	free(s);
	free(p);
	free(c);
	env_done(&e);
}

static void conn_pinned_mode_keeps_its_buffers(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_pinned(f);
	assert_int_equal(hush_conn_write(c, "hello", 5), 0);
	uint8_t got[5];
	peer_recv(&f->e, &f->p, got, 5);
	assert_memory_equal(got, "hello", 5);
	event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	assert_int_equal(hush_conn_buffers_held(c), 2);
}

static void conn_shutdown_flushes_then_reports(void **state)
{
	struct one *f = *state;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_CLIENT);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_SERVER, 0);
	run_for_ms(&f->e, 1);
	assert_int_equal(hush_conn_write(c, "bye", 3), 0);
	assert_int_equal(hush_conn_shutdown(c), 0);
	assert_int_equal(hush_conn_write(c, "x", 1), HUSH_ESTATE);
	run_for_ms(&f->e, 5);
	assert_int_equal(f->s.shut, 1);
	uint8_t got[3];
	peer_recv(&f->e, &f->p, got, 3);
	assert_memory_equal(got, "bye", 3);
	uint8_t tmp[1];
	assert_int_equal(read(f->p.fd, tmp, 1), 0); /* the write side is shut down */
}

static void conn_pause_then_resume_delivers_buffered_records(void **state)
{
	struct one *f = *state;
	f->s.stop_after = 1;
	f->s.pause_on_data = 1;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, NULL, HUSH_SIDE_SERVER);
	peer_init(&f->p, f->sv[1], HUSH_SIDE_CLIENT, HUSH_RECORD_MIN_SEND_FRAME);
	uint8_t msg[200]; /* five records of 40 bytes */
	testlib_fill(msg, sizeof(msg), 10);
	size_t wl;
	uint8_t *w = peer_seal(&f->p, msg, sizeof(msg), &wl);
	run_for_ms(&f->e, 1);
	write_all(f->p.fd, w, wl); /* all five in one read */
	event_base_dispatch(f->e.base); /* on_data pauses after the first record */
	f->s.pause_on_data = 0;
	size_t before = f->s.len;
	assert_true(before < sizeof(msg));
	run_for_ms(&f->e, 5);
	assert_int_equal(f->s.len, before);
	f->s.stop_after = 0;
	/* No more socket bytes arrive: the buffered records must still come. */
	hush_conn_resume_reading(c);
	run_for_ms(&f->e, 5);
	assert_int_equal(f->s.len, sizeof(msg));
	assert_memory_equal(f->s.data, msg, sizeof(msg));
	assert_int_equal(hush_conn_buffers_held(c), 0);
	free(w);
}

/* on_data that keeps every record's buffer past the callback. */
struct keeper {
	struct sink s;
	struct hush_buf *kept[64];
	const uint8_t *view[64];
	size_t len[64];
	int n;
};

static void keeper_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct keeper *k = arg;
	assert_true(k->n < 64);
	k->kept[k->n] = hush_conn_keep_data(c);
	assert_non_null(k->kept[k->n]);
	k->view[k->n] = data;
	k->len[k->n] = len;
	k->n++;
	sink_on_data(c, data, len, &k->s);
}

static void conn_kept_plaintext_survives_later_reads(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	int sv[2];
	pair(sv);
	struct keeper k;
	memset(&k, 0, sizeof(k));
	k.s.base = e.base;
	static const struct hush_conn_callbacks cb = {keeper_on_data, NULL, sink_on_event};
	struct hush_conn *c;
	assert_int_equal(hush_conn_new(&c, e.loop, sv[0], NULL, &cb, &k), 0);
	assert_int_equal(hush_conn_start_raw(c, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44,
					     sizeof(KEY44), HUSH_SIDE_SERVER),
			 0);
	assert_null(hush_conn_keep_data(c)); /* outside on_data */
	struct peer p;
	peer_init(&p, sv[1], HUSH_SIDE_CLIENT, 1000);
	size_t n = 20000;
	uint8_t *msg = malloc(n);
	testlib_fill(msg, n, 11);
	size_t wl;
	uint8_t *w = peer_seal(&p, msg, n, &wl);
	/* Split so that records straddle reads, then let everything arrive. */
	for (size_t off = 0; off < wl; off += 777) {
		write_all(p.fd, w + off, off + 777 < wl ? 777 : wl - off);
		event_base_loop(e.base, EVLOOP_NONBLOCK);
	}
	run_for_ms(&e, 5);
	assert_int_equal(k.s.len, n);
	/* Every kept view still holds its record's plaintext. */
	size_t off = 0;
	for (int i = 0; i < k.n; i++) {
		assert_memory_equal(k.view[i], msg + off, k.len[i]);
		off += k.len[i];
	}
	struct hush_pool_stats st;
	hush_pool_stats(e.pool, &st);
	assert_true(st.total.in_use > 0); /* the application holds them */
	for (int i = 0; i < k.n; i++) {
		hush_buf_release(k.kept[i]);
	}
	assert_int_equal(hush_conn_buffers_held(c), 0);
	free(w);
	free(msg);
	hush_conn_free(c);
	peer_done(&p);
	env_done(&e);
	free(k.s.data);
}

static void conn_busy_peer_cannot_starve_another(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.max_read_per_event = 64 * 1024;
	int a[2], b[2];
	pair(a);
	pair(b);
	/* Large socket buffers so the busy peer's whole burst is waiting at once. */
	int big = 4 << 20;
	setsockopt(a[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	setsockopt(a[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	struct sink sa = {0}, sb = {0};
	struct hush_conn *ca = open_conn(&e, a[0], &sa, &cfg, HUSH_SIDE_SERVER);
	struct hush_conn *cb = open_conn(&e, b[0], &sb, &cfg, HUSH_SIDE_SERVER);
	struct peer pa, pb;
	peer_init(&pa, a[1], HUSH_SIDE_CLIENT, 0);
	peer_init(&pb, b[1], HUSH_SIDE_CLIENT, 0);
	run_for_ms(&e, 1);
	size_t n = 1 << 20;
	uint8_t *msg = calloc(1, n);
	size_t wla, wlb;
	uint8_t *wa = peer_seal(&pa, msg, n, &wla);
	uint8_t *wb = peer_seal(&pb, msg, 100, &wlb);
	fcntl(pa.fd, F_SETFL, fcntl(pa.fd, F_GETFL) | O_NONBLOCK);
	ssize_t put = write(pa.fd, wa, wla);
	assert_true(put > 256 * 1024);
	write_all(pb.fd, wb, wlb);
	/* One pass of the loop: the quiet connection is served, and the busy one read no
	 * more than its per-event share (plus the record that share ended in). */
	event_base_loop(e.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(sb.len, 100);
	assert_true(sa.len <= cfg.max_read_per_event + HUSH_RECORD_DEFAULT_SEND_FRAME);
	free(wa);
	free(wb);
	free(msg);
	hush_conn_free(ca);
	hush_conn_free(cb);
	peer_done(&pa);
	peer_done(&pb);
	env_done(&e);
	free(sa.data);
	free(sb.data);
}

static void conn_read_idle_timeout_fails_with_timedout(void **state)
{
	struct one *f = *state;
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.read_timeout_ms = 100;
	open_conn(&f->e, f->sv[0], &f->s, &cfg, HUSH_SIDE_CLIENT);
	uint64_t t0 = 0;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	t0 = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	run_for_ms(&f->e, 2000); /* the error breaks the loop early */
	gettimeofday(&tv, NULL);
	uint64_t t1 = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
	assert_int_equal(f->s.err, HUSH_ETIMEDOUT);
	/* t0 is read a little after the connection stamped its start: allow 5 ms. */
	assert_true(t1 - t0 >= 95);
	assert_true(t1 - t0 < 1000);
}

static void conn_stalled_write_times_out(void **state)
{
	struct one *f = *state;
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.write_timeout_ms = 100;
	struct hush_conn *c = open_conn(&f->e, f->sv[0], &f->s, &cfg, HUSH_SIDE_CLIENT);
	run_for_ms(&f->e, 1);
	uint8_t chunk[65536] = {0};
	for (int i = 0; i < 64 && f->s.err == 0; i++) {
		int rc = hush_conn_write(c, chunk, sizeof(chunk));
		assert_true(rc >= 0);
		event_base_loop(f->e.base, EVLOOP_NONBLOCK);
	}
	run_for_ms(&f->e, 2000);
	assert_int_equal(f->s.err, HUSH_ETIMEDOUT);
	assert_int_equal(hush_conn_write(c, "x", 1), HUSH_ETIMEDOUT);
	assert_int_equal(hush_conn_buffers_held(c), 0);
}

/*
 * What a peer can make a connection hold with a record it never finishes: 4 bytes, a
 * LENGTH at the receive limit, get a pool buffer sized for the whole record, and it
 * stays while the peer is silent. The bound is the receive limit per connection, so a
 * lower recv_limit lowers it, and a read timeout ends it.
 */
static void conn_unfinished_record_holds_room_for_what_arrived(void **state)
{
	(void)state;
	enum { N = 20 };
	static const size_t limits[] = {HUSH_RECORD_DEFAULT_RECV_LIMIT, 16384};
	for (size_t l = 0; l < 2; l++) {
		struct env e;
		env_init(&e, NULL);
		struct hush_conn_config cfg;
		hush_conn_config_init(&cfg);
		cfg.recv_limit = limits[l];
		cfg.read_timeout_ms = 200;
		int sv[N][2];
		struct sink s[N];
		struct hush_conn *c[N];
		memset(s, 0, sizeof(s));
		for (int i = 0; i < N; i++) {
			pair(sv[i]);
			c[i] = open_conn(&e, sv[i][0], &s[i], &cfg, HUSH_SIDE_SERVER);
		}
		run_for_ms(&e, 1);
		uint8_t hdr[4];
		hush__store_le32(hdr, (uint32_t)limits[l]);
		for (int i = 0; i < N; i++) {
			write_all(sv[i][1], hdr, sizeof(hdr));
		}
		for (int k = 0; k < 5; k++) {
			event_base_loop(e.base, EVLOOP_NONBLOCK);
		}
		struct hush_pool_stats st;
		hush_pool_stats(e.pool, &st);
		print_message("# recv_limit %zu: %d peers, 4 bytes each, hold %llu pool bytes\n",
			      limits[l], N, (unsigned long long)st.total.bytes_in_use);
		assert_int_equal(st.total.in_use, N);
		/* The room grows with what arrives, not with the LENGTH announced: each
		 * holds one buffer of the 4 KiB tier, whatever the receive limit. */
		assert_true(st.total.bytes_in_use <= N * (4096 + HUSH_POOL_HEADROOM));
		/* The read timeout fails them and the buffers go back. Each failure breaks
		 * the loop (sink_on_event), hence the rounds. */
		int failed = 0;
		for (int round = 0; round < 100 && failed < N; round++) {
			run_for_ms(&e, 20);
			failed = 0;
			for (int i = 0; i < N; i++) {
				failed += s[i].err != 0;
			}
		}
		for (int i = 0; i < N; i++) {
			assert_int_equal(s[i].err, HUSH_ETIMEDOUT);
			hush_conn_free(c[i]);
			close(sv[i][1]);
			free(s[i].data);
		}
		env_done(&e);
	}
}

static uint64_t ms_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* Runs the loop until every sink of s[0..n) has an error, or ms pass. */
static void run_until_failed(struct env *e, struct sink *s, int n, int ms)
{
	uint64_t end = ms_now() + (uint64_t)ms;
	for (;;) {
		int failed = 0;
		for (int i = 0; i < n; i++) {
			failed += s[i].err != 0;
		}
		if (failed == n || ms_now() >= end) {
			return;
		}
		run_for_ms(e, 10);
	}
}

/*
 * A peer that sends most of a large record and stops pins the buffer that holds it only
 * until the record deadline: then the connection fails with HUSH_ESTALLED and every
 * buffer goes back. Trickling more bytes of the same record does not move the deadline,
 * and another connection that completes its records meanwhile is not affected.
 */
static void conn_stalled_partial_record_fails_estalled_at_deadline(void **state)
{
	(void)state;
	enum { N = 8, SENT = 100000 };
	struct env e;
	env_init(&e, NULL);
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.record_timeout_ms = 300;
	int sv[N + 1][2];
	struct sink s[N + 1];
	struct hush_conn *c[N + 1];
	memset(s, 0, sizeof(s));
	for (int i = 0; i <= N; i++) {
		pair(sv[i]);
		c[i] = open_conn(&e, sv[i][0], &s[i], &cfg, HUSH_SIDE_SERVER);
	}
	run_for_ms(&e, 1);
	/* One record of 1 MiB - 4 bytes of LENGTH, of which SENT bytes go out. */
	struct peer p;
	peer_init(&p, -1, HUSH_SIDE_CLIENT, HUSH_RECORD_DEFAULT_RECV_LIMIT + 4);
	size_t big_len = HUSH_RECORD_DEFAULT_RECV_LIMIT - HUSH_RECORD_OVERHEAD + 4;
	uint8_t *big = calloc(1, big_len);
	assert_non_null(big);
	size_t wire_len;
	uint8_t *wire = peer_seal(&p, big, big_len, &wire_len);
	uint64_t t0 = ms_now();
	for (int i = 0; i < N; i++) {
		write_all(sv[i][1], wire, SENT);
	}
	for (int k = 0; k < 20; k++) {
		event_base_loop(e.base, EVLOOP_NONBLOCK);
	}
	struct hush_pool_stats st;
	hush_pool_stats(e.pool, &st);
	print_message("# %d peers, %d bytes of a 1 MiB record each: %llu pool bytes pinned\n", N,
		      SENT, (unsigned long long)st.total.bytes_in_use);
	assert_true(st.total.bytes_in_use >= (uint64_t)N * SENT);
	/* The healthy connection gets a whole record every 50 ms, in two halves; the
	 * first stalled one gets a byte more of its record every 50 ms. */
	struct peer q;
	peer_init(&q, sv[N][1], HUSH_SIDE_CLIENT, 0);
	uint8_t msg[1000];
	testlib_fill(msg, sizeof(msg), 3);
	size_t off = SENT;
	while (ms_now() - t0 < 280) {
		size_t ql;
		uint8_t *qw = peer_seal(&q, msg, sizeof(msg), &ql);
		write_all(sv[N][1], qw, ql / 2);
		run_for_ms(&e, 25);
		write_all(sv[N][1], qw + ql / 2, ql - ql / 2);
		free(qw);
		write_all(sv[0][1], wire + off++, 1);
		run_for_ms(&e, 25);
	}
	run_until_failed(&e, s, N, 2000);
	uint64_t t1 = ms_now();
	for (int i = 0; i < N; i++) {
		assert_int_equal(s[i].err, HUSH_ESTALLED);
	}
	assert_true(t1 - t0 >= 295);
	assert_true(t1 - t0 < 1500);
	assert_int_equal(s[N].err, 0);
	assert_true(s[N].len >= 4 * sizeof(msg));
	for (int i = 0; i < N; i++) {
		hush_conn_free(c[i]);
		close(sv[i][1]);
		free(s[i].data);
	}
	hush_pool_stats(e.pool, &st);
	assert_int_equal(st.total.in_use, 0);
	assert_string_equal(hush_err_name(HUSH_ESTALLED), "ESTALLED");
	hush_conn_free(c[N]);
	peer_done(&q);
	free(s[N].data);
	p.fd = -1;
	peer_done(&p);
	free(wire);
	free(big);
	env_done(&e);
}

/*
 * Bytes of a record still arriving are not activity for the idle timeout: a peer that
 * trickles one record fails with HUSH_ETIMEDOUT at read_timeout_ms (the record deadline
 * off), while a peer that completes records keeps its connection.
 */
/* Acquisitions so far of the pool's smallest tier holding size bytes. */
static uint64_t tier_acquisitions(struct hush_pool *pool, size_t size)
{
	struct hush_pool_stats st;
	hush_pool_stats(pool, &st);
	for (unsigned i = 0; i < st.ntiers; i++) {
		if (st.tier[i].size >= size) {
			return st.tier[i].acquisitions;
		}
	}
	fail_msg("no tier holds %zu bytes", size);
	return 0;
}

/*
 * A partial record waited between events in a buffer sized for it. When its rest comes
 * with three more records behind it, the connection reads only that rest into the
 * small buffer, gives it back once the record is used, and reads the others into a
 * buffer of read_size (its tier is acquired during the event): without that, the whole
 * event read 16 KiB at a time into the small one. Every byte arrives, in order.
 */
static void conn_partial_waiting_in_a_small_buffer_then_reads_read_size(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	int sv[2];
	struct sink s;
	memset(&s, 0, sizeof(s));
	pair(sv);
	struct hush_conn *c = open_conn(&e, sv[0], &s, &cfg, HUSH_SIDE_SERVER);
	struct peer p;
	peer_init(&p, sv[1], HUSH_SIDE_CLIENT, 0);
	size_t n = 4 * 16384;
	uint8_t *msg = malloc(n);
	assert_non_null(msg);
	testlib_fill(msg, n, 7);
	size_t wl;
	uint8_t *w = peer_seal(&p, msg, n, &wl);
	write_all(sv[1], w, 100);
	run_for_ms(&e, 20);
	assert_int_equal(s.len, 0);
	assert_int_equal(s.err, 0);
	uint64_t before = tier_acquisitions(e.pool, cfg.read_size);
	write_all(sv[1], w + 100, wl - 100);
	for (int i = 0; i < 200 && s.len < n && s.err == 0; i++) {
		run_for_ms(&e, 5);
	}
	assert_int_equal(s.err, 0);
	assert_int_equal(s.len, n);
	assert_memory_equal(s.data, msg, n);
	assert_true(tier_acquisitions(e.pool, cfg.read_size) > before);
	hush_conn_free(c);
	peer_done(&p);
	free(s.data);
	free(w);
	free(msg);
	env_done(&e);
}

static void conn_partial_record_bytes_do_not_reset_the_idle_timeout(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	/* A second of idleness: long beside the 20 ms between the busy connection's records,
	 * so that a slow (sanitizer, loaded) run cannot fail that one too. */
	cfg.read_timeout_ms = 1000;
	cfg.record_timeout_ms = 0;
	int sv[2][2];
	struct sink s[2];
	struct hush_conn *c[2];
	memset(s, 0, sizeof(s));
	for (int i = 0; i < 2; i++) {
		pair(sv[i]);
		c[i] = open_conn(&e, sv[i][0], &s[i], &cfg, HUSH_SIDE_SERVER);
	}
	struct peer p[2];
	for (int i = 0; i < 2; i++) {
		peer_init(&p[i], sv[i][1], HUSH_SIDE_CLIENT, 0);
	}
	uint8_t msg[4000];
	testlib_fill(msg, sizeof(msg), 5);
	size_t tl;
	uint8_t *trickle = peer_seal(&p[0], msg, sizeof(msg), &tl);
	uint64_t t0 = ms_now();
	size_t off = 0;
	/* Without the rule, the trickle (300 bytes of a 4 KB record in 6 s) would keep the
	 * first connection alive to the end of the loop. */
	while (s[0].err == 0 && ms_now() - t0 < 6000) {
		write_all(sv[0][1], trickle + off++, 1);
		size_t wl;
		uint8_t *w = peer_seal(&p[1], msg, 100, &wl);
		write_all(sv[1][1], w, wl);
		free(w);
		run_for_ms(&e, 20);
	}
	uint64_t t1 = ms_now();
	assert_int_equal(s[0].err, HUSH_ETIMEDOUT);
	assert_true(t1 - t0 >= 990);
	assert_int_equal(s[1].err, 0);
	for (int i = 0; i < 2; i++) {
		hush_conn_free(c[i]);
		peer_done(&p[i]);
		free(s[i].data);
	}
	free(trickle);
	env_done(&e);
}

/* Two threads, each with its own event_base and loop, sharing one pool. */
struct worker {
	struct hush_pool *pool;
	int fds[2][2];
	size_t n;
	size_t got[2];
	int ok;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct event_base *base = event_base_new();
	struct hush_loop *loop;
	assert_int_equal(hush_loop_new(&loop, base, w->pool), 0);
	struct sink s[2];
	struct hush_conn *c[2];
	memset(s, 0, sizeof(s));
	for (int i = 0; i < 2; i++) {
		s[i].base = base;
		assert_int_equal(hush_conn_new(&c[i], loop, w->fds[i][0], NULL, &sink_cb, &s[i]), 0);
		assert_int_equal(hush_conn_start_raw(c[i], HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44,
						     sizeof(KEY44),
						     i == 0 ? HUSH_SIDE_CLIENT : HUSH_SIDE_SERVER),
				 0);
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	uint8_t *msg = malloc(w->n);
	testlib_fill(msg, w->n, 12);
	assert_true(hush_conn_write(c[0], msg, w->n) >= 0);
	assert_true(hush_conn_write(c[1], msg, w->n) >= 0);
	for (int round = 0; round < 100000 && (s[0].len < w->n || s[1].len < w->n); round++) {
		event_base_loop(base, EVLOOP_ONCE);
	}
	w->got[0] = s[0].len;
	w->got[1] = s[1].len;
	w->ok = s[0].len == w->n && s[1].len == w->n && memcmp(s[0].data, msg, w->n) == 0 &&
		memcmp(s[1].data, msg, w->n) == 0;
	for (int i = 0; i < 2; i++) {
		hush_conn_free(c[i]);
		free(s[i].data);
	}
	free(msg);
	hush_loop_free(loop);
	event_base_free(base);
	return NULL;
}

static void conn_two_threads_share_one_pool(void **state)
{
	(void)state;
	evthread_use_pthreads();
	struct hush_pool *pool;
	assert_int_equal(hush_pool_new(&pool, NULL), 0);
	struct worker w[2];
	pthread_t th[2];
	memset(w, 0, sizeof(w));
	for (int t = 0; t < 2; t++) {
		w[t].pool = pool;
		w[t].n = 4 << 20;
		int sv[2];
		pair(sv);
		/* Each thread holds both ends of its own pair: two connections talking. */
		w[t].fds[0][0] = sv[0];
		w[t].fds[1][0] = sv[1];
		assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
	}
	for (int t = 0; t < 2; t++) {
		pthread_join(th[t], NULL);
		assert_true(w[t].ok);
	}
	struct hush_pool_stats st;
	hush_pool_stats(pool, &st);
	assert_int_equal(st.total.in_use, 0);
	assert_true(st.total.acquisitions > 0);
	hush_pool_free(pool);
}

/*
 * Fails the k-th hush allocation, for every k, through a whole connection's life: loop
 * and connection setup, start, a write, a read, shutdown and free. Every failure must
 * come back as an error (or a failed connection), nothing may crash, and at the end no
 * hush allocation may be left.
 */
static int lifecycle_with_failure(uint64_t k)
{
	struct event_base *base = event_base_new();
	struct hush_pool *pool = NULL;
	struct hush_loop *loop = NULL;
	struct hush_conn *c = NULL;
	struct sink s = {0};
	struct peer p = {-1, NULL};
	int sv[2];
	int failed = 0;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	s.base = base;
	/* The raw peer's record context is made before the failure is armed. */
	peer_init(&p, sv[1], HUSH_SIDE_SERVER, 0);
	testlib_alloc_fail_at(k);
	if (hush_pool_new(&pool, NULL) != 0) {
		failed = 1;
		close(sv[0]);
		goto out;
	}
	if (hush_loop_new(&loop, base, pool) != 0) {
		failed = 1;
		close(sv[0]);
		goto out;
	}
	if (hush_conn_new(&c, loop, sv[0], NULL, &sink_cb, &s) != 0) {
		failed = 1; /* it closed sv[0] (CLOSE_ON_FREE) */
		goto out;
	}
	if (hush_conn_start_raw(c, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44, sizeof(KEY44),
				HUSH_SIDE_CLIENT) != 0) {
		failed = 1;
		goto out;
	}
	for (int i = 0; i < 3; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	uint8_t msg[3000];
	testlib_fill(msg, sizeof(msg), 31);
	if (hush_conn_write(c, msg, sizeof(msg)) < 0) {
		failed = 1;
	}
	size_t wl;
	testlib_alloc_fail_at(0);
	uint8_t *w = peer_seal(&p, msg, sizeof(msg), &wl);
	testlib_alloc_fail_at(k > 8 ? k - 8 : 1);
	write_all(p.fd, w, wl);
	free(w);
	for (int i = 0; i < 10; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	if (s.err != 0 || s.len != sizeof(msg)) {
		failed = 1;
	}
	if (hush_conn_shutdown(c) < 0) {
		failed = 1;
	}
	for (int i = 0; i < 3; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
out:
	testlib_alloc_fail_at(0);
	hush_conn_free(c);
	event_base_loop(base, EVLOOP_NONBLOCK);
	hush_loop_free(loop);
	hush_pool_free(pool);
	peer_done(&p);
	event_base_free(base);
	free(s.data);
	return failed;
}

static void conn_allocation_failure_at_every_step_is_contained(void **state)
{
	(void)state;
	testlib_alloc_install();
	int failures = 0;
	uint64_t k;
	for (k = 1; k < 200; k++) {
		failures += lifecycle_with_failure(k);
		struct testlib_alloc_stats st;
		testlib_alloc_get(&st);
		assert_int_equal(st.live, 0);
	}
	/* Some steps did fail (the injection reached them), and a late k runs clean. */
	assert_true(failures > 5);
	testlib_alloc_uninstall();
}

/*
 * Churn: connections opened, used once each way and closed, over and over, for a
 * bounded count; hush's live allocations at the end equal those at the start (the pool
 * trimmed), and every pool buffer is back.
 */
static void conn_churn_returns_heap_to_its_start(void **state)
{
	(void)state;
	struct env e;
	env_init(&e, NULL);
	testlib_alloc_install();
	struct testlib_alloc_stats before, after;
	uint8_t msg[5000];
	testlib_fill(msg, sizeof(msg), 41);
	for (int round = 0; round < 300; round++) {
		int sv[2];
		pair(sv);
		struct sink s = {0};
		struct hush_conn *c = open_conn(&e, sv[0], &s, NULL, HUSH_SIDE_SERVER);
		struct peer p;
		peer_init(&p, sv[1], HUSH_SIDE_CLIENT, 0);
		size_t wl;
		uint8_t *w = peer_seal(&p, msg, sizeof(msg), &wl);
		write_all(p.fd, w, wl);
		free(w);
		assert_true(hush_conn_write(c, msg, sizeof(msg)) >= 0);
		while (s.len < sizeof(msg)) {
			event_base_loop(e.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		}
		uint8_t got[5000];
		peer_recv(&e, &p, got, sizeof(got));
		assert_memory_equal(got, msg, sizeof(msg));
		hush_conn_free(c);
		peer_done(&p);
		free(s.data);
		event_base_loop(e.base, EVLOOP_NONBLOCK);
		if (round == 9) {
			/* Warm: the loop's lists and the config are in place. */
			hush_pool_trim(e.pool);
			testlib_alloc_get(&before);
		}
	}
	hush_pool_trim(e.pool);
	testlib_alloc_get(&after);
	assert_int_equal(after.live, before.live);
	assert_int_equal(after.live_bytes, before.live_bytes);
	testlib_alloc_uninstall();
	env_done(&e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		ONE(conn_idle_connection_holds_no_buffers),
		cmocka_unit_test(conn_timeout_beyond_int32_is_refused),
		ONE(conn_records_one_byte_per_write_are_delivered_whole),
		ONE(conn_random_split_points_deliver_exact_bytes),
		ONE(conn_large_records_from_peer_are_accepted),
		ONE(conn_eight_mib_message_round_trips),
		ONE(conn_large_small_large_writes_arrive_in_order),
		ONE(conn_large_writes_from_on_data_arrive_in_order),
		cmocka_unit_test(conn_large_write_over_the_budget_leaves_the_queue),
		ONE(conn_pinned_mode_large_write_round_trips),
		cmocka_unit_test(conn_small_writes_in_one_callback_share_one_record),
		cmocka_unit_test(conn_reply_from_on_data_is_sent_before_the_next_event),
		ONE(conn_large_frames_small_write_borrows_at_most_64k),
		ONE(conn_eof_inside_record_reports_truncated),
		ONE(conn_eof_at_record_boundary_is_clean),
		cmocka_unit_test(conn_tampered_record_fails_only_that_connection),
		cmocka_unit_test(conn_peer_reset_reports_connreset),
		ONE(conn_free_from_data_callback_is_safe),
		ONE(conn_free_from_event_callback_is_safe),
		ONE(conn_peer_not_reading_is_bounded_by_watermarks),
		cmocka_unit_test(conn_budget_exhaustion_pauses_and_loses_nothing),
		cmocka_unit_test(conn_starved_freed_out_of_order_leave_the_rest_served),
		cmocka_unit_test(conn_thousands_idle_hold_zero_pool_buffers),
		ONE(conn_pinned_mode_keeps_its_buffers),
		ONE(conn_shutdown_flushes_then_reports),
		ONE(conn_pause_then_resume_delivers_buffered_records),
		cmocka_unit_test(conn_kept_plaintext_survives_later_reads),
		cmocka_unit_test(conn_busy_peer_cannot_starve_another),
		ONE(conn_read_idle_timeout_fails_with_timedout),
		ONE(conn_stalled_write_times_out),
		cmocka_unit_test(conn_unfinished_record_holds_room_for_what_arrived),
		cmocka_unit_test(conn_stalled_partial_record_fails_estalled_at_deadline),
		cmocka_unit_test(conn_partial_record_bytes_do_not_reset_the_idle_timeout),
		cmocka_unit_test(conn_partial_waiting_in_a_small_buffer_then_reads_read_size),
		cmocka_unit_test(conn_two_threads_share_one_pool),
		cmocka_unit_test(conn_allocation_failure_at_every_step_is_contained),
		cmocka_unit_test(conn_churn_returns_heap_to_its_start),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
