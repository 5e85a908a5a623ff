/*
 * The socket flavour of hush bufferevents: a bufferevent type of hush's own (type
 * "hush"), whose socket I/O is a hush_conn and so the ReadOnReady path. Because it is a
 * type, not a filter over a socket bufferevent, it takes a socket through
 * bufferevent_setfd() and works with bufferevent_socket_connect(), as evhttp needs.
 * See include/hush/bufferevent.h for the contract and docs/DESIGN.md, "Bufferevents",
 * for how it fits libevent.
 *
 * libevent's struct bufferevent_private comes first (struct hush__bev_private), then
 * hush's part. libevent frees the whole block with its allocator once the bufferevent
 * is finalized, so the block comes from libevent's allocator too.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include <hush/bufferevent.h>

#include "handshake/handshake-internal.h"
#include "transport/bufferevent-internal.h"
#include "transport/libevent-bev.h"
#include "transport/transport-internal.h"

/* Plaintext of a record at least this long reaches the input evbuffer by reference to
 * its pool buffer; shorter plaintext is copied, so a few bytes the application has not
 * drained never pin a whole read buffer. */
#define BYREF_MIN 1024u
/* Plaintext moved from the output evbuffer into the connection's queue while the
 * queue holds less than this; the rest waits in the output evbuffer. */
#define PUMP_MAX (256u * 1024u)

enum {
	HS_THREADSAFE = 1u << 0,  /* made with BEV_OPT_THREADSAFE */
	HS_OPEN = 1u << 1,        /* records flow */
	HS_SHUT_REQ = 1u << 2,    /* hush_bufferevent_shutdown() was called */
	HS_SHUT_SENT = 1u << 3,   /* hush_conn_shutdown() accepted the close */
	HS_PUMPING = 1u << 4,     /* inside pump(): on_writable only notes progress */
	HS_WROTE = 1u << 5,       /* bytes moved since the last write callback */
	HS_WANT_READ = 1u << 6,   /* libevent has reading enabled and not suspended */
	HS_UNLINKED = 1u << 7,    /* freed from another thread: the loop's thread finishes */
	HS_START_WAIT = 1u << 8,  /* the handshake starts from the loop, once enabled */
	HS_SHUT_QUIET = 1u << 9,  /* asked by bufferevent_flush(BEV_FINISHED): no event */
};

/*
 * The rest of a record the read high watermark stopped: it waits here, in the pool
 * buffer it was opened in, and enters the input as the application drains. Allocated
 * only while something waits.
 */
struct held {
	struct hush_buf *buf; /* one reference, ours */
	const uint8_t *p;
	size_t len;
};

struct hsock {
	struct hush__bev_private p; /* first: libevent's part, holding struct bufferevent */
	struct hush_loop *loop;
	struct hush_conn *conn;     /* NULL until a socket is set, and after it failed */
	const struct hush_handshake_config *hcfg; /* borrowed; NULL with raw keys */
	/* Raw keys: the key's copy, wiped and freed once a socket spent it (key_len != 0
	 * until then). Afterwards, or with a handshake: plaintext over the read high
	 * watermark, or NULL. Records flow only once the key is spent, so the two never
	 * coexist and share their room (an idle bufferevent stays 8 bytes smaller). */
	union {
		uint8_t *key;
		struct held *held;
	} u;
	uint8_t *peer_key;          /* the peer's verified static key, once open (XX) */
	uint32_t key_len;
	uint32_t max_send_frame;
	uint32_t recv_limit;
	uint32_t hs_timeout_ms;
	size_t timer_queued;        /* queued bytes when the write timer was armed */
	int fd;
	int err;
	uint16_t flags;
	uint8_t rp;
	uint8_t side;
};

static const struct hush__bev_ops hsock_ops;

static struct hsock *hsock_of(struct bufferevent *bev)
{
	return (struct hsock *)(void *)bev;
}

static struct bufferevent *bev_of(struct hsock *h)
{
	return &h->p.u.bev;
}

/*
 * Threads: a hush_conn and its loop are used from the loop's thread only. With
 * BEV_OPT_THREADSAFE the application may call into the bufferevent from any thread,
 * holding its lock; what those calls would do to the connection is handed to the
 * loop's thread instead, by activating ev_write (pump) or ev_read (reading state) with
 * EV_WRITE or EV_READ, which the timers' callbacks tell apart from EV_TIMEOUT. The loop
 * runs the connection inside the bufferevent's lock (the connection's guard), so state
 * read under the lock is consistent.
 */
