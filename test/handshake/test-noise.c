/*
 * Tests for src/handshake/noise.c: the public Noise vectors (flynn/noise, Debian
 * golang-github-flynn-noise-dev) for every protocol hush supports, and the negative set:
 * wrong PSK, tampered and truncated messages at every step, low-order keys, turn order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "handshake/noise-internal.h"
#include "testlib.h"

#define VECTORS HUSH_SRCDIR "/test/data/noise-vectors.txt"
#define NVEC	32

struct vector {
	char name[64];
	uint8_t init_static[32], resp_static[32], init_e[32], resp_e[32], psk[32];
	uint8_t prologue[64];
	long prologue_len;
	int has_static, has_psk;
	int nmsg;
	uint8_t payload[8][128];
	long payload_len[8];
	uint8_t ct[8][256];
	long ct_len[8];
};

static int load_vectors(struct vector *v, int max)
{
	FILE *f = fopen(VECTORS, "r");
	assert_non_null(f);
	char line[1024];
	int n = -1;
	const char *key, *val;
	while (testlib_next_kv(f, line, sizeof(line), &key, &val)) {
		if (strcmp(key, "handshake") == 0) {
			assert_true(++n < max);
			memset(&v[n], 0, sizeof(v[n]));
			snprintf(v[n].name, sizeof(v[n].name), "%s", val);
			continue;
		}
		struct vector *c = &v[n];
		int idx;
		char kind[16];
		if (strcmp(key, "init_static") == 0) {
			assert_int_equal(testlib_unhex(val, c->init_static, 32), 32);
			c->has_static = 1;
		} else if (strcmp(key, "resp_static") == 0) {
			assert_int_equal(testlib_unhex(val, c->resp_static, 32), 32);
		} else if (strcmp(key, "gen_init_ephemeral") == 0) {
			assert_int_equal(testlib_unhex(val, c->init_e, 32), 32);
		} else if (strcmp(key, "gen_resp_ephemeral") == 0) {
			assert_int_equal(testlib_unhex(val, c->resp_e, 32), 32);
		} else if (strcmp(key, "prologue") == 0) {
			c->prologue_len = testlib_unhex(val, c->prologue, sizeof(c->prologue));
			assert_true(c->prologue_len >= 0);
		} else if (strcmp(key, "preshared_key") == 0) {
			assert_int_equal(testlib_unhex(val, c->psk, 32), 32);
			c->has_psk = 1;
		} else if (sscanf(key, "msg_%d_%15s", &idx, kind) == 2 && idx < 8) {
			if (strcmp(kind, "payload") == 0) {
				c->payload_len[idx] = testlib_unhex(val, c->payload[idx], 128);
				assert_true(c->payload_len[idx] >= 0);
			} else {
				c->ct_len[idx] = testlib_unhex(val, c->ct[idx], 256);
				assert_true(c->ct_len[idx] > 0);
				if (idx + 1 > c->nmsg) {
					c->nmsg = idx + 1;
				}
			}
		}
	}
	fclose(f);
	return n + 1;
}

static void protocol_of(const char *name, enum noise_pattern *p, enum noise_cipher *c)
{
	*p = strstr(name, "_XXpsk3_")	? NOISE_XXPSK3
	     : strstr(name, "_NNpsk0_") ? NOISE_NNPSK0
					: NOISE_XX;
	*c = strstr(name, "ChaChaPoly") ? NOISE_CHACHAPOLY : NOISE_AESGCM;
}

static void start(const struct vector *v, struct noise_handshake *i, struct noise_handshake *r)
{
	enum noise_pattern p;
	enum noise_cipher c;
	protocol_of(v->name, &p, &c);
	size_t pl = (size_t)v->prologue_len;
	assert_int_equal(hush__noise_init(i, p, c, true, v->prologue, pl,
				    v->has_static ? v->init_static : NULL, NULL,
				    v->has_psk ? v->psk : NULL),
			 0);
	assert_int_equal(hush__noise_init(r, p, c, false, v->prologue, pl,
				    v->has_static ? v->resp_static : NULL, NULL,
				    v->has_psk ? v->psk : NULL),
			 0);
	hush__noise_set_ephemeral(i, v->init_e);
	hush__noise_set_ephemeral(r, v->resp_e);
}

static void noise_vectors_match_flynn_noise(void **state)
{
	(void)state;
	static struct vector v[NVEC];
	int n = load_vectors(v, NVEC);
	/* Six protocols, four blocks each: with and without prologue and payloads. */
	assert_int_equal(n, 24);
	for (int k = 0; k < n; k++) {
		struct noise_handshake i, r;
		struct noise_cipherstate i2r[2], r2i[2];
		start(&v[k], &i, &r);
		int hs_msgs =
		    (int)hush__noise_message_count(strstr(v[k].name, "NNpsk0") ? NOISE_NNPSK0 : NOISE_XX);
		for (int m = 0; m < v[k].nmsg; m++) {
			/* Handshake messages alternate from the initiator; so do transport
			 * messages, the initiator again sending first (as flynn/noise's vectors are
			 * made). */
			bool from_init = m < hs_msgs ? m % 2 == 0 : (m - hs_msgs) % 2 == 0;
			uint8_t out[256], pt[256];
			size_t out_len = 0, pt_len = 0;
			if (m < hs_msgs) {
				struct noise_handshake *w = from_init ? &i : &r;
				struct noise_handshake *rd = from_init ? &r : &i;
				assert_true(hush__noise_my_turn(w));
				assert_int_equal(hush__noise_write_message(w, v[k].payload[m],
								     (size_t)v[k].payload_len[m],
								     out, sizeof(out), &out_len),
						 0);
				assert_int_equal(
				    hush__noise_read_message(rd, out, out_len, pt, sizeof(pt), &pt_len),
				    0);
				if (m == hs_msgs - 1) {
					assert_true(hush__noise_done(&i) && hush__noise_done(&r));
					assert_int_equal(hush__noise_split(&i, &i2r[0], &r2i[0]), 0);
					assert_int_equal(hush__noise_split(&r, &i2r[1], &r2i[1]), 0);
					/* Both ends hash the same transcript. */
					assert_memory_equal(i.h, r.h, NOISE_HASHLEN);
				}
			} else {
				struct noise_cipherstate *enc = from_init ? &i2r[0] : &r2i[1];
				struct noise_cipherstate *dec = from_init ? &i2r[1] : &r2i[0];
				assert_int_equal(hush__noise_cs_encrypt(enc, NULL, 0, v[k].payload[m],
								  (size_t)v[k].payload_len[m], out),
						 0);
				out_len = (size_t)v[k].payload_len[m] + NOISE_TAGLEN;
				assert_int_equal(hush__noise_cs_decrypt(dec, NULL, 0, out, out_len, pt),
						 0);
				pt_len = out_len - NOISE_TAGLEN;
			}
			assert_int_equal(out_len, v[k].ct_len[m]);
			assert_memory_equal(out, v[k].ct[m], out_len);
			assert_int_equal(pt_len, v[k].payload_len[m]);
			assert_memory_equal(pt, v[k].payload[m], pt_len);
		}
		/* The responder learned the initiator's static key, and the reverse. */
		if (v[k].has_static) {
			uint8_t pub[32];
			assert_int_equal(hush__noise_dh_public(v[k].init_static, pub), 0);
			assert_memory_equal(r.rs, pub, 32);
		}
		hush__noise_wipe(&i);
		hush__noise_wipe(&r);
	}
}

