/*
 * libFuzzer harness: the initiator of hush's handshake (include/hush/handshake.h),
 * after its real first flight, fed what a responder would send, in arbitrary pieces.
 * The input's header (fuzzlib.h) picks the protocol, the configuration, how bytes are
 * split, an allocation to fail, and the mode for the fuzzed bytes:
 *   raw, real first  the whole stream from the responder: message 2, then whatever
 *                    follows (records, for a handshake that ends);
 *   structured       a Noise responder (noise.c, without hush's framing) reads the
 *                    initiator's message 1 and sends the fuzzed bytes as the payload
 *                    of message 2, so the parameter block parser, the peer check and
 *                    the end of the handshake see bytes that decrypt.
 * Keys and ephemerals are those of the worked examples, so corpus seeds built from
 * test/data/hush-handshake-vectors.txt are real messages 2. Checks every promise of
 * the API it can see (fuzzlib.c), and that both ends agree when a structured run
 * succeeds.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Largest payload the structured mode sends: more than the initiator accepts. */
#define MAX_PAYLOAD (HUSH_HANDSHAKE_MAX_MESSAGE + 64)

/* The Noise responder's message 2, carrying the fuzzed bytes, after reading the
 * initiator's first flight (hello, then message 1) from flight. */
static size_t noise_message_2(const struct fuzz_case *c, struct noise_handshake *n,
			      const uint8_t *flight, size_t flight_len, uint8_t *out, size_t cap)
{
	uint8_t payload[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t hello = HUSH_HS_LENGTH_SIZE + ((size_t)flight[0] << 8 | flight[1]);
	size_t pl = 0, m = 0;
	if (hello + HUSH_HS_LENGTH_SIZE > flight_len ||
	    hush__noise_read_message(n, flight + hello + HUSH_HS_LENGTH_SIZE,
			       flight_len - hello - HUSH_HS_LENGTH_SIZE, payload, sizeof(payload),
			       &pl) != 0) {
		abort(); /* hush's own first flight must read */
	}
	size_t plen = c->rest_len > MAX_PAYLOAD ? MAX_PAYLOAD : c->rest_len;
	if (hush__noise_write_message(n, c->rest, plen, out + HUSH_HS_LENGTH_SIZE,
				cap - HUSH_HS_LENGTH_SIZE, &m) != 0) {
		abort();
	}
	fuzz_put_length(out, m);
	return HUSH_HS_LENGTH_SIZE + m;
}

static void run(const struct fuzz_case *c)
{
	const struct fuzz_keys *k = fuzz_keys();
	bool xx = fuzz_pattern(c->protocol) != NOISE_NNPSK0;
	uint8_t allow[1][HUSH_KEY_SIZE];
	struct hush_handshake_config cfg;
	fuzz_config(&cfg, c, &k->init, &k->resp, allow);
	struct hush_handshake *i;
	if (hush_handshake_new(&i, &cfg, HUSH_SIDE_CLIENT) != 0) {
		return;
	}
	hush__handshake_set_ephemeral(i, k->init_e);

	/* The first flight is real, and always the initiator's to send. */
	static uint8_t flight[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t flight_len = 0;
	struct fuzz_drive d;
	int rc = fuzz_drive(i, NULL, 0, 0, &d);
	if (rc == 0) {
		if (d.out_len == 0 || !hush_handshake_wants_read(i)) {
			abort();
		}
		memcpy(flight, d.out, d.out_len);
		flight_len = d.out_len;
	}

	bool structured = c->mode == FUZZ_MODE_STRUCTURED;
	struct noise_handshake n;
	static uint8_t msg2[HUSH_HS_LENGTH_SIZE + MAX_PAYLOAD + 3 * 48];
	const uint8_t *stream = c->rest;
	size_t stream_len = c->rest_len;
	if (rc == 0 && structured) {
		const struct hush_keypair *me =
		    c->opts & FUZZ_OPT_STRANGER ? &k->stranger : &k->resp;
		if (fuzz_noise_init(&n, c, false, me, k->resp_e) != 0) {
			abort();
		}
		stream_len = noise_message_2(c, &n, flight, flight_len, msg2, sizeof(msg2));
		stream = msg2;
	}
	if (rc == 0) {
		rc = fuzz_drive(i, stream, stream_len, c->chunk, &d);
	}
	struct hush_handshake_result res;
	size_t used = rc == 0 ? d.used : 0;
	bool done = fuzz_check_end(i, rc, &cfg, stream + used, stream_len - used, &res);
	if (structured && flight_len > 0) {
		/* The outcome the protocol document prescribes for this payload. */
		int want;
		size_t plen = c->rest_len > MAX_PAYLOAD ? MAX_PAYLOAD : c->rest_len;
		if (stream_len - HUSH_HS_LENGTH_SIZE > HUSH_HANDSHAKE_MAX_MESSAGE) {
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
			/* XX: message 3 went out; the Noise responder reads it. Then both
			 * ends agree. */
			if (xx) {
				uint8_t payload[HUSH_HANDSHAKE_MAX_OUTPUT];
				size_t pl = 0;
				if (d.out_len < HUSH_HS_LENGTH_SIZE ||
				    hush__noise_read_message(&n, d.out + HUSH_HS_LENGTH_SIZE,
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
	hush_handshake_free(i);
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
