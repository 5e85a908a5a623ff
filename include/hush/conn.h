/*
 * hush/conn.h: secure connections on libevent, with the ReadOnReady read path.
 *
 * A hush_conn carries ALTS-format records (hush/record.h) over a connected,
 * non-blocking stream socket (TCP or AF_UNIX). While idle it owns no read or write
 * buffer and no cipher context: when the socket becomes readable it borrows a buffer
 * from the pool, reads, decrypts every complete record in place, hands the plaintext to
 * the application and gives the buffer back at once. Writes are sealed straight into
 * borrowed buffers, which go back to the pool as soon as their bytes are sent.
 *
 * Threads: one struct hush_loop per event_base, used only from the thread that runs that
 * base; every connection belongs to one loop; one hush_pool may be shared by the loops
 * of every thread. Nothing here may be called on a connection from a thread other than
 * its loop's, except hush_buf_release() on plaintext buffers the application kept.
 */
#ifndef HUSH_CONN_H
#define HUSH_CONN_H

#include <hush/common.h>
#include <hush/handshake.h>
#include <hush/loop.h> /* hush_loop_new(), hush_loop_free() */
#include <hush/pool.h>
#include <hush/record.h>

#ifdef __cplusplus
extern "C" {
#endif

struct hush_conn;

/* Flags for hush_conn_config.flags. */
enum {
	/* Close the socket when the connection is freed. */
	HUSH_CONN_CLOSE_ON_FREE = 1u << 0,
	/* The classic design, as a baseline: the connection keeps its own read buffer,
	 * write buffer and cipher contexts for its whole life. */
	HUSH_CONN_PINNED = 1u << 1,
};

struct hush_conn_config {
	size_t max_send_frame;      /* largest record sent, total bytes; default 16384 */
	size_t recv_limit;          /* largest LENGTH accepted; default 1 MiB */
	size_t read_size;           /* bytes borrowed for a read when no frame is pending;
				       default 32 KiB + 512 (two 16 KiB records) */
	size_t max_read_per_event;  /* fairness: bytes read per readiness event; default
				       256 KiB */
	size_t write_high_water;    /* queued bytes above which the application is told to
				       stop writing (hush_conn_write still accepts); default
				       256 KiB */
	size_t write_low_water;     /* on_writable fires when the queue falls to this after
				       passing the high watermark; default 0 */
	/* Timeouts are in milliseconds, at most INT32_MAX (about 24 days): hush_conn_new()
	 * refuses larger ones with HUSH_EINVAL. */
	uint32_t read_timeout_ms;   /* no complete record received for this long:
				       HUSH_ETIMEDOUT; 0 = none (default). Bytes of a record
				       still arriving do not count: a peer cannot keep a
				       connection alive by trickling one record */
	uint32_t write_timeout_ms;  /* queued bytes made no progress for this long:
				       HUSH_ETIMEDOUT; 0 = none (default) */
	uint32_t handshake_timeout_ms; /* a handshake not finished this long after it
				       started: HUSH_ETIMEDOUT, however slowly the peer
				       trickles bytes; 0 = none; default 10000 */
	unsigned flags;             /* HUSH_CONN_* flags; default HUSH_CONN_CLOSE_ON_FREE */
	uint32_t record_timeout_ms; /* a record whose first byte arrived must be whole this
				       long after, while reading (not paused by the
				       application): else HUSH_ESTALLED. It bounds how long a
				       peer can pin the buffer of a partial record; 0 = none;
				       default 30000 */
};

/* Fills cfg with the defaults above. */
HUSH_EXTERN void hush_conn_config_init(struct hush_conn_config *cfg);

enum hush_conn_event {
	/* Records may flow: keys are in place (raw keys or a finished handshake). */
	HUSH_CONN_EV_OPEN = 1,
	/* The peer finished its direction cleanly. Writing may go on. With a hush
	 * handshake this means the peer's authenticated close record arrived (an EOF
	 * without one is HUSH_ETRUNCATED); with raw keys, an EOF at a record boundary. */
	HUSH_CONN_EV_EOF = 2,
	/* The connection failed with err (a HUSH_E* code); it is dead: free it. */
	HUSH_CONN_EV_ERROR = 3,
	/* hush_conn_shutdown() finished: everything queued was sent and the write side of
	 * the socket is shut down. */
	HUSH_CONN_EV_SHUTDOWN = 4,
};

struct hush_conn_callbacks {
	/*
	 * Plaintext of one record, viewing a pool buffer: valid until the callback returns,
	 * unless the application keeps it with hush_conn_keep_data(). Empty records are not
	 * reported. May be NULL (data is dropped).
	 */
	void (*on_data)(struct hush_conn *c, const uint8_t *data, size_t len, void *arg);
	/* Queued bytes fell to the low watermark after passing the high one. May be NULL. */
	void (*on_writable)(struct hush_conn *c, void *arg);
	/* One of enum hush_conn_event; err is 0 except for HUSH_CONN_EV_ERROR. */
	void (*on_event)(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg);
};

/*
 * Creates a connection over fd, a connected stream socket (made non-blocking here), on
 * loop. cfg may be NULL for defaults; cfg and cb are copied; arg is passed to the
 * callbacks. Nothing happens until a start function gives it keys. With
 * HUSH_CONN_CLOSE_ON_FREE the connection owns fd from this call on, even when it fails.
 * Returns 0, HUSH_EINVAL (bad fd, config or callbacks), HUSH_ENOMEM or HUSH_ESYS.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_conn_new(struct hush_conn **out, struct hush_loop *loop,
					      int fd, const struct hush_conn_config *cfg,
					      const struct hush_conn_callbacks *cb, void *arg);

/*
 * Starts records with key material from an external handshaker (such as gRPC's ALTS
 * handshaker service): rp, key (copied, wiped on free), and this end's side. The OPEN
 * event is reported from the loop, never from inside this call.
 * Returns 0, HUSH_ESTATE (already started), or hush_record_new()'s errors.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_conn_start_raw(struct hush_conn *c,
						    enum hush_record_protocol rp,
						    const uint8_t *key, size_t key_len,
						    enum hush_side side);

/*
 * Starts a hush handshake (hush/handshake.h, docs/PROTOCOL.md): side HUSH_SIDE_CLIENT
 * for the end that connected (the Noise initiator), HUSH_SIDE_SERVER for the end that
 * accepted. hcfg is read now; what it borrows (allow-list, verify_arg) must stay valid
 * until the handshake ends. The record protocol and the limits announced and used are
 * hcfg's (recv_limit, max_send_frame); the connection configuration's max_send_frame
 * and recv_limit apply to raw keys only. The handshake must finish within the
 * configuration's handshake_timeout_ms.
 * While it runs the connection holds the handshake state and a small buffer; when it
 * ends, either way, they are wiped and freed, so an established connection costs what
 * one started with raw keys does. Success is reported as HUSH_CONN_EV_OPEN, failure as
 * HUSH_CONN_EV_ERROR with the handshake's error (HUSH_EHANDSHAKE, HUSH_EPEER,
 * HUSH_EPARAMS, HUSH_EBADKEY, HUSH_ESTATE for records sent before the handshake ended,
 * HUSH_ETIMEDOUT, HUSH_ECLOSED or HUSH_ECONNRESET when the peer went away), always
 * from the loop. hush_conn_write() returns HUSH_ESTATE until OPEN.
 * Connections keyed this way end each direction with hush's close record: see
 * hush_conn_shutdown() and HUSH_CONN_EV_EOF. With Noise NNpsk0 the client sends a key
 * confirmation record as soon as its handshake ends, and the server reports OPEN only
 * once that record has opened (docs/PROTOCOL.md section 14.1): a replayed first flight
 * never reaches the application; until then the handshake's deadline runs.
 * Returns 0, HUSH_ESTATE (already started) or hush_handshake_new()'s errors
 * (HUSH_EINVAL, HUSH_ENOVERIFY, HUSH_EPROTO_UNKNOWN, HUSH_ENOMEM, HUSH_ECRYPTO); on
 * failure the connection is unchanged and may be freed or started again.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_conn_start_handshake(struct hush_conn *c,
							  const struct hush_handshake_config *hcfg,
							  enum hush_side side);

/*
 * The outcome of the connection's handshake: the peer's verified static key, the
 * handshake hash (channel binding), the peer's application protocol, the record
 * protocol and limits. Available only from inside the on_event callback reporting
 * HUSH_CONN_EV_OPEN of a connection started with hush_conn_start_handshake(): the
 * connection keeps none of it afterwards (copy what you need). out->key is all zero
 * and out->key_len 0: record keys never leave the connection.
 * Returns 0, HUSH_EINVAL (NULL arguments) or HUSH_ESTATE (not inside that callback);
 * *out untouched on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_conn_handshake_result(const struct hush_conn *c,
							   struct hush_handshake_result *out);

/* Replaces the argument passed to the connection's callbacks (for connections made by
 * a listener, whose arg starts as the listener's accept_arg). */
HUSH_EXTERN void hush_conn_set_arg(struct hush_conn *c, void *arg);

/* The argument passed to the connection's callbacks. */
HUSH_EXTERN void *hush_conn_get_arg(const struct hush_conn *c);

/*
 * Queues len bytes of plaintext, copied now. Writes made in one callback are coalesced
 * into as few records as possible and sent when the connection's own event ends if they
 * were made from one of its callbacks (on_data, on_event's OPEN), else at the end of the
 * loop iteration (or at once by hush_conn_flush(), or as soon as a full buffer's worth
 * is queued). All or nothing: on failure nothing was queued.
 * Returns 0; 1 when the data was queued but the queue is now above the high watermark
 * (stop writing until on_writable); HUSH_ESTATE (not open yet, or shut down);
 * HUSH_ENOBUFS (pool budget exhausted: retry later); HUSH_ENOMEM; or the connection's
 * stored error.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_conn_write(struct hush_conn *c, const void *data,
						size_t len);

/* Seals what is queued and tries to send it now. Returns 0 or the stored error. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_conn_flush(struct hush_conn *c);

/* Bytes queued and not yet sent (sealed records plus unsealed plaintext). */
HUSH_EXTERN size_t hush_conn_queued(const struct hush_conn *c);

/* Stops and resumes reading. Reading starts enabled. */
HUSH_EXTERN void hush_conn_pause_reading(struct hush_conn *c);
HUSH_EXTERN void hush_conn_resume_reading(struct hush_conn *c);

/*
 * From inside on_data only: returns the pool buffer holding the current plaintext with
 * a new reference owned by the caller, who may keep the data past the callback and
 * must drop the reference with hush_buf_release() (from any thread). Returns NULL
 * outside on_data. The connection never writes over plaintext that was kept, and never
 * reads into a kept buffer again.
 */
HUSH_EXTERN struct hush_buf *hush_conn_keep_data(struct hush_conn *c);

/*
 * Graceful close of the write side: everything queued is sealed and sent, followed on a
 * connection keyed by a hush handshake by the close record (an authenticated empty
 * record, docs/PROTOCOL.md), then the socket's write side is shut down and
 * HUSH_CONN_EV_SHUTDOWN is reported. Reading goes on until the peer's EOF. Later
 * writes return HUSH_ESTATE. Calling it again does nothing.
 * Returns 0, HUSH_ESTATE (not open), HUSH_ENOBUFS or HUSH_ENOMEM (no room for the
 * close record: nothing changed, try again) or the stored error.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_conn_shutdown(struct hush_conn *c);

/*
 * Aborts: frees the connection at once, dropping anything queued, and closes fd with
 * HUSH_CONN_CLOSE_ON_FREE. Safe from inside any of the connection's callbacks (the
 * memory goes when the callback returns). NULL is a no-op.
 */
HUSH_EXTERN void hush_conn_free(struct hush_conn *c);

/* The stored error of a failed connection, or 0. */
HUSH_EXTERN int hush_conn_error(const struct hush_conn *c);

/* The socket. */
HUSH_EXTERN int hush_conn_fd(const struct hush_conn *c);

/* Pool buffers this connection holds right now (0 when idle in ready-read mode). */
HUSH_EXTERN unsigned hush_conn_buffers_held(const struct hush_conn *c);

struct hush_conn_stats {
	uint64_t bytes_in;     /* plaintext delivered */
	uint64_t bytes_out;    /* plaintext accepted by hush_conn_write */
};
HUSH_EXTERN void hush_conn_get_stats(const struct hush_conn *c, struct hush_conn_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_CONN_H */