static bool foreign(const struct hsock *h)
{
	return (h->flags & HS_THREADSAFE) &&
	       atomic_load_explicit(&h->loop->thread, memory_order_relaxed) !=
		       (unsigned long)pthread_self();
}

static void hand_to_loop(struct hsock *h, short what)
{
	struct bufferevent *bev = bev_of(h);
	if (!(h->flags & HS_UNLINKED)) {
		event_active(what == EV_READ ? &bev->ev_read : &bev->ev_write, what, 1);
	}
}

static void guard(void *arg, bool enter)
{
	struct bufferevent *bev = bev_of(arg);
	if (enter) {
		bufferevent_lock(bev);
	} else {
		bufferevent_unlock(bev);
	}
}

bool hush__bev_is_sock(const struct bufferevent *bev)
{
	return bev->be_ops == (const void *)&hsock_ops;
}

int hush__bev_sock_error(struct bufferevent *bev)
{
	return hsock_of(bev)->err;
}

/*
 * ---- Timeouts: ev_read and ev_write are hush's timers, not socket events ----
 *
 * Whether a timer is armed is asked of libevent, not remembered: libevent arms ev_write
 * itself too, in bufferevent_socket_connect() (the connect timeout evhttp sets), and a
 * timer left behind would keep the loop alive after the connection is gone.
 */

static bool timer_armed(struct event *ev)
{
	return event_pending(ev, EV_TIMEOUT, NULL) != 0;
}

/*
 * Armed while reading is enabled and not suspended (by the read high watermark or a
 * rate limit), as libevent's socket type arms its read event. With no socket yet both
 * timers run as libevent's socket type runs them then: whenever enabled.
 */
static void arm_read_timer(struct hsock *h)
{
	struct bufferevent *bev = bev_of(h);
	if (evutil_timerisset(&bev->timeout_read) && (h->flags & HS_WANT_READ) &&
	    (h->conn != NULL || h->fd < 0)) {
		event_add(&bev->ev_read, &bev->timeout_read);
	} else if (timer_armed(&bev->ev_read)) {
		event_del(&bev->ev_read);
	}
}

static size_t pending_out(struct hsock *h)
{
	size_t n = evbuffer_get_length(bev_of(h)->output);
	if (h->conn != NULL) {
		n += hush_conn_queued(h->conn);
	}
	return n;
}

/*
 * Armed while bytes wait to go out; it fires only if they made no progress. Until the
 * handshake ends it is armed regardless, as bufferevent_openssl's handshake runs under
 * the bufferevent's timeouts: it is the connect timeout evhttp sets (and arms itself,
 * through bufferevent_socket_connect()). A connection that failed has no timer.
 */
static void arm_write_timer(struct hsock *h)
{
	struct bufferevent *bev = bev_of(h);
	size_t waiting = pending_out(h);
	bool armed = timer_armed(&bev->ev_write);
	bool connecting = h->conn != NULL && !(h->flags & HS_OPEN);
	if (evutil_timerisset(&bev->timeout_write) && (bev->enabled & EV_WRITE) &&
	    ((h->conn != NULL && (waiting > 0 || connecting)) || h->fd < 0)) {
		if (!armed) {
			h->timer_queued = waiting;
			event_add(&bev->ev_write, &bev->timeout_write);
		}
	} else if (armed) {
		event_del(&bev->ev_write);
	}
}

/* What the read high watermark held back, or NULL (see struct hsock's union). */
static struct held *held_of(const struct hsock *h)
{
	return h->key_len == 0 ? h->u.held : NULL;
}

static void apply_reading(struct hsock *h)
{
	if (h->conn == NULL) {
		return;
	}
	if ((h->flags & HS_WANT_READ) && held_of(h) != NULL) {
		/* What the watermark held back goes first, from the loop: this may run
		 * inside the application's own drain of its input. */
		hand_to_loop(h, EV_READ);
	} else if (h->flags & HS_WANT_READ) {
		/* Records already read are delivered now, without more socket bytes:
		 * draining below the read high watermark lands here. */
		hush_conn_resume_reading(h->conn);
	} else {
		hush_conn_pause_reading(h->conn);
	}
}

