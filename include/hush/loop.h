/*
 * hush/loop.h: hush's state for one libevent event_base.
 *
 * Every hush connection, listener and socket bufferevent belongs to a hush_loop, made
 * once per event_base, next to it. It holds what connections share while they move
 * bytes: the list of connections waiting to flush coalesced writes, a cache of cipher
 * contexts lent to active connections, and the wake-up used when pool buffers come back
 * after the pool's budget ran out.
 *
 *     struct event_base *base = event_base_new();
 *     struct hush_pool *pool;   hush_pool_new(&pool, NULL);        (hush/pool.h)
 *     struct hush_loop *loop;   hush_loop_new(&loop, base, pool);
 *     ... connections (hush/conn.h), listeners, bufferevents ...
 *     hush_loop_free(loop); event_base_free(base); hush_pool_free(pool);
 *
 * Threads: a loop, and everything on it, is used from the thread that runs its base.
 * For several threads, give each its own base and loop; they may share one pool.
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
 * Creates the loop of base, borrowing buffers from pool. base and pool are borrowed,
 * not owned, and must outlive the loop. For the budget wake-up to work across threads,
 * call evthread_use_pthreads() before creating the base (libevent_pthreads).
 * Returns 0, HUSH_EINVAL or HUSH_ENOMEM; *out untouched on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_loop_new(struct hush_loop **out, struct event_base *base,
					      struct hush_pool *pool);

/*
 * Frees the loop. NULL is a no-op. Every hush_conn and listener on it must have been
 * freed first (hush_conn_free()). Hush socket bufferevents: it may come right after the
 * last bufferevent_free(), with no turn of the loop between, when those frees were made
 * on the loop's thread; a bufferevent freed from another thread is finished by the
 * loop's thread, so run the loop once (event_base_loop(base, EVLOOP_NONBLOCK)) first.
 */
HUSH_EXTERN void hush_loop_free(struct hush_loop *loop);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_LOOP_H */
