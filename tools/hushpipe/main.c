/*
 * hushpipe: a secure tunnel between sockets, on hush (see hushpipe(1)).
 *
 *   hushpipe -e -s SOURCE -t TARGET ...   accept plaintext on SOURCE, carry it over hush
 *                                         to the hushpipe -d at TARGET
 *   hushpipe -d -s SOURCE -t TARGET ...   accept hush on SOURCE, carry it in plaintext to
 *                                         TARGET
 *
 * This file: the worker threads and their listeners, the connection limit, signals
 * (SIGTERM/SIGINT drain, SIGHUP reload, SIGUSR1 statistics) and the heap accounting
 * behind the statistics. The relay itself is relay.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/crypto.h>

#include <hush.h>

#include "hushpipe.h"

struct pipe P;

/* Descriptors kept aside from the connection limit: listeners, libevent's own, logs. */
#define FD_RESERVE 64

/* ---- Heap accounting: hush's allocations, counted exactly ---- */

static atomic_size_t hush_heap;

static void *count_alloc(void *ctx, size_t size)
{
	(void)ctx;
	void *p = malloc(size);
	if (p != NULL) {
		atomic_fetch_add_explicit(&hush_heap, size, memory_order_relaxed);
	}
	return p;
}

static void count_release(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	atomic_fetch_sub_explicit(&hush_heap, size, memory_order_relaxed);
	free(ptr);
}

/* ---- Connection limit ---- */

static void listener_stop(struct worker *w)
{
	if (w->hl != NULL) {
		hush_listener_pause(w->hl);
	}
	if (w->el != NULL) {
		evconnlistener_disable(w->el);
	}
}

static void listener_start(struct worker *w)
{
	if (w->hl != NULL) {
		hush_listener_resume(w->hl);
	}
	if (w->el != NULL) {
		evconnlistener_enable(w->el);
	}
}

bool pipe_conn_reserve(struct worker *w)
{
	unsigned max = P.opt.max_conns;
	unsigned n = atomic_fetch_add(&P.nconns, 1);
	if (n < max) {
		if (n + 1 < max) {
			return true;
		}
	} else {
		atomic_fetch_sub(&P.nconns, 1);
		atomic_fetch_add(&P.refused_full, 1);
	}
	/* At the cap: stop accepting so newcomers wait in the kernel's backlog. */
	if (!atomic_exchange(&w->full, true)) {
		log_msg(LOG_WARN, "worker %u: connection limit %u reached; accepting paused",
			w->index, max);
		listener_stop(w);
	}
	atomic_store(&P.any_full, true);
	return n < max;
}

void pipe_conn_release(void)
{
	unsigned n = atomic_fetch_sub(&P.nconns, 1) - 1;
	if (n < P.opt.max_conns && atomic_exchange(&P.any_full, false)) {
		for (unsigned i = 0; i < P.nworkers; i++) {
			struct worker *w = &P.workers[i];
			if (atomic_load(&w->full)) {
				atomic_fetch_or(&w->cmd, CMD_RESUME);
				event_active(w->ctl_ev, EV_READ, 0);
			}
		}
	}
}

/* Accepting again after the cap, once below it (also checked once a second, in case a
 * wake-up raced with a worker stopping). */
static void maybe_resume(struct worker *w)
{
	if (w->draining || !atomic_load(&w->full) || atomic_load(&P.nconns) >= P.opt.max_conns) {
		return;
	}
	atomic_store(&w->full, false);
	if (!w->accept_backoff) {
		listener_start(w);
	}
	log_msg(LOG_INFO, "worker %u: below the connection limit; accepting again", w->index);
}

/* ---- Workers ---- */

static void on_hush_accept(struct hush_listener *l, struct hush_conn *c, const struct sockaddr *sa,
			   socklen_t len, void *arg)
{
	(void)l;
	relay_accept_hush(arg, c, sa, len);
}

static void on_plain_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			    int len, void *arg)
{
	(void)l;
	relay_accept_plain(arg, fd, sa, (socklen_t)len);
}

static void on_plain_accept_error(struct evconnlistener *l, void *arg)
{
	struct worker *w = arg;
	int e = EVUTIL_SOCKET_ERROR();
	(void)l;
	if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
		/* Out of descriptors or memory: pause instead of spinning; tick resumes. */
		log_msg(LOG_WARN, "worker %u: accept: %s; pausing for a second", w->index,
			strerror(e));
		evconnlistener_disable(w->el);
		w->accept_backoff = true;
	} else {
		log_msg(LOG_WARN, "worker %u: accept: %s", w->index, strerror(e));
	}
}

