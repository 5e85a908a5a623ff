/*
 * Tests for src/record: gRPC's public known-answer vectors and the worked examples of
 * docs/PROTOCOL.md (from test/data/alts-record-vectors.txt), round trips, the rekey and
 * overflow boundaries, the negative set on parse and open, cipher lending, and
 * allocation failures injected into hush's allocator and into OpenSSL's.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/common-internal.h"
#include "record/record-internal.h"
#include "testlib.h"

#define VECTORS HUSH_SRCDIR "/test/data/alts-record-vectors.txt"
#define LAST40	(((uint64_t)1 << 40) - 1)

static const enum hush_record_protocol ALL_RP[] = {
    HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_RP_ALTS_AES128_GCM, HUSH_RP_CHACHA20_POLY1305_REKEY};
static const enum hush_record_protocol REKEY_RP[] = {HUSH_RP_ALTS_AES128_GCM_REKEY,
						     HUSH_RP_CHACHA20_POLY1305_REKEY};

/* ---- OpenSSL's allocations, counted and failed on demand ---- */

static _Atomic uint64_t ossl_calls, ossl_fail_at;

static bool ossl_fails_now(void)
{
	uint64_t call = atomic_fetch_add(&ossl_calls, 1) + 1;
	uint64_t at = atomic_load(&ossl_fail_at);
	return at != 0 && call == at;
}

static void *ossl_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return ossl_fails_now() ? NULL : malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	if (n == 0) {
		free(p);
		return NULL;
	}
	return ossl_fails_now() ? NULL : realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	free(p);
}

/* Makes OpenSSL's k-th allocation from now fail (1 = the next one); 0 cancels. */
static void ossl_fail_at_k(uint64_t k)
{
	atomic_store(&ossl_fail_at, k == 0 ? 0 : atomic_load(&ossl_calls) + k);
}

/* ---- Helpers ---- */

static void key_for(enum hush_record_protocol rp, uint8_t key[44], size_t *len)
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

static struct hush_record *make_with_key(enum hush_record_protocol rp, const uint8_t *key,
					 enum hush_side side)
{
	struct hush_record *r = NULL;
	assert_int_equal(hush_record_new(&r, rp, key, hush_record_key_size(rp), side), 0);
	return r;
}

/* Seals len bytes of payload into frame (room for cap bytes); returns the frame size. */
static size_t seal(struct hush_record *r, uint8_t *frame, size_t cap, const void *payload,
		   size_t len)
{
	size_t flen = 0;
	memmove(frame + HUSH_RECORD_HEADER_SIZE, payload, len);
	assert_int_equal(hush_record_seal(r, frame, cap, len, &flen), 0);
	assert_int_equal(flen, len + HUSH_RECORD_OVERHEAD);
	return flen;
}

/* Opens frame and checks that it carried len bytes of payload. */
static void open_expect(struct hush_record *r, uint8_t *frame, size_t flen, const void *payload,
			size_t len)
{
	struct hush_iovec pt = {NULL, 0};
	assert_int_equal(hush_record_open(r, frame, flen, &pt), 0);
	assert_ptr_equal(pt.base, frame + HUSH_RECORD_HEADER_SIZE);
	assert_int_equal(pt.len, len);
	if (len > 0) {
		assert_memory_equal(pt.base, payload, len);
	}
}

static bool all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	for (size_t i = 0; i < n; i++) {
		acc |= p[i];
	}
	return acc == 0;
}

static const struct hush_iovec PT_SENTINEL = {(void *)(uintptr_t)0x5a5a, 4242};

static void assert_pt_untouched(const struct hush_iovec *pt)
{
	assert_ptr_equal(pt->base, PT_SENTINEL.base);
	assert_int_equal(pt->len, PT_SENTINEL.len);
}

/* ---- Vector file ---- */

/* Copies the text of field name= from line into out; returns false if absent. */
static bool field_text(const char *line, const char *name, char *out, size_t cap)
{
	char pat[32];
	snprintf(pat, sizeof(pat), " %s=", name);
	const char *p = strstr(line, pat);
	if (p == NULL) {
		return false;
	}
	p += strlen(pat);
	size_t n = strcspn(p, " \r\n");
	assert_true(n < cap);
	memcpy(out, p, n);
	out[n] = '\0';
	return true;
}

/* Decodes hex field name= into out; "-" is empty. Returns the byte count. */
static size_t field(const char *line, const char *name, uint8_t *out, size_t cap)
{
	char hex[1024];
	assert_true(field_text(line, name, hex, sizeof(hex)));
	if (strcmp(hex, "-") == 0) {
		return 0;
	}
	long got = testlib_unhex(hex, out, cap);
	assert_true(got >= 0);
	return (size_t)got;
}

static int for_each_vector(const char *kind, void (*fn)(const char *line))
{
	FILE *f = fopen(VECTORS, "r");
	assert_non_null(f);
	char line[2048];
	size_t k = strlen(kind);
	int n = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, kind, k) == 0 && line[k] == ' ') {
			fn(line);
			n++;
		}
	}
	fclose(f);
	return n;
}

/*
 * The frame index and sender side whose counter is c with an overflow_len-byte counter,
 * if one exists: bytes overflow_len..10 zero and byte 11 either 0x00 or 0x80.
 */
static bool index_of_counter(const uint8_t c[12], unsigned overflow_len, uint64_t *index,
			     enum hush_side *side)
{
	for (unsigned i = overflow_len; i < 11; i++) {
		if (c[i] != 0) {
			return false;
		}
	}
	if (c[11] != 0 && c[11] != 0x80) {
		return false;
	}
	*index = 0;
	for (unsigned i = 0; i < overflow_len; i++) {
		*index |= (uint64_t)c[i] << (8 * i);
	}
	*side = c[11] == 0x80 ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	return true;
}

static int via_record_count;

/*
 * Seals pt as frame index of side with a record context and compares the frame's
 * ciphertext and tag with ct; the peer context opens it again.
 */
static void check_via_record(enum hush_record_protocol rp, const uint8_t *key, uint64_t index,
			     enum hush_side side, const uint8_t *pt, size_t pt_len,
			     const uint8_t *ct)
{
	struct hush_record *s = make_with_key(rp, key, side);
	struct hush_record *o =
	    make_with_key(rp, key, side == HUSH_SIDE_CLIENT ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT);
	hush__record_set_counters(s, index, 0);
	hush__record_set_counters(o, 0, index);
	uint8_t frame[256];
	size_t flen = seal(s, frame, sizeof(frame), pt, pt_len);
	assert_int_equal(hush__load_le32(frame), pt_len + 20);
	assert_int_equal(hush__load_le32(frame + 4), HUSH_RECORD_TYPE);
	assert_memory_equal(frame + 8, ct, pt_len + 16);
	open_expect(o, frame, flen, pt, pt_len);
	hush_record_free(s);
	hush_record_free(o);
	via_record_count++;
}

/* ---- Vectors: rekey AEAD (aeadrekey_test.go = aes_gcm_test.cc) ---- */

struct aead_vec {
	uint8_t key[44], nonce[12], aad[256], pt[256], ct[272];
	size_t key_len, aad_len, pt_len, ct_len;
};

static void read_aead_vec(const char *line, struct aead_vec *v)
{
	v->key_len = field(line, "key", v->key, sizeof(v->key));
	assert_int_equal(field(line, "nonce", v->nonce, sizeof(v->nonce)), 12);
	v->aad_len = field(line, "aad", v->aad, sizeof(v->aad));
	v->pt_len = field(line, "pt", v->pt, sizeof(v->pt));
	v->ct_len = field(line, "ct", v->ct, sizeof(v->ct));
	assert_int_equal(v->ct_len, v->pt_len + 16);
}

static void check_rekey_seal(const char *line)
{
	struct aead_vec v;
	uint8_t out[272];
	read_aead_vec(line, &v);
	assert_int_equal(v.key_len, 44);
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM_REKEY, v.key, v.nonce, v.aad,
					   v.aad_len, v.pt, v.pt_len, out, true),
			 0);
	assert_memory_equal(out, v.ct, v.ct_len);
}

static void vectors_rekey_aead_seal_matches_grpc(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("rekey", check_rekey_seal), 24);
}

static void check_rekey_open(const char *line)
{
	struct aead_vec v;
	uint8_t out[272];
	read_aead_vec(line, &v);
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM_REKEY, v.key, v.nonce, v.aad,
					   v.aad_len, v.ct, v.ct_len, out, false),
			 0);
	if (v.pt_len > 0) {
		assert_memory_equal(out, v.pt, v.pt_len);
	}
}

static void vectors_rekey_aead_open_recovers_plaintext(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("rekey", check_rekey_open), 24);
}

static void check_rekey_tampered(const char *line)
{
	struct aead_vec v;
	uint8_t out[272];
	read_aead_vec(line, &v);
	v.ct[v.ct_len - 1] ^= 0x01;
	memset(out, 0xee, sizeof(out));
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM_REKEY, v.key, v.nonce, v.aad,
					   v.aad_len, v.ct, v.ct_len, out, false),
			 HUSH_EAUTH);
	assert_true(all_zero(out, v.pt_len));
}

static void vectors_rekey_aead_tampered_tag_fails_eauth_and_wipes(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("rekey", check_rekey_tampered), 24);
}

static void check_rekey_via_record(const char *line)
{
	struct aead_vec v;
	uint64_t index = 0;
	enum hush_side side = HUSH_SIDE_CLIENT;
	read_aead_vec(line, &v);
	if (v.aad_len == 0 && index_of_counter(v.nonce, 8, &index, &side)) {
		check_via_record(HUSH_RP_ALTS_AES128_GCM_REKEY, v.key, index, side, v.pt, v.pt_len,
				 v.ct);
	}
}

/* Vectors 1 and 2 have no AAD and counter 0, so a record context must produce them. */
static void vectors_rekey_frame_counters_via_record_seal_match_grpc(void **state)
{
	(void)state;
	via_record_count = 0;
	assert_int_equal(for_each_vector("rekey", check_rekey_via_record), 24);
	assert_int_equal(via_record_count, 2);
}

/* ---- Vectors: ALTSRP_GCM_AES128 crypter (aes128gcm_test.go) ---- */

static void check_aes128(const char *line)
{
	uint8_t key[16], counter[12], pt[64], ct[64], tag[16], out[96], back[96];
	assert_int_equal(field(line, "key", key, sizeof(key)), 16);
	assert_int_equal(field(line, "counter", counter, sizeof(counter)), 12);
	size_t pt_len = field(line, "pt", pt, sizeof(pt));
	assert_int_equal(field(line, "ct", ct, sizeof(ct)), pt_len);
	assert_int_equal(field(line, "tag", tag, sizeof(tag)), 16);
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM, key, counter, NULL, 0, pt,
					   pt_len, out, true),
			 0);
	if (pt_len > 0) {
		assert_memory_equal(out, ct, pt_len);
	}
	assert_memory_equal(out + pt_len, tag, 16);
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM, key, counter, NULL, 0, out,
					   pt_len + 16, back, false),
			 0);
	if (pt_len > 0) {
		assert_memory_equal(back, pt, pt_len);
	}
}

