/*
 * Tests for src/record: known-answer vectors from gRPC's ALTS record tests, round trips,
 * counters at the rekey and overflow boundaries, and the negative set on parse and open.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "record/record-internal.h"
#include "common/common-internal.h"

#include <stdatomic.h>

#include <openssl/crypto.h>

#define VECTORS HUSH_SRCDIR "/test/data/alts-record-vectors.txt"

/* OpenSSL's own allocations, counted (hooks set first thing in main). */
static _Atomic uint64_t ossl_allocs;

static void *ossl_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	atomic_fetch_add(&ossl_allocs, 1);
	return malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	atomic_fetch_add(&ossl_allocs, 1);
	return realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	free(p);
}

static const enum hush_record_protocol ALL_RP[] = {HUSH_RP_ALTS_AES128_GCM_REKEY,
						   HUSH_RP_ALTS_AES128_GCM,
						   HUSH_RP_CHACHA20_POLY1305_REKEY};

static void key_for(enum hush_record_protocol rp, uint8_t *key, size_t *len)
{
	*len = hush_record_key_size(rp);
	for (size_t i = 0; i < *len; i++) {
		key[i] = (uint8_t)i;
	}
}

static struct hush_record *make(enum hush_record_protocol rp, enum hush_side side)
{
	uint8_t key[44];
	size_t len;
	struct hush_record *r = NULL;
	key_for(rp, key, &len);
	assert_int_equal(hush_record_new(&r, rp, key, len, side), 0);
	return r;
}

/* Seals payload (len bytes) into frame, which must have room; returns the frame size. */
static size_t seal(struct hush_record *r, uint8_t *frame, size_t cap, const void *payload,
		   size_t len)
{
	size_t flen = 0;
	memcpy(frame + HUSH_RECORD_HEADER_SIZE, payload, len);
	assert_int_equal(hush_record_seal(r, frame, cap, len, &flen), 0);
	assert_int_equal(flen, len + HUSH_RECORD_OVERHEAD);
	return flen;
}

/* ---- Vectors ---- */

/* Reads the value of name= from line into out; '-' is empty. Returns its length. */
static long field(const char *line, const char *name, uint8_t *out, size_t cap)
{
	char pat[32];
	snprintf(pat, sizeof(pat), " %s=", name);
	const char *p = strstr(line, pat);
	assert_non_null(p);
	p += strlen(pat);
	size_t n = strcspn(p, " \n");
	char hex[1024];
	assert_true(n < sizeof(hex));
	memcpy(hex, p, n);
	hex[n] = '\0';
	if (strcmp(hex, "-") == 0) {
		return 0;
	}
	long got = testlib_unhex(hex, out, cap);
	assert_true(got >= 0);
	return got;
}

static int for_each_vector(const char *kind, void (*fn)(const char *line))
{
	FILE *f = fopen(VECTORS, "r");
	assert_non_null(f);
	char line[2048];
	int n = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t k = strlen(kind);
		if (strncmp(line, kind, k) == 0 && line[k] == ' ') {
			fn(line);
			n++;
		}
	}
	fclose(f);
	return n;
}

static void check_rekey(const char *line)
{
	uint8_t key[44], nonce[12], aad[256], pt[256], ct[256], out[256];
	assert_int_equal(field(line, "key", key, sizeof(key)), 44);
	assert_int_equal(field(line, "nonce", nonce, sizeof(nonce)), 12);
	long aad_len = field(line, "aad", aad, sizeof(aad));
	long pt_len = field(line, "pt", pt, sizeof(pt));
	long ct_len = field(line, "ct", ct, sizeof(ct));
	assert_int_equal(ct_len, pt_len + 16);
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM_REKEY, key, nonce, aad,
					   (size_t)aad_len, pt, (size_t)pt_len, out, true),
			 0);
	assert_memory_equal(out, ct, (size_t)ct_len);
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM_REKEY, key, nonce, aad,
					   (size_t)aad_len, ct, (size_t)ct_len, out, false),
			 0);
	if (pt_len > 0) {
		assert_memory_equal(out, pt, (size_t)pt_len);
	}
	ct[ct_len - 1] ^= 1;
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM_REKEY, key, nonce, aad,
					   (size_t)aad_len, ct, (size_t)ct_len, out, false),
			 HUSH_EAUTH);
}