static void listeners_free(struct worker *w)
{
	hush_listener_free(w->hl);
	w->hl = NULL;
	if (w->el != NULL) {
		evconnlistener_free(w->el);
		w->el = NULL;
	}
}

void worker_finish(struct worker *w)
{
	event_base_loopbreak(w->base);
}

static void on_ctl(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	(void)fd;
	(void)what;
	unsigned cmd = atomic_exchange(&w->cmd, 0);
	if ((cmd & CMD_DRAIN) && !w->draining) {
		w->draining = true;
		listeners_free(w);
		if (w->nsessions == 0) {
			worker_finish(w);
			return;
		}
	}
	if (cmd & CMD_ABORT) {
		w->draining = true;
		listeners_free(w);
		relay_abort_all(w, "aborted at exit");
		worker_finish(w);
		return;
	}
	if (cmd & CMD_RESUME) {
		maybe_resume(w);
	}
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	(void)fd;
	(void)what;
	if (w->accept_backoff && !w->draining) {
		w->accept_backoff = false;
		if (!atomic_load(&w->full)) {
			listener_start(w);
		}
	}
	maybe_resume(w);
	relay_expire(w);
	if (w->index == 0) {
		log_limits_flush();
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
	/* Drained or aborted: everything of this worker goes, on its own thread. */
	listeners_free(w);
	relay_abort_all(w, "aborted at exit");
	event_free(w->tick_ev);
	event_free(w->ctl_ev);
	hush_loop_free(w->loop);
	event_base_free(w->base);
	free(w->scratch);
	w->base = NULL;
	event_active(w->done_ev, EV_READ, 0);
	return NULL;
}

/* Port 0: the kernel picks a free port, which nobody else holds. */
static bool port_is_zero(const struct pipe_addr *a)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
	return sa->sa_family == AF_INET
		   ? ((const struct sockaddr_in *)(const void *)sa)->sin_port == 0
		   : ((const struct sockaddr_in6 *)(const void *)sa)->sin6_port == 0;
}

/*
 * Without --reuseport the listening address is this process's alone. The workers' own
 * sockets all carry SO_REUSEPORT, which would let a second hushpipe (a stale one, a
 * mistyped port) share the address silently and take part of the connections: so a
 * probe bound without SO_REUSEPORT must find it free first. Returns 0, or -1 with errno
 * set (EADDRINUSE).
 */
static int check_address_free(const struct pipe_addr *a)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0) {
		return -1;
	}
	/* SO_REUSEADDR: connections of an earlier run in TIME_WAIT do not count. */
	int rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
			 bind(fd, sa, a->len) < 0
		     ? -1
		     : 0;
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

/* Makes the listening sockets: one per worker with SO_REUSEPORT for TCP, one shared
 * (duplicated) for a Unix socket. Returns 0 or -1. */
static int make_listen_sockets(void)
{
	struct pipe_addr a = P.source[0];
	bool tcp = a.ss.ss_family != AF_UNIX;
	if (tcp && !P.opt.reuseport && !port_is_zero(&a) && check_address_free(&a) < 0) {
		log_msg(LOG_ERROR, "listen on %s: %s%s", a.text, strerror(errno),
			errno == EADDRINUSE ? " (--reuseport shares it with other processes)" : "");
		return -1;
	}
	for (unsigned i = 0; i < P.nworkers; i++) {
		struct worker *w = &P.workers[i];
		if (tcp || i == 0) {
			w->listen_fd = addr_listen(&a, tcp, P.opt.backlog);
		} else {
			w->listen_fd = dup(P.workers[0].listen_fd);
		}
		if (w->listen_fd < 0) {
			log_msg(LOG_ERROR, "listen on %s: %s", a.text, strerror(errno));
			return -1;
		}
		if (i == 0 && tcp && addr_bound_port(w->listen_fd) != 0) {
			/* Port 0 asked for any port: the other workers share the one chosen. */
			unsigned port = addr_bound_port(w->listen_fd);
			struct sockaddr *sa = (struct sockaddr *)&a.ss;
			if (sa->sa_family == AF_INET) {
				((struct sockaddr_in *)(void *)sa)->sin_port =
				    htons((uint16_t)port);
			} else {
				((struct sockaddr_in6 *)(void *)sa)->sin6_port =
				    htons((uint16_t)port);
			}
			addr_format(sa, a.len, a.text, sizeof(a.text));
		}
	}
	log_msg(LOG_INFO, "listening on %s (%s, %u worker%s%s), %s %s", a.text,
		P.opt.encrypt ? "plaintext in, hush out" : "hush in, plaintext out", P.nworkers,
		P.nworkers == 1 ? "" : "s",
		tcp && P.opt.reuseport ? ", shared with other processes: --reuseport" : "",
		P.opt.encrypt ? "hush endpoint" : "target", P.opt.target);
	return 0;
}