static void vectors_aes128_crypter_matches_grpc_go(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("aes128", check_aes128), 4);
}

/* ---- Vectors: plain AES-128-GCM (aes_gcm_test.cc) ---- */

static void check_gcm(const char *line)
{
	struct aead_vec v;
	uint8_t out[272];
	read_aead_vec(line, &v);
	assert_int_equal(v.key_len, 16);
	assert_int_equal(hush__record_aead(HUSH_RP_ALTS_AES128_GCM, v.key, v.nonce, v.aad,
					   v.aad_len, v.pt, v.pt_len, out, true),
			 0);
	assert_memory_equal(out, v.ct, v.ct_len);
}

static void vectors_plain_gcm_matches_grpc(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("gcm", check_gcm), 4);
}

static void check_gcm_via_record(const char *line)
{
	struct aead_vec v;
	uint64_t index = 0;
	enum hush_side side = HUSH_SIDE_CLIENT;
	read_aead_vec(line, &v);
	if (v.aad_len == 0 && index_of_counter(v.nonce, 5, &index, &side)) {
		check_via_record(HUSH_RP_ALTS_AES128_GCM, v.key, index, side, v.pt, v.pt_len, v.ct);
	}
}

/* The two GCM vectors with a zero nonce and no AAD are frame 0 of a client's
 * ALTSRP_GCM_AES128 context; the other two need a nonce no frame index gives. */
static void vectors_plain_gcm_zero_nonce_via_record_seal_matches_grpc(void **state)
{
	(void)state;
	via_record_count = 0;
	assert_int_equal(for_each_vector("gcm", check_gcm_via_record), 4);
	assert_int_equal(via_record_count, 2);
}

/* ---- Vectors: counters (counter_test.go) ---- */

static void check_counter(const char *line)
{
	uint8_t before[12], after[12], got[12];
	uint64_t index = 0;
	enum hush_side side = HUSH_SIDE_CLIENT;
	assert_int_equal(field(line, "before", before, sizeof(before)), 12);
	assert_int_equal(field(line, "after", after, sizeof(after)), 12);
	assert_true(index_of_counter(before, 5, &index, &side));
	assert_true(hush__record_counter(index, side, 5, got));
	assert_memory_equal(got, before, 12);
	assert_true(hush__record_counter(index + 1, side, 5, got));
	assert_memory_equal(got, after, 12);
}

static void vectors_counter_increment_matches_grpc_go(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("counter", check_counter), 6);
}

static void check_rollover(const char *line)
{
	char len_text[8];
	uint8_t start[12], got[12], untouched[12];
	uint64_t index = 0;
	enum hush_side side = HUSH_SIDE_CLIENT;
	assert_true(field_text(line, "len", len_text, sizeof(len_text)));
	unsigned len = (unsigned)atoi(len_text);
	assert_int_equal(field(line, "start", start, sizeof(start)), 12);
	assert_true(index_of_counter(start, len, &index, &side));
	assert_true(hush__record_counter(index + 1, side, len, got));
	for (unsigned i = 0; i < len; i++) {
		assert_int_equal(got[i], 0xff);
	}
	assert_int_equal(got[11], side == HUSH_SIDE_SERVER ? 0x80 : 0);
	memcpy(untouched, got, sizeof(got));
	if (len < 8) {
		assert_false(hush__record_counter(index + 2, side, len, got));
		assert_memory_equal(got, untouched, 12);
	} else {
		/* 2^64 does not fit the index: the record layer's exhaustion flag stands for
		 * it (seal_past_last_counter_fails_ecounter_for_good). */
		assert_int_equal(index + 2, 0);
	}
}

static void vectors_counter_rollover_after_last_value_is_invalid(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("rollover", check_rollover), 4);
}

static void counter_side_bit_survives_every_index(void **state)
{
	(void)state;
	static const uint64_t idx[] = {0, 1, 255, 256, 65535, 65536, LAST40, UINT64_MAX};
	uint8_t got[12];
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(idx); i++) {
		assert_true(hush__record_counter(idx[i], HUSH_SIDE_SERVER, 8, got));
		assert_int_equal(got[11], 0x80);
		assert_true(all_zero(got + 8, 3));
		assert_true(hush__record_counter(idx[i], HUSH_SIDE_CLIENT, 8, got));
		assert_int_equal(got[11], 0);
	}
}

/* ---- Vectors: worked examples of docs/PROTOCOL.md ---- */

struct frame_vec {
	enum hush_record_protocol rp;
	enum hush_side side;
	uint64_t index;
	uint8_t key[44], pt[64], frame[96];
	size_t pt_len, frame_len;
};

static void read_frame_vec(const char *line, struct frame_vec *v)
{
	char text[64];
	assert_true(field_text(line, "rp", text, sizeof(text)));
	assert_int_equal(hush_record_protocol_from_name(text, &v->rp), 0);
	assert_true(field_text(line, "side", text, sizeof(text)));
	assert_true(strcmp(text, "client") == 0 || strcmp(text, "server") == 0);
	v->side = strcmp(text, "server") == 0 ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	assert_true(field_text(line, "index", text, sizeof(text)));
	v->index = strtoull(text, NULL, 10);
	assert_int_equal(field(line, "key", v->key, sizeof(v->key)), hush_record_key_size(v->rp));
	v->pt_len = field(line, "pt", v->pt, sizeof(v->pt));
	v->frame_len = field(line, "frame", v->frame, sizeof(v->frame));
}

static void check_frame_seal(const char *line)
{
	struct frame_vec v;
	uint8_t frame[96];
	read_frame_vec(line, &v);
	struct hush_record *r = make_with_key(v.rp, v.key, v.side);
	hush__record_set_counters(r, v.index, 0);
	size_t flen = seal(r, frame, sizeof(frame), v.pt, v.pt_len);
	assert_int_equal(flen, v.frame_len);
	assert_memory_equal(frame, v.frame, flen);
	hush_record_free(r);
}

static void seal_protocol_doc_examples_reproduce_frames(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("frame", check_frame_seal), 3);
}

static void check_frame_open(const char *line)
{
	struct frame_vec v;
	read_frame_vec(line, &v);
	enum hush_side peer = v.side == HUSH_SIDE_CLIENT ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	struct hush_record *r = make_with_key(v.rp, v.key, peer);
	hush__record_set_counters(r, 0, v.index);
	open_expect(r, v.frame, v.frame_len, v.pt, v.pt_len);
	hush_record_free(r);
}

static void open_protocol_doc_examples_recover_plaintext(void **state)
{
	(void)state;
	assert_int_equal(for_each_vector("frame", check_frame_open), 3);
}

/* ---- Seal ---- */

/* Frames 0 and 1 of each side are the AEAD of counters 0 and 1 with the sender's side
 * bit, framed as section 1 of docs/PROTOCOL.md says. */
static void seal_first_frames_each_protocol_equal_aead_of_counters(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		for (int side = 0; side < 2; side++) {
			uint8_t key[44], frame[64], expect[64], counter[12];
			size_t klen;
			key_for(ALL_RP[i], key, &klen);
			struct hush_record *r = make(ALL_RP[i], (enum hush_side)side);
			for (uint64_t idx = 0; idx < 2; idx++) {
				size_t flen = seal(r, frame, sizeof(frame), "hello, hush", 11);
				assert_true(
				    hush__record_counter(idx, (enum hush_side)side, 5, counter));
				assert_int_equal(hush__record_aead(ALL_RP[i], key, counter, NULL, 0,
								   (const uint8_t *)"hello, hush",
								   11, expect, true),
						 0);
				assert_int_equal(hush__load_le32(frame), 31);
				assert_int_equal(hush__load_le32(frame + 4), 6);
				assert_memory_equal(frame + 8, expect, flen - 8);
			}
			hush_record_free(r);
		}
	}
}

static void seal_payload_above_max_fails_emsgsize_not_sticky(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	static uint8_t frame[20000], copy[20000];
	testlib_fill(frame, sizeof(frame), 3);
	memcpy(copy, frame, sizeof(frame));
	size_t out = 77;
	assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 16361, &out), HUSH_EMSGSIZE);
	assert_int_equal(out, 77);
	assert_memory_equal(frame, copy, sizeof(frame));
	assert_int_equal(hush_record_error(c), 0);
	/* The counter did not move: the next frame is frame 0 and opens. */
	size_t flen = seal(c, frame, sizeof(frame), "ok", 2);
	open_expect(s, frame, flen, "ok", 2);
	hush_record_free(c);
	hush_record_free(s);
}

static void seal_frame_cap_too_small_fails_enospace_not_sticky(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[200], copy[200];
	testlib_fill(frame, sizeof(frame), 4);
	memcpy(copy, frame, sizeof(frame));
	size_t out = 77;
	assert_int_equal(hush_record_seal(c, frame, 100 + 23, 100, &out), HUSH_ENOSPACE);
	assert_int_equal(hush_record_seal(c, frame, 0, 0, &out), HUSH_ENOSPACE);
	assert_int_equal(out, 77);
	assert_memory_equal(frame, copy, sizeof(frame));
	assert_int_equal(hush_record_error(c), 0);
	size_t flen = 0;
	assert_int_equal(hush_record_seal(c, frame, 100 + 24, 100, &flen), 0);
	open_expect(s, frame, flen, copy + 8, 100);
	hush_record_free(c);
	hush_record_free(s);
}

static void seal_null_arguments_fail_einval_not_sticky(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t frame[64];
	size_t out = 77;
	assert_int_equal(hush_record_seal(NULL, frame, sizeof(frame), 1, &out), HUSH_EINVAL);
	assert_int_equal(hush_record_seal(c, NULL, sizeof(frame), 1, &out), HUSH_EINVAL);
	assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 1, NULL), HUSH_EINVAL);
	assert_int_equal(out, 77);
	assert_int_equal(hush_record_error(c), 0);
	hush_record_free(c);
}

static void seal_after_open_failure_returns_stored_error(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *c2 = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t frame[64];
	struct hush_iovec pt = PT_SENTINEL;
	size_t flen = seal(c, frame, sizeof(frame), "x", 1);
	assert_int_equal(hush_record_open(c2, frame, flen, &pt), HUSH_EAUTH);
	size_t out = 77;
	assert_int_equal(hush_record_seal(c2, frame, sizeof(frame), 1, &out), HUSH_EAUTH);
	/* The stored error comes before argument checks. */
	assert_int_equal(hush_record_seal(c2, frame, 0, 1, &out), HUSH_EAUTH);
	assert_int_equal(out, 77);
	hush_record_free(c);
	hush_record_free(c2);
}

/* ---- Round trips ---- */