static void noise_wrong_psk_fails_handshake(void **state)
{
	(void)state;
	static struct vector v[NVEC];
	assert_int_equal(load_vectors(v, NVEC), 24);
	for (int k = 0; k < 24; k++) {
		if (!v[k].has_psk) {
			continue;
		}
		struct noise_handshake i, r;
		start(&v[k], &i, &r);
		r.psk[0] ^= 1;
		uint8_t out[256], pt[256];
		size_t ol, pl;
		int rc = 0;
		for (int m = 0; m < 3 && rc == 0 && !hush__noise_done(&i); m++) {
			struct noise_handshake *w = m % 2 == 0 ? &i : &r;
			struct noise_handshake *rd = m % 2 == 0 ? &r : &i;
			assert_int_equal(hush__noise_write_message(w, NULL, 0, out, sizeof(out), &ol), 0);
			rc = hush__noise_read_message(rd, out, ol, pt, sizeof(pt), &pl);
		}
		assert_int_equal(rc, HUSH_EHANDSHAKE);
		hush__noise_wipe(&i);
		hush__noise_wipe(&r);
	}
}

/* Each message of an XX handshake, truncated at every length and with every byte
 * flipped, is refused, and the failure sticks. */
static void noise_tampered_or_truncated_messages_fail(void **state)
{
	(void)state;
	static struct vector v[NVEC];
	assert_int_equal(load_vectors(v, NVEC), 24);
	const struct vector *xx = NULL;
	for (int k = 0; k < 24 && xx == NULL; k++) {
		xx = strstr(v[k].name, "_XX_") ? &v[k] : NULL;
	}
	assert_non_null(xx);
	for (int m = 0; m < 3; m++) {
		/* Reach message m honestly, then spoil it. */
		for (int variant = 0; variant < 2; variant++) {
			size_t limit = 200;
			for (size_t pos = 0; pos < limit; pos++) {
				struct noise_handshake i, r;
				start(xx, &i, &r);
				uint8_t out[256], pt[256];
				size_t ol = 0, pl;
				for (int k = 0; k < m; k++) {
					struct noise_handshake *w = k % 2 == 0 ? &i : &r;
					struct noise_handshake *rd = k % 2 == 0 ? &r : &i;
					assert_int_equal(
					    hush__noise_write_message(w, NULL, 0, out, sizeof(out), &ol),
					    0);
					assert_int_equal(
					    hush__noise_read_message(rd, out, ol, pt, sizeof(pt), &pl),
					    0);
				}
				struct noise_handshake *w = m % 2 == 0 ? &i : &r;
				struct noise_handshake *rd = m % 2 == 0 ? &r : &i;
				assert_int_equal(
				    hush__noise_write_message(w, NULL, 0, out, sizeof(out), &ol), 0);
				limit = ol;
				if (pos >= ol) {
					hush__noise_wipe(&i);
					hush__noise_wipe(&r);
					break;
				}
				size_t len = ol;
				if (variant == 0) {
					out[pos] ^= 0x20;
				} else {
					len = pos;
				}
				int rc = hush__noise_read_message(rd, out, len, pt, sizeof(pt), &pl);
				if (m == 0) {
					/* Message 1 of XX is a bare ephemeral key: a flipped bit
					 * changes the key and is caught later; a truncated one is
					 * refused now. */
					if (variant == 1) {
						assert_int_equal(rc, HUSH_EHANDSHAKE);
					}
				} else {
					assert_true(rc == HUSH_EHANDSHAKE || rc == HUSH_EBADKEY);
					assert_int_equal(
					    hush__noise_read_message(rd, out, ol, pt, sizeof(pt), &pl),
					    rc);
				}
				hush__noise_wipe(&i);
				hush__noise_wipe(&r);
			}
		}
	}
}

