/*
 * Secure connections: the state machine that runs a connection over its socket. A
 * connection is NEW, then in its HANDSHAKE phase (conn-handshake.c), then OPEN, moving
 * records between its socket, its read buffer (rbuf.c) and its write queue (wq.c), until
 * it has FAILED; the loop's events drive it (on_socket, on_pending, on_wake).
 *
 * An idle connection holds its struct, its record context (keys and counters only) and
 * one struct event; no buffer and no cipher context. See docs/DESIGN.md, "Transport".
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "record/record-internal.h"
#include "transport/conn-internal.h"

static void on_socket(evutil_socket_t fd, short what, void *arg);
static int send_sealed(struct hush_conn *c);
static void starve(struct hush_conn *c);
static void peer_closed(struct hush_conn *c);
static void conn_on_pending(void *item);
static void conn_on_wake(void *item);

static const struct hush__loop_ops conn_loop_ops = {
	.on_pending = conn_on_pending,
	.on_wake = conn_on_wake,
};

/* A function, not an exported object: an exported object gets an ODR indicator under
 * AddressSanitizer (__odr_asan.*), a global name outside hush_ in libhush.a. */
const struct hush__loop_ops *hush__conn_loop_ops(void)
{
	return &conn_loop_ops;
}

/* Whether timeout_ms have passed from since to now, both from now_ms(); false while now
 * reads earlier than since (see check_timeouts). Timeouts are below 2^31 ms. */
static bool elapsed(uint32_t now, uint32_t since, uint32_t timeout_ms)
{
	return (int32_t)(now - since) >= (int32_t)timeout_ms;
}

bool hush__conn_leave(struct hush_conn *c)
{
	if (--c->depth == 0 && (c->flags & F_FREEING)) {
		hush__conn_destroy(c);
		return false;
	}
	return true;
}

static void emit(struct hush_conn *c, enum hush_conn_event ev, int err)
{
	if (c->cfg->cb.on_event != NULL && !(c->flags & F_FREEING)) {
		c->cfg->cb.on_event(c, ev, err, c->arg);
	}
}

/* Cipher contexts: borrowed from the loop while the connection moves bytes. */
int hush__conn_ciphers_attach(struct hush_conn *c)
{
	if ((c->flags & F_CIPHERS) || pinned(c)) {
		return 0;
	}
	HUSH_GUARD(hush__loop_lend_ciphers(c->loop, c->rec));
	c->flags |= F_CIPHERS;
	return 0;
}

void hush__conn_ciphers_detach(struct hush_conn *c)
{
	if (!(c->flags & F_CIPHERS)) {
		return;
	}
	hush__loop_take_ciphers(c->loop, c->rec);
	c->flags &= ~(uint32_t)F_CIPHERS;
}

int hush__conn_schedule(struct hush_conn *c)
{
	if (c->flags & F_PENDING) {
		return 0;
	}
	HUSH_GUARD(hush__loop_add_pending(c->loop, c));
	c->flags |= F_PENDING;
	return 0;
}

/* ---- Pinned mode ---- */

/* The classic design: buffers for the connection's whole life (HUSH_CONN_PINNED). */
int hush__conn_pin_buffers(struct hush_conn *c)
{
	const struct hush_conn_config *cfg = &c->cfg->c;
	struct hush__rbuf rb = c->rb;
	HUSH_GUARD(hush__rbuf_acquire(&rb, c->loop->pool, cfg->read_size));
	int rc = hush__wq_reserve(&c->wq, c->loop->pool, cfg->max_send_frame);
	if (rc < 0) {
		if (c->rb.buf == NULL) {
			hush__rbuf_release(&rb);
		}
		return rc;
	}
	c->rb = rb;
	return 0;
}

/* ---- The handshake phase (conn-handshake.c runs it; this is its connection side) ---- */

/* Ends the handshake phase, if it runs: conn-handshake.c frees (and wipes) what it holds
 * and tells the listener, if one watches. */
static void hs_end(struct hush_conn *c)
{
	if (!(c->flags & F_HS)) {
		return;
	}
	hush__hs_free(c->hs);
	c->hs = NULL;
	c->flags &= ~(uint32_t)F_HS;
}

/*
 * Runs the handshake as far as the bytes at hand allow (hush__hs_step()) and sends what
 * it queued. OPEN, when due, is reported from the loop, with the records that followed
 * the last message still in the read buffer.
 */
