/*
 * System-call fault injection for src/transport: this program defines recv, sendmsg,
 * shutdown, accept and accept4 itself. It links the library's objects statically
 * (libhush-internal), so the transport's calls bind to these definitions at link time,
 * and libevent's (the listener's accept4) find them first in the executable; each calls
 * the real function through dlsym(RTLD_NEXT), after applying the plan the test gave
 * that socket: EINTR, EAGAIN, short reads and writes of a given length, or a fatal
 * ECONNRESET / EPIPE once a given number of bytes went through. The library is not
 * changed. Every test counts the calls it saw, so an interposition that did not take
 * fails the test instead of passing it vacuously.
 *
 * On connections that survive, every byte is checked against the sender's stream
 * (streams.h): none lost, duplicated or reordered, both directions, raw-key and
 * handshake-keyed connections. A fatal error fails only its connection, with the right
 * code, while another on the same loop completes. Every test ends with no connection,
 * no event and no pool buffer left, and no hush allocation alive.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include <hush/listener.h>

#include "streams.h"
#include "envlib.h"
#include "testlib.h"
#include "transport/transport-internal.h"

static const uint8_t KEY44[44] = {
	1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
	23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44};

/* ---- The interposed socket layer ---- */

/* What happens to the calls on one socket in one direction. All zero: pass through
 * (the calls are still counted). */
struct plan {
	unsigned cap;          /* 0, or each call moves at most cap bytes */
	unsigned eintr_every;  /* 0, or every n-th call fails with EINTR, moving nothing */
	unsigned eagain_every; /* 0, or every n-th call fails with EAGAIN, moving nothing */
	uint64_t rng;          /* 0, or a pseudo-random mix of all of the above */
	bool fatal;            /* once fatal_at bytes went through, every call fails */
	uint64_t fatal_at;
	int fatal_errno;
	int script[8];         /* errnos for the next calls, before anything else; 0 passes */
	unsigned nscript;
	int shutdown_errno;    /* 0, or the next shutdown() fails with it (sending side) */
	/* What was seen. */
	uint64_t calls;
	uint64_t bytes;
	struct timeval first_call[8]; /* when the first calls came (the listener's) */
};

/* Plans by descriptor: [fd][0] for receiving and accepting, [fd][1] for sending and
 * shutting down. Used from the test's thread only. */
#define PLAN_FDS 1024
static struct plan plans[PLAN_FDS][2];
static bool planned[PLAN_FDS];

/* Faults injected, by kind, since the program started. */
static struct {
	uint64_t eintr, eagain, short_rx, short_tx, reset, epipe, emfile, aborted, other;
	uint64_t recv_calls, sendmsg_calls, shutdown_calls, accept_calls;
} seen;

static struct plan *plan_of(int fd, int dir)
{
	if (fd < 0 || fd >= PLAN_FDS || !planned[fd]) {
		return NULL;
	}
	return &plans[fd][dir];
}

/* Plans fd (both directions zero: counted only) and returns its two plans. */
static struct plan *plan_fd(int fd)
{
	assert_true(fd >= 0 && fd < PLAN_FDS);
	memset(plans[fd], 0, sizeof(plans[fd]));
	planned[fd] = true;
	return plans[fd];
}

static void unplan_fd(int fd)
{
	if (fd >= 0 && fd < PLAN_FDS) {
		planned[fd] = false;
	}
}

static void count_errno(int e)
{
	switch (e) {
	case EINTR:
		seen.eintr++;
		break;
	case EAGAIN:
		seen.eagain++;
		break;
	case ECONNRESET:
		seen.reset++;
		break;
	case EPIPE:
		seen.epipe++;
		break;
	case EMFILE:
		seen.emfile++;
		break;
	case ECONNABORTED:
		seen.aborted++;
		break;
	default:
		seen.other++;
		break;
	}
}

/*
 * Decides one call of len bytes: returns an errno to fail it with, or 0 with *allow
 * set to the most bytes it may move.
 */
