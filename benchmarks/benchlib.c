#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include <hush/common.h>
#include <hush/pool.h>

#include "benchlib.h"

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_print(const char *name, int procs, uint64_t n, const struct bench_metric *m, size_t nm)
{
	printf("Benchmark%s-%d\t%llu", name, procs, (unsigned long long)n);
	for (size_t i = 0; i < nm; i++) {
		double v = m[i].value;
		if (v == (double)(int64_t)v && v < 1e15 && v > -1e15) {
			printf("\t%lld %s", (long long)v, m[i].unit);
		} else {
			printf("\t%.3f %s", v, m[i].unit);
		}
	}
	printf("\n");
	fflush(stdout);
}

/*
 * Each counted block carries a 16-byte header holding its size, so frees and
 * reallocations know how many bytes leave.
 */
#define HDR 16

/*
 * The counts live in one block per thread, summed by bench_alloc_read: the allocating
 * thread updates its own block with plain (relaxed, unlocked) adds. Locked adds on shared
 * counters cost about a tenth of an OpenSSL handshake's time, which would have slowed
 * the allocation-heavy library under test more than the other. A block is only ever
 * written by one thread at a time; one may count the frees of blocks another allocated,
 * so a thread's live figures may go negative while the sums stay exact. The block of a
 * thread that exits is kept, with its counts, for the next new thread.
 */
struct counters {
	_Atomic uint64_t allocs;
	_Atomic uint64_t frees;
	_Atomic uint64_t bytes;
	_Atomic int64_t live;
	_Atomic int64_t live_buffers;
	struct counters *next;	    /* every block, never removed */
	struct counters *next_free; /* blocks of exited threads */
};

static _Atomic(struct counters *) all_counters;
static struct counters *free_counters;
static pthread_mutex_t counters_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t counters_once = PTHREAD_ONCE_INIT;
static pthread_key_t counters_key;
static __thread struct counters *my_block;

static void counters_release(void *p)
{
	struct counters *c = p;
	pthread_mutex_lock(&counters_lock);
	c->next_free = free_counters;
	free_counters = c;
	pthread_mutex_unlock(&counters_lock);
}

static void counters_init(void)
{
	if (pthread_key_create(&counters_key, counters_release) != 0) {
		abort();
	}
}

static struct counters *mine(void)
{
	struct counters *c = my_block;
	if (c != NULL) {
		return c;
	}
	pthread_once(&counters_once, counters_init);
	pthread_mutex_lock(&counters_lock);
	c = free_counters;
	if (c != NULL) {
		free_counters = c->next_free;
	}
	pthread_mutex_unlock(&counters_lock);
	if (c == NULL) {
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			abort(); /* counts can no longer be exact */
		}
		c->next = atomic_load(&all_counters);
		while (!atomic_compare_exchange_weak(&all_counters, &c->next, c)) {
		}
	}
	my_block = c;
	pthread_setspecific(counters_key, c);
	return c;
}

static void add_u(_Atomic uint64_t *x, uint64_t v)
{
	atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

static void add_s(_Atomic int64_t *x, int64_t v)
{
	atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + v,
			      memory_order_relaxed);
}

/* Counts a block of size bytes coming (+1) or going (-1). */
static void count_block(struct counters *c, size_t size, int64_t dir)
{
	add_s(&c->live, dir * (int64_t)size);
	if (size >= BENCH_BUFFER_MIN) {
		add_s(&c->live_buffers, dir);
	}
}

static void *count_malloc(size_t size)
{
	uint8_t *p = malloc(size + HDR);
	if (p == NULL) {
		return NULL;
	}
	memcpy(p, &size, sizeof(size));
	struct counters *c = mine();
	add_u(&c->allocs, 1);
	add_u(&c->bytes, size);
	count_block(c, size, 1);
	return p + HDR;
}

static void count_free(void *ptr)
{
	if (ptr == NULL) {
		return;
	}
	uint8_t *p = (uint8_t *)ptr - HDR;
	size_t size;
	memcpy(&size, p, sizeof(size));
	struct counters *c = mine();
	add_u(&c->frees, 1);
	count_block(c, size, -1);
	free(p);
}

