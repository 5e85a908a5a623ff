/*
 * The tiered buffer pool's private layout (src/mem/pool.c). Never installed; tests may
 * include it to check the layout promises (header size, alignment).
 */
#ifndef HUSH_POOL_INTERNAL_H
#define HUSH_POOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hush/pool.h>

/*
 * Free lists per tier. A thread picks one shard for its whole life, so threads rarely
 * share a lock; sixteen covers the usual "one event loop per core" servers. Must be a
 * power of two (the index is masked).
 */
#define HUSH__POOL_SHARDS 16

/* The tier index of a direct allocation above the largest tier. */
#define HUSH__POOL_OVERSIZE 0xffu

/* Cache line, for keeping counters that different threads write apart. */
#define HUSH__CACHE_LINE 64

/*
 * Values of hush_buf.magic. A buffer is LIVE while someone holds a reference, IDLE
 * while it sits on a free list; anything else means the header was overwritten or the
 * buffer was already given back to the allocator.
 */
#define HUSH__BUF_LIVE 0xb0f1u
#define HUSH__BUF_IDLE 0x1d1eu
#define HUSH__BUF_DEAD 0xdeadu

/*
 * One buffer is one allocation: this header, then the data. The header is 32 bytes on
 * LP64 and its size is a multiple of 16, so the data keeps the 16-byte alignment the
 * allocator gives. The header is never poisoned: it holds the free-list link.
 */
struct hush_buf {
	struct hush_pool *pool;
	struct hush_buf *next; /* free-list link while IDLE */
	size_t capacity;       /* usable bytes */
	_Atomic uint32_t refs;
	uint16_t magic;
	uint8_t tier; /* index into pool->tier, or HUSH__POOL_OVERSIZE */
	uint8_t unused;
	_Alignas(16) uint8_t data[];
};

/*
 * One LIFO free list and the counters its lock protects. LIFO hands back the buffer
 * released last, which is the one most likely still in cache. Aligned to a cache line
 * so two threads working on neighbouring shards do not share one.
 */
struct hush__pool_shard {
	_Alignas(HUSH__CACHE_LINE) pthread_mutex_t lock;
	struct hush_buf *head;
	uint64_t count; /* buffers on this list */
	uint64_t hits;	/* acquisitions served from this list (own or stolen) */
};

/*
 * A tier's state word packs the buffers out (low 32 bits) and the retained ones counted
 * against the cap (high 32 bits), so that acquire and release each change both with a
 * single atomic operation: an atomic read-modify-write costs as much as the rest of the
 * fast path. The kept count may run ahead of the lists by the buffers being pushed
 * right now; it is the cap's gate and the hint that stealing can succeed. 2^32 buffers
 * out at once would need more than a terabyte.
 */
#define HUSH__TIER_ONE_OUT  ((uint64_t)1)
#define HUSH__TIER_ONE_KEPT ((uint64_t)1 << 32)
#define HUSH__TIER_OUT(w)   ((uint64_t)(uint32_t)(w))
#define HUSH__TIER_KEPT(w)  ((w) >> 32)

struct hush__pool_tier {
	/* Read-only after creation. */
	size_t size;
	size_t retain;	    /* at most UINT32_MAX */
	uint32_t cache_cap; /* buffers each thread cache may hold; 0: none */
	/* Slow-path counters: they move only with an allocator call or a refusal. */
	_Atomic uint64_t misses;
	_Atomic uint64_t failures;
	struct hush__pool_shard shard[HUSH__POOL_SHARDS];
};

/* Counters of direct allocations; all slow path. */
struct hush__pool_oversize {
	_Atomic uint64_t in_use;
	_Atomic uint64_t high_water;
	_Atomic uint64_t acquisitions;
	_Atomic uint64_t failures;
	_Atomic uint64_t bytes_in_use;
	_Atomic uint64_t bytes_high_water;
};

/*
 * The pool's hot word: the bytes drawn from the tiers (capacities, oversize included:
 * buffers in callers' hands and those parked in thread caches), the thread caches
 * attached to the pool, and two flags, changed together atomically. CLOSING is set by
 * hush_pool_free; whoever moves the word to "CLOSING, no bytes out, no cache attached"
 * destroys the pool, which happens exactly once because only one atomic operation can
 * make that transition. WAITING records that an acquire was refused; the release that
 * clears it calls the available callback.
 */
