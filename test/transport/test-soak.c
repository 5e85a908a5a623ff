/*
 * Load and soak: thousands of hush connections on two threads (two event_bases, two
 * hush_loops, one shared hush_pool) for a bounded time, HUSH_SOAK_SECONDS (default 15).
 *
 * Each thread keeps HUSH_SOAK_PAIRS slots (default 500), each a pair of hush connections
 * joined through a relay: two socketpairs and a byte pump between them that reads and
 * writes chunks of random sizes, so each connection receives its peer's records cut at
 * random points. A quarter of the pairs are keyed by a handshake (the six Noise
 * protocols in turn; the relay cuts the handshake's messages too), the rest by raw keys.
 * Each end sends a stream of messages of random sizes that its peer checks byte for byte
 * (streams.h), up to a random quota of 1 KiB to 8 MiB; then both ends close, the pair is
 * checked, freed and replaced by a new one, so connections are opened, used and closed
 * all the time.
 *
 * The run is cut into epochs. At the end of each, the threads stop writing, wait until
 * nothing is in flight, and meet: with both loops quiet every pool buffer must be back,
 * and hush's heap (the test allocator's live bytes, minus the loops' end-of-iteration
 * lists, which keep up to 1,024 entries between bursts) must be what it was at the
 * first checkpoint, to the byte. At the end every pair closes cleanly, everything is
 * freed and hush's heap is what it was before the threads started.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "streams.h"
#include "testlib.h"
#include "transport/transport-internal.h"

static const uint8_t KEY44[44] = {
	9,  8,  7,  6,  5,  4,  3,  2,  1,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
	23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44};

#define THREADS 2
#define NPROTOCOLS 6
#define RELAY_BUF 8192
#define WINDOW (32u * 1024u)
#define MAX_MSG (32u * 1024u)
#define EPOCHS 5
/* The longest a drain or the final close may take before the run counts as stalled. */
#define SETTLE_MS 20000

static uint64_t now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* ---- The relay: one direction of a byte pump with random chunk sizes ---- */

struct relay {
	int from;
	int to;
	struct event *rev;
	struct event *wev;
	uint8_t *buf;
	size_t off;
	size_t len;
	uint64_t rng;
	bool eof;      /* from reached its end */
	bool done;     /* and that end was passed on */
	int err;
	uint64_t chunks;
};

/*
 * The next chunk of max bytes to move: one time in eight a small one (log-uniform up to
 * 64 bytes, so that record headers and tags are cut everywhere), else half the time all
 * of it and half the time a uniform part of it, so that bytes still move in chunks
 * worth a system call.
 */
static size_t rand_chunk(uint64_t *rng, size_t max)
{
	uint64_t r = stream_rand(rng);
	size_t n;
	if (r % 8 == 0) {
		n = 1 + (size_t)((r >> 8) % ((uint64_t)1 << ((r >> 3) % 7)));
	} else if (r % 2 == 0) {
		n = max;
	} else {
		n = 1 + (size_t)((r >> 8) % max);
	}
	return n > max ? max : n;
}

static void relay_pass_eof(struct relay *r)
{
	if (r->eof && r->len == 0 && !r->done) {
		r->done = true;
		shutdown(r->to, SHUT_WR);
	}
}

/* Writes what is buffered in random chunks; false when the socket is full. */
static bool relay_flush(struct relay *r)
{
	while (r->len > 0) {
		size_t k = rand_chunk(&r->rng, r->len);
		ssize_t n = send(r->to, r->buf + r->off, k, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				return false;
			}
			r->err = errno;
			r->len = 0;
			return true;
		}
		r->off += (size_t)n;
		r->len -= (size_t)n;
		r->chunks++;
	}
	relay_pass_eof(r);
	return true;
}

static void relay_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	(void)what;
	ssize_t n = read(fd, r->buf, rand_chunk(&r->rng, RELAY_BUF));
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR) {
			r->err = errno;
			event_del(r->rev);
		}
		return;
	}
	if (n == 0) {
		r->eof = true;
		event_del(r->rev);
		relay_pass_eof(r);
		return;
	}
	r->off = 0;
	r->len = (size_t)n;
	if (!relay_flush(r)) {
		event_del(r->rev);
		event_add(r->wev, NULL);
	}
}