static int worker_setup(struct worker *w, struct event_base *main_base);

static void on_worker_done(evutil_socket_t fd, short what, void *arg)
{
	static unsigned done;
	(void)fd;
	(void)what;
	if (++done == P.nworkers) {
		event_base_loopbreak(arg);
	}
}

static int worker_setup(struct worker *w, struct event_base *main_base)
{
	w->base = event_base_new();
	if (w->base == NULL || hush_loop_new(&w->loop, w->base, P.pool) < 0) {
		return -1;
	}
	w->scratch = malloc(RELAY_SCRATCH);
	w->ctl_ev = event_new(w->base, -1, 0, on_ctl, w);
	w->tick_ev = event_new(w->base, -1, EV_PERSIST, on_tick, w);
	w->done_ev = event_new(main_base, -1, 0, on_worker_done, main_base);
	if (w->scratch == NULL || w->ctl_ev == NULL || w->tick_ev == NULL || w->done_ev == NULL) {
		return -1;
	}
	struct timeval second = {1, 0};
	event_add(w->tick_ev, &second);
	int fd = w->listen_fd;
	w->listen_fd = -1;
	if (P.opt.encrypt) {
		w->el = evconnlistener_new(w->base, on_plain_accept, w,
					   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
		if (w->el == NULL) {
			close(fd);
			return -1;
		}
		evconnlistener_set_error_cb(w->el, on_plain_accept_error);
		return 0;
	}
	struct hush_listener_config lc;
	hush_listener_config_init(&lc);
	lc.handshake = &P.hcfg;
	lc.conn = &P.ccfg;
	lc.callbacks = &relay_hush_callbacks;
	lc.on_accept = on_hush_accept;
	lc.accept_arg = w;
	lc.max_handshakes = P.opt.max_handshakes;
	lc.max_per_source = P.opt.max_per_source;
	lc.first_message_timeout_ms = P.opt.first_message_timeout_ms;
	lc.backlog = P.opt.backlog;
	int rc = hush_listener_new(&w->hl, w->loop, fd, &lc);
	if (rc < 0) {
		log_msg(LOG_ERROR, "hush listener: %s", hush_strerror(rc));
		return -1;
	}
	return 0;
}

/* ---- Statistics (SIGUSR1) ---- */

static void print_stats(void)
{
	struct hush_pool_stats ps;
	hush_pool_stats(P.pool, &ps);
	struct mallinfo2 mi = mallinfo2();
	log_stats("conns=%u limit=%u accepted=%" PRIuFAST64 " closed_clean=%" PRIuFAST64
		  " closed_error=%" PRIuFAST64 " refused_at_limit=%" PRIuFAST64
		  " bytes_plain_to_hush=%" PRIuFAST64 " bytes_hush_to_plain=%" PRIuFAST64
		  " heap=%zu hush_heap=%zu pool_bufs_out=%" PRIu64 " pool_bytes_out=%" PRIu64
		  " pool_bytes_retained=%" PRIu64,
		  atomic_load(&P.nconns), P.opt.max_conns, atomic_load(&P.accepted),
		  atomic_load(&P.closed_clean), atomic_load(&P.closed_error),
		  atomic_load(&P.refused_full), atomic_load(&P.bytes_to_hush),
		  atomic_load(&P.bytes_to_plain), mi.uordblks + mi.hblkhd, atomic_load(&hush_heap),
		  ps.total.in_use, ps.total.bytes_in_use, ps.total.bytes_retained);
}

/* ---- Signals ---- */

static struct event *deadline_ev;
static bool draining;

static void tell_workers(unsigned cmd)
{
	for (unsigned i = 0; i < P.nworkers; i++) {
		atomic_fetch_or(&P.workers[i].cmd, cmd);
		event_active(P.workers[i].ctl_ev, EV_READ, 0);
	}
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_msg(LOG_WARN, "drain deadline passed: aborting %u connections", atomic_load(&P.nconns));
	tell_workers(CMD_ABORT);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct event_base *base = arg;
	(void)what;
	if (sig == SIGHUP) {
		pipe_reload_peers();
		return;
	}
	if (sig == SIGUSR1) {
		print_stats();
		return;
	}
	if (draining) {
		log_msg(LOG_WARN, "second signal: aborting %u connections", atomic_load(&P.nconns));
		tell_workers(CMD_ABORT);
		return;
	}
	draining = true;
	log_msg(LOG_INFO, "%s: no longer accepting; draining %u connections (deadline %u.%03u s)",
		sig == SIGTERM ? "SIGTERM" : "SIGINT", atomic_load(&P.nconns),
		P.opt.drain_timeout_ms / 1000, P.opt.drain_timeout_ms % 1000);
	tell_workers(CMD_DRAIN);
	uint32_t ms = P.opt.drain_timeout_ms;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	deadline_ev = evtimer_new(base, on_deadline, NULL);
	if (deadline_ev != NULL) {
		evtimer_add(deadline_ev, &tv);
	}
}

/* Raises the open-files limit to what max_conns needs (two descriptors a connection),
 * or lowers max_conns to what the hard limit allows. */
static void fit_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		return;
	}
	rlim_t reserve = FD_RESERVE + 4 * (rlim_t)P.nworkers;
	rlim_t need = 2 * (rlim_t)P.opt.max_conns + reserve;
	if (rl.rlim_cur < need) {
		rlim_t want = rl.rlim_max < need ? rl.rlim_max : need;
		struct rlimit nl = {want, rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &nl) == 0) {
			rl.rlim_cur = want;
		}
	}
	if (rl.rlim_cur < need) {
		unsigned fit =
		    rl.rlim_cur > reserve + 2 ? (unsigned)((rl.rlim_cur - reserve) / 2) : 1;
		log_msg(P.opt.max_conns_set ? LOG_WARN : LOG_INFO,
			"open-files limit %llu allows %u connections: --max-conns lowered from %u",
			(unsigned long long)rl.rlim_cur, fit, P.opt.max_conns);
		P.opt.max_conns = fit;
	}
}

