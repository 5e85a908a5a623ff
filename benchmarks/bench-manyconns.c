/*
 * hush-bench's two-process benchmarks: IdleConnMemory and ManyConns. The server side
 * runs in a forked child that echoes everything and reports its heap on request; the
 * client side runs here.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hush-bench.h"

/* ------------------------------------------------------------------------------------ */
/* Many connections across two processes: IdleConnMemory and ManyConns                  */
/* ------------------------------------------------------------------------------------ */

/* What one process says about its heap. */
struct mem_report {
	int64_t heap;		/* live bytes: hush + OpenSSL + libevent */
	int64_t buffers;	/* live blocks of at least BENCH_BUFFER_MIN bytes */
	uint64_t pool_retained; /* idle bytes the pool kept, given back by the trim first */
	uint64_t pool_in_use;	/* pool buffers out */
	uint64_t allocs;	/* allocator calls so far: hush + OpenSSL + libevent */
	uint64_t minflt;	/* minor page faults so far (getrusage) */
	int64_t conns;		/* connections alive (server) */
	int64_t failures;	/* connections that failed (server) */
};

/* Fills r; with trim, first hands the pool's retained buffers back to the allocator. */
static void mem_report_fill(struct mem_report *r, struct env *env, int trim)
{
	struct bench_alloc_counts a;
	struct hush_pool_stats st;
	struct rusage ru;
	memset(r, 0, sizeof(*r));
	hush_pool_stats(env->pool, &st);
	r->pool_in_use = st.total.in_use;
	if (trim) {
		r->pool_retained = st.total.bytes_retained;
		hush_pool_trim(env->pool);
	}
	bench_alloc_read(&a);
	r->heap = a.live_bytes;
	r->buffers = a.live_buffers;
	r->allocs = a.allocs;
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		r->minflt = (uint64_t)ru.ru_minflt;
	}
}

/* --- The server: a forked child that echoes everything and reports on request --- */

static struct {
	struct env env;
	ep_open_fn open;
	int64_t conns;
	int64_t failures;
} srv;

static void srv_on_data(struct ep *e, const uint8_t *data, size_t len)
{
	if (e->ops->write(e, data, len) < 0) {
		srv.failures++;
	}
}

static void srv_on_close(struct ep *e)
{
	e->ops->free(e);
	free(e);
	srv.conns--;
}

static const struct ep_cb srv_cb = {NULL, srv_on_data, NULL, srv_on_close};

static void srv_on_accept(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	(void)arg;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED) {
				continue;
			}
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				srv.failures++;
			}
			return;
		}
		struct ep *e = malloc(sizeof(*e));
		if (e == NULL || tune_socket(fd) < 0) {
			close(fd);
			free(e);
			srv.failures++;
			continue;
		}
		ep_init(e, &srv_cb, NULL);
		if (srv.open(e, &srv.env, fd, 1) < 0) {
			free(e);
			srv.failures++;
			continue;
		}
		srv.conns++;
	}
}

/* Commands: 't' trim the pool and report, 's' report, 'q' exit. */
static void srv_on_control(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	char cmd;
	if (read(fd, &cmd, 1) != 1 || cmd == 'q') {
		_exit(0);
	}
	struct mem_report r;
	mem_report_fill(&r, &srv.env, cmd == 't');
	r.conns = srv.conns;
	r.failures = srv.failures;
	if (bench_write_full(fd, &r, sizeof(r)) < 0) {
		_exit(1);
	}
}

static void server_main(ep_open_fn open, int lfd, int ctl)
{
	srv.open = open;
	if (env_init(&srv.env, NULL) < 0 || evutil_make_socket_nonblocking(lfd) < 0) {
		_exit(1);
	}
	struct event *lev = event_new(srv.env.base, lfd, EV_READ | EV_PERSIST, srv_on_accept, NULL);
	struct event *cev =
	    event_new(srv.env.base, ctl, EV_READ | EV_PERSIST, srv_on_control, NULL);
	if (lev == NULL || cev == NULL || event_add(lev, NULL) < 0 || event_add(cev, NULL) < 0) {
		_exit(1);
	}
	event_base_dispatch(srv.env.base);
	_exit(0);
}

