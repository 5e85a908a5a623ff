/*
 * The Noise Protocol Framework, revision 34, on OpenSSL 3: X25519, AES-256-GCM or
 * ChaCha20-Poly1305, SHA-256 and HMAC. Sans I/O. Section numbers refer to the spec.
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "common/common-internal.h"
#include "handshake/noise-internal.h"

/* ---- Primitives (section 4) ---- */

int hush__noise_dh_key(const uint8_t priv[NOISE_DHLEN], EVP_PKEY **key, uint8_t pub[NOISE_DHLEN])
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, NOISE_DHLEN);
	size_t len = NOISE_DHLEN;
	if (k == NULL || EVP_PKEY_get_raw_public_key(k, pub, &len) != 1 || len != NOISE_DHLEN) {
		EVP_PKEY_free(k);
		return HUSH_ECRYPTO;
	}
	*key = k;
	return 0;
}

int hush__noise_dh_public(const uint8_t priv[NOISE_DHLEN], uint8_t pub[NOISE_DHLEN])
{
	EVP_PKEY *k;
	HUSH_GUARD(hush__noise_dh_key(priv, &k, pub));
	EVP_PKEY_free(k);
	return 0;
}

/* DH(mine, pub). An all-zero result means pub was a low-order point: refused. */
static int dh(EVP_PKEY *mine, const uint8_t pub[NOISE_DHLEN], uint8_t out[NOISE_DHLEN])
{
	int rc = HUSH_ECRYPTO;
	EVP_PKEY *theirs = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pub, NOISE_DHLEN);
	EVP_PKEY_CTX *ctx = mine != NULL ? EVP_PKEY_CTX_new(mine, NULL) : NULL;
	size_t len = NOISE_DHLEN;
	if (ctx == NULL || theirs == NULL || EVP_PKEY_derive_init(ctx) != 1 ||
	    EVP_PKEY_derive_set_peer(ctx, theirs) != 1) {
		goto out;
	}
	/* OpenSSL itself refuses an all-zero X25519 result; either way it is an error. */
	if (EVP_PKEY_derive(ctx, out, &len) != 1 || len != NOISE_DHLEN) {
		rc = HUSH_EBADKEY;
		goto out;
	}
	static const uint8_t zero[NOISE_DHLEN];
	rc = CRYPTO_memcmp(out, zero, NOISE_DHLEN) == 0 ? HUSH_EBADKEY : 0;
out:
	if (rc != 0) {
		OPENSSL_cleanse(out, NOISE_DHLEN);
	}
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(theirs);
	return rc;
}

/*
 * A public key is checked once, when it is loaded, with a fixed private key: X25519
 * clamps every scalar to a multiple of the cofactor 8, so the result is all zero exactly
 * for the points of low order, whatever the private key.
 */
int hush__noise_dh_check_public(const uint8_t pub[NOISE_DHLEN])
{
	static const uint8_t fixed[NOISE_DHLEN] = {0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a,
						   0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a,
						   0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a,
						   0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a, 0x2a};
	uint8_t mine[NOISE_DHLEN];
	uint8_t out[NOISE_DHLEN];
	EVP_PKEY *k;
	HUSH_GUARD(hush__noise_dh_key(fixed, &k, mine));
	int rc = dh(k, pub, out);
	EVP_PKEY_free(k);
	OPENSSL_cleanse(out, sizeof(out));
	return rc;
}

static int hash2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
		 uint8_t out[NOISE_HASHLEN])
{
	const struct hush_algs *algs;
	HUSH_GUARD(hush__algs_get(&algs));
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md != NULL && EVP_DigestInit_ex2(md, algs->sha256, NULL) &&
		 EVP_DigestUpdate(md, a, alen) && (blen == 0 || EVP_DigestUpdate(md, b, blen)) &&
		 EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
	return ok ? 0 : HUSH_ECRYPTO;
}

