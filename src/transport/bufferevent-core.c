/*
 * The machinery both flavours of hush bufferevents run on (bufferevent-internal.h):
 * the timers, the read high watermark, the write callback, enabling and disabling, and
 * the hand-over of work to the loop's thread. A flavour is reached only through its
 * struct hush__bev_flavour.
 */
#include <pthread.h>
#include <string.h>

#include <event2/buffer.h>

#include <hush/bufferevent.h>

#include "transport/bufferevent-core.h"
#include "transport/transport-internal.h"

/* Plaintext of a record at least this long reaches the input evbuffer by reference to
 * its pool buffer; shorter plaintext is copied, so a few bytes the application has not
 * drained never pin a whole read buffer. */
#define BYREF_MIN 1024u

/*
 * Threads: a hush_conn, a loop's cipher contexts and its pool are used from the loop's
 * thread only. With BEV_OPT_THREADSAFE the application may call into the bufferevent
 * from any thread, holding its lock; what those calls would do is handed to the loop's
 * thread instead, by activating ev_write (pump) or ev_read (reading state) with
 * EV_WRITE or EV_READ, which the timers' callbacks tell apart from EV_TIMEOUT. The loop
 * runs the flavour inside the bufferevent's lock, so state read under the lock is
 * consistent.
 */
bool hush__bev_foreign(const struct hush__bev *b)
{
	return (b->flags & HUSH__BEV_THREADSAFE) &&
	       atomic_load_explicit(&b->loop->thread, memory_order_relaxed) !=
		       (unsigned long)pthread_self();
}

