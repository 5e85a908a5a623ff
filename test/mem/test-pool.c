/* Tests for the tiered buffer pool (src/mem/pool.c). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/common-internal.h"
#include "mem/pool-internal.h"
#include "testlib.h"

/* A pointer value no successful call returns, to see that failures leave *out alone. */
#define SENTINEL_BUF  ((struct hush_buf *)(uintptr_t)0x5e5e5e50)
#define SENTINEL_POOL ((struct hush_pool *)(uintptr_t)0x5e5e5e60)

static struct hush_pool *pool_new_checked(const struct hush_pool_config *cfg)
{
	struct hush_pool *pool = NULL;
	assert_int_equal(hush_pool_new(&pool, cfg), 0);
	assert_non_null(pool);
	return pool;
}

static struct hush_buf *acquire_checked(struct hush_pool *pool, size_t size)
{
	struct hush_buf *buf = NULL;
	assert_int_equal(hush_pool_acquire(pool, size, &buf), 0);
	assert_non_null(buf);
	return buf;
}

static struct hush_pool_stats stats_of(const struct hush_pool *pool)
{
	struct hush_pool_stats st;
	hush_pool_stats(pool, &st);
	return st;
}

static uint64_t live_allocations(void)
{
	struct testlib_alloc_stats st;
	testlib_alloc_get(&st);
	return st.live;
}

static uint64_t allocator_calls(void)
{
	struct testlib_alloc_stats st;
	testlib_alloc_get(&st);
	return st.calls;
}

/* A small config whose numbers are easy to follow: tiers of 100 and 1000 bytes. */
static void small_config(struct hush_pool_config *cfg, size_t retain0, size_t retain1)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->ntiers = 2;
	cfg->tier_size[0] = 100;
	cfg->tier_size[1] = 1000;
	cfg->tier_retain[0] = retain0;
	cfg->tier_retain[1] = retain1;
}

/*
 * Runs fn in a forked child whose stderr goes to a pipe. Returns the child's wait
 * status and copies what it wrote to stderr (NUL-terminated) into err.
 */
static int run_in_child(void (*fn)(void), char *err, size_t cap)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Let a fatal signal kill the child, whatever handler the runner installed. */
		signal(SIGABRT, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		close(fds[0]);
		dup2(fds[1], STDERR_FILENO);
		close(fds[1]);
		fn();
		_exit(0);
	}
	close(fds[1]);
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fds[0], err + len, cap - 1 - len);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			break;
		}
		len += (size_t)n;
		if (len == cap - 1) {
			/* Keep draining so the child never blocks on a full pipe. */
			char sink[256];
			while (read(fds[0], sink, sizeof(sink)) > 0) {
			}
			break;
		}
	}
	err[len] = '\0';
	close(fds[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0) {
		assert_int_equal(errno, EINTR);
	}
	return status;
}

/* --- Configuration --- */

static void config_init_defaults_match_documented_tiers(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	memset(&cfg, 0xa5, sizeof(cfg));
	hush_pool_config_init(&cfg);
	static const size_t sizes[] = {256, 4160, 16448, 33280, 65536, 1048640};
	static const size_t retain[] = {1024, 256, 128, 64, 32, 4};
	assert_int_equal(cfg.ntiers, 6);
	for (unsigned i = 0; i < 6; i++) {
		assert_int_equal(cfg.tier_size[i], sizes[i]);
		assert_int_equal(cfg.tier_retain[i], retain[i]);
	}
	assert_int_equal(cfg.tier_size[6], 0);
	assert_int_equal(cfg.tier_size[7], 0);
	assert_int_equal(cfg.budget, 0);
	assert_int_equal(cfg.flags, 0);
}

static void pool_new_null_config_uses_defaults(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	struct hush_pool_stats st = stats_of(pool);
	struct hush_pool_config cfg;
	hush_pool_config_init(&cfg);
	assert_int_equal(st.ntiers, cfg.ntiers);
	for (unsigned i = 0; i < cfg.ntiers; i++) {
		assert_int_equal(st.tier[i].size, cfg.tier_size[i]);
		assert_int_equal(st.tier[i].in_use, 0);
		assert_int_equal(st.tier[i].retained, 0);
	}
	assert_int_equal(st.budget, 0);
	assert_int_equal(st.oversize.size, 0);
	assert_int_equal(st.total.size, 0);
	hush_pool_free(pool);
}

static void pool_new_bad_tier_count_returns_einval(void **state)
{
	(void)state;
	static const unsigned counts[] = {0, HUSH_POOL_MAX_TIERS + 1, 1000};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(counts); i++) {
		struct hush_pool_config cfg;
		hush_pool_config_init(&cfg);
		cfg.ntiers = counts[i];
		struct hush_pool *pool = SENTINEL_POOL;
		assert_int_equal(hush_pool_new(&pool, &cfg), HUSH_EINVAL);
		assert_ptr_equal(pool, SENTINEL_POOL);
	}
}

static void pool_new_bad_tier_sizes_return_einval(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	struct hush_pool *pool = SENTINEL_POOL;

	/* A zero size. */
	small_config(&cfg, 1, 1);
	cfg.tier_size[0] = 0;
	assert_int_equal(hush_pool_new(&pool, &cfg), HUSH_EINVAL);
	/* Equal sizes. */
	small_config(&cfg, 1, 1);
	cfg.tier_size[1] = cfg.tier_size[0];
	assert_int_equal(hush_pool_new(&pool, &cfg), HUSH_EINVAL);
	/* Decreasing sizes. */
	small_config(&cfg, 1, 1);
	cfg.tier_size[1] = 50;
	assert_int_equal(hush_pool_new(&pool, &cfg), HUSH_EINVAL);
	/* A size whose allocation (header included) would wrap. */
	small_config(&cfg, 1, 1);
	cfg.tier_size[1] = SIZE_MAX - 8;
	assert_int_equal(hush_pool_new(&pool, &cfg), HUSH_EINVAL);
	/* A size no allocator could give (2^48 bytes). */
	small_config(&cfg, 1, 1);
	cfg.tier_size[1] = (size_t)1 << 48;
	assert_int_equal(hush_pool_new(&pool, &cfg), HUSH_EINVAL);
	/* The full eight tiers, the last one out of order. */
	hush_pool_config_init(&cfg);
	cfg.ntiers = HUSH_POOL_MAX_TIERS;
	cfg.tier_size[6] = 2 << 20;
	cfg.tier_size[7] = 1 << 20;
	assert_int_equal(hush_pool_new(&pool, &cfg), HUSH_EINVAL);
	assert_ptr_equal(pool, SENTINEL_POOL);
}

static void pool_new_unknown_flag_returns_einval(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	hush_pool_config_init(&cfg);
	cfg.flags = HUSH_POOL_WIPE | (1u << 7);
	struct hush_pool *pool = SENTINEL_POOL;
	assert_int_equal(hush_pool_new(&pool, &cfg), HUSH_EINVAL);
	assert_ptr_equal(pool, SENTINEL_POOL);
}

static void pool_new_eight_tiers_accepted(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	hush_pool_config_init(&cfg);
	cfg.ntiers = HUSH_POOL_MAX_TIERS;
	cfg.tier_size[6] = 2 << 20;
	cfg.tier_size[7] = 4 << 20;
	struct hush_pool *pool = pool_new_checked(&cfg);
	struct hush_buf *b = acquire_checked(pool, (4 << 20) - 1);
	assert_int_equal(hush_buf_capacity(b), 4 << 20);
	assert_int_equal(stats_of(pool).tier[7].in_use, 1);
	hush_buf_release(b);
	hush_pool_free(pool);
}

