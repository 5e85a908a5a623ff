/*
 * The tiered buffer pool: see include/hush/pool.h for the contract and docs/DESIGN.md
 * for why the tiers have the sizes they have. Making a pool is in pool-new.c.
 *
 * Hot path: the calling thread's own cache (see "Thread caches" below): a few buffers
 * per tier that only this thread touches, so a cached acquire or release takes no lock
 * and writes no cache line another thread writes. Behind the caches, the shared tiers:
 * one uncontended mutex (the thread's own shard of the tier) and three atomic counters
 * that share one cache line (budget and lifetime, buffers out, the tier's state). No
 * global lock is ever taken by acquire or release. The shared counters are the price of
 * the budget and of pool-wide peaks: under two threads hammering the shared tiers that
 * line moves between cores on every call (bench-pool measures it).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/common-internal.h"
#include "mem/pool-internal.h"

_Static_assert(sizeof(struct hush_buf) % 16 == 0, "buffer data must stay 16-byte aligned");
_Static_assert((HUSH__POOL_SHARDS & (HUSH__POOL_SHARDS - 1)) == 0, "shards: power of two");
_Static_assert(HUSH_POOL_MAX_TIERS < HUSH__POOL_OVERSIZE, "tier index must fit in a byte");

/*
 * Each thread takes the next number from this counter the first time it touches any
 * pool and keeps it: consecutive threads land on different shards, and a thread keeps
 * finding its own recently released (cache-warm) buffers.
 */
static atomic_uint next_thread_index;
static _Thread_local unsigned thread_shard = UINT_MAX;

static inline unsigned my_shard(void)
{
	if (HUSH_UNLIKELY(thread_shard == UINT_MAX)) {
		unsigned n = atomic_fetch_add_explicit(&next_thread_index, 1, memory_order_relaxed);
		thread_shard = n & (HUSH__POOL_SHARDS - 1);
	}
	return thread_shard;
}

/*
 * Thread caches. A thread that acquires from a pool without a budget takes one of the
 * pool's HUSH__POOL_CACHES caches and keeps it in one of its THREAD_SLOTS slots: its
 * releases fill the cache (up to each tier's cache_cap) and its acquires empty it before
 * going to the shared tiers. Cached buffers still count as drawn from the tiers (the
 * tier's out count and the pool's word do not move), so the statistics subtract them
 * when read (hush_pool_stats) and nothing shared is written while they move.
 *
 * An attached cache pins its pool (a unit of HUSH__POOL_CACHE_BITS in the word): the
 * thread's slot can therefore always reach the pool. A cache is given back, its buffers
 * returned to the shared tiers first, when its thread exits (the key destructor), when
 * that thread calls hush_pool_free on the pool, or on that thread's next acquire or
 * release on any pool after some pool was freed (closing_epoch). Another thread never
 * touches a cache's buffers: hush_pool_trim empties the caller's cache at once and the
 * others at their owners' next call on the pool (trim_gen).
 */
#define THREAD_SLOTS 4

struct thread_slot {
	struct hush_pool *pool; /* NULL: free */
	struct hush__pool_cache *cache;
};

static _Thread_local struct thread_slot thread_slots[THREAD_SLOTS];
/* closing_epoch when this thread's slots were last swept. */
static _Thread_local uint64_t thread_epoch_seen;
/* The key's value is set for this thread: thread_exit will run when it exits. */
static _Thread_local bool thread_exit_armed;
/* Bumped (release) by every hush_pool_free after it sets CLOSING. */
static _Atomic uint64_t closing_epoch;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static bool exit_key_ok;

static bool release_to_tier(struct hush_pool *pool, struct hush_buf *buf);
static void pool_destroy(struct hush_pool *pool);

/*
 * A reference or magic error means the caller's program is already corrupting memory;
 * carrying on would hand one buffer to two owners. Stop with a message instead.
 */
static void buf_fatal(const struct hush_buf *buf, const char *what)
{
	fprintf(stderr, "hush: %s (buffer %p)\n", what, (const void *)buf);
	abort();
}

/* Raises *max to v unless it already is at least v. Relaxed: statistics only. */
static inline void max_u64(_Atomic uint64_t *max, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(max, memory_order_relaxed);
	while (cur < v && !atomic_compare_exchange_weak_explicit(max, &cur, v, memory_order_relaxed,
								 memory_order_relaxed)) {
	}
}

/* Gives one buffer's memory back to the allocator; touches nothing of the pool. */
static void buf_free(struct hush_buf *buf)
{
	size_t cap = buf->capacity;
	HUSH_UNPOISON(buf->data, cap);
	buf->magic = HUSH__BUF_DEAD;
	hush__free(buf, sizeof(*buf) + cap);
}

