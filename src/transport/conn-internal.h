/*
 * A connection's state, shared by the state machine (conn.c) and the application's calls
 * on it (conn-api.c). The calls check their arguments and the state, then use the
 * machine's transitions declared here; conn.c uses nothing of conn-api.c's. Never
 * installed.
 */
#ifndef HUSH_TRANSPORT_CONN_INTERNAL_H
#define HUSH_TRANSPORT_CONN_INTERNAL_H

#include "transport/conn-handshake.h"
#include "transport/rbuf.h"
#include "transport/transport-internal.h"
#include "transport/wq.h"

enum conn_state {
	ST_NEW = 0,   /* created, no keys yet */
	ST_HANDSHAKE, /* a hush handshake runs (or finished, OPEN not yet reported) */
	ST_OPEN,      /* records flow */
	ST_FAILED,    /* error reported; only free is left */
};

/* Connection flags (struct hush_conn.flags). */
enum {
	F_PAUSED = 1u << 0,        /* the application paused reading */
	F_STARVED = 1u << 1,       /* reading waits for pool buffers */
	F_EOF = 1u << 2,           /* the peer's EOF was seen */
	F_WANT_WRITE = 1u << 3,    /* the socket refused bytes; wait for EV_WRITE */
	F_SHUT_REQ = 1u << 4,      /* hush_conn_shutdown() was called */
	F_SHUT_DONE = 1u << 5,     /* the write side is shut down */
	F_PENDING = 1u << 6,       /* on the loop's pending list */
	F_OPEN_REPORT = 1u << 7,   /* OPEN still to be reported */
	F_OVER_HIGH = 1u << 8,     /* queue passed the high watermark */
	F_FREEING = 1u << 9,       /* freed from inside a callback */
	F_RBUF_KEPT = 1u << 10,    /* the application kept the read buffer */
	F_IN_DATA = 1u << 11,      /* inside on_data */
	F_CIPHERS = 1u << 12,      /* the record context holds lent cipher contexts */
	F_ERR_REPORT = 1u << 13,   /* ERROR still to be reported */
	F_REPLAY = 1u << 14,       /* records already read wait for delivery (resume) */
	F_HS = 1u << 15,           /* hs (not rec) is live: a handshake runs */
	F_CLOSE_SIG = 1u << 16,    /* keyed by a hush handshake: the close record is used */
	F_IN_ENTRY = 1u << 17,     /* inside a loop entry that flushes before it returns */
	F_FLUSH_END = 1u << 18,    /* writes wait for the end of that entry */
	F_HS_HELD = 1u << 19,      /* the handshake reads nothing (a disabled bufferevent) */
};

struct hush_conn {
	struct hush_loop *loop;
	/* The record context once open; while F_HS is set, the handshake phase instead, so
	 * an established connection is no larger than one started with raw keys. */
	union {
		struct hush_record *rec;
		struct hush__conn_hs *hs;
	};
	const struct conn_cfg *cfg; /* configuration and callbacks, shared */
	void *arg;
	/* Bytes received and not yet used: the start of the next, incomplete record (or,
	 * in a handshake, records that followed its last message). No buffer whenever
	 * nothing is pending. */
	struct hush__rbuf rb;
	struct hush__wq wq;
	struct hush_conn_stats stats;
	int fd;
	int err;
	uint32_t flags;
	uint16_t depth;  /* callbacks on the stack; free is deferred while > 0 */
	uint8_t state;
	uint8_t interest; /* EV_READ / EV_WRITE the event is added with */
	/* Activity times (now_ms) for the read and write timeouts. */
	uint32_t last_read;
	uint32_t last_write;
	uint32_t partial_since; /* first byte of the partial record in rb, if any */
	uint32_t starved_slot;  /* index in the loop's starved list while F_STARVED */
	struct event ev;
};

/* Milliseconds of the loop's cached clock, modulo 2^32 (differences stay right). */
static inline uint32_t now_ms(struct hush_conn *c)
{
	struct timeval tv;
	event_base_gettimeofday_cached(c->loop->base, &tv);
	return (uint32_t)((uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u);
}

/* Callback guards: depth counts callbacks on the stack so a free from inside one is
 * carried out when the outermost returns. hush__conn_leave() says whether c is still alive. */
static inline void enter(struct hush_conn *c)
{
	c->depth++;
}

static inline bool dead(const struct hush_conn *c)
{
	return (c->flags & F_FREEING) != 0 || c->state == ST_FAILED;
}

static inline bool pinned(const struct hush_conn *c)
{
	return (c->cfg->c.flags & HUSH_CONN_PINNED) != 0;
}

/* What the loop runs for a connection on its lists (on_pending, on_wake). */
const struct hush__loop_ops *hush__conn_loop_ops(void);

/* Leaves a callback guard (enter()): carries out a free deferred to the outermost
 * one. Returns whether c is still alive. */
bool hush__conn_leave(struct hush_conn *c);
/* Puts c on the loop's pending list once (F_PENDING). Returns 0 or HUSH_ENOMEM. */
HUSH_MUST_CHECK int hush__conn_schedule(struct hush_conn *c);
/* Pinned mode: borrows the connection's read and write buffers for its life. Returns 0
 * or the pool's error, nothing borrowed. */
HUSH_MUST_CHECK int hush__conn_pin_buffers(struct hush_conn *c);
/* Borrows cipher contexts from the loop for c's record context unless it holds them
 * (or owns its own: pinned mode). Returns 0 or HUSH_ENOMEM, nothing borrowed. */
HUSH_MUST_CHECK int hush__conn_ciphers_attach(struct hush_conn *c);
/* Gives the lent cipher contexts back to the loop, if the record context holds them. */
void hush__conn_ciphers_detach(struct hush_conn *c);
/* Frees c and everything it holds (closing the socket if configured to). */
void hush__conn_destroy(struct hush_conn *c);
/* Fails c for good with err: stops its event, drops its buffers, reports err from the
 * loop. Idempotent. */
void hush__conn_fail(struct hush_conn *c, int err);
/* Adds c's event with the interest and timeout its state calls for. */
void hush__conn_update_interest(struct hush_conn *c);
/* Seals and sends what is queued; a failure fails c and is returned. */
int hush__conn_flush_queue(struct hush_conn *c);

#endif /* HUSH_TRANSPORT_CONN_INTERNAL_H */