static void roundtrip(enum hush_side from_side)
{
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *from = make(ALL_RP[i], from_side);
		struct hush_record *to = make(
		    ALL_RP[i], from_side == HUSH_SIDE_CLIENT ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT);
		for (size_t len = 0; len <= 1000; len += 37) {
			uint8_t msg[1000], frame[1100];
			testlib_fill(msg, sizeof(msg), len);
			size_t flen = seal(from, frame, sizeof(frame), msg, len);
			size_t need = 0;
			assert_int_equal(hush_record_parse(to, frame, flen, &need), 0);
			assert_int_equal(need, flen);
			open_expect(to, frame, flen, msg, len);
		}
		hush_record_free(from);
		hush_record_free(to);
	}
}

static void roundtrip_client_to_server_each_protocol_recovers_plaintext(void **state)
{
	(void)state;
	roundtrip(HUSH_SIDE_CLIENT);
}

static void roundtrip_server_to_client_each_protocol_recovers_plaintext(void **state)
{
	(void)state;
	roundtrip(HUSH_SIDE_SERVER);
}

static void roundtrip_interleaved_directions_keep_separate_counters(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[64];
	/* Three frames one way, one the other, and so on: each direction counts alone. */
	for (int round = 0; round < 5; round++) {
		for (int k = 0; k < 3; k++) {
			size_t flen = seal(c, frame, sizeof(frame), "ping", 4);
			open_expect(s, frame, flen, "ping", 4);
		}
		size_t flen = seal(s, frame, sizeof(frame), "pong", 4);
		open_expect(c, frame, flen, "pong", 4);
	}
	hush_record_free(c);
	hush_record_free(s);
}

static void roundtrip_empty_record_each_protocol_has_length_20(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *c = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		struct hush_record *s = make(ALL_RP[i], HUSH_SIDE_SERVER);
		uint8_t frame[24];
		size_t flen = seal(c, frame, sizeof(frame), "", 0);
		assert_int_equal(flen, 24);
		assert_int_equal(hush__load_le32(frame), 20);
		open_expect(s, frame, flen, "", 0);
		hush_record_free(c);
		hush_record_free(s);
	}
}

static void roundtrip_max_payload_each_protocol_fills_send_frame(void **state)
{
	(void)state;
	static uint8_t frame[16384], msg[16360];
	testlib_fill(msg, sizeof(msg), 1);
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *c = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		struct hush_record *s = make(ALL_RP[i], HUSH_SIDE_SERVER);
		assert_int_equal(hush_record_max_payload(c), 16360);
		size_t flen = seal(c, frame, sizeof(frame), msg, sizeof(msg));
		assert_int_equal(flen, 16384);
		assert_int_equal(hush__load_le32(frame), 16380);
		open_expect(s, frame, flen, msg, sizeof(msg));
		hush_record_free(c);
		hush_record_free(s);
	}
}

static void roundtrip_one_mib_record_with_raised_limits_recovers_plaintext(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	size_t frame_size = HUSH_RECORD_DEFAULT_RECV_LIMIT + 4;
	assert_int_equal(hush_record_set_limits(c, frame_size, 0), 0);
	assert_int_equal(hush_record_max_frame(s), frame_size);
	uint8_t *frame = malloc(frame_size);
	uint8_t *msg = malloc(frame_size);
	assert_non_null(frame);
	assert_non_null(msg);
	testlib_fill(msg, frame_size, 2);
	size_t flen = seal(c, frame, frame_size, msg, frame_size - 24);
	assert_int_equal(flen, frame_size);
	assert_int_equal(hush__load_le32(frame), HUSH_RECORD_DEFAULT_RECV_LIMIT);
	open_expect(s, frame, flen, msg, frame_size - 24);
	free(frame);
	free(msg);
	hush_record_free(c);
	hush_record_free(s);
}

/* ---- Rekey ---- */

static void rekey_frames_65534_to_65537_round_trip_each_direction(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(REKEY_RP); i++) {
		struct hush_record *c = make(REKEY_RP[i], HUSH_SIDE_CLIENT);
		struct hush_record *s = make(REKEY_RP[i], HUSH_SIDE_SERVER);
		hush__record_set_counters(c, 65534, 65534);
		hush__record_set_counters(s, 65534, 65534);
		for (int k = 0; k < 4; k++) {
			uint8_t frame[64];
			size_t flen = seal(c, frame, sizeof(frame), "up", 2);
			open_expect(s, frame, flen, "up", 2);
			flen = seal(s, frame, sizeof(frame), "down", 4);
			open_expect(c, frame, flen, "down", 4);
		}
		hush_record_free(c);
		hush_record_free(s);
	}
}

/* Section 3.2 of docs/PROTOCOL.md, computed here with OpenSSL directly rather than
 * through src/record: the AEAD key of frame index, and the frame's ciphertext||tag. */
static void reference_seal(enum hush_record_protocol rp, const uint8_t key[44], uint64_t epoch,
			   uint64_t index, enum hush_side side, const uint8_t *pt, size_t len,
			   uint8_t *out)
{
	bool chacha = rp == HUSH_RP_CHACHA20_POLY1305_REKEY;
	uint8_t msg[7], mac[32], nonce[12];
	unsigned int mac_len = 0;
	for (int i = 0; i < 6; i++) {
		msg[i] = (uint8_t)(epoch >> (8 * i));
	}
	msg[6] = 0x01;
	assert_non_null(HMAC(EVP_sha256(), key, 32, msg, sizeof(msg), mac, &mac_len));
	assert_int_equal(mac_len, 32);
	for (int i = 0; i < 8; i++) {
		nonce[i] = (uint8_t)(index >> (8 * i));
	}
	nonce[8] = nonce[9] = nonce[10] = 0;
	nonce[11] = side == HUSH_SIDE_SERVER ? 0x80 : 0;
	for (int i = 0; i < 12; i++) {
		nonce[i] ^= key[32 + i];
	}
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n = 0;
	assert_non_null(ctx);
	assert_int_equal(EVP_EncryptInit_ex(ctx,
					    chacha ? EVP_chacha20_poly1305() : EVP_aes_128_gcm(),
					    NULL, mac, nonce),
			 1);
	assert_int_equal(EVP_EncryptUpdate(ctx, out, &n, pt, (int)len), 1);
	assert_int_equal(EVP_EncryptFinal_ex(ctx, out + n, &n), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + len), 1);
	EVP_CIPHER_CTX_free(ctx);
}

static void rekey_key_changes_exactly_at_frame_65536(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(REKEY_RP); i++) {
		uint8_t key[44], frame[64], expect[64], old_key_frame[64];
		size_t klen;
		key_for(REKEY_RP[i], key, &klen);
		struct hush_record *c = make(REKEY_RP[i], HUSH_SIDE_CLIENT);
		hush__record_set_counters(c, 65535, 0);
		/* Frame 65535: the last under the first key. */
		size_t flen = seal(c, frame, sizeof(frame), "epoch", 5);
		reference_seal(REKEY_RP[i], key, 0, 65535, HUSH_SIDE_CLIENT,
			       (const uint8_t *)"epoch", 5, expect);
		assert_memory_equal(frame + 8, expect, flen - 8);
		/* Frame 65536: under the second key, and not what the first key gives. */
		flen = seal(c, frame, sizeof(frame), "epoch", 5);
		reference_seal(REKEY_RP[i], key, 1, 65536, HUSH_SIDE_CLIENT,
			       (const uint8_t *)"epoch", 5, expect);
		assert_memory_equal(frame + 8, expect, flen - 8);
		reference_seal(REKEY_RP[i], key, 0, 65536, HUSH_SIDE_CLIENT,
			       (const uint8_t *)"epoch", 5, old_key_frame);
		assert_memory_not_equal(frame + 8, old_key_frame, flen - 8);
		hush_record_free(c);
	}
}

/* A receiver that skipped to the next epoch fails: the key, not only the nonce, moved. */
static void rekey_frame_of_next_epoch_fails_eauth_at_same_low_bytes(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	hush__record_set_counters(c, 65536, 0);
	uint8_t frame[64];
	struct hush_iovec pt = PT_SENTINEL;
	size_t flen = seal(c, frame, sizeof(frame), "skip", 4);
	assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_EAUTH);
	assert_pt_untouched(&pt);
	hush_record_free(c);
	hush_record_free(s);
}

/* ---- Overflow ---- */

static const struct {
	enum hush_record_protocol rp;
	uint64_t last;
} LAST[] = {
    {HUSH_RP_ALTS_AES128_GCM, LAST40},
    {HUSH_RP_ALTS_AES128_GCM_REKEY, UINT64_MAX},
    {HUSH_RP_CHACHA20_POLY1305_REKEY, UINT64_MAX},
};

static void seal_past_last_counter_fails_ecounter_for_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(LAST); i++) {
		uint8_t key[44], frame[64], copy[64], expect[64], counter[12];
		size_t klen;
		key_for(LAST[i].rp, key, &klen);
		struct hush_record *c = make(LAST[i].rp, HUSH_SIDE_CLIENT);
		struct hush_record *s = make(LAST[i].rp, HUSH_SIDE_SERVER);
		hush__record_set_counters(c, LAST[i].last - 1, 0);
		hush__record_set_counters(s, 0, LAST[i].last - 1);
		/* Frames last-1 and last succeed; the last one uses the all-ones counter. */
		size_t flen = seal(c, frame, sizeof(frame), "x", 1);
		open_expect(s, frame, flen, "x", 1);
		flen = seal(c, frame, sizeof(frame), "x", 1);
		assert_true(hush__record_counter(LAST[i].last, HUSH_SIDE_CLIENT,
						 LAST[i].last == LAST40 ? 5 : 8, counter));
		assert_int_equal(hush__record_aead(LAST[i].rp, key, counter, NULL, 0,
						   (const uint8_t *)"x", 1, expect, true),
				 0);
		assert_memory_equal(frame + 8, expect, 17);
		open_expect(s, frame, flen, "x", 1);
		/* The next one fails, touches nothing, and the context is failed for good. */
		frame[8] = 'x';
		memcpy(copy, frame, sizeof(frame));
		size_t out = 5;
		assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 1, &out), HUSH_ECOUNTER);
		assert_int_equal(out, 5);
		assert_memory_equal(frame, copy, sizeof(frame));
		assert_int_equal(hush_record_error(c), HUSH_ECOUNTER);
		assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 0, &out), HUSH_ECOUNTER);
		size_t need = 0;
		assert_int_equal(hush_record_parse(c, frame, 0, &need), HUSH_ECOUNTER);
		hush_record_free(c);
		hush_record_free(s);
	}
}