static void hs_step(struct hush_conn *c)
{
	const struct hush__hs_io io = {c->loop, &c->rb, &c->wq, pinned(c)};
	unsigned events = 0;
	int rc = hush__hs_step(c->hs, &io, &events);
	if (rc == 0 && events != 0) {
		rc = hush__conn_schedule(c);
	}
	if (rc == 0 && (events & HUSH__HS_OPEN)) {
		c->flags |= F_OPEN_REPORT;
	}
	if (rc == 0) {
		rc = send_sealed(c);
	}
	if (rc < 0) {
		hush__conn_fail(c, rc);
		return;
	}
	hush__conn_update_interest(c);
}

/* ---- Teardown and failure ---- */

void hush__conn_destroy(struct hush_conn *c)
{
	event_del(&c->ev);
	if (c->flags & (F_PENDING | F_STARVED)) {
		hush__loop_forget(c->loop, c, &c->starved_slot);
	}
	hush__rbuf_release(&c->rb);
	hush__wq_clear(&c->wq);
	hush__conn_ciphers_detach(c);
	if (c->flags & F_HS) {
		hs_end(c);
	} else {
		hush_record_free(c->rec);
	}
	if (c->cfg->c.flags & HUSH_CONN_CLOSE_ON_FREE) {
		close(c->fd);
	}
	c->loop->nconns--;
	hush__loop_cfg_put(c->loop, (struct conn_cfg *)c->cfg);
	hush__free(c, sizeof(*c));
}

/* Fails the connection for good: stops its event, drops its buffers, reports err. */
void hush__conn_fail(struct hush_conn *c, int err)
{
	if (c->state == ST_FAILED) {
		return;
	}
	c->state = ST_FAILED;
	c->err = err;
	event_del(&c->ev);
	c->interest = 0;
	/* The peer learns at once that this end is gone, before the application frees
	 * it; nothing more is sent (no alert: docs/PROTOCOL.md). */
	shutdown(c->fd, SHUT_RDWR);
	hush__rbuf_release(&c->rb);
	hush__wq_clear(&c->wq);
	hush__conn_ciphers_detach(c);
	hs_end(c);
	/* Reported from the loop, so no API call ever calls back into the application. */
	c->flags |= F_ERR_REPORT;
	if (hush__conn_schedule(c) < 0) {
		c->flags &= ~(uint32_t)F_ERR_REPORT;
		emit(c, HUSH_CONN_EV_ERROR, err);
	}
}

/* ---- Event interest ---- */

/* Marks c->interest while the record deadline's timer runs (not an event flag). */
#define IN_PARTIAL 0x80u

/* Whether bytes of a record wait in rb for the rest, with a deadline configured. Only
 * while reading: a pause by the application, or a wait for pool buffers, holds records
 * for reasons that are not the peer's. */
static bool partial_pending_now(const struct hush_conn *c)
{
	return c->state == ST_OPEN && c->rb.buf != NULL && c->rb.len > 0 &&
	       c->cfg->c.record_timeout_ms != 0 && !(c->flags & (F_PAUSED | F_STARVED));
}

static bool partial_pending(const struct hush_conn *c)
{
	return (c->interest & IN_PARTIAL) && partial_pending_now(c);
}

/*
 * After bytes arrived and the records they completed were delivered: a completed record
 * is activity for the idle timeout, and a partial record that began in these bytes
 * starts its deadline. The bytes of a partial record are not activity, so trickling
 * one never keeps a connection alive. rs is rb.start before the records were opened.
 */
static void note_read_progress(struct hush_conn *c, bool had_partial, uint32_t rs)
{
	bool completed = c->rb.start != rs;
	uint32_t now = now_ms(c);
	if (completed) {
		c->last_read = now;
	}
	if (c->rb.len > 0 && (completed || !had_partial)) {
		c->partial_since = now;
	}
}