/* HMAC-SHA256(key, a || b) on ctx, an HMAC context re-keyed for each call. */
static int hmac(EVP_MAC_CTX *ctx, const uint8_t key[NOISE_HASHLEN], const uint8_t *a,
		size_t alen, const uint8_t *b, size_t blen, uint8_t out[NOISE_HASHLEN])
{
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};
	size_t len = 0;
	int ok = EVP_MAC_init(ctx, key, NOISE_HASHLEN, params) == 1 &&
		 (alen == 0 || EVP_MAC_update(ctx, a, alen) == 1) &&
		 (blen == 0 || EVP_MAC_update(ctx, b, blen) == 1) &&
		 EVP_MAC_final(ctx, out, &len, NOISE_HASHLEN) == 1 && len == NOISE_HASHLEN;
	return ok ? 0 : HUSH_ECRYPTO;
}

/* Section 4.3 HKDF(chaining_key, input_key_material, num_outputs), 2 or 3 outputs. */
static int hkdf(const uint8_t ck[NOISE_HASHLEN], const uint8_t *ikm, size_t ikm_len,
		uint8_t out1[NOISE_HASHLEN], uint8_t out2[NOISE_HASHLEN],
		uint8_t out3[NOISE_HASHLEN])
{
	static const uint8_t one = 1, two = 2, three = 3;
	const struct hush_algs *algs;
	HUSH_GUARD(hush__algs_get(&algs));
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(algs->hmac);
	if (ctx == NULL) {
		return HUSH_ECRYPTO;
	}
	uint8_t temp_key[NOISE_HASHLEN];
	int rc = hmac(ctx, ck, ikm, ikm_len, NULL, 0, temp_key);
	if (rc == 0) {
		rc = hmac(ctx, temp_key, &one, 1, NULL, 0, out1);
	}
	if (rc == 0) {
		rc = hmac(ctx, temp_key, out1, NOISE_HASHLEN, &two, 1, out2);
	}
	if (rc == 0 && out3 != NULL) {
		rc = hmac(ctx, temp_key, out2, NOISE_HASHLEN, &three, 1, out3);
	}
	EVP_MAC_CTX_free(ctx);
	OPENSSL_cleanse(temp_key, sizeof(temp_key));
	return rc;
}

/* ---- CipherState (section 5.1) ---- */

/* Section 12: AESGCM's nonce is 4 zero bytes and n big-endian; ChaChaPoly's is 4 zero
 * bytes and n little-endian. */
static void nonce_of(const struct noise_cipherstate *cs, uint8_t nonce[12])
{
	memset(nonce, 0, 12);
	for (unsigned i = 0; i < 8; i++) {
		uint8_t b = (uint8_t)(cs->n >> (8 * i));
		if (cs->cipher == NOISE_AESGCM) {
			nonce[11 - i] = b;
		} else {
			nonce[4 + i] = b;
		}
	}
}

static int aead(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len, const uint8_t *in,
		size_t len, uint8_t *out, int enc)
{
	/* Section 5.1: n = 2^64 - 1 is reserved; refuse it rather than reuse a nonce. */
	if (cs->n == UINT64_MAX) {
		return HUSH_ECOUNTER;
	}
	if (!enc && len < NOISE_TAGLEN) {
		return HUSH_EHANDSHAKE;
	}
	size_t plen = enc ? len : len - NOISE_TAGLEN;
	uint8_t nonce[12];
	nonce_of(cs, nonce);
	const struct hush_algs *algs;
	HUSH_GUARD(hush__algs_get(&algs));
	const EVP_CIPHER *c = cs->cipher == NOISE_AESGCM ? algs->aes256gcm : algs->chacha20poly1305;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n = 0;
	int rc = HUSH_ECRYPTO;
	if (ctx == NULL || !EVP_CipherInit_ex(ctx, c, NULL, cs->k, nonce, enc) ||
	    (ad_len > 0 && !EVP_CipherUpdate(ctx, NULL, &n, ad, (int)ad_len)) ||
	    (plen > 0 && !EVP_CipherUpdate(ctx, out, &n, in, (int)plen))) {
		goto out;
	}
	if (enc) {
		if (EVP_CipherFinal_ex(ctx, out + plen, &n) &&
		    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, NOISE_TAGLEN, out + plen)) {
			rc = 0;
		}
	} else {
		if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, NOISE_TAGLEN,
					 (void *)(in + plen))) {
			goto out;
		}
		rc = EVP_CipherFinal_ex(ctx, out + plen, &n) > 0 ? 0 : HUSH_EHANDSHAKE;
		if (rc != 0) {
			OPENSSL_cleanse(out, plen);
		}
	}