static void vectors_rekey_aead_match_grpc(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("rekey", check_rekey), 24);
}

static void check_aes128(const char *line)
{
	uint8_t key[16], counter[12], pt[64], ct[64], tag[16], out[96];
	assert_int_equal(field(line, "key", key, sizeof(key)), 16);
	assert_int_equal(field(line, "counter", counter, sizeof(counter)), 12);
	long pt_len = field(line, "pt", pt, sizeof(pt));
	assert_int_equal(field(line, "ct", ct, sizeof(ct)), pt_len);
	assert_int_equal(field(line, "tag", tag, sizeof(tag)), 16);
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM, key, counter, NULL, 0, pt,
					   (size_t)pt_len, out, true),
			 0);
	assert_memory_equal(out, ct, (size_t)pt_len);
	assert_memory_equal(out + pt_len, tag, 16);
}

static void vectors_aes128_crypter_match_grpc_go(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("aes128", check_aes128), 4);
}

static void check_gcm(const char *line)
{
	uint8_t key[16], nonce[12], aad[64], pt[64], ct[96], out[96];
	assert_int_equal(field(line, "key", key, sizeof(key)), 16);
	assert_int_equal(field(line, "nonce", nonce, sizeof(nonce)), 12);
	long aad_len = field(line, "aad", aad, sizeof(aad));
	long pt_len = field(line, "pt", pt, sizeof(pt));
	long ct_len = field(line, "ct", ct, sizeof(ct));
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM, key, nonce, aad,
					   (size_t)aad_len, pt, (size_t)pt_len, out, true),
			 0);
	assert_memory_equal(out, ct, (size_t)ct_len);
}

static void vectors_plain_gcm_match_grpc(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("gcm", check_gcm), 4);
}

static void check_counter(const char *line)
{
	uint8_t before[12], after[12], got[12];
	assert_int_equal(field(line, "before", before, sizeof(before)), 12);
	assert_int_equal(field(line, "after", after, sizeof(after)), 12);
	uint64_t index = 0;
	for (int i = 0; i < 5; i++) {
		index |= (uint64_t)before[i] << (8 * i);
	}
	enum hush_side side = before[11] == 0x80 ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	assert_true(hush__record_counter(index, side, 5, got));
	assert_memory_equal(got, before, 12);
	assert_true(hush__record_counter(index + 1, side, 5, got));
	assert_memory_equal(got, after, 12);
}

static void vectors_counter_increments_match_grpc_go(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("counter", check_counter), 6);
	uint8_t got[12];
	/* Rollover: 2^40 - 1 is the last value of a 5-byte counter. */
	assert_true(hush__record_counter(((uint64_t)1 << 40) - 1, HUSH_SIDE_CLIENT, 5, got));
	assert_false(hush__record_counter((uint64_t)1 << 40, HUSH_SIDE_CLIENT, 5, got));
}

/* The record context's first frame is the AEAD of counter 0 with the sender's side bit,
 * framed as section 1 says: checked against the vector-tested AEAD, per protocol. */
static void seal_first_frame_matches_aead_of_counter_zero(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		for (int side = 0; side < 2; side++) {
			uint8_t key[44];
			size_t klen;
			key_for(ALL_RP[i], key, &klen);
			struct hush_record *r = make(ALL_RP[i], (enum hush_side)side);
			uint8_t frame[64], expect[64], counter[12];
			size_t flen = seal(r, frame, sizeof(frame), "hello, hush", 11);
			assert_true(hush__record_counter(0, (enum hush_side)side, 5, counter));
			assert_int_equal(hush__record_aead(ALL_RP[i], key, counter, NULL, 0,
							   (const uint8_t *)"hello, hush", 11,
							   expect, true),
					 0);
			assert_int_equal(hush__load_le32(frame), 11 + 20);
			assert_int_equal(hush__load_le32(frame + 4), 6);
			assert_memory_equal(frame + 8, expect, flen - 8);
			hush_record_free(r);
		}
	}
}

/*
 * The worked example of docs/PROTOCOL.md: key bytes 00..2b, client, "hello, hush".
 * The ciphertext and tag were produced independently by grpc-go 1.33.3's
 * conn.NewAES128GCMRekey(ClientSide, key).Encrypt (Debian golang-google-grpc-dev).
 */
