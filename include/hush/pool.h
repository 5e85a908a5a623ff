/*
 * hush/pool.h: the tiered buffer pool.
 *
 * Connections borrow buffers from a pool only while they have bytes to move and give
 * them back at once, so a server holding many idle connections holds few buffers. The
 * pool keeps a few size classes (tiers); a request is served by the smallest tier that
 * fits, and a buffer always returns to the tier of its real capacity. A request larger
 * than the largest tier gets a direct allocation that is freed on release and never
 * retained.
 *
 * Threads: one pool may be shared by any number of threads (typically one event loop
 * per thread). Every function here is thread-safe unless it says otherwise. A buffer has
 * one owner at a time; its references (hush_buf_ref) may be dropped from any thread.
 *
 * Thread caches: a pool without a budget keeps, for each thread that acquires from it,
 * a small cache in front of the shared tiers, so that a thread's acquire after its own
 * release takes no lock. Per tier and thread it holds at most 4 buffers, 128 KiB of
 * capacity and the tier's retention cap (with the defaults: 4, 4, 4, 3, 2 and 0
 * buffers, about 307 KiB per thread at the most). These idle buffers come on top of
 * tier_retain and count as retained. A thread's caches go back to the shared tiers
 * when it exits, and when it calls hush_pool_free or hush_pool_trim on the pool (the
 * trim empties other threads' caches at their next call on the pool). Up to 32
 * threads per pool, and 4 pools per thread, get a cache; others use the shared tiers.
 * A pool with a budget has no caches (see hush_pool_config.budget).
 */
#ifndef HUSH_POOL_H
#define HUSH_POOL_H

#include <hush/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* At most this many tiers. */
#define HUSH_POOL_MAX_TIERS 8

/*
 * Room the default tiers add to a payload size so that a whole record fits: the 8-byte
 * record header, the 16-byte tag, and slack to keep the next tier's data aligned.
 */
#define HUSH_POOL_HEADROOM 64

/* Flags for hush_pool_config.flags. */
enum {
	/* Wipe every buffer (its whole capacity) with OPENSSL_cleanse when it is released,
	 * for buffers that held plaintext. Costs one pass over the whole capacity on every
	 * last release, however little was written: on x86-64 OPENSSL_cleanse stores 8
	 * bytes at a time, about 0.6 us for a 16 KiB buffer, ten times a plain release
	 * (bench-pool, variant hush-pool-wipe). */
	HUSH_POOL_WIPE = 1u << 0,
};

struct hush_pool_config {
	/* Number of tiers in use, 1..HUSH_POOL_MAX_TIERS. */
	unsigned ntiers;
	/* Usable bytes of each tier's buffers; strictly increasing. */
	size_t tier_size[HUSH_POOL_MAX_TIERS];
	/* Idle buffers each tier keeps for reuse on its shared lists; beyond this a
	 * released buffer is freed. Thread caches keep up to min(4, this) more per thread
	 * (see "Thread caches" above); 0 keeps nothing anywhere. */
	size_t tier_retain[HUSH_POOL_MAX_TIERS];
	/* Most bytes (sum of capacities, oversize included) handed out at once; 0 means no
	 * limit. Retained idle buffers do not count. A pool with a budget has no thread
	 * caches, so the budget bounds exactly what callers hold and idle memory stays
	 * within tier_retain. Values of 2^48 and above act as 2^48. */
	size_t budget;
	/* HUSH_POOL_* flags. */
	unsigned flags;
};

/*
 * Fills cfg with the defaults: six tiers sized for ALTS records (see docs/DESIGN.md):
 *   256 B             small control messages and the 4-byte length of a new frame
 *   4 KiB + headroom  one 4 KiB frame, grpc-go's default
 *   16 KiB + headroom one 16 KiB frame, hush's default send frame and gRPC C++'s
 *   32 KiB + 512      two 16 KiB frames, the read size grpc-go settled on
 *   64 KiB            bulk reads and writes
 *   1 MiB + headroom  the largest frame a peer may send (receive limit 1 MiB)
 * no budget, no flags.
 */
HUSH_EXTERN void hush_pool_config_init(struct hush_pool_config *cfg);

struct hush_pool;
struct hush_buf;