static void open_past_last_counter_fails_ecounter_for_good(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(LAST); i++) {
		struct hush_record *c = make(LAST[i].rp, HUSH_SIDE_CLIENT);
		struct hush_record *s = make(LAST[i].rp, HUSH_SIDE_SERVER);
		hush__record_set_counters(c, LAST[i].last - 1, 0);
		hush__record_set_counters(s, 0, LAST[i].last - 1);
		uint8_t frame[64], copy[64];
		for (int k = 0; k < 2; k++) {
			size_t flen = seal(c, frame, sizeof(frame), "y", 1);
			open_expect(s, frame, flen, "y", 1);
		}
		/* Any further frame is refused before decryption. */
		struct hush_record *c2 = make(LAST[i].rp, HUSH_SIDE_CLIENT);
		size_t flen = seal(c2, frame, sizeof(frame), "z", 1);
		memcpy(copy, frame, flen);
		struct hush_iovec pt = PT_SENTINEL;
		assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_ECOUNTER);
		assert_pt_untouched(&pt);
		assert_memory_equal(frame, copy, flen);
		assert_int_equal(hush_record_error(s), HUSH_ECOUNTER);
		assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_ECOUNTER);
		hush_record_free(c);
		hush_record_free(c2);
		hush_record_free(s);
	}
}

static void set_counters_past_last_value_leaves_direction_exhausted(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM, HUSH_SIDE_CLIENT);
	hush__record_set_counters(c, LAST40 + 1, 0);
	uint8_t frame[64];
	size_t out = 5;
	assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 0, &out), HUSH_ECOUNTER);
	assert_int_equal(out, 5);
	hush_record_free(c);
}

/* ---- Wrong side, wrong key ---- */

static void open_same_side_client_fails_eauth(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *c2 = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t frame[64];
	struct hush_iovec pt = PT_SENTINEL;
	size_t flen = seal(c, frame, sizeof(frame), "side", 4);
	assert_int_equal(hush_record_open(c2, frame, flen, &pt), HUSH_EAUTH);
	assert_pt_untouched(&pt);
	assert_true(all_zero(frame + 8, 4));
	hush_record_free(c);
	hush_record_free(c2);
}

static void open_same_side_server_fails_eauth(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *s = make(ALL_RP[i], HUSH_SIDE_SERVER);
		struct hush_record *s2 = make(ALL_RP[i], HUSH_SIDE_SERVER);
		uint8_t frame[64];
		struct hush_iovec pt = PT_SENTINEL;
		size_t flen = seal(s, frame, sizeof(frame), "side", 4);
		assert_int_equal(hush_record_open(s2, frame, flen, &pt), HUSH_EAUTH);
		assert_pt_untouched(&pt);
		hush_record_free(s);
		hush_record_free(s2);
	}
}

/* One wrong bit anywhere in the key material (KDF key or nonce mask) fails the frame. */
static void open_wrong_key_bit_anywhere_fails_eauth_and_wipes(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		uint8_t key[44];
		size_t klen;
		key_for(ALL_RP[i], key, &klen);
		struct hush_record *c = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		uint8_t good[64];
		size_t flen = seal(c, good, sizeof(good), "secret", 6);
		for (size_t b = 0; b < klen; b++) {
			uint8_t wrong[44], frame[64];
			memcpy(wrong, key, klen);
			wrong[b] ^= 0x10;
			memcpy(frame, good, flen);
			struct hush_record *s = make_with_key(ALL_RP[i], wrong, HUSH_SIDE_SERVER);
			struct hush_iovec pt = PT_SENTINEL;
			assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_EAUTH);
			assert_pt_untouched(&pt);
			assert_true(all_zero(frame + 8, 6));
			hush_record_free(s);
		}
		hush_record_free(c);
	}
}

static void open_other_protocol_same_key_fails_eauth(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_CHACHA20_POLY1305_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[64];
	struct hush_iovec pt = PT_SENTINEL;
	size_t flen = seal(c, frame, sizeof(frame), "proto", 5);
	assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_EAUTH);
	assert_pt_untouched(&pt);
	hush_record_free(c);
	hush_record_free(s);
}

/* ---- Parse ---- */

static void parse_fewer_than_four_bytes_asks_for_four(void **state)
{
	(void)state;
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	static const uint8_t junk[3] = {0xff, 0xff, 0xff};
	for (size_t len = 0; len < 4; len++) {
		size_t need = 0;
		assert_int_equal(hush_record_parse(s, len ? junk : NULL, len, &need), HUSH_EAGAIN);
		assert_int_equal(need, 4);
	}
	assert_int_equal(hush_record_error(s), 0);
	hush_record_free(s);
}

static void parse_truncated_at_every_position_asks_for_more(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[128];
	size_t flen = seal(c, frame, sizeof(frame), "truncate me please", 18);
	for (size_t k = 0; k < flen; k++) {
		size_t need = 0;
		assert_int_equal(hush_record_parse(s, frame, k, &need), HUSH_EAGAIN);
		assert_int_equal(need, k < 4 ? 4 : flen);
	}
	size_t need = 0;
	assert_int_equal(hush_record_parse(s, frame, flen, &need), 0);
	assert_int_equal(need, flen);
	assert_int_equal(hush_record_error(s), 0);
	open_expect(s, frame, flen, "truncate me please", 18);
	hush_record_free(c);
	hush_record_free(s);
}

static void parse_two_frames_in_buffer_reports_first(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t buf[128];
	size_t n1 = seal(c, buf, sizeof(buf), "first", 5);
	size_t n2 = seal(c, buf + n1, sizeof(buf) - n1, "second!", 7);
	size_t need = 0;
	assert_int_equal(hush_record_parse(s, buf, n1 + n2, &need), 0);
	assert_int_equal(need, n1);
	open_expect(s, buf, n1, "first", 5);
	assert_int_equal(hush_record_parse(s, buf + n1, n2, &need), 0);
	assert_int_equal(need, n2);
	open_expect(s, buf + n1, n2, "second!", 7);
	hush_record_free(c);
	hush_record_free(s);
}

/* LENGTH 0..19 cannot hold TYPE and tag: refused from the first 4 bytes, for good. */
static void parse_length_below_20_fails_frame_short_for_good(void **state)
{
	(void)state;
	for (uint32_t v = 0; v < 20; v++) {
		struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
		uint8_t hdr[8];
		hush__store_le32(hdr, v);
		hush__store_le32(hdr + 4, HUSH_RECORD_TYPE);
		size_t need = 12345;
		assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EFRAME_SHORT);
		assert_int_equal(need, 12345);
		assert_int_equal(hush_record_error(s), HUSH_EFRAME_SHORT);
		hush__store_le32(hdr, 20);
		assert_int_equal(hush_record_parse(s, hdr, 8, &need), HUSH_EFRAME_SHORT);
		assert_int_equal(need, 12345);
		hush_record_free(s);
	}
}

static void parse_length_20_to_24_asks_for_whole_frame(void **state)
{
	(void)state;
	for (uint32_t v = 20; v <= 24; v++) {
		struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
		uint8_t buf[28] = {0};
		hush__store_le32(buf, v);
		hush__store_le32(buf + 4, HUSH_RECORD_TYPE);
		size_t need = 0;
		assert_int_equal(hush_record_parse(s, buf, 4, &need), HUSH_EAGAIN);
		assert_int_equal(need, v + 4);
		need = 0;
		assert_int_equal(hush_record_parse(s, buf, 8, &need), HUSH_EAGAIN);
		assert_int_equal(need, v + 4);
		need = 0;
		assert_int_equal(hush_record_parse(s, buf, v + 4, &need), 0);
		assert_int_equal(need, v + 4);
		assert_int_equal(hush_record_error(s), 0);
		hush_record_free(s);
	}
}

static void parse_length_at_limit_asks_for_whole_frame(void **state)
{
	(void)state;
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t hdr[4];
	size_t need = 0;
	hush__store_le32(hdr, HUSH_RECORD_DEFAULT_RECV_LIMIT);
	assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EAGAIN);
	assert_int_equal(need, HUSH_RECORD_DEFAULT_RECV_LIMIT + 4);
	assert_int_equal(hush_record_error(s), 0);
	hush_record_free(s);
}

static void parse_length_above_limit_fails_frame_long_for_good(void **state)
{
	(void)state;
	static const uint32_t lengths[] = {HUSH_RECORD_DEFAULT_RECV_LIMIT + 1,
					   HUSH_RECORD_MAX_RECV_LIMIT + 1, UINT32_MAX};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(lengths); i++) {
		struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
		uint8_t hdr[4];
		size_t need = 12345;
		hush__store_le32(hdr, lengths[i]);
		assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EFRAME_LONG);
		assert_int_equal(need, 12345);
		assert_int_equal(hush_record_error(s), HUSH_EFRAME_LONG);
		assert_int_equal(hush_record_parse(s, hdr, 0, &need), HUSH_EFRAME_LONG);
		hush_record_free(s);
	}
}

static void parse_length_above_lowered_limit_fails_frame_long(void **state)
{
	(void)state;
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	assert_int_equal(hush_record_set_limits(s, 0, 1000), 0);
	assert_int_equal(hush_record_max_frame(s), 1004);
	uint8_t hdr[4];
	size_t need = 0;
	hush__store_le32(hdr, 1000);
	assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EAGAIN);
	assert_int_equal(need, 1004);
	hush__store_le32(hdr, 1001);
	assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EFRAME_LONG);
	hush_record_free(s);
}

static void parse_length_up_to_raised_limit_asks_for_whole_frame(void **state)
{
	(void)state;
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	assert_int_equal(hush_record_set_limits(s, 0, HUSH_RECORD_MAX_RECV_LIMIT), 0);
	uint8_t hdr[4];
	size_t need = 0;
	hush__store_le32(hdr, HUSH_RECORD_MAX_RECV_LIMIT);
	assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EAGAIN);
	assert_int_equal(need, (size_t)HUSH_RECORD_MAX_RECV_LIMIT + 4);
	hush__store_le32(hdr, HUSH_RECORD_MAX_RECV_LIMIT + 1);
	assert_int_equal(hush_record_parse(s, hdr, 4, &need), HUSH_EFRAME_LONG);
	hush_record_free(s);
}

/* All 32 bits of TYPE are compared (grpc-go looks at the low byte only). */
static void parse_wrong_type_fails_frame_type_for_good(void **state)
{
	(void)state;
	static const uint32_t types[] = {0,	5,	    7,		 0x106,
					 0x600, 0x06000000, 0x80000006u, 0xffffffffu};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(types); i++) {
		struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
		uint8_t hdr[8];
		hush__store_le32(hdr, 100);
		hush__store_le32(hdr + 4, types[i]);
		size_t need = 12345;
		assert_int_equal(hush_record_parse(s, hdr, 8, &need), HUSH_EFRAME_TYPE);
		assert_int_equal(need, 12345);
		assert_int_equal(hush_record_error(s), HUSH_EFRAME_TYPE);
		hush__store_le32(hdr + 4, HUSH_RECORD_TYPE);
		assert_int_equal(hush_record_parse(s, hdr, 8, &need), HUSH_EFRAME_TYPE);
		hush_record_free(s);
	}
}

static void parse_type_unchecked_before_eight_bytes_asks_for_more(void **state)
{
	(void)state;
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t hdr[8];
	hush__store_le32(hdr, 100);
	hush__store_le32(hdr + 4, 7);
	for (size_t len = 4; len < 8; len++) {
		size_t need = 0;
		assert_int_equal(hush_record_parse(s, hdr, len, &need), HUSH_EAGAIN);
		assert_int_equal(need, 104);
	}
	size_t need = 0;
	assert_int_equal(hush_record_parse(s, hdr, 8, &need), HUSH_EFRAME_TYPE);
	hush_record_free(s);
}

