/*
 * hush/loop.h: the state hush keeps per libevent event_base, which every hush
 * connection and every hush socket bufferevent of that base uses (hush/conn.h,
 * hush/bufferevent.h). Buffers come from a pool (hush/pool.h), shared by the loops of
 * every thread.
 *
 * Threads: one struct hush_loop per event_base, used only from the thread that runs
 * that base.
 */
#ifndef HUSH_LOOP_H
#define HUSH_LOOP_H

#include <hush/common.h>
#include <hush/pool.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;
struct hush_loop;

/*
 * Creates the per-event_base state hush keeps: the list of connections waiting to flush
 * coalesced writes, a cache of cipher contexts lent to active connections, and the
 * wake-up used when pool buffers come back after the pool's budget ran out. pool is
 * borrowed, not owned, and must outlive the loop; base likewise.
 * For the budget wake-up to work across threads, call evthread_use_pthreads() before
 * creating the base (libevent_pthreads).
 * Returns 0, HUSH_EINVAL or HUSH_ENOMEM; *out untouched on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_loop_new(struct hush_loop **out, struct event_base *base,
					      struct hush_pool *pool);

/*
 * Frees the loop. NULL is a no-op. Every hush_conn on it must have been freed first
 * (hush_conn_free()). Hush socket bufferevents: it may come right after the last
 * bufferevent_free(), with no turn of the loop between, when those frees were made on
 * the loop's thread; a bufferevent freed from another thread is finished by the
 * loop's thread, so run the loop once (event_base_loop(base, EVLOOP_NONBLOCK)) first.
 */
HUSH_EXTERN void hush_loop_free(struct hush_loop *loop);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_LOOP_H */