static void pool_new_null_out_returns_einval(void **state)
{
	(void)state;
	assert_int_equal(hush_pool_new(NULL, NULL), HUSH_EINVAL);
}

/* --- Tiers --- */

static void acquire_tier_boundaries_pick_smallest_fitting_tier(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	hush_pool_config_init(&cfg);
	struct hush_pool *pool = pool_new_checked(&cfg);
	uint64_t expect_acq[HUSH_POOL_MAX_TIERS] = {0};
	uint64_t expect_over = 0;

	for (unsigned i = 0; i < cfg.ntiers; i++) {
		size_t size = cfg.tier_size[i];
		const size_t req[3] = {size - 1, size, size + 1};
		for (unsigned k = 0; k < 3; k++) {
			struct hush_buf *b = acquire_checked(pool, req[k]);
			size_t cap = hush_buf_capacity(b);
			struct hush_pool_stats st = stats_of(pool);
			if (k < 2) {
				/* size - 1 and size: this tier. */
				assert_int_equal(cap, size);
				expect_acq[i]++;
				assert_int_equal(st.tier[i].in_use, 1);
				assert_int_equal(st.tier[i].bytes_in_use, size);
			} else if (i + 1 < cfg.ntiers) {
				/* size + 1: the next tier. */
				assert_int_equal(cap, cfg.tier_size[i + 1]);
				expect_acq[i + 1]++;
				assert_int_equal(st.tier[i + 1].in_use, 1);
			} else {
				/* size + 1 above the largest tier: exactly what was asked. */
				assert_int_equal(cap, size + 1);
				expect_over++;
				assert_int_equal(st.oversize.in_use, 1);
			}
			assert_int_equal(st.total.in_use, 1);
			assert_int_equal(st.total.bytes_in_use, cap);
			hush_buf_release(b);
		}
	}
	struct hush_pool_stats st = stats_of(pool);
	for (unsigned i = 0; i < cfg.ntiers; i++) {
		assert_int_equal(st.tier[i].acquisitions, expect_acq[i]);
		assert_int_equal(st.tier[i].in_use, 0);
	}
	assert_int_equal(st.oversize.acquisitions, expect_over);
	assert_int_equal(st.total.in_use, 0);
	hush_pool_free(pool);
}

static void acquire_zero_size_gives_smallest_tier(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	struct hush_buf *b = acquire_checked(pool, 0);
	assert_int_equal(hush_buf_capacity(b), 256);
	assert_int_equal(stats_of(pool).tier[0].in_use, 1);
	hush_buf_release(b);
	hush_pool_free(pool);
}

static void buf_data_is_16_byte_aligned_and_writable(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	static const size_t sizes[] = {0,     1,     300,     5000,    20000,
				       40000, 65536, 1000000, 1048641, 3000001};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(sizes); i++) {
		struct hush_buf *b = acquire_checked(pool, sizes[i]);
		uint8_t *d = hush_buf_data(b);
		assert_int_equal((uintptr_t)d % 16, 0);
		memset(d, 0x77, hush_buf_capacity(b));
		hush_buf_release(b);
	}
	hush_pool_free(pool);
}

static void acquire_oversize_gets_exact_capacity(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	size_t size = 3 * 1048576 + 7;
	struct hush_buf *b = acquire_checked(pool, size);
	assert_int_equal(hush_buf_capacity(b), size);
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.oversize.in_use, 1);
	assert_int_equal(st.oversize.bytes_in_use, size);
	assert_int_equal(st.oversize.acquisitions, 1);
	assert_int_equal(st.oversize.misses, 1);
	assert_int_equal(st.total.bytes_in_use, size);
	hush_buf_release(b);
	hush_pool_free(pool);
}

static void release_oversize_frees_and_never_retains(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	uint64_t base = live_allocations();
	for (int i = 0; i < 3; i++) {
		struct hush_buf *b = acquire_checked(pool, 2000000);
		assert_int_equal(live_allocations(), base + 1);
		hush_buf_release(b);
		assert_int_equal(live_allocations(), base);
	}
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.oversize.retained, 0);
	assert_int_equal(st.oversize.bytes_retained, 0);
	assert_int_equal(st.oversize.in_use, 0);
	assert_int_equal(st.oversize.bytes_in_use, 0);
	assert_int_equal(st.oversize.acquisitions, 3);
	assert_int_equal(st.oversize.misses, 3);
	assert_int_equal(st.oversize.high_water, 1);
	assert_int_equal(st.oversize.bytes_high_water, 2000000);
	assert_int_equal(st.total.retained, 0);
	assert_int_equal(st.allocator_calls, 3);
	assert_int_equal(st.allocator_frees, 3);
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

/* --- Retention --- */

/*
 * The cap bounds the shared lists; this thread's cache keeps min(4, cap) more: of five
 * released, two stay in the cache, two on the list, one is freed.
 */
static void release_over_retention_cap_frees_excess(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 2, 0);
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(&cfg);
	assert_int_equal(pool->tier[0].cache_cap, 2);
	struct hush_buf *b[5];
	for (int i = 0; i < 5; i++) {
		b[i] = acquire_checked(pool, 100);
	}
	uint64_t live = live_allocations();
	for (int i = 0; i < 5; i++) {
		hush_buf_release(b[i]);
	}
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.tier[0].retained, 4);
	assert_int_equal(st.tier[0].bytes_retained, 400);
	assert_int_equal(st.tier[0].in_use, 0);
	assert_int_equal(st.allocator_frees, 1);
	assert_int_equal(live_allocations(), live - 1);
	/* The cache emptied, the list holds its cap, no more. */
	assert_int_equal(hush_pool_trim(pool), 400);
	assert_int_equal(live_allocations(), live - 5);
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

static void release_with_zero_cap_never_retains(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 2, 0);
	struct hush_pool *pool = pool_new_checked(&cfg);
	struct hush_buf *b = acquire_checked(pool, 1000);
	hush_buf_release(b);
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.tier[1].retained, 0);
	assert_int_equal(st.allocator_frees, 1);
	hush_pool_free(pool);
}

static void acquire_release_warm_makes_no_allocator_calls(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	static const size_t sizes[] = {0, 4096, 16384, 32768, 65536, 1048576};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(sizes); i++) {
		hush_buf_release(acquire_checked(pool, sizes[i]));
	}
	uint64_t calls = allocator_calls();
	for (int round = 0; round < 1000; round++) {
		for (size_t i = 0; i < HUSH_ARRAY_SIZE(sizes); i++) {
			hush_buf_release(acquire_checked(pool, sizes[i]));
		}
	}
	assert_int_equal(allocator_calls(), calls);
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.total.misses, HUSH_ARRAY_SIZE(sizes));
	assert_int_equal(st.total.acquisitions, 1001 * HUSH_ARRAY_SIZE(sizes));
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

/* --- Budget --- */

static void acquire_over_budget_returns_enobufs_and_allocates_nothing(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 8, 8);
	cfg.budget = 1100;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(&cfg);
	struct hush_buf *a = acquire_checked(pool, 1000);
	struct hush_buf *c = acquire_checked(pool, 100);
	uint64_t calls = allocator_calls();

	struct hush_buf *b = SENTINEL_BUF;
	assert_int_equal(hush_pool_acquire(pool, 1, &b), HUSH_ENOBUFS);
	assert_ptr_equal(b, SENTINEL_BUF);
	assert_int_equal(hush_pool_acquire(pool, 5000, &b), HUSH_ENOBUFS);
	assert_ptr_equal(b, SENTINEL_BUF);
	assert_int_equal(allocator_calls(), calls);

	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.tier[0].failures, 1);
	assert_int_equal(st.oversize.failures, 1);
	assert_int_equal(st.total.failures, 2);
	assert_int_equal(st.total.bytes_in_use, 1100);
	assert_int_equal(st.total.acquisitions, 2);
	assert_int_equal(st.budget, 1100);
	hush_buf_release(a);
	hush_buf_release(c);
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