/* --- The client side: this process --- */

struct session {
	const char *name; /* for messages */
	ep_open_fn open;
	pid_t pid;
	int ctl;
	struct sockaddr_in addr;
	struct env env;
	struct ep *eps; /* never moved: the connections point at their entries */
	long cap;
	long n;	    /* connections opened */
	long ready; /* connections that finished their first exchange */
	long failures;
	uint64_t echo_bytes; /* ManyConns: bytes echoed back to busy connections */
	long in_flight;	     /* ManyConns: busy connections waiting for an echo */
	int draining;	     /* ManyConns: echoes complete without a new message */
};

static void cli_on_open(struct ep *e)
{
	struct session *s = e->user;
	if (e->ops->write(e, ping_msg, sizeof(ping_msg)) < 0) {
		s->failures++;
	}
}

static void cli_on_data(struct ep *e, const uint8_t *data, size_t len)
{
	struct session *s = e->user;
	(void)data;
	if (!e->ready) {
		if (e->rx >= PING_SIZE) {
			e->ready = 1;
			s->ready++;
		}
		return;
	}
	s->echo_bytes += len;
	e->busy_rx += len;
	if (e->busy && e->busy_rx >= MANY_MSG) {
		e->busy_rx -= MANY_MSG;
		if (s->draining) {
			e->in_flight = 0;
			s->in_flight--;
		} else if (e->ops->write(e, many_msg, sizeof(many_msg)) < 0) {
			s->failures++;
		}
	}
}

static void cli_on_close(struct ep *e)
{
	struct session *s = e->user;
	s->failures++;
}

static const struct ep_cb cli_cb = {cli_on_open, cli_on_data, NULL, cli_on_close};

/* Forks the server for variant open and prepares this side for up to cap connections. */
static int session_start(struct session *s, const char *name, ep_open_fn open, long cap)
{
	int sv[2];
	memset(s, 0, sizeof(*s));
	s->name = name;
	s->open = open;
	s->pid = -1;
	s->ctl = -1;
	s->cap = cap;
	s->eps = calloc((size_t)cap, sizeof(*s->eps));
	if (s->eps == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		return -1;
	}
	int lfd = listen_loopback(&s->addr, 4096);
	if (lfd < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	fflush(stdout);
	fflush(stderr);
	s->pid = fork();
	if (s->pid == 0) {
		close(sv[0]);
		server_main(open, lfd, sv[1]);
	}
	close(sv[1]);
	close(lfd);
	s->ctl = sv[0];
	if (s->pid < 0 || env_init(&s->env, NULL) < 0) {
		return -1;
	}
	return 0;
}

static int session_ask(struct session *s, char cmd, struct mem_report *r)
{
	if (bench_write_full(s->ctl, &cmd, 1) < 0 || bench_read_full(s->ctl, r, sizeof(*r)) < 0) {
		return -1;
	}
	return 0;
}

/* Runs env's loop until cond holds (0), a failure is counted or ms pass (-1). */
static int session_wait(struct session *s, int (*cond)(const struct session *), int ms)
{
	uint64_t end = bench_now_ns() + (uint64_t)ms * 1000000u;
	while (!cond(s)) {
		if (s->failures > 0 || bench_now_ns() > end) {
			return -1;
		}
		env_pump(&s->env, 5);
	}
	return 0;
}

static int all_ready(const struct session *s)
{
	return s->ready >= s->n;
}

/* Connections opened and not ready yet, at most. */
#define MAX_IN_FLIGHT 256

static int few_in_flight(const struct session *s)
{
	return s->n - s->ready < MAX_IN_FLIGHT / 2;
}

/* Opens connections until there are target, and waits until each has been through its
 * handshake (if any) and one ping echoed by the server. */
static int session_grow(struct session *s, long target)
{
	while (s->n < target && s->n < s->cap) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&s->addr, sizeof(s->addr)) < 0 ||
		    tune_socket(fd) < 0) {
			bench_fail(s->name, "connection %ld: %s", s->n, strerror(errno));
			if (fd >= 0) {
				close(fd);
			}
			return -1;
		}
		struct ep *e = &s->eps[s->n];
		ep_init(e, &cli_cb, s);
		if (s->open(e, &s->env, fd, 0) < 0) {
			bench_fail(s->name, "connection %ld could not be made", s->n);
			return -1;
		}
		s->n++;
		/* Let handshakes and echoes progress while the rest connect, and keep the
		 * server's accept queue short: a full one drops SYNs, and the kernel retries a
		 * dropped SYN only after a second. */
		if (s->n % 32 == 0) {
			env_pump(&s->env, 0);
		}
		if (s->n - s->ready >= MAX_IN_FLIGHT &&
		    session_wait(s, few_in_flight, 120000) < 0) {
			break;
		}
	}
	if (session_wait(s, all_ready, 120000) < 0) {
		bench_fail(s->name, "%ld of %ld connections ready, %ld failed", s->ready, s->n,
			   s->failures);
		return -1;
	}
	/* A moment for anything deferred (frees, flushes) on this side. */
	for (int i = 0; i < 4; i++) {
		env_pump(&s->env, 0);
	}
	return 0;
}