/* Gives one buffer back to the allocator and counts it. */
static void buf_destroy(struct hush_pool *pool, struct hush_buf *buf)
{
	atomic_fetch_add_explicit(&pool->frees, 1, memory_order_relaxed);
	buf_free(buf);
}

/* Frees every buffer on the shared lists; thread caches are not touched. */
static size_t trim_shared(struct hush_pool *pool)
{
	size_t bytes = 0;

	for (unsigned i = 0; i < pool->ntiers; i++) {
		struct hush__pool_tier *t = &pool->tier[i];
		for (unsigned s = 0; s < HUSH__POOL_SHARDS; s++) {
			struct hush__pool_shard *sh = &t->shard[s];
			/* Detach the whole list under the lock; free outside it. */
			pthread_mutex_lock(&sh->lock);
			struct hush_buf *list = sh->head;
			uint64_t n = sh->count;
			sh->head = NULL;
			sh->count = 0;
			pthread_mutex_unlock(&sh->lock);
			if (n == 0) {
				continue;
			}
			atomic_fetch_sub_explicit(&pool->state[i], n * HUSH__TIER_ONE_KEPT,
						  memory_order_relaxed);
			while (list != NULL) {
				struct hush_buf *next = list->next;
				buf_destroy(pool, list);
				list = next;
			}
			bytes += (size_t)n * t->size;
		}
	}
	return bytes;
}

/* --- Thread caches: lookup, attach, flush, detach --- */

/*
 * Returns every buffer of cache c to the shared tiers, which keep it or free it as any
 * release; returns the bytes (capacities) freed.
 */
static size_t cache_flush(struct hush_pool *pool, struct hush__pool_cache *c)
{
	size_t freed = 0;
	c->trim_seen = atomic_load_explicit(&pool->trim_gen, memory_order_relaxed);
	for (unsigned i = 0; i < pool->ntiers; i++) {
		struct hush__pool_cache_tier *ct = &c->tier[i];
		uint32_t n = atomic_load_explicit(&ct->n, memory_order_relaxed);
		while (n > 0) {
			struct hush_buf *buf = ct->buf[--n];
			atomic_store_explicit(&ct->n, n, memory_order_relaxed);
			freed += release_to_tier(pool, buf) ? 0 : pool->tier[i].size;
		}
	}
	return freed;
}

/*
 * Empties the slot's cache, gives the cache back to its pool and unpins the pool, which
 * this call destroys when it was the last thing holding a closed pool.
 */
static void slot_detach(struct thread_slot *sl)
{
	struct hush_pool *pool = sl->pool;
	struct hush__pool_cache *c = sl->cache;

	sl->pool = NULL;
	sl->cache = NULL;
	cache_flush(pool, c);
	atomic_store_explicit(&c->owned, 0, memory_order_release);
	uint64_t old =
	    atomic_fetch_sub_explicit(&pool->word, HUSH__POOL_ONE_CACHE, memory_order_acq_rel);
	if ((old & HUSH__POOL_CLOSING) && (old & HUSH__POOL_HELD) == HUSH__POOL_ONE_CACHE) {
		pool_destroy(pool);
	}
}

/* The key destructor: an exiting thread gives back every cache it holds. */
static void thread_exit(void *arg)
{
	(void)arg;
	for (unsigned k = 0; k < THREAD_SLOTS; k++) {
		if (thread_slots[k].pool != NULL) {
			slot_detach(&thread_slots[k]);
		}
	}
}

static void exit_key_make(void)
{
	exit_key_ok = pthread_key_create(&exit_key, thread_exit) == 0;
}

/* Gives back the caches of pools that hush_pool_free has closed since the last look. */
static void slots_sweep(void)
{
	for (unsigned k = 0; k < THREAD_SLOTS; k++) {
		struct thread_slot *sl = &thread_slots[k];
		if (sl->pool != NULL &&
		    (atomic_load_explicit(&sl->pool->word, memory_order_acquire) &
		     HUSH__POOL_CLOSING)) {
			slot_detach(sl);
		}
	}
}

