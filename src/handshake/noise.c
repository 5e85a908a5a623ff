/*
 * The Noise Protocol Framework, revision 34, on OpenSSL 3: X25519, AES-256-GCM or
 * ChaCha20-Poly1305, SHA-256 and HMAC. Sans I/O. Section numbers refer to the spec.
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "common/common-internal.h"
#include "handshake/noise-internal.h"

/* ---- Kits (kit.c), lent for one call ---- */

static const uint8_t zero_key[NOISE_KEYLEN];

/* Lends hs a kit for one call unless its caller already did: *took says whether the
 * call must give it back (kit_leave). */
static int kit_enter(struct noise_handshake *hs, bool *took)
{
	*took = hs->kit == NULL;
	return *took ? hush__noise_kit_take(&hs->kit) : 0;
}

static void kit_leave(struct noise_handshake *hs, bool took)
{
	if (took) {
		hush__noise_kit_give(hs->kit);
		hs->kit = NULL;
	}
}

/* ---- Primitives (section 4) ---- */

/* The public key of an X25519 key object: read as a parameter, which copies 32 bytes
 * (EVP_PKEY_get_raw_public_key exports the whole key through a parameter builder, 5
 * allocations). */
static int pkey_public(const EVP_PKEY *k, uint8_t pub[NOISE_DHLEN])
{
	size_t len = 0;
	bool ok = EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub, NOISE_DHLEN,
						  &len) == 1 &&
		  len == NOISE_DHLEN;
	return ok ? 0 : HUSH_ECRYPTO;
}

/* A derivation context for key k (a reference is taken). */
static int derive_ctx(EVP_PKEY *k, EVP_PKEY_CTX **out)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(k, NULL);
	if (ctx == NULL || EVP_PKEY_derive_init(ctx) != 1) {
		EVP_PKEY_CTX_free(ctx);
		return HUSH_ECRYPTO;
	}
	*out = ctx;
	return 0;
}

/* The private key priv as an EVP_PKEY (*key, the caller's), and its public key. */
static int raw_key(const uint8_t priv[NOISE_DHLEN], EVP_PKEY **key, uint8_t pub[NOISE_DHLEN])
{
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, NOISE_DHLEN);
	if (k == NULL || pkey_public(k, pub) != 0) {
		EVP_PKEY_free(k);
		return HUSH_ECRYPTO;
	}
	*key = k;
	return 0;
}

int hush__noise_dh_ctx(const uint8_t priv[NOISE_DHLEN], EVP_PKEY_CTX **ctx,
		       uint8_t pub[NOISE_DHLEN])
{
	EVP_PKEY *k;
	HUSH_GUARD(raw_key(priv, &k, pub));
	int rc = derive_ctx(k, ctx);
	EVP_PKEY_free(k); /* the context keeps its own reference */
	return rc;
}

int hush__noise_dh_public(const uint8_t priv[NOISE_DHLEN], uint8_t pub[NOISE_DHLEN])
{
	EVP_PKEY *k;
	HUSH_GUARD(raw_key(priv, &k, pub));
	EVP_PKEY_free(k);
	return 0;
}

/*
 * DH(mine, pub) on a context ready to derive. The peer key is the kit's key object,
 * overwritten in place, and OpenSSL is told not to check it (its check makes a context
 * for it, 2 allocations): X25519 accepts every 32-byte string, and the one check that
 * matters follows, an all-zero result, which means pub was a low-order point: refused.
 */