/*
 * Creates a pool. cfg may be NULL for the defaults; it is copied.
 * Returns 0, HUSH_EINVAL (out NULL, or cfg malformed: tier count, sizes not strictly
 * increasing, zero or 2^48 and above, unknown flags) or HUSH_ENOMEM. On failure *out is
 * left untouched. Retention caps above UINT32_MAX act as UINT32_MAX.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_pool_new(struct hush_pool **out,
					      const struct hush_pool_config *cfg);

/*
 * Releases the pool. Buffers still out keep it alive: their memory and the pool's go
 * back to the allocator when the last of them is released. So do other threads' caches
 * of it: each goes back when its thread exits or next acquires or releases from any
 * pool. NULL is a no-op. Do not acquire from the pool after this call.
 */
HUSH_EXTERN void hush_pool_free(struct hush_pool *pool);

/*
 * Borrows a buffer of at least min_size usable bytes (0 is allowed and gives the
 * smallest tier), holding one reference, owned by the caller.
 * Returns 0, HUSH_ENOBUFS (the budget would be exceeded; nothing was allocated),
 * HUSH_ENOMEM or HUSH_EINVAL (pool or out NULL). On failure *out is left untouched.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_pool_acquire(struct hush_pool *pool, size_t min_size,
						  struct hush_buf **out);

/* The buffer's first usable byte; valid while the caller holds a reference. */
HUSH_EXTERN uint8_t *hush_buf_data(const struct hush_buf *buf);

/* The buffer's usable bytes: its tier's size, or the exact size of an oversize one. */
HUSH_EXTERN size_t hush_buf_capacity(const struct hush_buf *buf);

/* Adds a reference, for a second owner (an evbuffer, another thread). */
HUSH_EXTERN void hush_buf_ref(struct hush_buf *buf);

/*
 * Drops a reference; the last one returns the buffer to its tier (or frees it when the
 * tier is full or the buffer is oversize). NULL is a no-op. The data must not be
 * touched after the caller's last reference is dropped.
 */
HUSH_EXTERN void hush_buf_release(struct hush_buf *buf);

/*
 * Frees every retained idle buffer: those on the shared lists and those in the calling
 * thread's cache. Another thread's cache is emptied into the shared lists at that
 * thread's next acquire or release on this pool (trim again then to free them). Returns
 * the number of bytes (capacities) given back to the allocator. Buffers in use are not
 * affected.
 */
HUSH_EXTERN size_t hush_pool_trim(struct hush_pool *pool);

/*
 * Called, from the thread that released a buffer and outside any pool lock, once after
 * an acquire was refused with HUSH_ENOBUFS and bytes in use then fell. The transport
 * uses it to resume reading paused connections. One callback per pool; NULL clears it.
 * Only a release calls it (an acquire that fails with HUSH_ENOMEM gives its reservation
 * back silently), and none does after hush_pool_free.
 */
typedef void (*hush_pool_available_fn)(void *arg);
HUSH_EXTERN void hush_pool_set_available_cb(struct hush_pool *pool, hush_pool_available_fn fn,
					    void *arg);

struct hush_pool_tier_stats {
	size_t size;              /* usable bytes per buffer; 0 for the oversize and total rows */
	uint64_t in_use;          /* buffers out now (in callers' hands) */
	uint64_t retained;        /* idle buffers kept for reuse now, thread caches included */
	uint64_t high_water;      /* most buffers out at once, cached ones counted as out */
	uint64_t acquisitions;    /* successful acquires served */
	uint64_t misses;          /* acquisitions that had to call the allocator */
	uint64_t failures;        /* acquires refused (budget) or failed (allocator) */
	uint64_t bytes_in_use;    /* capacity of the buffers out now */
	uint64_t bytes_retained;  /* capacity of the idle buffers kept now */
	uint64_t bytes_high_water;/* most bytes_in_use at once */
};

struct hush_pool_stats {
	unsigned ntiers;
	struct hush_pool_tier_stats tier[HUSH_POOL_MAX_TIERS];
	struct hush_pool_tier_stats oversize; /* direct allocations above the largest tier */
	struct hush_pool_tier_stats total;    /* sums; its high-water marks are pool-wide peaks */
	uint64_t budget;                      /* 0 = none */
	uint64_t allocator_calls;             /* buffer allocations made (misses + oversize) */
	uint64_t allocator_frees;             /* buffers given back to the allocator */
};

/*
 * Copies the statistics, the thread caches' counts merged in. Each counter is read
 * atomically; under concurrent use the set is a snapshot of moving values, exact when
 * the pool is quiet. The high-water marks are peaks of buffers drawn from the shared
 * tiers, so they may exceed the peak in callers' hands by what the thread caches held
 * then. Cheap: no lock is held longer than one list's counters.
 */
HUSH_EXTERN void hush_pool_stats(const struct hush_pool *pool, struct hush_pool_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_POOL_H */
