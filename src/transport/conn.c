/*
 * Secure connections: the ReadOnReady read path and the sealed write queue.
 *
 * An idle connection holds its struct, its record context (keys and counters only) and
 * one struct event; no buffer and no cipher context. See docs/DESIGN.md, "Transport".
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <hush/handshake.h>

#include "record/record-internal.h"
#include "transport/transport-internal.h"

enum conn_state {
	ST_NEW = 0,   /* created, no keys yet */
	ST_HANDSHAKE, /* a hush handshake runs (or finished, OPEN not yet reported) */
	ST_OPEN,      /* records flow */
	ST_FAILED,    /* error reported; only free is left */
};

/* Connection flags (struct hush_conn.flags). */
enum {
	F_PAUSED = 1u << 0,        /* the application paused reading */
	F_STARVED = 1u << 1,       /* reading waits for pool buffers */
	F_EOF = 1u << 2,           /* the peer's EOF was seen */
	F_WANT_WRITE = 1u << 3,    /* the socket refused bytes; wait for EV_WRITE */
	F_SHUT_REQ = 1u << 4,      /* hush_conn_shutdown() was called */
	F_SHUT_DONE = 1u << 5,     /* the write side is shut down */
	F_PENDING = 1u << 6,       /* on the loop's pending list */
	F_OPEN_REPORT = 1u << 7,   /* OPEN still to be reported */
	F_OVER_HIGH = 1u << 8,     /* queue passed the high watermark */
	F_FREEING = 1u << 9,       /* freed from inside a callback */
	F_RBUF_KEPT = 1u << 10,    /* the application kept the read buffer */
	F_IN_DATA = 1u << 11,      /* inside on_data */
	F_CIPHERS = 1u << 12,      /* the record context holds lent cipher contexts */
	F_ERR_REPORT = 1u << 13,   /* ERROR still to be reported */
	F_REPLAY = 1u << 14,       /* records already read wait for delivery (resume) */
	F_HS = 1u << 15,           /* hs (not rec) is live: a handshake runs */
	F_CLOSE_SIG = 1u << 16,    /* keyed by a hush handshake: the close record is used */
	F_IN_ENTRY = 1u << 17,     /* inside a loop entry that flushes before it returns */
	F_FLUSH_END = 1u << 18,    /* writes wait for the end of that entry */
	F_HS_HELD = 1u << 19,      /* the handshake reads nothing (a disabled bufferevent) */
};

/*
 * What a connection holds only while its handshake runs, freed (and wiped) when it
 * ends. Handshake messages go out through the write queue as bytes that need no
 * sealing, so partial sends and EV_WRITE work as for records.
 */
struct conn_hs {
	struct hush_handshake *hs;     /* NULL once finished */
	struct hush_record *rec;       /* the record context, until OPEN is reported */
	struct hush__admission *owner; /* the listener's record of it, or NULL */
	uint32_t started;              /* now_ms() when it started */
	uint8_t confirm;               /* NNpsk0's key confirmation: enum confirm_role */
	struct hush_handshake_result res; /* key wiped; reported with OPEN */
};

/*
 * Key confirmation for Noise NNpsk0 (docs/PROTOCOL.md section 14.1), whose responder
 * otherwise learns nothing of the initiator's liveness: a replayed message 1 would
 * complete its handshake. The initiator's first record is the confirmation record, a
 * record whose plaintext is the one byte CONFIRM_BYTE; the responder reports OPEN only
 * once it has opened it.
 */
enum confirm_role {
	CONFIRM_NONE = 0,
	CONFIRM_SEND,  /* initiator: queue the confirmation record when the handshake ends */
	CONFIRM_WAIT,  /* responder: the handshake ended; waiting for the confirmation */
};
#define CONFIRM_BYTE 0x01u
#define CONFIRM_FRAME (HUSH_RECORD_OVERHEAD + 1u)

struct hush_conn {
	struct hush_loop *loop;
	/* The record context once open; while F_HS is set, the handshake instead, so an
	 * established connection is no larger than one started with raw keys. */
	union {
		struct hush_record *rec;
		struct conn_hs *hs;
	};
	const struct conn_cfg *cfg; /* configuration and callbacks, shared */
	void *arg;
	/* Read state: bytes [rstart, rstart + rlen) of rbuf hold the start of the next,
	 * incomplete record. rbuf is NULL whenever no record is pending. */
	struct hush_buf *rbuf;
	uint32_t rstart;
	uint32_t rlen;
	/* Write queue: pool buffers, each starting with a struct wq_hdr. */
	struct hush_buf *wq_head;
	struct hush_buf *wq_tail;
	size_t queued;
	struct hush_conn_stats stats;
	int fd;
	int err;
	uint32_t flags;
	uint16_t depth;  /* callbacks on the stack; free is deferred while > 0 */
	uint8_t state;
	uint8_t interest; /* EV_READ / EV_WRITE the event is added with */
	/* Activity times (now_ms) for the read and write timeouts. */
	uint32_t last_read;
	uint32_t last_write;
	uint32_t partial_since; /* first byte of the partial record in rbuf, if any */
	struct event ev;
};

/*
 * Each write buffer begins with this header; records follow it. Records in
 * [sent, sealed) are sealed and not yet sent; [sealed, end) holds unsealed records, laid
 * out as header, payload and room for the tag, whose LENGTH field already says the
 * payload's size. The last of them, at last, may still grow while open is set.
 */
struct wq_hdr {
	struct hush_buf *next;
	uint32_t sent;
	uint32_t sealed;
	uint32_t end;
	uint32_t last;
	uint32_t open;
	uint32_t pad;
};
#define WQ_HDR_SIZE ((uint32_t)sizeof(struct wq_hdr))
/* Room for a partial record waiting between readiness events, at least: the 4 KiB tier.
 * It grows with the bytes that arrive (settle_partial). */
#define PARTIAL_IDLE_ROOM 4096u
/* Largest buffer a write borrows at once: the 64 KiB tier. */
#define WQ_MAX_BUF 65536u

static struct wq_hdr *wq_hdr(struct hush_buf *b)
{
	return (struct wq_hdr *)(void *)hush_buf_data(b);
}

static void conn_destroy(struct hush_conn *c);
static void conn_fail(struct hush_conn *c, int err);
static void update_interest(struct hush_conn *c);
static int flush_queue(struct hush_conn *c);
static void on_socket(evutil_socket_t fd, short what, void *arg);
static int send_sealed(struct hush_conn *c);
static void starve(struct hush_conn *c);
static void record_begin(struct wq_hdr *h, uint8_t *d);
static void peer_closed(struct hush_conn *c);
static int queue_confirm(struct hush_conn *c);

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