/*
 * The pool's budget: what all connections' buffers may hold at once. A peer that sends
 * part of a large record pins a buffer for it (until the record deadline), so without
 * a budget many peers could pin gigabytes. By default: 128 KiB a connection at
 * --max-conns (room for a read and a write buffer each, all busy at once), at most a
 * quarter of the machine's memory, at least 32 MiB (or that quarter, if smaller). At
 * the budget reading pauses until buffers come back; nothing is lost.
 */
#define BUDGET_PER_CONN (128u * 1024u)
#define BUDGET_FLOOR (32u << 20)

static size_t pool_budget(void)
{
	if (P.opt.pool_budget_set) {
		return (size_t)P.opt.pool_budget;
	}
	long pages = sysconf(_SC_PHYS_PAGES);
	long psize = sysconf(_SC_PAGESIZE);
	uint64_t quarter = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize / 4 : 0;
	uint64_t b = (uint64_t)P.opt.max_conns * BUDGET_PER_CONN;
	if (quarter != 0 && b > quarter) {
		b = quarter;
	}
	if (b < BUDGET_FLOOR) {
		b = quarter != 0 && quarter < BUDGET_FLOOR ? quarter : BUDGET_FLOOR;
	}
	if (b > SIZE_MAX) {
		b = SIZE_MAX;
	}
	return (size_t)b;
}