void hush__conn_update_interest(struct hush_conn *c)
{
	uint8_t want = 0;
	bool hs = c->state == ST_HANDSHAKE;
	if (c->state == ST_OPEN && !(c->flags & (F_PAUSED | F_STARVED | F_EOF | F_FREEING))) {
		want |= EV_READ;
	}
	/* A handshake reads until it finishes, paused or not: its bytes are not the
	 * application's. */
	if (hs && hush__hs_reading(c->hs) && !(c->flags & (F_STARVED | F_FREEING | F_HS_HELD))) {
		want |= EV_READ;
	}
	if ((c->state == ST_OPEN || hs) && (c->flags & F_WANT_WRITE)) {
		want |= EV_WRITE;
	}
	/* The record deadline's timer runs only while a partial record is pending: an
	 * idle connection keeps no timer for it. */
	if ((want & EV_READ) && partial_pending_now(c)) {
		want |= IN_PARTIAL;
	}
	if (want == c->interest) {
		return;
	}
	event_del(&c->ev);
	c->interest = want;
	want &= (uint8_t)~IN_PARTIAL;
	if (want == 0) {
		return;
	}
	event_assign(&c->ev, c->loop->base, c->fd, (short)(want | EV_PERSIST), on_socket, c);
	const struct hush_conn_config *cfg = &c->cfg->c;
	uint32_t t = 0;
	if (hs) {
		t = cfg->handshake_timeout_ms;
	} else if ((want & EV_READ) && cfg->read_timeout_ms != 0) {
		t = cfg->read_timeout_ms;
	}
	if (!hs && (want & EV_WRITE) && cfg->write_timeout_ms != 0 &&
	    (t == 0 || cfg->write_timeout_ms < t)) {
		t = cfg->write_timeout_ms;
	}
	if (c->interest & IN_PARTIAL) {
		t = t == 0 || cfg->record_timeout_ms < t ? cfg->record_timeout_ms : t;
	}
	if (t != 0) {
		/* Check at a quarter of the shortest timeout so expiry is found within 25%. */
		uint32_t tick = t / 4 ? t / 4 : 1;
		struct timeval tv = {tick / 1000, (tick % 1000) * 1000};
		event_add(&c->ev, &tv);
	} else {
		event_add(&c->ev, NULL);
	}
}


/* ---- Read path (ReadOnReady) ---- */

/* The outcome rc of getting read room for c: when the pool's budget is spent, c waits
 * for a buffer to come back (starve); any other failure fails c. Returns rc == 0. */
static bool read_room_ok(struct hush_conn *c, int rc)
{
	if (rc == HUSH_ENOBUFS) {
		starve(c);
	} else if (rc < 0) {
		hush__conn_fail(c, rc);
	}
	return rc == 0;
}

/* Borrows a read buffer (read_size bytes) for c unless it holds one. Returns whether c
 * has one. */
static bool acquire_rbuf(struct hush_conn *c)
{
	return read_room_ok(c, hush__rbuf_acquire(&c->rb, c->loop->pool, c->cfg->c.read_size));
}

/*
 * Receives into the read buffer's free room, at most max bytes, retrying on EINTR.
 * Returns the count (> 0), 0 at the peer's EOF, HUSH_EAGAIN when the socket has nothing
 * now, or the error that fails the connection (HUSH_ECONNRESET, HUSH_EIO). *short_read
 * (if not NULL) says whether fewer bytes came than were asked for.
 */
static ssize_t read_some(struct hush_conn *c, size_t max, bool *short_read)
{
	size_t room;
	uint8_t *at = hush__rbuf_tail(&c->rb, &room);
	size_t ask = room < max ? room : max;
	ssize_t n;
	do {
		n = recv(c->fd, at, ask, 0);
	} while (n < 0 && errno == EINTR);
	if (short_read != NULL) {
		*short_read = n > 0 && (size_t)n < ask;
	}
	if (n > 0) {
		hush__rbuf_filled(&c->rb, (size_t)n);
	} else if (n < 0) {
		n = errno == EAGAIN || errno == EWOULDBLOCK ? HUSH_EAGAIN
		    : errno == ECONNRESET		     ? HUSH_ECONNRESET
							     : HUSH_EIO;
	}
	return n;
}

/* Readable during the handshake: the bytes go to the handshake, and the buffer goes
 * back unless records followed its last message (they keep it until OPEN). */
static void hs_on_readable(struct hush_conn *c)
{
	if (!acquire_rbuf(c)) {
		return;
	}
	ssize_t n = read_some(c, SIZE_MAX, NULL);
	if (n == 0) {
		n = HUSH_ECLOSED; /* the peer went away mid-handshake */
	}
	if (n < 0 && n != HUSH_EAGAIN) {
		hush__conn_fail(c, (int)n);
		return;
	}
	hs_step(c);
	if (!dead(c) && c->rb.buf != NULL && c->rb.len == 0) {
		hush__rbuf_release(&c->rb);
	}
}