static void parse_null_arguments_fail_einval(void **state)
{
	(void)state;
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t buf[8] = {0};
	size_t need = 0;
	assert_int_equal(hush_record_parse(NULL, buf, 8, &need), HUSH_EINVAL);
	assert_int_equal(hush_record_parse(s, buf, 8, NULL), HUSH_EINVAL);
	assert_int_equal(hush_record_parse(s, NULL, 8, &need), HUSH_EINVAL);
	assert_int_equal(hush_record_error(s), 0);
	hush_record_free(s);
}

/* ---- Open: the negative set ---- */

static void open_truncated_at_every_position_fails_frame_partial(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t frame[128], copy[128];
	size_t flen = seal(c, frame, sizeof(frame), "truncate me please", 18);
	memcpy(copy, frame, flen);
	for (size_t k = 0; k < flen; k++) {
		struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
		struct hush_iovec pt = PT_SENTINEL;
		assert_int_equal(hush_record_open(s, frame, k, &pt), HUSH_EFRAME_PARTIAL);
		assert_pt_untouched(&pt);
		assert_memory_equal(frame, copy, flen); /* nothing decrypted in place */
		assert_int_equal(hush_record_error(s), HUSH_EFRAME_PARTIAL);
		hush_record_free(s);
	}
	hush_record_free(c);
}

static void open_frame_len_beyond_frame_fails_frame_partial(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t buf[128], copy[128];
	size_t n1 = seal(c, buf, sizeof(buf), "one", 3);
	size_t n2 = seal(c, buf + n1, sizeof(buf) - n1, "two", 3);
	memcpy(copy, buf, n1 + n2);
	struct hush_iovec pt = PT_SENTINEL;
	assert_int_equal(hush_record_open(s, buf, n1 + n2, &pt), HUSH_EFRAME_PARTIAL);
	assert_pt_untouched(&pt);
	assert_memory_equal(buf, copy, n1 + n2);
	assert_int_equal(hush_record_error(s), HUSH_EFRAME_PARTIAL);
	hush_record_free(c);
	hush_record_free(s);
}

/*
 * A flipped bit in the header, met by a receiver that parses the whole sealed frame and
 * opens what parse delimits. The header is not authenticated (section 1), so the
 * outcome follows from the LENGTH or TYPE it now reads.
 */
static void open_flipped_bit_in_header_fails_framing_or_auth(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	uint8_t good[128];
	size_t flen = seal(c, good, sizeof(good), "flip every bit here", 19);
	assert_int_equal(flen, 43);
	int seen_short = 0, seen_long = 0, seen_wait = 0, seen_auth = 0, seen_type = 0;
	for (size_t i = 0; i < HUSH_RECORD_HEADER_SIZE; i++) {
		for (int bit = 0; bit < 8; bit++) {
			struct hush_record *s =
			    make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
			uint8_t frame[128];
			memcpy(frame, good, flen);
			frame[i] ^= (uint8_t)(1u << bit);
			uint32_t length = hush__load_le32(frame);
			size_t need = 12345;
			int rc = hush_record_parse(s, frame, flen, &need);
			if (i >= 4) {
				assert_int_equal(rc, HUSH_EFRAME_TYPE);
				seen_type++;
			} else if (length < 20) {
				assert_int_equal(rc, HUSH_EFRAME_SHORT);
				seen_short++;
			} else if (length > HUSH_RECORD_DEFAULT_RECV_LIMIT) {
				assert_int_equal(rc, HUSH_EFRAME_LONG);
				seen_long++;
			} else if ((size_t)length + 4 > flen) {
				/* Claims more bytes than were sent: the receiver waits. */
				assert_int_equal(rc, HUSH_EAGAIN);
				assert_int_equal(need, (size_t)length + 4);
				assert_int_equal(hush_record_error(s), 0);
				seen_wait++;
			} else {
				/* Claims fewer: the misframed bytes fail authentication. */
				assert_int_equal(rc, 0);
				assert_int_equal(need, (size_t)length + 4);
				struct hush_iovec pt = PT_SENTINEL;
				assert_int_equal(hush_record_open(s, frame, need, &pt), HUSH_EAUTH);
				assert_pt_untouched(&pt);
				assert_true(all_zero(frame + 8, need - 24));
				seen_auth++;
			}
			if (rc != HUSH_EAGAIN) {
				assert_int_not_equal(hush_record_error(s), 0);
			}
			hush_record_free(s);
		}
	}
	/* LENGTH 39 = 0x27: bits 0..2 give 38, 37, 35 (shorter), bit 5 gives 7. */
	assert_int_equal(seen_auth, 3);
	assert_int_equal(seen_short, 1);
	assert_int_equal(seen_type, 32);
	assert_int_equal(seen_long, 4 + 8);
	assert_int_equal(seen_wait, 4 + 8 + 4);
	hush_record_free(c);
}

static void open_flipped_bit_in_ciphertext_or_tag_fails_eauth_and_wipes(void **state)
{
	(void)state;
	for (size_t p = 0; p < HUSH_ARRAY_SIZE(ALL_RP); p++) {
		struct hush_record *c = make(ALL_RP[p], HUSH_SIDE_CLIENT);
		uint8_t good[128];
		size_t flen = seal(c, good, sizeof(good), "flip every bit here", 19);
		for (size_t i = HUSH_RECORD_HEADER_SIZE; i < flen; i++) {
			for (int bit = 0; bit < 8; bit++) {
				struct hush_record *s = make(ALL_RP[p], HUSH_SIDE_SERVER);
				uint8_t frame[128];
				memcpy(frame, good, flen);
				frame[i] ^= (uint8_t)(1u << bit);
				struct hush_iovec pt = PT_SENTINEL;
				assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_EAUTH);
				assert_pt_untouched(&pt);
				assert_true(all_zero(frame + 8, 19));
				/* The header and tag were not decrypted, so not wiped. */
				assert_memory_equal(frame, good, 8);
				assert_int_equal(hush_record_error(s), HUSH_EAUTH);
				hush_record_free(s);
			}
		}
		hush_record_free(c);
	}
}

/* After a failed open the counter did not move, so the context cannot be resynchronised
 * by a good frame either: it is failed for good. */
static void open_after_auth_failure_returns_stored_error(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[64], bad[64], copy[64];
	size_t flen = seal(c, frame, sizeof(frame), "good", 4);
	memcpy(bad, frame, flen);
	bad[flen - 1] ^= 0x80;
	struct hush_iovec pt = PT_SENTINEL;
	assert_int_equal(hush_record_open(s, bad, flen, &pt), HUSH_EAUTH);
	memcpy(copy, frame, flen);
	assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_EAUTH);
	assert_pt_untouched(&pt);
	assert_memory_equal(frame, copy, flen); /* refused before any decryption */
	size_t need = 0;
	assert_int_equal(hush_record_parse(s, frame, flen, &need), HUSH_EAUTH);
	hush_record_free(c);
	hush_record_free(s);
}

static void open_replayed_frame_fails_eauth(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[64], tmp[64];
	size_t flen = seal(c, frame, sizeof(frame), "abc", 3);
	memcpy(tmp, frame, flen);
	open_expect(s, tmp, flen, "abc", 3);
	memcpy(tmp, frame, flen);
	struct hush_iovec pt = PT_SENTINEL;
	assert_int_equal(hush_record_open(s, tmp, flen, &pt), HUSH_EAUTH);
	assert_pt_untouched(&pt);
	hush_record_free(c);
	hush_record_free(s);
}

static void open_reordered_frames_fail_eauth(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t f0[64], f1[64];
	size_t n0 = seal(c, f0, sizeof(f0), "abc", 3);
	size_t n1 = seal(c, f1, sizeof(f1), "abc", 3);
	assert_int_equal(n0, n1);
	struct hush_iovec pt = PT_SENTINEL;
	assert_int_equal(hush_record_open(s, f1, n1, &pt), HUSH_EAUTH);
	assert_pt_untouched(&pt);
	hush_record_free(c);
	hush_record_free(s);
}

static void open_dropped_frame_fails_eauth(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t f[3][64];
	size_t n[3];
	for (int i = 0; i < 3; i++) {
		n[i] = seal(c, f[i], sizeof(f[i]), "abc", 3);
	}
	open_expect(s, f[0], n[0], "abc", 3);
	struct hush_iovec pt = PT_SENTINEL;
	assert_int_equal(hush_record_open(s, f[2], n[2], &pt), HUSH_EAUTH);
	assert_pt_untouched(&pt);
	hush_record_free(c);
	hush_record_free(s);
}

static void open_null_arguments_fail_einval(void **state)
{
	(void)state;
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	uint8_t frame[64] = {0};
	struct hush_iovec pt = PT_SENTINEL;
	assert_int_equal(hush_record_open(NULL, frame, 24, &pt), HUSH_EINVAL);
	assert_int_equal(hush_record_open(s, NULL, 24, &pt), HUSH_EINVAL);
	assert_int_equal(hush_record_open(s, frame, 24, NULL), HUSH_EINVAL);
	assert_pt_untouched(&pt);
	assert_int_equal(hush_record_error(s), 0);
	hush_record_free(s);
}

/* ---- Construction and limits ---- */

static void new_bad_arguments_fail_and_leave_out_untouched(void **state)
{
	(void)state;
	uint8_t key[45] = {0};
	struct hush_record *const sentinel = (struct hush_record *)(uintptr_t)0x1;
	struct hush_record *r = sentinel;
	assert_int_equal(
	    hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 43, HUSH_SIDE_CLIENT),
	    HUSH_EKEYLEN);
	assert_int_equal(
	    hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 45, HUSH_SIDE_CLIENT),
	    HUSH_EKEYLEN);
	assert_int_equal(
	    hush_record_new(&r, HUSH_RP_CHACHA20_POLY1305_REKEY, key, 32, HUSH_SIDE_CLIENT),
	    HUSH_EKEYLEN);
	assert_int_equal(hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM, key, 44, HUSH_SIDE_CLIENT),
			 HUSH_EKEYLEN);
	assert_int_equal(hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM, key, 32, HUSH_SIDE_CLIENT),
			 HUSH_EKEYLEN);
	assert_int_equal(
	    hush_record_new(&r, (enum hush_record_protocol)0, key, 44, HUSH_SIDE_CLIENT),
	    HUSH_EPROTO_UNKNOWN);
	assert_int_equal(
	    hush_record_new(&r, (enum hush_record_protocol)4, key, 44, HUSH_SIDE_CLIENT),
	    HUSH_EPROTO_UNKNOWN);
	assert_int_equal(
	    hush_record_new(&r, (enum hush_record_protocol) - 1, key, 44, HUSH_SIDE_CLIENT),
	    HUSH_EPROTO_UNKNOWN);
	assert_int_equal(hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM, key, 16, (enum hush_side)2),
			 HUSH_EINVAL);
	assert_int_equal(hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM, NULL, 16, HUSH_SIDE_CLIENT),
			 HUSH_EINVAL);
	assert_int_equal(hush_record_new(NULL, HUSH_RP_ALTS_AES128_GCM, key, 16, HUSH_SIDE_CLIENT),
			 HUSH_EINVAL);
	assert_ptr_equal(r, sentinel);
	hush_record_free(NULL);
}