static int decide(struct plan *p, size_t len, size_t *allow)
{
	if (p->calls < 8) {
		gettimeofday(&p->first_call[p->calls], NULL);
	}
	p->calls++;
	*allow = len;
	if (p->nscript > 0) {
		int e = p->script[0];
		memmove(p->script, p->script + 1, sizeof(p->script) - sizeof(p->script[0]));
		p->nscript--;
		if (e != 0) {
			return e;
		}
	}
	if (p->fatal && p->bytes >= p->fatal_at) {
		return p->fatal_errno;
	}
	if (p->eintr_every != 0 && p->calls % p->eintr_every == 0) {
		return EINTR;
	}
	if (p->eagain_every != 0 && p->calls % p->eagain_every == 0) {
		return EAGAIN;
	}
	if (p->rng != 0) {
		uint64_t r = stream_rand(&p->rng);
		unsigned pick = (unsigned)(r % 100);
		if (pick < 8) {
			return EINTR;
		}
		if (pick < 16) {
			return EAGAIN;
		}
		if (pick < 70 && len > 1) {
			/* A log-uniform length, so that short and very short ones both occur. */
			uint64_t bits = (r >> 8) % 17;
			size_t k = 1 + (size_t)((r >> 16) % ((uint64_t)1 << bits));
			*allow = k < len ? k : len;
		}
	}
	if (p->cap != 0 && *allow > p->cap) {
		*allow = p->cap;
	}
	/* A fatal error comes exactly at its byte. */
	if (p->fatal && *allow > p->fatal_at - p->bytes) {
		*allow = (size_t)(p->fatal_at - p->bytes);
	}
	return 0;
}

/* The build hides symbols by default; these must be seen by shared libraries too
 * (libevent's listener calls accept4), so they are exported from the executable. */
#define INTERPOSED __attribute__((visibility("default")))

static void *next_fn(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (f == NULL) {
		fprintf(stderr, "test-sysfault: no next %s\n", name);
		abort();
	}
	return f;
}

INTERPOSED ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	static ssize_t (*next)(int, void *, size_t, int);
	if (next == NULL) {
		*(void **)&next = next_fn("recv");
	}
	seen.recv_calls++;
	struct plan *p = plan_of(fd, 0);
	if (p == NULL) {
		return next(fd, buf, len, flags);
	}
	size_t allow;
	int e = decide(p, len, &allow);
	if (e != 0) {
		count_errno(e);
		errno = e;
		return -1;
	}
	if (allow < len) {
		seen.short_rx++;
	}
	ssize_t n = next(fd, buf, allow, flags);
	if (n > 0) {
		p->bytes += (uint64_t)n;
	}
	return n;
}

INTERPOSED ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	static ssize_t (*next)(int, const struct msghdr *, int);
	if (next == NULL) {
		*(void **)&next = next_fn("sendmsg");
	}
	seen.sendmsg_calls++;
	struct plan *p = plan_of(fd, 1);
	if (p == NULL) {
		return next(fd, msg, flags);
	}
	size_t len = 0;
	for (size_t i = 0; i < msg->msg_iovlen; i++) {
		len += msg->msg_iov[i].iov_len;
	}
	size_t allow;
	int e = decide(p, len, &allow);
	if (e != 0) {
		count_errno(e);
		errno = e;
		return -1;
	}
	/* A short write: the same message, cut after allow bytes. */
	struct iovec iov[64];
	struct msghdr m = *msg;
	if (allow < len) {
		assert_true(msg->msg_iovlen <= 64);
		size_t left = allow;
		size_t n = 0;
		while (left > 0) {
			iov[n] = msg->msg_iov[n];
			if (iov[n].iov_len > left) {
				iov[n].iov_len = left;
			}
			left -= iov[n].iov_len;
			n++;
		}
		m.msg_iov = iov;
		m.msg_iovlen = n;
		seen.short_tx++;
	}
	ssize_t n = next(fd, &m, flags);
	if (n > 0) {
		p->bytes += (uint64_t)n;
	}
	return n;
}

INTERPOSED int shutdown(int fd, int how)
{
	static int (*next)(int, int);
	if (next == NULL) {
		*(void **)&next = next_fn("shutdown");
	}
	seen.shutdown_calls++;
	struct plan *p = plan_of(fd, 1);
	if (p != NULL && p->shutdown_errno != 0) {
		int e = p->shutdown_errno;
		p->shutdown_errno = 0;
		count_errno(e);
		errno = e;
		return -1;
	}
	return next(fd, how);
}

/* The listener's accept: a script of errnos on the listening socket. */
static int accept_common(int fd, bool *fail)
{
	seen.accept_calls++;
	*fail = false;
	struct plan *p = plan_of(fd, 0);
	if (p == NULL) {
		return 0;
	}
	size_t allow;
	int e = decide(p, 1, &allow);
	if (e != 0) {
		count_errno(e);
		*fail = true;
	}
	return e;
}