out:
	EVP_CIPHER_CTX_free(ctx);
	if (rc == 0) {
		cs->n++;
	}
	return rc;
}

/* Section 5.1 EncryptWithAd (enc 1) and DecryptWithAd (enc 0): without a key the bytes
 * pass through unchanged. */
static int cs_crypt(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
		    const uint8_t *in, size_t len, uint8_t *out, int enc)
{
	if (!cs->has_key) {
		if (len > 0) {
			memmove(out, in, len);
		}
		return 0;
	}
	return aead(cs, ad, ad_len, in, len, out, enc);
}

int hush__noise_cs_encrypt(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
			   const uint8_t *in, size_t len, uint8_t *out)
{
	return cs_crypt(cs, ad, ad_len, in, len, out, 1);
}

int hush__noise_cs_decrypt(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
			   const uint8_t *in, size_t len, uint8_t *out)
{
	return cs_crypt(cs, ad, ad_len, in, len, out, 0);
}

/* ---- SymmetricState (section 5.2) ---- */

static int mix_hash(struct noise_handshake *hs, const uint8_t *data, size_t len)
{
	return hash2(hs->h, NOISE_HASHLEN, data, len, hs->h);
}

static void initialize_key(struct noise_handshake *hs, const uint8_t k[NOISE_KEYLEN])
{
	memcpy(hs->cs.k, k, NOISE_KEYLEN);
	hs->cs.n = 0;
	hs->cs.has_key = true;
}

static int mix_key(struct noise_handshake *hs, const uint8_t *ikm, size_t len)
{
	uint8_t ck[NOISE_HASHLEN], k[NOISE_HASHLEN];
	int rc = hkdf(hs->ck, ikm, len, ck, k, NULL);
	if (rc == 0) {
		memcpy(hs->ck, ck, NOISE_HASHLEN);
		initialize_key(hs, k);
	}
	OPENSSL_cleanse(ck, sizeof(ck));
	OPENSSL_cleanse(k, sizeof(k));
	return rc;
}

static int mix_key_and_hash(struct noise_handshake *hs, const uint8_t *ikm, size_t len)
{
	uint8_t ck[NOISE_HASHLEN], th[NOISE_HASHLEN], k[NOISE_HASHLEN];
	int rc = hkdf(hs->ck, ikm, len, ck, th, k);
	if (rc == 0) {
		memcpy(hs->ck, ck, NOISE_HASHLEN);
		rc = mix_hash(hs, th, NOISE_HASHLEN);
		initialize_key(hs, k);
	}
	OPENSSL_cleanse(ck, sizeof(ck));
	OPENSSL_cleanse(th, sizeof(th));
	OPENSSL_cleanse(k, sizeof(k));
	return rc;
}

static int encrypt_and_hash(struct noise_handshake *hs, const uint8_t *in, size_t len, uint8_t *out,
			    size_t *out_len)
{
	HUSH_GUARD(hush__noise_cs_encrypt(&hs->cs, hs->h, NOISE_HASHLEN, in, len, out));
	*out_len = len + (hs->cs.has_key ? NOISE_TAGLEN : 0);
	return mix_hash(hs, out, *out_len);
}