static void relay_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct relay *r = arg;
	(void)fd;
	(void)what;
	if (relay_flush(r)) {
		event_del(r->wev);
		if (!r->eof) {
			event_add(r->rev, NULL);
		}
	}
}

/* ---- Slots: a pair of connections and its relay ---- */

struct slot {
	struct end a;          /* client, on fd[0] */
	struct end b;          /* server, on fd[3] */
	struct relay r[2];     /* a to b (fd[1] to fd[2]) and b to a (fd[2] to fd[1]) */
	int fd[4];
	int kind;              /* 0: raw keys; 1..6: a handshake with that protocol */
	uint64_t gen;
};

enum phase { PH_RUN, PH_DRAIN, PH_CLOSE };

struct shared {
	struct hush_pool *pool;
	struct ids ids[NPROTOCOLS];
	pthread_barrier_t barrier;
	atomic_bool failed;
	int pairs;             /* slots per thread */
	uint64_t epoch_ms[EPOCHS];
};

struct worker {
	int id;
	struct shared *g;
	struct event_base *base;
	struct hush_loop *loop;
	struct slot *slots;
	struct event *tick;
	enum phase phase;
	uint64_t phase_end;    /* RUN: when to drain; DRAIN, CLOSE: when it counts as stalled */
	uint64_t rng;
	char why[200];         /* the first failure */
	/* Figures. */
	uint64_t conns;        /* hush connections opened */
	uint64_t handshakes;   /* of which keyed by a handshake */
	uint64_t pairs_done;   /* pairs that finished, checked, and were replaced */
	uint64_t bytes;        /* bytes received and checked */
	uint64_t msgs;
	uint64_t chunks;       /* relay writes */
};

static void worker_fail(struct worker *w, const char *what, const struct slot *s)
{
	if (w->why[0] == '\0') {
		snprintf(w->why, sizeof(w->why),
			 "thread %d: %s (slot kind %d gen %llu: a err %d/%d bad %llu rx %llu; b "
			 "err %d/%d bad %llu rx %llu; relay err %d %d)",
			 w->id, what, s ? s->kind : -1, s ? (unsigned long long)s->gen : 0ull,
			 s ? s->a.err : 0, s ? s->a.write_err : 0,
			 s ? (unsigned long long)s->a.bad_at : 0ull,
			 s ? (unsigned long long)s->a.rx_done : 0ull, s ? s->b.err : 0,
			 s ? s->b.write_err : 0, s ? (unsigned long long)s->b.bad_at : 0ull,
			 s ? (unsigned long long)s->b.rx_done : 0ull, s ? s->r[0].err : 0,
			 s ? s->r[1].err : 0);
	}
	atomic_store(&w->g->failed, true);
	event_base_loopbreak(w->base);
}

static bool relay_init(struct worker *w, struct relay *r, int from, int to)
{
	memset(r, 0, sizeof(*r));
	r->from = from;
	r->to = to;
	r->rng = stream_rand(&w->rng) | 1;
	r->buf = malloc(RELAY_BUF);
	r->rev = event_new(w->base, from, EV_READ | EV_PERSIST, relay_on_read, r);
	r->wev = event_new(w->base, to, EV_WRITE | EV_PERSIST, relay_on_write, r);
	return r->buf != NULL && r->rev != NULL && r->wev != NULL && event_add(r->rev, NULL) == 0;
}