/* Both sides' reports, each pool trimmed first. */
static int session_measure(struct session *s, struct mem_report *srv_r, struct mem_report *cli_r)
{
	if (session_ask(s, 't', srv_r) < 0) {
		bench_fail(s->name, "lost the server process");
		return -1;
	}
	if (srv_r->failures > 0) {
		bench_fail(s->name, "%lld server-side connection failures",
			   (long long)srv_r->failures);
		return -1;
	}
	mem_report_fill(cli_r, &s->env, 1);
	return 0;
}

static void session_end(struct session *s)
{
	/* The server goes first, so its side of each connection closes first and the
	 * client's ephemeral ports do not linger in TIME_WAIT. */
	if (s->pid > 0) {
		char q = 'q';
		int status;
		if (bench_write_full(s->ctl, &q, 1) < 0) {
			kill(s->pid, SIGKILL);
		}
		waitpid(s->pid, &status, 0);
	}
	if (s->ctl >= 0) {
		close(s->ctl);
	}
	for (long i = 0; i < s->n; i++) {
		if (s->eps[i].ops != NULL) {
			s->eps[i].ops->free(&s->eps[i]);
		}
	}
	if (s->env.base != NULL) {
		env_free(&s->env);
	}
	free(s->eps);
	memset(s, 0, sizeof(*s));
}

long nofile_limit;

/* Most connections one process may hold next to its other descriptors. */
static long max_conns(void)
{
	return nofile_limit - WARM_CONNS - 64;
}

/*
 * IdleConnMemory. The server side runs in a forked child, so each process holds one
 * socket per connection. Each side first opens WARM_CONNS connections and keeps them
 * open: the baseline is taken after them, so one-time costs are not charged to
 * connections (OpenSSL's lazily built algorithm caches and DRBGs, libevent's first map
 * entries, hush's cipher-context cache). Then connections are added up to each N; every
 * one completes its handshake and one 64-byte ping echoed by the server (so its buffers
 * are those of an established, used connection) before both processes report their
 * heap. B/conn is the larger side's growth over its baseline divided by N.
 *
 * Each hush pool is trimmed (hush_pool_trim) before a report: the idle buffers a pool
 * retains for reuse are bounded by its per-tier retention caps and shared by every
 * connection of the process, so they are not a per-connection cost; pool-retained-B says
 * how much the two pools gave back at that trim.
 */
