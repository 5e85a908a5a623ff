#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include <hush/common.h>

#include "benchlib.h"

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_print(const char *name, int procs, uint64_t n, const struct bench_metric *m,
		 size_t nm)
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
