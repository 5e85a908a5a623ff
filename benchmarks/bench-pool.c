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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hush/pool.h>

#include "benchlib.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_THREADS   2

/* Measures one case with benchlib's bench_pool_measure (hush-bench's Pool group runs the
 * same loop) and prints it. */
static void measure(const char *variant, const char *label, const struct bench_pool_case *c,
		    uint64_t target_ns)
{
	struct bench_pool_result r;
	if (bench_pool_measure(c, 100, target_ns, &r) < 0) {
		fprintf(stderr, "bench-pool: %s/%s failed to allocate\n", variant, label);
		exit(1);
	}
	char name[128];
	snprintf(name, sizeof(name), "Pool/%s/%s/threads=%d", variant, label, c->threads);
	double ops = (double)r.n * c->threads;
	struct bench_metric m[] = {
	    {(double)r.ns / (double)r.n, "ns/op"},
	    {(double)r.cpu_ns / ops, "cpu-ns/op"},
	    {(double)r.bytes / ops, "B/op"},
	    {(double)r.allocs / ops, "allocs/op"},
	};
	bench_print(name, c->threads, r.n, m, ARRAY_SIZE(m));
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
	for (unsigned i = 0; i < BENCH_POOL_SEQ; i++) {
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
	struct bench_pool_case c;

	for (int threads = 1; threads <= MAX_THREADS; threads++) {
		for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
			c = (struct bench_pool_case){BENCH_POOL_HUSH, pool, {0}, threads};
			fill_seq(c.seq, sizes[s].size);
			measure("hush-pool", sizes[s].label, &c, target);
			c.kind = BENCH_POOL_MALLOC;
			measure("malloc", sizes[s].label, &c, target);
			if (sizes[s].size == 16384) {
				c.kind = BENCH_POOL_HUSH;
				c.pool = wipe;
				measure("hush-pool-wipe", sizes[s].label, &c, target);
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