static void relay_free(struct relay *r)
{
	if (r->rev != NULL) {
		event_free(r->rev);
	}
	if (r->wev != NULL) {
		event_free(r->wev);
	}
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

static bool slot_open(struct worker *w, struct slot *s, size_t index)
{
	int sa[2], sb[2];
	s->gen++;
	/* A quarter are keyed by a handshake, cycling through the protocols. */
	s->kind = (index + s->gen) % 4 == 0 ? 1 + (int)((index / 4 + s->gen) % NPROTOCOLS) : 0;
	end_reset(&s->a);
	end_reset(&s->b);
	s->a.peer = &s->b;
	s->b.peer = &s->a;
	s->a.tx_seed = stream_rand(&w->rng);
	s->b.tx_seed = stream_rand(&w->rng);
	s->a.rng = stream_rand(&w->rng) | 1;
	s->b.rng = stream_rand(&w->rng) | 1;
	/* Quotas from 1 KiB to 8 MiB: a power of two, log-uniform, plus up to as much. */
	s->a.tx_total = (uint64_t)1024 << (stream_rand(&w->rng) % 13);
	s->a.tx_total += stream_rand(&w->rng) % s->a.tx_total;
	s->b.tx_total = (uint64_t)1024 << (stream_rand(&w->rng) % 13);
	s->b.tx_total += stream_rand(&w->rng) % s->b.tx_total;
	s->a.max_msg = s->b.max_msg = MAX_MSG;
	s->a.window = s->b.window = WINDOW;
	s->a.pump_on_data = s->b.pump_on_data = true;
	s->a.hold = s->b.hold = w->phase != PH_RUN;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sa) != 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sb) != 0) {
		return false;
	}
	s->fd[0] = sa[0];
	s->fd[1] = sa[1];
	s->fd[2] = sb[0];
	s->fd[3] = sb[1];
	if (!relay_init(w, &s->r[0], s->fd[1], s->fd[2]) ||
	    !relay_init(w, &s->r[1], s->fd[2], s->fd[1])) {
		return false;
	}
	if (hush_conn_new(&s->a.conn, w->loop, s->fd[0], NULL, &end_cb, &s->a) != 0 ||
	    hush_conn_new(&s->b.conn, w->loop, s->fd[3], NULL, &end_cb, &s->b) != 0) {
		return false;
	}
	int rc;
	if (s->kind == 0) {
		rc = hush_conn_start_raw(s->a.conn, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44,
					 sizeof(KEY44), HUSH_SIDE_CLIENT);
		if (rc == 0) {
			rc = hush_conn_start_raw(s->b.conn, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44,
						 sizeof(KEY44), HUSH_SIDE_SERVER);
		}
	} else {
		const struct ids *d = &w->g->ids[s->kind - 1];
		rc = hush_conn_start_handshake(s->a.conn, &d->cc, HUSH_SIDE_CLIENT);
		if (rc == 0) {
			rc = hush_conn_start_handshake(s->b.conn, &d->sc, HUSH_SIDE_SERVER);
		}
		w->handshakes += 2;
	}
	w->conns += 2;
	return rc == 0;
}

static void slot_close(struct worker *w, struct slot *s)
{
	w->bytes += s->a.rx_done + s->b.rx_done;
	w->msgs += s->a.msgs + s->b.msgs;
	w->chunks += s->r[0].chunks + s->r[1].chunks;
	hush_conn_free(s->a.conn);
	hush_conn_free(s->b.conn);
	s->a.conn = s->b.conn = NULL;
	relay_free(&s->r[0]);
	relay_free(&s->r[1]);
	/* The connections closed fd[0] and fd[3]; the relay's sockets are ours. */
	close(s->fd[1]);
	close(s->fd[2]);
}

static bool slot_failed(const struct slot *s)
{
	return end_failed(&s->a) || end_failed(&s->b) || s->r[0].err != 0 || s->r[1].err != 0;
}

/* One end has nothing in flight: all its peer wrote arrived, its queue is empty, its
 * buffers are back, and a close the peer finished was seen. */
static bool end_quiet(const struct end *x)
{
	return x->opened && x->rx_done == x->peer->tx_done && hush_conn_queued(x->conn) == 0 &&
	       hush_conn_buffers_held(x->conn) == 0 && (!x->shut_sent || x->shut) &&
	       (!x->peer->shut || x->eof);
}