/* Delivers one record's plaintext; false when the connection went away or failed. */
static bool deliver(struct hush_conn *c, const struct hush_iovec *pt)
{
	c->stats.bytes_in += pt->len;
	if (pt->len == 0 || c->cfg->cb.on_data == NULL) {
		return true;
	}
	c->flags |= F_IN_DATA;
	c->cfg->cb.on_data(c, pt->base, pt->len, c->arg);
	c->flags &= ~(uint32_t)F_IN_DATA;
	return !dead(c);
}

/* Gives the read buffer back, with whatever it held. */
static void drop_rbuf(struct hush_conn *c)
{
	hush__rbuf_release(&c->rb);
	c->flags &= ~(uint32_t)F_RBUF_KEPT;
}

/*
 * The peer's close record arrived: its direction ended cleanly. Whatever follows it is
 * ignored, as TLS ignores data after close_notify (docs/PROTOCOL.md), and reading stops.
 */
static void peer_closed(struct hush_conn *c)
{
	drop_rbuf(c);
	c->flags |= F_EOF;
	hush__conn_update_interest(c);
	emit(c, HUSH_CONN_EV_EOF, 0);
}

/*
 * Opens and delivers every complete record in rb, stopping early when the application
 * pauses reading. *need is the size of the next record when known. Returns false when
 * the connection failed or went away.
 */
static bool drain(struct hush_conn *c, size_t *need)
{
	*need = 0;
	while (c->rb.len > 0 && !(c->flags & F_PAUSED)) {
		uint8_t *p = hush__rbuf_bytes(&c->rb);
		int rc = hush_record_parse(c->rec, p, c->rb.len, need);
		if (rc == HUSH_EAGAIN) {
			return true;
		}
		if (rc == 0) {
			struct hush_iovec pt;
			rc = hush_record_open(c->rec, p, *need, &pt);
			if (rc == 0) {
				hush__rbuf_consume(&c->rb, *need);
				*need = 0;
				if (pt.len == 0 && (c->flags & F_CLOSE_SIG)) {
					peer_closed(c);
					return false;
				}
				if (!deliver(c, &pt)) {
					return false;
				}
				continue;
			}
		}
		hush__conn_fail(c, rc);
		return false;
	}
	return true;
}

static void starve(struct hush_conn *c)
{
	if (hush__loop_add_starved(c->loop, c, &c->starved_slot) == 0) {
		c->flags |= F_STARVED;
		hush__conn_update_interest(c);
	}
	/* If even the list could not grow, reading stays enabled and the next readiness
	 * event tries again: slower, but nothing is lost. */
}

/*
 * Delivers the records already in rb and makes room for the rest of a partial one
 * (hush__rbuf_settle(); final at the end of a readiness event). Returns false when the
 * connection stopped (failed, freed, or starved for buffers).
 */
static bool prepare_rbuf(struct hush_conn *c, bool final)
{
	size_t need;
	if (!drain(c, &need)) {
		return false;
	}
	bool kept = (c->flags & F_RBUF_KEPT) != 0;
	unsigned how = (final ? HUSH__RBUF_FINAL : 0u) | (pinned(c) ? HUSH__RBUF_PINNED : 0u);
	int rc = hush__rbuf_settle(&c->rb, c->loop->pool, need, c->cfg->c.read_size, how, &kept);
	if (!kept) {
		c->flags &= ~(uint32_t)F_RBUF_KEPT;
	}
	return read_room_ok(c, rc);
}

/* The end of a readiness event: the buffer goes back at once unless it holds part of a
 * record (or, in pinned mode, for the connection's life). */
static void rbuf_idle(struct hush_conn *c)
{
	if (c->rb.buf == NULL || dead(c)) {
		return;
	}
	if (c->rb.len == 0 && !pinned(c)) {
		drop_rbuf(c);
		return;
	}
	if (!(c->flags & F_PAUSED)) {
		prepare_rbuf(c, true);
	}
}

/*
 * How much the next read may take. A buffer smaller than read_size holds a partial
 * record that waited between readiness events in a buffer sized for it: reading only
 * the rest of that record lets the buffer go back once the record is used
 * (hush__rbuf_settle), so the reads after it get read_size bytes each, with nothing
 * copied, instead of a whole event of reads the size of the small buffer.
 */