static void *count_realloc(void *ptr, size_t size)
{
	if (ptr == NULL) {
		return count_malloc(size);
	}
	uint8_t *p = (uint8_t *)ptr - HDR;
	size_t old;
	memcpy(&old, p, sizeof(old));
	uint8_t *q = realloc(p, size + HDR);
	if (q == NULL) {
		return NULL;
	}
	memcpy(q, &size, sizeof(size));
	struct counters *c = mine();
	add_u(&c->allocs, 1);
	add_u(&c->bytes, size);
	count_block(c, old, -1);
	count_block(c, size, 1);
	return q + HDR;
}

static void *ossl_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return count_malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return count_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	count_free(p);
}

static void *hush_alloc_cb(void *ctx, size_t size)
{
	(void)ctx;
	return count_malloc(size);
}

static void hush_release_cb(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	(void)size;
	count_free(ptr);
}

int bench_alloc_install(void)
{
	static const struct hush_allocator a = {hush_alloc_cb, hush_release_cb, NULL};
	hush_set_allocator(&a);
	event_set_mem_functions(count_malloc, count_realloc, count_free);
	if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free)) {
		return -1;
	}
	return 0;
}

void bench_alloc_read(struct bench_alloc_counts *out)
{
	memset(out, 0, sizeof(*out));
	for (struct counters *c = atomic_load(&all_counters); c != NULL; c = c->next) {
		out->allocs += atomic_load_explicit(&c->allocs, memory_order_relaxed);
		out->frees += atomic_load_explicit(&c->frees, memory_order_relaxed);
		out->bytes += atomic_load_explicit(&c->bytes, memory_order_relaxed);
		out->live_bytes += atomic_load_explicit(&c->live, memory_order_relaxed);
		out->live_buffers += atomic_load_explicit(&c->live_buffers, memory_order_relaxed);
	}
}

/* The threads of bench_run_threads wait at this gate until every one has started. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int open;
	int cancel;
};

struct thread_start {
	void (*fn)(void *arg, uint64_t n);
	void *arg;
	uint64_t n;
	struct gate *gate;
};

static void *thread_main(void *p)
{
	struct thread_start *t = p;
	pthread_mutex_lock(&t->gate->mu);
	while (!t->gate->open) {
		pthread_cond_wait(&t->gate->cv, &t->gate->mu);
	}
	int cancel = t->gate->cancel;
	pthread_mutex_unlock(&t->gate->mu);
	if (!cancel) {
		t->fn(t->arg, t->n);
	}
	return NULL;
}

int bench_run_threads(int nthreads, void (*fn)(void *arg, uint64_t n), void *const *args,
		      uint64_t n, uint64_t *ns, struct bench_alloc_counts *delta)
{
	if (nthreads < 1) {
		return -1;
	}
	struct thread_start *ts = calloc((size_t)nthreads, sizeof(*ts));
	pthread_t *th = calloc((size_t)nthreads, sizeof(*th));
	if (ts == NULL || th == NULL) {
		free(ts);
		free(th);
		return -1;
	}
	struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
	int started = 0;
	for (; started < nthreads; started++) {
		ts[started] = (struct thread_start){fn, args[started], n, &gate};
		if (pthread_create(&th[started], NULL, thread_main, &ts[started]) != 0) {
			break;
		}
	}
	struct bench_alloc_counts before, after;
	bench_alloc_read(&before);
	uint64_t t0 = bench_now_ns();
	pthread_mutex_lock(&gate.mu);
	gate.open = 1;
	gate.cancel = started < nthreads;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
	for (int t = 0; t < started; t++) {
		pthread_join(th[t], NULL);
	}
	uint64_t t1 = bench_now_ns();
	bench_alloc_read(&after);
	free(ts);
	free(th);
	if (started < nthreads) {
		return -1;
	}
	*ns = t1 - t0;
	delta->allocs = after.allocs - before.allocs;
	delta->frees = after.frees - before.frees;
	delta->bytes = after.bytes - before.bytes;
	delta->live_bytes = after.live_bytes - before.live_bytes;
	delta->live_buffers = after.live_buffers - before.live_buffers;
	return 0;
}

int bench_has_flag(int argc, char **argv, const char *flag)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], flag) == 0) {
			return 1;
		}
	}
	return 0;
}

/* --- The pool benchmark --- */

