/*
 * The socket flavour of hush bufferevents: a bufferevent type of hush's own (type
 * "hush"), whose socket I/O is a hush_conn and so the ReadOnReady path. Because it is a
 * type, not a filter over a socket bufferevent, it takes a socket through
 * bufferevent_setfd() and works with bufferevent_socket_connect(), as evhttp needs.
 * See include/hush/bufferevent.h for the contract and docs/DESIGN.md, "Bufferevents",
 * for how it fits libevent.
 *
 * struct hush__bev comes first (libevent's struct bufferevent_private, then what both
 * flavours share: bufferevent-internal.h), then the connection. libevent frees the
 * whole block with its allocator once the bufferevent is finalized, so the block comes
 * from libevent's allocator too.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include <hush/bufferevent.h>

#include "handshake/handshake-internal.h"
#include "transport/bufferevent-core.h"
#include "transport/bufferevent-internal.h"
#include "transport/transport-internal.h"

/* Plaintext moved from the output evbuffer into the connection's queue while the
 * queue holds less than this; the rest waits in the output evbuffer. */
#define PUMP_MAX (256u * 1024u)

struct hsock {
	struct hush__bev b;     /* first */
	struct hush_conn *conn; /* NULL until a socket is set, and after it failed */
	int fd;
};

static const struct hush__bev_flavour hsock_flavour;

static struct hsock *hsock_of(struct hush__bev *b)
{
	return (struct hsock *)(void *)b;
}

static void guard(void *arg, bool enter)
{
	struct bufferevent *bev = hush__bev_bev(arg);
	if (enter) {
		bufferevent_lock(bev);
	} else {
		bufferevent_unlock(bev);
	}
}

/* ---- The flavour's hooks ---- */

static enum hush__bev_link hsock_link(struct hush__bev *b)
{
	struct hsock *h = hsock_of(b);
	if (h->fd < 0) {
		return HUSH__BEV_UNSET;
	}
	return h->conn != NULL ? HUSH__BEV_LIVE : HUSH__BEV_DEAD;
}

static size_t hsock_queued(struct hush__bev *b)
{
	struct hsock *h = hsock_of(b);
	return h->conn != NULL ? hush_conn_queued(h->conn) : 0;
}

static void hsock_apply_reading(struct hush__bev *b, bool from_loop)
{
	struct hsock *h = hsock_of(b);
	(void)from_loop; /* resuming, the connection delivers from the loop itself */
	if (h->conn == NULL) {
		return;
	}
	hush__conn_hold_handshake(h->conn, !hush__bev_hs_may_advance(b));
	if (b->flags & HUSH__BEV_WANT_READ) {
		/* Records already read are delivered now, without more socket bytes:
		 * draining below the read high watermark lands here. */
		hush_conn_resume_reading(h->conn);
	} else {
		hush_conn_pause_reading(h->conn);
	}
}

static void hsock_halt(struct hush__bev *b)
{
	struct hsock *h = hsock_of(b);
	if (h->conn != NULL) {
		hush_conn_free(h->conn); /* safe inside its callbacks */
		h->conn = NULL;
	}
}

static void try_shutdown(struct hsock *h);