static void seal_worked_example_matches_protocol_doc(void **state)
{
	(void)state;
	static const char *expect_hex = "1f00000006000000"
					"37f9b12df8b3b923d0a683"
					"7f1bb76e265aa6d8df244f6eaec1dc34";
	struct hush_record *r = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t frame[64], expect[64];
	size_t flen = seal(r, frame, sizeof(frame), "hello, hush", 11);
	long n = testlib_unhex(expect_hex, expect, sizeof(expect));
	assert_int_equal(n, (long)flen);
	assert_memory_equal(frame, expect, flen);
	hush_record_free(r);
}

/* ---- Round trips ---- */

static void roundtrip_each_protocol_both_directions(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *c = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		struct hush_record *s = make(ALL_RP[i], HUSH_SIDE_SERVER);
		for (int k = 0; k < 50; k++) {
			uint8_t msg[1000], frame[1100];
			testlib_fill(msg, sizeof(msg), (uint64_t)k);
			size_t len = (size_t)k * 20;
			struct hush_record *from = k % 2 ? c : s;
			struct hush_record *to = k % 2 ? s : c;
			size_t flen = seal(from, frame, sizeof(frame), msg, len);
			size_t need;
			assert_int_equal(hush_record_parse(to, frame, flen, &need), 0);
			assert_int_equal(need, flen);
			struct hush_iovec pt;
			assert_int_equal(hush_record_open(to, frame, flen, &pt), 0);
			assert_int_equal(pt.len, len);
			assert_ptr_equal(pt.base, frame + 8);
			assert_memory_equal(pt.base, msg, len);
		}
		hush_record_free(c);
		hush_record_free(s);
	}
}

static void roundtrip_empty_and_max_payload_records(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	assert_int_equal(hush_record_max_payload(c), 16384 - 24);
	static uint8_t frame[16384], msg[16384];
	testlib_fill(msg, sizeof(msg), 1);
	size_t flen = seal(c, frame, sizeof(frame), msg, 0);
	assert_int_equal(flen, 24);
	assert_int_equal(hush__load_le32(frame), 20);
	struct hush_iovec pt;
	assert_int_equal(hush_record_open(s, frame, flen, &pt), 0);
	assert_int_equal(pt.len, 0);
	flen = seal(c, frame, sizeof(frame), msg, 16384 - 24);
	assert_int_equal(flen, 16384);
	assert_int_equal(hush_record_open(s, frame, flen, &pt), 0);
	assert_memory_equal(pt.base, msg, 16384 - 24);
	/* One byte more is refused, and the refusal is not sticky. */
	size_t out = 77;
	assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 16384 - 23, &out), HUSH_EMSGSIZE);
	assert_int_equal(hush_record_seal(c, frame, 100, 100, &out), HUSH_ENOSPACE);
	assert_int_equal(out, 77);
	assert_int_equal(hush_record_error(c), 0);
	flen = seal(c, frame, sizeof(frame), msg, 10);
	assert_int_equal(hush_record_open(s, frame, flen, &pt), 0);
	hush_record_free(c);
	hush_record_free(s);
}

static void roundtrip_one_mib_records_with_raised_limits(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	size_t frame_size = HUSH_RECORD_DEFAULT_RECV_LIMIT + 4;
	assert_int_equal(hush_record_set_limits(c, frame_size, 0), 0);
	assert_int_equal(hush_record_max_frame(s), frame_size);
	uint8_t *frame = malloc(frame_size);
	uint8_t *msg = malloc(frame_size);
	testlib_fill(msg, frame_size, 2);
	size_t flen = seal(c, frame, frame_size, msg, frame_size - 24);
	assert_int_equal(flen, frame_size);
	struct hush_iovec pt;
	assert_int_equal(hush_record_open(s, frame, flen, &pt), 0);
	assert_memory_equal(pt.base, msg, frame_size - 24);
	free(frame);
	free(msg);
	hush_record_free(c);
	hush_record_free(s);
}