INTERPOSED int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *len, int flags)
{
	static int (*next)(int, __SOCKADDR_ARG, socklen_t *, int);
	if (next == NULL) {
		*(void **)&next = next_fn("accept4");
	}
	bool fail;
	int e = accept_common(fd, &fail);
	if (fail) {
		errno = e;
		return -1;
	}
	return next(fd, addr, len, flags);
}

INTERPOSED int accept(int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
	static int (*next)(int, __SOCKADDR_ARG, socklen_t *);
	if (next == NULL) {
		*(void **)&next = next_fn("accept");
	}
	bool fail;
	int e = accept_common(fd, &fail);
	if (fail) {
		errno = e;
		return -1;
	}
	return next(fd, addr, len);
}

static void print_seen(const char *what)
{
	print_message("# %s: calls recv %llu sendmsg %llu shutdown %llu accept %llu; injected "
		      "EINTR %llu, EAGAIN %llu, short reads %llu, short writes %llu, "
		      "ECONNRESET %llu, EPIPE %llu, EMFILE %llu, ECONNABORTED %llu, other %llu\n",
		      what, (unsigned long long)seen.recv_calls,
		      (unsigned long long)seen.sendmsg_calls,
		      (unsigned long long)seen.shutdown_calls,
		      (unsigned long long)seen.accept_calls, (unsigned long long)seen.eintr,
		      (unsigned long long)seen.eagain, (unsigned long long)seen.short_rx,
		      (unsigned long long)seen.short_tx, (unsigned long long)seen.reset,
		      (unsigned long long)seen.epipe, (unsigned long long)seen.emfile,
		      (unsigned long long)seen.aborted, (unsigned long long)seen.other);
}

/* ---- Fixture ---- */

/* The transport fixture (envlib.h) with the counting allocator around it. */
static void sys_env_init(struct env *e)
{
	testlib_alloc_install();
	env_init(e, NULL);
}

/* The clean end: no connection, no pool buffer, no event, no hush allocation. */
static void sys_env_done(struct env *e)
{
	env_done(e);
	struct testlib_alloc_stats a;
	testlib_alloc_get(&a);
	assert_int_equal(a.live, 0);
	testlib_alloc_uninstall();
}

/* Two hush connections over a socketpair: a is the client, b the server. */
struct pair {
	struct end a;
	struct end b;
	int sv[2];
};

/*
 * Opens a pair keyed by raw keys (d NULL) or by a handshake with d's identities; each
 * end will send total bytes in messages of up to max_msg.
 */
static void pair_open_cfg(struct env *e, struct pair *p, const struct ids *d,
			  const struct hush_conn_config *cfg, uint64_t total, size_t max_msg,
			  uint64_t seed)
{
	memset(p, 0, sizeof(*p));
	end_reset(&p->a);
	end_reset(&p->b);
	p->a.peer = &p->b;
	p->b.peer = &p->a;
	p->a.tx_seed = 2 * seed + 1;
	p->b.tx_seed = 2 * seed + 2;
	p->a.rng = 3 * seed + 1;
	p->b.rng = 3 * seed + 2;
	p->a.tx_total = p->b.tx_total = total;
	p->a.max_msg = p->b.max_msg = max_msg;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->sv), 0);
	unplan_fd(p->sv[0]);
	unplan_fd(p->sv[1]);
	assert_int_equal(hush_conn_new(&p->a.conn, e->loop, p->sv[0], cfg, &end_cb, &p->a), 0);
	assert_int_equal(hush_conn_new(&p->b.conn, e->loop, p->sv[1], cfg, &end_cb, &p->b), 0);
	if (d == NULL) {
		assert_int_equal(hush_conn_start_raw(p->a.conn, HUSH_RP_ALTS_AES128_GCM_REKEY,
						     KEY44, sizeof(KEY44), HUSH_SIDE_CLIENT),
				 0);
		assert_int_equal(hush_conn_start_raw(p->b.conn, HUSH_RP_ALTS_AES128_GCM_REKEY,
						     KEY44, sizeof(KEY44), HUSH_SIDE_SERVER),
				 0);
	} else {
		assert_int_equal(hush_conn_start_handshake(p->a.conn, &d->cc, HUSH_SIDE_CLIENT), 0);
		assert_int_equal(hush_conn_start_handshake(p->b.conn, &d->sc, HUSH_SIDE_SERVER), 0);
	}
}