static void acquire_after_release_under_budget_succeeds(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 8, 8);
	cfg.budget = 1000;
	struct hush_pool *pool = pool_new_checked(&cfg);
	struct hush_buf *a = acquire_checked(pool, 1000);
	struct hush_buf *b = SENTINEL_BUF;
	assert_int_equal(hush_pool_acquire(pool, 1000, &b), HUSH_ENOBUFS);
	hush_buf_release(a);
	b = acquire_checked(pool, 1000);
	assert_int_equal(stats_of(pool).total.bytes_in_use, 1000);
	hush_buf_release(b);
	hush_pool_free(pool);
}

static void count_cb(void *arg)
{
	atomic_fetch_add((_Atomic int *)arg, 1);
}

static void available_cb_after_refusals_called_exactly_once(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 8, 8);
	cfg.budget = 2000;
	struct hush_pool *pool = pool_new_checked(&cfg);
	_Atomic int calls = 0;
	hush_pool_set_available_cb(pool, count_cb, &calls);
	struct hush_buf *a = acquire_checked(pool, 1000);
	struct hush_buf *b = acquire_checked(pool, 1000);
	struct hush_buf *c = SENTINEL_BUF;
	assert_int_equal(hush_pool_acquire(pool, 1000, &c), HUSH_ENOBUFS);
	assert_int_equal(hush_pool_acquire(pool, 10, &c), HUSH_ENOBUFS);
	assert_int_equal(atomic_load(&calls), 0);
	hush_buf_release(a);
	assert_int_equal(atomic_load(&calls), 1);
	hush_buf_release(b);
	assert_int_equal(atomic_load(&calls), 1);
	hush_pool_free(pool);
}

static void available_cb_without_refusal_not_called(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 8, 8);
	cfg.budget = 2000;
	struct hush_pool *pool = pool_new_checked(&cfg);
	_Atomic int calls = 0;
	hush_pool_set_available_cb(pool, count_cb, &calls);
	hush_buf_release(acquire_checked(pool, 1000));
	hush_buf_release(acquire_checked(pool, 1500));
	assert_int_equal(atomic_load(&calls), 0);
	hush_pool_free(pool);
}

static void available_cb_cleared_with_null_not_called(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 8, 8);
	cfg.budget = 1000;
	struct hush_pool *pool = pool_new_checked(&cfg);
	_Atomic int calls = 0;
	hush_pool_set_available_cb(pool, count_cb, &calls);
	hush_pool_set_available_cb(pool, NULL, NULL);
	struct hush_buf *a = acquire_checked(pool, 1000);
	struct hush_buf *b = SENTINEL_BUF;
	assert_int_equal(hush_pool_acquire(pool, 1, &b), HUSH_ENOBUFS);
	hush_buf_release(a);
	assert_int_equal(atomic_load(&calls), 0);
	hush_pool_free(pool);
}

struct reacquire_ctx {
	struct hush_pool *pool;
	struct hush_buf *buf;
	int rc;
};

/* The callback runs outside every pool lock, so it may acquire at once. */
static void reacquire_cb(void *arg)
{
	struct reacquire_ctx *ctx = arg;
	ctx->rc = hush_pool_acquire(ctx->pool, 1000, &ctx->buf);
}

static void available_cb_may_acquire_from_the_pool(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 8, 8);
	cfg.budget = 1000;
	struct hush_pool *pool = pool_new_checked(&cfg);
	struct reacquire_ctx ctx = {pool, NULL, -100};
	hush_pool_set_available_cb(pool, reacquire_cb, &ctx);
	struct hush_buf *a = acquire_checked(pool, 1000);
	struct hush_buf *b = SENTINEL_BUF;
	assert_int_equal(hush_pool_acquire(pool, 1000, &b), HUSH_ENOBUFS);
	hush_buf_release(a);
	assert_int_equal(ctx.rc, 0);
	assert_non_null(ctx.buf);
	hush_buf_release(ctx.buf);
	hush_pool_free(pool);
}

/*
 * Threads share a budget of one buffer. A refused thread waits for the callback; a
 * lost wake-up would leave it waiting until the timeout.
 */
struct wake {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t generation;
};

static void wake_cb(void *arg)
{
	struct wake *w = arg;
	pthread_mutex_lock(&w->lock);
	w->generation++;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

struct budget_job {
	struct hush_pool *pool;
	struct wake *wake;
	int done;
	int refused;
	int lost_wakeups;
};

#define BUDGET_THREADS 3
#define BUDGET_ITERS   5000

static void *budget_thread(void *arg)
{
	struct budget_job *job = arg;
	while (job->done < BUDGET_ITERS && job->lost_wakeups == 0) {
		pthread_mutex_lock(&job->wake->lock);
		uint64_t gen = job->wake->generation;
		pthread_mutex_unlock(&job->wake->lock);

		struct hush_buf *b = NULL;
		int rc = hush_pool_acquire(job->pool, 1000, &b);
		if (rc == 0) {
			hush_buf_data(b)[0] = 1;
			if (job->done % 4 == 0) {
				/* Hold it a little longer so that the others get refused. */
				sched_yield();
			}
			hush_buf_release(b);
			job->done++;
			continue;
		}
		if (rc != HUSH_ENOBUFS) {
			job->lost_wakeups++;
			break;
		}
		job->refused++;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 10;
		pthread_mutex_lock(&job->wake->lock);
		while (job->wake->generation == gen) {
			if (pthread_cond_timedwait(&job->wake->cond, &job->wake->lock, &until) ==
			    ETIMEDOUT) {
				job->lost_wakeups++;
				break;
			}
		}
		pthread_mutex_unlock(&job->wake->lock);
	}
	return NULL;
}

static void available_cb_threads_refused_acquire_always_woken(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 8, 8);
	cfg.budget = 1000;
	struct hush_pool *pool = pool_new_checked(&cfg);
	struct wake wake = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
	hush_pool_set_available_cb(pool, wake_cb, &wake);
	struct budget_job job[BUDGET_THREADS];
	pthread_t th[BUDGET_THREADS];
	for (int t = 0; t < BUDGET_THREADS; t++) {
		job[t] = (struct budget_job){pool, &wake, 0, 0, 0};
		assert_int_equal(pthread_create(&th[t], NULL, budget_thread, &job[t]), 0);
	}
	uint64_t refused = 0;
	for (int t = 0; t < BUDGET_THREADS; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(job[t].lost_wakeups, 0);
		assert_int_equal(job[t].done, BUDGET_ITERS);
		refused += (uint64_t)job[t].refused;
	}
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.total.in_use, 0);
	assert_int_equal(st.total.failures, refused);
	assert_int_equal(st.total.acquisitions, BUDGET_THREADS * BUDGET_ITERS);
	assert_int_equal(st.total.bytes_high_water, 1000);
	hush_pool_free(pool);
	pthread_cond_destroy(&wake.cond);
	pthread_mutex_destroy(&wake.lock);
}

/* --- Trim --- */