static size_t read_limit(struct hush_conn *c, size_t budget)
{
	if (c->rb.len == 0 || pinned(c) || hush_buf_capacity(c->rb.buf) >= c->cfg->c.read_size) {
		return budget;
	}
	size_t need = 0;
	if (hush_record_parse(c->rec, hush__rbuf_bytes(&c->rb), c->rb.len, &need) != HUSH_EAGAIN ||
	    need <= c->rb.len || need < HUSH_RECORD_OVERHEAD) {
		return budget; /* the length is not in yet, or drain reports what is wrong */
	}
	return need - c->rb.len < budget ? need - c->rb.len : budget;
}

static void on_readable(struct hush_conn *c)
{
	size_t budget = c->cfg->c.max_read_per_event;

	while (budget > 0 && !(c->flags & (F_PAUSED | F_EOF | F_STARVED)) && !dead(c)) {
		/* Deliver what is already here and make room for the rest of a partial
		 * record; this may also give back a buffer the application kept. */
		if (c->rb.buf != NULL && (!prepare_rbuf(c, false) || (c->flags & F_PAUSED))) {
			break;
		}
		if (!acquire_rbuf(c)) {
			return;
		}
		bool had_partial = c->rb.len > 0;
		bool short_read;
		ssize_t n = read_some(c, read_limit(c, budget), &short_read);
		if (n == HUSH_EAGAIN) {
			break;
		}
		if (n < 0) {
			hush__conn_fail(c, (int)n);
			return;
		}
		if (n == 0) {
			/* With the close signal, only the close record is a clean end. */
			if (c->rb.len > 0 || (c->flags & F_CLOSE_SIG)) {
				hush__conn_fail(c, HUSH_ETRUNCATED);
				return;
			}
			c->flags |= F_EOF;
			hush__conn_update_interest(c);
			emit(c, HUSH_CONN_EV_EOF, 0);
			break;
		}
		budget -= (size_t)n;
		uint32_t rs = c->rb.start;
		size_t need;
		if (!drain(c, &need)) {
			return;
		}
		note_read_progress(c, had_partial, rs);
		/* Fewer bytes than asked for: the socket had no more. Asking again would
		 * only return EAGAIN, one system call per event for nothing; what arrives
		 * later makes the socket readable again (the event is level-triggered). */
		if (short_read) {
			break;
		}
	}
	rbuf_idle(c);
}

/* ---- Write path ---- */

/* Sends sealed bytes until the socket refuses or nothing is left. */
static int send_sealed(struct hush_conn *c)
{
	for (;;) {
		struct iovec iov[64];
		int cnt = hush__wq_sealed(&c->wq, iov, 64);
		if (cnt == 0) {
			c->flags &= ~(uint32_t)F_WANT_WRITE;
			return 0;
		}
		struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
		ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				c->flags |= F_WANT_WRITE;
				return 0;
			}
			return errno == EPIPE ? HUSH_EPIPE
			       : errno == ECONNRESET ? HUSH_ECONNRESET
						     : HUSH_EIO;
		}
		c->last_write = now_ms(c);
		hush__wq_sent(&c->wq, (size_t)n, pinned(c));
	}
}

static void after_send_progress(struct hush_conn *c)
{
	const struct hush_conn_config *cfg = &c->cfg->c;
	if ((c->flags & F_OVER_HIGH) && c->wq.queued <= cfg->write_low_water) {
		c->flags &= ~(uint32_t)F_OVER_HIGH;
		if (c->cfg->cb.on_writable != NULL && !dead(c)) {
			c->cfg->cb.on_writable(c, c->arg);
		}
	}
	if (!dead(c) && (c->flags & F_SHUT_REQ) && !(c->flags & F_SHUT_DONE) &&
	    c->wq.queued == 0) {
		c->flags |= F_SHUT_DONE;
		if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
			hush__conn_fail(c, HUSH_EIO);
			return;
		}
		emit(c, HUSH_CONN_EV_SHUTDOWN, 0);
	}
}

/* Seals and sends what is queued; failures fail the connection. */
int hush__conn_flush_queue(struct hush_conn *c)
{
	if (c->state != ST_OPEN) {
		return c->err;
	}
	int rc = hush__conn_ciphers_attach(c);
	if (rc == 0) {
		rc = hush__wq_seal(&c->wq, c->rec);
	}
	if (rc == 0) {
		rc = send_sealed(c);
	}
	if (rc < 0) {
		hush__conn_fail(c, rc);
		return rc;
	}
	hush__conn_update_interest(c);
	return 0;
}

