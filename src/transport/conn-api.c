/*
 * The application's calls on a connection (hush/conn.h): configuration, creation, the
 * start with raw keys or a handshake, writes, pause and resume, and the getters. Each
 * checks its arguments and the connection's state, then hands over to the state
 * machine (conn.c), which runs everything the loop drives. No call ever calls back
 * into the application: reports come from the loop.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "record/record-internal.h"
#include "transport/conn-internal.h"

void hush_conn_config_init(struct hush_conn_config *cfg)
{
	if (cfg == NULL) {
		return;
	}
	/* memset, not a compound literal: the loop compares configurations with memcmp
	 * (loop.c), so the padding must be zero too. */
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_send_frame = HUSH_RECORD_DEFAULT_SEND_FRAME;
	cfg->recv_limit = HUSH_RECORD_DEFAULT_RECV_LIMIT;
	cfg->read_size = 32768 + 512;
	cfg->max_read_per_event = 256 * 1024;
	cfg->write_high_water = 256 * 1024;
	cfg->write_low_water = 0;
	cfg->handshake_timeout_ms = 10000;
	cfg->flags = HUSH_CONN_CLOSE_ON_FREE;
	cfg->record_timeout_ms = 30000;
}

int hush_conn_new(struct hush_conn **out, struct hush_loop *loop, int fd,
		  const struct hush_conn_config *cfg, const struct hush_conn_callbacks *cb,
		  void *arg)
{
	return hush__conn_new_guarded(out, loop, fd, cfg, cb, arg, NULL);
}

int hush__conn_new_guarded(struct hush_conn **out, struct hush_loop *loop, int fd,
			   const struct hush_conn_config *cfg, const struct hush_conn_callbacks *cb,
			   void *arg, void (*guard)(void *, bool))
{
	struct hush_conn_config defaults;
	if (cfg == NULL) {
		hush_conn_config_init(&defaults);
		cfg = &defaults;
	}
	bool close_fd = (cfg->flags & HUSH_CONN_CLOSE_ON_FREE) != 0;
	int rc = HUSH_EINVAL;
	struct hush_conn *c = NULL;

	if (out == NULL || loop == NULL || fd < 0 || cfg->read_size == 0 ||
	    cfg->read_size > UINT32_MAX / 2 || cfg->max_read_per_event == 0 ||
	    cfg->write_low_water > cfg->write_high_water || cfg->max_send_frame == 0 ||
	    cfg->recv_limit == 0 || cfg->read_timeout_ms > INT32_MAX ||
	    cfg->write_timeout_ms > INT32_MAX || cfg->handshake_timeout_ms > INT32_MAX ||
	    cfg->record_timeout_ms > INT32_MAX) {
		goto fail;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		rc = fl < 0 ? HUSH_EINVAL : HUSH_ESYS;
		goto fail;
	}
	c = hush__calloc(sizeof(*c));
	if (c == NULL) {
		rc = HUSH_ENOMEM;
		goto fail;
	}
	struct hush_conn_callbacks none = {NULL, NULL, NULL};
	struct conn_cfg *k;
	rc = hush__loop_cfg_get(loop, cfg, cb != NULL ? cb : &none, guard, &k);
	if (rc < 0) {
		hush__free(c, sizeof(*c));
		goto fail;
	}
	c->loop = loop;
	c->cfg = k;
	c->arg = arg;
	c->fd = fd;
	event_assign(&c->ev, loop->base, fd, 0, NULL, NULL);
	loop->ops = hush__conn_loop_ops();
	loop->nconns++;
	*out = c;
	return 0;
fail:
	if (close_fd && fd >= 0) {
		close(fd);
	}
	return rc;
}

int hush_conn_start_raw(struct hush_conn *c, enum hush_record_protocol rp, const uint8_t *key,
			size_t key_len, enum hush_side side)
{
	HUSH_ENSURE(c != NULL, HUSH_EINVAL);
	HUSH_ENSURE(c->state == ST_NEW && c->rec == NULL, HUSH_ESTATE);
	const struct hush_conn_config *cfg = &c->cfg->c;
	struct hush_record *rec = NULL;
	int rc = pinned(c) ? hush_record_new(&rec, rp, key, key_len, side)
			   : hush__record_new_bare(&rec, rp, key, key_len, side);
	HUSH_GUARD(rc);
	rc = hush_record_set_limits(rec, cfg->max_send_frame, cfg->recv_limit);
	if (rc == 0 && pinned(c)) {
		rc = hush__conn_pin_buffers(c);
	}
	if (rc == 0) {
		rc = hush__conn_schedule(c);
	}
	if (rc < 0) {
		hush_record_free(rec);
		return rc;
	}
	c->rec = rec;
	c->state = ST_OPEN;
	c->flags |= F_OPEN_REPORT;
	c->last_read = c->last_write = now_ms(c);
	return 0;
}