static void trim_frees_retained_and_keeps_in_use(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	struct hush_buf *keep = acquire_checked(pool, 16384);
	struct hush_buf *a = acquire_checked(pool, 100);
	struct hush_buf *b = acquire_checked(pool, 16384);
	struct hush_buf *c = acquire_checked(pool, 65536);
	hush_buf_release(a);
	hush_buf_release(b);
	hush_buf_release(c);
	uint64_t live = live_allocations();

	assert_int_equal(hush_pool_trim(pool), 256 + 16448 + 65536);
	assert_int_equal(live_allocations(), live - 3);
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.total.retained, 0);
	assert_int_equal(st.total.bytes_retained, 0);
	assert_int_equal(st.tier[2].in_use, 1);
	assert_int_equal(st.total.bytes_in_use, 16448);
	assert_int_equal(st.allocator_frees, 3);
	/* Nothing left to give back. */
	assert_int_equal(hush_pool_trim(pool), 0);

	memset(hush_buf_data(keep), 1, hush_buf_capacity(keep));
	hush_buf_release(keep);
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

/* --- Statistics --- */

static void stats_known_sequence_add_up(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	small_config(&cfg, 1, 4);
	struct hush_pool *pool = pool_new_checked(&cfg);

	/* Three small out at once, then back: one to this thread's cache (the tier's cache
	 * holds min(4, cap 1) = 1), one to the shared list (its cap), one freed. */
	struct hush_buf *s[3];
	for (int i = 0; i < 3; i++) {
		s[i] = acquire_checked(pool, 50);
	}
	for (int i = 0; i < 3; i++) {
		hush_buf_release(s[i]);
	}
	/* One small again (a hit, from the cache), two large, one oversize. */
	struct hush_buf *x = acquire_checked(pool, 100);
	struct hush_buf *l1 = acquire_checked(pool, 500);
	struct hush_buf *l2 = acquire_checked(pool, 1000);
	struct hush_buf *o = acquire_checked(pool, 1001);
	hush_buf_release(l1);

	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.ntiers, 2);
	assert_int_equal(st.tier[0].size, 100);
	assert_int_equal(st.tier[0].in_use, 1);
	assert_int_equal(st.tier[0].retained, 1);
	assert_int_equal(st.tier[0].high_water, 3);
	assert_int_equal(st.tier[0].acquisitions, 4);
	assert_int_equal(st.tier[0].misses, 3);
	assert_int_equal(st.tier[0].failures, 0);
	assert_int_equal(st.tier[0].bytes_in_use, 100);
	assert_int_equal(st.tier[0].bytes_retained, 100);
	assert_int_equal(st.tier[0].bytes_high_water, 300);

	assert_int_equal(st.tier[1].size, 1000);
	assert_int_equal(st.tier[1].in_use, 1);
	assert_int_equal(st.tier[1].retained, 1);
	assert_int_equal(st.tier[1].high_water, 2);
	assert_int_equal(st.tier[1].acquisitions, 2);
	assert_int_equal(st.tier[1].misses, 2);
	assert_int_equal(st.tier[1].bytes_in_use, 1000);
	assert_int_equal(st.tier[1].bytes_retained, 1000);
	assert_int_equal(st.tier[1].bytes_high_water, 2000);

	assert_int_equal(st.oversize.in_use, 1);
	assert_int_equal(st.oversize.bytes_in_use, 1001);
	assert_int_equal(st.oversize.acquisitions, 1);

	assert_int_equal(st.total.in_use, 3);
	assert_int_equal(st.total.retained, 2);
	/* Pool-wide peaks: four buffers (x, l1, l2, o) and 3101 bytes at once. */
	assert_int_equal(st.total.high_water, 4);
	assert_int_equal(st.total.bytes_high_water, 100 + 1000 + 1000 + 1001);
	assert_int_equal(st.total.acquisitions, 7);
	assert_int_equal(st.total.misses, 6);
	assert_int_equal(st.total.bytes_in_use, 2101);
	assert_int_equal(st.total.bytes_retained, 1100);
	assert_int_equal(st.allocator_calls, 6);
	assert_int_equal(st.allocator_frees, 1);
	/* What was allocated and not freed is exactly what is out or retained. */
	assert_int_equal(st.allocator_calls - st.allocator_frees,
			 st.total.in_use + st.total.retained);

	hush_buf_release(x);
	hush_buf_release(l2);
	hush_buf_release(o);
	st = stats_of(pool);
	assert_int_equal(st.total.in_use, 0);
	assert_int_equal(st.total.bytes_in_use, 0);
	assert_int_equal(st.total.high_water, 4);
	hush_pool_free(pool);
}

/* --- Allocator failures --- */

/*
 * A fixed sequence: create, acquire one buffer per tier plus an oversize one, give them
 * back, acquire them again (hits, except the oversize), give them back, free. Returns
 * how many calls failed; each failure must be HUSH_ENOMEM with *out untouched.
 */
static int failure_sequence(void)
{
	static const size_t sizes[] = {0, 4000, 16000, 30000, 65536, 1000000, 2000000, 100};
	struct hush_buf *b[HUSH_ARRAY_SIZE(sizes)];
	struct hush_pool *pool = SENTINEL_POOL;
	int failures = 0;

	int rc = hush_pool_new(&pool, NULL);
	if (rc != 0) {
		assert_int_equal(rc, HUSH_ENOMEM);
		assert_ptr_equal(pool, SENTINEL_POOL);
		return 1;
	}
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < HUSH_ARRAY_SIZE(sizes); i++) {
			b[i] = SENTINEL_BUF;
			rc = hush_pool_acquire(pool, sizes[i], &b[i]);
			if (rc != 0) {
				assert_int_equal(rc, HUSH_ENOMEM);
				assert_ptr_equal(b[i], SENTINEL_BUF);
				b[i] = NULL;
				failures++;
			}
		}
		assert_int_equal(stats_of(pool).total.failures, failures);
		for (size_t i = 0; i < HUSH_ARRAY_SIZE(sizes); i++) {
			hush_buf_release(b[i]);
		}
	}
	hush_pool_free(pool);
	return failures;
}

static void alloc_failure_at_every_allocation_returns_enomem_and_leaks_nothing(void **state)
{
	(void)state;
	testlib_alloc_install();
	assert_int_equal(failure_sequence(), 0);
	uint64_t n = allocator_calls();
	assert_int_equal(live_allocations(), 0);
	/* pool, 8 first-round buffers, the second round's oversize. */
	assert_int_equal(n, 10);

	for (uint64_t k = 1; k <= n; k++) {
		testlib_alloc_install();
		testlib_alloc_fail_at(k);
		assert_int_equal(failure_sequence(), 1);
		assert_int_equal(live_allocations(), 0);
	}
	testlib_alloc_uninstall();
}

static void acquire_oversize_too_large_returns_enomem(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	struct hush_buf *b = SENTINEL_BUF;
	assert_int_equal(hush_pool_acquire(pool, SIZE_MAX - 4, &b), HUSH_ENOMEM);
	assert_ptr_equal(b, SENTINEL_BUF);
	assert_int_equal(stats_of(pool).oversize.failures, 1);
	hush_pool_free(pool);
}

static void acquire_null_args_return_einval(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	struct hush_buf *b = SENTINEL_BUF;
	assert_int_equal(hush_pool_acquire(NULL, 10, &b), HUSH_EINVAL);
	assert_ptr_equal(b, SENTINEL_BUF);
	assert_int_equal(hush_pool_acquire(pool, 10, NULL), HUSH_EINVAL);
	assert_int_equal(stats_of(pool).total.acquisitions, 0);
	hush_pool_free(pool);
}

/* --- References and lifetime --- */

