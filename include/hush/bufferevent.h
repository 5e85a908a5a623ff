/*
 * hush/bufferevent.h: hush as a libevent bufferevent, a one-line swap for
 * bufferevent_openssl_socket_new() / bufferevent_openssl_filter_new().
 *
 * The returned struct bufferevent works with the standard calls: bufferevent_setcb,
 * enable/disable, bufferevent_write/write_buffer/read/read_buffer, get_input/get_output,
 * watermarks, timeouts, BEV_OPT_CLOSE_ON_FREE, BEV_OPT_THREADSAFE,
 * BEV_OPT_DEFER_CALLBACKS and (socket flavour) rate limits. The application reads and
 * writes plaintext; the socket or the underlying bufferevent carries ALTS-format
 * records.
 *
 * Two flavours:
 *
 * - The socket flavour, hush_bufferevent_socket_new(), is a bufferevent type of hush's
 *   own ("hush"), built on libevent 2.1's bufferevent implementation interface as
 *   libevent_openssl is. Its socket I/O is a hush_conn (hush/conn.h), so the ReadOnReady
 *   path: an idle one holds no pool buffer and no cipher context. It takes a socket
 *   later through bufferevent_setfd() and works with bufferevent_socket_connect() and
 *   bufferevent_socket_connect_hostname(), so evhttp can use it (evhttp_set_bevcb() on
 *   the server, evhttp_connection_base_bufferevent_new() on the client). It is keyed by
 *   a hush handshake (cfg->handshake; a new one for each socket set) or by raw keys
 *   from an external handshaker (cfg->key), and a raw key keys one connection only in
 *   the whole process: a second hush bufferevent given the same key for the same
 *   protocol and side is refused (hush_bufferevent_config_check() says
 *   HUSH_EKEYREUSE), even after the first is gone, and a second bufferevent_setfd()
 *   with a socket fails, because the same key twice repeats AES-GCM nonces. hush
 *   remembers a 16-byte salted fingerprint of each raw key for the process's life.
 * - The filter flavour, hush_bufferevent_filter_new(), wraps any bufferevent (a pair, a
 *   socket, a proxy's upstream), its underlying one, which carries the records: a
 *   bufferevent type of hush's own too ("hush_filter"), built like libevent's own
 *   filters (it holds a reference to the underlying bufferevent, sets its callbacks, and
 *   suspends its reading while the application's is off). It is keyed by a hush
 *   handshake run over the underlying bufferevent (cfg->handshake: fresh keys for each
 *   filter, so a new filter over each new connection, with the same close record and
 *   NNpsk0 confirmation record as on a socket), or by raw keys, spent at once. Given
 *   cfg->loop it borrows that loop's pool and cipher contexts, so an idle one holds
 *   none; given only cfg->pool its record context keeps two cipher contexts of its own.
 *   Its socket is the underlying bufferevent's: bufferevent_setfd() on the filter hands
 *   a socket to the underlying bufferevent and ignores -1, as bufferevent_openssl's
 *   filter does, so bufferevent_socket_connect() works on a filter over a socket
 *   bufferevent made with fd -1.
 *
 * Copies: plaintext of a record of 1 KiB or more reaches the input evbuffer by
 * reference to its pool buffer (evbuffer_add_reference, whose cleanup gives the buffer
 * back); shorter plaintext is copied, so that a few undrained bytes never pin a whole
 * read buffer. Written plaintext is copied once, from the output evbuffer into the
 * record it is sealed in. The filter flavour copies records once more, from the
 * underlying input evbuffer into a pool buffer.
 *
 * Reading: the read high watermark stops the delivery of records into the input
 * evbuffer; records already read are delivered as soon as the application drains it
 * below the watermark, without waiting for the socket or the underlying bufferevent, in
 * both flavours (libevent's own filters wait for more bytes from the underlying
 * bufferevent). Both flavours honour the watermark exactly, as bufferevent_openssl
 * does: the input never holds more than it because of hush, and the rest of a record
 * waits in hush's pool buffer until the application drains (the filter flavour passes
 * it by one record only when the pool refuses it a buffer, rather than stall).
 *
 * Writing: the write callback runs when everything written has been handed to the
 * socket (the output evbuffer and hush's queue are empty), or sealed into the
 * underlying bufferevent's output (filter flavour), as a socket bufferevent's does when
 * its output is. It runs from the loop, never inside the call that moved the bytes
 * (bufferevent_write(), bufferevent_enable(EV_WRITE)), as with bufferevent_openssl, which
 * defers it: a program that enables writing and then disables reading (libevent's
 * regress_ssl ping-pong) sees its write callback after both. Plaintext waits in the
 * output evbuffer until the handshake has finished, and while writing is disabled.
 *
 * Handshakes: one starts from the loop once a socket is set (socket flavour) or the
 * filter is made (filter flavour) and the bufferevent has reading or writing enabled.
 * A disabled bufferevent (bufferevent_disable(bev, EV_READ | EV_WRITE)) does not
 * advance its handshake, whether disabled before it started or while it runs: it reads
 * none of the peer's handshake messages until enabled again, then goes on. Reading
 * alone enabled or writing alone is enough to advance it, because evhttp's client
 * connects with only EV_WRITE enabled and enables reading after CONNECTED. hush's own
 * handshake deadline runs on meanwhile. Its configuration is checked when the socket
 * is set, or by the filter's constructor. Over an underlying socket bufferevent still
 * connecting, the first message waits in its output. Until it ends, the bufferevent's
 * read and write timeouts run whenever set, so the write timeout is the
 * connect-and-handshake timeout evhttp expects. With no socket yet, the timeouts run
 * whenever enabled, as on libevent's socket type.
 *
 * Events, as bufferevent_openssl reports them: BEV_EVENT_CONNECTED once a handshake
 * ended, on both sides, and none for a connection that raw keys start open (the filter
 * flavour passes on the underlying bufferevent's own events with raw keys, as
 * libevent's filters do, and keeps its CONNECTED to itself with a handshake). A plain
 * socket bufferevent reports CONNECTED only on the side that connected, when the
 * connect completes; an accept-side event callback ported from one that treats every
 * event as the end needs one line first: if (what & BEV_EVENT_CONNECTED) return;
 * BEV_EVENT_READING | BEV_EVENT_EOF when the peer finished cleanly (with a handshake:
 * its close record arrived), after the plaintext that came before it and once what
 * the application wrote until then was handed to the socket (so a request that came
 * with the peer's close record is answered before the EOF); HUSH_BEV_EVENT_SHUTDOWN
 * when hush_bufferevent_shutdown() completed; BEV_EVENT_TIMEOUT with BEV_EVENT_READING or
 * BEV_EVENT_WRITING for the bufferevent's timeouts (reading or writing is disabled
 * first, as libevent's socket bufferevent does); BEV_EVENT_ERROR otherwise, with the
 * hush error code from hush_bufferevent_get_error(). A stream cut short (inside a
 * record, or without the close record after a handshake) is BEV_EVENT_READING |
 * BEV_EVENT_EOF | BEV_EVENT_ERROR with HUSH_ETRUNCATED; a handshake that ran out of
 * time is BEV_EVENT_TIMEOUT | BEV_EVENT_ERROR with HUSH_ETIMEDOUT.
 * bufferevent_flush(bev, EV_WRITE, BEV_FINISHED) closes the write side gracefully as
 * hush_bufferevent_shutdown() does, but, as with libevent's own types, reports nothing
 * to the writer.
 *
 * Threads: create a hush bufferevent, and set its socket, on the thread that runs its
 * loop's event_base. With BEV_OPT_THREADSAFE (and evthread_use_pthreads()), the other
 * standard calls may come from any thread, as with libevent's own types: what they ask
 * of hush's connection (writing, enabling and disabling, shutdown, the free) is carried
 * out on the loop's thread, which runs the connection inside the bufferevent's lock.
 * bufferevent_setfd() from another thread fails (HUSH_ESTATE). The filter flavour follows
 * the same rules when given cfg->loop; given only cfg->pool, whose buffers the loop's
 * thread uses too, call it from the loop's thread only.
 *
 * Ownership: the socket flavour closes its socket when freed only with
 * BEV_OPT_CLOSE_ON_FREE; bufferevent_setfd() never closes the socket it replaces, as
 * with libevent's socket bufferevents. A bufferevent that failed (handshake failure,
 * peer reset, bad record) stays allocated until the application frees it; its
 * connection state is released at once. It may be freed from inside any of its
 * callbacks. Freed with BEV_OPT_CLOSE_ON_FREE after everything written has left, it
 * sends the close record within bufferevent_free() if the socket takes it at once, so
 * the peer sees a clean end even when the caller shuts the socket down next
 * (evhttp_connection_free() does). The filter flavour frees the underlying bufferevent
 * with BEV_OPT_CLOSE_ON_FREE, after the same goodbye: its close record goes to the
 * underlying output, and is written at once if the underlying bufferevent has a
 * socket (freeing a socket bufferevent drops what it has not sent). Key material is
 * copied and wiped when spent or freed. If a constructor fails it returns NULL and
 * takes ownership of nothing.
 * bufferevent_free() on the loop's thread releases the hush connection at once, so
 * hush_loop_free() may follow it with no turn of the loop between (libevent finalizes
 * the bufferevent itself later, from the event_base, and closes the socket then); after
 * a free from another thread, run the loop once first (hush/loop.h).
 *
 * Differences from bufferevent_openssl that remain by design, each with its reason:
 * - The protocol is hush's (docs/PROTOCOL.md: a Noise handshake, ALTS records), not
 *   TLS, so the peer must be hush. Identities are static keys checked against an
 *   allow-list or a callback, not certificates; there is no SSL object
 *   (bufferevent_openssl_get_ssl()), and hush_bufferevent_peer_key() gives the peer's
 *   verified key instead.
 * - No renegotiation: Noise has none, and the ALTS record protocol rekeys itself.
 *   Likewise bufferevent_setfd() on the filter flavour does not start its handshake
 *   again, as bufferevent_openssl's filter does (SSL_clear()): a filter's handshake
 *   keys it once, and a new connection takes a new filter.
 * - No dirty shutdown (bufferevent_openssl_set_allow_dirty_shutdown()): after a
 *   handshake an end without the peer's close record is always HUSH_ETRUNCATED, so a
 *   cut stream is never taken for a complete one. With raw keys, as in gRPC's ALTS, an
 *   end at a record boundary is clean.
 * - Errors are hush codes, from hush_bufferevent_get_error(), not OpenSSL's error
 *   queue (bufferevent_get_openssl_error()).
 * - hush_bufferevent_shutdown() and its HUSH_BEV_EVENT_SHUTDOWN event have no
 *   bufferevent_openssl counterpart: they tell the application when its close record
 *   and its last bytes have left.
 * - Freed with BEV_OPT_CLOSE_ON_FREE after everything written has left, it sends its
 *   close record (bufferevent_openssl never sends a close_notify, on free or on a
 *   BEV_FINISHED flush), so a peer reading to the end, such as an HTTP client, sees a
 *   clean end.
 * - hush's own handshake deadline (cfg->handshake_timeout_ms, 10 s) runs beside the
 *   bufferevent's timeouts and ends in BEV_EVENT_TIMEOUT | BEV_EVENT_ERROR: a peer that
 *   never finishes a handshake cannot hold a connection without timeouts set.
 * - A raw key keys one connection in the process (see the flavours above):
 *   bufferevent_openssl has no raw keys, and hush refuses a key's second use rather
 *   than repeat nonces.
 * - Threads: the socket flavour is created, and its socket set, on its loop's thread
 *   only (bufferevent_setfd() from another fails with HUSH_ESTATE), because its
 *   connection belongs to that thread; the other calls may come from any thread with
 *   BEV_OPT_THREADSAFE, as with bufferevent_openssl.
 * - bufferevent_priority_set() applies to the bufferevent's timers and deferred
 *   callbacks, not to the socket's readiness, which the connection's own event carries.
 * - Rate limits: a read may overshoot the read bucket by one socket read, since hush
 *   reads what the socket holds before the bucket is charged.
 * - ABI: both flavours embed libevent's private bufferevent structure, as
 *   libevent_openssl does, but are not rebuilt with libevent: on a libevent whose
 *   layout differs from the build's the constructors refuse (NULL;
 *   hush_bufferevent_check_libevent() says HUSH_ELIBEVENT) until hush is rebuilt.
 */
