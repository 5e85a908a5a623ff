/*
 * hush/listener.h: accepting hush connections, with the handshake's limits applied.
 *
 * A listener wraps libevent's evconnlistener around a listening stream socket (TCP or
 * AF_UNIX). Each accepted socket becomes a hush_conn on the listener's loop and starts
 * the server side of a hush handshake at once; the application is told through
 * on_accept and then through the connection's own callbacks (HUSH_CONN_EV_OPEN when the
 * handshake succeeds, HUSH_CONN_EV_ERROR when it fails).
 *
 * Admission: at most max_handshakes handshakes are in progress at once. At the cap the
 * listener keeps accepting: a newcomer evicts a stalled handshake (it fails with
 * HUSH_EBUSY), the one that has made the least progress: first those still waiting for
 * the peer's first handshake message, the oldest first, then the oldest of the others.
 * A handshake has stalled when it made no progress for min_stall_ms (default 1 s) and
 * its peer has no bytes waiting in the socket. When none has (a burst of real
 * clients, not a flood), the listener takes the newcomer over the cap, up to half the
 * cap more for sources under their share; beyond that it stops accepting, the
 * kernel's backlog holding the next, until a handshake ends or the oldest may have
 * stalled. So peers that connect and stall, reconnecting when cut,
 * cannot fill the backlog and lock out peers that finish promptly, and a burst of real
 * clients is not cut short. Besides the connection configuration's
 * handshake_timeout_ms (default 10 s, a deadline for the whole handshake), the peer's
 * first handshake message must arrive whole within first_message_timeout_ms (default
 * 3 s) of the accept, or the handshake fails with HUSH_ETIMEDOUT. At the cap a source
 * address (an IPv6 address counts by its /64, an IPv4-mapped one as IPv4; Unix sockets
 * are not counted) that holds max_per_source handshakes while other sources have some
 * in progress (or a stalled one could be evicted) gets no more: its next connection is
 * closed at once, before any hush_conn exists, and on_accept is not called. A source
 * alone waits in the backlog. A handshake stops counting when it ends, either way; with Noise NNpsk0 only
 * once the initiator's key confirmation arrived (hush/conn.h, docs/PROTOCOL.md section
 * 14.1). When accept() fails for lack of descriptors or memory the listener pauses for
 * 100 ms instead of spinning.
 *
 * Threads: like a connection, a listener is used only from the thread running its
 * loop's event_base. For several threads, give each its own loop and listener (on a
 * socket of its own with SO_REUSEPORT, or on one shared socket).
 *
 * Scale-out: one process holds at most as many connections as its open-files limit
 * allows. To go past it, run several processes (or threads), each with its own pool,
 * loop and listener on the same address: with reuseport set, hush_listener_bind()
 * makes each listener a socket of its own with SO_REUSEPORT, and the kernel (Linux
 * 3.9 and later) spreads new connections among the listening sockets by a hash of the
 * peer's address and port. The spread is even on average, not exactly: leave each
 * process some headroom below its limit. Every socket sharing the address must set
 * SO_REUSEPORT and belong to the same user. A listener that closes drops the
 * connections still waiting in its own backlog. A complete server of four processes
 * (error handling cut short; benchmarks/hush-scale.c runs a million connections so):
 *
 *     struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(4433),
 *                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
 *     for (int i = 1; i < 4; i++) {
 *             if (fork() == 0) {
 *                     break;                   (each process is a worker)
 *             }
 *     }
 *     struct event_base *base = event_base_new();     (after the fork, never before)
 *     struct hush_pool *pool;   hush_pool_new(&pool, NULL);
 *     struct hush_loop *loop;   hush_loop_new(&loop, base, pool);
 *     struct hush_listener_config lc;
 *     hush_listener_config_init(&lc);
 *     lc.handshake = &hs;                      (hush/handshake.h: keys, peers)
 *     lc.callbacks = &callbacks;  lc.on_accept = on_accept;
 *     lc.reuseport = 1;
 *     struct hush_listener *l;
 *     if (hush_listener_bind(&l, loop, (struct sockaddr *)&sin, sizeof(sin), &lc) < 0) {
 *             exit(1);                         (HUSH_ESYS: errno says why)
 *     }
 *     event_base_dispatch(base);
 */
#ifndef HUSH_LISTENER_H
#define HUSH_LISTENER_H

#include <stdint.h>
#include <sys/socket.h>

#include <hush/common.h>
#include <hush/conn.h>
#include <hush/handshake.h>