static int dh(struct noise_kit *k, EVP_PKEY_CTX *mine, const uint8_t pub[NOISE_DHLEN],
	      uint8_t out[NOISE_DHLEN])
{
	int rc = HUSH_ECRYPTO;
	size_t len = NOISE_DHLEN;
	if (EVP_PKEY_set1_encoded_public_key(k->peer, pub, NOISE_DHLEN) != 1 ||
	    EVP_PKEY_derive_set_peer_ex(mine, k->peer, 0) != 1) {
		goto out;
	}
	/* OpenSSL itself refuses an all-zero X25519 result; either way it is an error. */
	if (EVP_PKEY_derive(mine, out, &len) != 1 || len != NOISE_DHLEN) {
		rc = HUSH_EBADKEY;
		goto out;
	}
	static const uint8_t zero[NOISE_DHLEN];
	rc = CRYPTO_memcmp(out, zero, NOISE_DHLEN) == 0 ? HUSH_EBADKEY : 0;
out:
	if (rc != 0) {
		OPENSSL_cleanse(out, NOISE_DHLEN);
	}
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
	EVP_PKEY_CTX *ctx;
	struct noise_kit *k;
	HUSH_GUARD(hush__noise_kit_take(&k));
	int rc = hush__noise_dh_ctx(fixed, &ctx, mine);
	if (rc == 0) {
		rc = dh(k, ctx, pub, out);
		EVP_PKEY_CTX_free(ctx);
	}
	hush__noise_kit_give(k);
	OPENSSL_cleanse(out, sizeof(out));
	return rc;
}

/* A fresh ephemeral key pair from the kit's generator (OpenSSL draws the private key
 * from its private random generator). */
static int generate(struct noise_kit *k, EVP_PKEY **key, uint8_t pub[NOISE_DHLEN])
{
	EVP_PKEY *e = NULL;
	if (EVP_PKEY_keygen(k->gen, &e) != 1 || pkey_public(e, pub) != 0) {
		EVP_PKEY_free(e);
		return HUSH_ECRYPTO;
	}
	*key = e;
	return 0;
}

static int hash2(struct noise_kit *k, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
		 uint8_t out[NOISE_HASHLEN])
{
	int ok = EVP_DigestInit_ex2(k->md, k->sha256, NULL) && EVP_DigestUpdate(k->md, a, alen) &&
		 (blen == 0 || EVP_DigestUpdate(k->md, b, blen)) &&
		 EVP_DigestFinal_ex(k->md, out, NULL);
	return ok ? 0 : HUSH_ECRYPTO;
}

/* HMAC-SHA256(key, a || b) on the kit's HMAC context. key NULL: the key of the previous
 * call again, which spares OpenSSL rebuilding the padded key blocks. */
static int hmac(struct noise_kit *k, const uint8_t key[NOISE_HASHLEN], const uint8_t *a,
		size_t alen, const uint8_t *b, size_t blen, uint8_t out[NOISE_HASHLEN])
{
	size_t len = 0;
	k->keyed = true;
	int ok = EVP_MAC_init(k->mac, key, key != NULL ? NOISE_HASHLEN : 0, NULL) == 1 &&
		 (alen == 0 || EVP_MAC_update(k->mac, a, alen) == 1) &&
		 (blen == 0 || EVP_MAC_update(k->mac, b, blen) == 1) &&
		 EVP_MAC_final(k->mac, out, &len, NOISE_HASHLEN) == 1 && len == NOISE_HASHLEN;
	return ok ? 0 : HUSH_ECRYPTO;
}

/* Section 4.3 HKDF(chaining_key, input_key_material, num_outputs), 2 or 3 outputs. */
static int hkdf(struct noise_kit *k, const uint8_t ck[NOISE_HASHLEN], const uint8_t *ikm,
		size_t ikm_len, uint8_t out1[NOISE_HASHLEN], uint8_t out2[NOISE_HASHLEN],
		uint8_t out3[NOISE_HASHLEN])
{
	static const uint8_t one = 1, two = 2, three = 3;
	uint8_t temp_key[NOISE_HASHLEN];
	int rc = hmac(k, ck, ikm, ikm_len, NULL, 0, temp_key);
	if (rc == 0) {
		rc = hmac(k, temp_key, &one, 1, NULL, 0, out1);
	}
	if (rc == 0) {
		rc = hmac(k, NULL, out1, NOISE_HASHLEN, &two, 1, out2);
	}
	if (rc == 0 && out3 != NULL) {
		rc = hmac(k, NULL, out2, NOISE_HASHLEN, &three, 1, out3);
	}
	OPENSSL_cleanse(temp_key, sizeof(temp_key));
	return rc;
}