void hush__bev_hand_to_loop(struct hush__bev *b, short what)
{
	struct bufferevent *bev = hush__bev_bev(b);
	if (!(b->flags & HUSH__BEV_UNLINKED)) {
		event_active(what == EV_READ ? &bev->ev_read : &bev->ev_write, what, 1);
	}
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
 * Whether the timer may be armed although its timeout is not set: never, so the timers
 * cost nothing per record without timeouts (event_pending() takes the base's lock).
 * Only a set timeout arms one (here, or in libevent's bufferevent_socket_connect(),
 * whose event_add() of a timer without a timeout adds nothing), and a timeout is
 * cleared only through bufferevent_set_timeouts(), which calls hush__bev_adj_timeouts():
 * both timers are deleted there.
 */
static bool timer_maybe_armed(struct event *ev, const struct timeval *timeout)
{
	return evutil_timerisset(timeout) && timer_armed(ev);
}

/*
 * Armed while reading is enabled and not suspended (by the read high watermark or a
 * rate limit), as libevent's socket type arms its read event. With no socket yet both
 * timers run as libevent's socket type runs them then: whenever enabled.
 */
void hush__bev_arm_read_timer(struct hush__bev *b)
{
	struct bufferevent *bev = hush__bev_bev(b);
	if (evutil_timerisset(&bev->timeout_read) && (b->flags & HUSH__BEV_WANT_READ) &&
	    hush__bev_fl(b)->link(b) != HUSH__BEV_DEAD) {
		event_add(&bev->ev_read, &bev->timeout_read);
	} else if (timer_maybe_armed(&bev->ev_read, &bev->timeout_read)) {
		event_del(&bev->ev_read);
	}
}

size_t hush__bev_pending_out(struct hush__bev *b)
{
	return evbuffer_get_length(hush__bev_bev(b)->output) + hush__bev_fl(b)->queued(b);
}

/*
 * Armed while bytes wait to go out; it fires only if they made no progress. Until the
 * handshake ends it is armed regardless, as bufferevent_openssl's handshake runs under
 * the bufferevent's timeouts: it is the connect timeout evhttp sets (and arms itself,
 * through bufferevent_socket_connect()). A bufferevent that failed has no timer.
 */
void hush__bev_arm_write_timer(struct hush__bev *b)
{
	struct bufferevent *bev = hush__bev_bev(b);
	if (!evutil_timerisset(&bev->timeout_write)) {
		return; /* nothing to arm, nothing armed (timer_maybe_armed) */
	}
	enum hush__bev_link link = hush__bev_fl(b)->link(b);
	size_t waiting = hush__bev_pending_out(b);
	bool armed = timer_armed(&bev->ev_write);
	bool connecting = link == HUSH__BEV_LIVE && !(b->flags & HUSH__BEV_OPEN);
	if (evutil_timerisset(&bev->timeout_write) && (bev->enabled & EV_WRITE) &&
	    ((link == HUSH__BEV_LIVE && (waiting > 0 || connecting)) ||
	     link == HUSH__BEV_UNSET)) {
		if (!armed) {
			b->timer_queued = waiting;
			event_add(&bev->ev_write, &bev->timeout_write);
		}
	} else if (armed) {
		event_del(&bev->ev_write);
	}
}

void hush__bev_arm_timers(struct hush__bev *b)
{
	hush__bev_arm_read_timer(b);
	hush__bev_arm_write_timer(b);
}

/* ---- Plaintext into the input, under the read high watermark ---- */

static void unref_buf(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	hush_buf_release(arg);
}

bool hush__bev_input_copies(size_t len)
{
	return len < BYREF_MIN;
}

/* What the read high watermark held back, or NULL (see struct hush__bev's union). */
static struct hush__bev_held *held_of(const struct hush__bev *b)
{
	return b->key_len == 0 ? b->u.held : NULL;
}

bool hush__bev_holding(const struct hush__bev *b)
{
	return held_of(b) != NULL;
}

size_t hush__bev_input_room(struct hush__bev *b)
{
	struct bufferevent *bev = hush__bev_bev(b);
	size_t high = bev->wm_read.high;
	if (high == 0) {
		return SIZE_MAX;
	}
	size_t have = evbuffer_get_length(bev->input);
	return have < high ? high - have : 0;
}

/*
 * Adds n bytes at p, inside pool buffer buf (NULL: copied), to the input: by reference
 * from BYREF_MIN bytes on, taking one of the caller's references to buf with it when
 * give_ref, else a new one. Returns 0 or -1 (out of memory; nothing added or taken).
 */
static int add_input(struct hush__bev *b, const uint8_t *p, size_t n, struct hush_buf *buf,
		     bool give_ref)
{
	struct evbuffer *in = hush__bev_bev(b)->input;
	if (buf == NULL || n < BYREF_MIN) {
		if (evbuffer_add(in, p, n) < 0) {
			return -1;
		}
		if (buf != NULL && give_ref) {
			hush_buf_release(buf);
		}
		return 0;
	}
	if (!give_ref) {
		hush_buf_ref(buf);
	}
	if (evbuffer_add_reference(in, p, n, unref_buf, buf) < 0) {
		if (!give_ref) {
			hush_buf_release(buf);
		}
		return -1;
	}
	return 0;
}

void hush__bev_drop_held(struct hush__bev *b)
{
	struct hush__bev_held *hd = held_of(b);
	if (hd != NULL) {
		hush_buf_release(hd->buf);
		hush__free(hd, sizeof(*hd));
		b->u.held = NULL;
	}
}

void hush__bev_wipe_key(struct hush__bev *b)
{
	if (b->key_len != 0) {
		hush__free_secret(b->u.key, b->key_len);
		b->u.key = NULL;
		b->key_len = 0;
	}
}

/* Plaintext reached the input: rate limits, the read timer, the read callback. */
static void delivered(struct hush__bev *b, size_t n)
{
	struct bufferevent *bev = hush__bev_bev(b);
	/* Rate limits: may suspend reading, through hush__bev_disable(). Adding to the
	 * input may have done so too, at the read high watermark. */
	bufferevent_decrement_read_buckets_(&b->p, (ev_ssize_t)n);
	hush__bev_arm_read_timer(b);
	if (evbuffer_get_length(bev->input) >= bev->wm_read.low) {
		bufferevent_run_readcb_(bev, 0);
	}
}

/*
 * The input takes no more than the read high watermark allows, as with
 * bufferevent_openssl: the rest of the record waits (struct hush__bev_held) and the
 * flavour takes no more records until it is in.
 */
int hush__bev_input(struct hush__bev *b, const uint8_t *p, size_t len, struct hush_buf *buf)
{
	size_t n = hush__bev_input_room(b);
	if (n > len || buf == NULL) {
		n = len; /* copied whole: nowhere to hold the rest */
	}
	struct hush__bev_held *hd = NULL;
	if (n < len && (hd = hush__calloc(sizeof(*hd))) == NULL) {
		if (buf != NULL) {
			hush_buf_release(buf);
		}
		hush__bev_fail(b, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return HUSH_ENOMEM;
	}
	if (hd != NULL) {
		hd->buf = buf;
		hd->p = p + n;
		hd->len = len - n;
		b->u.held = hd;
	}
	if (n > 0 && add_input(b, p, n, buf, hd == NULL) < 0) {
		hush__bev_fail(b, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return HUSH_ENOMEM;
	}
	if (n == 0 && hd == NULL && buf != NULL) {
		hush_buf_release(buf);
	}
	if (n > 0) {
		delivered(b, n);
	}
	return hd != NULL ? 1 : 0;
}

/* From the loop: as much of what was held back as the watermark now takes. */
static void deliver_held(struct hush__bev *b)
{
	struct hush__bev_held *hd = held_of(b);
	size_t n = hush__bev_input_room(b);
	if (n > hd->len) {
		n = hd->len;
	}
	if (n == 0) {
		return; /* the application has not drained yet: its next drain comes back */
	}
	bool last = n == hd->len;
	if (add_input(b, hd->p, n, hd->buf, last) < 0) {
		hush__bev_fail(b, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	if (last) {
		hush__free(hd, sizeof(*hd)); /* its reference went with the plaintext */
		b->u.held = NULL;
	} else {
		hd->p += n;
		hd->len -= n;
	}
	delivered(b, n);
}

static void apply_reading(struct hush__bev *b)
{
	if ((b->flags & HUSH__BEV_WANT_READ) && held_of(b) != NULL) {
		/* What the watermark held back goes first, from the loop: this may run
		 * inside the application's own drain of its input. */
		hush__bev_hand_to_loop(b, EV_READ);
	} else {
		hush__bev_fl(b)->apply_reading(b, false);
	}
}

/* ---- Events, the write callback ---- */

bool hush__bev_hs_may_advance(struct hush__bev *b)
{
	return (hush__bev_bev(b)->enabled & (EV_READ | EV_WRITE)) != 0;
}

void hush__bev_fail(struct hush__bev *b, int err, short what)
{
	if (b->err == 0) {
		b->err = err;
	}
	hush__bev_fl(b)->halt(b);
	b->flags &= (uint16_t)~HUSH__BEV_OPEN;
	hush__bev_arm_timers(b);
	bufferevent_run_eventcb_(hush__bev_bev(b), what, 0);
}

void hush__bev_maybe_writecb(struct hush__bev *b, int options)
{
	struct bufferevent *bev = hush__bev_bev(b);
	if ((b->flags & HUSH__BEV_WROTE) && hush__bev_fl(b)->link(b) == HUSH__BEV_LIVE &&
	    hush__bev_fl(b)->queued(b) == 0 && evbuffer_get_length(bev->output) <= bev->wm_write.low) {
		b->flags &= (uint16_t)~HUSH__BEV_WROTE;
		bufferevent_run_writecb_(bev, options);
	}
}

int hush__bev_keep_peer_key(struct hush__bev *b, const uint8_t *key)
{
	if (b->peer_key == NULL) {
		b->peer_key = hush__calloc(HUSH_KEY_SIZE);
	}
	if (b->peer_key == NULL) {
		return HUSH_ENOMEM;
	}
	memcpy(b->peer_key, key, HUSH_KEY_SIZE);
	return 0;
}

void hush__bev_forget_peer_key(struct hush__bev *b)
{
	if (b->peer_key != NULL) {
		hush__free(b->peer_key, HUSH_KEY_SIZE);
		b->peer_key = NULL;
	}
}

int hush__bev_peer_key(struct hush__bev *b, uint8_t *out)
{
	struct bufferevent *bev = hush__bev_bev(b);
	bufferevent_incref_and_lock_(bev);
	int rc = HUSH_ESTATE;
	if (b->peer_key != NULL && (b->flags & HUSH__BEV_OPEN)) {
		memcpy(out, b->peer_key, HUSH_KEY_SIZE);
		rc = 0;
	}
	bufferevent_decref_and_unlock_(bev);
	return rc;
}

int hush__bev_shutdown(struct hush__bev *b)
{
	struct bufferevent *bev = hush__bev_bev(b);
	bufferevent_incref_and_lock_(bev);
	int rc = 0;
	if (hush__bev_fl(b)->link(b) != HUSH__BEV_LIVE) {
		rc = b->err != 0 ? b->err : HUSH_ESTATE;
	} else if (!(b->flags & HUSH__BEV_SHUT_REQ) || (b->flags & HUSH__BEV_SHUT_QUIET)) {
		/* Before OPEN this waits: the pump at OPEN carries it out. After a
		 * BEV_FINISHED flush it only asks for the event. */
		b->flags |= HUSH__BEV_SHUT_REQ;
		b->flags &= (uint16_t)~HUSH__BEV_SHUT_QUIET;
		if (hush__bev_foreign(b)) {
			hush__bev_hand_to_loop(b, EV_WRITE);
		} else {
			hush__bev_fl(b)->pump(b);
		}
	}
	bufferevent_decref_and_unlock_(bev);
	return rc;
}

bool hush__bev_flush_begin(struct hush__bev *b, short what, enum bufferevent_flush_mode mode)
{
	if (!(what & EV_WRITE) || hush__bev_fl(b)->link(b) != HUSH__BEV_LIVE) {
		return false;
	}
	if (mode == BEV_FINISHED && !(b->flags & HUSH__BEV_SHUT_REQ)) {
		/* As hush_bufferevent_shutdown() (it waits for OPEN), but quietly. */
		b->flags |= HUSH__BEV_SHUT_REQ | HUSH__BEV_SHUT_QUIET;
	}
	if (!(b->flags & HUSH__BEV_OPEN)) {
		return false;
	}
	if (hush__bev_foreign(b)) {
		hush__bev_hand_to_loop(b, EV_WRITE);
		return false;
	}
	return true;
}

/* ---- The timers' callbacks ---- */

static void on_read_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hush__bev *b = arg;
	struct bufferevent *bev = hush__bev_bev(b);
	(void)fd;
	bufferevent_incref_and_lock_(bev);
	if (what & EV_READ) {
		/* Reading was switched from another thread, or the watermark lets more of
		 * what it held back in. */
		if (held_of(b) != NULL && (b->flags & HUSH__BEV_WANT_READ) &&
		    hush__bev_fl(b)->link(b) == HUSH__BEV_LIVE) {
			deliver_held(b);
		}
		if (held_of(b) == NULL) {
			hush__bev_fl(b)->apply_reading(b, true);
		}
		hush__bev_arm_read_timer(b);
	} else if (bev->enabled & EV_READ) {
		/* As a socket bufferevent does: reading stops, then the event. */
		bufferevent_disable(bev, EV_READ);
		bufferevent_run_eventcb_(bev, BEV_EVENT_TIMEOUT | BEV_EVENT_READING, 0);
	}
	bufferevent_decref_and_unlock_(bev);
}

static void on_write_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hush__bev *b = arg;
	struct bufferevent *bev = hush__bev_bev(b);
	(void)fd;
	bufferevent_incref_and_lock_(bev);
	if (what & EV_WRITE) {
		/* Written, enabled or shut down from another thread; or a handshake to
		 * start. */
		if (b->flags & HUSH__BEV_START_WAIT) {
			hush__bev_fl(b)->start(b);
		}
		hush__bev_fl(b)->pump(b);
		hush__bev_maybe_writecb(b, 0);
		hush__bev_arm_write_timer(b);
		bufferevent_decref_and_unlock_(bev);
		return;
	}
	enum hush__bev_link link = hush__bev_fl(b)->link(b);
	size_t now = hush__bev_pending_out(b);
	bool connecting = link != HUSH__BEV_UNSET && !(b->flags & HUSH__BEV_OPEN) && b->err == 0;
	if ((bev->enabled & EV_WRITE) &&
	    (connecting || link == HUSH__BEV_UNSET || (now > 0 && now == b->timer_queued))) {
		/* No progress for a whole timeout (or no handshake yet, after
		 * bufferevent_socket_connect() armed this timer): a write timeout. */
		bufferevent_disable(bev, EV_WRITE);
		bufferevent_run_eventcb_(bev, BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING, 0);
	} else {
		hush__bev_arm_write_timer(b);
	}
	bufferevent_decref_and_unlock_(bev);
}

/* Plaintext written: moved on at once, or by the loop's thread. */
static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hush__bev *b = arg;
	(void)buf;
	if (info->n_added > 0 && !(b->flags & HUSH__BEV_PUMPING)) {
		struct bufferevent *bev = hush__bev_bev(b);
		if (hush__bev_foreign(b)) {
			hush__bev_hand_to_loop(b, EV_WRITE);
			return;
		}
		bufferevent_incref_and_lock_(bev);
		hush__bev_fl(b)->pump(b);
		bufferevent_decref_and_unlock_(bev);
	}
}

/* ---- The shared operations ---- */

int hush__bev_enable(struct bufferevent *bev, short what)
{
	struct hush__bev *b = hush__bev_of(bev);
	bool away = hush__bev_foreign(b);
	if ((b->flags & HUSH__BEV_START_WAIT) && (what & (EV_READ | EV_WRITE))) {
		hush__bev_hand_to_loop(b, EV_WRITE);
	}
	if (what & EV_READ) {
		b->flags |= HUSH__BEV_WANT_READ;
		if (away) {
			hush__bev_hand_to_loop(b, EV_READ);
		} else {
			apply_reading(b);
			hush__bev_arm_read_timer(b);
		}
	}
	if (what & EV_WRITE) {
		if (away) {
			hush__bev_hand_to_loop(b, EV_WRITE);
		} else {
			if (!(what & EV_READ)) {
				apply_reading(b); /* a held handshake goes on */
			}
			hush__bev_fl(b)->pump(b);
			/* The application's call: its write callback comes from the loop. */
			hush__bev_maybe_writecb(b, BEV_OPT_DEFER_CALLBACKS);
			hush__bev_arm_write_timer(b);
		}
	}
	return 0;
}

int hush__bev_disable(struct bufferevent *bev, short what)
{
	struct hush__bev *b = hush__bev_of(bev);
	if (what & EV_READ) {
		b->flags &= (uint16_t)~HUSH__BEV_WANT_READ;
		if (hush__bev_foreign(b)) {
			hush__bev_hand_to_loop(b, EV_READ);
		} else {
			apply_reading(b);
			hush__bev_arm_read_timer(b);
		}
	}
	if (what & EV_WRITE) {
		if (!(what & EV_READ)) {
			apply_reading(b); /* a handshake holds once neither is enabled */
		}
		hush__bev_arm_write_timer(b);
	}
	return 0;
}

int hush__bev_adj_timeouts(struct bufferevent *bev)
{
	struct hush__bev *b = hush__bev_of(bev);
	event_del(&bev->ev_read);
	event_del(&bev->ev_write);
	hush__bev_arm_timers(b);
	return 0;
}

/* ---- Construction ---- */

int hush__bev_init(struct hush__bev *b, struct event_base *base,
		   const struct hush__bev_flavour *fl, const struct hush_bufferevent_config *cfg,
		   int options, bool *libevent_ready)
{
	*libevent_ready = false;
	if (cfg->handshake == NULL) {
		b->u.key = hush__calloc(cfg->key_len);
		if (b->u.key == NULL) {
			return -1;
		}
		memcpy(b->u.key, cfg->key, cfg->key_len);
		b->key_len = (uint32_t)cfg->key_len;
	}
	struct bufferevent *bev = hush__bev_bev(b);
	if (bufferevent_init_common_(&b->p, base, &fl->ops, (enum bufferevent_options)options) <
	    0) {
		hush__bev_wipe_key(b);
		return -1;
	}
	*libevent_ready = true;
	b->loop = cfg->loop;
	if ((options & BEV_OPT_THREADSAFE) && b->loop != NULL) {
		b->flags |= HUSH__BEV_THREADSAFE;
	}
	b->hcfg = cfg->handshake;
	b->rp = (uint8_t)cfg->rp;
	b->side = (uint8_t)cfg->side;
	b->max_send_frame = (uint32_t)cfg->max_send_frame;
	b->recv_limit = (uint32_t)cfg->recv_limit;
	b->hs_timeout_ms = cfg->handshake_timeout_ms;
	event_assign(&bev->ev_read, base, -1, EV_FINALIZE, on_read_timer, b);
	event_assign(&bev->ev_write, base, -1, EV_FINALIZE, on_write_timer, b);
	if (evbuffer_add_cb(bev->output, out_cb, b) == NULL) {
		return -1;
	}
	return 0;
}
