/*
 * The filter flavour of hush bufferevents: a bufferevent type of hush's own (type
 * "hush_filter") over any other bufferevent, its underlying one, which carries the
 * records. As libevent's own filter types do, it keeps an `underlying` pointer and its
 * state in its own struct, which begins with struct hush__bev (bufferevent-internal.h):
 * the underlying bufferevent's callbacks get that struct as their argument, and the
 * public calls find it from the bufferevent itself. Keyed by raw keys or by a hush
 * handshake run over the underlying bufferevent (docs/PROTOCOL.md), with its close
 * record and NNpsk0's confirmation record as on a socket.
 * See include/hush/bufferevent.h for the contract and docs/DESIGN.md, "Bufferevents".
 */
#include <string.h>

#include <openssl/crypto.h>

#include <event2/buffer.h>

#include <hush/bufferevent.h>
#include <hush/handshake.h>

#include "handshake/handshake-internal.h"
#include "record/record-internal.h"
#include "transport/bufferevent-core.h"
#include "transport/bufferevent-internal.h"
#include "transport/transport-internal.h"

/* Records sealed into the underlying output while it holds less than this; the rest
 * of the plaintext waits in the output evbuffer until the underlying drains. */
#define PUMP_MAX (256u * 1024u)
/* NNpsk0's confirmation record (docs/PROTOCOL.md 14.1): one byte, 01. */
#define CONFIRM_BYTE 0x01
#define CONFIRM_FRAME (HUSH_RECORD_OVERHEAD + 1)
#define DEFAULT_HS_TIMEOUT_MS 10000u

enum confirm_role {
	CONFIRM_NONE,
	CONFIRM_WAIT, /* responder: the handshake ended; the confirmation comes first */
};

struct hfilt {
	struct hush__bev b; /* first */
	struct bufferevent *underlying; /* one reference, ours, dropped by libevent after
					 * destruct */
	struct hush_pool *pool;
	struct hush_record *rec;       /* once keyed */
	struct hush_handshake *hs;     /* while the handshake runs */
	struct event *deadline;        /* the handshake's, while it runs */
	uint8_t confirm;               /* enum confirm_role */
	bool close_sig;                /* keyed by a handshake: the close record is used */
	bool peer_closed;              /* the peer's close record arrived */
	bool in_read;                  /* inside filt_read(): it sees changes itself */
	bool released;                 /* the underlying bufferevent was let go */
	uint8_t lent;                  /* depth of calls lending the loop's cipher contexts */
};

static const struct hush__bev_flavour hfilt_flavour;

static struct hfilt *hfilt_of(struct hush__bev *b)
{
	return (struct hfilt *)(void *)b;
}

/* ---- Cipher contexts: the loop's cache, lent per call ---- */

/*
 * With a loop, the record context borrows the loop's cipher contexts for each call and
 * an idle filter holds none, as a connection does; without one (a pool only) the record
 * keeps its own.
 */
static int ciphers_lend(struct hfilt *f)
{
	struct hush_loop *loop = f->b.loop;
	if (loop == NULL || f->lent++ > 0) {
		return 0; /* nested (opening a record may send one): the outer call's */
	}
	EVP_CIPHER_CTX *s = hush__loop_ctx_borrow(loop);
	EVP_CIPHER_CTX *o = hush__loop_ctx_borrow(loop);
	if (s == NULL || o == NULL) {
		hush__loop_ctx_return(loop, s);
		hush__loop_ctx_return(loop, o);
		f->lent = 0;
		return HUSH_ENOMEM;
	}
	hush__record_give_ciphers(f->rec, s, o);
	return 0;
}

static void ciphers_back(struct hfilt *f)
{
	if (f->b.loop == NULL || --f->lent > 0) {
		return;
	}
	EVP_CIPHER_CTX *s = NULL;
	EVP_CIPHER_CTX *o = NULL;
	hush__record_take_ciphers(f->rec, &s, &o);
	hush__loop_ctx_return(f->b.loop, s);
	hush__loop_ctx_return(f->b.loop, o);
}

static int record_make(struct hfilt *f, enum hush_record_protocol rp, const uint8_t *key,
		       size_t key_len, enum hush_side side, size_t max_send_frame,
		       size_t recv_limit)
{
	int rc = f->b.loop != NULL ? hush__record_new_bare(&f->rec, rp, key, key_len, side)
				   : hush_record_new(&f->rec, rp, key, key_len, side);
	if (rc == 0) {
		rc = hush_record_set_limits(f->rec, max_send_frame, recv_limit);
	}
	if (rc < 0) {
		hush_record_free(f->rec);
		f->rec = NULL;
	}
	return rc;
}