/* ---- Event handlers ---- */

static void check_timeouts(struct hush_conn *c)
{
	const struct hush_conn_config *cfg = &c->cfg->c;
	uint32_t now = now_ms(c);
	if (c->state == ST_HANDSHAKE) {
		/* A deadline from the start, so a peer trickling bytes cannot extend it. */
		/* Signed: libevent's cached clock may read a little behind the clock that
		 * stamped the start, and that must not look like an expiry. */
		if (hush__hs_reading(c->hs) && cfg->handshake_timeout_ms != 0 &&
		    elapsed(now, c->hs->started, cfg->handshake_timeout_ms)) {
			hush__conn_fail(c, HUSH_ETIMEDOUT);
		}
		return;
	}
	/* Each of these stamps may come from outside the loop (a call from the application:
	 * a fresh clock) while now is the loop's cached clock, which can read a little
	 * behind it: differences are signed, so that such a stamp never looks like an
	 * expiry (unsigned, it wrapped to 2^32 - 1 and failed a connection at once). */
	if (partial_pending(c) && elapsed(now, c->partial_since, cfg->record_timeout_ms)) {
		hush__conn_fail(c, HUSH_ESTALLED);
		return;
	}
	if ((c->interest & EV_READ) && cfg->read_timeout_ms != 0 &&
	    elapsed(now, c->last_read, cfg->read_timeout_ms)) {
		hush__conn_fail(c, HUSH_ETIMEDOUT);
		return;
	}
	if ((c->flags & F_WANT_WRITE) && cfg->write_timeout_ms != 0 &&
	    elapsed(now, c->last_write, cfg->write_timeout_ms)) {
		hush__conn_fail(c, HUSH_ETIMEDOUT);
	}
}

/*
 * The loop's entries (socket events, end-of-iteration work, pool wake-ups) run body
 * inside the connection's guard, if its configuration has one: the hush bufferevent
 * takes its lock there, so that other threads holding the lock see the connection
 * still. The guard's argument is taken first: the connection may be gone when body
 * returns. Only guarded connections are used across threads, so only they keep the
 * loop's thread current (hush__bev's foreign()).
 */
static void guarded(struct hush_conn *c, void (*body)(struct hush_conn *, short), short what)
{
	void (*guard)(void *, bool) = c->cfg->guard;
	if (guard == NULL) {
		body(c, what);
		return;
	}
	void *garg = c->arg;
	atomic_store_explicit(&c->loop->thread, (unsigned long)pthread_self(),
			      memory_order_relaxed);
	guard(garg, true);
	body(c, what);
	guard(garg, false);
}

/*
 * Ends a loop entry that began with F_IN_ENTRY: seals and sends what the application
 * wrote from inside it. Writes made after this point (from on_writable) are scheduled
 * for the end of the loop iteration as usual.
 */
static void entry_flush(struct hush_conn *c)
{
	c->flags &= ~(uint32_t)F_IN_ENTRY;
	if (!(c->flags & F_FLUSH_END)) {
		return;
	}
	c->flags &= ~(uint32_t)F_FLUSH_END;
	if (!dead(c) && hush__conn_flush_queue(c) == 0) {
		after_send_progress(c);
	}
}

static void on_socket_guarded(struct hush_conn *c, short what);

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	guarded(arg, on_socket_guarded, what);
}

static void on_socket_guarded(struct hush_conn *c, short what)
{
	enter(c);
	/* Deadlines that bytes must not postpone (the handshake's, a partial record's, the
	 * idle timeout, which only whole records reset) are checked on every event:
	 * bytes trickling in would otherwise keep postponing the persistent event's
	 * timeout. */
	if ((what & EV_TIMEOUT) || c->state == ST_HANDSHAKE || (c->interest & IN_PARTIAL) ||
	    c->cfg->c.read_timeout_ms != 0) {
		check_timeouts(c);
	}
	if (!dead(c) && c->state == ST_HANDSHAKE) {
		if (what & EV_WRITE) {
			int rc = send_sealed(c);
			if (rc < 0) {
				hush__conn_fail(c, rc);
			}
		}
		if (!dead(c) && (what & EV_READ)) {
			hs_on_readable(c);
		}
		if (!dead(c)) {
			hush__conn_update_interest(c);
		}
		hush__conn_leave(c);
		return;
	}
	if (!dead(c) && (what & EV_WRITE)) {
		if (hush__conn_flush_queue(c) == 0) {
			after_send_progress(c);
		}
	}
	c->flags |= F_IN_ENTRY;
	if (!dead(c) && (what & EV_READ)) {
		int rc = hush__conn_ciphers_attach(c);
		if (rc < 0) {
			hush__conn_fail(c, rc);
		} else {
			on_readable(c);
		}
	}
	entry_flush(c);
	if (!dead(c)) {
		hush__conn_update_interest(c);
		if (!(c->flags & F_PENDING)) {
			hush__conn_ciphers_detach(c);
		}
	}
	hush__conn_leave(c);
}