static void buf_ref_twice_returns_only_at_last_release(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	struct hush_buf *b = acquire_checked(pool, 4096);
	hush_buf_ref(b);
	hush_buf_ref(b);
	hush_buf_release(b);
	hush_buf_release(b);
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.tier[1].in_use, 1);
	assert_int_equal(st.tier[1].retained, 0);
	/* Still ours: writing is fine. */
	memset(hush_buf_data(b), 3, hush_buf_capacity(b));
	hush_buf_release(b);
	st = stats_of(pool);
	assert_int_equal(st.tier[1].in_use, 0);
	assert_int_equal(st.tier[1].retained, 1);
	hush_pool_free(pool);
}

static void release_twice_child(void)
{
	struct hush_pool *pool = NULL;
	struct hush_buf *b = NULL;
	if (hush_pool_new(&pool, NULL) != 0 || hush_pool_acquire(pool, 100, &b) != 0) {
		_exit(3);
	}
	hush_buf_release(b);
	hush_buf_release(b);
	_exit(0);
}

static void buf_release_twice_aborts_with_message(void **state)
{
	(void)state;
	char err[8192];
	int status = run_in_child(release_twice_child, err, sizeof(err));
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	assert_non_null(strstr(err, "double release"));
}

static void null_release_free_trim_and_set_cb_are_noops(void **state)
{
	(void)state;
	hush_buf_release(NULL);
	hush_pool_free(NULL);
	assert_int_equal(hush_pool_trim(NULL), 0);
	hush_pool_set_available_cb(NULL, count_cb, NULL);
}

static void pool_free_with_buffers_out_frees_after_last_release(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	struct hush_buf *a = acquire_checked(pool, 100);
	struct hush_buf *b = acquire_checked(pool, 16384);
	struct hush_buf *c = acquire_checked(pool, 5000000);
	struct hush_buf *d = acquire_checked(pool, 100);
	hush_buf_release(d);
	assert_int_equal(live_allocations(), 5);

	/* The retained buffer goes at once; the pool stays for the three still out. */
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 4);
	hush_buf_release(a);
	assert_int_equal(live_allocations(), 3);
	hush_buf_ref(b);
	hush_buf_release(b);
	assert_int_equal(live_allocations(), 3);
	hush_buf_release(c);
	assert_int_equal(live_allocations(), 2);
	hush_buf_release(b);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

struct release_job {
	struct hush_buf *buf[4];
	pthread_barrier_t *go;
};

static void *release_thread(void *arg)
{
	struct release_job *job = arg;
	pthread_barrier_wait(job->go);
	for (int i = 0; i < 4; i++) {
		hush_buf_release(job->buf[i]);
	}
	return NULL;
}

static void pool_free_racing_last_release_destroys_once(void **state)
{
	(void)state;
	testlib_alloc_install();
	for (int round = 0; round < 300; round++) {
		struct hush_pool *pool = pool_new_checked(NULL);
		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, 2);
		struct release_job job = {{NULL}, &go};
		static const size_t sizes[] = {10, 20000, 2000000, 30};
		for (int i = 0; i < 4; i++) {
			job.buf[i] = acquire_checked(pool, sizes[i]);
		}
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, release_thread, &job), 0);
		pthread_barrier_wait(&go);
		hush_pool_free(pool);
		pthread_join(th, NULL);
		pthread_barrier_destroy(&go);
		assert_int_equal(live_allocations(), 0);
	}
	testlib_alloc_uninstall();
}

/* --- Wiping and threads --- */

static void release_with_wipe_flag_zeroes_buffer(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	hush_pool_config_init(&cfg);
	cfg.flags = HUSH_POOL_WIPE;
	struct hush_pool *pool = pool_new_checked(&cfg);
	struct hush_buf *b = acquire_checked(pool, 16384);
	memset(hush_buf_data(b), 0xee, hush_buf_capacity(b));
	hush_buf_release(b);
	/* LIFO on this thread's shard: the same buffer comes back. */
	struct hush_buf *again = acquire_checked(pool, 16384);
	assert_ptr_equal(again, b);
	const uint8_t *d = hush_buf_data(again);
	for (size_t i = 0; i < hush_buf_capacity(again); i++) {
		assert_int_equal(d[i], 0);
	}
	hush_buf_release(again);
	hush_pool_free(pool);
}

struct one_shot {
	struct hush_pool *pool;
	int rc;
};

static void *acquire_release_once(void *arg)
{
	struct one_shot *o = arg;
	struct hush_buf *b = NULL;
	o->rc = hush_pool_acquire(o->pool, 4096, &b);
	if (o->rc == 0) {
		hush_buf_release(b);
	}
	return NULL;
}

static void acquire_own_shard_empty_steals_from_other_thread(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	struct one_shot o = {pool, -100};
	pthread_t th;
	/* The other thread leaves one idle buffer, most likely on a shard not ours. */
	assert_int_equal(pthread_create(&th, NULL, acquire_release_once, &o), 0);
	pthread_join(th, NULL);
	assert_int_equal(o.rc, 0);
	struct hush_buf *b = acquire_checked(pool, 4096);
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.tier[1].misses, 1);
	assert_int_equal(st.tier[1].acquisitions, 2);
	assert_int_equal(st.tier[1].retained, 0);
	hush_buf_release(b);
	hush_pool_free(pool);
}

#define STRESS_THREADS 4
#define STRESS_ITERS   60000
#define STRESS_SLOTS   8

struct stress_job {
	struct hush_pool *pool;
	uint32_t tid;
	uint64_t acquired;
	uint64_t errors;
	pthread_barrier_t *go;
};

struct stamp {
	uint32_t tid;
	uint32_t seq;
	uint64_t check;
};