static void pair_open(struct env *e, struct pair *p, const struct ids *d, uint64_t total,
		      size_t max_msg, uint64_t seed)
{
	pair_open_cfg(e, p, d, NULL, total, max_msg, seed);
}

static void pair_close(struct pair *p)
{
	hush_conn_free(p->a.conn);
	hush_conn_free(p->b.conn);
	p->a.conn = p->b.conn = NULL;
	unplan_fd(p->sv[0]);
	unplan_fd(p->sv[1]);
}

/* Applies plan q to both directions of both sockets of p. */
static void pair_plan(struct pair *p, const struct plan *q)
{
	for (int i = 0; i < 2; i++) {
		struct plan *fp = plan_fd(p->sv[i]);
		fp[0] = fp[1] = *q;
	}
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/*
 * Runs the loop, pumping the ends in x, until done(arg) or ms pass. A 10 ms tick keeps
 * a single iteration from blocking when nothing is left to happen. Returns done(arg).
 */
static bool drive(struct env *e, struct end *const *x, int nx, bool (*done)(void *), void *arg,
		  int ms)
{
	struct event *tick = event_new(e->base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval tv = {0, 10000};
	struct timeval t0, t1;
	event_add(tick, &tv);
	gettimeofday(&t0, NULL);
	for (;;) {
		if (done(arg)) {
			break;
		}
		gettimeofday(&t1, NULL);
		if ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000 > ms) {
			break;
		}
		for (int i = 0; i < nx; i++) {
			end_pump(x[i]);
		}
		event_base_loop(e->base, EVLOOP_ONCE);
	}
	event_free(tick);
	return done(arg);
}

static bool pair_finished(void *arg)
{
	struct pair *p = arg;
	return pair_done(&p->a, &p->b) || end_failed(&p->a) || end_failed(&p->b);
}

/* Asserts that both streams of p went through whole and closed cleanly. */
static void assert_pair_intact(const struct pair *p)
{
	assert_int_equal(p->a.err, 0);
	assert_int_equal(p->b.err, 0);
	assert_int_equal(p->a.write_err, 0);
	assert_int_equal(p->b.write_err, 0);
	assert_true(p->a.bad_at == UINT64_MAX);
	assert_true(p->b.bad_at == UINT64_MAX);
	assert_true(pair_done(&p->a, &p->b));
}

/* Runs one pair under plan q to its end and checks it; returns nothing on success. */
static void run_planned_pair(struct env *e, const struct ids *d, const struct hush_conn_config *cfg,
			     const struct plan *q, uint64_t total, size_t max_msg, uint64_t seed)
{
	struct pair p;
	pair_open_cfg(e, &p, d, cfg, total, max_msg, seed);
	pair_plan(&p, q);
	struct end *x[2] = {&p.a, &p.b};
	drive(e, x, 2, pair_finished, &p, 20000);
	if (!pair_done(&p.a, &p.b)) {
		print_message("# seed %llu cap %u: a err %d/%d bad %llu rx %llu/%llu; b err %d/%d "
			      "bad %llu rx %llu/%llu\n",
			      (unsigned long long)seed, q->cap, p.a.err, p.a.write_err,
			      (unsigned long long)p.a.bad_at, (unsigned long long)p.a.rx_done,
			      (unsigned long long)p.b.tx_total, p.b.err, p.b.write_err,
			      (unsigned long long)p.b.bad_at, (unsigned long long)p.b.rx_done,
			      (unsigned long long)p.a.tx_total);
	}
	assert_pair_intact(&p);
	/* Faults were actually applied to both sockets in both directions. */
	for (int i = 0; i < 2; i++) {
		assert_true(plans[p.sv[i]][0].calls > 0);
		assert_true(plans[p.sv[i]][1].calls > 0);
	}
	pair_close(&p);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
}

/* ---- Tests ---- */

/*
 * The interposition takes: every byte a hush connection sends goes through this
 * program's sendmsg and every byte it receives through its recv, and those counts
 * agree with each other and exceed the plaintext by the records' overhead.
 */
static void sysfault_interposer_sees_every_transport_byte(void **state)
{
	(void)state;
	struct env e;
	sys_env_init(&e);
	struct pair p;
	pair_open(&e, &p, NULL, 100000, 20000, 1);
	struct plan none = {0};
	pair_plan(&p, &none);
	uint64_t shut0 = seen.shutdown_calls;
	struct end *x[2] = {&p.a, &p.b};
	drive(&e, x, 2, pair_finished, &p, 5000);
	assert_pair_intact(&p);
	for (int i = 0; i < 2; i++) {
		struct plan *rx = &plans[p.sv[i]][0];
		struct plan *tx = &plans[p.sv[1 - i]][1];
		assert_true(rx->calls > 0 && tx->calls > 0);
		assert_int_equal(rx->bytes, tx->bytes);
		assert_true(rx->bytes >= 100000 + HUSH_RECORD_OVERHEAD * (100000 / 16384 + 1));
	}
	/* Both ends shut their write side down through shutdown(). */
	assert_true(seen.shutdown_calls >= shut0 + 2);
	pair_close(&p);
	sys_env_done(&e);
}

/* Lengths beyond 1..64 that sit on the transport's boundaries: a record header, a
 * default frame and its neighbours, the default read size, the largest write buffer. */
static const unsigned big_caps[] = {100,   1000,  4096,  16383, 16384, 16385,
				    16408, 32768, 33280, 65535, 65536};

/*
 * Raw-key connections where every recv and every sendmsg of both ends moves at most k
 * bytes, for every k from 1 to 64 and the lengths above, with EINTR on every third call
 * and EAGAIN on every seventh: both streams arrive whole and in order, and both ends
 * close cleanly.
 */
static void sysfault_raw_short_io_of_every_length_loses_nothing(void **state)
{
	(void)state;
	struct env e;
	sys_env_init(&e);
	uint64_t s0 = seen.short_rx, t0 = seen.short_tx, i0 = seen.eintr, a0 = seen.eagain;
	unsigned n = 64 + sizeof(big_caps) / sizeof(big_caps[0]);
	for (unsigned i = 0; i < n; i++) {
		struct plan q = {.eintr_every = 3, .eagain_every = 7};
		q.cap = i < 64 ? i + 1 : big_caps[i - 64];
		run_planned_pair(&e, NULL, NULL, &q, q.cap < 8 ? 20000 : 60000, 24000, 100 + i);
	}
	print_message(
	    "# raw: %u lengths; short reads %llu, short writes %llu, EINTR %llu, "
	    "EAGAIN %llu\n",
	    n, (unsigned long long)(seen.short_rx - s0), (unsigned long long)(seen.short_tx - t0),
	    (unsigned long long)(seen.eintr - i0), (unsigned long long)(seen.eagain - a0));
	assert_true(seen.short_rx - s0 > 1000 && seen.short_tx - t0 > 1000);
	sys_env_done(&e);
}

/*
 * The same for handshake-keyed connections, cycling through the six Noise protocols:
 * the handshake's messages, the records after them and the close records all go through
 * the faulty calls.
 */
static void sysfault_handshake_short_io_of_every_length_loses_nothing(void **state)
{
	(void)state;
	struct env e;
	sys_env_init(&e);
	struct ids d[6];
	for (int p = 0; p < 6; p++) {
		ids_init(&d[p], (enum hush_noise_protocol)(HUSH_NOISE_XX_25519_AESGCM_SHA256 + p));
	}
	uint64_t s0 = seen.short_rx, t0 = seen.short_tx;
	unsigned n = 64 + sizeof(big_caps) / sizeof(big_caps[0]);
	for (unsigned i = 0; i < n; i++) {
		struct plan q = {.eintr_every = 3, .eagain_every = 7};
		q.cap = i < 64 ? i + 1 : big_caps[i - 64];
		run_planned_pair(&e, &d[i % 6], NULL, &q, q.cap < 8 ? 8000 : 30000, 12000, 200 + i);
	}
	print_message("# handshake: %u lengths; short reads %llu, short writes %llu\n", n,
		      (unsigned long long)(seen.short_rx - s0),
		      (unsigned long long)(seen.short_tx - t0));
	for (int p = 0; p < 6; p++) {
		ids_done(&d[p]);
	}
	sys_env_done(&e);
}

/*
 * A pseudo-random schedule mixing EINTR, EAGAIN and short reads and writes of any length
 * from 1 to 64 KiB on every call, over megabytes each way with messages up to 256 KiB,
 * alternating raw-key and handshake-keyed connections.
 */
static void sysfault_random_schedule_loses_nothing(void **state)
{
	(void)state;
	struct env e;
	sys_env_init(&e);
	struct ids d;
	ids_init(&d, HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256);
	uint64_t i0 = seen.eintr, a0 = seen.eagain, s0 = seen.short_rx, t0 = seen.short_tx;
	for (uint64_t seed = 1; seed <= 12; seed++) {
		struct plan q = {.rng = seed * 0x9e3779b97f4a7c15ull};
		run_planned_pair(&e, seed % 2 ? NULL : &d, NULL, &q, 2u << 20, 256 * 1024,
				 300 + seed);
	}
	print_message("# random: 12 pairs, 2 MiB each way; EINTR %llu, EAGAIN %llu, short reads "
		      "%llu, short writes %llu\n",
		      (unsigned long long)(seen.eintr - i0), (unsigned long long)(seen.eagain - a0),
		      (unsigned long long)(seen.short_rx - s0),
		      (unsigned long long)(seen.short_tx - t0));
	assert_true(seen.eintr > i0 && seen.eagain > a0 && seen.short_rx > s0 &&
		    seen.short_tx > t0);
	ids_done(&d);
	sys_env_done(&e);
}

/*
 * Pinned mode (each connection keeps its own buffers, a separate write path) under the
 * same faults: short reads and writes of 1 to 32 bytes and a random schedule, raw-key
 * and handshake-keyed.
 */
static void sysfault_pinned_connections_lose_nothing(void **state)
{
	(void)state;
	struct env e;
	sys_env_init(&e);
	struct ids d;
	ids_init(&d, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.flags |= HUSH_CONN_PINNED;
	for (unsigned k = 1; k <= 32; k++) {
		struct plan q = {.cap = k, .eintr_every = 3, .eagain_every = 7};
		run_planned_pair(&e, k % 2 ? NULL : &d, &cfg, &q, 10000, 20000, 400 + k);
	}
	for (uint64_t seed = 1; seed <= 4; seed++) {
		struct plan q = {.rng = seed * 0x2545f4914f6cdd1dull};
		run_planned_pair(&e, seed % 2 ? NULL : &d, &cfg, &q, 1u << 20, 100000, 500 + seed);
	}
	ids_done(&d);
	sys_env_done(&e);
}

/* A fatal fault on one socket of pair A; pair B, on the same loop, runs clean but for
 * short reads and writes. */
struct fatal_case {
	const char *what;
	bool handshake;
	int dir;          /* 0: recv, 1: sendmsg */
	int errno_value;
	uint64_t at;      /* after this many bytes */
	int want;         /* the failing end's error */
};

struct two_pairs {
	struct pair *a;
	struct pair *b;
};

static bool fatal_finished(void *arg)
{
	struct two_pairs *t = arg;
	struct end *hit = &t->a->b; /* the faulted end is A's server */
	struct end *other = &t->a->a;
	bool b_over = pair_finished(t->b);
	return b_over && hit->err != 0 && (other->err != 0 || other->eof != 0);
}

static void run_fatal_case(const struct fatal_case *fc, const struct ids *d)
{
	struct env e;
	sys_env_init(&e);
	struct pair a, b;
	pair_open(&e, &a, fc->handshake ? d : NULL, 400000, 30000, 11);
	pair_open(&e, &b, fc->handshake ? d : NULL, 400000, 30000, 12);
	/* A's server socket fails; its other direction passes. */
	struct plan *fp = plan_fd(a.sv[1]);
	fp[fc->dir].fatal = true;
	fp[fc->dir].fatal_at = fc->at;
	fp[fc->dir].fatal_errno = fc->errno_value;
	struct plan shortio = {.cap = 777, .eintr_every = 5};
	pair_plan(&b, &shortio);
	struct two_pairs t = {&a, &b};
	struct end *x[4] = {&a.a, &a.b, &b.a, &b.b};
	drive(&e, x, 4, fatal_finished, &t, 10000);
	print_message("# %s: A's server failed with %s after %llu bytes; A's client: err %d "
		      "eof %d\n",
		      fc->what, hush_strerror(a.b.err), (unsigned long long)fp[fc->dir].bytes,
		      a.a.err, a.a.eof);
	assert_int_equal(a.b.err, fc->want);
	assert_int_equal(hush_conn_error(a.b.conn), fc->want);
	assert_int_equal(fp[fc->dir].bytes, fc->at);
	/* What A's ends received before the failure was right. */
	assert_true(a.a.bad_at == UINT64_MAX && a.b.bad_at == UINT64_MAX);
	assert_true(a.a.err != 0 || a.a.eof != 0);
	/* B, on the same loop, finished intact. */
	assert_pair_intact(&b);
	/* The failed connection gave its buffers back at once. */
	assert_int_equal(hush_conn_buffers_held(a.b.conn), 0);
	pair_close(&a);
	pair_close(&b);
	sys_env_done(&e);
}

static const struct fatal_case fatal_cases[] = {
	{"raw, ECONNRESET on recv mid-stream", false, 0, ECONNRESET, 50000, HUSH_ECONNRESET},
	{"raw, ECONNRESET on sendmsg mid-stream", false, 1, ECONNRESET, 50000, HUSH_ECONNRESET},
	{"raw, EPIPE on sendmsg mid-stream", false, 1, EPIPE, 50001, HUSH_EPIPE},
	{"handshake, ECONNRESET on the first recv", true, 0, ECONNRESET, 0, HUSH_ECONNRESET},
	{"handshake, ECONNRESET inside message 1", true, 0, ECONNRESET, 5, HUSH_ECONNRESET},
	{"handshake, EPIPE on the first sendmsg", true, 1, EPIPE, 0, HUSH_EPIPE},
	{"handshake, ECONNRESET on recv mid-stream", true, 0, ECONNRESET, 70000, HUSH_ECONNRESET},
	{"handshake, EPIPE on sendmsg mid-stream", true, 1, EPIPE, 70000, HUSH_EPIPE},
};

/* Runs the fatal cases of errno_value with identities for protocol; the hooks must have
 * injected that error (*injected grew). */
static void run_fatal_cases(int errno_value, enum hush_noise_protocol protocol,
			    const uint64_t *injected)
{
	struct ids d;
	ids_init(&d, protocol);
	uint64_t before = *injected;
	for (size_t i = 0; i < sizeof(fatal_cases) / sizeof(fatal_cases[0]); i++) {
		if (fatal_cases[i].errno_value == errno_value) {
			run_fatal_case(&fatal_cases[i], &d);
		}
	}
	assert_true(*injected > before);
	ids_done(&d);
}

/* ECONNRESET on a receive or a send, before, during or after the handshake, fails that
 * connection with HUSH_ECONNRESET; another connection on the same loop completes. */
static void sysfault_connreset_fails_only_that_connection(void **state)
{
	(void)state;
	run_fatal_cases(ECONNRESET, HUSH_NOISE_XX_25519_AESGCM_SHA256, &seen.reset);
}

/* EPIPE on a send, during or after the handshake, fails that connection with
 * HUSH_EPIPE; another connection on the same loop completes. */
static void sysfault_epipe_fails_only_that_connection(void **state)
{
	(void)state;
	run_fatal_cases(EPIPE, HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256, &seen.epipe);
}

static bool shut_judged(void *arg)
{
	const struct end *x = arg;
	return x->shut != 0 || x->err != 0;
}

/*
 * shutdown() of the write side failing with ENOTCONN (the peer is gone already) still
 * reports SHUTDOWN; failing otherwise fails the connection with HUSH_EIO.
 */
static void sysfault_shutdown_errors_are_reported(void **state)
{
	(void)state;
	for (int mode = 0; mode < 2; mode++) {
		struct env e;
		sys_env_init(&e);
		struct pair p;
		pair_open(&e, &p, NULL, 10000, 1000, 21);
		struct plan *fp = plan_fd(p.sv[0]);
		fp[1].shutdown_errno = mode == 0 ? ENOTCONN : EINVAL;
		p.b.hold = true; /* b sends nothing: only a's shutdown is judged */
		struct end *x[2] = {&p.a, &p.b};
		drive(&e, x, 2, shut_judged, &p.a, 5000);
		if (mode == 0) {
			assert_int_equal(p.a.shut, 1);
			assert_int_equal(p.a.err, 0);
		} else {
			assert_int_equal(p.a.shut, 0);
			assert_int_equal(p.a.err, HUSH_EIO);
		}
		assert_int_equal(fp[1].shutdown_errno, 0); /* it was called */
		pair_close(&p);
		sys_env_done(&e);
	}
}

/* ---- Listener ---- */

struct accepted {
	struct end *server;
	int n;
};

static void on_accept(struct hush_listener *l, struct hush_conn *c, const struct sockaddr *addr,
		      socklen_t len, void *arg)
{
	struct accepted *acc = arg;
	(void)l;
	(void)addr;
	(void)len;
	acc->n++;
	acc->server->conn = c;
	hush_conn_set_arg(c, acc->server);
}

static bool listener_pair_done(void *arg)
{
	struct pair *p = arg;
	return pair_finished(p);
}

/*
 * accept() failing: EINTR and ECONNABORTED are retried at once (libevent's listener
 * treats them as transient); EMFILE, three times in a row, makes the listener pause
 * 100 ms each time instead of spinning, and then accept the waiting peer, whose
 * connection completes intact.
 */
static void listener_accept_errors_back_off_then_accept(void **state)
{
	(void)state;
	struct env e;
	sys_env_init(&e);
	struct ids d;
	ids_init(&d, HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	struct plan *lp = plan_fd(lfd);
	static const int script[] = {EINTR, ECONNABORTED, EMFILE, EMFILE, EMFILE};
	memcpy(lp[0].script, script, sizeof(script));
	lp[0].nscript = sizeof(script) / sizeof(script[0]);

	struct pair p;
	memset(&p, 0, sizeof(p));
	end_reset(&p.a);
	end_reset(&p.b);
	p.a.peer = &p.b;
	p.b.peer = &p.a;
	p.a.tx_seed = 41;
	p.b.tx_seed = 42;
	p.a.rng = p.b.rng = 43;
	p.a.tx_total = p.b.tx_total = 100000;
	p.a.max_msg = p.b.max_msg = 10000;
	struct accepted acc = {&p.b, 0};
	struct hush_listener_config lc;
	hush_listener_config_init(&lc);
	lc.handshake = &d.sc;
	lc.callbacks = &end_cb;
	lc.on_accept = on_accept;
	lc.accept_arg = &acc;
	struct hush_listener *l;
	assert_int_equal(hush_listener_new(&l, e.loop, lfd, &lc), 0);
	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(hush_conn_new(&p.a.conn, e.loop, cfd, NULL, &end_cb, &p.a), 0);
	assert_int_equal(hush_conn_start_handshake(p.a.conn, &d.cc, HUSH_SIDE_CLIENT), 0);
	struct timeval t0, t1;
	gettimeofday(&t0, NULL);
	struct end *x[2] = {&p.a, &p.b};
	drive(&e, x, 2, listener_pair_done, &p, 5000);
	gettimeofday(&t1, NULL);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
	assert_int_equal(acc.n, 1);
	assert_pair_intact(&p);
	/* Five failed calls and the one that took the peer (then its EAGAIN); no spin. */
	print_message("# listener: %llu accept calls, peer accepted and done after %ld ms\n",
		      (unsigned long long)lp[0].calls, ms);
	assert_true(lp[0].calls >= 6 && lp[0].calls <= 8);
	assert_true(ms >= 290);
	/* Each EMFILE is followed by a pause of about 100 ms before the next call. */
	for (int i = 2; i < 5; i++) {
		const struct timeval *a = &lp[0].first_call[i];
		const struct timeval *b = &lp[0].first_call[i + 1];
		long gap = (b->tv_sec - a->tv_sec) * 1000 + (b->tv_usec - a->tv_usec) / 1000;
		assert_true(gap >= 95);
	}
	/* EINTR and ECONNABORTED were retried without the 100 ms pause. */
	const struct timeval *c0 = &lp[0].first_call[0], *c2 = &lp[0].first_call[2];
	assert_true((c2->tv_sec - c0->tv_sec) * 1000 + (c2->tv_usec - c0->tv_usec) / 1000 < 90);
	hush_listener_free(l);
	unplan_fd(lfd);
	hush_conn_free(p.a.conn);
	hush_conn_free(p.b.conn);
	ids_done(&d);
	sys_env_done(&e);
}

static int report_totals(void **state)
{
	(void)state;
	print_seen("all tests");
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sysfault_interposer_sees_every_transport_byte),
		cmocka_unit_test(sysfault_raw_short_io_of_every_length_loses_nothing),
		cmocka_unit_test(sysfault_handshake_short_io_of_every_length_loses_nothing),
		cmocka_unit_test(sysfault_random_schedule_loses_nothing),
		cmocka_unit_test(sysfault_pinned_connections_lose_nothing),
		cmocka_unit_test(sysfault_connreset_fails_only_that_connection),
		cmocka_unit_test(sysfault_epipe_fails_only_that_connection),
		cmocka_unit_test(sysfault_shutdown_errors_are_reported),
		cmocka_unit_test(listener_accept_errors_back_off_then_accept),
	};
	return cmocka_run_group_tests(tests, NULL, report_totals);
}