static bool slot_quiet(const struct slot *s)
{
	return end_quiet(&s->a) && end_quiet(&s->b) && s->r[0].len == 0 && s->r[1].len == 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	(void)fd;
	(void)what;
	uint64_t now = now_ms();
	bool quiet = true;
	bool all_done = true;
	if (atomic_load(&w->g->failed)) {
		event_base_loopbreak(w->base);
		return;
	}
	for (int i = 0; i < w->g->pairs; i++) {
		struct slot *s = &w->slots[i];
		if (slot_failed(s)) {
			worker_fail(w, "a connection failed or a byte was wrong", s);
			return;
		}
		bool done = pair_done(&s->a, &s->b);
		if (done && w->phase != PH_CLOSE) {
			/* Checked in full and closed cleanly: replace it. */
			w->pairs_done++;
			slot_close(w, s);
			if (!slot_open(w, s, (size_t)i)) {
				worker_fail(w, "could not open a pair", s);
				return;
			}
			done = false;
		}
		all_done = all_done && done;
		if (w->phase == PH_DRAIN && quiet) {
			quiet = slot_quiet(s);
		}
	}
	switch (w->phase) {
	case PH_RUN:
		if (now >= w->phase_end) {
			w->phase = PH_DRAIN;
			w->phase_end = now + SETTLE_MS;
			for (int i = 0; i < w->g->pairs; i++) {
				w->slots[i].a.hold = w->slots[i].b.hold = true;
			}
		}
		break;
	case PH_DRAIN:
		if (quiet) {
			event_base_loopbreak(w->base);
		} else if (now >= w->phase_end) {
			worker_fail(w, "the drain did not settle", NULL);
		}
		break;
	case PH_CLOSE:
		if (all_done) {
			event_base_loopbreak(w->base);
		} else if (now >= w->phase_end) {
			worker_fail(w, "the close did not finish", NULL);
		}
		break;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct shared *g = w->g;
	w->base = event_base_new();
	if (w->base == NULL || hush_loop_new(&w->loop, w->base, g->pool) != 0) {
		snprintf(w->why, sizeof(w->why), "thread %d: no base or loop", w->id);
		atomic_store(&g->failed, true);
	}
	w->slots = calloc((size_t)g->pairs, sizeof(*w->slots));
	w->phase = PH_DRAIN; /* new pairs hold until the first epoch starts */
	int opened = 0;
	for (; !atomic_load(&g->failed) && opened < g->pairs; opened++) {
		if (!slot_open(w, &w->slots[opened], (size_t)opened)) {
			worker_fail(w, "could not open a pair", &w->slots[opened]);
		}
	}
	if (w->base != NULL) {
		w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
		struct timeval tv = {0, 2000};
		event_add(w->tick, &tv);
	}
	for (int epoch = 0; epoch < EPOCHS; epoch++) {
		if (!atomic_load(&g->failed)) {
			w->phase = PH_RUN;
			w->phase_end = now_ms() + g->epoch_ms[epoch];
			for (int i = 0; i < g->pairs; i++) {
				w->slots[i].a.hold = w->slots[i].b.hold = false;
			}
			for (int i = 0; i < g->pairs; i++) {
				end_pump(&w->slots[i].a);
				end_pump(&w->slots[i].b);
			}
			event_base_dispatch(w->base);
		}
		pthread_barrier_wait(&g->barrier); /* quiet: the main thread measures */
		pthread_barrier_wait(&g->barrier); /* measured */
	}
	/* Every pair ends its streams where they are and closes. */
	if (!atomic_load(&g->failed)) {
		w->phase = PH_CLOSE;
		w->phase_end = now_ms() + SETTLE_MS;
		for (int i = 0; i < g->pairs; i++) {
			struct end *x[2] = {&w->slots[i].a, &w->slots[i].b};
			for (int k = 0; k < 2; k++) {
				x[k]->tx_total = x[k]->tx_done;
				x[k]->hold = false;
				end_pump(x[k]);
			}
		}
		event_base_dispatch(w->base);
	}
	for (int i = 0; i < opened; i++) {
		if (w->slots[i].a.conn != NULL) {
			w->pairs_done += pair_done(&w->slots[i].a, &w->slots[i].b);
			slot_close(w, &w->slots[i]);
		}
	}
	free(w->slots);
	if (w->tick != NULL) {
		event_free(w->tick);
	}
	if (w->base != NULL) {
		event_base_loop(w->base, EVLOOP_NONBLOCK);
	}
	if (w->loop != NULL && w->loop->nconns != 0 && w->why[0] == '\0') {
		snprintf(w->why, sizeof(w->why), "thread %d: %u connections left", w->id,
			 w->loop->nconns);
		atomic_store(&g->failed, true);
	}
	hush_loop_free(w->loop);
	if (w->base != NULL) {
		if (event_base_get_num_events(w->base, EVENT_BASE_COUNT_ADDED) != 0 &&
		    w->why[0] == '\0') {
			snprintf(w->why, sizeof(w->why), "thread %d: events left on the base",
				 w->id);
			atomic_store(&g->failed, true);
		}
		event_base_free(w->base);
	}
	return NULL;
}

/* hush's live heap, less what the loops' end-of-iteration lists hold (*lists): those
 * keep up to 1,024 entries between bursts, by design (src/transport/loop.c). */
static uint64_t heap_now(struct worker *w, uint64_t *lists_out)
{
	struct testlib_alloc_stats a;
	testlib_alloc_get(&a);
	uint64_t lists = 0;
	for (int t = 0; t < THREADS; t++) {
		if (w[t].loop != NULL) {
			lists += (w[t].loop->pending.cap + w[t].loop->starved.cap) *
				 sizeof(struct conn_vec_ent);
		}
	}
	*lists_out = lists;
	return a.live_bytes - lists;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	if (s == NULL || *s == '\0') {
		return dflt;
	}
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	return *end == '\0' && v > 0 ? (uint64_t)v : dflt;
}

/* Raises the descriptor limit as far as allowed; returns how many pairs per thread fit
 * (four descriptors each, with room to spare). */
static int pairs_that_fit(int want)
{
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	uint64_t fit = (rl.rlim_cur > 256 ? rl.rlim_cur - 256 : 0) / (4 * THREADS);
	return fit < (uint64_t)want ? (int)fit : want;
}

/*
 * The soak: see the opening comment. Two threads, thousands of connections, random
 * message sizes and split points, every byte checked, every pool buffer back and the
 * heap flat at every checkpoint.
 */
static void soak_two_threads_lose_nothing_and_leak_nothing(void **state)
{
	(void)state;
	struct shared g;
	memset(&g, 0, sizeof(g));
	uint64_t seconds = env_u64("HUSH_SOAK_SECONDS", 15);
	int want = (int)env_u64("HUSH_SOAK_PAIRS", 500);
	g.pairs = pairs_that_fit(want);
	assert_true(g.pairs >= 10);
	if (g.pairs < want) {
		print_message("# descriptor limit: %d pairs per thread instead of %d\n", g.pairs,
			      want);
	}
	/* A short first epoch, for an early checkpoint; the rest share the remaining time. */
	g.epoch_ms[0] = 1000;
	for (int i = 1; i < EPOCHS; i++) {
		g.epoch_ms[i] = seconds > 1 ? (seconds - 1) * 1000 / (EPOCHS - 1) : 250;
	}
	evthread_use_pthreads();
	testlib_alloc_install();
	assert_int_equal(hush_pool_new(&g.pool, NULL), 0);
	for (int p = 0; p < NPROTOCOLS; p++) {
		ids_init(&g.ids[p],
			 (enum hush_noise_protocol)(HUSH_NOISE_XX_25519_AESGCM_SHA256 + p));
	}
	struct testlib_alloc_stats a;
	testlib_alloc_get(&a);
	uint64_t heap_before = a.live_bytes;
	assert_int_equal(pthread_barrier_init(&g.barrier, NULL, THREADS + 1), 0);
	struct worker w[THREADS];
	pthread_t th[THREADS];
	memset(w, 0, sizeof(w));
	uint64_t t0 = now_ms();
	for (int t = 0; t < THREADS; t++) {
		w[t].id = t;
		w[t].g = &g;
		w[t].rng = 0x5eed0000u + (uint64_t)t;
		assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
	}
	uint64_t heap[EPOCHS];
	uint64_t in_use[EPOCHS];
	size_t list_cap = 0;
	for (int epoch = 0; epoch < EPOCHS; epoch++) {
		pthread_barrier_wait(&g.barrier);
		/* Both loops are quiet: the pool's idle buffers go, the rest is counted. */
		hush_pool_trim(g.pool);
		struct hush_pool_stats ps;
		hush_pool_stats(g.pool, &ps);
		in_use[epoch] = ps.total.in_use;
		uint64_t lists;
		heap[epoch] = heap_now(w, &lists);
		for (int t = 0; t < THREADS; t++) {
			if (w[t].loop != NULL && w[t].loop->pending.cap > list_cap) {
				list_cap = w[t].loop->pending.cap;
			}
		}
		uint64_t conns = 0, bytes = 0;
		for (int t = 0; t < THREADS; t++) {
			conns += w[t].conns;
			bytes += w[t].bytes;
		}
		print_message(
		    "# checkpoint %d at %.1f s: %llu connections opened so far, %llu "
		    "bytes checked, pool buffers out %llu, heap %llu B (+ %llu B of lists)\n",
		    epoch, (double)(now_ms() - t0) / 1000.0, (unsigned long long)conns,
		    (unsigned long long)bytes, (unsigned long long)in_use[epoch],
		    (unsigned long long)heap[epoch], (unsigned long long)lists);
		pthread_barrier_wait(&g.barrier);
	}
	for (int t = 0; t < THREADS; t++) {
		pthread_join(th[t], NULL);
	}
	uint64_t ms = now_ms() - t0;
	struct hush_pool_stats ps;
	hush_pool_stats(g.pool, &ps);
	uint64_t conns = 0, hs = 0, done = 0, bytes = 0, msgs = 0, chunks = 0;
	for (int t = 0; t < THREADS; t++) {
		if (w[t].why[0] != '\0') {
			print_message("# %s\n", w[t].why);
		}
		conns += w[t].conns;
		hs += w[t].handshakes;
		done += w[t].pairs_done;
		bytes += w[t].bytes;
		msgs += w[t].msgs;
		chunks += w[t].chunks;
	}
	print_message("# soak: %d threads, %d pairs each at a time, %.1f s: %llu connections "
		      "opened (%llu by a handshake), %llu pairs finished and checked, %llu "
		      "messages, %llu bytes checked (%.1f MB/s), %llu relay chunks, pool "
		      "high water %llu buffers / %.1f MB\n",
		      THREADS, g.pairs, (double)ms / 1000.0, (unsigned long long)conns,
		      (unsigned long long)hs, (unsigned long long)done, (unsigned long long)msgs,
		      (unsigned long long)bytes, (double)bytes / 1e6 / ((double)ms / 1000.0),
		      (unsigned long long)chunks, (unsigned long long)ps.total.high_water,
		      (double)ps.total.bytes_high_water / 1e6);
	assert_false(atomic_load(&g.failed));
	for (int epoch = 0; epoch < EPOCHS; epoch++) {
		assert_int_equal(in_use[epoch], 0);
		assert_int_equal(heap[epoch], heap[0]);
	}
	/* What was left out of the comparison stayed within its bound. */
	assert_true(list_cap <= 1024);
	/* Every pair closed cleanly and was checked in full. */
	assert_int_equal(done, conns / 2);
	assert_int_equal(ps.total.in_use, 0);
	hush_pool_trim(g.pool);
	testlib_alloc_get(&a);
	assert_int_equal(a.live_bytes, heap_before);
	for (int p = 0; p < NPROTOCOLS; p++) {
		ids_done(&g.ids[p]);
	}
	hush_pool_free(g.pool);
	testlib_alloc_get(&a);
	assert_int_equal(a.live, 0);
	testlib_alloc_uninstall();
	pthread_barrier_destroy(&g.barrier);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(soak_two_threads_lose_nothing_and_leak_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
