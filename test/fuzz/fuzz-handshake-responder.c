/*
 * libFuzzer harness: the responder of hush's handshake (include/hush/handshake.h) fed
 * what an initiator would send, in arbitrary pieces. The input's header (fuzzlib.h)
 * picks the protocol, the configuration, how bytes are split, an allocation to fail,
 * and one of three modes for the fuzzed bytes:
 *   raw           the whole stream: hello, message 1 and, for XX, message 3;
 *   real first    a real hush initiator's first flight (for NNpsk0: its hello only),
 *                 then the fuzzed bytes as the next message, length included;
 *   structured    a Noise initiator (noise.c, without hush's framing) runs the
 *                 handshake and sends the fuzzed bytes as the payload of its last
 *                 message (XX: message 3; NNpsk0: message 1), so the parameter block
 *                 parser and the end of the handshake see bytes that decrypt.
 * Keys and ephemerals are those of the worked examples, so corpus seeds built from
 * test/data/hush-handshake-vectors.txt are real messages. Checks every promise of the
 * API it can see (fuzzlib.c), and that both ends agree when a structured run succeeds.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Largest payload the structured mode sends: more than the responder accepts. */
#define MAX_PAYLOAD (HUSH_HANDSHAKE_MAX_MESSAGE + 64)

struct stream {
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT + HUSH_HS_LENGTH_SIZE + MAX_PAYLOAD + 2 * 48];
	size_t len;
};

/* The real first flight of a hush initiator for case c, into s. */
static int real_first_flight(const struct fuzz_case *c, struct stream *s)
{
	const struct fuzz_keys *k = fuzz_keys();
	uint8_t allow[1][HUSH_KEY_SIZE];
	struct hush_handshake_config cfg;
	fuzz_config(&cfg, c, &k->init, &k->resp, allow);
	struct hush_handshake *i;
	int rc = hush_handshake_new(&i, &cfg, HUSH_SIDE_CLIENT);
	if (rc != 0) {
		return rc;
	}
	hush__handshake_set_ephemeral(i, k->init_e);
	rc = hush_handshake_next(i, s->buf, sizeof(s->buf), &s->len);
	hush_handshake_free(i);
	return rc;
}

/* The hello, then (structured mode) the Noise initiator's message 1 for case c;
 * returns the length of message 1. */
static size_t noise_first_flight(const struct fuzz_case *c, struct noise_handshake *n,
				 struct stream *s)
{
	size_t hello = hush__handshake_prologue(c->protocol, s->buf + HUSH_HS_LENGTH_SIZE);
	fuzz_put_length(s->buf, hello);
	s->len = HUSH_HS_LENGTH_SIZE + hello;
	/* NNpsk0's message 1 carries the parameters: the fuzzed bytes. XX's is empty. */
	const uint8_t *payload = NULL;
	size_t payload_len = 0;
	if (fuzz_pattern(c->protocol) == NOISE_NNPSK0) {
		payload = c->rest;
		payload_len = c->rest_len > MAX_PAYLOAD ? MAX_PAYLOAD : c->rest_len;
	}
	size_t m = 0;
	int rc = hush__noise_write_message(n, payload, payload_len, s->buf + s->len + HUSH_HS_LENGTH_SIZE,
				     sizeof(s->buf) - s->len - HUSH_HS_LENGTH_SIZE, &m);
	if (rc != 0) {
		abort();
	}
	fuzz_put_length(s->buf + s->len, m);
	s->len += HUSH_HS_LENGTH_SIZE + m;
	return m;
}

/* The length of the first framed message at p (len bytes), with its length field. */
static size_t first_frame(const uint8_t *p, size_t len)
{
	if (len < HUSH_HS_LENGTH_SIZE) {
		abort();
	}
	return HUSH_HS_LENGTH_SIZE + ((size_t)p[0] << 8 | p[1]);
}

