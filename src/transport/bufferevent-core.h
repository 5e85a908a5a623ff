/*
 * The machinery both flavours of hush bufferevents run on (bufferevent-core.c): the
 * state every hush bufferevent begins with, the one set of flags, the flavour's table,
 * and the core's calls. Both are bufferevent types of hush's own, built on libevent
 * 2.1's implementation interface (libevent-bev.h): the socket flavour
 * (bufferevent-sock.c) carries records over a hush_conn, the filter flavour
 * (bufferevent-filter.c) over an underlying bufferevent. Each keeps its state in its
 * own struct, which begins with struct hush__bev, which begins with libevent's part: a
 * bufferevent's state is found from the bufferevent itself, never looked up. The core
 * reaches a flavour only through its struct hush__bev_flavour. Never installed.
 */
#ifndef HUSH_BUFFEREVENT_CORE_H
#define HUSH_BUFFEREVENT_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/libevent-bev.h"

struct hush_bufferevent_config;
struct hush_handshake_config;
struct hush_buf;
struct hush_loop;

/* One set of flags for both flavours (struct hush__bev's flags). */
enum {
	HUSH__BEV_THREADSAFE = 1u << 0,  /* made with BEV_OPT_THREADSAFE, with a loop */
	HUSH__BEV_OPEN = 1u << 1,        /* records flow */
	HUSH__BEV_SHUT_REQ = 1u << 2,    /* a graceful close was asked for */
	HUSH__BEV_SHUT_SENT = 1u << 3,   /* the close was handed on (to the connection or
					  * to the underlying bufferevent) */
	HUSH__BEV_PUMPING = 1u << 4,     /* inside the flavour's pump: output callbacks
					  * only note progress */
	HUSH__BEV_WROTE = 1u << 5,       /* bytes moved since the last write callback */
	HUSH__BEV_WANT_READ = 1u << 6,   /* libevent has reading enabled and not suspended */
	HUSH__BEV_UNLINKED = 1u << 7,    /* freed from another thread: the loop's thread
					  * finishes */
	HUSH__BEV_START_WAIT = 1u << 8,  /* a handshake starts from the loop, once enabled */
	HUSH__BEV_SHUT_QUIET = 1u << 9,  /* asked by bufferevent_flush(BEV_FINISHED): no
					  * event */
	HUSH__BEV_EOF_WAIT = 1u << 10,   /* the end of the stream waits behind plaintext the
					  * application has not taken yet */
	HUSH__BEV_SHUT_TOLD = 1u << 11,  /* HUSH_BEV_EVENT_SHUTDOWN was reported */
	HUSH__BEV_SUSPENDED = 1u << 12,  /* the filter suspended its underlying's reading */
};

/* Plaintext the read high watermark held back: the rest of a record, in the pool
 * buffer it was opened in, entering the input as the application drains. */
struct hush__bev_held {
	struct hush_buf *buf; /* one reference, ours */
	const uint8_t *p;
	size_t len;
};

/* Where a flavour stands, for the timers: libevent's socket type runs its timeouts
 * whenever enabled while it has no socket, and not at all once its socket failed. */
enum hush__bev_link {
	HUSH__BEV_UNSET, /* no socket yet */
	HUSH__BEV_DEAD,  /* the transport failed or was let go */
	HUSH__BEV_LIVE,
};

struct hush__bev;

/*
 * A flavour: libevent's table of operations first (a bufferevent's be_ops points at
 * it; its enable is always the core's, which is how bufferevent.c tells hush's types
 * from others), then what the core
 * and the public calls ask of the flavour. Every hook runs on the loop's thread (or
 * the creating thread without BEV_OPT_THREADSAFE), with the bufferevent locked.
 */
struct hush__bev_flavour {
	struct hush__bev_ops ops;
	enum hush__bev_link (*link)(struct hush__bev *b);
	/* Bytes written that hush holds beyond the output evbuffer. */
	size_t (*queued)(struct hush__bev *b);
	/* Moves plaintext from the output evbuffer on (also carrying out a close asked
	 * for); then the write timer is the core's. */
	void (*pump)(struct hush__bev *b);
	/* Applies the reading state (HUSH__BEV_WANT_READ) to the transport: records already
	 * received are delivered when reading is wanted, now if from_loop (the loop called,
	 * not the application), else from the loop. */
	void (*apply_reading)(struct hush__bev *b, bool from_loop);
	/* Starts the handshake (HUSH__BEV_START_WAIT was set and the bufferevent is
	 * enabled). */
	void (*start)(struct hush__bev *b);
	/* The transport goes (the bufferevent failed): no more records either way. */
	void (*halt)(struct hush__bev *b);
};

/* libevent's table for a flavour: the operations both share, and its own. */
#define HUSH__BEV_OPS(type_, unlink_, destruct_, flush_, ctrl_)                               \
	{                                                                                     \
		.type = (type_), .mem_offset = 0, .enable = hush__bev_enable,                  \
		.disable = hush__bev_disable, .unlink = (unlink_), .destruct = (destruct_),    \
		.adj_timeouts = hush__bev_adj_timeouts, .flush = (flush_), .ctrl = (ctrl_),    \
	}

struct hush__bev {
	struct hush__bev_private p; /* first: libevent's part, holding struct bufferevent */
	struct hush_loop *loop;     /* NULL for a filter made with a pool only */
	const struct hush_handshake_config *hcfg; /* borrowed; NULL with raw keys */
	/* Raw keys: the key's copy, wiped and freed once spent (key_len != 0 until then).
	 * Afterwards, or with a handshake: plaintext over the read high watermark, or
	 * NULL. Records flow only once the key is spent, so the two never coexist and
	 * share their room (an idle bufferevent stays 8 bytes smaller). */
	union {
		uint8_t *key;
		struct hush__bev_held *held;
	} u;
	uint8_t *peer_key;          /* the peer's verified static key, once open (XX) */
	uint32_t key_len;
	uint32_t max_send_frame;
	uint32_t recv_limit;
	uint32_t hs_timeout_ms;
	size_t timer_queued;        /* pending bytes when the write timer was armed */
	int err;
	uint16_t flags;
	uint8_t rp;
	uint8_t side;
};