int hush__conn_start_handshake_for(struct hush_conn *c, const struct hush_handshake_config *hcfg,
				   enum hush_side side, struct hush__hs_watch *watch)
{
	HUSH_ENSURE(c != NULL && hcfg != NULL, HUSH_EINVAL);
	HUSH_ENSURE(c->state == ST_NEW && c->rec == NULL, HUSH_ESTATE);
	struct hush__conn_hs *h;
	HUSH_GUARD(hush__hs_new(&h, hcfg, side, watch, now_ms(c)));
	/* The first step (the initiator's first flight) is taken from the loop. */
	int rc = hush__conn_schedule(c);
	if (rc < 0) {
		h->watch = NULL; /* the caller still owns its record of it */
		hush__hs_free(h);
		return rc;
	}
	c->hs = h;
	c->flags |= F_HS;
	c->state = ST_HANDSHAKE;
	return 0;
}

int hush_conn_start_handshake(struct hush_conn *c, const struct hush_handshake_config *hcfg,
			      enum hush_side side)
{
	return hush__conn_start_handshake_for(c, hcfg, side, NULL);
}

bool hush__conn_abort_handshake(struct hush_conn *c, int err)
{
	if (c->state != ST_HANDSHAKE) {
		return false;
	}
	hush__conn_fail(c, err);
	return true;
}

int hush_conn_handshake_result(const struct hush_conn *c, struct hush_handshake_result *out)
{
	HUSH_ENSURE(c != NULL && out != NULL, HUSH_EINVAL);
	HUSH_ENSURE(c->loop->open_conn == c && c->loop->open_res != NULL, HUSH_ESTATE);
	*out = *c->loop->open_res;
	return 0;
}

void hush_conn_set_arg(struct hush_conn *c, void *arg)
{
	if (c != NULL) {
		c->arg = arg;
	}
}

void *hush_conn_get_arg(const struct hush_conn *c)
{
	return c != NULL ? c->arg : NULL;
}

void hush_conn_free(struct hush_conn *c)
{
	if (c == NULL) {
		return;
	}
	if (c->depth > 0) {
		c->flags |= F_FREEING;
		event_del(&c->ev);
		return;
	}
	hush__conn_destroy(c);
}

struct hush_buf *hush_conn_keep_data(struct hush_conn *c)
{
	if (c == NULL || !(c->flags & F_IN_DATA) || c->rb.buf == NULL) {
		return NULL;
	}
	hush_buf_ref(c->rb.buf);
	c->flags |= F_RBUF_KEPT;
	return c->rb.buf;
}

int hush_conn_write(struct hush_conn *c, const void *data, size_t len)
{
	HUSH_ENSURE(c != NULL && (data != NULL || len == 0), HUSH_EINVAL);
	if (c->state == ST_FAILED) {
		return c->err;
	}
	HUSH_ENSURE(c->state == ST_OPEN && !(c->flags & (F_SHUT_REQ | F_FREEING)), HUSH_ESTATE);
	if (len == 0) {
		return 0;
	}
	/*
	 * A write of a record's payload or more seals the records it completes now, straight
	 * from data (wq.c: one pass, no copy), so it borrows the cipher contexts unless the
	 * connection holds them. They go back as hush_conn_flush() gives its own: inside
	 * one of this connection's entries (where the read path may be using them) the
	 * entry gives them back at its end; outside, the end-of-iteration work this write
	 * schedules does, which seals and sends the rest with them (so the flush below and
	 * that work do not key contexts again), and this call only when nothing is
	 * scheduled. Without contexts (none to borrow) the write copies and the records are
	 * sealed late, as smaller writes are.
	 */
	size_t max_payload = hush_record_max_payload(c->rec);
	bool lent = false;
	struct hush_record *seal = NULL;
	if (len >= max_payload) {
		lent = !(c->flags & F_CIPHERS) && !pinned(c);
		if (hush__conn_ciphers_attach(c) == 0) {
			seal = c->rec;
		} else {
			lent = false;
		}
	}
	/* All or nothing: the pool's failure part-way leaves the queue as it was. */
	int rc = hush__wq_write(&c->wq, c->loop->pool, seal, max_payload, data, len);
	if (rc < 0) {
		/* A seal failed: the record context is failed for good, and so is c. */
		if (hush_record_error(c->rec) != 0) {
			hush__conn_fail(c, rc);
		}
		goto out;
	}
	c->stats.bytes_out += len;

	/*
	 * Sent when the callback's caller is done, so that writes made in one callback share
	 * records; at once when a buffer's worth is waiting. From inside one of this
	 * connection's own loop entries (its readiness event, its end-of-iteration work)
	 * that is the end of the entry: its buffers and cipher contexts then go back before
	 * the next connection's event, so a loop iteration that serves hundreds of
	 * connections borrows the buffers of one at a time, not of all of them, and the
	 * pool's retained buffers cover them. Other writes wait for the end of the loop
	 * iteration.
	 */
	if (c->flags & F_IN_ENTRY) {
		c->flags |= F_FLUSH_END;
	} else {
		rc = hush__conn_schedule(c);
	}
	if (rc == 0 && c->wq.queued >= HUSH__WQ_MAX_BUF / 2 && !(c->flags & F_WANT_WRITE)) {
		rc = hush_conn_flush(c);
	}
	if (rc == 0 && c->wq.queued > c->cfg->c.write_high_water) {
		c->flags |= F_OVER_HIGH;
		rc = 1;
	}
out:
	if (lent && c->depth == 0 && !(c->flags & F_PENDING)) {
		hush__conn_ciphers_detach(c);
	}
	return rc;
}