/* Milliseconds of the loop's cached clock, modulo 2^32 (differences stay right). */
static uint32_t now_ms(struct hush_conn *c)
{
	struct timeval tv;
	event_base_gettimeofday_cached(c->loop->base, &tv);
	return (uint32_t)((uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u);
}

/* Whether timeout_ms have passed from since to now, both from now_ms(); false while now
 * reads earlier than since (see check_timeouts). Timeouts are below 2^31 ms. */
static bool elapsed(uint32_t now, uint32_t since, uint32_t timeout_ms)
{
	return (int32_t)(now - since) >= (int32_t)timeout_ms;
}

/* Callback guards: depth counts callbacks on the stack so a free from inside one is
 * carried out when the outermost returns. leave() says whether c is still alive. */
static void enter(struct hush_conn *c)
{
	c->depth++;
}

static bool leave(struct hush_conn *c)
{
	if (--c->depth == 0 && (c->flags & F_FREEING)) {
		conn_destroy(c);
		return false;
	}
	return true;
}

static bool dead(const struct hush_conn *c)
{
	return (c->flags & F_FREEING) != 0 || c->state == ST_FAILED;
}

static void emit(struct hush_conn *c, enum hush_conn_event ev, int err)
{
	if (c->cfg->cb.on_event != NULL && !(c->flags & F_FREEING)) {
		c->cfg->cb.on_event(c, ev, err, c->arg);
	}
}

/* Cipher contexts: borrowed from the loop while the connection moves bytes. */
static int ciphers_attach(struct hush_conn *c)
{
	if ((c->flags & F_CIPHERS) || (c->cfg->c.flags & HUSH_CONN_PINNED)) {
		return 0;
	}
	EVP_CIPHER_CTX *s = hush__loop_ctx_borrow(c->loop);
	EVP_CIPHER_CTX *o = hush__loop_ctx_borrow(c->loop);
	if (s == NULL || o == NULL) {
		hush__loop_ctx_return(c->loop, s);
		hush__loop_ctx_return(c->loop, o);
		return HUSH_ENOMEM;
	}
	hush__record_give_ciphers(c->rec, s, o);
	c->flags |= F_CIPHERS;
	return 0;
}

static void ciphers_detach(struct hush_conn *c)
{
	if (!(c->flags & F_CIPHERS)) {
		return;
	}
	EVP_CIPHER_CTX *s = NULL;
	EVP_CIPHER_CTX *o = NULL;
	hush__record_take_ciphers(c->rec, &s, &o);
	hush__loop_ctx_return(c->loop, s);
	hush__loop_ctx_return(c->loop, o);
	c->flags &= ~(uint32_t)F_CIPHERS;
}


static int schedule(struct hush_conn *c)
{
	if (c->flags & F_PENDING) {
		return 0;
	}
	HUSH_GUARD(hush__loop_add_pending(c->loop, c));
	c->flags |= F_PENDING;
	return 0;
}

/* ---- Creation and teardown ---- */

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
	loop->nconns++;
	*out = c;
	return 0;
fail:
	if (close_fd && fd >= 0) {
		close(fd);
	}
	return rc;
}

/* The classic design: buffers for the connection's whole life (HUSH_CONN_PINNED). */
static int pin_buffers(struct hush_conn *c)
{
	const struct hush_conn_config *cfg = &c->cfg->c;
	struct hush_buf *rb = NULL;
	struct hush_buf *wb = NULL;
	if (c->rbuf == NULL) {
		HUSH_GUARD(hush_pool_acquire(c->loop->pool, cfg->read_size, &rb));
	}
	if (c->wq_head == NULL) {
		int rc = hush_pool_acquire(c->loop->pool, cfg->max_send_frame + WQ_HDR_SIZE, &wb);
		if (rc < 0) {
			hush_buf_release(rb);
			return rc;
		}
		struct wq_hdr *h = wq_hdr(wb);
		memset(h, 0, sizeof(*h));
		h->sent = h->sealed = h->end = h->last = WQ_HDR_SIZE;
		c->wq_head = c->wq_tail = wb;
	}
	if (rb != NULL) {
		c->rbuf = rb;
		c->rstart = c->rlen = 0;
	}
	return 0;
}