static void rekey_boundary_frames_round_trip_under_new_key(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		if (ALL_RP[i] == HUSH_RP_ALTS_AES128_GCM) {
			continue;
		}
		uint8_t key[44];
		size_t klen;
		key_for(ALL_RP[i], key, &klen);
		struct hush_record *c = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		struct hush_record *s = make(ALL_RP[i], HUSH_SIDE_SERVER);
		hush__record_set_counters(c, 65534, 0);
		hush__record_set_counters(s, 0, 65534);
		for (uint64_t idx = 65534; idx < 65538; idx++) {
			uint8_t frame[64], expect[64], counter[12];
			size_t flen = seal(c, frame, sizeof(frame), "rekey", 5);
			/* Frame idx is the AEAD of counter idx: from 65536 on, under key #2. */
			assert_true(hush__record_counter(idx, HUSH_SIDE_CLIENT, 8, counter));
			assert_int_equal(hush__record_aead(ALL_RP[i], key, counter, NULL, 0,
							   (const uint8_t *)"rekey", 5, expect,
							   true),
					 0);
			assert_memory_equal(frame + 8, expect, flen - 8);
			struct hush_iovec pt;
			assert_int_equal(hush_record_open(s, frame, flen, &pt), 0);
			assert_memory_equal(pt.base, "rekey", 5);
		}
		hush_record_free(c);
		hush_record_free(s);
	}
}

/* A frame sealed at counter 65536 does not open with the first key's schedule: the
 * receiver that believes it is at frame 0 of epoch 0 with the same low bytes fails. */
static void rekey_frame_in_new_epoch_differs_from_old_epoch(void **state)
{
	(void)state;
	struct hush_record *a = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *b = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	hush__record_set_counters(b, 65536, 0);
	uint8_t f0[64], f1[64];
	size_t n0 = seal(a, f0, sizeof(f0), "same", 4);
	size_t n1 = seal(b, f1, sizeof(f1), "same", 4);
	assert_int_equal(n0, n1);
	assert_memory_not_equal(f0 + 8, f1 + 8, n0 - 8);
	hush_record_free(a);
	hush_record_free(b);
}

static void overflow_at_exact_boundary_fails_for_good(void **state)
{
	(void)state;
	static const struct {
		enum hush_record_protocol rp;
		uint64_t last;
	} cases[] = {
		{HUSH_RP_ALTS_AES128_GCM, ((uint64_t)1 << 40) - 1},
		{HUSH_RP_ALTS_AES128_GCM_REKEY, UINT64_MAX},
		{HUSH_RP_CHACHA20_POLY1305_REKEY, UINT64_MAX},
	};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(cases); i++) {
		struct hush_record *c = make(cases[i].rp, HUSH_SIDE_CLIENT);
		struct hush_record *s = make(cases[i].rp, HUSH_SIDE_SERVER);
		hush__record_set_counters(c, cases[i].last - 1, 0);
		hush__record_set_counters(s, 0, cases[i].last - 1);
		uint8_t frame[64];
		struct hush_iovec pt;
		for (int k = 0; k < 2; k++) {
			size_t flen = seal(c, frame, sizeof(frame), "x", 1);
			assert_int_equal(hush_record_open(s, frame, flen, &pt), 0);
		}
		size_t out = 5;
		memcpy(frame + 8, "x", 1);
		assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 1, &out), HUSH_ECOUNTER);
		assert_int_equal(out, 5);
		assert_int_equal(hush_record_error(c), HUSH_ECOUNTER);
		assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 0, &out), HUSH_ECOUNTER);
		/* The receiver's counter is exhausted too: any further frame fails. */
		struct hush_record *c2 = make(cases[i].rp, HUSH_SIDE_CLIENT);
		size_t flen = seal(c2, frame, sizeof(frame), "y", 1);
		assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_ECOUNTER);
		assert_int_equal(hush_record_error(s), HUSH_ECOUNTER);
		hush_record_free(c);
		hush_record_free(c2);
		hush_record_free(s);
	}
}