static void new_defaults_send_16384_and_accept_1048576(void **state)
{
	(void)state;
	struct hush_record *r = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	assert_int_equal(hush_record_max_payload(r), 16360);
	assert_int_equal(hush_record_max_frame(r), 1048580);
	assert_int_equal(hush_record_error(r), 0);
	hush_record_free(r);
}

static void protocol_names_each_protocol_round_trip(void **state)
{
	(void)state;
	static const char *names[] = {"ALTSRP_GCM_AES128_REKEY", "ALTSRP_GCM_AES128",
				      "HUSHRP_CHACHA20_POLY1305_REKEY"};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		enum hush_record_protocol rp;
		assert_string_equal(hush_record_protocol_name(ALL_RP[i]), names[i]);
		assert_int_equal(hush_record_protocol_from_name(names[i], &rp), 0);
		assert_int_equal(rp, ALL_RP[i]);
	}
}

static void protocol_from_unknown_name_fails_and_leaves_out_untouched(void **state)
{
	(void)state;
	static const char *bad[] = {"ALTSRP_GCM_AES256", "altsrp_gcm_aes128_rekey", "",
				    "ALTSRP_GCM_AES128_REKEY ", "ALTSRP_GCM_AES12"};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(bad); i++) {
		enum hush_record_protocol rp = (enum hush_record_protocol)99;
		assert_int_equal(hush_record_protocol_from_name(bad[i], &rp), HUSH_EPROTO_UNKNOWN);
		assert_int_equal(rp, 99);
	}
	enum hush_record_protocol rp = (enum hush_record_protocol)99;
	assert_int_equal(hush_record_protocol_from_name(NULL, &rp), HUSH_EINVAL);
	assert_int_equal(hush_record_protocol_from_name("ALTSRP_GCM_AES128", NULL), HUSH_EINVAL);
	assert_null(hush_record_protocol_name((enum hush_record_protocol)0));
	assert_null(hush_record_protocol_name((enum hush_record_protocol)4));
}

static void key_size_each_protocol_returns_44_16_44(void **state)
{
	(void)state;
	assert_int_equal(hush_record_key_size(HUSH_RP_ALTS_AES128_GCM_REKEY), 44);
	assert_int_equal(hush_record_key_size(HUSH_RP_ALTS_AES128_GCM), 16);
	assert_int_equal(hush_record_key_size(HUSH_RP_CHACHA20_POLY1305_REKEY), 44);
	assert_int_equal(hush_record_key_size((enum hush_record_protocol)0), 0);
}

static void set_limits_out_of_range_fails_and_changes_nothing(void **state)
{
	(void)state;
	struct hush_record *r = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	assert_int_equal(hush_record_set_limits(r, 63, 0), HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(r, HUSH_RECORD_MAX_RECV_LIMIT + 5, 0), HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(r, 0, 19), HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(r, 0, HUSH_RECORD_MAX_RECV_LIMIT + 1), HUSH_EINVAL);
	/* One bad value changes neither. */
	assert_int_equal(hush_record_set_limits(r, 4096, HUSH_RECORD_MAX_RECV_LIMIT + 1),
			 HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(r, 63, 4096), HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(NULL, 4096, 4096), HUSH_EINVAL);
	assert_int_equal(hush_record_max_payload(r), 16360);
	assert_int_equal(hush_record_max_frame(r), 1048580);
	hush_record_free(r);
}

static void set_limits_bounds_are_accepted_and_zero_keeps_values(void **state)
{
	(void)state;
	struct hush_record *r = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	assert_int_equal(hush_record_set_limits(r, 64, 20), 0);
	assert_int_equal(hush_record_max_payload(r), 40);
	assert_int_equal(hush_record_max_frame(r), 24);
	assert_int_equal(hush_record_set_limits(r, 0, 0), 0);
	assert_int_equal(hush_record_max_payload(r), 40);
	assert_int_equal(hush_record_max_frame(r), 24);
	assert_int_equal(
	    hush_record_set_limits(r, HUSH_RECORD_MAX_RECV_LIMIT + 4, HUSH_RECORD_MAX_RECV_LIMIT),
	    0);
	assert_int_equal(hush_record_max_payload(r), HUSH_RECORD_MAX_RECV_LIMIT - 20);
	assert_int_equal(hush_record_max_frame(r), HUSH_RECORD_MAX_RECV_LIMIT + 4);
	hush_record_free(r);
}

static void set_limits_send_frame_bounds_seal_payload(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	assert_int_equal(hush_record_set_limits(c, 4096, 0), 0);
	static uint8_t frame[8192];
	size_t out = 77;
	assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 4073, &out), HUSH_EMSGSIZE);
	assert_int_equal(out, 77);
	assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 4072, &out), 0);
	assert_int_equal(out, 4096);
	hush_record_free(c);
}

/* A record context without cipher contexts, as the transport makes them (they are lent). */
static struct hush_record *bare(enum hush_record_protocol rp, const uint8_t *key, size_t klen,
				enum hush_side side)
{
	struct hush_record *r = NULL;
	assert_int_equal(hush__record_new_bare(&r, rp, key, klen, side), 0);
	return r;
}

static EVP_CIPHER_CTX *new_ctx(void)
{
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
	assert_non_null(x);
	return x;
}

/* ---- Cipher lending ---- */

static void lend_without_ciphers_seal_and_open_fail_estate_not_sticky(void **state)
{
	(void)state;
	uint8_t key[44], frame[64], copy[64];
	size_t klen;
	key_for(HUSH_RP_ALTS_AES128_GCM_REKEY, key, &klen);
	struct hush_record *b = bare(HUSH_RP_ALTS_AES128_GCM_REKEY, key, klen, HUSH_SIDE_SERVER);
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	size_t flen = seal(c, frame, sizeof(frame), "lend", 4);
	memcpy(copy, frame, flen);
	size_t out = 77;
	assert_int_equal(hush_record_seal(b, frame, sizeof(frame), 4, &out), HUSH_ESTATE);
	assert_int_equal(out, 77);
	struct hush_iovec pt = PT_SENTINEL;
	assert_int_equal(hush_record_open(b, frame, flen, &pt), HUSH_ESTATE);
	assert_pt_untouched(&pt);
	assert_memory_equal(frame, copy, flen);
	assert_int_equal(hush_record_error(b), 0);
	/* With contexts given, the same frame opens. */
	hush__record_give_ciphers(b, EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_new());
	open_expect(b, frame, flen, "lend", 4);
	hush_record_free(b); /* frees the given contexts */
	hush_record_free(c);
}

/*
 * Two contexts go back and forth between an AES-GCM and a ChaCha20-Poly1305 record
 * context, swapping seal and open roles each time: whatever a context was keyed for
 * before, the borrower keys it afresh.
 */
static void lend_ciphers_across_protocols_and_roles_interoperate(void **state)
{
	(void)state;
	struct hush_record *a = NULL, *b = NULL;
	uint8_t key[44];
	size_t klen;
	key_for(HUSH_RP_ALTS_AES128_GCM_REKEY, key, &klen);
	a = bare(HUSH_RP_ALTS_AES128_GCM_REKEY, key, klen, HUSH_SIDE_CLIENT);
	b = bare(HUSH_RP_CHACHA20_POLY1305_REKEY, key, klen, HUSH_SIDE_CLIENT);
	struct hush_record *sa = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	struct hush_record *sb = make(HUSH_RP_CHACHA20_POLY1305_REKEY, HUSH_SIDE_SERVER);
	EVP_CIPHER_CTX *x = new_ctx(), *y = new_ctx();
	for (int round = 0; round < 6; round++) {
		struct hush_record *me = round % 2 ? b : a;
		struct hush_record *peer = round % 2 ? sb : sa;
		uint8_t frame[64];
		if (round % 2) {
			hush__record_give_ciphers(me, y, x);
		} else {
			hush__record_give_ciphers(me, x, y);
		}
		size_t flen = seal(me, frame, sizeof(frame), "lend", 4);
		open_expect(peer, frame, flen, "lend", 4);
		flen = seal(peer, frame, sizeof(frame), "back", 4);
		open_expect(me, frame, flen, "back", 4);
		EVP_CIPHER_CTX *s, *o;
		hush__record_take_ciphers(me, &s, &o);
		if (round % 2) {
			assert_ptr_equal(s, y);
			assert_ptr_equal(o, x);
		} else {
			assert_ptr_equal(s, x);
			assert_ptr_equal(o, y);
		}
	}
	EVP_CIPHER_CTX *s, *o;
	hush__record_take_ciphers(a, &s, &o);
	assert_null(s);
	assert_null(o);
	EVP_CIPHER_CTX_free(x);
	EVP_CIPHER_CTX_free(y);
	hush_record_free(a);
	hush_record_free(b);
	hush_record_free(sa);
	hush_record_free(sb);
}

/* A context that gives its ciphers away and gets fresh ones keeps its counters, across
 * the rekey boundary too. */
static void lend_take_and_give_keeps_counters_across_rekey(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	hush__record_set_counters(c, 65534, 0);
	hush__record_set_counters(s, 0, 65534);
	for (int k = 0; k < 4; k++) {
		uint8_t frame[64];
		size_t flen = seal(c, frame, sizeof(frame), "keep", 4);
		open_expect(s, frame, flen, "keep", 4);
		EVP_CIPHER_CTX *x, *y;
		hush__record_take_ciphers(c, &x, &y);
		EVP_CIPHER_CTX_free(x);
		EVP_CIPHER_CTX_free(y);
		hush__record_give_ciphers(c, EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_new());
	}
	hush_record_free(c);
	hush_record_free(s);
}

/*
 * Cipher contexts lent to one record context after another (as the transport does per
 * readiness event) are re-keyed without any allocation, OpenSSL's included.
 */
static void lend_same_cipher_rekeys_without_allocating(void **state)
{
	(void)state;
	uint8_t key[44], frame[64];
	size_t klen;
	key_for(HUSH_RP_ALTS_AES128_GCM_REKEY, key, &klen);
	struct hush_record *a = bare(HUSH_RP_ALTS_AES128_GCM_REKEY, key, klen, HUSH_SIDE_CLIENT);
	struct hush_record *b = bare(HUSH_RP_ALTS_AES128_GCM_REKEY, key, klen, HUSH_SIDE_SERVER);
	EVP_CIPHER_CTX *x = new_ctx(), *y = new_ctx();
	uint64_t before = 0;
	for (int round = 0; round < 100; round++) {
		/* Rounds 0 and 1 derive each context's first key: not counted. */
		if (round == 2) {
			before = atomic_load(&ossl_calls);
		}
		struct hush_record *r = round % 2 ? b : a;
		hush__record_give_ciphers(r, x, y);
		seal(r, frame, sizeof(frame), "rekey", 5);
		hush__record_take_ciphers(r, &x, &y);
	}
	assert_int_equal(atomic_load(&ossl_calls), before);
	EVP_CIPHER_CTX_free(x);
	EVP_CIPHER_CTX_free(y);
	hush_record_free(a);
	hush_record_free(b);
}