static int decrypt_and_hash(struct noise_handshake *hs, const uint8_t *in, size_t len, uint8_t *out,
			    size_t *out_len)
{
	uint8_t h[NOISE_HASHLEN];
	memcpy(h, hs->h, NOISE_HASHLEN);
	HUSH_GUARD(mix_hash(hs, in, len));
	int rc = hush__noise_cs_decrypt(&hs->cs, h, NOISE_HASHLEN, in, len, out);
	*out_len = len - (hs->cs.has_key ? NOISE_TAGLEN : 0);
	return rc;
}

/* ---- HandshakeState (section 5.3) and the patterns (sections 7, 9) ---- */

enum token { T_E, T_S, T_EE, T_ES, T_SE, T_SS, T_PSK, T_END };

/* The message patterns, one row per message, initiator first. */
static const uint8_t *pattern_message(enum noise_pattern p, unsigned i)
{
	static const uint8_t xx[3][4] = {{T_E, T_END}, {T_E, T_EE, T_S, T_ES}, {T_S, T_SE, T_END}};
	static const uint8_t xxpsk3[3][4] = {
	    {T_E, T_END}, {T_E, T_EE, T_S, T_ES}, {T_S, T_SE, T_PSK, T_END}};
	static const uint8_t nnpsk0[2][4] = {{T_PSK, T_E, T_END}, {T_E, T_EE, T_END}};
	switch (p) {
	case NOISE_XX:
		return i < 3 ? xx[i] : NULL;
	case NOISE_XXPSK3:
		return i < 3 ? xxpsk3[i] : NULL;
	case NOISE_NNPSK0:
		return i < 2 ? nnpsk0[i] : NULL;
	}
	return NULL;
}

/* Tokens in a row of 4 that has no T_END are all used. */
static unsigned row_len(const uint8_t *row)
{
	unsigned n = 0;
	while (n < 4 && row[n] != T_END) {
		n++;
	}
	return n;
}

unsigned hush__noise_message_count(enum noise_pattern pattern)
{
	return pattern == NOISE_NNPSK0 ? 2 : 3;
}

bool hush__noise_my_turn(const struct noise_handshake *hs)
{
	/* The initiator writes the even messages. */
	return !hush__noise_done(hs) && ((hs->msg_index % 2 == 0) == hs->initiator);
}

bool hush__noise_done(const struct noise_handshake *hs)
{
	return hs->msg_index >= hush__noise_message_count((enum noise_pattern)hs->pattern);
}

const char *hush__noise_protocol_name(enum noise_pattern pattern, enum noise_cipher cipher)
{
	/* Section 8: pattern, then DH, cipher and hash functions. */
	static const char *const names[3][2] = {
	    {"Noise_XX_25519_AESGCM_SHA256", "Noise_XX_25519_ChaChaPoly_SHA256"},
	    {"Noise_XXpsk3_25519_AESGCM_SHA256", "Noise_XXpsk3_25519_ChaChaPoly_SHA256"},
	    {"Noise_NNpsk0_25519_AESGCM_SHA256", "Noise_NNpsk0_25519_ChaChaPoly_SHA256"},
	};
	if ((unsigned)pattern > NOISE_NNPSK0 || (unsigned)cipher > NOISE_CHACHAPOLY) {
		return NULL;
	}
	return names[pattern][cipher];
}

static int init_state(struct noise_handshake *hs, enum noise_pattern pattern,
		      enum noise_cipher cipher, bool initiator, const uint8_t *prologue,
		      size_t prologue_len, const uint8_t *s_priv, EVP_PKEY *s_key,
		      const uint8_t *psk);

int hush__noise_init(struct noise_handshake *hs, enum noise_pattern pattern, enum noise_cipher cipher,
	       bool initiator, const uint8_t *prologue, size_t prologue_len, const uint8_t *s_priv,
	       EVP_PKEY *s_key, const uint8_t *psk)
{
	memset(hs, 0, sizeof(*hs));
	int rc = init_state(hs, pattern, cipher, initiator, prologue, prologue_len, s_priv, s_key,
			    psk);
	if (rc != 0) {
		hush__noise_wipe(hs);
	}
	return rc;
}