static void open_wrong_side_or_key_fails_auth(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *c2 = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t frame[64];
	size_t flen = seal(c, frame, sizeof(frame), "side", 4);
	struct hush_iovec pt = {NULL, 99};
	assert_int_equal(hush_record_open(c2, frame, flen, &pt), HUSH_EAUTH);
	assert_null(pt.base);
	assert_int_equal(pt.len, 99);

	uint8_t key[44] = {0xff};
	struct hush_record *s;
	assert_int_equal(hush_record_new(&s, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 44,
					 HUSH_SIDE_SERVER),
			 0);
	flen = seal(c, frame, sizeof(frame), "side", 4);
	assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_EAUTH);
	/* What was decrypted was wiped. */
	static const uint8_t zero[4];
	assert_memory_equal(frame + 8, zero, 4);
	hush_record_free(c);
	hush_record_free(c2);
	hush_record_free(s);
}

/* ---- Negative set on parse and open ---- */

static void parse_truncated_at_every_position_asks_for_more(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[128], copy[128];
	size_t flen = seal(c, frame, sizeof(frame), "truncate me please", 18);
	memcpy(copy, frame, flen);
	for (size_t k = 0; k < flen; k++) {
		size_t need = 0;
		assert_int_equal(hush_record_parse(s, frame, k, &need), HUSH_EAGAIN);
		assert_int_equal(need, k < 4 ? 4 : flen);
		struct hush_iovec pt = {NULL, 0};
		assert_int_equal(hush_record_open(s, frame, k, &pt), HUSH_EFRAME_PARTIAL);
		assert_null(pt.base);
		assert_memory_equal(frame, copy, flen); /* nothing decrypted in place */
	}
	/* No state changed: the whole frame still opens. */
	struct hush_iovec pt;
	assert_int_equal(hush_record_error(s), 0);
	assert_int_equal(hush_record_open(s, frame, flen, &pt), 0);
	assert_memory_equal(pt.base, "truncate me please", 18);
	hush_record_free(c);
	hush_record_free(s);
}

static void parse_every_length_from_0_to_24(void **state)
{
	(void)state;
	for (uint32_t v = 0; v <= 24; v++) {
		struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
		uint8_t hdr[8];
		hush__store_le32(hdr, v);
		hush__store_le32(hdr + 4, 6);
		size_t need = 0;
		int rc = hush_record_parse(s, hdr, sizeof(hdr), &need);
		if (v < 20) {
			assert_int_equal(rc, HUSH_EFRAME_SHORT);
			assert_int_equal(need, 0);
			assert_int_equal(hush_record_error(s), HUSH_EFRAME_SHORT);
		} else {
			assert_int_equal(rc, HUSH_EAGAIN);
			assert_int_equal(need, v + 4);
			assert_int_equal(hush_record_error(s), 0);
		}
		hush_record_free(s);
	}
}

static void parse_length_above_limit_is_refused_at_four_bytes(void **state)
{
	(void)state;
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t hdr[4];
	size_t need = 0;
	hush__store_le32(hdr, HUSH_RECORD_DEFAULT_RECV_LIMIT);
	assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EAGAIN);
	assert_int_equal(need, HUSH_RECORD_DEFAULT_RECV_LIMIT + 4);
	hush__store_le32(hdr, HUSH_RECORD_DEFAULT_RECV_LIMIT + 1);
	need = 0;
	assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EFRAME_LONG);
	assert_int_equal(need, 0);
	/* Sticky: even a good frame is refused now. */
	assert_int_equal(hush_record_parse(s, hdr, 0, &need), HUSH_EFRAME_LONG);
	hush_record_free(s);
	/* A lowered limit applies. */
	s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	assert_int_equal(hush_record_set_limits(s, 0, 1000), 0);
	hush__store_le32(hdr, 1001);
	assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EFRAME_LONG);
	hush_record_free(s);
}

static void parse_wrong_type_is_refused(void **state)
{
	(void)state;
	static const uint32_t types[] = {0, 5, 7, 0x106, 0x80000006u};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(types); i++) {
		struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
		uint8_t hdr[8];
		hush__store_le32(hdr, 100);
		hush__store_le32(hdr + 4, types[i]);
		size_t need = 0;
		assert_int_equal(hush_record_parse(s, hdr, 8, &need), HUSH_EFRAME_TYPE);
		assert_int_equal(hush_record_error(s), HUSH_EFRAME_TYPE);
		hush_record_free(s);
	}
}

