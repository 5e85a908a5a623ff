/*
 * bench-pool: the cost of borrowing a buffer from hush's pool and giving it back,
 * against malloc and free of the same sizes, on one and two threads.
 *
 *   bench-pool            full run (each benchmark about half a second)
 *   bench-pool --quick    short run, for CI (whole program well under ten seconds)
 *   bench-pool --demo     the idle-memory demonstration shown by `make demo`
 *
 * Output is Go's benchmark format, so benchstat can compare two runs. ns/op is wall
 * time divided by the operations each thread did; allocs/op and B/op count every
 * allocator call made during the timed loop by all threads, divided by all operations.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hush/pool.h>

#include "benchlib.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_THREADS   2
#define SEQ_LEN	      64 /* length of the size sequence; a power of two */

enum variant {
	V_POOL,
	V_MALLOC,
};

struct bench {
	const char *name; /* variant as printed */
	enum variant kind;
	struct hush_pool *pool;
	const char *label; /* size as printed */
	size_t seq[SEQ_LEN];
	int threads;
};

struct worker {
	const struct bench *b;
	uint64_t n;
	pthread_barrier_t *start;
	pthread_barrier_t *stop;
	/* The malloc variant counts its own calls: the hooks only see hush's. */
	uint64_t mallocs;
	uint64_t malloc_bytes;
	int failed;
};

/* Keeps the compiler from dropping the writes, and with them malloc and free. */
static volatile uint8_t sink;

static void loop_pool(struct worker *w)
{
	const struct bench *b = w->b;
	uint8_t acc = 0;

	for (uint64_t i = 0; i < w->n; i++) {
		size_t size = b->seq[i & (SEQ_LEN - 1)];
		struct hush_buf *buf;
		if (hush_pool_acquire(b->pool, size, &buf) != 0) {
			w->failed = 1;
			return;
		}
		uint8_t *d = hush_buf_data(buf);
		d[0] = (uint8_t)i;
		d[size - 1] = (uint8_t)i;
		acc ^= d[0];
		hush_buf_release(buf);
	}
	sink = acc;
}

static void loop_malloc(struct worker *w)
{
	const struct bench *b = w->b;
	uint8_t acc = 0;

	for (uint64_t i = 0; i < w->n; i++) {
		size_t size = b->seq[i & (SEQ_LEN - 1)];
		uint8_t *d = malloc(size);
		if (d == NULL) {
			w->failed = 1;
			return;
		}
		w->mallocs++;
		w->malloc_bytes += size;
		d[0] = (uint8_t)i;
		d[size - 1] = (uint8_t)i;
		acc ^= d[0];
		free(d);
	}
	sink = acc;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	pthread_barrier_wait(w->start);
	if (w->b->kind == V_POOL) {
		loop_pool(w);
	} else {
		loop_malloc(w);
	}
	pthread_barrier_wait(w->stop);
	return NULL;
}

struct result {
	uint64_t ns;
	uint64_t allocs;
	uint64_t bytes;
	int failed;
};

