/*
 * hush/listener.h: accepting hush connections, with the handshake's limits applied.
 *
 * A listener wraps libevent's evconnlistener around a listening stream socket (TCP or
 * AF_UNIX). Each accepted socket becomes a hush_conn on the listener's loop and starts
 * the server side of a hush handshake at once; the application is told through
 * on_accept and then through the connection's own callbacks (HUSH_CONN_EV_OPEN when the
 * handshake succeeds, HUSH_CONN_EV_ERROR when it fails).
 *
 * Limits: at most max_handshakes handshakes are in progress at once. At the cap the
 * listener stops accepting (the kernel's backlog holds new peers) and starts again as
 * soon as one handshake ends, whichever way; a handshake that stalls ends at the
 * connection configuration's handshake_timeout_ms (default 10 s). So a flood of
 * half-open peers costs a bounded amount of memory and never starves established
 * connections. When accept() fails for lack of descriptors or memory the listener
 * pauses for 100 ms instead of spinning.
 *
 * Threads: like a connection, a listener is used only from the thread running its
 * loop's event_base. For several threads, give each its own loop and listener (on a
 * socket of its own with SO_REUSEPORT, or on one shared socket).
 */
#ifndef HUSH_LISTENER_H
#define HUSH_LISTENER_H

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
	/* Handshakes in progress at once, at least 1; default 256. */
	unsigned max_handshakes;
	/* Backlog for listen() when the socket is not listening yet; default 1024. */
	int backlog;
};

/* Fills cfg with the defaults above (the required fields NULL). Thread-safe. */
HUSH_EXTERN void hush_listener_config_init(struct hush_listener_config *cfg);

/*
 * Starts accepting on fd, a bound stream socket (listening already or not; made
 * non-blocking), owned by the listener from this call on, even when it fails: it is
 * closed by hush_listener_free() or on failure.
 * Returns 0; HUSH_EINVAL (NULL or missing required fields, max_handshakes 0, bad fd);
 * HUSH_ENOMEM; HUSH_ESYS (listen failed). *out is untouched on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_listener_new(struct hush_listener **out,
						  struct hush_loop *loop, int fd,
						  const struct hush_listener_config *cfg);

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

#ifdef __cplusplus
}
#endif

#endif /* HUSH_LISTENER_H */