static void idle_run(const struct benchmark *b, const struct variant *v)
{
	static const long full_n[] = {250, 1000, 4000, 8000};
	static const long quick_n[] = {1000, 8000};
	const long *all = opt.quick ? quick_n : full_n;
	size_t nall = opt.quick ? ARRAY_SIZE(quick_n) : ARRAY_SIZE(full_n);
	long ns[ARRAY_SIZE(full_n)];
	size_t k = 0;
	char name[128];

	for (size_t i = 0; i < nall; i++) {
		snprintf(name, sizeof(name), "%s/%s/N=%ld", b->name, v->name, all[i]);
		if (!wanted(name)) {
			continue;
		}
		if (all[i] > max_conns()) {
			bench_fail(name, "needs %ld open files per process; the limit is %ld",
				   all[i] + WARM_CONNS + 64, nofile_limit);
			continue;
		}
		ns[k++] = all[i];
	}
	if (k == 0) {
		return;
	}
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	struct session s;
	struct mem_report srv0, cli0;
	if (session_start(&s, name, v->open, WARM_CONNS + ns[k - 1]) < 0) {
		bench_fail(name, "could not start the server process: %s", strerror(errno));
		session_end(&s);
		return;
	}
	if (session_grow(&s, WARM_CONNS) < 0 || session_measure(&s, &srv0, &cli0) < 0) {
		session_end(&s);
		return;
	}
	for (size_t i = 0; i < k; i++) {
		struct mem_report sr, cr;
		snprintf(name, sizeof(name), "%s/%s/N=%ld", b->name, v->name, ns[i]);
		if (session_grow(&s, WARM_CONNS + ns[i]) < 0 || session_measure(&s, &sr, &cr) < 0) {
			break;
		}
		double n = (double)ns[i];
		double sb = (double)(sr.heap - srv0.heap) / n;
		double cb = (double)(cr.heap - cli0.heap) / n;
		double sbuf = (double)(sr.buffers - srv0.buffers) / n;
		double cbuf = (double)(cr.buffers - cli0.buffers) / n;
		struct bench_metric m[] = {
		    {round(sb > cb ? sb : cb), "B/conn"},
		    {round(sb), "server-B/conn"},
		    {round(cb), "client-B/conn"},
		    {round((sbuf > cbuf ? sbuf : cbuf) * 1000) / 1000, "buffers/conn"},
		    {(double)(sr.pool_retained + cr.pool_retained), "pool-retained-B"},
		};
		report(name, 2, 1, m, ARRAY_SIZE(m));
	}
	session_end(&s);
}

/* What one ManyConns phase (one variant at one connection count) measured. */
struct many_phase {
	double peak, peak_srv, peak_cli; /* heap growth over the baseline, busy (B) */
	double mbps;			 /* echoed bytes received back per second */
	double idle_per_conn;		 /* heap per idle connection, the larger side */
	double idle_buffers;		 /* pool buffers out while idle, both sides */
	double faults_per_s;		 /* minor page faults per second, both sides, busy */
	double allocs_per_s;		 /* allocator calls per second, both sides, busy */
};

/*
 * One variant at one connection count: its server process, its connections on this
 * side, and what they cost. Two variants live side by side in this process, so this
 * side's heap is attributed by difference: only one variant's loop runs at a time, and
 * the heap change across each of its steps is its own.
 */
struct many_side {
	const char *name;
	ep_open_fn open;
	struct session s;
	struct mem_report srv0;	 /* the server's baseline */
	struct mem_report srv_b; /* the server's counters when busy began */
	int64_t cli_heap;	 /* this side's share of the client heap over its baseline */
	int64_t peak, peak_srv, peak_cli;
	uint64_t busy_ns;	      /* time its busy connections ran */
	uint64_t cli_faults;	      /* the client's minor page faults while it ran */
	uint64_t cli_allocs;	      /* the client's allocator calls while it ran */
	double rate[MANY_MAX_SLICES]; /* echoed bytes per second of each slice */
	int nslices;
	struct many_phase out;
};

static int64_t client_heap(void)
{
	struct bench_alloc_counts a;
	bench_alloc_read(&a);
	return a.live_bytes;
}

/* Starts the server and WARM_CONNS connections and takes the baseline. */
static int many_side_open(struct many_side *d, const char *name, ep_open_fn open, long n)
{
	struct mem_report cli0;
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->open = open;
	if (session_start(&d->s, name, open, WARM_CONNS + n) < 0) {
		bench_fail(name, "could not start the server process: %s", strerror(errno));
		return -1;
	}
	if (session_grow(&d->s, WARM_CONNS) < 0 || session_measure(&d->s, &d->srv0, &cli0) < 0) {
		return -1;
	}
	return 0;
}