static int init_state(struct noise_handshake *hs, enum noise_pattern pattern,
		      enum noise_cipher cipher, bool initiator, const uint8_t *prologue,
		      size_t prologue_len, const uint8_t *s_priv, EVP_PKEY *s_key,
		      const uint8_t *psk)
{
	const char *name = hush__noise_protocol_name(pattern, cipher);
	HUSH_ENSURE(name != NULL, HUSH_EINVAL);
	bool needs_s = pattern != NOISE_NNPSK0;
	bool needs_psk = pattern != NOISE_XX;
	HUSH_ENSURE((s_priv != NULL) == needs_s && (psk != NULL) == needs_psk, HUSH_EINVAL);
	hs->pattern = (uint8_t)pattern;
	hs->initiator = initiator;
	hs->cs.cipher = (uint8_t)cipher;
	/* InitializeSymmetric: names over 32 bytes are hashed. */
	size_t nl = strlen(name);
	if (nl <= NOISE_HASHLEN) {
		memcpy(hs->h, name, nl);
	} else {
		HUSH_GUARD(hash2((const uint8_t *)name, nl, NULL, 0, hs->h));
	}
	memcpy(hs->ck, hs->h, NOISE_HASHLEN);
	HUSH_GUARD(mix_hash(hs, prologue, prologue_len));
	if (needs_s) {
		memcpy(hs->s_priv, s_priv, NOISE_DHLEN);
		if (s_key != NULL) {
			size_t len = NOISE_DHLEN;
			HUSH_ENSURE(EVP_PKEY_up_ref(s_key) == 1, HUSH_ECRYPTO);
			hs->s_key = s_key;
			HUSH_ENSURE(EVP_PKEY_get_raw_public_key(s_key, hs->s_pub, &len) == 1 &&
					len == NOISE_DHLEN,
				    HUSH_ECRYPTO);
		} else {
			HUSH_GUARD(hush__noise_dh_key(s_priv, &hs->s_key, hs->s_pub));
		}
		hs->has_s = true;
	}
	if (needs_psk) {
		memcpy(hs->psk, psk, NOISE_PSKLEN);
		hs->has_psk = true;
	}
	return 0;
}

void hush__noise_set_ephemeral(struct noise_handshake *hs, const uint8_t e_priv[NOISE_DHLEN])
{
	memcpy(hs->e_priv, e_priv, NOISE_DHLEN);
	hs->fixed_e = true;
}

void hush__noise_wipe(struct noise_handshake *hs)
{
	/* EVP_PKEY_free wipes the key material it frees. */
	EVP_PKEY_free(hs->s_key);
	EVP_PKEY_free(hs->e_key);
	OPENSSL_cleanse(hs, sizeof(*hs));
}

/* The DH of a token, from this side's point of view (section 7.1: the first letter is
 * the initiator's key, the second the responder's). */
static int token_dh(struct noise_handshake *hs, enum token t)
{
	EVP_PKEY *priv;
	const uint8_t *pub;
	bool ok;
	switch (t) {
	case T_EE:
		priv = hs->e_key, pub = hs->re, ok = hs->has_e && hs->has_re;
		break;
	case T_ES:
	case T_SE:
		/* es: the initiator's e with the responder's s; se: the initiator's s with
		 * the responder's e. So this side uses its e exactly when it is the
		 * initiator of es or the responder of se. */
		if ((t == T_ES) == hs->initiator) {
			priv = hs->e_key, pub = hs->rs, ok = hs->has_e && hs->has_rs;
		} else {
			priv = hs->s_key, pub = hs->re, ok = hs->has_s && hs->has_re;
		}
		break;
	default:
		return HUSH_EINVAL;
	}
	HUSH_ENSURE(ok, HUSH_ESTATE);
	uint8_t shared[NOISE_DHLEN];
	int rc = dh(priv, pub, shared);
	if (rc == 0) {
		rc = mix_key(hs, shared, NOISE_DHLEN);
	}
	OPENSSL_cleanse(shared, sizeof(shared));
	return rc;
}

