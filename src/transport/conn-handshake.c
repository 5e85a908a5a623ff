/*
 * The handshake phase of a connection: a hush handshake run over the connection's read
 * buffer and write queue until records are keyed, then, for NNpsk0's responder, until
 * the initiator's confirmation record has opened. Separate from conn.c because none of
 * it touches the socket or the event: conn.c reads, sends and reports around it. See
 * docs/DESIGN.md, "Running it on a connection".
 */
#include <openssl/crypto.h>

#include "record/record-internal.h"
#include "transport/conn-handshake.h"

/*
 * Key confirmation for Noise NNpsk0 (docs/PROTOCOL.md section 14.1), whose responder
 * otherwise learns nothing of the initiator's liveness: a replayed message 1 would
 * complete its handshake. The initiator's first record is the confirmation record, a
 * record whose plaintext is the one byte CONFIRM_BYTE; the responder reports OPEN only
 * once it has opened it.
 */
enum confirm_role {
	CONFIRM_NONE = 0,
	CONFIRM_SEND, /* initiator: queue the confirmation record when the handshake ends */
	CONFIRM_WAIT, /* responder: the handshake ended; waiting for the confirmation */
};
static const uint8_t CONFIRM_BYTE = 0x01u;
#define CONFIRM_FRAME (HUSH_RECORD_OVERHEAD + 1u)

int hush__hs_new(struct hush__conn_hs **out, const struct hush_handshake_config *hcfg,
		 enum hush_side side, struct hush__hs_watch *watch, uint32_t now)
{
	struct hush__conn_hs *h = hush__calloc(sizeof(*h));
	HUSH_ENSURE(h != NULL, HUSH_ENOMEM);
	int rc = hush_handshake_new(&h->hs, hcfg, side);
	if (rc < 0) {
		hush__free(h, sizeof(*h));
		return rc;
	}
	h->watch = watch;
	h->started = now;
	if (hcfg->protocol == HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256 ||
	    hcfg->protocol == HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256) {
		h->confirm = side == HUSH_SIDE_CLIENT ? CONFIRM_SEND : CONFIRM_WAIT;
	}
	*out = h;
	return 0;
}

/* Tells the watcher, once, that the handshake ended. */
static void unwatch(struct hush__conn_hs *h)
{
	if (h->watch != NULL) {
		struct hush__hs_watch *w = h->watch;
		h->watch = NULL;
		w->ops->ended(w);
	}
}

void hush__hs_free(struct hush__conn_hs *h)
{
	if (h == NULL) {
		return;
	}
	unwatch(h);
	hush_handshake_free(h->hs);
	hush_record_free(h->rec);
	OPENSSL_cleanse(h, sizeof(*h));
	hush__free(h, sizeof(*h));
}

bool hush__hs_reading(const struct hush__conn_hs *h)
{
	return h->hs != NULL || h->confirm == CONFIRM_WAIT;
}

/* Lends the phase's record context cipher contexts for one call, when it has none of
 * its own (pinned connections keep theirs). */
static int ciphers_lend(struct hush__conn_hs *h, const struct hush__hs_io *io)
{
	return io->pinned ? 0 : hush__loop_lend_ciphers(io->loop, h->rec);
}

static void ciphers_return(struct hush__conn_hs *h, const struct hush__hs_io *io)
{
	if (!io->pinned) {
		hush__loop_take_ciphers(io->loop, h->rec);
	}
}

/*
 * The initiator's confirmation record, sealed now (record 0) and queued with the
 * handshake's own bytes, so that it leaves with them before OPEN is reported: even an
 * application that frees the connection at OPEN has sent it.
 */
static int queue_confirm(struct hush__conn_hs *h, const struct hush__hs_io *io)
{
	HUSH_GUARD(ciphers_lend(h, io));
	int rc = hush__wq_add_sealed(io->wq, io->loop->pool, h->rec, &CONFIRM_BYTE, 1);
	ciphers_return(h, io);
	return rc;
}

/*
 * The handshake is over: make the record context from its result, keep the result
 * (without the key) for the OPEN report, and free the Noise state at once. Records
 * that arrived with the last message stay in the read buffer until OPEN is reported.
 */