/* Opens the other n connections and takes the idle figures (both pools trimmed). */
static int many_side_grow(struct many_side *d, long n)
{
	struct mem_report sr, cr;
	int64_t h0 = client_heap();
	if (session_grow(&d->s, WARM_CONNS + n) < 0 || session_measure(&d->s, &sr, &cr) < 0) {
		return -1;
	}
	d->cli_heap += client_heap() - h0;
	double sb = (double)(sr.heap - d->srv0.heap) / (double)n;
	double cb = (double)d->cli_heap / (double)n;
	d->out.idle_per_conn = round(sb > cb ? sb : cb);
	d->out.idle_buffers = (double)(sr.pool_in_use + cr.pool_in_use);
	for (long i = WARM_CONNS; i < d->s.n; i += MANY_BUSY_EVERY) {
		d->s.eps[i].busy = 1;
	}
	if (session_ask(&d->s, 's', &d->srv_b) < 0) {
		bench_fail(d->name, "lost the server process");
		return -1;
	}
	return 0;
}

/* Samples both processes' heap growth for the peaks. */
static int many_side_sample(struct many_side *d, int64_t h0)
{
	struct mem_report sr;
	if (session_ask(&d->s, 's', &sr) < 0) {
		bench_fail(d->name, "lost the server process");
		return -1;
	}
	int64_t ds = sr.heap - d->srv0.heap;
	int64_t dc = d->cli_heap + client_heap() - h0;
	d->peak = ds + dc > d->peak ? ds + dc : d->peak;
	d->peak_srv = ds > d->peak_srv ? ds : d->peak_srv;
	d->peak_cli = dc > d->peak_cli ? dc : d->peak_cli;
	return 0;
}

/*
 * One slice of the busy phase: every busy connection sends a message and echoes go on
 * for ms; then no new message is sent and the slice ends when every echo is back, so
 * the next slice (of either variant) starts with nothing in flight. The whole slice,
 * the drain too, counts as this variant's busy time.
 */
static int many_side_slice(struct many_side *d, uint64_t ms)
{
	struct session *s = &d->s;
	struct mem_report c0, c1;
	int64_t h0 = client_heap();
	mem_report_fill(&c0, &s->env, 0);
	uint64_t t0 = bench_now_ns(), next = t0, now;
	uint64_t bytes0 = s->echo_bytes;
	long kick = WARM_CONNS;
	s->draining = 0;
	while ((now = bench_now_ns()) - t0 < ms * 1000000u || s->in_flight > 0 || kick < s->n) {
		/* The first messages go out MANY_KICK connections per loop iteration: a write
		 * made outside any callback waits in its buffer for the end of the iteration,
		 * and hundreds of them at once would hold more buffers than the pool keeps
		 * (docs/DESIGN.md), once per slice. */
		for (int k = 0; k < MANY_KICK && kick < s->n && !s->draining;
		     kick += MANY_BUSY_EVERY) {
			struct ep *e = &s->eps[kick];
			if (!e->in_flight) {
				e->in_flight = 1;
				s->in_flight++;
				k++;
				if (e->ops->write(e, many_msg, sizeof(many_msg)) < 0) {
					s->failures++;
				}
			}
		}
		if (s->draining) {
			kick = s->n;
		}
		if (s->failures > 0) {
			bench_fail(d->name, "%ld connections failed while busy", s->failures);
			return -1;
		}
		if (now - t0 >= ms * 1000000u) {
			s->draining = 1;
		}
		if (now - t0 > (ms + 10000) * 1000000u) {
			bench_fail(d->name, "%ld echoes still missing 10 s after the slice",
				   s->in_flight);
			return -1;
		}
		if (now >= next) {
			if (many_side_sample(d, h0) < 0) {
				return -1;
			}
			next = now + 100000000u;
		}
		env_pump(&s->env, 5);
	}
	uint64_t took = bench_now_ns() - t0;
	d->busy_ns += took;
	if (d->nslices < MANY_MAX_SLICES) {
		d->rate[d->nslices++] = (double)(s->echo_bytes - bytes0) / ((double)took / 1e9);
	}
	if (many_side_sample(d, h0) < 0) {
		return -1;
	}
	mem_report_fill(&c1, &s->env, 0);
	d->cli_faults += c1.minflt - c0.minflt;
	d->cli_allocs += c1.allocs - c0.allocs;
	d->cli_heap += client_heap() - h0;
	return 0;
}