static void open_flipped_bit_in_every_byte_fails(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t frame[128], good[128];
	size_t flen = seal(c, good, sizeof(good), "flip every bit here", 19);
	for (size_t i = 0; i < flen; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
			memcpy(frame, good, flen);
			frame[i] ^= (uint8_t)(1u << bit);
			struct hush_iovec pt = {NULL, 0};
			int rc = hush_record_open(s, frame, flen, &pt);
			if (i < 4) {
				/* LENGTH: too long, too short, or no longer this frame's size. */
				assert_true(rc == HUSH_EFRAME_LONG || rc == HUSH_EFRAME_SHORT ||
					    rc == HUSH_EFRAME_PARTIAL);
			} else if (i < 8) {
				assert_int_equal(rc, HUSH_EFRAME_TYPE);
			} else {
				assert_int_equal(rc, HUSH_EAUTH);
				assert_int_equal(hush_record_error(s), HUSH_EAUTH);
				static const uint8_t zero[19];
				assert_memory_equal(frame + 8, zero, 19);
			}
			assert_null(pt.base);
			hush_record_free(s);
		}
	}
	hush_record_free(c);
}

static void open_replay_reorder_and_drop_fail(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t f[3][64], tmp[64];
	size_t n[3];
	for (int i = 0; i < 3; i++) {
		n[i] = seal(c, f[i], sizeof(f[i]), "abc", 3);
	}
	struct hush_iovec pt;
	/* Replay. */
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	memcpy(tmp, f[0], n[0]);
	assert_int_equal(hush_record_open(s, tmp, n[0], &pt), 0);
	memcpy(tmp, f[0], n[0]);
	assert_int_equal(hush_record_open(s, tmp, n[0], &pt), HUSH_EAUTH);
	hush_record_free(s);
	/* Reorder. */
	s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	memcpy(tmp, f[1], n[1]);
	assert_int_equal(hush_record_open(s, tmp, n[1], &pt), HUSH_EAUTH);
	hush_record_free(s);
	/* Drop. */
	s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	memcpy(tmp, f[0], n[0]);
	assert_int_equal(hush_record_open(s, tmp, n[0], &pt), 0);
	memcpy(tmp, f[2], n[2]);
	assert_int_equal(hush_record_open(s, tmp, n[2], &pt), HUSH_EAUTH);
	/* Sticky: even the right next frame is refused now. */
	memcpy(tmp, f[1], n[1]);
	assert_int_equal(hush_record_open(s, tmp, n[1], &pt), HUSH_EAUTH);
	hush_record_free(s);
	hush_record_free(c);
}

/* ---- Construction, limits, lending ---- */

static void new_rejects_bad_arguments_and_leaves_out_untouched(void **state)
{
	(void)state;
	uint8_t key[44] = {0};
	struct hush_record *r = (struct hush_record *)(uintptr_t)0x1;
	assert_int_equal(hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 43,
					 HUSH_SIDE_CLIENT),
			 HUSH_EKEYLEN);
	assert_int_equal(hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM, key, 44, HUSH_SIDE_CLIENT),
			 HUSH_EKEYLEN);
	assert_int_equal(hush_record_new(&r, (enum hush_record_protocol)9, key, 44,
					 HUSH_SIDE_CLIENT),
			 HUSH_EPROTO_UNKNOWN);
	assert_int_equal(hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM, key, 16,
					 (enum hush_side)2),
			 HUSH_EINVAL);
	assert_ptr_equal(r, (void *)(uintptr_t)0x1);
	hush_record_free(NULL);
}

static void protocol_names_round_trip(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		enum hush_record_protocol rp;
		assert_int_equal(hush_record_protocol_from_name(hush_record_protocol_name(ALL_RP[i]),
								&rp),
				 0);
		assert_int_equal(rp, ALL_RP[i]);
	}
	enum hush_record_protocol rp = HUSH_RP_ALTS_AES128_GCM;
	assert_int_equal(hush_record_protocol_from_name("ALTSRP_GCM_AES256", &rp),
			 HUSH_EPROTO_UNKNOWN);
	assert_int_equal(rp, HUSH_RP_ALTS_AES128_GCM);
	assert_string_equal(hush_record_protocol_name(HUSH_RP_ALTS_AES128_GCM_REKEY),
			    "ALTSRP_GCM_AES128_REKEY");
	assert_null(hush_record_protocol_name((enum hush_record_protocol)0));
	assert_int_equal(hush_record_key_size(HUSH_RP_ALTS_AES128_GCM), 16);
}

