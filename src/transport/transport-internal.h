/* Internal interfaces between the transport's files. Never installed. */
#ifndef HUSH_TRANSPORT_INTERNAL_H
#define HUSH_TRANSPORT_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/evp.h>

#include <hush/conn.h>

#include "common/common-internal.h"

/* A growable array of the items (connections) a loop runs work for. Entries are
 * NULLed, never removed, while the loop walks it, so an item forgotten during the walk
 * is skipped. An item may keep its index in *slot (kept right when the array is
 * compacted), so that forgetting it costs one look, not a walk of the array. */
struct conn_vec_ent {
	void *item;
	uint32_t *slot; /* NULL: the item keeps no index */
};

struct conn_vec {
	struct conn_vec_ent *v;
	size_t n;
	size_t cap;
};

/*
 * What the loop runs for the items on its lists: on_pending for each item on the
 * pending list at the end of a loop iteration, on_wake for each starved item once pool
 * buffers came back. The connections (conn.c) give theirs when they join the loop, so
 * the loop needs to know nothing of them.
 */
struct hush__loop_ops {
	void (*on_pending)(void *item);
	void (*on_wake)(void *item);
};

/* Cipher contexts kept for lending; beyond this many, returned ones are freed. */
#define HUSH_LOOP_CTX_CACHE 32

struct hush_loop {
	struct event_base *base;
	struct hush_pool *pool;
	const struct hush__loop_ops *ops;
	/* Activated whenever a connection needs attention at the end of this loop
	 * iteration: coalesced writes to flush, a deferred OPEN or SHUTDOWN to report. */
	struct event *pending_ev;
	struct conn_vec pending;
	/* Connections whose reading stopped because the pool's budget ran out. wake_ev is
	 * activated from whatever thread releases a buffer (see pool_available). */
	struct event *wake_ev;
	struct conn_vec starved;
	atomic_bool has_starved;
	/* Cipher contexts lent to connections while they move bytes. */
	EVP_CIPHER_CTX *ctx_cache[HUSH_LOOP_CTX_CACHE];
	unsigned nctx;
	/* Distinct connection configurations, shared by the connections that use them. */
	struct conn_cfg *cfgs;
	unsigned nconns;
	/* The connection whose OPEN is being reported, and its handshake result, for
	 * hush_conn_handshake_result(). */
	const struct hush_conn *open_conn;
	const struct hush_handshake_result *open_res;
	struct hush_loop *next_loop; /* process-wide registry, for pool wake-ups */
	/* The thread that runs the base: the creator's, then whichever runs the events
	 * of guarded connections (conn.c, guarded()). Read by other threads: atomic. */
	_Atomic unsigned long thread;
};

/* A connection configuration and callback table, interned per loop so that each
 * connection holds one pointer: applications give most connections the same ones. */
struct conn_cfg {
	struct hush_conn_config c;
	struct hush_conn_callbacks cb;
	/* Called with enter true before the loop runs anything of a connection and false
	 * after, with the connection's arg: the hush bufferevent takes its lock there, so
	 * other threads holding it see the connection still. NULL for none. */
	void (*guard)(void *arg, bool enter);
	unsigned refs;
	struct conn_cfg *next;
};

int hush__loop_cfg_get(struct hush_loop *loop, const struct hush_conn_config *cfg,
		       const struct hush_conn_callbacks *cb, void (*guard)(void *, bool),
		       struct conn_cfg **out);
void hush__loop_cfg_put(struct hush_loop *loop, struct conn_cfg *cfg);

/* Puts item on the pending list, for loop->ops->on_pending at the end of this loop
 * iteration; the caller keeps it from being added twice. Returns 0 or HUSH_ENOMEM. */
HUSH_MUST_CHECK int hush__loop_add_pending(struct hush_loop *loop, void *item);
/* Puts item on the starved list, for loop->ops->on_wake once pool buffers come back;
 * the loop keeps item's index in the list in *slot until then. Returns 0 or
 * HUSH_ENOMEM. */
HUSH_MUST_CHECK int hush__loop_add_starved(struct hush_loop *loop, void *item, uint32_t *slot);
/* Forgets item in both lists (a connection being freed); slot is the one it was
 * starved with. Costs one look in the starved list, however long it is (a million
 * starved connections freed one by one must not take a million squared steps). */
void hush__loop_forget(struct hush_loop *loop, void *item, uint32_t *slot);

/* Lends a cipher context (NULL when none can be made) and takes one back. */
EVP_CIPHER_CTX *hush__loop_ctx_borrow(struct hush_loop *loop);
void hush__loop_ctx_return(struct hush_loop *loop, EVP_CIPHER_CTX *ctx);
/* Lends rec (holding none) its two cipher contexts; HUSH_ENOMEM, lending none, when
 * they cannot be made. hush__loop_take_ciphers() takes them back. */
struct hush_record;
HUSH_MUST_CHECK int hush__loop_lend_ciphers(struct hush_loop *loop, struct hush_record *rec);
void hush__loop_take_ciphers(struct hush_loop *loop, struct hush_record *rec);

/*
 * Watches a connection's handshake (the listener's admission record embeds one): the
 * connection calls progressed when the peer's first handshake message is in and, once,
 * ended when the handshake ends, whichever way, from inside its own code (never from a
 * callback of the application's). A struct of its own so that the connection knows
 * nothing of who watches.
 */
struct hush__hs_watch;
struct hush__hs_watch_ops {
	void (*progressed)(struct hush__hs_watch *w);
	void (*ended)(struct hush__hs_watch *w);
};
struct hush__hs_watch {
	const struct hush__hs_watch_ops *ops;
};

/* hush_conn_start_handshake(), watched by watch (may be NULL). */
struct hush_handshake_config;
HUSH_MUST_CHECK int hush__conn_start_handshake_for(struct hush_conn *c,
						   const struct hush_handshake_config *hcfg,
						   enum hush_side side, struct hush__hs_watch *watch);
/* Fails a connection whose handshake is in progress with err (eviction, deadline),
 * which ends the handshake at once (its watcher's ended); reported to the application
 * from the loop as usual. Returns false, doing nothing, otherwise. */
bool hush__conn_abort_handshake(struct hush_conn *c, int err);

/* Holds a handshake (the socket is not read while it runs: a disabled hush bufferevent
 * does not advance its handshake) or lets it go on. Nothing else changes: its deadline
 * runs on. */
void hush__conn_hold_handshake(struct hush_conn *c, bool hold);

/* hush_conn_new() with a guard (struct conn_cfg). */
HUSH_MUST_CHECK int hush__conn_new_guarded(struct hush_conn **out, struct hush_loop *loop, int fd,
					   const struct hush_conn_config *cfg,
					   const struct hush_conn_callbacks *cb, void *arg,
					   void (*guard)(void *, bool));

/* sizeof(struct hush_conn), for the idle-memory breakdown. */
size_t hush__conn_size(void);
/* sizeof(struct hush__conn_hs), the handshake phase's state, for the test that checks it is
 * wiped before its memory goes back. */
size_t hush__conn_hs_size(void);

#endif /* HUSH_TRANSPORT_INTERNAL_H */