static void noise_low_order_public_keys_are_refused(void **state)
{
	(void)state;
	/* Points of small order (0, 1, the two of order 8, p - 1, p, p + 1), and the same
	 * with the top bit set, which X25519 ignores. */
	const char *const *bad = testlib_low_order_x25519;
	static struct vector v[NVEC];
	assert_int_equal(load_vectors(v, NVEC), 24);
	for (size_t b = 0; b < TESTLIB_N_LOW_ORDER; b++) {
		struct noise_handshake i, r;
		int x = 0;
		while (strstr(v[x].name, "_XX_") == NULL) {
			x++;
		}
		start(&v[x], &i, &r);
		uint8_t out[256], pt[256];
		size_t ol, pl;
		assert_int_equal(hush__noise_write_message(&i, NULL, 0, out, sizeof(out), &ol), 0);
		assert_int_equal(hush__noise_read_message(&r, out, ol, pt, sizeof(pt), &pl), 0);
		assert_int_equal(hush__noise_write_message(&r, NULL, 0, out, sizeof(out), &ol), 0);
		/* Replace the responder's ephemeral key with a low-order point. */
		assert_int_equal(testlib_unhex(bad[b], out, 32), 32);
		assert_int_equal(hush__noise_read_message(&i, out, ol, pt, sizeof(pt), &pl),
				 HUSH_EBADKEY);
		hush__noise_wipe(&i);
		hush__noise_wipe(&r);
	}
}