static void set_limits_rejects_out_of_range_and_changes_nothing(void **state)
{
	(void)state;
	struct hush_record *r = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	assert_int_equal(hush_record_set_limits(r, 63, 0), HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(r, HUSH_RECORD_MAX_RECV_LIMIT + 5, 0), HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(r, 0, 19), HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(r, 4096, HUSH_RECORD_MAX_RECV_LIMIT + 1),
			 HUSH_EINVAL);
	assert_int_equal(hush_record_max_payload(r), 16384 - 24);
	assert_int_equal(hush_record_max_frame(r), 1048576 + 4);
	assert_int_equal(hush_record_set_limits(r, 4096, 0), 0);
	assert_int_equal(hush_record_max_payload(r), 4096 - 24);
	hush_record_free(r);
}

static void lent_ciphers_move_between_protocols(void **state)
{
	(void)state;
	uint8_t key[44];
	size_t klen;
	struct hush_record *a, *b;
	key_for(HUSH_RP_ALTS_AES128_GCM_REKEY, key, &klen);
	assert_int_equal(hush__record_new_bare(&a, HUSH_RP_ALTS_AES128_GCM_REKEY, key, klen,
					       HUSH_SIDE_CLIENT),
			 0);
	key_for(HUSH_RP_CHACHA20_POLY1305_REKEY, key, &klen);
	assert_int_equal(hush__record_new_bare(&b, HUSH_RP_CHACHA20_POLY1305_REKEY, key, klen,
					       HUSH_SIDE_CLIENT),
			 0);
	struct hush_record *sa = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	struct hush_record *sb = make(HUSH_RP_CHACHA20_POLY1305_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[64];
	size_t out;
	assert_int_equal(hush_record_seal(a, frame, sizeof(frame), 0, &out), HUSH_ESTATE);
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new(), *y = EVP_CIPHER_CTX_new();
	struct hush_iovec pt;
	for (int round = 0; round < 4; round++) {
		struct hush_record *from = round % 2 ? b : a;
		struct hush_record *to = round % 2 ? sb : sa;
		hush__record_give_ciphers(from, x, y);
		size_t flen = seal(from, frame, sizeof(frame), "lend", 4);
		hush__record_take_ciphers(from, &x, &y);
		assert_int_equal(hush_record_open(to, frame, flen, &pt), 0);
		assert_memory_equal(pt.base, "lend", 4);
	}
	EVP_CIPHER_CTX_free(x);
	EVP_CIPHER_CTX_free(y);
	hush_record_free(a);
	hush_record_free(b);
	hush_record_free(sa);
	hush_record_free(sb);
}

static void new_fails_cleanly_at_every_allocation(void **state)
{
	(void)state;
	testlib_alloc_install();
	for (uint64_t k = 1; k < 4; k++) {
		testlib_alloc_fail_at(k);
		uint8_t key[44] = {0};
		struct hush_record *r = NULL;
		int rc = hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 44,
					 HUSH_SIDE_CLIENT);
		if (rc == 0) {
			hush_record_free(r);
			continue;
		}
		assert_int_equal(rc, HUSH_ENOMEM);
		assert_null(r);
	}
	struct testlib_alloc_stats st;
	testlib_alloc_get(&st);
	assert_int_equal(st.live, 0);
	testlib_alloc_uninstall();
}

static void records_make_no_hush_allocation(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	testlib_alloc_install();
	uint8_t frame[2048], msg[1000] = {0};
	for (int i = 0; i < 1000; i++) {
		size_t flen = seal(c, frame, sizeof(frame), msg, sizeof(msg));
		struct hush_iovec pt;
		assert_int_equal(hush_record_open(s, frame, flen, &pt), 0);
	}
	struct testlib_alloc_stats st;
	testlib_alloc_get(&st);
	assert_int_equal(st.calls, 0);
	testlib_alloc_uninstall();
	hush_record_free(c);
	hush_record_free(s);
}

/*
 * Cipher contexts lent to one record context after another (as the transport does per
 * readiness event) are re-keyed without any allocation, OpenSSL's included.
 */