/*
 * hush__record_seal_from() with the payload in two parts (head_len bytes in place, the
 * rest read from src) puts on the wire exactly what hush_record_seal() does with the
 * whole payload in place, for every protocol and split, records in sequence; refused
 * arguments spend no counter.
 */
static void seal_from_two_parts_equals_sealing_the_whole(void **state)
{
	(void)state;
	enum { LEN = 3000 };
	static const size_t heads[] = {0, 1, 15, 16, 17, 1000, LEN - 1, LEN};
	uint8_t payload[LEN];
	testlib_fill(payload, sizeof(payload), 21);
	static uint8_t whole[LEN + HUSH_RECORD_OVERHEAD], parts[LEN + HUSH_RECORD_OVERHEAD];
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *a = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		struct hush_record *b = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		for (size_t k = 0; k < HUSH_ARRAY_SIZE(heads); k++) {
			size_t head = heads[k], flen_a = 0, flen_b = 0;
			size_t len = LEN - k; /* a different length each record */
			memcpy(whole + HUSH_RECORD_HEADER_SIZE, payload, len);
			assert_int_equal(hush_record_seal(a, whole, sizeof(whole), len, &flen_a),
					 0);
			if (head > len) {
				head = len;
			}
			memset(parts, 0xee, sizeof(parts));
			memcpy(parts + HUSH_RECORD_HEADER_SIZE, payload, head);
			/* Refused: nothing sealed, no counter spent. */
			assert_int_equal(hush__record_seal_from(b, parts, sizeof(parts), len + 1,
								payload + head, len, &flen_b),
					 HUSH_EINVAL);
			if (head < len) {
				assert_int_equal(hush__record_seal_from(b, parts, sizeof(parts),
									head, NULL, len, &flen_b),
						 HUSH_EINVAL);
			}
			assert_int_equal(hush__record_seal_from(b, parts, sizeof(parts), head,
								payload + head, len, &flen_b),
					 0);
			assert_int_equal(flen_b, flen_a);
			assert_memory_equal(parts, whole, flen_a);
		}
		hush_record_free(a);
		hush_record_free(b);
	}
}

/*
 * The transport lends a connection alone on its loop the same two contexts at every
 * readiness event, in either order (the loop's cache is last in, first out). Given
 * back, they are not keyed again: a context keyed meanwhile behind the record
 * context's back, without clearing its application data, is still taken for keyed, so
 * the peer cannot open what it seals. Once the application data is cleared, as any
 * other keying by a record context does, the record context keys it again.
 */
static void lend_same_contexts_back_are_not_keyed_again(void **state)
{
	(void)state;
	uint8_t key[44], other[44], frame[64];
	size_t klen;
	key_for(HUSH_RP_ALTS_AES128_GCM_REKEY, key, &klen);
	memset(other, 0x5a, sizeof(other));
	struct hush_record *c = bare(HUSH_RP_ALTS_AES128_GCM_REKEY, key, klen, HUSH_SIDE_CLIENT);
	struct hush_record *s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	EVP_CIPHER_CTX *x = new_ctx(), *y = new_ctx();
	for (int round = 0; round < 4; round++) {
		/* Swapped every other round: each goes back to its direction. */
		hush__record_give_ciphers(c, round % 2 ? y : x, round % 2 ? x : y);
		size_t flen = seal(c, frame, sizeof(frame), "same", 4);
		open_expect(s, frame, flen, "same", 4);
		flen = seal(s, frame, sizeof(frame), "back", 4);
		open_expect(c, frame, flen, "back", 4);
		EVP_CIPHER_CTX *so, *oo;
		hush__record_take_ciphers(c, &so, &oo);
		assert_ptr_equal(so, x);
		assert_ptr_equal(oo, y);
	}
	/* x keyed with another key behind the record context's back. */
	assert_int_equal(EVP_CipherInit_ex(x, NULL, NULL, other, NULL, 1), 1);
	hush__record_give_ciphers(c, x, y);
	size_t flen = 0;
	memcpy(frame + HUSH_RECORD_HEADER_SIZE, "lost", 4);
	assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 4, &flen), 0);
	struct hush_iovec pt = {NULL, 0};
	assert_int_equal(hush_record_open(s, frame, flen, &pt), HUSH_EAUTH);
	hush_record_free(s);
	/* The same with the mark cleared: keyed again, the next frame opens. */
	s = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_SERVER);
	hush__record_set_counters(s, 0, 5);
	hush__record_take_ciphers(c, &x, &y);
	assert_int_equal(EVP_CipherInit_ex(x, NULL, NULL, other, NULL, 1), 1);
	EVP_CIPHER_CTX_set_app_data(x, NULL);
	hush__record_give_ciphers(c, x, y);
	flen = seal(c, frame, sizeof(frame), "kept", 4);
	open_expect(s, frame, flen, "kept", 4);
	hush__record_take_ciphers(c, &x, &y);
	EVP_CIPHER_CTX_free(x);
	EVP_CIPHER_CTX_free(y);
	hush_record_free(c);
	hush_record_free(s);
}

/*
 * Contexts keyed by one record context, then lent to a second one (another key), then
 * back to the first, across its rekey boundary, and finally to a record context made
 * after the first was freed (possibly at its address): every frame opens at its peer.
 */
static void lend_between_record_contexts_always_seals_with_own_key(void **state)
{
	(void)state;
	uint8_t ka[44], kb[44], frame[64];
	size_t klen;
	key_for(HUSH_RP_ALTS_AES128_GCM_REKEY, ka, &klen);
	memset(kb, 0xa5, sizeof(kb));
	struct hush_record *a = bare(HUSH_RP_ALTS_AES128_GCM_REKEY, ka, klen, HUSH_SIDE_CLIENT);
	struct hush_record *b = bare(HUSH_RP_ALTS_AES128_GCM_REKEY, kb, klen, HUSH_SIDE_CLIENT);
	struct hush_record *pa = make_with_key(HUSH_RP_ALTS_AES128_GCM_REKEY, ka, HUSH_SIDE_SERVER);
	struct hush_record *pb = make_with_key(HUSH_RP_ALTS_AES128_GCM_REKEY, kb, HUSH_SIDE_SERVER);
	hush__record_set_counters(a, 65534, 0);
	hush__record_set_counters(pa, 0, 65534);
	EVP_CIPHER_CTX *x = new_ctx(), *y = new_ctx();
	for (int round = 0; round < 8; round++) {
		bool is_a = round % 4 != 3;
		struct hush_record *me = is_a ? a : b;
		struct hush_record *peer = is_a ? pa : pb;
		hush__record_give_ciphers(me, round % 2 ? y : x, round % 2 ? x : y);
		size_t flen = seal(me, frame, sizeof(frame), "mine", 4);
		open_expect(peer, frame, flen, "mine", 4);
		hush__record_take_ciphers(me, &x, &y);
	}
	hush_record_free(a);
	hush_record_free(pa);
	/* A new record context with another key, given the contexts a keyed last. */
	a = NULL;
	a = bare(HUSH_RP_ALTS_AES128_GCM_REKEY, kb, klen, HUSH_SIDE_SERVER);
	hush_record_free(pb);
	pb = make_with_key(HUSH_RP_ALTS_AES128_GCM_REKEY, kb, HUSH_SIDE_CLIENT);
	hush__record_give_ciphers(a, x, y);
	size_t flen = seal(a, frame, sizeof(frame), "anew", 4);
	open_expect(pb, frame, flen, "anew", 4);
	hush__record_take_ciphers(a, &x, &y);
	EVP_CIPHER_CTX_free(x);
	EVP_CIPHER_CTX_free(y);
	hush_record_free(a);
	hush_record_free(b);
	hush_record_free(pb);
}

static void record_size_idle_context_fits_168_bytes(void **state)
{
	(void)state;
	/* Keys, counters, limits, error, protocol and flags: see struct hush_record. */
	assert_true(hush__record_size() <= 168);
}

/* ---- Allocations ---- */

static void new_hush_allocation_fails_at_every_k_returns_enomem_without_leak(void **state)
{
	(void)state;
	uint8_t key[44] = {0};
	int failures = 0;
	testlib_alloc_install();
	for (uint64_t k = 1;; k++) {
		struct hush_record *const sentinel = (struct hush_record *)(uintptr_t)0x1;
		struct hush_record *r = sentinel;
		testlib_alloc_fail_at(k);
		int rc =
		    hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 44, HUSH_SIDE_CLIENT);
		testlib_alloc_fail_at(0);
		if (rc == 0) {
			hush_record_free(r);
			break;
		}
		assert_int_equal(rc, HUSH_ENOMEM);
		assert_ptr_equal(r, sentinel);
		failures++;
	}
	struct testlib_alloc_stats st;
	testlib_alloc_get(&st);
	assert_int_equal(st.live, 0);
	assert_true(failures >= 1);
	testlib_alloc_uninstall();
}

static void new_openssl_allocation_fails_at_every_k_returns_enomem_without_leak(void **state)
{
	(void)state;
	uint8_t key[44] = {0};
	int failures = 0;
	testlib_alloc_install();
	for (uint64_t k = 1;; k++) {
		struct hush_record *const sentinel = (struct hush_record *)(uintptr_t)0x1;
		struct hush_record *r = sentinel;
		ossl_fail_at_k(k);
		int rc =
		    hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 44, HUSH_SIDE_CLIENT);
		ossl_fail_at_k(0);
		if (rc == 0) {
			hush_record_free(r);
			break;
		}
		assert_int_equal(rc, HUSH_ENOMEM);
		assert_ptr_equal(r, sentinel);
		struct testlib_alloc_stats st;
		testlib_alloc_get(&st);
		assert_int_equal(st.live, 0);
		failures++;
	}
	/* Two cipher contexts: the first and the second allocation can fail. */
	assert_true(failures >= 2);
	testlib_alloc_uninstall();
}

/* The first seal derives a key (HMAC) and keys a cipher context, which allocate inside
 * OpenSSL: each failure there fails the context for good, with the payload untouched. */