int hush_conn_start_raw(struct hush_conn *c, enum hush_record_protocol rp, const uint8_t *key,
			size_t key_len, enum hush_side side)
{
	HUSH_ENSURE(c != NULL, HUSH_EINVAL);
	HUSH_ENSURE(c->state == ST_NEW && c->rec == NULL, HUSH_ESTATE);
	const struct hush_conn_config *cfg = &c->cfg->c;
	bool pinned = (cfg->flags & HUSH_CONN_PINNED) != 0;
	struct hush_record *rec = NULL;
	int rc = pinned ? hush_record_new(&rec, rp, key, key_len, side)
			: hush__record_new_bare(&rec, rp, key, key_len, side);
	HUSH_GUARD(rc);
	rc = hush_record_set_limits(rec, cfg->max_send_frame, cfg->recv_limit);
	if (rc < 0) {
		hush_record_free(rec);
		return rc;
	}
	if (pinned) {
		rc = pin_buffers(c);
		if (rc < 0) {
			hush_record_free(rec);
			return rc;
		}
	}
	rc = schedule(c);
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

/* ---- The handshake phase ---- */

/* Whether the handshake phase still reads from the peer: its messages, or the NNpsk0
 * responder's confirmation record. */
static bool hs_reading(const struct hush_conn *c)
{
	return c->hs->hs != NULL || c->hs->confirm == CONFIRM_WAIT;
}

/* Frees what the handshake phase holds, wiping it, and gives back its listener slot. */
static void hs_end(struct hush_conn *c)
{
	if (!(c->flags & F_HS)) {
		return;
	}
	struct conn_hs *h = c->hs;
	if (h->owner != NULL) {
		hush__listener_handshake_ended(h->owner);
	}
	hush_handshake_free(h->hs);
	hush_record_free(h->rec);
	OPENSSL_cleanse(h, sizeof(*h));
	hush__free(h, sizeof(*h));
	c->hs = NULL;
	c->flags &= ~(uint32_t)F_HS;
}

int hush__conn_start_handshake_for(struct hush_conn *c, const struct hush_handshake_config *hcfg,
				   enum hush_side side, struct hush__admission *owner)
{
	HUSH_ENSURE(c != NULL && hcfg != NULL, HUSH_EINVAL);
	HUSH_ENSURE(c->state == ST_NEW && c->rec == NULL, HUSH_ESTATE);
	struct conn_hs *h = hush__calloc(sizeof(*h));
	HUSH_ENSURE(h != NULL, HUSH_ENOMEM);
	int rc = hush_handshake_new(&h->hs, hcfg, side);
	if (rc == 0) {
		/* The first step (the initiator's first flight) is taken from the loop. */
		rc = schedule(c);
	}
	if (rc < 0) {
		hush_handshake_free(h->hs);
		hush__free(h, sizeof(*h));
		return rc;
	}
	h->owner = owner;
	h->started = now_ms(c);
	if (hcfg->protocol == HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256 ||
	    hcfg->protocol == HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256) {
		h->confirm = side == HUSH_SIDE_CLIENT ? CONFIRM_SEND : CONFIRM_WAIT;
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

/* The write queue's tail with room for n more bytes, a new buffer added if needed. */
static int wq_room(struct hush_conn *c, size_t n, struct hush_buf **out)
{
	struct hush_buf *b = c->wq_tail;
	if (b == NULL || hush_buf_capacity(b) - wq_hdr(b)->end < n) {
		struct hush_buf *nb;
		HUSH_GUARD(hush_pool_acquire(c->loop->pool, WQ_HDR_SIZE + n, &nb));
		struct wq_hdr *nh = wq_hdr(nb);
		memset(nh, 0, sizeof(*nh));
		nh->sent = nh->sealed = nh->end = nh->last = WQ_HDR_SIZE;
		if (b != NULL) {
			wq_hdr(b)->next = nb;
		} else {
			c->wq_head = nb;
		}
		c->wq_tail = b = nb;
	}
	*out = b;
	return 0;
}

/* Appends n bytes that need no sealing (a handshake flight) to the write queue. */
static int queue_plain(struct hush_conn *c, const uint8_t *p, size_t n)
{
	struct hush_buf *b;
	HUSH_GUARD(wq_room(c, n, &b));
	struct wq_hdr *h = wq_hdr(b);
	memcpy(hush_buf_data(b) + h->end, p, n);
	h->end += (uint32_t)n;
	h->sealed = h->last = h->end;
	c->queued += n;
	return 0;
}

/*
 * The handshake is over: make the record context from its result, keep the result
 * (without the key) for the OPEN report, and free the Noise state at once. Records
 * that arrived with the last message stay in rbuf until OPEN is reported.
 */
static int hs_finish(struct hush_conn *c)
{
	struct conn_hs *h = c->hs;
	struct hush_handshake_result res;
	struct hush_record *rec = NULL;
	int rc = hush_handshake_result(h->hs, &res);
	if (rc == 0) {
		rc = (c->cfg->c.flags & HUSH_CONN_PINNED)
			 ? hush_record_new(&rec, res.record_protocol, res.key, res.key_len, res.side)
			 : hush__record_new_bare(&rec, res.record_protocol, res.key, res.key_len,
						 res.side);
	}
	if (rc == 0) {
		rc = hush_record_set_limits(rec, res.max_send_frame, res.recv_limit);
	}
	if (rc == 0) {
		rc = schedule(c);
	}
	OPENSSL_cleanse(res.key, sizeof(res.key));
	res.key_len = 0;
	if (rc < 0) {
		hush_record_free(rec);
		OPENSSL_cleanse(&res, sizeof(res));
		return rc;
	}
	h->res = res;
	OPENSSL_cleanse(&res, sizeof(res));
	h->rec = rec;
	hush_handshake_free(h->hs);
	h->hs = NULL;
	if (h->confirm == CONFIRM_SEND) {
		HUSH_GUARD(queue_confirm(c));
		h->confirm = CONFIRM_NONE;
	}
	if (h->confirm == CONFIRM_WAIT) {
		return 0; /* OPEN waits for the initiator's confirmation (hs_confirm) */
	}
	if (h->owner != NULL) {
		hush__listener_handshake_ended(h->owner);
		h->owner = NULL;
	}
	c->flags |= F_OPEN_REPORT;
	return 0;
}

/* Lends the handshake phase's record context cipher contexts for one call, when it has
 * none of its own (pinned connections keep theirs). */
static int hs_ciphers_lend(struct hush_conn *c)
{
	if (c->cfg->c.flags & HUSH_CONN_PINNED) {
		return 0;
	}
	EVP_CIPHER_CTX *sx = hush__loop_ctx_borrow(c->loop);
	EVP_CIPHER_CTX *ox = hush__loop_ctx_borrow(c->loop);
	if (sx == NULL || ox == NULL) {
		hush__loop_ctx_return(c->loop, sx);
		hush__loop_ctx_return(c->loop, ox);
		return HUSH_ENOMEM;
	}
	hush__record_give_ciphers(c->hs->rec, sx, ox);
	return 0;
}

static void hs_ciphers_return(struct hush_conn *c)
{
	if (c->cfg->c.flags & HUSH_CONN_PINNED) {
		return;
	}
	EVP_CIPHER_CTX *sx = NULL;
	EVP_CIPHER_CTX *ox = NULL;
	hush__record_take_ciphers(c->hs->rec, &sx, &ox);
	hush__loop_ctx_return(c->loop, sx);
	hush__loop_ctx_return(c->loop, ox);
}

/*
 * The initiator's confirmation record, sealed now (record 0) and queued with the
 * handshake's own bytes, so that it leaves with them before OPEN is reported: even an
 * application that frees the connection at OPEN has sent it.
 */
static int queue_confirm(struct hush_conn *c)
{
	struct hush_buf *b;
	HUSH_GUARD(wq_room(c, CONFIRM_FRAME, &b));
	struct wq_hdr *h = wq_hdr(b);
	uint8_t *d = hush_buf_data(b) + h->end;
	d[HUSH_RECORD_HEADER_SIZE] = CONFIRM_BYTE;
	size_t flen = 0;
	HUSH_GUARD(hs_ciphers_lend(c));
	int rc = hush_record_seal(c->hs->rec, d, CONFIRM_FRAME, 1, &flen);
	hs_ciphers_return(c);
	HUSH_GUARD(rc);
	h->end += (uint32_t)flen;
	h->sealed = h->last = h->end;
	c->queued += flen;
	return 0;
}

/* Opens one record with the handshake phase's record context. */
static int hs_open_record(struct hush_conn *c, uint8_t *p, size_t n, struct hush_iovec *pt)
{
	HUSH_GUARD(hs_ciphers_lend(c));
	int rc = hush_record_open(c->hs->rec, p, n, pt);
	hs_ciphers_return(c);
	return rc;
}

/*
 * The responder waits for the confirmation record: it must be the initiator's first
 * record, authenticated under the session's keys, which a replayed message 1 cannot
 * give (the responder's ephemeral key is new). Anything else fails the handshake: a
 * record that does not open (HUSH_EAUTH), one of another size or content
 * (HUSH_EHANDSHAKE). Until it arrives the handshake's deadline runs and the listener
 * counts it as in progress.
 */
static int hs_confirm(struct hush_conn *c)
{
	struct conn_hs *h = c->hs;
	if (c->rbuf == NULL || c->rlen < 4) {
		return 0;
	}
	uint8_t *p = hush_buf_data(c->rbuf) + c->rstart;
	/* Judged at the LENGTH already: nothing longer is waited for. */
	HUSH_ENSURE(hush__load_le32(p) == CONFIRM_FRAME - 4, HUSH_EHANDSHAKE);
	if (c->rlen < CONFIRM_FRAME) {
		return 0;
	}
	size_t need = 0;
	HUSH_GUARD(hush_record_parse(h->rec, p, c->rlen, &need));
	HUSH_ENSURE(need == CONFIRM_FRAME, HUSH_EHANDSHAKE);
	struct hush_iovec pt;
	HUSH_GUARD(hs_open_record(c, p, need, &pt));
	HUSH_ENSURE(pt.len == 1 && ((const uint8_t *)pt.base)[0] == CONFIRM_BYTE,
		    HUSH_EHANDSHAKE);
	c->rstart += CONFIRM_FRAME;
	c->rlen -= CONFIRM_FRAME;
	h->confirm = CONFIRM_NONE;
	if (h->owner != NULL) {
		hush__listener_handshake_ended(h->owner);
		h->owner = NULL;
	}
	HUSH_GUARD(schedule(c));
	c->flags |= F_OPEN_REPORT;
	return 0;
}

/* The peer's first message is in once it is this end's turn or the handshake is done:
 * the listener stops treating the connection as the least advanced. */
static void hs_note_progress(struct conn_hs *h)
{
	if (h->owner != NULL && h->hs != NULL &&
	    (hush_handshake_wants_write(h->hs) || hush_handshake_done(h->hs))) {
		hush__listener_handshake_progressed(h->owner);
	}
}

/*
 * Runs the handshake as far as the bytes at hand allow: feeds what was received, writes
 * this end's messages into the write queue, and sends. Bytes received while it is this
 * end's turn to write fail it with HUSH_EOUTOFTURN (the peer spoke out of turn): the
 * handshake object judges that, since received bytes are always fed first.
 */
static void hs_step(struct hush_conn *c)
{
	struct conn_hs *h = c->hs;
	int rc = 0;
	while (rc == 0 && h->hs != NULL) {
		if (c->rbuf != NULL && c->rlen > 0) {
			size_t used = 0;
			rc = hush_handshake_read(h->hs, hush_buf_data(c->rbuf) + c->rstart, c->rlen,
						 &used);
			if (rc == 0) {
				c->rstart += (uint32_t)used;
				c->rlen -= (uint32_t)used;
				hs_note_progress(h);
			}
		} else if (hush_handshake_wants_write(h->hs)) {
			uint8_t out[HUSH_HANDSHAKE_MAX_OUTPUT];
			size_t n = 0;
			rc = hush_handshake_next(h->hs, out, sizeof(out), &n);
			if (rc == 0) {
				rc = queue_plain(c, out, n);
			}
		} else {
			break;
		}
		if (rc == 0 && hush_handshake_done(h->hs)) {
			rc = hs_finish(c);
		}
	}
	if (rc == 0 && h->confirm == CONFIRM_WAIT && h->hs == NULL) {
		rc = hs_confirm(c);
	}
	if (rc == 0) {
		rc = send_sealed(c);
	}
	if (rc < 0) {
		conn_fail(c, rc);
		return;
	}
	update_interest(c);
}

/* The outcome rc of getting read room for c: when the pool's budget is spent, c waits
 * for a buffer to come back (starve); any other failure fails c. Returns rc == 0. */
static bool read_room_ok(struct hush_conn *c, int rc)
{
	if (rc == HUSH_ENOBUFS) {
		starve(c);
	} else if (rc < 0) {
		conn_fail(c, rc);
	}
	return rc == 0;
}

/* Borrows a read buffer (read_size bytes) for c. Returns whether c has it. */
static bool acquire_rbuf(struct hush_conn *c)
{
	if (!read_room_ok(c, hush_pool_acquire(c->loop->pool, c->cfg->c.read_size, &c->rbuf))) {
		return false;
	}
	c->rstart = c->rlen = 0;
	return true;
}

static void hs_on_readable(struct hush_conn *c)
{
	if (c->rbuf == NULL && !acquire_rbuf(c)) {
		return;
	}
	size_t off = c->rstart + c->rlen;
	ssize_t n;
	do {
		n = recv(c->fd, hush_buf_data(c->rbuf) + off, hush_buf_capacity(c->rbuf) - off, 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		n = 0;
	} else if (n < 0) {
		conn_fail(c, errno == ECONNRESET ? HUSH_ECONNRESET : HUSH_EIO);
		return;
	} else if (n == 0) {
		conn_fail(c, HUSH_ECLOSED); /* the peer went away mid-handshake */
		return;
	}
	c->rlen += (uint32_t)n;
	hs_step(c);
	/* Nothing pending (the handshake keeps partial messages itself): give the buffer
	 * back. Records that followed the last message keep it until OPEN. */
	if (!dead(c) && c->rbuf != NULL && c->rlen == 0) {
		hush_buf_release(c->rbuf);
		c->rbuf = NULL;
		c->rstart = 0;
	}
}

bool hush__conn_abort_handshake(struct hush_conn *c, int err)
{
	if (c->state != ST_HANDSHAKE) {
		return false;
	}
	conn_fail(c, err);
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

static void release_buffers(struct hush_conn *c)
{
	hush_buf_release(c->rbuf);
	c->rbuf = NULL;
	c->rlen = c->rstart = 0;
	for (struct hush_buf *b = c->wq_head; b != NULL;) {
		struct hush_buf *next = wq_hdr(b)->next;
		hush_buf_release(b);
		b = next;
	}
	c->wq_head = c->wq_tail = NULL;
	c->queued = 0;
}

static void conn_destroy(struct hush_conn *c)
{
	event_del(&c->ev);
	if (c->flags & (F_PENDING | F_STARVED)) {
		hush__loop_forget(c->loop, c);
	}
	release_buffers(c);
	ciphers_detach(c);
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
	conn_destroy(c);
}

/* Fails the connection for good: stops its event, drops its buffers, reports err. */
static void conn_fail(struct hush_conn *c, int err)
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
	release_buffers(c);
	ciphers_detach(c);
	hs_end(c);
	/* Reported from the loop, so no API call ever calls back into the application. */
	c->flags |= F_ERR_REPORT;
	if (schedule(c) < 0) {
		c->flags &= ~(uint32_t)F_ERR_REPORT;
		emit(c, HUSH_CONN_EV_ERROR, err);
	}
}

/* ---- Event interest ---- */

/* Marks c->interest while the record deadline's timer runs (not an event flag). */
#define IN_PARTIAL 0x80u

/* Whether bytes of a record wait in rbuf for the rest, with a deadline configured. Only
 * while reading: a pause by the application, or a wait for pool buffers, holds records
 * for reasons that are not the peer's. */
static bool partial_pending_now(const struct hush_conn *c)
{
	return c->state == ST_OPEN && c->rbuf != NULL && c->rlen > 0 &&
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
 * one never keeps a connection alive. rs is rstart before the records were opened.
 */
static void note_read_progress(struct hush_conn *c, bool had_partial, uint32_t rs)
{
	bool completed = c->rstart != rs;
	uint32_t now = now_ms(c);
	if (completed) {
		c->last_read = now;
	}
	if (c->rlen > 0 && (completed || !had_partial)) {
		c->partial_since = now;
	}
}

static void update_interest(struct hush_conn *c)
{
	uint8_t want = 0;
	bool hs = c->state == ST_HANDSHAKE;
	if (c->state == ST_OPEN && !(c->flags & (F_PAUSED | F_STARVED | F_EOF | F_FREEING))) {
		want |= EV_READ;
	}
	/* A handshake reads until it finishes, paused or not: its bytes are not the
	 * application's. */
	if (hs && hs_reading(c) && !(c->flags & (F_STARVED | F_FREEING | F_HS_HELD))) {
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

/*
 * The peer's close record arrived: its direction ended cleanly. Whatever follows it is
 * ignored, as TLS ignores data after close_notify (docs/PROTOCOL.md), and reading stops.
 */
static void peer_closed(struct hush_conn *c)
{
	hush_buf_release(c->rbuf);
	c->rbuf = NULL;
	c->rstart = c->rlen = 0;
	c->flags &= ~(uint32_t)F_RBUF_KEPT;
	c->flags |= F_EOF;
	update_interest(c);
	emit(c, HUSH_CONN_EV_EOF, 0);
}

struct hush_buf *hush_conn_keep_data(struct hush_conn *c)
{
	if (c == NULL || !(c->flags & F_IN_DATA) || c->rbuf == NULL) {
		return NULL;
	}
	hush_buf_ref(c->rbuf);
	c->flags |= F_RBUF_KEPT;
	return c->rbuf;
}

/*
 * Opens and delivers every complete record in rbuf, stopping early when the
 * application pauses reading. *need is the size of the next record when known.
 * Returns false when the connection failed or went away.
 */
static bool drain(struct hush_conn *c, size_t *need)
{
	uint8_t *base = hush_buf_data(c->rbuf);
	*need = 0;
	while (c->rlen > 0 && !(c->flags & F_PAUSED)) {
		int rc = hush_record_parse(c->rec, base + c->rstart, c->rlen, need);
		if (rc == HUSH_EAGAIN) {
			return true;
		}
		if (rc == 0) {
			struct hush_iovec pt;
			rc = hush_record_open(c->rec, base + c->rstart, *need, &pt);
			if (rc == 0) {
				c->rstart += (uint32_t)*need;
				c->rlen -= (uint32_t)*need;
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
		conn_fail(c, rc);
		return false;
	}
	return true;
}

static void starve(struct hush_conn *c)
{
	if (hush__loop_add_starved(c->loop, c) == 0) {
		c->flags |= F_STARVED;
		update_interest(c);
	}
	/* If even the list could not grow, reading stays enabled and the next readiness
	 * event tries again: slower, but nothing is lost. */
}

/*
 * Decides where the pending partial record lives, once the complete records before it
 * were delivered. need is its total size (the 4-byte length is in) or 0 / 4 when not
 * known yet. The record must fit its buffer from rstart on, so the next recv has room;
 * a buffer the application kept is never written over below rstart; and at the end of
 * a readiness event (final) a record waiting for more bytes sits in a buffer sized for
 * it, not in a large one. Returns 0, or an acquire error with nothing changed.
 */
static int settle_partial(struct hush_conn *c, size_t need, bool final)
{
	bool kept = (c->flags & F_RBUF_KEPT) != 0;
	if (c->rlen == 0) {
		c->rstart = 0;
		if (kept) {
			hush_buf_release(c->rbuf);
			c->rbuf = NULL;
			c->flags &= ~(uint32_t)F_RBUF_KEPT;
		}
		return 0;
	}
	size_t cap = hush_buf_capacity(c->rbuf);
	size_t total = need > c->rlen ? need : c->rlen;
	/*
	 * The room a partial record gets grows with the bytes that actually arrived, not
	 * with the LENGTH it announces: the header is not authenticated, so four bytes
	 * from anyone on the path could otherwise pin a buffer of the whole receive limit
	 * for as long as they stay silent. Doubling costs a large record at most
	 * log2(limit / read_size) copies, about its own size in all.
	 */
	size_t floor = final ? PARTIAL_IDLE_ROOM : c->cfg->c.read_size;
	size_t grow = 2 * (size_t)c->rlen > floor ? 2 * (size_t)c->rlen : floor;
	size_t want = total < grow ? total : grow;
	bool pinned = (c->cfg->c.flags & HUSH_CONN_PINNED) != 0;
	/* Much larger than what it is for: a smaller tier would hold it. */
	bool oversized = final && !pinned && cap > 2 * want + HUSH_POOL_HEADROOM;
	if (!kept && want <= cap && !oversized) {
		if (c->rstart > 0) {
			memmove(hush_buf_data(c->rbuf), hush_buf_data(c->rbuf) + c->rstart, c->rlen);
			c->rstart = 0;
		}
		return 0;
	}
	if (kept && !final && c->rstart + want <= cap) {
		return 0; /* appending after the kept plaintext overwrites none of it */
	}
	struct hush_buf *nb;
	int rc = hush_pool_acquire(c->loop->pool, want, &nb);
	if (rc < 0) {
		/* Without a new buffer the current one still works while it has room for
		 * more of the record; once full, reading waits for the pool. */
		if (!kept && c->rlen < cap) {
			memmove(hush_buf_data(c->rbuf), hush_buf_data(c->rbuf) + c->rstart, c->rlen);
			c->rstart = 0;
			return 0;
		}
		if (c->rstart + c->rlen < cap) {
			return 0;
		}
		return rc;
	}
	memcpy(hush_buf_data(nb), hush_buf_data(c->rbuf) + c->rstart, c->rlen);
	hush_buf_release(c->rbuf);
	c->rbuf = nb;
	c->rstart = 0;
	c->flags &= ~(uint32_t)F_RBUF_KEPT;
	return 0;
}

/*
 * Delivers the records already in rbuf and makes room for the rest of a partial one.
 * Returns false when the connection stopped (failed, freed, or starved for buffers).
 */
static bool prepare_rbuf(struct hush_conn *c, bool final)
{
	size_t need;
	if (!drain(c, &need)) {
		return false;
	}
	return read_room_ok(c, settle_partial(c, need, final));
}

/* The end of a readiness event: the buffer goes back at once unless it holds part of a
 * record (or, in pinned mode, for the connection's life). */
static void rbuf_idle(struct hush_conn *c)
{
	if (c->rbuf == NULL || dead(c)) {
		return;
	}
	if (c->rlen == 0 && !(c->cfg->c.flags & HUSH_CONN_PINNED)) {
		hush_buf_release(c->rbuf);
		c->rbuf = NULL;
		c->rstart = 0;
		c->flags &= ~(uint32_t)F_RBUF_KEPT;
		return;
	}
	if (!(c->flags & F_PAUSED)) {
		prepare_rbuf(c, true);
	}
}

static void on_readable(struct hush_conn *c)
{
	const struct hush_conn_config *cfg = &c->cfg->c;
	size_t budget = cfg->max_read_per_event;

	while (budget > 0 && !(c->flags & (F_PAUSED | F_EOF | F_STARVED)) && !dead(c)) {
		/* Deliver what is already here and make room for the rest of a partial
		 * record; this may also give back a buffer the application kept. */
		if (c->rbuf != NULL && (!prepare_rbuf(c, false) || (c->flags & F_PAUSED))) {
			break;
		}
		if (c->rbuf == NULL && !acquire_rbuf(c)) {
			return;
		}
		bool had_partial = c->rlen > 0;
		uint8_t *base = hush_buf_data(c->rbuf);
		size_t off = c->rstart + c->rlen;
		size_t room = hush_buf_capacity(c->rbuf) - off;
		if (room > budget) {
			room = budget;
		}
		ssize_t n = recv(c->fd, base + off, room, 0);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				break;
			}
			conn_fail(c, errno == ECONNRESET ? HUSH_ECONNRESET : HUSH_EIO);
			return;
		}
		if (n == 0) {
			/* With the close signal, only the close record is a clean end. */
			if (c->rlen > 0 || (c->flags & F_CLOSE_SIG)) {
				conn_fail(c, HUSH_ETRUNCATED);
				return;
			}
			c->flags |= F_EOF;
			update_interest(c);
			emit(c, HUSH_CONN_EV_EOF, 0);
			break;
		}
		budget -= (size_t)n;
		c->rlen += (uint32_t)n;
		uint32_t rs = c->rstart;
		size_t need;
		if (!drain(c, &need)) {
			return;
		}
		note_read_progress(c, had_partial, rs);
	}
	rbuf_idle(c);
}

/* ---- Write path ---- */

static size_t max_payload(const struct hush_conn *c)
{
	return hush_record_max_payload(c->rec);
}

/* Seals every unsealed record in the queue. */
static int seal_all(struct hush_conn *c)
{
	for (struct hush_buf *b = c->wq_head; b != NULL; b = wq_hdr(b)->next) {
		struct wq_hdr *h = wq_hdr(b);
		uint8_t *d = hush_buf_data(b);
		size_t cap = hush_buf_capacity(b);
		while (h->sealed < h->end) {
			uint32_t len = hush__load_le32(d + h->sealed);
			size_t plen = len - (HUSH_RECORD_TAG_SIZE + 4);
			size_t flen;
			HUSH_GUARD(hush_record_seal(c->rec, d + h->sealed, cap - h->sealed, plen,
						    &flen));
			h->sealed += (uint32_t)flen;
		}
		h->open = 0;
	}
	return 0;
}

/* Sends sealed bytes until the socket refuses or nothing is left. */
static int send_sealed(struct hush_conn *c)
{
	const bool pinned = (c->cfg->c.flags & HUSH_CONN_PINNED) != 0;
	for (;;) {
		struct iovec iov[64];
		int cnt = 0;
		for (struct hush_buf *b = c->wq_head; b != NULL && cnt < 64; b = wq_hdr(b)->next) {
			struct wq_hdr *h = wq_hdr(b);
			if (h->sealed > h->sent) {
				iov[cnt].iov_base = hush_buf_data(b) + h->sent;
				iov[cnt].iov_len = h->sealed - h->sent;
				cnt++;
			}
			if (h->sealed < h->end) {
				break; /* records after this are not sealed yet */
			}
		}
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
		size_t left = (size_t)n;
		c->queued -= left;
		while (c->wq_head != NULL) {
			struct hush_buf *b = c->wq_head;
			struct wq_hdr *h = wq_hdr(b);
			size_t avail = h->sealed - h->sent;
			size_t k = left < avail ? left : avail;
			h->sent += (uint32_t)k;
			left -= k;
			if (h->sent < h->end || h->open) {
				break;
			}
			/* Every byte of this buffer is out: it goes back to the pool now. */
			if (pinned && b == c->wq_tail) {
				h->sent = h->sealed = h->end = h->last = WQ_HDR_SIZE;
				break;
			}
			c->wq_head = h->next;
			if (c->wq_head == NULL) {
				c->wq_tail = NULL;
			}
			hush_buf_release(b);
		}
	}
}

static void after_send_progress(struct hush_conn *c)
{
	const struct hush_conn_config *cfg = &c->cfg->c;
	if ((c->flags & F_OVER_HIGH) && c->queued <= cfg->write_low_water) {
		c->flags &= ~(uint32_t)F_OVER_HIGH;
		if (c->cfg->cb.on_writable != NULL && !dead(c)) {
			c->cfg->cb.on_writable(c, c->arg);
		}
	}
	if (!dead(c) && (c->flags & F_SHUT_REQ) && !(c->flags & F_SHUT_DONE) &&
	    c->queued == 0) {
		c->flags |= F_SHUT_DONE;
		if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
			conn_fail(c, HUSH_EIO);
			return;
		}
		emit(c, HUSH_CONN_EV_SHUTDOWN, 0);
	}
}

/* Seals and sends what is queued; failures fail the connection. */
static int flush_queue(struct hush_conn *c)
{
	if (c->state != ST_OPEN) {
		return c->err;
	}
	int rc = ciphers_attach(c);
	if (rc == 0) {
		rc = seal_all(c);
	}
	if (rc == 0) {
		rc = send_sealed(c);
	}
	if (rc < 0) {
		conn_fail(c, rc);
		return rc;
	}
	update_interest(c);
	return 0;
}

/* Starts a new unsealed record at the end of b. */
static void record_begin(struct wq_hdr *h, uint8_t *d)
{
	h->last = h->end;
	hush__store_le32(d + h->end, HUSH_RECORD_TAG_SIZE + 4);
	hush__store_le32(d + h->end + 4, HUSH_RECORD_TYPE);
	h->end += HUSH_RECORD_OVERHEAD;
	h->open = 1;
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
	const uint8_t *src = data;
	const size_t maxp = max_payload(c);
	/* Remember the tail so that a failure part-way undoes everything. */
	struct hush_buf *tail0 = c->wq_tail;
	struct wq_hdr save;
	uint32_t len0 = 0;
	if (tail0 != NULL) {
		save = *wq_hdr(tail0);
		if (save.open) {
			len0 = hush__load_le32(hush_buf_data(tail0) + save.last);
		}
	}
	size_t left = len;
	while (left > 0) {
		struct hush_buf *b = c->wq_tail;
		if (b != NULL) {
			struct wq_hdr *h = wq_hdr(b);
			uint8_t *d = hush_buf_data(b);
			size_t cap = hush_buf_capacity(b);
			if (h->open) {
				size_t plen = h->end - h->last - HUSH_RECORD_OVERHEAD;
				size_t room = maxp - plen;
				if (room > cap - h->end) {
					room = cap - h->end;
				}
				if (room > 0) {
					size_t k = left < room ? left : room;
					/* The payload ends where the tag room began. */
					memcpy(d + h->end - HUSH_RECORD_TAG_SIZE, src, k);
					h->end += (uint32_t)k;
					hush__store_le32(d + h->last,
							 (uint32_t)(plen + k + HUSH_RECORD_TAG_SIZE + 4));
					src += k;
					left -= k;
					continue;
				}
				h->open = 0;
			}
			if (cap - h->end > HUSH_RECORD_OVERHEAD) {
				record_begin(h, d);
				continue;
			}
		}
		/* A new buffer, large enough for the rest when it is small, else the 64 KiB
		 * tier; never smaller than one full record (or that tier) so small writes
		 * coalesce. With frames above the tier a record ends where its buffer does:
		 * a one-byte write must not borrow a 1 MiB buffer. */
		size_t recs = (left + maxp - 1) / maxp;
		size_t want = WQ_HDR_SIZE + (left > maxp ? left + recs * HUSH_RECORD_OVERHEAD
							 : maxp + HUSH_RECORD_OVERHEAD);
		want = want > WQ_MAX_BUF ? WQ_MAX_BUF : want;
		struct hush_buf *nb;
		int arc = hush_pool_acquire(c->loop->pool, want, &nb);
		if (arc < 0) {
			/* Undo: drop new buffers, restore the old tail. */
			struct hush_buf *first = tail0 ? wq_hdr(tail0)->next : c->wq_head;
			while (first != NULL) {
				struct hush_buf *next = wq_hdr(first)->next;
				hush_buf_release(first);
				first = next;
			}
			if (tail0 != NULL) {
				*wq_hdr(tail0) = save;
				wq_hdr(tail0)->next = NULL;
				if (save.open) {
					hush__store_le32(hush_buf_data(tail0) + save.last, len0);
				}
			} else {
				c->wq_head = NULL;
			}
			c->wq_tail = tail0;
			return arc;
		}
		struct wq_hdr *h = wq_hdr(nb);
		memset(h, 0, sizeof(*h));
		h->sent = h->sealed = h->end = h->last = WQ_HDR_SIZE;
		if (c->wq_tail != NULL) {
			wq_hdr(c->wq_tail)->next = nb;
		} else {
			c->wq_head = nb;
		}
		c->wq_tail = nb;
	}
	c->stats.bytes_out += len;
	c->queued = 0;
	for (struct hush_buf *b = c->wq_head; b != NULL; b = wq_hdr(b)->next) {
		c->queued += wq_hdr(b)->end - wq_hdr(b)->sent;
	}

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
	int rc = 0;
	if (c->flags & F_IN_ENTRY) {
		c->flags |= F_FLUSH_END;
	} else {
		rc = schedule(c);
	}
	if (rc == 0 && c->queued >= WQ_MAX_BUF / 2 && !(c->flags & F_WANT_WRITE)) {
		rc = hush_conn_flush(c);
	}
	if (rc < 0) {
		return rc;
	}
	if (c->queued > c->cfg->c.write_high_water) {
		c->flags |= F_OVER_HIGH;
		return 1;
	}
	return 0;
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
	int rc = flush_queue(c);
	if (c->depth == 1 && !(c->flags & F_PENDING)) {
		ciphers_detach(c);
	}
	leave(c);
	return rc;
}

size_t hush_conn_queued(const struct hush_conn *c)
{
	return c != NULL ? c->queued : 0;
}

/*
 * Queues the close record (an empty record: LENGTH 20, TYPE, tag) after everything
 * queued. It is sealed with the rest, so it is the last record of this direction.
 */
static int queue_close(struct hush_conn *c)
{
	struct hush_buf *b;
	HUSH_GUARD(wq_room(c, HUSH_RECORD_OVERHEAD, &b));
	struct wq_hdr *h = wq_hdr(b);
	h->open = 0;
	record_begin(h, hush_buf_data(b));
	h->open = 0;
	c->queued += HUSH_RECORD_OVERHEAD;
	return 0;
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
	HUSH_GUARD(schedule(c));
	if (c->flags & F_CLOSE_SIG) {
		HUSH_GUARD(queue_close(c));
	}
	c->flags |= F_SHUT_REQ;
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
		if (hs_reading(c) && cfg->handshake_timeout_ms != 0 &&
		    elapsed(now, c->hs->started, cfg->handshake_timeout_ms)) {
			conn_fail(c, HUSH_ETIMEDOUT);
		}
		return;
	}
	/* Each of these stamps may come from outside the loop (a call from the application:
	 * a fresh clock) while now is the loop's cached clock, which can read a little
	 * behind it: differences are signed, so that such a stamp never looks like an
	 * expiry (unsigned, it wrapped to 2^32 - 1 and failed a connection at once). */
	if (partial_pending(c) && elapsed(now, c->partial_since, cfg->record_timeout_ms)) {
		conn_fail(c, HUSH_ESTALLED);
		return;
	}
	if ((c->interest & EV_READ) && cfg->read_timeout_ms != 0 &&
	    elapsed(now, c->last_read, cfg->read_timeout_ms)) {
		conn_fail(c, HUSH_ETIMEDOUT);
		return;
	}
	if ((c->flags & F_WANT_WRITE) && cfg->write_timeout_ms != 0 &&
	    elapsed(now, c->last_write, cfg->write_timeout_ms)) {
		conn_fail(c, HUSH_ETIMEDOUT);
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
	if (!dead(c) && flush_queue(c) == 0) {
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
				conn_fail(c, rc);
			}
		}
		if (!dead(c) && (what & EV_READ)) {
			hs_on_readable(c);
		}
		if (!dead(c)) {
			update_interest(c);
		}
		leave(c);
		return;
	}
	if (!dead(c) && (what & EV_WRITE)) {
		if (flush_queue(c) == 0) {
			after_send_progress(c);
		}
	}
	c->flags |= F_IN_ENTRY;
	if (!dead(c) && (what & EV_READ)) {
		int rc = ciphers_attach(c);
		if (rc < 0) {
			conn_fail(c, rc);
		} else {
			on_readable(c);
		}
	}
	entry_flush(c);
	if (!dead(c)) {
		update_interest(c);
		if (!(c->flags & F_PENDING)) {
			ciphers_detach(c);
		}
	}
	leave(c);
}

/* Delivers records that were read before the application paused. */
static void replay(struct hush_conn *c)
{
	if (c->rbuf == NULL || (c->flags & F_PAUSED)) {
		return;
	}
	int rc = ciphers_attach(c);
	if (rc < 0) {
		conn_fail(c, rc);
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
	struct conn_hs *h = NULL;
	if (c->flags & F_HS) {
		h = c->hs;
		c->flags &= ~(uint32_t)F_HS;
		c->rec = h->rec;
		h->rec = NULL;
		c->state = ST_OPEN;
		c->flags |= F_CLOSE_SIG;
		c->last_read = c->last_write = c->partial_since = now_ms(c);
		if (c->rbuf != NULL && c->rlen > 0) {
			c->flags |= F_REPLAY; /* records that came with the last message */
		}
		int rc = 0;
		if (c->cfg->c.flags & HUSH_CONN_PINNED) {
			rc = pin_buffers(c);
		}
		if (rc < 0) {
			OPENSSL_cleanse(h, sizeof(*h));
			hush__free(h, sizeof(*h));
			conn_fail(c, rc); /* reported from the loop, as ever */
			return;
		}
	}
	update_interest(c);
	const struct hush_conn *prev_conn = c->loop->open_conn;
	const struct hush_handshake_result *prev_res = c->loop->open_res;
	c->loop->open_conn = c;
	c->loop->open_res = h != NULL ? &h->res : NULL;
	emit(c, HUSH_CONN_EV_OPEN, 0);
	c->loop->open_conn = prev_conn;
	c->loop->open_res = prev_res;
	if (h != NULL) {
		OPENSSL_cleanse(h, sizeof(*h));
		hush__free(h, sizeof(*h));
	}
}

static void on_pending_guarded(struct hush_conn *c, short what);

void hush__conn_on_pending(struct hush_conn *c)
{
	guarded(c, on_pending_guarded, 0);
}

static void on_pending_guarded(struct hush_conn *c, short what)
{
	(void)what;
	c->flags &= ~(uint32_t)F_PENDING;
	enter(c);
	if (c->flags & F_ERR_REPORT) {
		c->flags &= ~(uint32_t)F_ERR_REPORT;
		emit(c, HUSH_CONN_EV_ERROR, c->err);
		leave(c);
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
		if (flush_queue(c) == 0) {
			after_send_progress(c);
		}
	}
	if (!dead(c) && !(c->flags & F_PENDING)) {
		ciphers_detach(c);
	}
	leave(c);
}

static void on_wake_guarded(struct hush_conn *c, short what)
{
	(void)what;
	c->flags &= ~(uint32_t)F_STARVED;
	if (!dead(c)) {
		update_interest(c);
	}
}

void hush__conn_on_wake(struct hush_conn *c)
{
	guarded(c, on_wake_guarded, 0);
}

void hush_conn_pause_reading(struct hush_conn *c)
{
	if (c == NULL) {
		return;
	}
	c->flags |= F_PAUSED;
	if (c->state == ST_OPEN) {
		update_interest(c);
	}
}

void hush__conn_hold_handshake(struct hush_conn *c, bool hold)
{
	uint32_t was = c->flags;
	c->flags = hold ? c->flags | F_HS_HELD : c->flags & ~(uint32_t)F_HS_HELD;
	if (c->flags != was && c->state == ST_HANDSHAKE) {
		update_interest(c);
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
	if (c->rbuf != NULL && c->rlen > 0 && schedule(c) == 0) {
		c->flags |= F_REPLAY;
	}
	update_interest(c);
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
	unsigned n = c->rbuf != NULL;
	for (struct hush_buf *b = c->wq_head; b != NULL; b = wq_hdr(b)->next) {
		n++;
	}
	return n;
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

size_t hush__conn_hs_size(void)
{
	return sizeof(struct conn_hs);
}