/* Moves plaintext from the output evbuffer into the connection's write queue. */
static void hsock_pump(struct hush__bev *b)
{
	struct hsock *h = hsock_of(b);
	struct bufferevent *bev = hush__bev_bev(b);
	if ((b->flags & HUSH__BEV_PUMPING) || h->conn == NULL || !(b->flags & HUSH__BEV_OPEN)) {
		return;
	}
	bool forced = (b->flags & HUSH__BEV_SHUT_REQ) != 0; /* shutdown flushes regardless */
	if (!(bev->enabled & EV_WRITE) && !forced) {
		return;
	}
	b->flags |= HUSH__BEV_PUMPING;
	struct evbuffer *out = bev->output;
	while (h->conn != NULL && !(b->flags & HUSH__BEV_SHUT_SENT)) {
		size_t avail = evbuffer_get_length(out);
		size_t queued = hush_conn_queued(h->conn);
		if (avail == 0 || queued >= PUMP_MAX) {
			break;
		}
		struct evbuffer_iovec v;
		if (evbuffer_peek(out, -1, NULL, &v, 1) < 1) {
			break;
		}
		size_t n = v.iov_len;
		if (n > PUMP_MAX - queued) {
			n = PUMP_MAX - queued;
		}
		ev_ssize_t lim = bufferevent_get_write_max_(&b->p);
		if (lim <= 0) {
			break; /* rate limited: libevent re-enables writing when it refills */
		}
		if ((size_t)lim < n) {
			n = (size_t)lim;
		}
		int rc = hush_conn_write(h->conn, v.iov_base, n);
		if (rc == HUSH_ENOBUFS) {
			break; /* the pool's budget: retried when the queue drains */
		}
		if (rc < 0) {
			b->flags &= (uint16_t)~HUSH__BEV_PUMPING;
			hush__bev_fail(b, rc, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
			return;
		}
		evbuffer_drain(out, n);
		bufferevent_decrement_write_buckets_(&b->p, (ev_ssize_t)n);
		b->flags |= HUSH__BEV_WROTE;
	}
	b->flags &= (uint16_t)~HUSH__BEV_PUMPING;
	hush__bev_arm_write_timer(b);
	if ((b->flags & HUSH__BEV_SHUT_REQ) && !(b->flags & HUSH__BEV_SHUT_SENT)) {
		try_shutdown(h);
	}
}

static void try_shutdown(struct hsock *h)
{
	struct hush__bev *b = &h->b;
	if (h->conn == NULL || !(b->flags & HUSH__BEV_OPEN) || (b->flags & HUSH__BEV_SHUT_SENT) ||
	    evbuffer_get_length(hush__bev_bev(b)->output) > 0) {
		return;
	}
	int rc = hush_conn_shutdown(h->conn);
	if (rc == 0) {
		b->flags |= HUSH__BEV_SHUT_SENT;
	} else if (rc != HUSH_ENOBUFS && rc != HUSH_ENOMEM) {
		hush__bev_fail(b, rc, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
	}
}

/* From the loop: the handshake on the socket set starts if the bufferevent is enabled. */
static void hsock_start(struct hush__bev *b)
{
	struct hsock *h = hsock_of(b);
	struct bufferevent *bev = hush__bev_bev(b);
	if (h->conn == NULL || !(bev->enabled & (EV_READ | EV_WRITE))) {
		return; /* hush__bev_enable() comes back here */
	}
	b->flags &= (uint16_t)~HUSH__BEV_START_WAIT;
	int rc = hush_conn_start_handshake(h->conn, b->hcfg, (enum hush_side)b->side);
	if (rc < 0) {
		hush__bev_fail(b, rc, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	hsock_apply_reading(b, false);
	hush__bev_arm_timers(b);
}

/* ---- The connection's callbacks ---- */

/* A callback of the connection begins: bev held and locked, or NULL if freed from
 * another thread (the loop's thread is about to free it). */
static struct bufferevent *enter(struct hsock *h)
{
	if (h->b.flags & HUSH__BEV_UNLINKED) {
		return NULL;
	}
	struct bufferevent *bev = hush__bev_bev(&h->b);
	bufferevent_incref_and_lock_(bev);
	return bev;
}

static void on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct hsock *h = arg;
	struct hush__bev *b = &h->b;
	struct bufferevent *bev = enter(h);
	if (bev == NULL) {
		return;
	}
	size_t room = hush__bev_input_room(b);
	struct hush_buf *buf = room < len || !hush__bev_input_copies(len) ? hush_conn_keep_data(c)
									  : NULL;
	if (hush__bev_input(b, data, len, buf) == 1 && h->conn != NULL) {
		/* No more records until the rest is in: the connection stops here. */
		hush_conn_pause_reading(c);
	}
	bufferevent_decref_and_unlock_(bev);
}

static void on_writable(struct hush_conn *c, void *arg)
{
	struct hsock *h = arg;
	struct bufferevent *bev = hush__bev_bev(&h->b);
	(void)c;
	if (h->b.flags & (HUSH__BEV_PUMPING | HUSH__BEV_UNLINKED)) {
		return;
	}
	bufferevent_incref_and_lock_(bev);
	hsock_pump(&h->b);
	hush__bev_maybe_writecb(&h->b, 0);
	bufferevent_decref_and_unlock_(bev);
}

static void on_open(struct hsock *h, struct hush_conn *c)
{
	struct hush__bev *b = &h->b;
	struct bufferevent *bev = hush__bev_bev(b);
	struct hush_handshake_result res;
	if (b->hcfg != NULL && hush_conn_handshake_result(c, &res) == 0 && res.has_remote_static &&
	    hush__bev_keep_peer_key(b, res.remote_static) < 0) {
		hush__bev_fail(b, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	b->flags |= HUSH__BEV_OPEN;
	if (b->side == HUSH_SIDE_CLIENT) {
		bufferevent_socket_set_conn_address_fd_(bev, h->fd);
	}
	hsock_apply_reading(b, false);
	hush__bev_arm_timers(b);
	/* As bufferevent_openssl: CONNECTED when a handshake ended, on both sides; none
	 * when raw keys start the connection open. */
	if (b->hcfg != NULL) {
		bufferevent_run_eventcb_(bev, BEV_EVENT_CONNECTED, 0);
	}
	hsock_pump(b);
}

static void on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct hsock *h = arg;
	struct hush__bev *b = &h->b;
	struct bufferevent *bev = enter(h);
	if (bev == NULL) {
		return;
	}
	switch (ev) {
	case HUSH_CONN_EV_OPEN:
		on_open(h, c);
		break;
	case HUSH_CONN_EV_EOF:
		/* What the application wrote before it learns of the end goes out first: a
		 * request read together with the peer's close record was answered from the
		 * read callback, and evhttp frees the connection at the EOF. A socket
		 * bufferevent behaves alike, since it sees a FIN only on a later read. */
		hsock_pump(b);
		if (h->conn != NULL) {
			int rc = hush_conn_flush(h->conn);
			(void)rc; /* a failure is the connection's to report */
		}
		if (h->conn == NULL) {
			break; /* it failed meanwhile, and said so */
		}
		/* As a socket bufferevent does at EOF: reading stops, then the event. */
		bufferevent_disable(bev, EV_READ);
		bufferevent_run_eventcb_(bev, BEV_EVENT_READING | BEV_EVENT_EOF, 0);
		break;
	case HUSH_CONN_EV_ERROR:
		if (err == HUSH_ETRUNCATED) {
			hush__bev_fail(b, err, BEV_EVENT_READING | BEV_EVENT_EOF | BEV_EVENT_ERROR);
		} else if (err == HUSH_ETIMEDOUT && !(b->flags & HUSH__BEV_OPEN)) {
			hush__bev_fail(b, err, BEV_EVENT_TIMEOUT | BEV_EVENT_ERROR);
		} else {
			if (err == HUSH_ECONNRESET) {
				errno = ECONNRESET;
			}
			hush__bev_fail(b, err, BEV_EVENT_READING | BEV_EVENT_ERROR);
		}
		break;
	case HUSH_CONN_EV_SHUTDOWN:
		hush__bev_arm_write_timer(b);
		/* libevent's own types tell the writer nothing of a BEV_FINISHED flush. */
		if (!(b->flags & HUSH__BEV_SHUT_QUIET)) {
			bufferevent_run_eventcb_(bev, HUSH_BEV_EVENT_SHUTDOWN, 0);
		}
		break;
	}
	bufferevent_decref_and_unlock_(bev);
}

static const struct hush_conn_callbacks hsock_cb = {on_data, on_writable, on_event};

/* ---- Sockets ---- */

/* Drops the connection on the current socket (which stays open: its owner closes it). */
static void drop_conn(struct hsock *h)
{
	hsock_halt(&h->b);
	hush__bev_forget_peer_key(&h->b);
	hush__bev_drop_held(&h->b);
	h->b.flags &= (uint16_t)~(HUSH__BEV_OPEN | HUSH__BEV_SHUT_REQ | HUSH__BEV_SHUT_SENT |
				  HUSH__BEV_WROTE | HUSH__BEV_START_WAIT | HUSH__BEV_SHUT_QUIET);
}

/* A socket for the bufferevent: a connection on it, keyed by a new handshake or by the
 * raw key, which is spent then. Returns 0 or a HUSH_E* code (stored). */
static int set_fd(struct hsock *h, int fd)
{
	struct hush__bev *b = &h->b;
	drop_conn(h);
	h->fd = fd;
	if (fd < 0) {
		/* evhttp lets go of a failed socket before it tells the application:
		 * why it failed stays until a new connection starts. */
		hush__bev_arm_timers(b);
		return 0;
	}
	b->err = 0;
	int rc = HUSH_ESTATE; /* raw keys serve one connection only: a nonce is never reused */
	if (b->hcfg == NULL && b->key_len == 0) {
		goto fail;
	}
	struct hush_conn_config ccfg;
	hush_conn_config_init(&ccfg);
	ccfg.flags = 0; /* the bufferevent closes the socket, per BEV_OPT_CLOSE_ON_FREE */
	ccfg.write_high_water = 1; /* on_writable each time the queue drains */
	ccfg.write_low_water = 0;
	if (b->max_send_frame != 0) {
		ccfg.max_send_frame = b->max_send_frame;
	}
	if (b->recv_limit != 0) {
		ccfg.recv_limit = b->recv_limit;
	}
	if (b->hs_timeout_ms != 0) {
		ccfg.handshake_timeout_ms = b->hs_timeout_ms;
	}
	rc = hush__conn_new_guarded(&h->conn, b->loop, fd, &ccfg, &hsock_cb, h,
				    (b->flags & HUSH__BEV_THREADSAFE) ? guard : NULL);
	if (rc < 0) {
		h->conn = NULL;
		goto fail;
	}
	if (b->hcfg != NULL) {
		/* Started from the loop, and only while the bufferevent is enabled, as
		 * bufferevent_openssl's handshake runs only on its enabled events: a
		 * bufferevent disabled right after it was made takes no part in a
		 * handshake. The configuration is checked now. */
		rc = hush__handshake_check_config(b->hcfg, (enum hush_side)b->side);
		if (rc == 0) {
			b->flags |= HUSH__BEV_START_WAIT;
			hush__bev_hand_to_loop(b, EV_WRITE);
		}
	} else {
		rc = hush_conn_start_raw(h->conn, (enum hush_record_protocol)b->rp, b->u.key,
					 b->key_len, (enum hush_side)b->side);
		hush__bev_wipe_key(b); /* spent: a second socket is refused */
	}
	if (rc < 0) {
		drop_conn(h);
		goto fail;
	}
	hsock_apply_reading(b, false);
	hush__bev_arm_timers(b);
	return 0;
fail:
	b->err = rc;
	return rc;
}

/* ---- The type's operations ---- */

/*
 * A best-effort goodbye from a bufferevent being freed: when everything written has
 * left, the close record tells the peer this was a clean end, if the socket takes it
 * now. Only on a socket the bufferevent owns: another one may have been closed and its
 * number reused already.
 */
static void goodbye(struct hsock *h)
{
	struct hush__bev *b = &h->b;
	struct bufferevent *bev = hush__bev_bev(b);
	bool own_fd = (bufferevent_get_options_(bev) & BEV_OPT_CLOSE_ON_FREE) != 0;
	if (own_fd && h->conn != NULL && (b->flags & HUSH__BEV_OPEN) &&
	    !(b->flags & HUSH__BEV_SHUT_SENT) && hush_conn_queued(h->conn) == 0 &&
	    evbuffer_get_length(bev->output) == 0 && hush_conn_shutdown(h->conn) == 0) {
		b->flags |= HUSH__BEV_SHUT_SENT;
		int rc = hush_conn_flush(h->conn);
		(void)rc; /* best effort: the connection goes anyway */
	}
}

/* The connection goes, with a best-effort goodbye, and the socket if it is ours. */
static void release(struct hsock *h)
{
	struct bufferevent *bev = hush__bev_bev(&h->b);
	bool own_fd = (bufferevent_get_options_(bev) & BEV_OPT_CLOSE_ON_FREE) != 0;
	goodbye(h);
	drop_conn(h);
	if (own_fd && h->fd >= 0) {
		close(h->fd);
	}
	h->fd = -1;
}

/* The last reference went. */
static void hsock_unlink(struct bufferevent *bev)
{
	struct hsock *h = hsock_of(hush__bev_of(bev));
	event_del(&bev->ev_read);
	event_del(&bev->ev_write);
	if (h->conn != NULL && hush__bev_foreign(&h->b)) {
		/* Freed from another thread: the connection is the loop thread's to free,
		 * when libevent finalizes the bufferevent there (hsock_destruct). */
		h->b.flags |= HUSH__BEV_UNLINKED;
		return;
	}
	release(h);
}

/* Finalized, from the loop's thread. */
static void hsock_destruct(struct bufferevent *bev)
{
	struct hsock *h = hsock_of(hush__bev_of(bev));
	if (h->b.flags & HUSH__BEV_UNLINKED) {
		release(h);
	}
	hush__bev_wipe_key(&h->b);
}

static int hsock_flush(struct bufferevent *bev, short what, enum bufferevent_flush_mode mode)
{
	struct hush__bev *b = hush__bev_of(bev);
	struct hsock *h = hsock_of(b);
	if (!hush__bev_flush_begin(b, what, mode)) {
		return 0;
	}
	size_t before = hush__bev_pending_out(b);
	hsock_pump(b);
	if (h->conn == NULL || hush_conn_flush(h->conn) < 0) {
		return -1;
	}
	return hush__bev_pending_out(b) < before ? 1 : 0;
}

static int hsock_ctrl(struct bufferevent *bev, enum hush__bev_ctrl_op op,
		      union hush__bev_ctrl_data *data)
{
	struct hush__bev *b = hush__bev_of(bev);
	struct hsock *h = hsock_of(b);
	switch (op) {
	case HUSH__BEV_CTRL_SET_FD:
		if (hush__bev_foreign(b)) {
			b->err = HUSH_ESTATE; /* a connection is made on the loop's thread */
			return -1;
		}
		return set_fd(h, data->fd) < 0 ? -1 : 0;
	case HUSH__BEV_CTRL_GET_FD:
		data->fd = h->fd;
		return 0;
	case HUSH__BEV_CTRL_CANCEL_ALL:
		/* Only bufferevent_free() asks this, before it drops its reference: the
		 * goodbye goes now, not when the last reference goes, because the caller
		 * may shut the socket down right after (evhttp_connection_free() does,
		 * while hush's own callback still holds a reference). A name lookup
		 * started by bufferevent_socket_connect_hostname() holds its own
		 * reference and ends on its own. */
		if (!hush__bev_foreign(b)) {
			goodbye(h);
			/* Nothing of the connection outlives bufferevent_free() on the loop's
			 * thread, though libevent finalizes the bufferevent later (a deferred
			 * callback may hold a reference): so hush_loop_free() may follow at
			 * once. The socket is closed at the finalization, as libevent's socket
			 * type does. */
			drop_conn(h);
			b->flags &= (uint16_t)~HUSH__BEV_THREADSAFE;
		}
		return 0;
	case HUSH__BEV_CTRL_GET_UNDERLYING:
	default:
		return -1;
	}
}

static const struct hush__bev_flavour hsock_flavour = {
	.ops = HUSH__BEV_OPS("hush", hsock_unlink, hsock_destruct, hsock_flush,
			     hsock_ctrl),
	.link = hsock_link,
	.queued = hsock_queued,
	.pump = hsock_pump,
	.apply_reading = hsock_apply_reading,
	.start = hsock_start,
	.halt = hsock_halt,
};

/* ---- Construction ---- */

struct bufferevent *hush_bufferevent_socket_new(struct event_base *base, int fd,
						const struct hush_bufferevent_config *cfg,
						int options)
{
	if (base == NULL || hush_bufferevent_config_check(cfg) < 0 || cfg->loop == NULL ||
	    cfg->loop->base != base) {
		return NULL;
	}
	/* The block below has the size of the libevent hush was built against: refused
	 * unless the running one has the same layout (bufferevent-abi.c). */
	if (hush_bufferevent_check_libevent(base) < 0) {
		return NULL;
	}
	struct hsock *h = event_mm_calloc_(1, sizeof(*h));
	if (h == NULL) {
		return NULL;
	}
	h->fd = -1;
	bool ready;
	if (hush__bev_init(&h->b, base, &hsock_flavour, cfg, options, &ready) < 0) {
		if (ready) {
			bufferevent_free(hush__bev_bev(&h->b)); /* destruct wipes the key */
		} else {
			event_mm_free_(h);
		}
		return NULL;
	}
	/* Last, so that a constructor failing otherwise leaves the key unspent; nothing is
	 * sent before the application runs the loop. */
	if ((fd >= 0 && set_fd(h, fd) < 0) ||
	    (cfg->handshake == NULL && hush__bev_claim_raw_key(cfg) < 0)) {
		/* The caller keeps fd: nothing was taken. */
		drop_conn(h);
		h->fd = -1;
		bufferevent_free(hush__bev_bev(&h->b));
		return NULL;
	}
	return hush__bev_bev(&h->b);
}