static void seal_openssl_allocation_fails_at_every_k_fails_ecrypto_for_good(void **state)
{
	(void)state;
	int failures = 0;
	for (uint64_t k = 1;; k++) {
		struct hush_record *c = make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT);
		uint8_t frame[64], copy[64];
		memset(frame, 0x33, sizeof(frame));
		memcpy(copy, frame, sizeof(frame));
		size_t out = 77;
		ossl_fail_at_k(k);
		int rc = hush_record_seal(c, frame, sizeof(frame), 10, &out);
		ossl_fail_at_k(0);
		if (rc == 0) {
			hush_record_free(c);
			break;
		}
		assert_int_equal(rc, HUSH_ECRYPTO);
		assert_int_equal(out, 77);
		assert_memory_equal(frame, copy, sizeof(frame));
		assert_int_equal(hush_record_error(c), HUSH_ECRYPTO);
		assert_int_equal(hush_record_seal(c, frame, sizeof(frame), 10, &out), HUSH_ECRYPTO);
		hush_record_free(c);
		failures++;
	}
	assert_true(failures >= 2);
}

static void open_openssl_allocation_fails_at_every_k_fails_ecrypto_for_good(void **state)
{
	(void)state;
	struct hush_record *c = make(HUSH_RP_CHACHA20_POLY1305_REKEY, HUSH_SIDE_CLIENT);
	uint8_t good[64];
	size_t flen = seal(c, good, sizeof(good), "allocate", 8);
	int failures = 0;
	for (uint64_t k = 1;; k++) {
		struct hush_record *s = make(HUSH_RP_CHACHA20_POLY1305_REKEY, HUSH_SIDE_SERVER);
		uint8_t frame[64];
		memcpy(frame, good, flen);
		struct hush_iovec pt = PT_SENTINEL;
		ossl_fail_at_k(k);
		int rc = hush_record_open(s, frame, flen, &pt);
		ossl_fail_at_k(0);
		if (rc == 0) {
			assert_memory_equal(pt.base, "allocate", 8);
			hush_record_free(s);
			break;
		}
		assert_int_equal(rc, HUSH_ECRYPTO);
		assert_pt_untouched(&pt);
		assert_int_equal(hush_record_error(s), HUSH_ECRYPTO);
		hush_record_free(s);
		failures++;
	}
	assert_true(failures >= 2);
	hush_record_free(c);
}

static void records_make_no_hush_allocation(void **state)
{
	(void)state;
	testlib_alloc_install();
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *c = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		struct hush_record *s = make(ALL_RP[i], HUSH_SIDE_SERVER);
		hush__record_set_counters(c, 65000, 0);
		hush__record_set_counters(s, 0, 65000);
		struct testlib_alloc_stats before, after;
		testlib_alloc_get(&before);
		/* 1000 records, across a rekey for the REKEY protocols. */
		for (int k = 0; k < 1000; k++) {
			uint8_t frame[1100], msg[1000] = {0};
			size_t flen = seal(c, frame, sizeof(frame), msg, sizeof(msg));
			open_expect(s, frame, flen, msg, sizeof(msg));
		}
		testlib_alloc_get(&after);
		assert_int_equal(after.calls, before.calls);
		hush_record_free(c);
		hush_record_free(s);
	}
	testlib_alloc_uninstall();
}

static void records_within_an_epoch_make_no_openssl_allocation(void **state)
{
	(void)state;
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(ALL_RP); i++) {
		struct hush_record *c = make(ALL_RP[i], HUSH_SIDE_CLIENT);
		struct hush_record *s = make(ALL_RP[i], HUSH_SIDE_SERVER);
		uint8_t frame[1100], msg[1000] = {0};
		/* The first record of each direction derives and keys: not counted. */
		size_t flen = seal(c, frame, sizeof(frame), msg, sizeof(msg));
		open_expect(s, frame, flen, msg, sizeof(msg));
		uint64_t before = atomic_load(&ossl_calls);
		for (int k = 0; k < 1000; k++) {
			flen = seal(c, frame, sizeof(frame), msg, sizeof(msg));
			open_expect(s, frame, flen, msg, sizeof(msg));
		}
		assert_int_equal(atomic_load(&ossl_calls), before);
		hush_record_free(c);
		hush_record_free(s);
	}
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
	/* Before OpenSSL allocates anything, or its hooks can no longer be set. */
	if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free)) {
		fprintf(stderr, "test-record: cannot hook OpenSSL's allocator\n");
		return 1;
	}
	/* Initialise OpenSSL and fetch the algorithms before any failure is injected:
	 * a failed OpenSSL initialisation is permanent for the process. */
	hush_record_free(make(HUSH_RP_ALTS_AES128_GCM_REKEY, HUSH_SIDE_CLIENT));

	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(vectors_rekey_aead_seal_matches_grpc),
	    cmocka_unit_test(vectors_rekey_aead_open_recovers_plaintext),
	    cmocka_unit_test(vectors_rekey_aead_tampered_tag_fails_eauth_and_wipes),
	    cmocka_unit_test(vectors_rekey_frame_counters_via_record_seal_match_grpc),
	    cmocka_unit_test(vectors_aes128_crypter_matches_grpc_go),
	    cmocka_unit_test(vectors_plain_gcm_matches_grpc),
	    cmocka_unit_test(vectors_plain_gcm_zero_nonce_via_record_seal_matches_grpc),
	    cmocka_unit_test(vectors_counter_increment_matches_grpc_go),
	    cmocka_unit_test(vectors_counter_rollover_after_last_value_is_invalid),
	    cmocka_unit_test(counter_side_bit_survives_every_index),
	    cmocka_unit_test(seal_protocol_doc_examples_reproduce_frames),
	    cmocka_unit_test(open_protocol_doc_examples_recover_plaintext),
	    cmocka_unit_test(seal_first_frames_each_protocol_equal_aead_of_counters),
	    cmocka_unit_test(seal_payload_above_max_fails_emsgsize_not_sticky),
	    cmocka_unit_test(seal_frame_cap_too_small_fails_enospace_not_sticky),
	    cmocka_unit_test(seal_null_arguments_fail_einval_not_sticky),
	    cmocka_unit_test(seal_after_open_failure_returns_stored_error),
	    cmocka_unit_test(roundtrip_client_to_server_each_protocol_recovers_plaintext),
	    cmocka_unit_test(roundtrip_server_to_client_each_protocol_recovers_plaintext),
	    cmocka_unit_test(roundtrip_interleaved_directions_keep_separate_counters),
	    cmocka_unit_test(roundtrip_empty_record_each_protocol_has_length_20),
	    cmocka_unit_test(roundtrip_max_payload_each_protocol_fills_send_frame),
	    cmocka_unit_test(roundtrip_one_mib_record_with_raised_limits_recovers_plaintext),
	    cmocka_unit_test(rekey_frames_65534_to_65537_round_trip_each_direction),
	    cmocka_unit_test(rekey_key_changes_exactly_at_frame_65536),
	    cmocka_unit_test(rekey_frame_of_next_epoch_fails_eauth_at_same_low_bytes),
	    cmocka_unit_test(seal_past_last_counter_fails_ecounter_for_good),
	    cmocka_unit_test(open_past_last_counter_fails_ecounter_for_good),
	    cmocka_unit_test(set_counters_past_last_value_leaves_direction_exhausted),
	    cmocka_unit_test(open_same_side_client_fails_eauth),
	    cmocka_unit_test(open_same_side_server_fails_eauth),
	    cmocka_unit_test(open_wrong_key_bit_anywhere_fails_eauth_and_wipes),
	    cmocka_unit_test(open_other_protocol_same_key_fails_eauth),
	    cmocka_unit_test(parse_fewer_than_four_bytes_asks_for_four),
	    cmocka_unit_test(parse_truncated_at_every_position_asks_for_more),
	    cmocka_unit_test(parse_two_frames_in_buffer_reports_first),
	    cmocka_unit_test(parse_length_below_20_fails_frame_short_for_good),
	    cmocka_unit_test(parse_length_20_to_24_asks_for_whole_frame),
	    cmocka_unit_test(parse_length_at_limit_asks_for_whole_frame),
	    cmocka_unit_test(parse_length_above_limit_fails_frame_long_for_good),
	    cmocka_unit_test(parse_length_above_lowered_limit_fails_frame_long),
	    cmocka_unit_test(parse_length_up_to_raised_limit_asks_for_whole_frame),
	    cmocka_unit_test(parse_wrong_type_fails_frame_type_for_good),
	    cmocka_unit_test(parse_type_unchecked_before_eight_bytes_asks_for_more),
	    cmocka_unit_test(parse_null_arguments_fail_einval),
	    cmocka_unit_test(open_truncated_at_every_position_fails_frame_partial),
	    cmocka_unit_test(open_frame_len_beyond_frame_fails_frame_partial),
	    cmocka_unit_test(open_flipped_bit_in_header_fails_framing_or_auth),
	    cmocka_unit_test(open_flipped_bit_in_ciphertext_or_tag_fails_eauth_and_wipes),
	    cmocka_unit_test(open_after_auth_failure_returns_stored_error),
	    cmocka_unit_test(open_replayed_frame_fails_eauth),
	    cmocka_unit_test(open_reordered_frames_fail_eauth),
	    cmocka_unit_test(open_dropped_frame_fails_eauth),
	    cmocka_unit_test(open_null_arguments_fail_einval),
	    cmocka_unit_test(new_bad_arguments_fail_and_leave_out_untouched),
	    cmocka_unit_test(new_defaults_send_16384_and_accept_1048576),
	    cmocka_unit_test(protocol_names_each_protocol_round_trip),
	    cmocka_unit_test(protocol_from_unknown_name_fails_and_leaves_out_untouched),
	    cmocka_unit_test(key_size_each_protocol_returns_44_16_44),
	    cmocka_unit_test(set_limits_out_of_range_fails_and_changes_nothing),
	    cmocka_unit_test(set_limits_bounds_are_accepted_and_zero_keeps_values),
	    cmocka_unit_test(set_limits_send_frame_bounds_seal_payload),
	    cmocka_unit_test(lend_without_ciphers_seal_and_open_fail_estate_not_sticky),
	    cmocka_unit_test(lend_ciphers_across_protocols_and_roles_interoperate),
	    cmocka_unit_test(lend_take_and_give_keeps_counters_across_rekey),
	    cmocka_unit_test(lend_same_cipher_rekeys_without_allocating),
	    cmocka_unit_test(lend_same_contexts_back_are_not_keyed_again),
	    cmocka_unit_test(seal_from_two_parts_equals_sealing_the_whole),
	    cmocka_unit_test(lend_between_record_contexts_always_seals_with_own_key),
	    cmocka_unit_test(record_size_idle_context_fits_168_bytes),
	    cmocka_unit_test(new_hush_allocation_fails_at_every_k_returns_enomem_without_leak),
	    cmocka_unit_test(new_openssl_allocation_fails_at_every_k_returns_enomem_without_leak),
	    cmocka_unit_test(seal_openssl_allocation_fails_at_every_k_fails_ecrypto_for_good),
	    cmocka_unit_test(open_openssl_allocation_fails_at_every_k_fails_ecrypto_for_good),
	    cmocka_unit_test(records_make_no_hush_allocation),
	    cmocka_unit_test(records_within_an_epoch_make_no_openssl_allocation),
	    cmocka_unit_test(free_wipes_keys_and_counters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
