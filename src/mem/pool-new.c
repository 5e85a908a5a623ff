/*
 * Making a pool: the default configuration, its checks, and hush_pool_new, which lays
 * the pool out (tiers, shards, thread caches) in one allocation. The pool's operations
 * are in pool.c; include/hush/pool.h has the contract.
 */
#include <string.h>

#include "common/common-internal.h"
#include "mem/pool-internal.h"

#define KNOWN_FLAGS (HUSH_POOL_WIPE)

void hush_pool_config_init(struct hush_pool_config *cfg)
{
	if (cfg == NULL) {
		return;
	}
	/*
	 * The caps bound the idle memory the pool keeps by default to about 11.3 MiB
	 * (1024 x 256 B + 256 x 4160 + 128 x 16448 + 64 x 33280 + 32 x 64 KiB + 4 x
	 * (1 MiB + 64)), well under 16 MiB, while still covering a burst of a few hundred
	 * busy connections in the record-sized tiers without calling the allocator.
	 */
	static const size_t sizes[] = {
	    256,			  /* control messages, a frame's first bytes */
	    4096 + HUSH_POOL_HEADROOM,	  /* one 4 KiB frame */
	    16384 + HUSH_POOL_HEADROOM,	  /* one 16 KiB frame */
	    32768 + 512,		  /* two 16 KiB frames: the default read */
	    65536,			  /* bulk reads and writes */
	    1048576 + HUSH_POOL_HEADROOM, /* the largest frame a peer may send */
	};
	static const size_t retain[] = {1024, 256, 128, 64, 32, 4};

	memset(cfg, 0, sizeof(*cfg));
	cfg->ntiers = HUSH_ARRAY_SIZE(sizes);
	for (unsigned i = 0; i < cfg->ntiers; i++) {
		cfg->tier_size[i] = sizes[i];
		cfg->tier_retain[i] = retain[i];
	}
}

static size_t smaller(size_t a, size_t b)
{
	return a < b ? a : b;
}

static int config_check(const struct hush_pool_config *cfg)
{
	HUSH_ENSURE(cfg->ntiers >= 1 && cfg->ntiers <= HUSH_POOL_MAX_TIERS, HUSH_EINVAL);
	HUSH_ENSURE((cfg->flags & ~(unsigned)KNOWN_FLAGS) == 0, HUSH_EINVAL);
	for (unsigned i = 0; i < cfg->ntiers; i++) {
		size_t size = cfg->tier_size[i];
		HUSH_ENSURE(size != 0, HUSH_EINVAL);
		/* The header is added to every allocation, so it must not wrap. */
		HUSH_ENSURE(size <= SIZE_MAX - sizeof(struct hush_buf), HUSH_EINVAL);
		HUSH_ENSURE(size < HUSH__POOL_MAX_REQUEST, HUSH_EINVAL);
		HUSH_ENSURE(i == 0 || size > cfg->tier_size[i - 1], HUSH_EINVAL);
	}
	return 0;
}

void hush__pool_tier_locks_destroy(struct hush__pool_tier *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		pthread_mutex_destroy(&t->shard[i].lock);
	}
}

int hush_pool_new(struct hush_pool **out, const struct hush_pool_config *cfg)
{
	struct hush_pool_config defaults;
	struct hush_pool *pool = NULL;
	unsigned tiers_done = 0;
	unsigned shards_done = 0;
	bool cb_lock_done = false;
	int rc;

	HUSH_ENSURE(out != NULL, HUSH_EINVAL);
	if (cfg == NULL) {
		hush_pool_config_init(&defaults);
		cfg = &defaults;
	}
	HUSH_GUARD(config_check(cfg));

	/*
	 * The allocator promises only max_align_t alignment; over-allocate by a cache line
	 * so that the counters different threads write really sit on lines of their own.
	 */
	size_t size = sizeof(struct hush_pool) + cfg->ntiers * sizeof(struct hush__pool_tier);
	size_t raw_size = size + HUSH__CACHE_LINE - 1;
	void *raw = hush__alloc(raw_size);
	HUSH_ENSURE(raw != NULL, HUSH_ENOMEM);
	uintptr_t addr =
	    ((uintptr_t)raw + HUSH__CACHE_LINE - 1) & ~(uintptr_t)(HUSH__CACHE_LINE - 1);
	pool = (struct hush_pool *)addr;
	memset(pool, 0, size);
	pool->raw = raw;
	pool->raw_size = raw_size;
	/* A budget above the largest request can never refuse anything but what could not be
	 * allocated anyway; clamping keeps the reserved bytes inside their field. */
	pool->budget = cfg->budget < HUSH__POOL_MAX_REQUEST ? cfg->budget : HUSH__POOL_MAX_REQUEST;
	pool->flags = cfg->flags;
	pool->ntiers = cfg->ntiers;

	rc = HUSH_ENOMEM;
	if (pthread_mutex_init(&pool->cb_lock, NULL) != 0) {
		goto out;
	}
	cb_lock_done = true;
	for (tiers_done = 0; tiers_done < cfg->ntiers; tiers_done++) {
		struct hush__pool_tier *t = &pool->tier[tiers_done];
		t->size = cfg->tier_size[tiers_done];
		/* The kept count has 32 bits; a larger cap means "no cap" just the same. */
		t->retain = cfg->tier_retain[tiers_done] > UINT32_MAX
				? UINT32_MAX
				: cfg->tier_retain[tiers_done];
		/* A tier that keeps nothing caches nothing either; a cache holds little. */
		size_t cap = smaller(HUSH__POOL_CACHE_BYTES / t->size, HUSH__POOL_CACHE_DEPTH);
		cap = smaller(cap, t->retain);
		t->cache_cap = (uint32_t)cap;
		pool->caching = pool->caching || (cap != 0 && cfg->budget == 0);
		for (shards_done = 0; shards_done < HUSH__POOL_SHARDS; shards_done++) {
			if (pthread_mutex_init(&t->shard[shards_done].lock, NULL) != 0) {
				goto out;
			}
		}
	}
	*out = pool;
	pool = NULL;
	rc = 0;
out:
	if (pool != NULL) {
		/* Undo exactly the initialisations that succeeded. */
		if (tiers_done < cfg->ntiers) {
			hush__pool_tier_locks_destroy(&pool->tier[tiers_done], shards_done);
		}
		for (unsigned i = 0; i < tiers_done; i++) {
			hush__pool_tier_locks_destroy(&pool->tier[i], HUSH__POOL_SHARDS);
		}
		if (cb_lock_done) {
			pthread_mutex_destroy(&pool->cb_lock);
		}
		hush__free(raw, raw_size);
	}
	return rc;
}