static void unref_buf(const void *data, size_t len, void *arg);
static void fail(struct hsock *h, int err, short what);

/* How much more plaintext the input takes under the read high watermark. */
static size_t input_room(struct hsock *h)
{
	struct bufferevent *bev = bev_of(h);
	size_t high = bev->wm_read.high;
	if (high == 0) {
		return SIZE_MAX;
	}
	size_t have = evbuffer_get_length(bev->input);
	return have < high ? high - have : 0;
}

/*
 * Adds n bytes at p, inside pool buffer b (NULL: copied), to the input: by reference
 * from BYREF_MIN bytes on, taking one of the caller's references to b with it when
 * give_ref, else a new one. Returns 0 or -1 (out of memory; nothing added or taken).
 */
static int add_input(struct hsock *h, const uint8_t *p, size_t n, struct hush_buf *b,
		     bool give_ref)
{
	struct evbuffer *in = bev_of(h)->input;
	if (b == NULL || n < BYREF_MIN) {
		if (evbuffer_add(in, p, n) < 0) {
			return -1;
		}
		if (b != NULL && give_ref) {
			hush_buf_release(b);
		}
		return 0;
	}
	if (!give_ref) {
		hush_buf_ref(b);
	}
	if (evbuffer_add_reference(in, p, n, unref_buf, b) < 0) {
		if (!give_ref) {
			hush_buf_release(b);
		}
		return -1;
	}
	return 0;
}

static void drop_held(struct hsock *h)
{
	struct held *hd = held_of(h);
	if (hd != NULL) {
		hush_buf_release(hd->buf);
		hush__free(hd, sizeof(*hd));
		h->u.held = NULL;
	}
}

/* Plaintext reached the input: rate limits, the read timer, the read callback. */
static void delivered(struct hsock *h, size_t n)
{
	struct bufferevent *bev = bev_of(h);
	/* Rate limits: may suspend reading, through hsock_disable(). Adding to the input
	 * may have done so too, at the read high watermark. */
	bufferevent_decrement_read_buckets_(&h->p, (ev_ssize_t)n);
	arm_read_timer(h);
	if (evbuffer_get_length(bev->input) >= bev->wm_read.low) {
		bufferevent_run_readcb_(bev, 0);
	}
}

/* From the loop: as much of what was held back as the watermark now takes. */
static void deliver_held(struct hsock *h)
{
	struct held *hd = held_of(h);
	size_t n = input_room(h);
	if (n > hd->len) {
		n = hd->len;
	}
	if (n == 0) {
		return; /* the application has not drained yet: its next drain comes back */
	}
	bool last = n == hd->len;
	if (add_input(h, hd->p, n, hd->buf, last) < 0) {
		fail(h, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	if (last) {
		hush__free(hd, sizeof(*hd)); /* its reference went with the plaintext */
		h->u.held = NULL;
	} else {
		hd->p += n;
		hd->len -= n;
	}
	delivered(h, n);
}

static void on_read_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hsock *h = arg;
	struct bufferevent *bev = bev_of(h);
	(void)fd;
	bufferevent_incref_and_lock_(bev);
	if (what & EV_READ) {
		/* Reading was switched from another thread, or the watermark lets more of
		 * what it held back in. */
		if (held_of(h) != NULL && (h->flags & HS_WANT_READ) && h->conn != NULL) {
			deliver_held(h);
		}
		if (held_of(h) == NULL) {
			apply_reading(h);
		}
		arm_read_timer(h);
	} else if (bev->enabled & EV_READ) {
		/* As a socket bufferevent does: reading stops, then the event. */
		bufferevent_disable(bev, EV_READ);
		bufferevent_run_eventcb_(bev, BEV_EVENT_TIMEOUT | BEV_EVENT_READING, 0);
	}
	bufferevent_decref_and_unlock_(bev);
}

static void pump(struct hsock *h);
static void maybe_writecb(struct hsock *h);
static void start_handshake(struct hsock *h);

static void on_write_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hsock *h = arg;
	struct bufferevent *bev = bev_of(h);
	(void)fd;
	bufferevent_incref_and_lock_(bev);
	if (what & EV_WRITE) {
		/* Written, enabled or shut down from another thread; or a handshake to
		 * start. */
		if (h->flags & HS_START_WAIT) {
			start_handshake(h);
		}
		pump(h);
		maybe_writecb(h);
		arm_write_timer(h);
		bufferevent_decref_and_unlock_(bev);
		return;
	}
	size_t now = pending_out(h);
	bool connecting = h->fd >= 0 && !(h->flags & HS_OPEN) && h->err == 0;
	if ((bev->enabled & EV_WRITE) &&
	    (connecting || h->fd < 0 || (now > 0 && now == h->timer_queued))) {
		/* No progress for a whole timeout (or no handshake yet, after
		 * bufferevent_socket_connect() armed this timer): a write timeout. */
		bufferevent_disable(bev, EV_WRITE);
		bufferevent_run_eventcb_(bev, BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING, 0);
	} else {
		arm_write_timer(h);
	}
	bufferevent_decref_and_unlock_(bev);
}