static void lent_ciphers_rekey_without_allocating(void **state)
{
	(void)state;
	uint8_t key[44];
	size_t klen;
	key_for(HUSH_RP_ALTS_AES128_GCM_REKEY, key, &klen);
	struct hush_record *a, *b;
	assert_int_equal(hush__record_new_bare(&a, HUSH_RP_ALTS_AES128_GCM_REKEY, key, klen,
					       HUSH_SIDE_CLIENT),
			 0);
	assert_int_equal(hush__record_new_bare(&b, HUSH_RP_ALTS_AES128_GCM_REKEY, key, klen,
					       HUSH_SIDE_SERVER),
			 0);
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new(), *y = EVP_CIPHER_CTX_new();
	uint8_t frame[64];
	uint64_t before = 0;
	for (int round = 0; round < 100; round++) {
		if (round == 2) {
			before = atomic_load(&ossl_allocs);
		}
		struct hush_record *r = round % 2 ? b : a;
		hush__record_give_ciphers(r, x, y);
		seal(r, frame, sizeof(frame), "rekey", 5);
		hush__record_take_ciphers(r, &x, &y);
	}
	assert_int_equal(atomic_load(&ossl_allocs), before);
	EVP_CIPHER_CTX_free(x);
	EVP_CIPHER_CTX_free(y);
	hush_record_free(a);
	hush_record_free(b);
}

/* Key-holding memory is wiped before it goes back to the allocator. */
static void free_wipes_keys_and_counters(void **state)
{
	(void)state;
	testlib_alloc_install();
	testlib_alloc_watch_size(hush__record_size());
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *c = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		uint8_t frame[64];
		seal(c, frame, sizeof(frame), "derive a key", 12);
		hush_record_free(c);
	}
	uint64_t freed, zeroed;
	testlib_alloc_watched(&freed, &zeroed);
	assert_int_equal(freed, HUSH_ARRAY_SIZE(ALL_RP));
	assert_int_equal(zeroed, freed);
	testlib_alloc_watch_size(0);
	testlib_alloc_uninstall();
}

int main(void)
{
	if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free)) {
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(vectors_rekey_aead_match_grpc),
		cmocka_unit_test(vectors_aes128_crypter_match_grpc_go),
		cmocka_unit_test(vectors_plain_gcm_match_grpc),
		cmocka_unit_test(vectors_counter_increments_match_grpc_go),
		cmocka_unit_test(seal_first_frame_matches_aead_of_counter_zero),
		cmocka_unit_test(seal_worked_example_matches_protocol_doc),
		cmocka_unit_test(roundtrip_each_protocol_both_directions),
		cmocka_unit_test(roundtrip_empty_and_max_payload_records),
		cmocka_unit_test(roundtrip_one_mib_records_with_raised_limits),
		cmocka_unit_test(rekey_boundary_frames_round_trip_under_new_key),
		cmocka_unit_test(rekey_frame_in_new_epoch_differs_from_old_epoch),
		cmocka_unit_test(overflow_at_exact_boundary_fails_for_good),
		cmocka_unit_test(open_wrong_side_or_key_fails_auth),
		cmocka_unit_test(parse_truncated_at_every_position_asks_for_more),
		cmocka_unit_test(parse_every_length_from_0_to_24),
		cmocka_unit_test(parse_length_above_limit_is_refused_at_four_bytes),
		cmocka_unit_test(parse_wrong_type_is_refused),
		cmocka_unit_test(open_flipped_bit_in_every_byte_fails),
		cmocka_unit_test(open_replay_reorder_and_drop_fail),
		cmocka_unit_test(new_rejects_bad_arguments_and_leaves_out_untouched),
		cmocka_unit_test(protocol_names_round_trip),
		cmocka_unit_test(set_limits_rejects_out_of_range_and_changes_nothing),
		cmocka_unit_test(lent_ciphers_move_between_protocols),
		cmocka_unit_test(new_fails_cleanly_at_every_allocation),
		cmocka_unit_test(records_make_no_hush_allocation),
		cmocka_unit_test(free_wipes_keys_and_counters),
		cmocka_unit_test(lent_ciphers_rekey_without_allocating),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