/* ---- Writing ---- */

static void buf_cleanup(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	hush_buf_release(arg);
}

/* Seals plen bytes from src (none: the close record; NULL with the confirmation byte)
 * into one record on the underlying output. Returns 0, HUSH_ENOBUFS (no pool buffer:
 * nothing taken) or another error. */
static int seal_one(struct hfilt *f, struct evbuffer *src, size_t plen)
{
	struct hush_buf *buf;
	size_t cap = (src != NULL ? plen : 1) + HUSH_RECORD_OVERHEAD;
	HUSH_GUARD(hush_pool_acquire(f->pool, cap, &buf));
	uint8_t *frame = hush_buf_data(buf);
	size_t flen = 0;
	int rc = 0;
	if (src == NULL) {
		frame[HUSH_RECORD_HEADER_SIZE] = CONFIRM_BYTE;
		plen = 1;
	} else if (plen > 0 &&
		   evbuffer_remove(src, frame + HUSH_RECORD_HEADER_SIZE, plen) != (int)plen) {
		rc = HUSH_ENOMEM;
	}
	if (rc == 0) {
		rc = hush_record_seal(f->rec, frame, hush_buf_capacity(buf), plen, &flen);
	}
	if (rc == 0 && evbuffer_add_reference(bufferevent_get_output(f->underlying), frame, flen,
					      buf_cleanup, buf) < 0) {
		rc = HUSH_ENOMEM;
	}
	if (rc < 0) {
		hush_buf_release(buf);
	}
	return rc;
}

/* HUSH_BEV_EVENT_SHUTDOWN once the close has left for the underlying transport. */
static void tell_shutdown(struct hfilt *f)
{
	struct hush__bev *b = &f->b;
	if ((b->flags & HUSH__BEV_SHUT_SENT) && !(b->flags & HUSH__BEV_SHUT_TOLD) &&
	    evbuffer_get_length(bufferevent_get_output(f->underlying)) == 0) {
		b->flags |= HUSH__BEV_SHUT_TOLD;
		/* libevent's own types tell the writer nothing of a BEV_FINISHED flush. */
		if (!(b->flags & HUSH__BEV_SHUT_QUIET)) {
			bufferevent_run_eventcb_(hush__bev_bev(b), HUSH_BEV_EVENT_SHUTDOWN, 0);
		}
	}
}

/* Seals plaintext from the output evbuffer into records on the underlying output, and
 * then the close asked for. */