static uint64_t stamp_check(uint32_t tid, uint32_t seq)
{
	return ((uint64_t)tid << 32 | seq) * 0x9e3779b97f4a7c15ull;
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Mostly small tiers, some large, a few oversize, as a server's traffic would be. */
static size_t stress_size(uint64_t *rng)
{
	static const size_t bounds[] = {256, 4160, 16448, 33280, 65536, 1048640};
	uint64_t r = xorshift(rng);
	unsigned pick = (unsigned)(r % 1000);
	unsigned tier = pick < 400   ? 0
			: pick < 700 ? 1
			: pick < 850 ? 2
			: pick < 930 ? 3
			: pick < 980 ? 4
			: pick < 998 ? 5
				     : 6;
	size_t lo = tier == 0 ? 0 : tier <= 5 ? bounds[tier - 1] + 1 : 1048641;
	size_t hi = tier <= 5 ? bounds[tier] : 1048641 + 65536;
	return lo + (size_t)((r >> 20) % (hi - lo + 1));
}

static void stamp_write(struct hush_buf *b, uint32_t tid, uint32_t seq)
{
	struct stamp s = {tid, seq, stamp_check(tid, seq)};
	uint8_t *d = hush_buf_data(b);
	memcpy(d, &s, sizeof(s));
	memcpy(d + hush_buf_capacity(b) - sizeof(s), &s, sizeof(s));
}

static int stamp_ok(const struct hush_buf *b, uint32_t tid, uint32_t seq)
{
	struct stamp head, tail;
	const uint8_t *d = hush_buf_data(b);
	memcpy(&head, d, sizeof(head));
	memcpy(&tail, d + hush_buf_capacity(b) - sizeof(tail), sizeof(tail));
	return head.tid == tid && head.seq == seq && head.check == stamp_check(tid, seq) &&
	       memcmp(&head, &tail, sizeof(head)) == 0;
}

/*
 * Each thread keeps up to eight buffers, so a buffer stays out across many other
 * operations; a buffer handed to two owners would get the other's stamp.
 */
static void *stress_thread(void *arg)
{
	struct stress_job *job = arg;
	struct hush_buf *slot[STRESS_SLOTS] = {NULL};
	uint32_t seq[STRESS_SLOTS] = {0};
	uint64_t rng = 0x1234567u + job->tid * 7919u;

	pthread_barrier_wait(job->go);
	for (uint32_t i = 1; i <= STRESS_ITERS; i++) {
		unsigned k = (unsigned)(xorshift(&rng) % STRESS_SLOTS);
		if (slot[k] != NULL) {
			if (!stamp_ok(slot[k], job->tid, seq[k])) {
				job->errors++;
			}
			hush_buf_release(slot[k]);
			slot[k] = NULL;
		}
		struct hush_buf *b = NULL;
		if (hush_pool_acquire(job->pool, stress_size(&rng), &b) != 0) {
			job->errors++;
			continue;
		}
		job->acquired++;
		stamp_write(b, job->tid, i);
		slot[k] = b;
		seq[k] = i;
		if (i % 16 == 0) {
			/* A second owner that lets go at once, from this thread. */
			hush_buf_ref(b);
			hush_buf_release(b);
		}
		if (i % 64 == 0) {
			sched_yield();
		}
		/* Some work while holding it, then check it is still ours. */
		volatile uint32_t spin = 0;
		for (unsigned w = 0; w < (i & 31); w++) {
			spin += w;
		}
		if (!stamp_ok(b, job->tid, i)) {
			job->errors++;
		}
	}
	for (unsigned k = 0; k < STRESS_SLOTS; k++) {
		if (slot[k] != NULL) {
			if (!stamp_ok(slot[k], job->tid, seq[k])) {
				job->errors++;
			}
			hush_buf_release(slot[k]);
		}
	}
	return NULL;
}

static void stress_threads_never_share_a_buffer(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, STRESS_THREADS);
	struct stress_job job[STRESS_THREADS];
	pthread_t th[STRESS_THREADS];
	for (uint32_t t = 0; t < STRESS_THREADS; t++) {
		job[t] = (struct stress_job){pool, t + 1, 0, 0, &go};
		assert_int_equal(pthread_create(&th[t], NULL, stress_thread, &job[t]), 0);
	}
	uint64_t acquired = 0;
	for (unsigned t = 0; t < STRESS_THREADS; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(job[t].errors, 0);
		acquired += job[t].acquired;
	}
	pthread_barrier_destroy(&go);
	assert_int_equal(acquired, (uint64_t)STRESS_THREADS * STRESS_ITERS);

	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.total.in_use, 0);
	assert_int_equal(st.total.bytes_in_use, 0);
	assert_int_equal(st.total.acquisitions, acquired);
	assert_int_equal(st.total.failures, 0);
	assert_int_equal(st.allocator_calls - st.allocator_frees, st.total.retained);
	/* The peaks count cached buffers as drawn: each thread's cache may add its own. */
	uint64_t cache_room = 0;
	for (unsigned i = 0; i < pool->ntiers; i++) {
		cache_room += pool->tier[i].cache_cap;
	}
	assert_true(st.total.high_water <= STRESS_THREADS * (STRESS_SLOTS + cache_room));
	struct hush_pool_config cfg;
	hush_pool_config_init(&cfg);
	for (unsigned i = 0; i < st.ntiers; i++) {
		assert_int_equal(st.tier[i].in_use, 0);
		assert_true(st.tier[i].retained <= cfg.tier_retain[i]);
	}
	hush_pool_free(pool);
}

/* --- Thread caches --- */

/* How many of the pool's caches some thread holds, from the pool's word. */
static uint64_t caches_attached(const struct hush_pool *pool)
{
	return (atomic_load(&pool->word) & HUSH__POOL_CACHE_BITS) / HUSH__POOL_ONE_CACHE;
}

static void cache_defaults_hold_a_few_buffers_per_tier(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	/* 256 B, 4 KiB and 16 KiB tiers: 4 each; 32.5 KiB: 3 and 64 KiB: 2 (128 KiB of
	 * capacity at most); 1 MiB: none. */
	static const uint32_t want[] = {4, 4, 4, 3, 2, 0};
	for (unsigned i = 0; i < pool->ntiers; i++) {
		assert_int_equal(pool->tier[i].cache_cap, want[i]);
	}
	assert_true(pool->caching);
	hush_pool_free(pool);
}

static void cache_acquire_release_warm_touches_no_shared_state(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	hush_buf_release(acquire_checked(pool, 16384));
	uint64_t word = atomic_load(&pool->word);
	uint64_t tier_state = atomic_load(&pool->state[2]);
	uint64_t live = atomic_load(&pool->live);
	for (int i = 0; i < 1000; i++) {
		struct hush_buf *b = acquire_checked(pool, 16384);
		/* Out in the caller's hands while the shared counters stand still. */
		assert_int_equal(atomic_load(&pool->word), word);
		assert_int_equal(atomic_load(&pool->state[2]), tier_state);
		hush_buf_release(b);
	}
	assert_int_equal(atomic_load(&pool->word), word);
	assert_int_equal(atomic_load(&pool->state[2]), tier_state);
	assert_int_equal(atomic_load(&pool->live), live);
	for (unsigned s = 0; s < HUSH__POOL_SHARDS; s++) {
		assert_int_equal(pool->tier[2].shard[s].hits, 0);
	}
	hush_pool_free(pool);
}

static void cache_stats_exact_while_buffers_are_cached(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	struct hush_buf *b[6];
	for (int i = 0; i < 6; i++) {
		b[i] = acquire_checked(pool, 16384);
	}
	/* Four go to this thread's cache, two to the shared list. */
	for (int i = 0; i < 5; i++) {
		hush_buf_release(b[i]);
	}
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.tier[2].in_use, 1);
	assert_int_equal(st.tier[2].retained, 5);
	assert_int_equal(st.tier[2].bytes_in_use, 16448);
	assert_int_equal(st.tier[2].bytes_retained, 5 * 16448);
	assert_int_equal(st.total.in_use, 1);
	assert_int_equal(st.total.bytes_in_use, 16448);
	assert_int_equal(st.total.retained, 5);
	assert_int_equal(st.allocator_calls - st.allocator_frees,
			 st.total.in_use + st.total.retained);
	/* Three back out: all from the cache, counted as hits, nothing allocated. */
	uint64_t calls = allocator_calls();
	for (int i = 0; i < 3; i++) {
		b[i] = acquire_checked(pool, 16384);
	}
	assert_int_equal(allocator_calls(), calls);
	st = stats_of(pool);
	assert_int_equal(st.tier[2].acquisitions, 9);
	assert_int_equal(st.tier[2].misses, 6);
	assert_int_equal(st.tier[2].in_use, 4);
	assert_int_equal(st.tier[2].retained, 2);
	assert_int_equal(st.total.bytes_in_use, 4 * 16448);
	for (int i = 0; i < 3; i++) {
		hush_buf_release(b[i]);
	}
	hush_buf_release(b[5]);
	st = stats_of(pool);
	assert_int_equal(st.total.in_use, 0);
	assert_int_equal(st.total.bytes_in_use, 0);
	assert_int_equal(st.total.retained, 6);
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

/* A pool with a budget never caches: the budget counts exactly what callers hold, and
 * every release can wake a refused acquirer. */