/* The busy figures, once every slice ran. */
static int many_side_finish(struct many_side *d)
{
	struct mem_report sr;
	if (session_ask(&d->s, 's', &sr) < 0) {
		bench_fail(d->name, "lost the server process");
		return -1;
	}
	if (sr.failures > 0) {
		bench_fail(d->name, "%lld server-side connection failures", (long long)sr.failures);
		return -1;
	}
	double secs = (double)d->busy_ns / 1e9;
	d->out.peak = (double)d->peak;
	d->out.peak_srv = (double)d->peak_srv;
	d->out.peak_cli = (double)d->peak_cli;
	d->out.mbps = round((double)d->s.echo_bytes / secs / 1e6 * 10) / 10;
	d->out.faults_per_s = round((double)(sr.minflt - d->srv_b.minflt + d->cli_faults) / secs);
	d->out.allocs_per_s = round((double)(sr.allocs - d->srv_b.allocs + d->cli_allocs) / secs);
	return 0;
}

/*
 * Runs one or two variants (d[0], d[1]) at n connections, each in its own pair of
 * fresh processes, set up as for IdleConnMemory. The idle figures are taken once every
 * connection is established, both pools trimmed (as IdleConnMemory does), and the busy
 * phase then starts from trimmed pools, as make demo's does. Then every 20th connection
 * echoes 16 KiB messages through its server, one message in flight each. With two
 * variants the busy phase alternates between them in slices of 50 ms
 * (which one goes first alternates too), so that load from elsewhere on the machine
 * falls on both alike; their throughputs are compared within one run. Peak heap (B) is
 * the largest, over samples every 100 ms, of both processes' growth over their
 * baselines, pools untrimmed: what the processes really hold.
 */
static int many_phases(struct many_side *d, int nsides, const char *const *names,
		       const ep_open_fn *opens, long n)
{
	uint64_t total_ms = opt.quick ? 500 : 3000;
	uint64_t slice_ms = 50;
	for (int k = 0; k < nsides; k++) {
		if (many_side_open(&d[k], names[k], opens[k], n) < 0) {
			return -1;
		}
	}
	for (int k = 0; k < nsides; k++) {
		if (many_side_grow(&d[k], n) < 0) {
			return -1;
		}
	}
	for (uint64_t i = 0; i < total_ms / slice_ms; i++) {
		for (int j = 0; j < nsides; j++) {
			int k = (i % 2 == 0) ? j : nsides - 1 - j;
			if (many_side_slice(&d[k], slice_ms) < 0) {
				return -1;
			}
		}
	}
	for (int k = 0; k < nsides; k++) {
		if (many_side_finish(&d[k]) < 0) {
			return -1;
		}
	}
	return 0;
}

static void many_report(const char *name, const struct many_phase *p)
{
	struct bench_metric m[] = {
	    {p->peak, "B"},
	    {p->mbps, "MB/s"},
	    {p->peak_srv, "server-B"},
	    {p->peak_cli, "client-B"},
	    {p->idle_per_conn, "idle-B/conn"},
	    {p->idle_buffers, "idle-buffers"},
	    {p->faults_per_s, "faults/s"},
	    {p->allocs_per_s, "allocs/s"},
	};
	report(name, 2, 1, m, ARRAY_SIZE(m));
}

/* hush's pinned mode, measured beside hush-native at each connection count. */
static const struct variant many_pinned = {"hush-pinned", open_hush_pinned, NULL};

/*
 * ManyConns: many_phases at each connection count. hush-native (ready-read) runs with
 * hush-pinned beside it, and a third row, native-vs-pinned, compares their echo
 * throughputs: within a repetition, the median over the busy phase's slice pairs (each
 * a slice of one and the adjacent slice of the other) of ready-read's rate over
 * pinned's; across repetitions, x is the median of that and min-x the lowest. Which of
 * the two starts alternates from one repetition to the next. OpenSSL's handshakes make its
 * phases slow, so it runs at the largest count only.
 */