static void hfilt_pump(struct hush__bev *b)
{
	struct hfilt *f = hfilt_of(b);
	struct bufferevent *bev = hush__bev_bev(b);
	if ((b->flags & HUSH__BEV_PUMPING) || !(b->flags & HUSH__BEV_OPEN) || b->err != 0) {
		return;
	}
	bool forced = (b->flags & HUSH__BEV_SHUT_REQ) != 0; /* a close flushes regardless */
	if (!(bev->enabled & EV_WRITE) && !forced) {
		return;
	}
	if (ciphers_lend(f) < 0) {
		hush__bev_fail(b, HUSH_ENOMEM, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
		return;
	}
	b->flags |= HUSH__BEV_PUMPING;
	struct evbuffer *dst = bufferevent_get_output(f->underlying);
	size_t maxp = hush_record_max_payload(f->rec);
	int rc = 0;
	size_t left;
	while (!(b->flags & HUSH__BEV_SHUT_SENT) && (left = evbuffer_get_length(bev->output)) > 0 &&
	       evbuffer_get_length(dst) < PUMP_MAX) {
		rc = seal_one(f, bev->output, left < maxp ? left : maxp);
		if (rc < 0) {
			break;
		}
		b->flags |= HUSH__BEV_WROTE;
	}
	if (rc == 0 && forced && !(b->flags & HUSH__BEV_SHUT_SENT) &&
	    evbuffer_get_length(bev->output) == 0) {
		/* After a handshake the close record ends this direction; raw keys, as
		 * in gRPC's ALTS, have none. */
		rc = f->close_sig ? seal_one(f, bev->output, 0) : 0;
		if (rc == 0) {
			b->flags |= HUSH__BEV_SHUT_SENT;
		}
	}
	ciphers_back(f);
	b->flags &= (uint16_t)~HUSH__BEV_PUMPING;
	if (rc < 0 && rc != HUSH_ENOBUFS) {
		/* HUSH_ENOBUFS: the pool's budget; the rest is sealed when the underlying
		 * drains or on the next write. */
		hush__bev_fail(b, rc, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
		return;
	}
	hush__bev_arm_write_timer(b);
	tell_shutdown(f);
}

/* ---- The handshake ---- */

/* Whether the peer's bytes are read now: records while the application reads, the
 * handshake (NNpsk0's confirmation record included) while hush__bev_hs_may_advance(). */
static bool reading(struct hfilt *f)
{
	if (f->hs != NULL || f->confirm == CONFIRM_WAIT || (f->b.flags & HUSH__BEV_START_WAIT)) {
		return hush__bev_hs_may_advance(&f->b);
	}
	return (f->b.flags & HUSH__BEV_WANT_READ) != 0;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct hfilt *f = arg;
	struct bufferevent *bev = hush__bev_bev(&f->b);
	(void)fd;
	(void)what;
	bufferevent_incref_and_lock_(bev);
	if (!(f->b.flags & HUSH__BEV_OPEN) && f->b.err == 0) {
		hush__bev_fail(&f->b, HUSH_ETIMEDOUT, BEV_EVENT_TIMEOUT | BEV_EVENT_ERROR);
	}
	bufferevent_decref_and_unlock_(bev);
}

static void hs_end(struct hfilt *f)
{
	hush_handshake_free(f->hs);
	f->hs = NULL;
	if (f->deadline != NULL) {
		event_free(f->deadline);
		f->deadline = NULL;
	}
}

static void suspend_underlying(struct hfilt *f, bool suspend);

/* Records flow: CONNECTED, as bufferevent_openssl reports it when a handshake ends. */
static void become_open(struct hfilt *f)
{
	struct hush__bev *b = &f->b;
	hs_end(f);
	b->flags |= HUSH__BEV_OPEN;
	suspend_underlying(f, !reading(f)); /* records: as the application reads */
	hush__bev_arm_timers(b);
	bufferevent_run_eventcb_(hush__bev_bev(b), BEV_EVENT_CONNECTED, 0);
	hfilt_pump(b);
}

/* The handshake is over: the record context from its result, the peer's key kept, and
 * NNpsk0's confirmation sent (initiator) or awaited (responder). */
static int hs_finish(struct hfilt *f)
{
	struct hush_handshake_result res;
	int rc = hush_handshake_result(f->hs, &res);
	if (rc == 0) {
		rc = record_make(f, res.record_protocol, res.key, res.key_len, res.side,
				 res.max_send_frame, res.recv_limit);
	}
	if (rc == 0 && res.has_remote_static) {
		rc = hush__bev_keep_peer_key(&f->b, res.remote_static);
	}
	hush_handshake_result_wipe(&res);
	HUSH_GUARD(rc);
	f->close_sig = true;
	enum hush_noise_protocol p = f->b.hcfg->protocol;
	bool nn = p == HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256 ||
		  p == HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256;
	hush_handshake_free(f->hs);
	f->hs = NULL;
	if (nn && f->b.side == HUSH_SIDE_CLIENT) {
		HUSH_GUARD(ciphers_lend(f));
		rc = seal_one(f, NULL, 1);
		ciphers_back(f);
		HUSH_GUARD(rc);
	} else if (nn) {
		f->confirm = CONFIRM_WAIT; /* the deadline runs on until it comes */
		return 0;
	}
	become_open(f);
	return 0;
}

/*
 * Runs the handshake as far as the bytes at hand allow: feeds what the underlying
 * bufferevent received (only while reading(): a disabled bufferevent does not advance
 * its handshake), and writes this end's messages to it.
 */
static int hs_step(struct hfilt *f)
{
	struct evbuffer *in = bufferevent_get_input(f->underlying);
	int rc = 0;
	while (rc == 0 && f->hs != NULL) {
		size_t have = evbuffer_get_length(in);
		if (have > 0 && reading(f)) {
			struct evbuffer_iovec v;
			size_t used = 0;
			if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) {
				break;
			}
			rc = hush_handshake_read(f->hs, v.iov_base, v.iov_len, &used);
			if (rc == 0) {
				evbuffer_drain(in, used);
			}
		} else if (hush_handshake_wants_write(f->hs)) {
			uint8_t out[HUSH_HANDSHAKE_MAX_OUTPUT];
			size_t n = 0;
			rc = hush_handshake_next(f->hs, out, sizeof(out), &n);
			if (rc == 0 && bufferevent_write(f->underlying, out, n) < 0) {
				rc = HUSH_ENOMEM;
			}
			OPENSSL_cleanse(out, sizeof(out));
		} else {
			break;
		}
		if (rc == 0 && hush_handshake_done(f->hs)) {
			rc = hs_finish(f);
		}
	}
	return rc;
}

/* From the loop, once the bufferevent is enabled (as the socket flavour starts). */
static void hfilt_start(struct hush__bev *b)
{
	struct hfilt *f = hfilt_of(b);
	struct bufferevent *bev = hush__bev_bev(b);
	if (b->err != 0 || !(bev->enabled & (EV_READ | EV_WRITE))) {
		return; /* hush__bev_enable() comes back here */
	}
	b->flags &= (uint16_t)~HUSH__BEV_START_WAIT;
	int rc = hush_handshake_new(&f->hs, b->hcfg, (enum hush_side)b->side);
	if (rc == 0) {
		f->deadline = event_new(bufferevent_get_base(bev), -1, 0, on_deadline, f);
		uint32_t ms = b->hs_timeout_ms != 0 ? b->hs_timeout_ms : DEFAULT_HS_TIMEOUT_MS;
		struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
		rc = f->deadline != NULL && event_add(f->deadline, &tv) == 0 ? 0 : HUSH_ENOMEM;
	}
	if (rc == 0) {
		suspend_underlying(f, !reading(f));
		rc = hs_step(f);
	}
	if (rc < 0) {
		hush__bev_fail(b, rc, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	hush__bev_arm_timers(b);
}

/* ---- Reading ---- */

/* The responder's first record must be the confirmation (docs/PROTOCOL.md 14.1). */
static int check_confirm(const uint8_t *hdr, size_t have)
{
	return have >= HUSH_RECORD_LENGTH_SIZE && hush__load_le32(hdr) != CONFIRM_FRAME - 4
		   ? HUSH_EHANDSHAKE
		   : 0;
}

/* The peer's close record: its direction ended cleanly; what follows is ignored. What
 * the application wrote before it learns of the end goes out first. */
static void peer_closed(struct hfilt *f)
{
	struct bufferevent *bev = hush__bev_bev(&f->b);
	struct evbuffer *in = bufferevent_get_input(f->underlying);
	f->peer_closed = true;
	evbuffer_drain(in, evbuffer_get_length(in));
	hfilt_pump(&f->b);
	bufferevent_disable(bev, EV_READ);
	bufferevent_run_eventcb_(bev, BEV_EVENT_READING | BEV_EVENT_EOF, 0);
}

/*
 * Opens one record of need bytes from the underlying input: into a pool buffer, or when
 * the pool refuses one (budget or memory) inside libevent's own buffer, its plaintext
 * then copied whole (so the stream never stalls; that record may pass the read high
 * watermark). Returns what hush__bev_input() returns, 2 for the close record, 3 for
 * NNpsk0's confirmation, or an error (nothing delivered).
 */
static int open_one(struct hfilt *f, struct evbuffer *src, size_t need)
{
	struct hush_iovec pt;
	struct hush_buf *buf = NULL;
	uint8_t *frame;
	bool in_place = false;
	if (hush_pool_acquire(f->pool, need, &buf) == 0) {
		frame = hush_buf_data(buf);
		if (evbuffer_remove(src, frame, need) != (int)need) {
			hush_buf_release(buf);
			return HUSH_ENOMEM;
		}
	} else if ((frame = evbuffer_pullup(src, (ev_ssize_t)need)) == NULL) {
		return HUSH_ENOMEM;
	} else {
		in_place = true;
	}
	int rc = hush_record_open(f->rec, frame, need, &pt);
	if (rc == 0 && f->confirm == CONFIRM_WAIT) {
		bool ok = pt.len == 1 && ((const uint8_t *)pt.base)[0] == CONFIRM_BYTE;
		rc = ok ? 3 : HUSH_EHANDSHAKE;
	} else if (rc == 0 && pt.len == 0) {
		rc = f->close_sig ? 2 : 0;
	} else if (rc == 0) {
		rc = hush__bev_input(&f->b, pt.base, pt.len, buf);
		buf = NULL; /* it went with the plaintext */
	}
	if (buf != NULL) {
		hush_buf_release(buf);
	}
	if (in_place) {
		evbuffer_drain(src, need);
	}
	return rc;
}

/* Opens every complete record in the underlying input while reading is wanted and
 * nothing is held back. Returns false when the bufferevent failed or the peer closed. */
static bool open_records(struct hfilt *f)
{
	struct hush__bev *b = &f->b;
	struct evbuffer *src = bufferevent_get_input(f->underlying);
	if (ciphers_lend(f) < 0) {
		hush__bev_fail(b, HUSH_ENOMEM, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return false;
	}
	int rc = 0;
	while (reading(f) && !hush__bev_holding(b) && b->err == 0) {
		uint8_t hdr[HUSH_RECORD_HEADER_SIZE];
		size_t have = evbuffer_get_length(src);
		if (have == 0) {
			break;
		}
		size_t peek = have < sizeof(hdr) ? have : sizeof(hdr);
		if (evbuffer_copyout(src, hdr, peek) != (ev_ssize_t)peek) {
			break;
		}
		size_t need = 0;
		rc = f->confirm == CONFIRM_WAIT ? check_confirm(hdr, peek) : 0;
		if (rc == 0) {
			rc = hush_record_parse(f->rec, hdr, peek, &need);
		}
		if (rc == HUSH_EAGAIN && (have < HUSH_RECORD_LENGTH_SIZE || have < need)) {
			rc = 0;
			break;
		}
		if (rc < 0 && rc != HUSH_EAGAIN) {
			break;
		}
		rc = open_one(f, src, need);
		if (rc == 3) {
			f->confirm = CONFIRM_NONE;
			rc = 0;
			become_open(f);
		} else if (rc == 2) {
			break;
		} else if (rc < 0 || b->err != 0) {
			break;
		}
	}
	ciphers_back(f);
	if (rc == 2) {
		peer_closed(f);
		return false;
	}
	if (rc < 0 && b->err == 0) {
		hush__bev_fail(b, rc, BEV_EVENT_READING | BEV_EVENT_ERROR);
	}
	return b->err == 0;
}

/*
 * The underlying stream ended (its EOF, told when everything before it was delivered):
 * part of a record left, or no close record after a handshake, is truncation.
 */
static void tell_end(struct hfilt *f, short what)
{
	struct hush__bev *b = &f->b;
	b->flags &= (uint16_t)~HUSH__BEV_EOF_WAIT;
	if (!(b->flags & HUSH__BEV_OPEN) && b->hcfg != NULL) {
		hush__bev_fail(b, HUSH_ECLOSED, what | BEV_EVENT_ERROR); /* mid-handshake */
	} else if (evbuffer_get_length(bufferevent_get_input(f->underlying)) > 0 || f->close_sig) {
		hush__bev_fail(b, HUSH_ETRUNCATED, what | BEV_EVENT_ERROR);
	} else {
		bufferevent_disable(hush__bev_bev(b), EV_READ);
		bufferevent_run_eventcb_(hush__bev_bev(b), what, 0);
	}
}

/* Everything the underlying input holds, as far as reading is wanted: the handshake,
 * then records; then the end, if it waited behind them. */
static void filt_read(struct hfilt *f)
{
	struct hush__bev *b = &f->b;
	if (f->in_read || f->released || b->err != 0 || f->peer_closed ||
	    (b->flags & HUSH__BEV_UNLINKED)) {
		return;
	}
	f->in_read = true;
	int rc = f->hs != NULL ? hs_step(f) : 0;
	bool go = rc == 0;
	if (rc < 0) {
		hush__bev_fail(b, rc, BEV_EVENT_READING | BEV_EVENT_ERROR);
	}
	if (go && f->rec != NULL && f->hs == NULL) {
		go = open_records(f);
	}
	f->in_read = false;
	if (go && (b->flags & HUSH__BEV_EOF_WAIT) && reading(f) &&
	    !hush__bev_holding(b)) {
		tell_end(f, BEV_EVENT_READING | BEV_EVENT_EOF);
	}
}

/* ---- The flavour's hooks ---- */

static enum hush__bev_link hfilt_link(struct hush__bev *b)
{
	return b->err != 0 || hfilt_of(b)->underlying == NULL ? HUSH__BEV_DEAD : HUSH__BEV_LIVE;
}

static size_t hfilt_queued(struct hush__bev *b)
{
	(void)b;
	return 0; /* sealed records are the underlying bufferevent's */
}

/* While reading is not wanted the underlying bufferevent stops reading too (as
 * libevent's filters suspend it), so nothing piles up below. */
static void suspend_underlying(struct hfilt *f, bool suspend)
{
	struct hush__bev *b = &f->b;
	if (suspend && !(b->flags & HUSH__BEV_SUSPENDED)) {
		b->flags |= HUSH__BEV_SUSPENDED;
		bufferevent_suspend_read_(f->underlying, HUSH__BEV_SUSPEND_FILT_READ);
	} else if (!suspend && (b->flags & HUSH__BEV_SUSPENDED)) {
		b->flags &= (uint16_t)~HUSH__BEV_SUSPENDED;
		bufferevent_unsuspend_read_(f->underlying, HUSH__BEV_SUSPEND_FILT_READ);
	}
}

/*
 * Reading switched. What the underlying input already holds is read from the loop,
 * never here: this runs inside libevent's watermark callback, that is inside the
 * application's own drain of its input, and often inside its read callback.
 */
static void hfilt_apply_reading(struct hush__bev *b, bool from_loop)
{
	struct hfilt *f = hfilt_of(b);
	if (f->underlying == NULL || b->err != 0) {
		return;
	}
	bool want = reading(f);
	suspend_underlying(f, !want);
	if (!want || f->in_read) {
		return; /* filt_read() looks at the flags before each record */
	}
	if (from_loop) {
		filt_read(f);
	} else if (evbuffer_get_length(bufferevent_get_input(f->underlying)) > 0 ||
		   (b->flags & HUSH__BEV_EOF_WAIT)) {
		hush__bev_hand_to_loop(b, EV_READ);
	}
}

static void hfilt_halt(struct hush__bev *b)
{
	struct hfilt *f = hfilt_of(b);
	hs_end(f);
	if (f->underlying != NULL) {
		suspend_underlying(f, true);
	}
}

/* ---- The underlying bufferevent's callbacks ---- */

static void on_underlying_read(struct bufferevent *under, void *arg)
{
	struct hfilt *f = arg;
	struct bufferevent *bev = hush__bev_bev(&f->b);
	(void)under;
	bufferevent_incref_and_lock_(bev);
	filt_read(f);
	bufferevent_decref_and_unlock_(bev);
}

static void on_underlying_write(struct bufferevent *under, void *arg)
{
	struct hfilt *f = arg;
	struct bufferevent *bev = hush__bev_bev(&f->b);
	(void)under;
	bufferevent_incref_and_lock_(bev);
	/* An underlying bufferevent may call back inside our own pump, and so inside the
	 * application's bufferevent_write() or bufferevent_enable(): the write callback
	 * then waits for the loop. */
	int defer = (f->b.flags & HUSH__BEV_PUMPING) ? BEV_OPT_DEFER_CALLBACKS : 0;
	hfilt_pump(&f->b);
	hush__bev_maybe_writecb(&f->b, defer);
	tell_shutdown(f);
	bufferevent_decref_and_unlock_(bev);
}

static void on_underlying_event(struct bufferevent *under, short what, void *arg)
{
	struct hfilt *f = arg;
	struct hush__bev *b = &f->b;
	struct bufferevent *bev = hush__bev_bev(b);
	(void)under;
	bufferevent_incref_and_lock_(bev);
	if (b->err != 0 || f->peer_closed) {
		/* Reported already. */
	} else if (what & BEV_EVENT_ERROR) {
		hush__bev_fail(b, HUSH_EIO, what);
	} else if (what & BEV_EVENT_EOF) {
		/* Whatever was read before the end is delivered first. */
		filt_read(f);
		if (b->err == 0 && !f->peer_closed) {
			if (reading(f) && !hush__bev_holding(b)) {
				tell_end(f, what);
			} else {
				b->flags |= HUSH__BEV_EOF_WAIT;
			}
		}
	} else if (!(what & BEV_EVENT_CONNECTED) || b->hcfg == NULL) {
		/* With raw keys the connection starts open: the underlying socket's own
		 * CONNECTED, and its timeouts, are the application's, as with libevent's
		 * filters. A handshake reports CONNECTED itself. */
		bufferevent_run_eventcb_(bev, what, 0);
	}
	bufferevent_decref_and_unlock_(bev);
}

/* ---- The type's operations ---- */

/*
 * A best-effort goodbye from a bufferevent being freed with its underlying one: when
 * everything written has been sealed, the close record tells the peer this was a clean
 * end; on a socket it is written now if the socket takes it, since freeing a socket
 * bufferevent drops what it has not sent.
 */
static void goodbye(struct hfilt *f)
{
	struct hush__bev *b = &f->b;
	struct bufferevent *bev = hush__bev_bev(b);
	if (!(bufferevent_get_options_(bev) & BEV_OPT_CLOSE_ON_FREE) || !f->close_sig ||
	    !(b->flags & HUSH__BEV_OPEN) || b->err != 0 || (b->flags & HUSH__BEV_SHUT_SENT) ||
	    evbuffer_get_length(bev->output) > 0) {
		return;
	}
	b->flags |= HUSH__BEV_SHUT_REQ | HUSH__BEV_SHUT_QUIET;
	hfilt_pump(b);
	evutil_socket_t fd = bufferevent_getfd(f->underlying);
	if (fd >= 0) {
		/* A socket bufferevent keeps the start of its output frozen but while it
		 * writes itself; it is freed right after this, frozen or not. */
		struct evbuffer *out = bufferevent_get_output(f->underlying);
		evbuffer_unfreeze(out, 1);
		int rc = evbuffer_write(out, fd);
		(void)rc; /* best effort: the connection goes anyway */
	}
}

/* The underlying bufferevent goes back to the caller with no callbacks of ours, or is
 * freed with BEV_OPT_CLOSE_ON_FREE (its memory stays until ours, through our
 * reference). */
static void let_go_underlying(struct hfilt *f)
{
	struct bufferevent *u = f->underlying;
	if (bufferevent_get_options_(hush__bev_bev(&f->b)) & BEV_OPT_CLOSE_ON_FREE) {
		bufferevent_free(u);
		return;
	}
	suspend_underlying(f, false);
	bufferevent_data_cb rcb;
	void *arg;
	bufferevent_getcb(u, &rcb, NULL, NULL, &arg);
	if (rcb == on_underlying_read && arg == f) {
		bufferevent_setcb(u, NULL, NULL, NULL, NULL);
	}
}

static void release(struct hfilt *f)
{
	if (f->underlying == NULL || f->released) {
		return;
	}
	f->released = true;
	goodbye(f);
	hs_end(f);
	hush__bev_drop_held(&f->b);
	hush__bev_forget_peer_key(&f->b);
	let_go_underlying(f);
}

/* The last reference went. */
static void hfilt_unlink(struct bufferevent *bev)
{
	struct hfilt *f = hfilt_of(hush__bev_of(bev));
	event_del(&bev->ev_read);
	event_del(&bev->ev_write);
	if (hush__bev_foreign(&f->b)) {
		/* Freed from another thread: the loop's thread finishes (hfilt_destruct). */
		f->b.flags |= HUSH__BEV_UNLINKED;
		return;
	}
	release(f);
}

/* Finalized, from the loop's thread. */
static void hfilt_destruct(struct bufferevent *bev)
{
	struct hfilt *f = hfilt_of(hush__bev_of(bev));
	f->b.flags &= (uint16_t)~HUSH__BEV_UNLINKED;
	release(f);
	hush_record_free(f->rec);
	f->rec = NULL;
	hush__bev_wipe_key(&f->b);
	/* libevent drops our reference to underlying after this, having asked for it
	 * (HUSH__BEV_CTRL_GET_UNDERLYING) before: as for its own filters. */
}

static int hfilt_flush(struct bufferevent *bev, short what, enum bufferevent_flush_mode mode)
{
	struct hush__bev *b = hush__bev_of(bev);
	struct hfilt *f = hfilt_of(b);
	if (!hush__bev_flush_begin(b, what, mode)) {
		return 0;
	}
	size_t before = evbuffer_get_length(bev->output);
	hfilt_pump(b);
	int rc = bufferevent_flush(f->underlying, EV_WRITE, mode);
	if (b->err != 0 || rc < 0) {
		return -1;
	}
	return evbuffer_get_length(bev->output) < before || rc > 0 ? 1 : 0;
}

static int hfilt_ctrl(struct bufferevent *bev, enum hush__bev_ctrl_op op,
		      union hush__bev_ctrl_data *data)
{
	struct hfilt *f = hfilt_of(hush__bev_of(bev));
	switch (op) {
	case HUSH__BEV_CTRL_GET_UNDERLYING:
		data->ptr = f->underlying;
		return 0;
	case HUSH__BEV_CTRL_GET_FD:
		data->fd = f->underlying != NULL ? bufferevent_getfd(f->underlying) : -1;
		return 0;
	case HUSH__BEV_CTRL_SET_FD:
		/* The socket is the underlying bufferevent's, as with bufferevent_openssl's
		 * filter: bufferevent_socket_connect() on the filter, which libevent runs
		 * on any bufferevent, connects a new socket and sets it here. -1 (evhttp's
		 * and libevent's regress_ssl's reset) leaves the underlying one its socket. */
		if (f->underlying == NULL) {
			return -1;
		}
		return data->fd < 0 ? 0 : bufferevent_setfd(f->underlying, data->fd);
	case HUSH__BEV_CTRL_CANCEL_ALL:
		return 0;
	default:
		return -1;
	}
}

static const struct hush__bev_flavour hfilt_flavour = {
	.ops = HUSH__BEV_OPS("hush_filter", hfilt_unlink, hfilt_destruct, hfilt_flush,
			     hfilt_ctrl),
	.link = hfilt_link,
	.queued = hfilt_queued,
	.pump = hfilt_pump,
	.apply_reading = hfilt_apply_reading,
	.start = hfilt_start,
	.halt = hfilt_halt,
};

/* ---- Construction ---- */

/* Whether cfg suits the filter flavour over underlying: 0 or a HUSH_E* code. */
static int filter_config_check(struct bufferevent *underlying,
			       const struct hush_bufferevent_config *cfg)
{
	HUSH_ENSURE(underlying != NULL, HUSH_EINVAL);
	HUSH_GUARD(hush_bufferevent_config_check(cfg));
	HUSH_ENSURE(cfg->loop != NULL || cfg->pool != NULL, HUSH_EINVAL);
	HUSH_ENSURE(cfg->loop == NULL || cfg->loop->base == bufferevent_get_base(underlying),
		    HUSH_EINVAL);
	if (cfg->handshake != NULL) {
		/* Checked now, as the socket flavour checks it when a socket is set. */
		return hush__handshake_check_config(cfg->handshake, cfg->side);
	}
	return 0;
}

struct bufferevent *hush_bufferevent_filter_new(struct bufferevent *underlying,
						const struct hush_bufferevent_config *cfg,
						int options)
{
	if (filter_config_check(underlying, cfg) < 0) {
		return NULL;
	}
	struct event_base *base = bufferevent_get_base(underlying);
	/* The block below has the size of the libevent hush was built against: refused
	 * unless the running one has the same layout (bufferevent-abi.c). */
	if (hush_bufferevent_check_libevent(base) < 0) {
		return NULL;
	}
	struct hfilt *f = event_mm_calloc_(1, sizeof(*f));
	if (f == NULL) {
		return NULL;
	}
	bool ready;
	int rc = hush__bev_init(&f->b, base, &hfilt_flavour, cfg, options, &ready);
	if (rc < 0 && !ready) {
		event_mm_free_(f);
		return NULL;
	}
	struct bufferevent *bev = hush__bev_bev(&f->b);
	f->pool = cfg->loop != NULL ? cfg->loop->pool : cfg->pool;
	if (rc == 0 && cfg->handshake == NULL) {
		rc = record_make(f, cfg->rp, cfg->key, cfg->key_len, cfg->side,
				 cfg->max_send_frame, cfg->recv_limit);
	}
	/* Last, so that a constructor failing otherwise leaves the key unspent. */
	if (rc == 0 && cfg->handshake == NULL) {
		rc = hush__bev_claim_raw_key(cfg);
	}
	if (rc < 0) {
		bufferevent_free(bev); /* takes nothing of underlying's: it is not attached */
		return NULL;
	}
	/* Raw keys: the connection starts open, so no BEV_EVENT_CONNECTED is reported, as
	 * with bufferevent_openssl made in BUFFEREVENT_SSL_OPEN. A handshake starts from
	 * the loop once the bufferevent is enabled, as the socket flavour's does. */
	if (cfg->handshake == NULL) {
		hush__bev_wipe_key(&f->b);
		f->b.flags |= HUSH__BEV_OPEN;
	} else {
		f->b.flags |= HUSH__BEV_START_WAIT;
		hush__bev_hand_to_loop(&f->b, EV_WRITE);
	}
	f->underlying = underlying;
	bufferevent_incref(underlying);
	suspend_underlying(f, true); /* until the application enables reading */
	bufferevent_setcb(underlying, on_underlying_read, on_underlying_write, on_underlying_event,
			  f);
	bufferevent_enable(underlying, EV_READ | EV_WRITE);
	return bev;
}