static void cache_budget_pool_never_caches(void **state)
{
	(void)state;
	struct hush_pool_config cfg;
	hush_pool_config_init(&cfg);
	cfg.budget = 2 * 16448;
	struct hush_pool *pool = pool_new_checked(&cfg);
	assert_false(pool->caching);
	struct hush_buf *a = acquire_checked(pool, 16384);
	struct hush_buf *b = acquire_checked(pool, 16384);
	struct hush_buf *c = SENTINEL_BUF;
	assert_int_equal(hush_pool_acquire(pool, 16384, &c), HUSH_ENOBUFS);
	assert_ptr_equal(c, SENTINEL_BUF);
	hush_buf_release(a);
	assert_int_equal(atomic_load(&pool->word) & HUSH__POOL_BYTES, 16448);
	assert_int_equal(HUSH__TIER_KEPT(atomic_load(&pool->state[2])), 1);
	c = acquire_checked(pool, 16384);
	assert_int_equal(caches_attached(pool), 0);
	hush_buf_release(b);
	hush_buf_release(c);
	assert_int_equal(stats_of(pool).total.retained, 2);
	hush_pool_free(pool);
}

struct cache_job {
	struct hush_pool *pool;
	pthread_barrier_t *hold; /* NULL: none */
	unsigned held;		 /* buffers kept out until the barrier */
	uint64_t ops;
	int rc;
};

/* Acquires and releases 16 KiB buffers; keeps `held` of them out across the barrier. */
static void *cache_job_main(void *arg)
{
	struct cache_job *j = arg;
	struct hush_buf *keep[8] = {NULL};
	for (uint64_t i = 0; i < j->ops && j->rc == 0; i++) {
		struct hush_buf *b = NULL;
		j->rc = hush_pool_acquire(j->pool, 16384, &b);
		if (j->rc == 0) {
			memset(hush_buf_data(b), (int)i, 64);
			hush_buf_release(b);
		}
	}
	for (unsigned k = 0; k < j->held && j->rc == 0; k++) {
		j->rc = hush_pool_acquire(j->pool, 16384, &keep[k]);
	}
	if (j->hold != NULL) {
		pthread_barrier_wait(j->hold); /* the main thread reads the stats */
		pthread_barrier_wait(j->hold);
	}
	for (unsigned k = 0; k < j->held; k++) {
		hush_buf_release(keep[k]);
	}
	return NULL;
}

static void cache_thread_exit_returns_its_buffers(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	struct cache_job j = {pool, NULL, 3, 100, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, cache_job_main, &j), 0);
	pthread_join(th, NULL);
	assert_int_equal(j.rc, 0);
	/* The exited thread's cache went back: its three buffers sit on the shared list. */
	assert_int_equal(caches_attached(pool), 0);
	for (unsigned k = 0; k < HUSH__POOL_CACHES; k++) {
		assert_int_equal(atomic_load(&pool->cache[k].owned), 0);
		assert_int_equal(atomic_load(&pool->cache[k].tier[2].n), 0);
	}
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(HUSH__TIER_KEPT(atomic_load(&pool->state[2])), 3);
	assert_int_equal(st.tier[2].retained, 3);
	assert_int_equal(st.tier[2].in_use, 0);
	assert_int_equal(st.tier[2].acquisitions, 103);
	assert_int_equal(st.total.bytes_in_use, 0);
	assert_int_equal(atomic_load(&pool->word) & HUSH__POOL_BYTES, 0);
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

/* A cache pins its pool: freed while another thread holds one, the pool goes when that
 * thread exits. */
static void cache_pool_freed_while_cached_goes_at_thread_exit(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	pthread_barrier_t hold;
	pthread_barrier_init(&hold, NULL, 2);
	struct cache_job j = {pool, &hold, 0, 10, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, cache_job_main, &j), 0);
	pthread_barrier_wait(&hold);
	assert_int_equal(caches_attached(pool), 1);
	hush_pool_free(pool);
	/* The pool and the cached buffer are still there. */
	assert_int_equal(live_allocations(), 2);
	pthread_barrier_wait(&hold);
	pthread_join(th, NULL);
	assert_int_equal(j.rc, 0);
	assert_int_equal(live_allocations(), 0);
	pthread_barrier_destroy(&hold);
	testlib_alloc_uninstall();
}

/* A cache of a freed pool goes back at its thread's next call into any pool. */
static void *free_then_use_other_pool(void *arg)
{
	struct cache_job *j = arg;
	struct hush_pool *other = NULL;
	hush_buf_release(acquire_checked(j->pool, 100));
	pthread_barrier_wait(j->hold);
	pthread_barrier_wait(j->hold); /* the main thread frees j->pool meanwhile */
	j->rc = hush_pool_new(&other, NULL);
	if (j->rc == 0) {
		hush_buf_release(acquire_checked(other, 100));
		pthread_barrier_wait(j->hold);
		pthread_barrier_wait(j->hold);
		hush_pool_free(other);
	}
	return NULL;
}

static void cache_of_freed_pool_goes_at_next_call_on_any_pool(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	pthread_barrier_t hold;
	pthread_barrier_init(&hold, NULL, 2);
	struct cache_job j = {pool, &hold, 0, 0, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, free_then_use_other_pool, &j), 0);
	pthread_barrier_wait(&hold);
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 2); /* pinned by the thread's cache */
	pthread_barrier_wait(&hold);
	pthread_barrier_wait(&hold);
	/* The thread used another pool: the freed one is gone; the other pool and its
	 * cached buffer remain. */
	assert_int_equal(live_allocations(), 2);
	pthread_barrier_wait(&hold);
	pthread_join(th, NULL);
	assert_int_equal(j.rc, 0);
	assert_int_equal(live_allocations(), 0);
	pthread_barrier_destroy(&hold);
	testlib_alloc_uninstall();
}

/* hush_pool_trim frees this thread's cache at once; another thread's cache goes to the
 * shared lists at that thread's next call on the pool. */
static void *cache_then_call_again(void *arg)
{
	struct cache_job *j = arg;
	hush_buf_release(acquire_checked(j->pool, 16384));
	hush_buf_release(acquire_checked(j->pool, 4096));
	pthread_barrier_wait(j->hold);
	pthread_barrier_wait(j->hold); /* the main thread trims meanwhile */
	hush_buf_release(acquire_checked(j->pool, 100));
	pthread_barrier_wait(j->hold);
	pthread_barrier_wait(j->hold);
	return NULL;
}

static void cache_trim_empties_other_threads_caches_at_their_next_call(void **state)
{
	(void)state;
	struct hush_pool *pool = pool_new_checked(NULL);
	pthread_barrier_t hold;
	pthread_barrier_init(&hold, NULL, 2);
	struct cache_job j = {pool, &hold, 0, 0, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, cache_then_call_again, &j), 0);
	pthread_barrier_wait(&hold);
	hush_buf_release(acquire_checked(pool, 65536));
	assert_int_equal(stats_of(pool).total.retained, 3);
	/* Ours freed at once; the other thread's two are its own until it calls again. */
	assert_int_equal(hush_pool_trim(pool), 65536);
	assert_int_equal(stats_of(pool).total.retained, 2);
	pthread_barrier_wait(&hold);
	pthread_barrier_wait(&hold);
	/* It called: its 16 KiB and 4 KiB buffers went to the shared lists (and the 256 B
	 * one it just released to its emptied cache). */
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(HUSH__TIER_KEPT(atomic_load(&pool->state[2])), 1);
	assert_int_equal(HUSH__TIER_KEPT(atomic_load(&pool->state[1])), 1);
	assert_int_equal(st.total.retained, 3);
	assert_int_equal(hush_pool_trim(pool), 16448 + 4160);
	pthread_barrier_wait(&hold);
	pthread_join(th, NULL);
	pthread_barrier_destroy(&hold);
	hush_pool_free(pool);
}