/* Runs n operations on each of b->threads threads; times only the loops. */
static struct result run(const struct bench *b, uint64_t n)
{
	pthread_barrier_t start, stop;
	struct worker w[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	struct bench_alloc_counts before, after;
	struct result r = {0, 0, 0, 0};

	pthread_barrier_init(&start, NULL, (unsigned)b->threads + 1);
	pthread_barrier_init(&stop, NULL, (unsigned)b->threads + 1);
	for (int t = 0; t < b->threads; t++) {
		w[t] = (struct worker){b, n, &start, &stop, 0, 0, 0};
		if (pthread_create(&th[t], NULL, worker_main, &w[t]) != 0) {
			fprintf(stderr, "bench-pool: pthread_create failed\n");
			exit(1);
		}
	}
	bench_alloc_read(&before);
	pthread_barrier_wait(&start);
	uint64_t t0 = bench_now_ns();
	pthread_barrier_wait(&stop);
	uint64_t t1 = bench_now_ns();
	bench_alloc_read(&after);
	for (int t = 0; t < b->threads; t++) {
		pthread_join(th[t], NULL);
		r.allocs += w[t].mallocs;
		r.bytes += w[t].malloc_bytes;
		r.failed |= w[t].failed;
	}
	pthread_barrier_destroy(&start);
	pthread_barrier_destroy(&stop);
	r.ns = t1 - t0;
	r.allocs += after.allocs - before.allocs;
	r.bytes += after.bytes - before.bytes;
	return r;
}

/* Grows n until one run lasts target_ns (as Go's testing package does), then prints. */
static void measure(const struct bench *b, uint64_t target_ns)
{
	uint64_t n = 100;
	struct result r;

	/* A warm-up run fills the pool's lists (and malloc's) before anything counts. */
	r = run(b, 1000);
	for (;;) {
		r = run(b, n);
		if (r.failed) {
			fprintf(stderr, "bench-pool: %s/%s failed to allocate\n", b->name,
				b->label);
			exit(1);
		}
		if (r.ns >= target_ns || n >= 1000000000ull) {
			break;
		}
		double grow = r.ns == 0 ? 100.0 : 1.2 * (double)target_ns / (double)r.ns;
		grow = grow < 2.0 ? 2.0 : grow > 100.0 ? 100.0 : grow;
		n = (uint64_t)((double)n * grow);
	}

	char name[128];
	snprintf(name, sizeof(name), "Pool/%s/%s/threads=%d", b->name, b->label, b->threads);
	double ops = (double)n * b->threads;
	struct bench_metric m[] = {
	    {(double)r.ns / (double)n, "ns/op"},
	    {(double)r.bytes / ops, "B/op"},
	    {(double)r.allocs / ops, "allocs/op"},
	};
	bench_print(name, b->threads, n, m, ARRAY_SIZE(m));
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static const struct {
	const char *label;
	size_t size; /* 0: mixed */
} sizes[] = {
    {"256", 256}, {"4K", 4096}, {"16K", 16384}, {"64K", 65536}, {"1M", 1048576}, {"mixed", 0},
};

/* The mixed sequence: the five sizes above in a fixed shuffled order. */
static void fill_seq(size_t *seq, size_t size)
{
	uint64_t rng = 0x2545f4914f6cdd1dull;
	for (unsigned i = 0; i < SEQ_LEN; i++) {
		seq[i] = size != 0 ? size : sizes[xorshift(&rng) % 5].size;
	}
}

static struct hush_pool *pool_or_die(unsigned flags)
{
	struct hush_pool_config cfg;
	struct hush_pool *pool;
	hush_pool_config_init(&cfg);
	cfg.flags = flags;
	if (hush_pool_new(&pool, &cfg) != 0) {
		fprintf(stderr, "bench-pool: hush_pool_new failed\n");
		exit(1);
	}
	return pool;
}

static int bench_main(int quick)
{
	uint64_t target = quick ? 40000000ull : 500000000ull;
	struct hush_pool *pool = pool_or_die(0);
	struct hush_pool *wipe = pool_or_die(HUSH_POOL_WIPE);
	struct bench b;

	for (int threads = 1; threads <= MAX_THREADS; threads++) {
		for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
			b = (struct bench){"hush-pool", V_POOL, pool, sizes[s].label, {0}, threads};
			fill_seq(b.seq, sizes[s].size);
			measure(&b, target);
			b.name = "malloc";
			b.kind = V_MALLOC;
			measure(&b, target);
			if (sizes[s].size == 16384) {
				b.name = "hush-pool-wipe";
				b.kind = V_POOL;
				b.pool = wipe;
				measure(&b, target);
			}
		}
	}
	hush_pool_free(pool);
	hush_pool_free(wipe);
	return 0;
}

/* --- The demonstration --- */

#define DEMO_CONNS    10000
#define DEMO_BUSY     (DEMO_CONNS / 20) /* 5% */
#define DEMO_ROUNDS   20
#define DEMO_BUF      16384
#define DEMO_PER_CONN 2 /* a read buffer and a write buffer */

static uint64_t held(const struct hush_pool *pool)
{
	struct hush_pool_stats st;
	hush_pool_stats(pool, &st);
	return st.total.bytes_in_use + st.total.bytes_retained;
}

static uint64_t alloc_calls(const struct hush_pool *pool)
{
	struct hush_pool_stats st;
	hush_pool_stats(pool, &st);
	return st.allocator_calls;
}

static void die(const char *what)
{
	fprintf(stderr, "bench-pool --demo: %s\n", what);
	exit(1);
}

/* Picks DEMO_BUSY distinct connections for this round (a partial shuffle). */
static void pick_busy(unsigned *order, uint64_t *rng)
{
	for (unsigned i = 0; i < DEMO_BUSY; i++) {
		unsigned j = i + (unsigned)(xorshift(rng) % (DEMO_CONNS - i));
		unsigned tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
}

/* One busy moment: every busy connection fills its buffers with a record's worth. */
static void touch(struct hush_buf *b, unsigned conn)
{
	memset(hush_buf_data(b), (int)(conn & 0xff), DEMO_BUF);
}

static void print_row(const char *design, uint64_t busy, uint64_t idle, uint64_t calls)
{
	printf("  %-22s %15llu %15llu %10.1f %15llu\n", design, (unsigned long long)busy,
	       (unsigned long long)idle, (double)idle / DEMO_CONNS, (unsigned long long)calls);
}

static void print_tier(const char *label, const struct hush_pool_tier_stats *t)
{
	printf("  %-9s %8llu %8llu %8llu %10llu %8llu %8llu %13llu %13llu %13llu\n", label,
	       (unsigned long long)t->in_use, (unsigned long long)t->retained,
	       (unsigned long long)t->high_water, (unsigned long long)t->acquisitions,
	       (unsigned long long)t->misses, (unsigned long long)t->failures,
	       (unsigned long long)t->bytes_in_use, (unsigned long long)t->bytes_retained,
	       (unsigned long long)t->bytes_high_water);
}

static int demo_main(void)
{
	static unsigned order[DEMO_CONNS];
	static struct hush_buf *pinned[DEMO_CONNS][DEMO_PER_CONN];
	static struct hush_buf *borrowed[DEMO_BUSY][DEMO_PER_CONN];
	struct hush_pool *shared = pool_or_die(0);
	struct hush_pool *pin = pool_or_die(0);
	uint64_t rng = 0x9e3779b97f4a7c15ull;
	uint64_t pool_busy_max = 0, pool_idle_max = 0;
	uint64_t pin_busy_max = 0, pin_idle_max = 0;
	uint64_t last_round_calls = 0;

	for (unsigned i = 0; i < DEMO_CONNS; i++) {
		order[i] = i;
	}
	/* Pinned: each connection takes its two buffers when it opens and keeps them. */
	for (unsigned c = 0; c < DEMO_CONNS; c++) {
		for (unsigned k = 0; k < DEMO_PER_CONN; k++) {
			if (hush_pool_acquire(pin, DEMO_BUF, &pinned[c][k]) != 0) {
				die("pinned acquire failed");
			}
		}
	}

	for (unsigned round = 0; round < DEMO_ROUNDS; round++) {
		pick_busy(order, &rng);
		uint64_t calls_before = alloc_calls(shared);
		/* Pinned: the busy ones use the buffers they already hold. */
		for (unsigned i = 0; i < DEMO_BUSY; i++) {
			for (unsigned k = 0; k < DEMO_PER_CONN; k++) {
				touch(pinned[order[i]][k], order[i]);
			}
		}
		uint64_t h = held(pin);
		pin_busy_max = h > pin_busy_max ? h : pin_busy_max;
		/* Borrowing: the busy ones take two buffers each, all at the same time. */
		for (unsigned i = 0; i < DEMO_BUSY; i++) {
			for (unsigned k = 0; k < DEMO_PER_CONN; k++) {
				if (hush_pool_acquire(shared, DEMO_BUF, &borrowed[i][k]) != 0) {
					die("acquire failed");
				}
				touch(borrowed[i][k], order[i]);
			}
		}
		h = held(shared);
		pool_busy_max = h > pool_busy_max ? h : pool_busy_max;
		/* The round's bytes have moved: everything goes back at once. */
		for (unsigned i = 0; i < DEMO_BUSY; i++) {
			for (unsigned k = 0; k < DEMO_PER_CONN; k++) {
				hush_buf_release(borrowed[i][k]);
			}
		}
		h = held(shared);
		pool_idle_max = h > pool_idle_max ? h : pool_idle_max;
		h = held(pin);
		pin_idle_max = h > pin_idle_max ? h : pin_idle_max;
		last_round_calls = alloc_calls(shared) - calls_before;
	}

	printf("hush pool demo: %d connections, %d (5%%) busy at a time, %d rounds;\n", DEMO_CONNS,
	       DEMO_BUSY, DEMO_ROUNDS);
	printf("a busy connection uses %d buffers of %d bytes (one read, one write).\n"
	       "Bytes held are buffer capacities from hush_pool_stats (in use + retained),\n"
	       "the largest seen at the busy and at the idle moment of any round.\n\n",
	       DEMO_PER_CONN, DEMO_BUF);
	printf("  %-22s %15s %15s %10s %15s\n", "design", "held (busy)", "held (idle)", "idle/conn",
	       "allocator calls");
	print_row("pinned, 2 per conn", pin_busy_max, pin_idle_max, alloc_calls(pin));
	print_row("borrowed from pool", pool_busy_max, pool_idle_max, alloc_calls(shared));
	uint64_t trimmed = hush_pool_trim(shared);
	print_row("pool after trim", held(shared), held(shared), alloc_calls(shared));
	printf("\n  hush_pool_trim gave back %llu bytes.\n", (unsigned long long)trimmed);
	struct hush_pool_config cfg;
	hush_pool_config_init(&cfg);
	printf("  The pool's last round called the allocator %llu times for %d buffers: by\n"
	       "  default the 16 KiB tier keeps at most %zu idle buffers between rounds.\n\n",
	       (unsigned long long)last_round_calls, DEMO_BUSY * DEMO_PER_CONN, cfg.tier_retain[2]);

	struct hush_pool_stats st;
	hush_pool_stats(shared, &st);
	printf("Shared pool statistics after the run and the trim:\n");
	printf("  %-9s %8s %8s %8s %10s %8s %8s %13s %13s %13s\n", "tier", "in_use", "retained",
	       "high", "acquired", "misses", "failed", "bytes_in_use", "bytes_kept", "bytes_high");
	for (unsigned i = 0; i < st.ntiers; i++) {
		char label[32];
		snprintf(label, sizeof(label), "%zu", st.tier[i].size);
		print_tier(label, &st.tier[i]);
	}
	print_tier("oversize", &st.oversize);
	print_tier("total", &st.total);
	printf("  allocator calls %llu, frees %llu\n", (unsigned long long)st.allocator_calls,
	       (unsigned long long)st.allocator_frees);

	for (unsigned c = 0; c < DEMO_CONNS; c++) {
		for (unsigned k = 0; k < DEMO_PER_CONN; k++) {
			hush_buf_release(pinned[c][k]);
		}
	}
	hush_pool_free(pin);
	hush_pool_free(shared);
	return 0;
}

int main(int argc, char **argv)
{
	if (bench_alloc_install() != 0) {
		fprintf(stderr, "bench-pool: could not install the allocation counters\n");
		return 1;
	}
	if (bench_has_flag(argc, argv, "--demo")) {
		return demo_main();
	}
	return bench_main(bench_has_flag(argc, argv, "--quick"));
}