static void many_run(const struct benchmark *b, const struct variant *v)
{
	static const long full_n[] = {1000, 3000, 5000, 7000, 9000};
	static const long quick_n[] = {1000, 9000};
	static unsigned pair_runs;
	const long *all = opt.quick ? quick_n : full_n;
	size_t nall = opt.quick ? ARRAY_SIZE(quick_n) : ARRAY_SIZE(full_n);
	const struct variant *beside = v->open == open_hush ? &many_pinned : NULL;
	bool pinned_first = beside != NULL && (pair_runs++ % 2) == 1;

	for (size_t i = 0; i < nall; i++) {
		long n = all[i];
		char name[128], bname[128], rname[128];
		if (beside == NULL && i + 1 < nall) {
			continue;
		}
		snprintf(name, sizeof(name), "%s/%s/N=%ld", b->name, v->name, n);
		snprintf(bname, sizeof(bname), "%s/%s/N=%ld", b->name,
			 beside != NULL ? beside->name : "", n);
		snprintf(rname, sizeof(rname), "%s/native-vs-pinned/N=%ld", b->name, n);
		bool want_ratio = beside != NULL && wanted(rname);
		bool want_v = want_ratio || wanted(name);
		bool want_b = beside != NULL && (want_ratio || wanted(bname));
		if (!want_v && !want_b) {
			continue;
		}
		if (n > max_conns()) {
			bench_fail(name, "needs %ld open files per process; the limit is %ld",
				   n + WARM_CONNS + 64, nofile_limit);
			continue;
		}
		/* d[iv] is v, d[!iv] the variant beside it. */
		struct many_side d[2];
		const char *names[2];
		ep_open_fn opens[2];
		int nsides = 0, iv = -1, ib = -1;
		if (want_b && pinned_first) {
			ib = nsides++;
		}
		if (want_v) {
			iv = nsides++;
		}
		if (want_b && !pinned_first) {
			ib = nsides++;
		}
		if (iv >= 0) {
			names[iv] = name;
			opens[iv] = v->open;
		}
		if (ib >= 0) {
			names[ib] = bname;
			opens[ib] = beside->open;
		}
		memset(d, 0, sizeof(d));
		int rc = many_phases(d, nsides, names, opens, n);
		for (int k = 0; k < nsides; k++) {
			if (d[k].name != NULL) { /* opened, if only in part */
				session_end(&d[k].s);
			}
		}
		if (rc < 0) {
			continue;
		}
		if (iv >= 0) {
			many_report(name, &d[iv].out);
		}
		if (ib >= 0) {
			many_report(bname, &d[ib].out);
		}
		if (want_ratio && d[iv].nslices == d[ib].nslices && d[iv].nslices > 0) {
			/* Slice by slice: a burst of load from elsewhere hits one slice of one
			 * variant, and the median leaves it out. */
			double r[MANY_MAX_SLICES];
			for (int k = 0; k < d[iv].nslices; k++) {
				r[k] = d[iv].rate[k] / d[ib].rate[k];
			}
			double x = round(median(r, (size_t)d[iv].nslices) * 1000) / 1000;
			struct bench_metric m[] = {{x, "x"}, {x, "min-x"}};
			report(rname, 2, 1, m, ARRAY_SIZE(m));
		}
	}
}

static const struct variant idle_variants[] = {
    {"hush-native", open_hush, NULL},		     /* ready-read: buffers only while busy */
    {"hush-bufferevent", open_hush_bev, NULL},	     /* hush_bufferevent_socket_new */
    {"hush-bufferevent-xx", open_hush_bev_xx, NULL}, /* the same, after an XX handshake */
    {"hush-pinned", open_hush_pinned, NULL},	     /* buffers and contexts for life */
    {"openssl-tls", open_tls, NULL},		     /* OpenSSL's defaults */
    {"openssl-tls-release", open_tls_release, NULL}, /* SSL_MODE_RELEASE_BUFFERS */
    {"plain-bufferevent", open_plain, NULL},	     /* no crypto at all */
};

const struct benchmark bench_idle = {"IdleConnMemory", idle_variants, ARRAY_SIZE(idle_variants),
				     idle_run};

static const struct variant many_variants[] = {
    {"hush-native", open_hush, NULL}, /* with hush-pinned beside it (many_run) */
    {"openssl-tls", open_tls, NULL},
};

const struct benchmark bench_many = {"ManyConns", many_variants, ARRAY_SIZE(many_variants),
				     many_run};