#ifndef HUSH_BUFFEREVENT_H
#define HUSH_BUFFEREVENT_H

#include <event2/bufferevent.h>

#include <hush/common.h>
#include <hush/keys.h>
#include <hush/loop.h> /* hush_loop_new(), which cfg->loop needs */
#include <hush/pool.h>
#include <hush/record.h>

#ifdef __cplusplus
extern "C" {
#endif

struct bufferevent;
struct event_base;

struct hush_handshake_config; /* hush/handshake.h, for cfg->handshake */

/* The event reported when hush_bufferevent_shutdown() completed. */
#define HUSH_BEV_EVENT_SHUTDOWN (BEV_EVENT_WRITING | BEV_EVENT_EOF)

struct hush_bufferevent_config {
	/* The hush loop of the event_base (required by the socket flavour; the filter
	 * flavour's choice, which then borrows the loop's cipher contexts per call);
	 * borrowed, must outlive the bufferevent. Its pool is the one borrowed from. */
	struct hush_loop *loop;
	/* A hush handshake on each socket (socket flavour) or over the underlying
	 * bufferevent (filter flavour), with this end's side below (HUSH_SIDE_CLIENT for
	 * the end that connected, the Noise initiator). Borrowed, with what it borrows:
	 * it must outlive the bufferevent. When set, rp, key and the limits below are
	 * unused (the handshake configuration has its own). */
	const struct hush_handshake_config *handshake;
	/* The handshake must finish within this; 0 = 10000 ms. */
	uint32_t handshake_timeout_ms;
	/* Raw record keys (from an external handshaker), as hush_conn_start_raw(): each
	 * keys one connection only in the process (see the top of this file). */
	enum hush_record_protocol rp;
	const uint8_t *key; /* copied */
	size_t key_len;
	enum hush_side side;
	/* Largest record sent (total bytes) and largest LENGTH accepted; 0 = defaults
	 * (16384 and 1 MiB). */
	size_t max_send_frame;
	size_t recv_limit;
	/* Filter flavour without a loop: the pool to borrow buffers from; borrowed, must
	 * outlive the bufferevent. */
	struct hush_pool *pool;
};

/* Fills cfg with defaults (protocol ALTSRP_GCM_AES128_REKEY, client side, no key). */
HUSH_EXTERN void hush_bufferevent_config_init(struct hush_bufferevent_config *cfg);

/*
 * Wraps underlying (a socket bufferevent, one end of a pair, a proxy's upstream...) so
 * that the returned bufferevent carries plaintext and underlying carries records.
 * options are BEV_OPT_* flags as for bufferevent_filter_new(). With cfg->handshake the
 * filter runs one hush handshake over underlying (fresh keys: one filter per
 * connection); otherwise cfg's raw key is spent. The filter sets underlying's callbacks
 * and enables it; with BEV_OPT_CLOSE_ON_FREE it frees underlying when freed, otherwise
 * gives it back with no callbacks. Returns NULL on failure (bad config: see
 * hush_bufferevent_config_check(), and a handshake configuration hush_handshake_new()
 * would refuse; neither cfg->loop nor cfg->pool, or a loop of another event_base; out
 * of memory; a libevent whose layout differs from the build's), having taken nothing:
 * underlying keeps its callbacks.
 */
HUSH_EXTERN struct bufferevent *hush_bufferevent_filter_new(
	struct bufferevent *underlying, const struct hush_bufferevent_config *cfg, int options);

/*
 * A hush bufferevent of the socket flavour over a connected stream socket fd, or -1 for
 * one set later with bufferevent_setfd() or bufferevent_socket_connect() (as evhttp
 * does). base must be cfg->loop's. options are BEV_OPT_* flags as for
 * bufferevent_socket_new(). Returns NULL on failure (bad config; out of memory; a
 * socket hush_conn_new() refuses; a libevent whose layout differs from the build's,
 * which hush_bufferevent_check_libevent() tells), having taken nothing: the caller
 * keeps fd.
 */
HUSH_EXTERN struct bufferevent *hush_bufferevent_socket_new(
	struct event_base *base, int fd, const struct hush_bufferevent_config *cfg, int options);

/*
 * Whether the libevent running in this process has the internal layout this build of
 * hush was made for (socket flavour: see docs/DESIGN.md, "What hush relies on in
 * libevent"). Measured once per process, on base, which must be a valid event_base,
 * then remembered. hush_bufferevent_socket_new() checks it first and returns NULL on a
 * mismatch; call this to tell that refusal from others. A mismatch means hush must be
 * rebuilt against the libevent now installed: nothing is ever written past libevent's
 * structure.
 * Returns 0, HUSH_ELIBEVENT (a different layout, or not libevent 2.1), HUSH_EINVAL (base
 * is NULL) or HUSH_ENOMEM (not remembered: a later call measures again). Thread-safe.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_bufferevent_check_libevent(struct event_base *base);

/* Checks a configuration's keys (a handshake configuration is checked when a socket
 * is set, or by the filter's constructor): 0, HUSH_EINVAL, HUSH_EPROTO_UNKNOWN,
 * HUSH_EKEYLEN, HUSH_EKEYREUSE (a raw key that keyed a hush bufferevent before in this
 * process, for this protocol and side), HUSH_ECRYPTO. The constructors also need
 * cfg->loop (socket flavour) or cfg->loop or cfg->pool (filter flavour). */
HUSH_EXTERN HUSH_MUST_CHECK int hush_bufferevent_config_check(
	const struct hush_bufferevent_config *cfg);

/* The hush error that failed bev (a HUSH_E* code), 0 if none, HUSH_EINVAL if bev is
 * not a hush bufferevent. Socket flavour: the error stays when the socket is let go
 * (bufferevent_setfd(bev, -1), as evhttp does before its request callback runs) and is
 * cleared when a new socket is set. */
HUSH_EXTERN int hush_bufferevent_get_error(struct bufferevent *bev);

/*
 * The peer's static key, verified by the handshake (keyed by XX or XXpsk3), into out: who the peer is, for the application's authorization. Valid from
 * BEV_EVENT_CONNECTED until the socket is replaced or fails.
 * Returns 0, HUSH_EINVAL (NULL, or not a hush bufferevent) or HUSH_ESTATE (not
 * connected, raw keys, or NNpsk0, which has no static keys).
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_bufferevent_peer_key(struct bufferevent *bev,
							  uint8_t out[HUSH_KEY_SIZE]);

/*
 * Graceful close of the write side: everything in the output evbuffer and hush's queue
 * is sent, even with EV_WRITE disabled, then hush's close record (after a handshake),
 * then (socket flavour) the socket's write side is shut down, and the event callback
 * gets HUSH_BEV_EVENT_SHUTDOWN. The filter flavour leaves the underlying bufferevent
 * open (it may carry more than this stream) and reports the event once the underlying
 * output has drained. Reading goes on until the peer's EOF. Called before the handshake
 * finished, it waits for it. Plaintext written afterwards is never sent. Calling it
 * again does nothing.
 * Returns 0, HUSH_EINVAL (not a hush bufferevent), HUSH_ESTATE (no socket) or the error
 * that failed bev.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_bufferevent_shutdown(struct bufferevent *bev);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_BUFFEREVENT_H */