static int finish(struct hush__conn_hs *h, const struct hush__hs_io *io, unsigned *events)
{
	struct hush_handshake_result res;
	struct hush_record *rec = NULL;
	int rc = hush_handshake_result(h->hs, &res);
	if (rc == 0) {
		rc = io->pinned ? hush_record_new(&rec, res.record_protocol, res.key, res.key_len,
						  res.side)
				: hush__record_new_bare(&rec, res.record_protocol, res.key,
							res.key_len, res.side);
	}
	if (rc == 0) {
		rc = hush_record_set_limits(rec, res.max_send_frame, res.recv_limit);
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
	*events |= HUSH__HS_FINISHED;
	if (h->confirm == CONFIRM_SEND) {
		HUSH_GUARD(queue_confirm(h, io));
		h->confirm = CONFIRM_NONE;
	}
	if (h->confirm == CONFIRM_WAIT) {
		return 0; /* OPEN waits for the initiator's confirmation (confirm) */
	}
	unwatch(h);
	*events |= HUSH__HS_OPEN;
	return 0;
}

/*
 * The responder waits for the confirmation record: it must be the initiator's first
 * record, authenticated under the session's keys, which a replayed message 1 cannot
 * give (the responder's ephemeral key is new). Anything else fails the handshake: a
 * record that does not open (HUSH_EAUTH), one of another size or content
 * (HUSH_EHANDSHAKE). Until it arrives the handshake's deadline runs and the listener
 * counts it as in progress.
 */
static int confirm(struct hush__conn_hs *h, const struct hush__hs_io *io, unsigned *events)
{
	struct hush__rbuf *rb = io->rb;
	if (rb->buf == NULL || rb->len < 4) {
		return 0;
	}
	uint8_t *p = hush__rbuf_bytes(rb);
	/* Judged at the LENGTH already: nothing longer is waited for. */
	HUSH_ENSURE(hush__load_le32(p) == CONFIRM_FRAME - 4, HUSH_EHANDSHAKE);
	if (rb->len < CONFIRM_FRAME) {
		return 0;
	}
	size_t need = 0;
	HUSH_GUARD(hush_record_parse(h->rec, p, rb->len, &need));
	HUSH_ENSURE(need == CONFIRM_FRAME, HUSH_EHANDSHAKE);
	struct hush_iovec pt;
	HUSH_GUARD(ciphers_lend(h, io));
	int rc = hush_record_open(h->rec, p, need, &pt);
	ciphers_return(h, io);
	HUSH_GUARD(rc);
	HUSH_ENSURE(pt.len == 1 && ((const uint8_t *)pt.base)[0] == CONFIRM_BYTE, HUSH_EHANDSHAKE);
	hush__rbuf_consume(rb, CONFIRM_FRAME);
	h->confirm = CONFIRM_NONE;
	unwatch(h);
	*events |= HUSH__HS_OPEN;
	return 0;
}

/* The peer's first message is in once it is this end's turn or the handshake is done:
 * the listener stops treating the connection as the least advanced. */
static void note_progress(struct hush__conn_hs *h)
{
	if (h->watch != NULL && h->hs != NULL &&
	    (hush_handshake_wants_write(h->hs) || hush_handshake_done(h->hs))) {
		h->watch->ops->progressed(h->watch);
	}
}

int hush__hs_step(struct hush__conn_hs *h, const struct hush__hs_io *io, unsigned *events)
{
	struct hush__rbuf *rb = io->rb;
	int rc = 0;
	*events = 0;
	while (rc == 0 && h->hs != NULL) {
		if (rb->buf != NULL && rb->len > 0) {
			size_t used = 0;
			rc = hush_handshake_read(h->hs, hush__rbuf_bytes(rb), rb->len, &used);
			if (rc == 0) {
				hush__rbuf_consume(rb, used);
				note_progress(h);
			}
		} else if (hush_handshake_wants_write(h->hs)) {
			uint8_t out[HUSH_HANDSHAKE_MAX_OUTPUT];
			size_t n = 0;
			rc = hush_handshake_next(h->hs, out, sizeof(out), &n);
			if (rc == 0) {
				rc = hush__wq_add_plain(io->wq, io->loop->pool, out, n);
			}
		} else {
			break;
		}
		if (rc == 0 && hush_handshake_done(h->hs)) {
			rc = finish(h, io, events);
		}
	}
	if (rc == 0 && h->confirm == CONFIRM_WAIT && h->hs == NULL) {
		rc = confirm(h, io, events);
	}
	return rc;
}

size_t hush__conn_hs_size(void)
{
	return sizeof(struct hush__conn_hs);
}