/* Bytes a token adds to a message, given whether a key is in place when it comes. */
static size_t token_size(enum token t, bool has_key)
{
	switch (t) {
	case T_E:
		return NOISE_DHLEN;
	case T_S:
		return NOISE_DHLEN + (has_key ? NOISE_TAGLEN : 0);
	default:
		return 0;
	}
}

/* Whether a key is in place after the token (section 5.2: MixKey and MixKeyAndHash set
 * one; with a PSK, so does every e, section 9.2). */
static bool keyed_after(enum token t, bool has_key, bool has_psk)
{
	return has_key || t == T_EE || t == T_ES || t == T_SE || t == T_SS || t == T_PSK ||
	       (t == T_E && has_psk);
}

size_t hush__noise_message_size(const struct noise_handshake *hs, size_t payload_len)
{
	const uint8_t *row = pattern_message((enum noise_pattern)hs->pattern, hs->msg_index);
	if (row == NULL) {
		return 0;
	}
	bool has_key = hs->cs.has_key;
	size_t size = 0;
	for (unsigned i = 0; i < row_len(row); i++) {
		size += token_size((enum token)row[i], has_key);
		has_key = keyed_after((enum token)row[i], has_key, hs->has_psk);
	}
	return size + payload_len + (has_key ? NOISE_TAGLEN : 0);
}

/*
 * Section 5.3 WriteMessage. The tokens run on a copy of the state, which replaces the
 * state only once the whole message is written: a failure leaves the state as it was,
 * marked failed.
 */
int hush__noise_write_message(struct noise_handshake *hs, const uint8_t *payload, size_t payload_len,
			uint8_t *out, size_t cap, size_t *out_len)
{
	if (hs->err != 0) {
		return hs->err;
	}
	HUSH_ENSURE(hush__noise_my_turn(hs), HUSH_ESTATE);
	HUSH_ENSURE(payload_len <= NOISE_MAX_MSG, HUSH_EINVAL);
	size_t size = hush__noise_message_size(hs, payload_len);
	HUSH_ENSURE(size <= NOISE_MAX_MSG, HUSH_EINVAL);
	HUSH_ENSURE(cap >= size, HUSH_ENOSPACE);
	const uint8_t *row = pattern_message((enum noise_pattern)hs->pattern, hs->msg_index);
	struct noise_handshake next = *hs;
	size_t off = 0, n = 0;
	int rc = 0;
	for (unsigned i = 0; i < row_len(row) && rc == 0; i++) {
		switch (row[i]) {
		case T_E: /* e */
			if (!next.fixed_e && RAND_bytes(next.e_priv, NOISE_DHLEN) != 1) {
				rc = HUSH_ECRYPTO;
				break;
			}
			rc = hush__noise_dh_key(next.e_priv, &next.e_key, next.e_pub);
			if (rc == 0) {
				next.has_e = true;
				memcpy(out + off, next.e_pub, NOISE_DHLEN);
				off += NOISE_DHLEN;
				rc = mix_hash(&next, next.e_pub, NOISE_DHLEN);
			}
			/* Section 9.2: with a PSK, e also goes into the key. */
			if (rc == 0 && next.has_psk) {
				rc = mix_key(&next, next.e_pub, NOISE_DHLEN);
			}
			break;
		case T_S: /* s */
			rc = encrypt_and_hash(&next, next.s_pub, NOISE_DHLEN, out + off, &n);
			off += n;
			break;
		case T_PSK: /* psk */
			rc = mix_key_and_hash(&next, next.psk, NOISE_PSKLEN);
			break;
		default: /* ee, es, se, ss */
			rc = token_dh(&next, (enum token)row[i]);
			break;
		}
	}
	if (rc == 0) {
		rc = encrypt_and_hash(&next, payload, payload_len, out + off, &n);
		off += n;
	}
	if (rc == 0) {
		next.msg_index++;
		*hs = next;
		*out_len = off;
	} else {
		/* An ephemeral key made for this message goes with it. */
		if (next.e_key != hs->e_key) {
			EVP_PKEY_free(next.e_key);
		}
		hs->err = rc;
		OPENSSL_cleanse(out, off);
	}
	OPENSSL_cleanse(&next, sizeof(next));
	return rc;
}