/* This thread's cache of pool, emptied first if the pool was trimmed since; or NULL. */
static inline struct hush__pool_cache *cache_find(struct hush_pool *pool)
{
	uint64_t epoch = atomic_load_explicit(&closing_epoch, memory_order_acquire);
	if (HUSH_UNLIKELY(epoch != thread_epoch_seen)) {
		thread_epoch_seen = epoch;
		slots_sweep();
	}
	for (unsigned k = 0; k < THREAD_SLOTS; k++) {
		if (thread_slots[k].pool == pool) {
			struct hush__pool_cache *c = thread_slots[k].cache;
			if (HUSH_UNLIKELY(
				c->trim_seen !=
				atomic_load_explicit(&pool->trim_gen, memory_order_relaxed))) {
				cache_flush(pool, c);
			}
			return c;
		}
	}
	return NULL;
}

/*
 * Takes one of the pool's free caches for this thread; NULL when the thread's slots or
 * the pool's caches are all taken, or the exit hook cannot be set (without it an
 * exiting thread would strand its cache).
 */
static struct hush__pool_cache *cache_attach(struct hush_pool *pool)
{
	struct thread_slot *sl = NULL;
	for (unsigned k = 0; k < THREAD_SLOTS && sl == NULL; k++) {
		sl = thread_slots[k].pool == NULL ? &thread_slots[k] : NULL;
	}
	uint64_t attached =
	    (atomic_load_explicit(&pool->word, memory_order_relaxed) & HUSH__POOL_CACHE_BITS) /
	    HUSH__POOL_ONE_CACHE;
	if (sl == NULL || attached >= HUSH__POOL_CACHES) {
		return NULL;
	}
	if (!thread_exit_armed) {
		pthread_once(&exit_key_once, exit_key_make);
		/* Any non-NULL value makes the destructor run at the thread's exit. */
		if (!exit_key_ok || pthread_setspecific(exit_key, &thread_exit_armed) != 0) {
			return NULL;
		}
		thread_exit_armed = true;
	}
	for (unsigned k = 0; k < HUSH__POOL_CACHES; k++) {
		struct hush__pool_cache *c = &pool->cache[k];
		uint32_t expected = 0;
		if (atomic_load_explicit(&c->owned, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong_explicit(
			&c->owned, &expected, 1, memory_order_acquire, memory_order_relaxed)) {
			atomic_fetch_add_explicit(&pool->word, HUSH__POOL_ONE_CACHE,
						  memory_order_relaxed);
			c->trim_seen = atomic_load_explicit(&pool->trim_gen, memory_order_relaxed);
			sl->pool = pool;
			sl->cache = c;
			return c;
		}
	}
	return NULL;
}

/* Parks a released tier buffer in this thread's cache; false when it has no room. */
static inline bool cache_push(struct hush_pool *pool, struct hush_buf *buf)
{
	unsigned i = buf->tier;
	uint32_t cap = pool->tier[i].cache_cap;
	if (cap == 0) {
		return false;
	}
	struct hush__pool_cache *c = cache_find(pool);
	if (c == NULL) {
		return false;
	}
	struct hush__pool_cache_tier *ct = &c->tier[i];
	uint32_t n = atomic_load_explicit(&ct->n, memory_order_relaxed);
	if (n >= cap) {
		return false;
	}
	HUSH_POISON(buf->data, buf->capacity);
	buf->magic = HUSH__BUF_IDLE;
	ct->buf[n] = buf;
	atomic_store_explicit(&ct->n, n + 1, memory_order_relaxed);
	return true;
}

/* Takes a buffer of tier i from this thread's cache (attaching one if need be), or NULL. */
static inline struct hush_buf *cache_pop(struct hush_pool *pool, unsigned i)
{
	struct hush__pool_cache *c = cache_find(pool);
	if (c == NULL) {
		c = cache_attach(pool);
		if (c == NULL) {
			return NULL;
		}
	}
	struct hush__pool_cache_tier *ct = &c->tier[i];
	uint32_t n = atomic_load_explicit(&ct->n, memory_order_relaxed);
	if (n == 0) {
		return NULL;
	}
	struct hush_buf *buf = ct->buf[n - 1];
	atomic_store_explicit(&ct->n, n - 1, memory_order_relaxed);
	atomic_store_explicit(&ct->hits, atomic_load_explicit(&ct->hits, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	return buf;
}

size_t hush_pool_trim(struct hush_pool *pool)
{
	if (pool == NULL) {
		return 0;
	}
	/* Every cache not emptied since this generation empties at its owner's next call;
	 * this thread's own empties now. */
	size_t bytes = 0;
	atomic_fetch_add_explicit(&pool->trim_gen, 1, memory_order_relaxed);
	for (unsigned k = 0; k < THREAD_SLOTS && pool->caching; k++) {
		if (thread_slots[k].pool == pool) {
			bytes += cache_flush(pool, thread_slots[k].cache);
		}
	}
	return bytes + trim_shared(pool);
}

static void pool_destroy(struct hush_pool *pool)
{
	/* Buffers released while hush_pool_free ran may have been retained after its trim. */
	trim_shared(pool);
	for (unsigned i = 0; i < pool->ntiers; i++) {
		hush__pool_tier_locks_destroy(&pool->tier[i], HUSH__POOL_SHARDS);
	}
	pthread_mutex_destroy(&pool->cb_lock);
	hush__free(pool->raw, pool->raw_size);
}

void hush_pool_free(struct hush_pool *pool)
{
	if (pool == NULL) {
		return;
	}
	/*
	 * Trim first: once CLOSING is set, the last release may destroy the pool at any
	 * moment, so this call must not touch it after the flag goes up unless it is the
	 * one that destroys it. A buffer retained between the trim and the flag is freed
	 * by the destroy; releases that see the flag keep nothing.
	 */
	for (unsigned k = 0; k < THREAD_SLOTS && pool->caching; k++) {
		if (thread_slots[k].pool == pool) {
			slot_detach(&thread_slots[k]); /* not closing yet: no destroy here */
		}
	}
	trim_shared(pool);
	uint64_t old =
	    atomic_fetch_or_explicit(&pool->word, HUSH__POOL_CLOSING, memory_order_acq_rel);
	/* Other threads holding a cache of this pool give it back at their next call. */
	atomic_fetch_add_explicit(&closing_epoch, 1, memory_order_release);
	if ((old & HUSH__POOL_HELD) == 0) {
		pool_destroy(pool);
	}
}

void hush_pool_set_available_cb(struct hush_pool *pool, hush_pool_available_fn fn, void *arg)
{
	if (pool == NULL) {
		return;
	}
	pthread_mutex_lock(&pool->cb_lock);
	pool->cb = fn;
	pool->cb_arg = arg;
	pthread_mutex_unlock(&pool->cb_lock);
}

/*
 * Reserves cap bytes of the budget. Without a budget this is one atomic add. With one,
 * a compare-and-swap loop never lets the count pass the budget, not even for a moment,
 * so a concurrent acquire is never refused because of a reservation about to be undone.
 *
 * A refusal is committed by a compare-and-swap that raises WAITING on the very value
 * that was judged too high. Every release after it therefore finds the flag (the first
 * one clears it and calls back), and a release before it changed the value, which makes
 * the swap fail and the budget be judged again: no wake-up can be lost.
 */
static int budget_reserve(struct hush_pool *pool, uint64_t cap)
{
	uint64_t budget = pool->budget;
	uint64_t old;

	if (budget == 0) {
		old = atomic_fetch_add_explicit(&pool->word, cap, memory_order_relaxed);
	} else {
		old = atomic_load_explicit(&pool->word, memory_order_relaxed);
		for (;;) {
			uint64_t bytes = old & HUSH__POOL_BYTES;
			if (cap > budget || bytes > budget - cap) {
				if (atomic_compare_exchange_weak_explicit(
					&pool->word, &old, old | HUSH__POOL_WAITING,
					memory_order_relaxed, memory_order_relaxed)) {
					return HUSH_ENOBUFS;
				}
				continue;
			}
			if (atomic_compare_exchange_weak_explicit(&pool->word, &old, old + cap,
								  memory_order_relaxed,
								  memory_order_relaxed)) {
				break;
			}
		}
	}
	max_u64(&pool->bytes_high_water, (old & HUSH__POOL_BYTES) + cap);
	uint64_t n = atomic_fetch_add_explicit(&pool->live, 1, memory_order_relaxed) + 1;
	max_u64(&pool->live_high_water, n);
	return 0;
}

/*
 * Undoes a reservation whose allocation failed. It does not call the available
 * callback: that would run application code from inside a failing acquire. A waiter,
 * if any, is woken by the next release.
 */
static void budget_unreserve(struct hush_pool *pool, uint64_t cap)
{
	atomic_fetch_sub_explicit(&pool->live, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&pool->word, cap, memory_order_relaxed);
}

/* What a release must do once it no longer touches the pool. */
struct after_return {
	bool destroy;		   /* it emptied a closing pool */
	bool closing;		   /* hush_pool_free has been called */
	hush_pool_available_fn fn; /* the callback to call, or NULL */
	void *arg;
};

/*
 * Gives cap bytes back. The caller holds a shard lock, which pins the pool: a destroy
 * must take every shard lock in its trim. Whoever empties a closing pool destroys it,
 * after dropping that lock.
 *
 * The refusal's compare-and-swap raised WAITING on the value it judged; a subtraction
 * after it sees the flag, one before it made that swap fail. Whoever then clears the
 * flag (fetch-and, so exactly one) owes the callback; a refusal that raised it again
 * meanwhile is answered by the same call, which comes after it.
 */
static struct after_return pool_return(struct hush_pool *pool, uint64_t cap)
{
	struct after_return r = {false, false, NULL, NULL};

	atomic_fetch_sub_explicit(&pool->live, 1, memory_order_relaxed);
	uint64_t old = atomic_fetch_sub_explicit(&pool->word, cap, memory_order_acq_rel);
	r.closing = (old & HUSH__POOL_CLOSING) != 0;
	r.destroy = r.closing && (old & HUSH__POOL_HELD) == cap;
	/* After hush_pool_free nobody may acquire, so nobody needs waking. */
	if (HUSH_UNLIKELY(old & HUSH__POOL_WAITING) && !r.closing) {
		old = atomic_fetch_and_explicit(&pool->word, ~HUSH__POOL_WAITING,
						memory_order_acq_rel);
		if (old & HUSH__POOL_WAITING) {
			pthread_mutex_lock(&pool->cb_lock);
			r.fn = pool->cb;
			r.arg = pool->cb_arg;
			pthread_mutex_unlock(&pool->cb_lock);
		}
	}
	return r;
}

static void after_return_run(struct hush_pool *pool, const struct after_return *r)
{
	if (r->destroy) {
		pool_destroy(pool);
	} else if (r->fn != NULL) {
		r->fn(r->arg);
	}
}

static struct hush_buf *buf_alloc(struct hush_pool *pool, size_t cap, uint8_t tier)
{
	struct hush_buf *buf = hush__alloc(sizeof(*buf) + cap);
	if (buf == NULL) {
		return NULL;
	}
	buf->pool = pool;
	buf->next = NULL;
	buf->capacity = cap;
	buf->tier = tier;
	buf->unused = 0;
	return buf;
}

/* Pops one buffer from a shard's list, or returns NULL when it is empty. */
static struct hush_buf *shard_pop(struct hush__pool_shard *sh)
{
	pthread_mutex_lock(&sh->lock);
	struct hush_buf *buf = sh->head;
	if (buf != NULL) {
		sh->head = buf->next;
		sh->count--;
		sh->hits++;
	}
	pthread_mutex_unlock(&sh->lock);
	return buf;
}

/*
 * Takes an idle buffer of tier i: from the thread's own shard, else (when the tier's
 * state says some shard holds one) from the others in turn.
 */
static struct hush_buf *tier_take(struct hush_pool *pool, unsigned i)
{
	struct hush__pool_tier *t = &pool->tier[i];
	unsigned own = my_shard();
	struct hush_buf *buf = shard_pop(&t->shard[own]);

	if (buf == NULL &&
	    HUSH__TIER_KEPT(atomic_load_explicit(&pool->state[i], memory_order_relaxed)) != 0) {
		for (unsigned k = 1; k < HUSH__POOL_SHARDS && buf == NULL; k++) {
			buf = shard_pop(&t->shard[(own + k) & (HUSH__POOL_SHARDS - 1)]);
		}
	}
	return buf;
}

/* Puts back a buffer just taken, for an acquire the budget refused. Rare. */
static void tier_untake(struct hush__pool_tier *t, struct hush_buf *buf)
{
	struct hush__pool_shard *sh = &t->shard[my_shard()];

	pthread_mutex_lock(&sh->lock);
	buf->next = sh->head;
	sh->head = buf;
	sh->count++;
	sh->hits--;
	pthread_mutex_unlock(&sh->lock);
}

static int acquire_oversize(struct hush_pool *pool, size_t min_size, struct hush_buf **out)
{
	struct hush__pool_oversize *o = &pool->oversize;

	if (min_size >= HUSH__POOL_MAX_REQUEST) {
		atomic_fetch_add_explicit(&o->failures, 1, memory_order_relaxed);
		return HUSH_ENOMEM;
	}
	if (budget_reserve(pool, min_size) < 0) {
		atomic_fetch_add_explicit(&o->failures, 1, memory_order_relaxed);
		return HUSH_ENOBUFS;
	}
	struct hush_buf *buf = buf_alloc(pool, min_size, HUSH__POOL_OVERSIZE);
	if (buf == NULL) {
		budget_unreserve(pool, min_size);
		atomic_fetch_add_explicit(&o->failures, 1, memory_order_relaxed);
		return HUSH_ENOMEM;
	}
	atomic_init(&buf->refs, 1);
	buf->magic = HUSH__BUF_LIVE;
	atomic_fetch_add_explicit(&o->acquisitions, 1, memory_order_relaxed);
	uint64_t n = atomic_fetch_add_explicit(&o->in_use, 1, memory_order_relaxed) + 1;
	max_u64(&o->high_water, n);
	uint64_t b = atomic_fetch_add_explicit(&o->bytes_in_use, min_size, memory_order_relaxed);
	max_u64(&o->bytes_high_water, b + min_size);
	*out = buf;
	return 0;
}

int hush_pool_acquire(struct hush_pool *pool, size_t min_size, struct hush_buf **out)
{
	HUSH_ENSURE(pool != NULL && out != NULL, HUSH_EINVAL);

	/* At most eight tiers: a linear scan beats anything cleverer. */
	unsigned i = 0;
	while (i < pool->ntiers && pool->tier[i].size < min_size) {
		i++;
	}
	if (HUSH_UNLIKELY(i == pool->ntiers)) {
		return acquire_oversize(pool, min_size, out);
	}

	struct hush__pool_tier *t = &pool->tier[i];
	size_t cap = t->size;
	if (HUSH_LIKELY(pool->caching) && t->cache_cap != 0) {
		/* Already counted as drawn: nothing shared to update. */
		struct hush_buf *buf = cache_pop(pool, i);
		if (buf != NULL) {
			HUSH_UNPOISON(buf->data, cap);
			if (HUSH_UNLIKELY(buf->magic != HUSH__BUF_IDLE)) {
				buf_fatal(buf,
					  "pool cache corrupted: idle buffer header overwritten");
			}
			buf->next = NULL;
			buf->magic = HUSH__BUF_LIVE;
			atomic_store_explicit(&buf->refs, 1, memory_order_relaxed);
			*out = buf;
			return 0;
		}
	}
	/*
	 * Take the buffer first, then do every shared update together (budget, count,
	 * tier state): the line that holds them then moves between cores once per call.
	 */
	struct hush_buf *buf = tier_take(pool, i);
	if (HUSH_UNLIKELY(budget_reserve(pool, cap) < 0)) {
		if (buf != NULL) {
			tier_untake(t, buf);
		}
		atomic_fetch_add_explicit(&t->failures, 1, memory_order_relaxed);
		return HUSH_ENOBUFS;
	}
	uint64_t state;
	if (HUSH_LIKELY(buf != NULL)) {
		/* One more out, one fewer kept, in one operation. */
		state = atomic_fetch_add_explicit(&pool->state[i],
						  HUSH__TIER_ONE_OUT - HUSH__TIER_ONE_KEPT,
						  memory_order_relaxed);
		HUSH_UNPOISON(buf->data, cap);
		if (HUSH_UNLIKELY(buf->magic != HUSH__BUF_IDLE)) {
			buf_fatal(buf, "pool free list corrupted: idle buffer header overwritten");
		}
	} else {
		buf = buf_alloc(pool, cap, (uint8_t)i);
		if (buf == NULL) {
			budget_unreserve(pool, cap);
			atomic_fetch_add_explicit(&t->failures, 1, memory_order_relaxed);
			return HUSH_ENOMEM;
		}
		atomic_fetch_add_explicit(&t->misses, 1, memory_order_relaxed);
		state = atomic_fetch_add_explicit(&pool->state[i], HUSH__TIER_ONE_OUT,
						  memory_order_relaxed);
	}
	max_u64(&pool->tier_high_water[i], HUSH__TIER_OUT(state) + 1);
	buf->next = NULL;
	buf->magic = HUSH__BUF_LIVE;
	atomic_store_explicit(&buf->refs, 1, memory_order_relaxed);
	*out = buf;
	return 0;
}

uint8_t *hush_buf_data(const struct hush_buf *buf)
{
	return buf != NULL ? (uint8_t *)buf->data : NULL;
}

size_t hush_buf_capacity(const struct hush_buf *buf)
{
	return buf != NULL ? buf->capacity : 0;
}

void hush_buf_ref(struct hush_buf *buf)
{
	if (buf == NULL) {
		return;
	}
	if (HUSH_UNLIKELY(buf->magic != HUSH__BUF_LIVE)) {
		buf_fatal(buf, "hush_buf_ref on a buffer that is not out (already released?)");
	}
	uint32_t old = atomic_fetch_add_explicit(&buf->refs, 1, memory_order_relaxed);
	if (HUSH_UNLIKELY(old == 0 || old == UINT32_MAX)) {
		buf_fatal(buf, "hush_buf_ref: reference count was zero or overflowed");
	}
}

/*
 * Drops the caller's reference. Returns true when it was the last one. The common
 * case, a single owner, needs no read-modify-write: holding the only reference, the
 * caller is the only one who could add another.
 */
static inline bool buf_unref(struct hush_buf *buf)
{
	uint32_t refs = atomic_load_explicit(&buf->refs, memory_order_acquire);
	if (HUSH_LIKELY(refs == 1)) {
		atomic_store_explicit(&buf->refs, 0, memory_order_relaxed);
		return true;
	}
	if (HUSH_UNLIKELY(refs == 0)) {
		buf_fatal(buf, "hush_buf_release: reference count already zero (double release)");
	}
	refs = atomic_fetch_sub_explicit(&buf->refs, 1, memory_order_acq_rel);
	if (HUSH_UNLIKELY(refs == 0)) {
		buf_fatal(buf, "hush_buf_release: reference count already zero (double release)");
	}
	return refs == 1;
}

/*
 * Counts the buffer back in and claims a place under the retention cap in the same
 * operation. Returns true when the buffer is to be kept. An add, not a compare-and-swap
 * loop: under contention every failed swap is one more transfer of the cache line. A
 * tier at its cap pays a second add to give the claim back (it frees a buffer anyway).
 */
static bool tier_count_back(struct hush_pool *pool, unsigned i)
{
	uint64_t old = atomic_fetch_add_explicit(
	    &pool->state[i], HUSH__TIER_ONE_KEPT - HUSH__TIER_ONE_OUT, memory_order_relaxed);
	if (HUSH_LIKELY(HUSH__TIER_KEPT(old) < pool->tier[i].retain)) {
		return true;
	}
	atomic_fetch_sub_explicit(&pool->state[i], HUSH__TIER_ONE_KEPT, memory_order_relaxed);
	return false;
}

/*
 * A tier buffer's last release; returns true when the tier kept it. It holds the thread's own shard
 * lock from the tier's count to the push, so that the shared counters move back to back and the
 * pool cannot be destroyed under it: the destroy's trim must take that lock too.
 */
static bool release_to_tier(struct hush_pool *pool, struct hush_buf *buf)
{
	unsigned i = buf->tier;
	size_t cap = buf->capacity;
	struct hush__pool_shard *sh = &pool->tier[i].shard[my_shard()];

	/* Poison first, outside the lock; a buffer that is freed is unpoisoned again. */
	HUSH_POISON(buf->data, cap);
	pthread_mutex_lock(&sh->lock);
	bool keep = tier_count_back(pool, i);
	struct after_return r = pool_return(pool, cap);
	if (HUSH_UNLIKELY(r.closing) && keep) {
		/* hush_pool_free has trimmed already: keep nothing more. */
		atomic_fetch_sub_explicit(&pool->state[i], HUSH__TIER_ONE_KEPT,
					  memory_order_relaxed);
		keep = false;
	}
	if (HUSH_LIKELY(keep)) {
		buf->magic = HUSH__BUF_IDLE;
		buf->next = sh->head;
		sh->head = buf;
		sh->count++;
	} else {
		atomic_fetch_add_explicit(&pool->frees, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&sh->lock);
	if (!keep) {
		buf_free(buf);
	}
	after_return_run(pool, &r);
	return keep;
}

void hush_buf_release(struct hush_buf *buf)
{
	if (buf == NULL) {
		return;
	}
	if (HUSH_UNLIKELY(buf->magic != HUSH__BUF_LIVE)) {
		buf_fatal(buf, "hush_buf_release on a buffer that is not out (double release?)");
	}
	if (!buf_unref(buf)) {
		return;
	}

	struct hush_pool *pool = buf->pool;
	size_t cap = buf->capacity;
	if (pool->flags & HUSH_POOL_WIPE) {
		OPENSSL_cleanse(buf->data, cap);
	}
	if (HUSH_LIKELY(buf->tier != HUSH__POOL_OVERSIZE)) {
		if (HUSH_LIKELY(pool->caching) && cache_push(pool, buf)) {
			return;
		}
		release_to_tier(pool, buf);
		return;
	}
	struct hush__pool_oversize *o = &pool->oversize;
	atomic_fetch_sub_explicit(&o->in_use, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&o->bytes_in_use, cap, memory_order_relaxed);
	buf_destroy(pool, buf);
	/* Any shard lock pins the pool for pool_return; take this thread's of tier 0. */
	struct hush__pool_shard *sh = &pool->tier[0].shard[my_shard()];
	pthread_mutex_lock(&sh->lock);
	struct after_return r = pool_return(pool, cap);
	pthread_mutex_unlock(&sh->lock);
	after_return_run(pool, &r);
}

/* Fills tier i's row, thread caches merged in; returns the buffers in those caches. */
static uint64_t fill_tier_row(struct hush_pool_tier_stats *row, struct hush_pool *pool, unsigned i)
{
	struct hush__pool_tier *t = &pool->tier[i];
	uint64_t retained = 0;
	uint64_t hits = 0;
	uint64_t cached = 0;

	for (unsigned k = 0; k < HUSH__POOL_CACHES; k++) {
		struct hush__pool_cache_tier *ct = &pool->cache[k].tier[i];
		cached += atomic_load_explicit(&ct->n, memory_order_relaxed);
		hits += atomic_load_explicit(&ct->hits, memory_order_relaxed);
	}

	for (unsigned s = 0; s < HUSH__POOL_SHARDS; s++) {
		struct hush__pool_shard *sh = &t->shard[s];
		pthread_mutex_lock(&sh->lock);
		retained += sh->count;
		hits += sh->hits;
		pthread_mutex_unlock(&sh->lock);
	}
	/* Cached buffers count as out in the tier's state: they are idle, not in use. */
	uint64_t out = HUSH__TIER_OUT(atomic_load_explicit(&pool->state[i], memory_order_relaxed));
	retained += cached;
	row->size = t->size;
	row->in_use = out > cached ? out - cached : 0;
	row->retained = retained;
	row->high_water = atomic_load_explicit(&pool->tier_high_water[i], memory_order_relaxed);
	row->misses = atomic_load_explicit(&t->misses, memory_order_relaxed);
	row->acquisitions = hits + row->misses;
	row->failures = atomic_load_explicit(&t->failures, memory_order_relaxed);
	row->bytes_in_use = row->in_use * t->size;
	row->bytes_retained = retained * t->size;
	row->bytes_high_water = row->high_water * t->size;
	return cached;
}

void hush_pool_stats(const struct hush_pool *cpool, struct hush_pool_stats *out)
{
	/* The locks and atomics are not part of the pool's logical state. */
	struct hush_pool *pool = (struct hush_pool *)cpool;
	if (out == NULL) {
		return;
	}
	if (pool == NULL) {
		memset(out, 0, sizeof(*out));
		return;
	}
	struct hush_pool_tier_stats *tot = &out->total;
	struct hush__pool_oversize *o = &pool->oversize;

	memset(out, 0, sizeof(*out));
	out->ntiers = pool->ntiers;
	out->budget = pool->budget;
	uint64_t cached_bytes = 0;
	for (unsigned i = 0; i < pool->ntiers; i++) {
		struct hush_pool_tier_stats *row = &out->tier[i];
		cached_bytes += fill_tier_row(row, pool, i) * pool->tier[i].size;
		tot->in_use += row->in_use;
		tot->retained += row->retained;
		tot->acquisitions += row->acquisitions;
		tot->misses += row->misses;
		tot->failures += row->failures;
		tot->bytes_retained += row->bytes_retained;
	}

	/* Every oversize acquire calls the allocator, so its misses are its acquisitions. */
	out->oversize.in_use = atomic_load_explicit(&o->in_use, memory_order_relaxed);
	out->oversize.high_water = atomic_load_explicit(&o->high_water, memory_order_relaxed);
	out->oversize.acquisitions = atomic_load_explicit(&o->acquisitions, memory_order_relaxed);
	out->oversize.misses = out->oversize.acquisitions;
	out->oversize.failures = atomic_load_explicit(&o->failures, memory_order_relaxed);
	out->oversize.bytes_in_use = atomic_load_explicit(&o->bytes_in_use, memory_order_relaxed);
	out->oversize.bytes_high_water =
	    atomic_load_explicit(&o->bytes_high_water, memory_order_relaxed);

	tot->in_use += out->oversize.in_use;
	tot->acquisitions += out->oversize.acquisitions;
	tot->misses += out->oversize.misses;
	tot->failures += out->oversize.failures;
	/* Tiers and oversize together, from the one counter the budget uses. */
	uint64_t drawn = atomic_load_explicit(&pool->word, memory_order_relaxed) & HUSH__POOL_BYTES;
	tot->bytes_in_use = drawn > cached_bytes ? drawn - cached_bytes : 0;
	tot->high_water = atomic_load_explicit(&pool->live_high_water, memory_order_relaxed);
	tot->bytes_high_water = atomic_load_explicit(&pool->bytes_high_water, memory_order_relaxed);

	out->allocator_calls = tot->misses;
	out->allocator_frees = atomic_load_explicit(&pool->frees, memory_order_relaxed);
}