static void run(const struct fuzz_case *c)
{
	const struct fuzz_keys *k = fuzz_keys();
	bool xx = fuzz_pattern(c->protocol) != NOISE_NNPSK0;
	uint8_t allow[1][HUSH_KEY_SIZE];
	struct hush_handshake_config cfg;
	fuzz_config(&cfg, c, &k->resp, &k->init, allow);
	struct hush_handshake *r;
	if (hush_handshake_new(&r, &cfg, HUSH_SIDE_SERVER) != 0) {
		return;
	}
	hush__handshake_set_ephemeral(r, k->resp_e);

	static struct stream s;
	struct noise_handshake n;
	bool structured = c->mode == FUZZ_MODE_STRUCTURED;
	const uint8_t *stream = c->rest;
	size_t stream_len = c->rest_len;
	struct fuzz_drive d;
	size_t last_len = 0; /* structured mode: the length of the message with the payload */
	int rc = 0;
	if (c->mode == FUZZ_MODE_REAL_FIRST) {
		if (real_first_flight(c, &s) != 0) {
			/* The real initiator ran out of memory: nothing to test. */
			hush_handshake_free(r);
			return;
		}
		/* NNpsk0: only the hello is real; message 1 is fuzzed. */
		size_t real = xx ? s.len : first_frame(s.buf, s.len);
		rc = fuzz_drive(r, s.buf, real, 0, &d);
	} else if (structured) {
		const struct hush_keypair *me =
		    c->opts & FUZZ_OPT_STRANGER ? &k->stranger : &k->init;
		if (fuzz_noise_init(&n, c, true, me, k->init_e) != 0) {
			abort();
		}
		size_t m1 = noise_first_flight(c, &n, &s);
		last_len = m1;
		rc = fuzz_drive(r, s.buf, s.len, c->chunk, &d);
		stream_len = 0;
		if (rc == 0 && xx) {
			/* Message 2 from the responder is real: the Noise end reads it, then
			 * sends message 3 carrying the fuzzed bytes. */
			uint8_t payload[HUSH_HANDSHAKE_MAX_OUTPUT];
			size_t pl = 0, m = 0;
			size_t plen = c->rest_len > MAX_PAYLOAD ? MAX_PAYLOAD : c->rest_len;
			if (d.out_len < HUSH_HS_LENGTH_SIZE ||
			    hush__noise_read_message(&n, d.out + HUSH_HS_LENGTH_SIZE,
					       d.out_len - HUSH_HS_LENGTH_SIZE, payload,
					       sizeof(payload), &pl) != 0 ||
			    hush__noise_write_message(&n, c->rest, plen, s.buf + HUSH_HS_LENGTH_SIZE,
						sizeof(s.buf) - HUSH_HS_LENGTH_SIZE, &m) != 0) {
				abort();
			}
			fuzz_put_length(s.buf, m);
			stream = s.buf;
			stream_len = HUSH_HS_LENGTH_SIZE + m;
			last_len = m;
		}
	}
	if (rc == 0 && stream_len > 0) {
		rc = fuzz_drive(r, stream, stream_len, c->chunk, &d);
	}
	struct hush_handshake_result res;
	size_t used = rc == 0 ? d.used : 0;
	bool done = fuzz_check_end(r, rc, &cfg, stream + used, stream_len - used, &res);
	if (structured) {
		/* The outcome the protocol document prescribes for this payload. */
		int want;
		size_t plen = c->rest_len > MAX_PAYLOAD ? MAX_PAYLOAD : c->rest_len;
		if (last_len > HUSH_HANDSHAKE_MAX_MESSAGE) {
			want = HUSH_EHANDSHAKE;
		} else if (xx && c->opts & FUZZ_OPT_STRANGER) {
			want = HUSH_EPEER;
		} else {
			want = fuzz_params_expect(c->rest, plen, c->record_protocol);
		}
		if (rc != HUSH_ENOMEM && (rc != want || done != (want == 0))) {
			abort();
		}
		if (done) {
			/* The Noise initiator, when done, agrees with the responder. */
			if (!xx) {
				uint8_t payload[HUSH_HANDSHAKE_MAX_OUTPUT];
				size_t pl = 0;
				if (hush__noise_read_message(&n, d.out + HUSH_HS_LENGTH_SIZE,
						       d.out_len - HUSH_HS_LENGTH_SIZE, payload,
						       sizeof(payload), &pl) != 0) {
					abort();
				}
			}
			if (!hush__noise_done(&n) ||
			    memcmp(n.h, res.handshake_hash, NOISE_HASHLEN) != 0 ||
			    (xx && memcmp(res.remote_static, n.s_pub, HUSH_KEY_SIZE) != 0)) {
				abort();
			}
		}
		hush__noise_wipe(&n);
	}
	hush_handshake_result_wipe(&res);
	hush_handshake_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_case c;
	if (!fuzz_case_read(&c, data, size)) {
		return 0;
	}
	fuzz_alloc_begin(c.fail_alloc);
	run(&c);
	fuzz_alloc_end();
	return 0;
}