/* Section 5.3 ReadMessage, on a copy of the state like hush__noise_write_message(). */
int hush__noise_read_message(struct noise_handshake *hs, const uint8_t *msg, size_t len, uint8_t *payload,
		       size_t cap, size_t *payload_len)
{
	if (hs->err != 0) {
		return hs->err;
	}
	HUSH_ENSURE(!hush__noise_done(hs) && !hush__noise_my_turn(hs), HUSH_ESTATE);
	const uint8_t *row = pattern_message((enum noise_pattern)hs->pattern, hs->msg_index);
	struct noise_handshake next = *hs;
	size_t off = 0, n = 0;
	int rc = len > NOISE_MAX_MSG ? HUSH_EHANDSHAKE : 0;
	for (unsigned i = 0; i < row_len(row) && rc == 0; i++) {
		switch (row[i]) {
		case T_E: /* e */
			if (len - off < NOISE_DHLEN) {
				rc = HUSH_EHANDSHAKE;
				break;
			}
			memcpy(next.re, msg + off, NOISE_DHLEN);
			next.has_re = true;
			off += NOISE_DHLEN;
			rc = mix_hash(&next, next.re, NOISE_DHLEN);
			if (rc == 0 && next.has_psk) {
				rc = mix_key(&next, next.re, NOISE_DHLEN);
			}
			break;
		case T_S: { /* s */
			size_t slen = token_size(T_S, next.cs.has_key);
			if (len - off < slen) {
				rc = HUSH_EHANDSHAKE;
				break;
			}
			rc = decrypt_and_hash(&next, msg + off, slen, next.rs, &n);
			if (rc == 0) {
				next.has_rs = true;
			}
			off += slen;
			break;
		}
		case T_PSK: /* psk */
			rc = mix_key_and_hash(&next, next.psk, NOISE_PSKLEN);
			break;
		default: /* ee, es, se, ss */
			rc = token_dh(&next, (enum token)row[i]);
			break;
		}
	}
	size_t plen = 0;
	if (rc == 0) {
		size_t rest = len - off;
		size_t tag = next.cs.has_key ? NOISE_TAGLEN : 0;
		if (rest < tag) {
			rc = HUSH_EHANDSHAKE;
		} else if (rest - tag > cap) {
			rc = HUSH_ENOSPACE;
		} else {
			rc = decrypt_and_hash(&next, msg + off, rest, payload, &plen);
		}
	}
	if (rc == 0) {
		next.msg_index++;
		*hs = next;
		*payload_len = plen;
	} else {
		hs->err = rc;
	}
	OPENSSL_cleanse(&next, sizeof(next));
	return rc;
}

int hush__noise_split(struct noise_handshake *hs, struct noise_cipherstate *i2r,
		struct noise_cipherstate *r2i)
{
	HUSH_ENSURE(hs->err == 0 && hush__noise_done(hs), HUSH_ESTATE);
	uint8_t k1[NOISE_HASHLEN], k2[NOISE_HASHLEN];
	HUSH_GUARD(hkdf(hs->ck, NULL, 0, k1, k2, NULL));
	memset(i2r, 0, sizeof(*i2r));
	memset(r2i, 0, sizeof(*r2i));
	memcpy(i2r->k, k1, NOISE_KEYLEN);
	memcpy(r2i->k, k2, NOISE_KEYLEN);
	i2r->has_key = r2i->has_key = true;
	i2r->cipher = r2i->cipher = hs->cs.cipher;
	OPENSSL_cleanse(k1, sizeof(k1));
	OPENSSL_cleanse(k2, sizeof(k2));
	return 0;
}