int hush__noise_hkdf_sha256(struct noise_kit *k, const uint8_t *salt, size_t salt_len,
			    const uint8_t *ikm, size_t ikm_len, const uint8_t *info,
			    size_t info_len, uint8_t *out, size_t out_len)
{
	HUSH_ENSURE(out_len <= 255 * NOISE_HASHLEN, HUSH_EINVAL);
	/* RFC 5869 section 2.2, Extract: PRK = HMAC(salt, IKM); a missing salt is HashLen
	 * zero bytes. */
	uint8_t prk[NOISE_HASHLEN], t[NOISE_HASHLEN];
	size_t len = 0;
	k->keyed = true;
	int rc = EVP_MAC_init(k->mac, salt_len > 0 ? salt : zero_key,
			      salt_len > 0 ? salt_len : NOISE_HASHLEN, NULL) == 1 &&
			 EVP_MAC_update(k->mac, ikm, ikm_len) == 1 &&
			 EVP_MAC_final(k->mac, prk, &len, sizeof(prk)) == 1 && len == sizeof(prk)
		     ? 0
		     : HUSH_ECRYPTO;
	/* Section 2.3, Expand: T(i) = HMAC(PRK, T(i-1) || info || i), T(0) empty. */
	for (size_t off = 0, i = 1; rc == 0 && off < out_len; i++) {
		uint8_t ctr = (uint8_t)i;
		size_t tlen = i == 1 ? 0 : NOISE_HASHLEN;
		rc = EVP_MAC_init(k->mac, i == 1 ? prk : NULL, i == 1 ? sizeof(prk) : 0, NULL) ==
				 1 &&
			     (tlen == 0 || EVP_MAC_update(k->mac, t, tlen) == 1) &&
			     (info_len == 0 || EVP_MAC_update(k->mac, info, info_len) == 1) &&
			     EVP_MAC_update(k->mac, &ctr, 1) == 1 &&
			     EVP_MAC_final(k->mac, t, &len, sizeof(t)) == 1 && len == sizeof(t)
			 ? 0
			 : HUSH_ECRYPTO;
		size_t n = out_len - off < NOISE_HASHLEN ? out_len - off : NOISE_HASHLEN;
		if (rc == 0) {
			memcpy(out + off, t, n);
		}
		off += n;
	}
	if (rc != 0) {
		OPENSSL_cleanse(out, out_len);
	}
	OPENSSL_cleanse(prk, sizeof(prk));
	OPENSSL_cleanse(t, sizeof(t));
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

/* The cipher context is the kit's, keyed for this one call (no allocation). */
static int aead(struct noise_kit *k, struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
		const uint8_t *in, size_t len, uint8_t *out, int enc)
{
	/* Section 5.1: n = 2^64 - 1 is reserved; refuse it rather than reuse a nonce. */
	if (cs->n == UINT64_MAX) {
		return HUSH_ECOUNTER;
	}
	if (!enc && len < NOISE_TAGLEN) {
		return HUSH_EHANDSHAKE;
	}
	HUSH_ENSURE(cs->cipher <= NOISE_CHACHAPOLY, HUSH_EINVAL);
	size_t plen = enc ? len : len - NOISE_TAGLEN;
	uint8_t nonce[12];
	nonce_of(cs, nonce);
	EVP_CIPHER_CTX *ctx = k->aead[cs->cipher];
	int n = 0;
	int rc = HUSH_ECRYPTO;
	k->keyed = true;
	if (!EVP_CipherInit_ex(ctx, NULL, NULL, cs->k, nonce, enc) ||
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
	if (rc == 0) {
		cs->n++;
	}
	return rc;
}

/* Section 5.1 EncryptWithAd (enc 1) and DecryptWithAd (enc 0): without a key the bytes
 * pass through unchanged. */
static int cs_crypt(struct noise_kit *k, struct noise_cipherstate *cs, const uint8_t *ad,
		    size_t ad_len, const uint8_t *in, size_t len, uint8_t *out, int enc)
{
	if (!cs->has_key) {
		if (len > 0) {
			memmove(out, in, len);
		}
		return 0;
	}
	return aead(k, cs, ad, ad_len, in, len, out, enc);
}

/* For a cipher state used on its own (transport messages, in the tests): a kit for the
 * one call. */
static int cs_crypt_alone(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
			  const uint8_t *in, size_t len, uint8_t *out, int enc)
{
	struct noise_kit *k;
	HUSH_GUARD(hush__noise_kit_take(&k));
	int rc = cs_crypt(k, cs, ad, ad_len, in, len, out, enc);
	hush__noise_kit_give(k);
	return rc;
}

int hush__noise_cs_encrypt(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
			   const uint8_t *in, size_t len, uint8_t *out)
{
	return cs_crypt_alone(cs, ad, ad_len, in, len, out, 1);
}

int hush__noise_cs_decrypt(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
			   const uint8_t *in, size_t len, uint8_t *out)
{
	return cs_crypt_alone(cs, ad, ad_len, in, len, out, 0);
}

/* ---- SymmetricState (section 5.2) ---- */

static int mix_hash(struct noise_handshake *hs, const uint8_t *data, size_t len)
{
	return hash2(hs->kit, hs->h, NOISE_HASHLEN, data, len, hs->h);
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
	int rc = hkdf(hs->kit, hs->ck, ikm, len, ck, k, NULL);
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
	int rc = hkdf(hs->kit, hs->ck, ikm, len, ck, th, k);
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
	HUSH_GUARD(cs_crypt(hs->kit, &hs->cs, hs->h, NOISE_HASHLEN, in, len, out, 1));
	*out_len = len + (hs->cs.has_key ? NOISE_TAGLEN : 0);
	return mix_hash(hs, out, *out_len);
}

static int decrypt_and_hash(struct noise_handshake *hs, const uint8_t *in, size_t len, uint8_t *out,
			    size_t *out_len)
{
	uint8_t h[NOISE_HASHLEN];
	memcpy(h, hs->h, NOISE_HASHLEN);
	HUSH_GUARD(mix_hash(hs, in, len));
	int rc = cs_crypt(hs->kit, &hs->cs, h, NOISE_HASHLEN, in, len, out, 0);
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
		      size_t prologue_len, const uint8_t *s_priv, const EVP_PKEY_CTX *s_dh,
		      const uint8_t *psk);

int hush__noise_init(struct noise_handshake *hs, enum noise_pattern pattern,
		     enum noise_cipher cipher, bool initiator, const uint8_t *prologue,
		     size_t prologue_len, const uint8_t *s_priv, const EVP_PKEY_CTX *s_dh,
		     const uint8_t *psk)
{
	memset(hs, 0, sizeof(*hs));
	bool took;
	int rc = kit_enter(hs, &took);
	if (rc == 0) {
		rc = init_state(hs, pattern, cipher, initiator, prologue, prologue_len, s_priv,
				s_dh, psk);
		kit_leave(hs, took);
	}
	if (rc != 0) {
		hush__noise_wipe(hs);
	}
	return rc;
}

static int init_state(struct noise_handshake *hs, enum noise_pattern pattern,
		      enum noise_cipher cipher, bool initiator, const uint8_t *prologue,
		      size_t prologue_len, const uint8_t *s_priv, const EVP_PKEY_CTX *s_dh,
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
		HUSH_GUARD(hash2(hs->kit, (const uint8_t *)name, nl, NULL, 0, hs->h));
	}
	memcpy(hs->ck, hs->h, NOISE_HASHLEN);
	HUSH_GUARD(mix_hash(hs, prologue, prologue_len));
	if (needs_s) {
		if (s_dh != NULL) {
			/* Copying a context only reads it (and counts references atomically). */
			hs->s_dh = EVP_PKEY_CTX_dup(s_dh);
			HUSH_ENSURE(hs->s_dh != NULL, HUSH_ENOMEM);
			HUSH_GUARD(pkey_public(EVP_PKEY_CTX_get0_pkey(hs->s_dh), hs->s_pub));
		} else {
			HUSH_GUARD(hush__noise_dh_ctx(s_priv, &hs->s_dh, hs->s_pub));
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
	/* EVP_PKEY_free and EVP_PKEY_CTX_free wipe the key material they free. */
	EVP_PKEY_CTX_free(hs->s_dh);
	EVP_PKEY_CTX_free(hs->e_dh);
	EVP_PKEY_free(hs->e_key);
	OPENSSL_cleanse(hs, sizeof(*hs));
}

/* Frees the key objects a copy of the state made (a failed message): those it shares
 * with the state stay. */
static void drop_copy_keys(struct noise_handshake *next, const struct noise_handshake *hs)
{
	if (next->e_dh != hs->e_dh) {
		EVP_PKEY_CTX_free(next->e_dh);
	}
	if (next->e_key != hs->e_key) {
		EVP_PKEY_free(next->e_key);
	}
}

/* The DH of a token, from this side's point of view (section 7.1: the first letter is
 * the initiator's key, the second the responder's). The ephemeral key gets its
 * derivation context at its first DH, kept for the second. */
static int token_dh(struct noise_handshake *hs, enum token t)
{
	bool use_e;
	const uint8_t *pub;
	bool ok;
	switch (t) {
	case T_EE:
		use_e = true, pub = hs->re, ok = hs->has_e && hs->has_re;
		break;
	case T_ES:
	case T_SE:
		/* es: the initiator's e with the responder's s; se: the initiator's s with
		 * the responder's e. So this side uses its e exactly when it is the
		 * initiator of es or the responder of se. */
		if ((t == T_ES) == hs->initiator) {
			use_e = true, pub = hs->rs, ok = hs->has_e && hs->has_rs;
		} else {
			use_e = false, pub = hs->re, ok = hs->has_s && hs->has_re;
		}
		break;
	default:
		return HUSH_EINVAL;
	}
	HUSH_ENSURE(ok, HUSH_ESTATE);
	if (use_e && hs->e_dh == NULL) {
		HUSH_GUARD(derive_ctx(hs->e_key, &hs->e_dh));
	}
	uint8_t shared[NOISE_DHLEN];
	int rc = dh(hs->kit, use_e ? hs->e_dh : hs->s_dh, pub, shared);
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
static int write_message(struct noise_handshake *hs, const uint8_t *payload, size_t payload_len,
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
			rc = next.fixed_e ? raw_key(next.e_priv, &next.e_key, next.e_pub)
					  : generate(next.kit, &next.e_key, next.e_pub);
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
		drop_copy_keys(&next, hs);
		hs->err = rc;
		OPENSSL_cleanse(out, off);
	}
	OPENSSL_cleanse(&next, sizeof(next));
	return rc;
}

int hush__noise_write_message(struct noise_handshake *hs, const uint8_t *payload,
			      size_t payload_len, uint8_t *out, size_t cap, size_t *out_len)
{
	bool took;
	HUSH_GUARD(kit_enter(hs, &took));
	int rc = write_message(hs, payload, payload_len, out, cap, out_len);
	kit_leave(hs, took);
	return rc;
}

/* Section 5.3 ReadMessage, on a copy of the state like write_message(). */
static int read_message(struct noise_handshake *hs, const uint8_t *msg, size_t len,
			uint8_t *payload, size_t cap, size_t *payload_len)
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
		drop_copy_keys(&next, hs);
		hs->err = rc;
	}
	OPENSSL_cleanse(&next, sizeof(next));
	return rc;
}

int hush__noise_read_message(struct noise_handshake *hs, const uint8_t *msg, size_t len,
			     uint8_t *payload, size_t cap, size_t *payload_len)
{
	bool took;
	HUSH_GUARD(kit_enter(hs, &took));
	int rc = read_message(hs, msg, len, payload, cap, payload_len);
	kit_leave(hs, took);
	return rc;
}

int hush__noise_split(struct noise_handshake *hs, struct noise_cipherstate *i2r,
		struct noise_cipherstate *r2i)
{
	HUSH_ENSURE(hs->err == 0 && hush__noise_done(hs), HUSH_ESTATE);
	uint8_t k1[NOISE_HASHLEN], k2[NOISE_HASHLEN];
	bool took;
	HUSH_GUARD(kit_enter(hs, &took));
	int rc = hkdf(hs->kit, hs->ck, NULL, 0, k1, k2, NULL);
	kit_leave(hs, took);
	if (rc != 0) {
		OPENSSL_cleanse(k1, sizeof(k1));
		OPENSSL_cleanse(k2, sizeof(k2));
		return rc;
	}
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