struct pool_worker {
	const struct bench_pool_case *c;
	uint64_t mallocs; /* malloc is not hooked: its loop counts its own calls */
	uint64_t malloc_bytes;
	int failed;
};

/* Keeps the compiler from dropping the writes, and with them malloc and free. */
static volatile uint8_t pool_sink;

static void pool_loop(void *arg, uint64_t n)
{
	struct pool_worker *w = arg;
	const struct bench_pool_case *c = w->c;
	uint8_t acc = 0;

	for (uint64_t i = 0; i < n; i++) {
		size_t size = c->seq[i & (BENCH_POOL_SEQ - 1)];
		struct hush_buf *buf = NULL;
		uint8_t *d;
		if (c->kind == BENCH_POOL_HUSH) {
			if (hush_pool_acquire(c->pool, size, &buf) != 0) {
				w->failed = 1;
				return;
			}
			d = hush_buf_data(buf);
		} else {
			d = malloc(size);
			if (d == NULL) {
				w->failed = 1;
				return;
			}
			w->mallocs++;
			w->malloc_bytes += size;
		}
		d[0] = (uint8_t)i;
		d[size - 1] = (uint8_t)i;
		acc ^= d[0];
		if (buf != NULL) {
			hush_buf_release(buf);
		} else {
			free(d);
		}
	}
	pool_sink = acc;
}

static uint64_t cpu_now_ns(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0) {
		return 0;
	}
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

/* One run of n operations on each thread. */
static int pool_run_once(const struct bench_pool_case *c, uint64_t n, struct bench_pool_result *r)
{
	struct pool_worker w[BENCH_POOL_MAX_THREADS];
	void *args[BENCH_POOL_MAX_THREADS];
	struct bench_alloc_counts d;

	if (c->threads < 1 || c->threads > BENCH_POOL_MAX_THREADS) {
		return -1;
	}
	for (int t = 0; t < c->threads; t++) {
		w[t] = (struct pool_worker){c, 0, 0, 0};
		args[t] = &w[t];
	}
	uint64_t cpu0 = cpu_now_ns();
	if (bench_run_threads(c->threads, pool_loop, args, n, &r->ns, &d) < 0) {
		return -1;
	}
	r->cpu_ns = cpu_now_ns() - cpu0;
	r->n = n;
	r->allocs = d.allocs;
	r->bytes = d.bytes;
	for (int t = 0; t < c->threads; t++) {
		if (w[t].failed) {
			return -1;
		}
		r->allocs += w[t].mallocs;
		r->bytes += w[t].malloc_bytes;
	}
	return 0;
}

int bench_pool_measure(const struct bench_pool_case *c, uint64_t start_n, uint64_t target,
		       struct bench_pool_result *r)
{
	uint64_t n = start_n;

	if (pool_run_once(c, 1000, r) < 0) {
		return -1;
	}
	for (;;) {
		if (pool_run_once(c, n, r) < 0) {
			return -1;
		}
		if (r->ns >= target || n >= 1000000000ull) {
			return 0;
		}
		double grow = r->ns == 0 ? 100.0 : 1.2 * (double)target / (double)r->ns;
		grow = grow < 2.0 ? 2.0 : grow > 100.0 ? 100.0 : grow;
		n = (uint64_t)((double)n * grow);
	}
}

int bench_io_full(int fd, void *p, size_t n, bool writing)
{
	uint8_t *b = p;
	while (n > 0) {
		ssize_t k = writing ? write(fd, b, n) : read(fd, b, n);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			return -1;
		}
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

long bench_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		return 1024;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? 1L << 20
									 : (long)rl.rlim_cur;
}