int hush_conn_flush(struct hush_conn *c)
{
	HUSH_ENSURE(c != NULL, HUSH_EINVAL);
	if (c->state != ST_OPEN) {
		return c->state == ST_FAILED ? c->err : HUSH_ESTATE;
	}
	/* Inside one of this connection's callbacks the read path may be using the cipher
	 * contexts, so only the outermost caller gives them back. */
	enter(c);
	int rc = hush__conn_flush_queue(c);
	if (c->depth == 1 && !(c->flags & F_PENDING)) {
		hush__conn_ciphers_detach(c);
	}
	hush__conn_leave(c);
	return rc;
}

size_t hush_conn_queued(const struct hush_conn *c)
{
	return c != NULL ? c->wq.queued : 0;
}

int hush_conn_shutdown(struct hush_conn *c)
{
	HUSH_ENSURE(c != NULL, HUSH_EINVAL);
	if (c->state == ST_FAILED) {
		return c->err;
	}
	HUSH_ENSURE(c->state == ST_OPEN, HUSH_ESTATE);
	if (c->flags & F_SHUT_REQ) {
		return 0;
	}
	HUSH_GUARD(hush__conn_schedule(c));
	/* The close record (an empty record) is sealed with the rest, so it is the last
	 * record of this direction. */
	if (c->flags & F_CLOSE_SIG) {
		HUSH_GUARD(hush__wq_add_close(&c->wq, c->loop->pool));
	}
	c->flags |= F_SHUT_REQ;
	return 0;
}

void hush_conn_pause_reading(struct hush_conn *c)
{
	if (c == NULL) {
		return;
	}
	c->flags |= F_PAUSED;
	if (c->state == ST_OPEN) {
		hush__conn_update_interest(c);
	}
}

void hush__conn_hold_handshake(struct hush_conn *c, bool hold)
{
	uint32_t was = c->flags;
	c->flags = hold ? c->flags | F_HS_HELD : c->flags & ~(uint32_t)F_HS_HELD;
	if (c->flags != was && c->state == ST_HANDSHAKE) {
		hush__conn_update_interest(c);
	}
}

void hush_conn_resume_reading(struct hush_conn *c)
{
	if (c == NULL || !(c->flags & F_PAUSED)) {
		return;
	}
	c->flags &= ~(uint32_t)F_PAUSED;
	if (c->state != ST_OPEN) {
		return;
	}
	/* The pause was the application's: the peer's deadline starts again. */
	c->partial_since = now_ms(c);
	/* Records already read are delivered now, without waiting for more bytes from
	 * the socket. */
	if (c->rb.buf != NULL && c->rb.len > 0 && hush__conn_schedule(c) == 0) {
		c->flags |= F_REPLAY;
	}
	hush__conn_update_interest(c);
}

int hush_conn_error(const struct hush_conn *c)
{
	return c != NULL ? c->err : HUSH_EINVAL;
}

int hush_conn_fd(const struct hush_conn *c)
{
	return c != NULL ? c->fd : -1;
}

unsigned hush_conn_buffers_held(const struct hush_conn *c)
{
	if (c == NULL) {
		return 0;
	}
	return (c->rb.buf != NULL) + hush__wq_buffers(&c->wq);
}

void hush_conn_get_stats(const struct hush_conn *c, struct hush_conn_stats *out)
{
	if (out != NULL) {
		if (c != NULL) {
			*out = c->stats;
		} else {
			memset(out, 0, sizeof(*out));
		}
	}
}

size_t hush__conn_size(void)
{
	return sizeof(struct hush_conn);
}