#define HUSH__POOL_CLOSING    ((uint64_t)1 << 63)
#define HUSH__POOL_WAITING    ((uint64_t)1 << 62)
#define HUSH__POOL_ONE_CACHE  ((uint64_t)1 << 52)
#define HUSH__POOL_CACHE_BITS (HUSH__POOL_WAITING - HUSH__POOL_ONE_CACHE)
#define HUSH__POOL_BYTES      (HUSH__POOL_ONE_CACHE - 1)
/* What must be zero, besides CLOSING being set, for the pool to be destroyed. */
#define HUSH__POOL_HELD (HUSH__POOL_BYTES | HUSH__POOL_CACHE_BITS)
/*
 * Bytes are reserved before they are allocated, so a request must be refused before it
 * could carry into the cache count. 2^48 bytes (256 TiB) is the whole of a 48-bit
 * address space, so no request refused for this could have been allocated anyway; the
 * 2^52 of the bytes field leaves room for sixteen such reservations at once.
 */
#define HUSH__POOL_MAX_REQUEST ((uint64_t)1 << 48)

/*
 * Thread caches (see pool.c, "Thread caches"). Each pool holds HUSH__POOL_CACHES of
 * them, made with the pool; a thread takes one the first time it acquires from the pool
 * and holds it until it exits (or the pool closes). A thread beyond that number, or a
 * pool with a budget, goes straight to the shared tiers. A tier's cache keeps at most
 * HUSH__POOL_CACHE_DEPTH buffers, at most HUSH__POOL_CACHE_BYTES of capacity and at
 * most the tier's retention cap (hush__pool_tier.cache_cap).
 */
#define HUSH__POOL_CACHES      32
#define HUSH__POOL_CACHE_DEPTH 4
#define HUSH__POOL_CACHE_BYTES ((size_t)128 * 1024)

/*
 * One tier's part of a thread cache: a LIFO stack, written only by its owner thread.
 * n and hits are atomics only so that hush_pool_stats may read them from another thread
 * (the owner writes them with plain relaxed loads and stores, no read-modify-write).
 */
struct hush__pool_cache_tier {
	_Atomic uint32_t n;    /* buffers held */
	_Atomic uint64_t hits; /* acquisitions served from here, by every owner so far */
	struct hush_buf *buf[HUSH__POOL_CACHE_DEPTH];
};

/* A thread cache. Owned (by one thread) or free; on cache lines of its own. */
struct hush__pool_cache {
	_Alignas(HUSH__CACHE_LINE) _Atomic uint32_t owned;
	uint64_t trim_seen; /* the pool's trim_gen when this cache last emptied */
	struct hush__pool_cache_tier tier[HUSH_POOL_MAX_TIERS];
};

struct hush_pool {
	/* Read-only after creation. */
	void *raw; /* what the allocator returned; the pool is aligned inside it */
	size_t raw_size;
	uint64_t budget; /* 0 = none */
	unsigned flags;
	unsigned ntiers;
	bool caching; /* no budget, and some tier has a cache_cap */

	/* Read on every cached acquire and release, written by hush_pool_trim only: a
	 * thread cache that has not emptied since the last trim empties first. */
	_Alignas(HUSH__CACHE_LINE) _Atomic uint64_t trim_gen;

	/*
	 * Everything acquire and release write on every call, on one cache line for up
	 * to six tiers (the default): the pool's word (see HUSH__POOL_CLOSING), the
	 * buffers out (for the pool-wide high-water mark), and each tier's state (see
	 * HUSH__TIER_ONE_OUT). Exact pool-wide peaks need one shared count that every
	 * operation moves; keeping all of them on one line makes that one transfer
	 * between cores instead of several.
	 */
	_Alignas(HUSH__CACHE_LINE) _Atomic uint64_t word;
	_Atomic uint64_t live;
	_Atomic uint64_t state[HUSH_POOL_MAX_TIERS];

	/* Read on every acquire, written only when a peak is passed. */
	_Alignas(HUSH__CACHE_LINE) _Atomic uint64_t bytes_high_water;
	_Atomic uint64_t live_high_water;
	_Atomic uint64_t tier_high_water[HUSH_POOL_MAX_TIERS];

	/* Rare paths: frees, the callback, direct allocations. */
	_Alignas(HUSH__CACHE_LINE) _Atomic uint64_t frees;
	pthread_mutex_t cb_lock;
	hush_pool_available_fn cb;
	void *cb_arg;
	struct hush__pool_oversize oversize;

	struct hush__pool_cache cache[HUSH__POOL_CACHES];

	struct hush__pool_tier tier[];
};

/* Destroys the first n shard locks of tier t (all of them when n is the shard count). */
void hush__pool_tier_locks_destroy(struct hush__pool_tier *t, unsigned n);

#endif /* HUSH_POOL_INTERNAL_H */