/* More threads than the pool has caches: the rest use the shared tiers; every figure is
 * exact while they all hold buffers, and after they all exit. */
#define MANY_THREADS (HUSH__POOL_CACHES + 8)

static void cache_many_threads_stats_exact(void **state)
{
	(void)state;
	testlib_alloc_install();
	struct hush_pool *pool = pool_new_checked(NULL);
	pthread_barrier_t hold;
	pthread_barrier_init(&hold, NULL, MANY_THREADS + 1);
	struct cache_job j[MANY_THREADS];
	pthread_t th[MANY_THREADS];
	for (unsigned t = 0; t < MANY_THREADS; t++) {
		j[t] = (struct cache_job){pool, &hold, 1 + t % 3, 2000, 0};
		assert_int_equal(pthread_create(&th[t], NULL, cache_job_main, &j[t]), 0);
	}
	pthread_barrier_wait(&hold);
	uint64_t held = 0, ops = 0;
	for (unsigned t = 0; t < MANY_THREADS; t++) {
		assert_int_equal(j[t].rc, 0);
		held += j[t].held;
		ops += j[t].ops + j[t].held;
	}
	assert_int_equal(caches_attached(pool), HUSH__POOL_CACHES);
	struct hush_pool_stats st = stats_of(pool);
	assert_int_equal(st.tier[2].in_use, held);
	assert_int_equal(st.total.bytes_in_use, held * 16448);
	assert_int_equal(st.tier[2].acquisitions, ops);
	assert_int_equal(st.allocator_calls - st.allocator_frees,
			 st.total.in_use + st.total.retained);
	/* Idle memory beyond the shared cap: at most one cache's worth per thread. */
	assert_true(st.tier[2].retained <= 128 + HUSH__POOL_CACHES * pool->tier[2].cache_cap);
	pthread_barrier_wait(&hold);
	for (unsigned t = 0; t < MANY_THREADS; t++) {
		pthread_join(th[t], NULL);
	}
	pthread_barrier_destroy(&hold);
	st = stats_of(pool);
	assert_int_equal(caches_attached(pool), 0);
	assert_int_equal(st.total.in_use, 0);
	assert_int_equal(st.total.bytes_in_use, 0);
	assert_int_equal(st.tier[2].acquisitions, ops);
	assert_true(st.tier[2].retained <= 128);
	assert_int_equal(st.allocator_calls - st.allocator_frees, st.total.retained);
	hush_pool_free(pool);
	assert_int_equal(live_allocations(), 0);
	testlib_alloc_uninstall();
}

/* --- AddressSanitizer --- */

/*
 * Only built under ASan. It is left out of the list otherwise instead of calling
 * skip(): cmocka 1.1 reports a skipped test as "not ok N # SKIP" in TAP, which
 * automake's tap-driver counts as a failure.
 */
#ifdef HUSH_ASAN
static void use_after_release_child(void)
{
	struct hush_pool *pool = NULL;
	struct hush_buf *b = NULL;
	if (hush_pool_new(&pool, NULL) != 0 || hush_pool_acquire(pool, 4096, &b) != 0) {
		_exit(3);
	}
	volatile uint8_t *d = hush_buf_data(b);
	d[0] = 1;
	hush_buf_release(b);
	/* The buffer is retained, so only poisoning can catch this read. */
	uint8_t v = d[100];
	(void)v;
	_exit(0);
}

static void buf_read_after_release_caught_by_asan(void **state)
{
	(void)state;
	char err[16384];
	int status = run_in_child(use_after_release_child, err, sizeof(err));
	assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 3);
	assert_non_null(strstr(err, "use-after-poison"));
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(config_init_defaults_match_documented_tiers),
	    cmocka_unit_test(pool_new_null_config_uses_defaults),
	    cmocka_unit_test(pool_new_bad_tier_count_returns_einval),
	    cmocka_unit_test(pool_new_bad_tier_sizes_return_einval),
	    cmocka_unit_test(pool_new_unknown_flag_returns_einval),
	    cmocka_unit_test(pool_new_eight_tiers_accepted),
	    cmocka_unit_test(pool_new_null_out_returns_einval),
	    cmocka_unit_test(acquire_tier_boundaries_pick_smallest_fitting_tier),
	    cmocka_unit_test(acquire_zero_size_gives_smallest_tier),
	    cmocka_unit_test(buf_data_is_16_byte_aligned_and_writable),
	    cmocka_unit_test(acquire_oversize_gets_exact_capacity),
	    cmocka_unit_test(release_oversize_frees_and_never_retains),
	    cmocka_unit_test(release_over_retention_cap_frees_excess),
	    cmocka_unit_test(release_with_zero_cap_never_retains),
	    cmocka_unit_test(acquire_release_warm_makes_no_allocator_calls),
	    cmocka_unit_test(acquire_over_budget_returns_enobufs_and_allocates_nothing),
	    cmocka_unit_test(acquire_after_release_under_budget_succeeds),
	    cmocka_unit_test(available_cb_after_refusals_called_exactly_once),
	    cmocka_unit_test(available_cb_without_refusal_not_called),
	    cmocka_unit_test(available_cb_cleared_with_null_not_called),
	    cmocka_unit_test(available_cb_may_acquire_from_the_pool),
	    cmocka_unit_test(available_cb_threads_refused_acquire_always_woken),
	    cmocka_unit_test(trim_frees_retained_and_keeps_in_use),
	    cmocka_unit_test(stats_known_sequence_add_up),
	    cmocka_unit_test(alloc_failure_at_every_allocation_returns_enomem_and_leaks_nothing),
	    cmocka_unit_test(acquire_oversize_too_large_returns_enomem),
	    cmocka_unit_test(acquire_null_args_return_einval),
	    cmocka_unit_test(buf_ref_twice_returns_only_at_last_release),
	    cmocka_unit_test(buf_release_twice_aborts_with_message),
	    cmocka_unit_test(null_release_free_trim_and_set_cb_are_noops),
	    cmocka_unit_test(pool_free_with_buffers_out_frees_after_last_release),
	    cmocka_unit_test(pool_free_racing_last_release_destroys_once),
	    cmocka_unit_test(release_with_wipe_flag_zeroes_buffer),
	    cmocka_unit_test(acquire_own_shard_empty_steals_from_other_thread),
	    cmocka_unit_test(stress_threads_never_share_a_buffer),
	    cmocka_unit_test(cache_defaults_hold_a_few_buffers_per_tier),
	    cmocka_unit_test(cache_acquire_release_warm_touches_no_shared_state),
	    cmocka_unit_test(cache_stats_exact_while_buffers_are_cached),
	    cmocka_unit_test(cache_budget_pool_never_caches),
	    cmocka_unit_test(cache_thread_exit_returns_its_buffers),
	    cmocka_unit_test(cache_pool_freed_while_cached_goes_at_thread_exit),
	    cmocka_unit_test(cache_of_freed_pool_goes_at_next_call_on_any_pool),
	    cmocka_unit_test(cache_trim_empties_other_threads_caches_at_their_next_call),
	    cmocka_unit_test(cache_many_threads_stats_exact),
#ifdef HUSH_ASAN
	    cmocka_unit_test(buf_read_after_release_caught_by_asan),
#endif
	};
#ifndef HUSH_ASAN
	fprintf(stderr, "# buf_read_after_release_caught_by_asan needs AddressSanitizer: "
			"not built in this configuration\n");
#endif
	return cmocka_run_group_tests(tests, NULL, NULL);
}