static int write_pidfile(const char *path)
{
	FILE *f = fopen(path, "w");
	if (f == NULL) {
		log_msg(LOG_ERROR, "%s: %s", path, strerror(errno));
		return -1;
	}
	int bad = fprintf(f, "%ld\n", (long)getpid()) < 0;
	bad |= fclose(f) != 0;
	if (bad) {
		log_msg(LOG_ERROR, "%s: cannot write the pid", path);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int rc = pipe_parse_options(argc, argv, &P.opt);
	if (rc != 0) {
		return rc < 0 ? 0 : rc;
	}
	/* Before any hush object exists: count hush's heap for the statistics. */
	struct hush_allocator counting = {count_alloc, count_release, NULL};
	hush_set_allocator(&counting);
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() < 0) {
		log_msg(LOG_ERROR, "libevent: no thread support");
		return 1;
	}
	pthread_rwlock_init(&P.peers_lock, NULL);
	int status = 1;
	struct event_base *main_base = NULL;
	struct event *sig_ev[4] = {NULL, NULL, NULL, NULL};
	unsigned started = 0;

	if (pipe_setup_identity() < 0) {
		goto out;
	}
	char err[512];
	if (addr_resolve(P.opt.source, true, &P.source, &P.nsource, err, sizeof(err)) < 0 ||
	    addr_resolve(P.opt.target, false, &P.targets, &P.ntargets, err, sizeof(err)) < 0) {
		log_msg(LOG_ERROR, "%s", err);
		goto out;
	}
	if (P.ntargets > UINT16_MAX) {
		P.ntargets = UINT16_MAX;
	}
	P.nworkers = P.opt.workers;
	P.workers = calloc(P.nworkers, sizeof(*P.workers));
	if (P.workers == NULL) {
		goto out;
	}
	for (unsigned i = 0; i < P.nworkers; i++) {
		P.workers[i].index = i;
		P.workers[i].listen_fd = -1;
	}
	fit_fd_limit();
	hush_conn_config_init(&P.ccfg);
	P.ccfg.handshake_timeout_ms = P.opt.handshake_timeout_ms;
	P.ccfg.record_timeout_ms = P.opt.record_timeout_ms;
	/* Resume plaintext reading when a quarter of the high watermark is left, so the
	 * hush socket never runs dry between the two. */
	P.ccfg.write_low_water = P.ccfg.write_high_water / 4;
	struct hush_pool_config pc;
	hush_pool_config_init(&pc);
	pc.budget = pool_budget();
	if (hush_pool_new(&P.pool, &pc) < 0) {
		log_msg(LOG_ERROR, "out of memory");
		goto out;
	}
	if (pc.budget != 0) {
		log_msg(LOG_INFO, "buffer pool budget %zu MiB", pc.budget >> 20);
	} else {
		log_msg(LOG_INFO, "buffer pool budget: none");
	}
	main_base = event_base_new();
	if (main_base == NULL || make_listen_sockets() < 0) {
		goto out;
	}
	for (unsigned i = 0; i < P.nworkers; i++) {
		if (worker_setup(&P.workers[i], main_base) < 0) {
			log_msg(LOG_ERROR, "worker %u: setup failed", i);
			goto out;
		}
	}
	const int sigs[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
	for (int i = 0; i < 4; i++) {
		sig_ev[i] = evsignal_new(main_base, sigs[i], on_signal, main_base);
		if (sig_ev[i] == NULL || evsignal_add(sig_ev[i], NULL) < 0) {
			log_msg(LOG_ERROR, "cannot handle signal %d", sigs[i]);
			goto out;
		}
	}
	if (P.opt.pidfile != NULL && write_pidfile(P.opt.pidfile) < 0) {
		goto out;
	}
	/* Workers never take the signals: the main thread's libevent base does. */
	sigset_t block, old;
	sigemptyset(&block);
	for (int i = 0; i < 4; i++) {
		sigaddset(&block, sigs[i]);
	}
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (; started < P.nworkers; started++) {
		if (pthread_create(&P.workers[started].thread, NULL, worker_main,
				   &P.workers[started]) != 0) {
			log_msg(LOG_ERROR, "cannot start worker threads");
			break;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (started == P.nworkers) {
		event_base_dispatch(main_base);
		status = 0;
	} else {
		tell_workers(CMD_ABORT);
	}
	for (unsigned i = 0; i < started; i++) {
		pthread_join(P.workers[i].thread, NULL);
	}
	log_msg(LOG_INFO, "exiting: %" PRIuFAST64 " connections served",
		atomic_load(&P.closed_clean) + atomic_load(&P.closed_error));
out:
	if (P.opt.pidfile != NULL && status == 0) {
		unlink(P.opt.pidfile);
	}
	if (P.source != NULL && P.source[0].ss.ss_family == AF_UNIX && status == 0) {
		unlink(((struct sockaddr_un *)(void *)&P.source[0].ss)->sun_path);
	}
	for (unsigned i = 0; P.workers != NULL && i < P.nworkers; i++) {
		struct worker *w = &P.workers[i];
		if (i >= started && w->base != NULL) {
			/* Set up but never run. */
			listeners_free(w);
			if (w->tick_ev != NULL) {
				event_free(w->tick_ev);
			}
			if (w->ctl_ev != NULL) {
				event_free(w->ctl_ev);
			}
			hush_loop_free(w->loop);
			event_base_free(w->base);
			free(w->scratch);
		}
		if (w->listen_fd >= 0) {
			close(w->listen_fd);
		}
		if (w->done_ev != NULL) {
			event_free(w->done_ev);
		}
	}
	for (int i = 0; i < 4; i++) {
		if (sig_ev[i] != NULL) {
			event_free(sig_ev[i]);
		}
	}
	if (deadline_ev != NULL) {
		event_free(deadline_ev);
	}
	if (main_base != NULL) {
		event_base_free(main_base);
	}
	hush_pool_free(P.pool);
	hush_keypair_free(P.kp);
	hush_peers_free(P.fixed_peers);
	hush_peers_free(P.file_peers);
	OPENSSL_cleanse(P.psk, sizeof(P.psk));
	free(P.workers);
	free(P.source);
	free(P.targets);
	free(P.opt.peer_keys);
	return status;
}