#ifdef __cplusplus
extern "C" {
#endif

struct hush_listener;

/*
 * A connection was accepted and its handshake started. c belongs to the application
 * from now on (it frees it, typically after HUSH_CONN_EV_ERROR or when done); its
 * callbacks receive accept_arg until hush_conn_set_arg() changes it. addr is the peer's
 * address, valid during the call. Freeing c here is allowed (refusing the peer).
 */
typedef void (*hush_accept_fn)(struct hush_listener *l, struct hush_conn *c,
			       const struct sockaddr *addr, socklen_t addrlen, void *arg);

struct hush_listener_config {
	/* The handshake every accepted connection runs as the server. Borrowed: it and
	 * what it borrows must stay valid while the listener exists and until every
	 * handshake it started has ended. Required. */
	const struct hush_handshake_config *handshake;
	/* Configuration of accepted connections (copied); NULL for the defaults. */
	const struct hush_conn_config *conn;
	/* Callbacks of accepted connections (copied). Required: on_event at least. */
	const struct hush_conn_callbacks *callbacks;
	/* Required. */
	hush_accept_fn on_accept;
	void *accept_arg;
	/* Handshakes in progress at once, at least 1; default 256. At the cap a newcomer
	 * evicts the stalled handshake that made the least progress (see above). */
	unsigned max_handshakes;
	/* At the cap, handshakes in progress from one source address (IPv6: one /64), at
	 * least 1; default 32. A source holding this many may not evict another's: its
	 * new connections are closed at once. */
	unsigned max_per_source;
	/* The peer's first handshake message must be whole this long after the accept,
	 * or the handshake fails with HUSH_ETIMEDOUT; 0 = no such deadline (only the
	 * connection's handshake_timeout_ms applies); default 3000. */
	uint32_t first_message_timeout_ms;
	/* At the cap only a stalled handshake is evicted: one that made no progress (the
	 * accept, or the peer's first message) for this long and whose peer has no bytes
	 * waiting; default 1000. Shorter evicts stalled peers sooner under a flood;
	 * longer spares slow real clients. */
	uint32_t min_stall_ms;
	/* Backlog for listen() when the socket is not listening yet; default 1024. */
	int backlog;
	/* For hush_listener_bind(): nonzero sets SO_REUSEPORT on the socket before it is
	 * bound, so that listeners in other processes or threads may bind the same address
	 * (see Scale-out above); default 0, and a bound address is then this listener's
	 * alone (EADDRINUSE for the next). hush_listener_new() takes a socket bound
	 * already and ignores it: set SO_REUSEPORT yourself before bind(). */
	int reuseport;
};

/* Fills cfg with the defaults above (the required fields NULL). Thread-safe. */
HUSH_EXTERN void hush_listener_config_init(struct hush_listener_config *cfg);

/*
 * Starts accepting on fd, a bound stream socket (listening already or not; made
 * non-blocking), owned by the listener from this call on, even when it fails: it is
 * closed by hush_listener_free() or on failure.
 * Returns 0; HUSH_EINVAL (NULL or missing required fields, max_handshakes or
 * max_per_source 0, bad fd);
 * HUSH_ENOMEM; HUSH_ESYS (listen failed). *out is untouched on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_listener_new(struct hush_listener **out,
						  struct hush_loop *loop, int fd,
						  const struct hush_listener_config *cfg);

/*
 * Makes the listening socket and starts accepting on it: a stream socket of addr's
 * family (TCP for AF_INET and AF_INET6, a Unix socket for AF_UNIX), non-blocking and
 * close-on-exec, for TCP with SO_REUSEADDR and, when cfg->reuseport is set,
 * SO_REUSEPORT (Unix sockets have no such sharing), bound to addr; then as
 * hush_listener_new(). With port 0 the kernel picks the port:
 * hush_listener_fd() and getsockname() tell which, and other listeners with reuseport
 * may then bind that port.
 * Returns 0; HUSH_EINVAL (NULL arguments, addrlen too short for its family, or as
 * hush_listener_new()); HUSH_ESYS (socket, setsockopt, bind or listen failed: errno
 * says why, EADDRINUSE when the address is taken); HUSH_ENOMEM. *out is untouched on
 * failure and no socket is left open.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_listener_bind(struct hush_listener **out,
						   struct hush_loop *loop,
						   const struct sockaddr *addr, socklen_t addrlen,
						   const struct hush_listener_config *cfg);

/* The listening socket (for getsockname()), owned by the listener; -1 for NULL. */
HUSH_EXTERN int hush_listener_fd(const struct hush_listener *l);

/*
 * Stops accepting and closes the listening socket. Connections already accepted are
 * not affected (they belong to the application); those still in their handshake go on
 * to finish it. Safe from inside on_accept. NULL is a no-op.
 */
HUSH_EXTERN void hush_listener_free(struct hush_listener *l);

/* Stops and resumes accepting (for a drain, say). Accepting starts enabled. */
HUSH_EXTERN void hush_listener_pause(struct hush_listener *l);
HUSH_EXTERN void hush_listener_resume(struct hush_listener *l);

/* Handshakes in progress that this listener started. */
HUSH_EXTERN unsigned hush_listener_handshakes(const struct hush_listener *l);

/* What the listener's admission did, since it was created. */
struct hush_listener_stats {
	uint64_t accepted;          /* connections given to on_accept */
	uint64_t evicted;           /* handshakes evicted at the cap (HUSH_EBUSY) */
	uint64_t first_timeouts;    /* no whole first message in time (HUSH_ETIMEDOUT) */
	uint64_t refused_per_source; /* closed at once: their source was at max_per_source */
};

/* Fills *out. */
HUSH_EXTERN void hush_listener_get_stats(const struct hush_listener *l,
					 struct hush_listener_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_LISTENER_H */