/* ---- Moving plaintext ---- */

static void unref_buf(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	hush_buf_release(arg);
}

static void fail(struct hsock *h, int err, short what)
{
	struct bufferevent *bev = bev_of(h);
	if (h->err == 0) {
		h->err = err;
	}
	if (h->conn != NULL) {
		hush_conn_free(h->conn); /* safe inside its callbacks */
		h->conn = NULL;
	}
	h->flags &= (uint16_t)~HS_OPEN;
	arm_read_timer(h);
	arm_write_timer(h);
	bufferevent_run_eventcb_(bev, what, 0);
}

/* Writes the application's callback once everything written has left hush. */
static void maybe_writecb(struct hsock *h)
{
	struct bufferevent *bev = bev_of(h);
	if ((h->flags & HS_WROTE) && h->conn != NULL && hush_conn_queued(h->conn) == 0 &&
	    evbuffer_get_length(bev->output) <= bev->wm_write.low) {
		h->flags &= (uint16_t)~HS_WROTE;
		bufferevent_run_writecb_(bev, 0);
	}
}

static void try_shutdown(struct hsock *h);

/* Moves plaintext from the output evbuffer into the connection's write queue. */
static void pump(struct hsock *h)
{
	struct bufferevent *bev = bev_of(h);
	if ((h->flags & HS_PUMPING) || h->conn == NULL || !(h->flags & HS_OPEN)) {
		return;
	}
	bool forced = (h->flags & HS_SHUT_REQ) != 0; /* shutdown flushes regardless */
	if (!(bev->enabled & EV_WRITE) && !forced) {
		return;
	}
	h->flags |= HS_PUMPING;
	struct evbuffer *out = bev->output;
	while (h->conn != NULL && !(h->flags & HS_SHUT_SENT)) {
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
		ev_ssize_t lim = bufferevent_get_write_max_(&h->p);
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
			h->flags &= (uint16_t)~HS_PUMPING;
			fail(h, rc, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
			return;
		}
		evbuffer_drain(out, n);
		bufferevent_decrement_write_buckets_(&h->p, (ev_ssize_t)n);
		h->flags |= HS_WROTE;
	}
	h->flags &= (uint16_t)~HS_PUMPING;
	arm_write_timer(h);
	if ((h->flags & HS_SHUT_REQ) && !(h->flags & HS_SHUT_SENT)) {
		try_shutdown(h);
	}
}

static void try_shutdown(struct hsock *h)
{
	if (h->conn == NULL || !(h->flags & HS_OPEN) || (h->flags & HS_SHUT_SENT) ||
	    evbuffer_get_length(bev_of(h)->output) > 0) {
		return;
	}
	int rc = hush_conn_shutdown(h->conn);
	if (rc == 0) {
		h->flags |= HS_SHUT_SENT;
	} else if (rc != HUSH_ENOBUFS && rc != HUSH_ENOMEM) {
		fail(h, rc, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
	}
}

static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hsock *h = arg;
	(void)buf;
	if (info->n_added > 0 && !(h->flags & HS_PUMPING)) {
		struct bufferevent *bev = bev_of(h);
		if (foreign(h)) {
			hand_to_loop(h, EV_WRITE);
			return;
		}
		bufferevent_incref_and_lock_(bev);
		pump(h);
		bufferevent_decref_and_unlock_(bev);
	}
}