/* Delivers records that were read before the application paused. */
static void replay(struct hush_conn *c)
{
	if (c->rb.buf == NULL || (c->flags & F_PAUSED)) {
		return;
	}
	int rc = hush__conn_ciphers_attach(c);
	if (rc < 0) {
		hush__conn_fail(c, rc);
		return;
	}
	if (prepare_rbuf(c, false)) {
		rbuf_idle(c);
	}
}

/*
 * Reports OPEN. For a handshake, this is where the connection switches to records: the
 * record context replaces the handshake state, which is freed once the application has
 * seen the result (hush_conn_handshake_result() during the callback).
 */
static void report_open(struct hush_conn *c)
{
	struct hush__conn_hs *h = NULL;
	if (c->flags & F_HS) {
		h = c->hs;
		c->flags &= ~(uint32_t)F_HS;
		c->rec = h->rec;
		h->rec = NULL;
		c->state = ST_OPEN;
		c->flags |= F_CLOSE_SIG;
		c->last_read = c->last_write = c->partial_since = now_ms(c);
		if (c->rb.buf != NULL && c->rb.len > 0) {
			c->flags |= F_REPLAY; /* records that came with the last message */
		}
		int rc = 0;
		if (pinned(c)) {
			rc = hush__conn_pin_buffers(c);
		}
		if (rc < 0) {
			hush__hs_free(h);
			hush__conn_fail(c, rc); /* reported from the loop, as ever */
			return;
		}
	}
	hush__conn_update_interest(c);
	const struct hush_conn *prev_conn = c->loop->open_conn;
	const struct hush_handshake_result *prev_res = c->loop->open_res;
	c->loop->open_conn = c;
	c->loop->open_res = h != NULL ? &h->res : NULL;
	emit(c, HUSH_CONN_EV_OPEN, 0);
	c->loop->open_conn = prev_conn;
	c->loop->open_res = prev_res;
	hush__hs_free(h);
}

static void on_pending_guarded(struct hush_conn *c, short what);

static void conn_on_pending(void *item)
{
	guarded(item, on_pending_guarded, 0);
}

static void on_pending_guarded(struct hush_conn *c, short what)
{
	(void)what;
	c->flags &= ~(uint32_t)F_PENDING;
	enter(c);
	if (c->flags & F_ERR_REPORT) {
		c->flags &= ~(uint32_t)F_ERR_REPORT;
		emit(c, HUSH_CONN_EV_ERROR, c->err);
		hush__conn_leave(c);
		return;
	}
	if (c->state == ST_HANDSHAKE && c->hs->hs != NULL) {
		hs_step(c);
	}
	/* Writes from the OPEN report or from replayed records go out with the flush
	 * below, not with another pass over the pending list. */
	c->flags |= F_IN_ENTRY;
	if (!dead(c) && (c->flags & F_OPEN_REPORT)) {
		c->flags &= ~(uint32_t)F_OPEN_REPORT;
		report_open(c);
	}
	if (!dead(c) && (c->flags & F_REPLAY)) {
		c->flags &= ~(uint32_t)F_REPLAY;
		replay(c);
	}
	c->flags &= ~(uint32_t)(F_IN_ENTRY | F_FLUSH_END);
	if (!dead(c) && c->state == ST_OPEN) {
		if (hush__conn_flush_queue(c) == 0) {
			after_send_progress(c);
		}
	}
	if (!dead(c) && !(c->flags & F_PENDING)) {
		hush__conn_ciphers_detach(c);
	}
	hush__conn_leave(c);
}

static void on_wake_guarded(struct hush_conn *c, short what)
{
	(void)what;
	c->flags &= ~(uint32_t)F_STARVED;
	if (!dead(c)) {
		hush__conn_update_interest(c);
	}
}

static void conn_on_wake(void *item)
{
	guarded(item, on_wake_guarded, 0);
}