static inline struct hush__bev *hush__bev_of(struct bufferevent *bev)
{
	return (struct hush__bev *)(void *)bev;
}

static inline struct bufferevent *hush__bev_bev(struct hush__bev *b)
{
	return &b->p.u.bev;
}

/* b's flavour: libevent's be_ops points at the table that begins it (no field of ours
 * spent on it). */
static inline const struct hush__bev_flavour *hush__bev_fl(const struct hush__bev *b)
{
	return (const struct hush__bev_flavour *)(const void *)b->p.u.bev.be_ops;
}

/* Sets up the common part of a block from event_mm_calloc_() (zeroed) for flavour fl:
 * libevent's part, the timers, the output callback, the raw key's copy. Returns 0 or -1
 * (the block is the caller's to free with event_mm_free_() when libevent's part failed,
 * with bufferevent_free() otherwise: b->p is set up then). */
int hush__bev_init(struct hush__bev *b, struct event_base *base,
		   const struct hush__bev_flavour *fl, const struct hush_bufferevent_config *cfg,
		   int options, bool *libevent_ready);

/* Whether the calling thread is not the loop's, for a bufferevent that may be used from
 * any thread; and the hand-over of work to the loop's thread (EV_READ: the reading
 * state; EV_WRITE: writing, enabling, shutdown, a handshake to start). */
bool hush__bev_foreign(const struct hush__bev *b);
void hush__bev_hand_to_loop(struct hush__bev *b, short what);

/* The timers: ev_read and ev_write are hush's, armed as libevent's socket type arms its
 * events (see bufferevent-core.c). */
void hush__bev_arm_read_timer(struct hush__bev *b);
void hush__bev_arm_write_timer(struct hush__bev *b);
void hush__bev_arm_timers(struct hush__bev *b);
size_t hush__bev_pending_out(struct hush__bev *b);

/*
 * Whether b's handshake may read the peer's next message: while the application has
 * reading or writing enabled. A disabled bufferevent (libevent's regress_ssl
 * "socketpair_timeout") holds its handshake, before or during; enabling it again lets
 * the handshake go on. Reading alone is not the test: evhttp's client connects with
 * only EV_WRITE enabled and waits for CONNECTED before it enables reading.
 */
bool hush__bev_hs_may_advance(struct hush__bev *b);

/* The error that fails b (the first one stays), the transport halted, and the event
 * reported. */
void hush__bev_fail(struct hush__bev *b, int err, short what);

/* Plaintext: how much more the input takes under the read high watermark; and len
 * bytes at p handed to the input, up to the watermark, the rest held back (struct
 * hush__bev_held). buf is the pool buffer holding p with one reference that goes with
 * the call, or NULL: then p is copied whole, even past the watermark (there is nowhere
 * to hold the rest; callers pass NULL only when the pool refused a buffer). Returns 0
 * (all in), 1 (some held back: take no more records until the flavour's apply_reading
 * runs again), or HUSH_ENOMEM (b failed). */
size_t hush__bev_input_room(struct hush__bev *b);
int hush__bev_input(struct hush__bev *b, const uint8_t *p, size_t len, struct hush_buf *buf);
/* Plaintext short enough to copy into the input rather than pin a pool buffer. */
bool hush__bev_input_copies(size_t len);
/* Whether plaintext waits behind the watermark. */
bool hush__bev_holding(const struct hush__bev *b);
void hush__bev_drop_held(struct hush__bev *b);
void hush__bev_wipe_key(struct hush__bev *b);

/*
 * Runs the write callback once everything written has left hush: at once from the
 * loop (options 0), or deferred to the loop (BEV_OPT_DEFER_CALLBACKS) from inside one
 * of the application's calls, as bufferevent_openssl defers the write callback of the
 * bytes bufferevent_enable() moved. A write callback run inside bufferevent_enable()
 * would act before the caller's next line: libevent's regress_ssl ping-pong enables
 * writing, then disables reading, and its write callback, run first, enabled reading
 * that the caller then disabled for good.
 */
void hush__bev_maybe_writecb(struct hush__bev *b, int options);

/* The peer's static key, kept at OPEN; and the public call's work. */
int hush__bev_keep_peer_key(struct hush__bev *b, const uint8_t *key);
void hush__bev_forget_peer_key(struct hush__bev *b);
int hush__bev_peer_key(struct hush__bev *b, uint8_t *out);

/* hush_bufferevent_shutdown(): the close asked for, carried out by the flavour's pump
 * (which waits for OPEN). */
int hush__bev_shutdown(struct hush__bev *b);
/* The first half of a flavour's flush: whether it goes on to move bytes now (1) or has
 * nothing to do (0: not writing, not connected, not open yet, or handed to the loop).
 * BEV_FINISHED asks for a quiet close. */
bool hush__bev_flush_begin(struct hush__bev *b, short what, enum bufferevent_flush_mode mode);

/* The shared operations (a flavour's ops table points at them). */
int hush__bev_enable(struct bufferevent *bev, short what);
int hush__bev_disable(struct bufferevent *bev, short what);
int hush__bev_adj_timeouts(struct bufferevent *bev);

#endif /* HUSH_BUFFEREVENT_CORE_H */