static void noise_out_of_turn_calls_are_refused(void **state)
{
	(void)state;
	static struct vector v[NVEC];
	assert_int_equal(load_vectors(v, NVEC), 24);
	struct noise_handshake i, r;
	start(&v[0], &i, &r);
	uint8_t out[256], pt[256];
	size_t ol, pl;
	assert_int_equal(hush__noise_write_message(&r, NULL, 0, out, sizeof(out), &ol), HUSH_ESTATE);
	assert_int_equal(hush__noise_read_message(&i, out, 32, pt, sizeof(pt), &pl), HUSH_ESTATE);
	struct noise_cipherstate a, b;
	assert_int_equal(hush__noise_split(&i, &a, &b), HUSH_ESTATE);
	assert_int_equal(hush__noise_write_message(&i, NULL, 0, out, 10, &ol), HUSH_ENOSPACE);
	assert_int_equal(hush__noise_init(&i, NOISE_XX, NOISE_AESGCM, true, NULL, 0, NULL, NULL, NULL),
			 HUSH_EINVAL);
}

/* OpenSSL's own HKDF-SHA256 (EVP_KDF "HKDF"): the reference for the one hush builds on
 * its reused HMAC context. */
static void openssl_hkdf(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
			 const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
	EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
	assert_non_null(ctx);
	OSSL_PARAM params[5];
	size_t n = 0;
	params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
	if (salt_len > 0) {
		params[n++] =
		    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
	}
	params[n++] =
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
	params[n] = OSSL_PARAM_construct_end();
	assert_int_equal(EVP_KDF_derive(ctx, out, out_len, params), 1);
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
}

/* Every output length from 1 to three blocks, with salts empty, short, one block and
 * longer than a block (HMAC hashes such a key first), agrees with OpenSSL's HKDF. */
static void noise_hkdf_sha256_agrees_with_openssl_hkdf(void **state)
{
	(void)state;
	static const size_t salt_lens[] = {0, 13, 32, 64, 100};
	uint8_t salt[100], ikm[64], info[40], want[96], got[96];
	testlib_fill(salt, sizeof(salt), 11);
	testlib_fill(ikm, sizeof(ikm), 12);
	testlib_fill(info, sizeof(info), 13);
	struct noise_kit *kit;
	assert_int_equal(hush__noise_kit_take(&kit), 0);
	for (size_t s = 0; s < sizeof(salt_lens) / sizeof(salt_lens[0]); s++) {
		for (size_t len = 1; len <= sizeof(want); len++) {
			size_t ikm_len = 1 + len % sizeof(ikm), info_len = len % sizeof(info);
			openssl_hkdf(salt, salt_lens[s], ikm, ikm_len, info, info_len, want, len);
			memset(got, 0xee, sizeof(got));
			assert_int_equal(hush__noise_hkdf_sha256(kit, salt, salt_lens[s], ikm,
								 ikm_len, info, info_len, got, len),
					 0);
			assert_memory_equal(got, want, len);
			/* Nothing written past the requested length. */
			for (size_t k = len; k < sizeof(got); k++) {
				assert_int_equal(got[k], 0xee);
			}
		}
	}
	hush__noise_kit_give(kit);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(noise_vectors_match_flynn_noise),
	    cmocka_unit_test(noise_wrong_psk_fails_handshake),
	    cmocka_unit_test(noise_tampered_or_truncated_messages_fail),
	    cmocka_unit_test(noise_low_order_public_keys_are_refused),
	    cmocka_unit_test(noise_out_of_turn_calls_are_refused),
	    cmocka_unit_test(noise_hkdf_sha256_agrees_with_openssl_hkdf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