/* ---- The connection's callbacks ---- */

static void on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct hsock *h = arg;
	struct bufferevent *bev = bev_of(h);
	if (h->flags & HS_UNLINKED) {
		return; /* the loop's thread is about to free it */
	}
	bufferevent_incref_and_lock_(bev);
	/* The input takes no more than the read high watermark allows, as with
	 * bufferevent_openssl: the rest of the record waits (struct held). */
	size_t n = input_room(h);
	if (n > len) {
		n = len;
	}
	struct hush_buf *b = n < len || n >= BYREF_MIN ? hush_conn_keep_data(c) : NULL;
	struct held *hd = NULL;
	if (n < len && (b == NULL || (hd = hush__calloc(sizeof(*hd))) == NULL)) {
		if (b != NULL) {
			hush_buf_release(b);
		}
		fail(h, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
		bufferevent_decref_and_unlock_(bev);
		return;
	}
	if (hd != NULL) {
		/* No more records until this is in: the connection stops here. */
		hd->buf = b;
		hd->p = data + n;
		hd->len = len - n;
		h->u.held = hd;
		hush_conn_pause_reading(c);
	}
	if (n > 0 && add_input(h, data, n, b, hd == NULL) < 0) {
		fail(h, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
	} else if (n > 0) {
		delivered(h, n);
	}
	bufferevent_decref_and_unlock_(bev);
}

static void on_writable(struct hush_conn *c, void *arg)
{
	struct hsock *h = arg;
	struct bufferevent *bev = bev_of(h);
	(void)c;
	if (h->flags & (HS_PUMPING | HS_UNLINKED)) {
		return;
	}
	bufferevent_incref_and_lock_(bev);
	pump(h);
	maybe_writecb(h);
	bufferevent_decref_and_unlock_(bev);
}

static void on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct hsock *h = arg;
	struct bufferevent *bev = bev_of(h);
	if (h->flags & HS_UNLINKED) {
		return; /* the loop's thread is about to free it */
	}
	bufferevent_incref_and_lock_(bev);
	switch (ev) {
	case HUSH_CONN_EV_OPEN: {
		struct hush_handshake_result res;
		if (h->hcfg != NULL && hush_conn_handshake_result(c, &res) == 0 &&
		    res.has_remote_static) {
			if (h->peer_key == NULL) {
				h->peer_key = hush__calloc(HUSH_KEY_SIZE);
			}
			if (h->peer_key == NULL) {
				fail(h, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
				break;
			}
			memcpy(h->peer_key, res.remote_static, HUSH_KEY_SIZE);
		}
		h->flags |= HS_OPEN;
		if (h->side == HUSH_SIDE_CLIENT) {
			bufferevent_socket_set_conn_address_fd_(bev, h->fd);
		}
		apply_reading(h);
		arm_read_timer(h);
		arm_write_timer(h);
		/* As bufferevent_openssl: CONNECTED when a handshake ended, on both sides;
		 * none when raw keys start the connection open. */
		if (h->hcfg != NULL) {
			bufferevent_run_eventcb_(bev, BEV_EVENT_CONNECTED, 0);
		}
		pump(h);
		break;
	}
	case HUSH_CONN_EV_EOF:
		/* What the application wrote before it learns of the end goes out first: a
		 * request read together with the peer's close record was answered from the
		 * read callback, and evhttp frees the connection at the EOF. A socket
		 * bufferevent behaves alike, since it sees a FIN only on a later read. */
		pump(h);
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
			fail(h, err, BEV_EVENT_READING | BEV_EVENT_EOF | BEV_EVENT_ERROR);
		} else if (err == HUSH_ETIMEDOUT && !(h->flags & HS_OPEN)) {
			fail(h, err, BEV_EVENT_TIMEOUT | BEV_EVENT_ERROR);
		} else {
			if (err == HUSH_ECONNRESET) {
				errno = ECONNRESET;
			}
			fail(h, err, BEV_EVENT_READING | BEV_EVENT_ERROR);
		}
		break;
	case HUSH_CONN_EV_SHUTDOWN:
		arm_write_timer(h);
		/* libevent's own types tell the writer nothing of a BEV_FINISHED flush. */
		if (!(h->flags & HS_SHUT_QUIET)) {
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
	if (h->conn != NULL) {
		hush_conn_free(h->conn);
		h->conn = NULL;
	}
	if (h->peer_key != NULL) {
		hush__free(h->peer_key, HUSH_KEY_SIZE);
		h->peer_key = NULL;
	}
	drop_held(h);
	h->flags &= (uint16_t)~(HS_OPEN | HS_SHUT_REQ | HS_SHUT_SENT | HS_WROTE | HS_START_WAIT |
				HS_SHUT_QUIET);
}

static void wipe_key(struct hsock *h)
{
	if (h->key_len != 0) {
		hush__free_secret(h->u.key, h->key_len);
		h->u.key = NULL;
		h->key_len = 0;
	}
}

/* A socket for the bufferevent: a connection on it, keyed by a new handshake or by the
 * raw key, which is spent then. Returns 0 or a HUSH_E* code (stored). */
static int set_fd(struct hsock *h, int fd)
{
	drop_conn(h);
	h->fd = fd;
	if (fd < 0) {
		/* evhttp lets go of a failed socket before it tells the application:
		 * why it failed stays until a new connection starts. */
		arm_read_timer(h);
		arm_write_timer(h);
		return 0;
	}
	h->err = 0;
	int rc = HUSH_ESTATE; /* raw keys serve one connection only: a nonce is never reused */
	if (h->hcfg == NULL && h->key_len == 0) {
		goto fail;
	}
	struct hush_conn_config ccfg;
	hush_conn_config_init(&ccfg);
	ccfg.flags = 0; /* the bufferevent closes the socket, per BEV_OPT_CLOSE_ON_FREE */
	ccfg.write_high_water = 1; /* on_writable each time the queue drains */
	ccfg.write_low_water = 0;
	if (h->max_send_frame != 0) {
		ccfg.max_send_frame = h->max_send_frame;
	}
	if (h->recv_limit != 0) {
		ccfg.recv_limit = h->recv_limit;
	}
	if (h->hs_timeout_ms != 0) {
		ccfg.handshake_timeout_ms = h->hs_timeout_ms;
	}
	rc = hush__conn_new_guarded(&h->conn, h->loop, fd, &ccfg, &hsock_cb, h,
				    (h->flags & HS_THREADSAFE) ? guard : NULL);
	if (rc < 0) {
		h->conn = NULL;
		goto fail;
	}
	if (h->hcfg != NULL) {
		/* Started from the loop, and only while the bufferevent is enabled, as
		 * bufferevent_openssl's handshake runs only on its enabled events: a
		 * bufferevent disabled right after it was made takes no part in a
		 * handshake. The configuration is checked now. */
		rc = hush__handshake_check_config(h->hcfg, (enum hush_side)h->side);
		if (rc == 0) {
			h->flags |= HS_START_WAIT;
			hand_to_loop(h, EV_WRITE);
		}
	} else {
		rc = hush_conn_start_raw(h->conn, (enum hush_record_protocol)h->rp, h->u.key,
					 h->key_len, (enum hush_side)h->side);
		wipe_key(h); /* spent: a second socket is refused */
	}
	if (rc < 0) {
		drop_conn(h);
		goto fail;
	}
	apply_reading(h);
	arm_read_timer(h);
	arm_write_timer(h);
	return 0;
fail:
	h->err = rc;
	return rc;
}

/* From the loop: the handshake on the socket set starts if the bufferevent is enabled. */
static void start_handshake(struct hsock *h)
{
	struct bufferevent *bev = bev_of(h);
	if (h->conn == NULL || !(bev->enabled & (EV_READ | EV_WRITE))) {
		return; /* hsock_enable() comes back here */
	}
	h->flags &= (uint16_t)~HS_START_WAIT;
	int rc = hush_conn_start_handshake(h->conn, h->hcfg, (enum hush_side)h->side);
	if (rc < 0) {
		fail(h, rc, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	apply_reading(h);
	arm_read_timer(h);
	arm_write_timer(h);
}

int hush__bev_sock_peer_key(struct bufferevent *bev, uint8_t *out)
{
	struct hsock *h = hsock_of(bev);
	bufferevent_incref_and_lock_(bev);
	int rc = HUSH_ESTATE;
	if (h->peer_key != NULL && (h->flags & HS_OPEN)) {
		memcpy(out, h->peer_key, HUSH_KEY_SIZE);
		rc = 0;
	}
	bufferevent_decref_and_unlock_(bev);
	return rc;
}

int hush__bev_sock_shutdown(struct bufferevent *bev)
{
	struct hsock *h = hsock_of(bev);
	bufferevent_incref_and_lock_(bev);
	int rc = 0;
	if (h->conn == NULL) {
		rc = h->err != 0 ? h->err : HUSH_ESTATE;
	} else if (!(h->flags & HS_SHUT_REQ) || (h->flags & HS_SHUT_QUIET)) {
		/* Before OPEN this waits: the pump at OPEN carries it out. After a
		 * BEV_FINISHED flush it only asks for the event. */
		h->flags |= HS_SHUT_REQ;
		h->flags &= (uint16_t)~HS_SHUT_QUIET;
		if (foreign(h)) {
			hand_to_loop(h, EV_WRITE);
		} else {
			pump(h);
		}
	}
	bufferevent_decref_and_unlock_(bev);
	return rc;
}

/* ---- The type's operations ---- */

static int hsock_enable(struct bufferevent *bev, short what)
{
	struct hsock *h = hsock_of(bev);
	bool away = foreign(h);
	if ((h->flags & HS_START_WAIT) && (what & (EV_READ | EV_WRITE))) {
		hand_to_loop(h, EV_WRITE);
	}
	if (what & EV_READ) {
		h->flags |= HS_WANT_READ;
		if (away) {
			hand_to_loop(h, EV_READ);
		} else {
			apply_reading(h);
			arm_read_timer(h);
		}
	}
	if (what & EV_WRITE) {
		if (away) {
			hand_to_loop(h, EV_WRITE);
		} else {
			pump(h);
			maybe_writecb(h);
			arm_write_timer(h);
		}
	}
	return 0;
}

static int hsock_disable(struct bufferevent *bev, short what)
{
	struct hsock *h = hsock_of(bev);
	if (what & EV_READ) {
		h->flags &= (uint16_t)~HS_WANT_READ;
		if (foreign(h)) {
			hand_to_loop(h, EV_READ);
		} else {
			apply_reading(h);
			arm_read_timer(h);
		}
	}
	if (what & EV_WRITE) {
		arm_write_timer(h);
	}
	return 0;
}

/*
 * A best-effort goodbye from a bufferevent being freed: when everything written has
 * left, the close record tells the peer this was a clean end, if the socket takes it
 * now. Only on a socket the bufferevent owns: another one may have been closed and its
 * number reused already.
 */
static void goodbye(struct hsock *h)
{
	struct bufferevent *bev = bev_of(h);
	bool own_fd = (bufferevent_get_options_(bev) & BEV_OPT_CLOSE_ON_FREE) != 0;
	if (own_fd && h->conn != NULL && (h->flags & HS_OPEN) && !(h->flags & HS_SHUT_SENT) &&
	    hush_conn_queued(h->conn) == 0 && evbuffer_get_length(bev->output) == 0) {
		if (hush_conn_shutdown(h->conn) == 0) {
			h->flags |= HS_SHUT_SENT;
			int rc = hush_conn_flush(h->conn);
			(void)rc; /* best effort: the connection goes anyway */
		}
	}
}

/* The connection goes, with a best-effort goodbye, and the socket if it is ours. */
static void release(struct hsock *h)
{
	struct bufferevent *bev = bev_of(h);
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
	struct hsock *h = hsock_of(bev);
	event_del(&bev->ev_read);
	event_del(&bev->ev_write);
	if (h->conn != NULL && foreign(h)) {
		/* Freed from another thread: the connection is the loop thread's to free,
		 * when libevent finalizes the bufferevent there (hsock_destruct). */
		h->flags |= HS_UNLINKED;
		return;
	}
	release(h);
}

/* Finalized, from the loop's thread. */
static void hsock_destruct(struct bufferevent *bev)
{
	struct hsock *h = hsock_of(bev);
	if (h->flags & HS_UNLINKED) {
		release(h);
	}
	wipe_key(h);
}

static int hsock_adj_timeouts(struct bufferevent *bev)
{
	struct hsock *h = hsock_of(bev);
	event_del(&bev->ev_read);
	event_del(&bev->ev_write);
	arm_read_timer(h);
	arm_write_timer(h);
	return 0;
}

static int hsock_flush(struct bufferevent *bev, short what, enum bufferevent_flush_mode mode)
{
	struct hsock *h = hsock_of(bev);
	if (!(what & EV_WRITE) || h->conn == NULL) {
		return 0;
	}
	if (mode == BEV_FINISHED && !(h->flags & HS_SHUT_REQ)) {
		/* As hush_bufferevent_shutdown() (it waits for OPEN), but quietly. */
		h->flags |= HS_SHUT_REQ | HS_SHUT_QUIET;
	}
	if (!(h->flags & HS_OPEN)) {
		return 0;
	}
	if (foreign(h)) {
		hand_to_loop(h, EV_WRITE);
		return 0;
	}
	size_t before = pending_out(h);
	pump(h);
	if (h->conn == NULL || hush_conn_flush(h->conn) < 0) {
		return -1;
	}
	return pending_out(h) < before ? 1 : 0;
}

static int hsock_ctrl(struct bufferevent *bev, enum hush__bev_ctrl_op op,
		      union hush__bev_ctrl_data *data)
{
	struct hsock *h = hsock_of(bev);
	switch (op) {
	case HUSH__BEV_CTRL_SET_FD:
		if (foreign(h)) {
			h->err = HUSH_ESTATE; /* a connection is made on the loop's thread */
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
		if (!foreign(h)) {
			goodbye(h);
			/* Nothing of the connection outlives bufferevent_free() on the loop's
			 * thread, though libevent finalizes the bufferevent later (a deferred
			 * callback may hold a reference): so hush_loop_free() may follow at
			 * once. The socket is closed at the finalization, as libevent's socket
			 * type does. */
			drop_conn(h);
			h->flags &= (uint16_t)~HS_THREADSAFE;
		}
		return 0;
	case HUSH__BEV_CTRL_GET_UNDERLYING:
	default:
		return -1;
	}
}

static const struct hush__bev_ops hsock_ops = {
	.type = "hush",
	.mem_offset = 0,
	.enable = hsock_enable,
	.disable = hsock_disable,
	.unlink = hsock_unlink,
	.destruct = hsock_destruct,
	.adj_timeouts = hsock_adj_timeouts,
	.flush = hsock_flush,
	.ctrl = hsock_ctrl,
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
	if (cfg->handshake == NULL) {
		h->u.key = hush__calloc(cfg->key_len);
		if (h->u.key == NULL) {
			event_mm_free_(h);
			return NULL;
		}
		memcpy(h->u.key, cfg->key, cfg->key_len);
		h->key_len = (uint32_t)cfg->key_len;
	}
	struct bufferevent *bev = bev_of(h);
	if (bufferevent_init_common_(&h->p, base, &hsock_ops, (enum bufferevent_options)options) <
	    0) {
		wipe_key(h);
		event_mm_free_(h);
		return NULL;
	}
	h->loop = cfg->loop;
	if (options & BEV_OPT_THREADSAFE) {
		h->flags |= HS_THREADSAFE;
	}
	h->hcfg = cfg->handshake;
	h->rp = (uint8_t)cfg->rp;
	h->side = (uint8_t)cfg->side;
	h->max_send_frame = (uint32_t)cfg->max_send_frame;
	h->recv_limit = (uint32_t)cfg->recv_limit;
	h->hs_timeout_ms = cfg->handshake_timeout_ms;
	h->fd = -1;
	event_assign(&bev->ev_read, base, -1, EV_FINALIZE, on_read_timer, h);
	event_assign(&bev->ev_write, base, -1, EV_FINALIZE, on_write_timer, h);
	if (evbuffer_add_cb(bev->output, out_cb, h) == NULL) {
		bufferevent_free(bev); /* destruct wipes the key */
		return NULL;
	}
	/* Last, so that a constructor failing otherwise leaves the key unspent; nothing is
	 * sent before the application runs the loop. */
	if ((fd >= 0 && set_fd(h, fd) < 0) ||
	    (cfg->handshake == NULL && hush__bev_claim_raw_key(cfg) < 0)) {
		/* The caller keeps fd: nothing was taken. */
		drop_conn(h);
		h->fd = -1;
		bufferevent_free(bev);
		return NULL;
	}
	return bev;
}
