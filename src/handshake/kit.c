/*
 * The pool of kits (noise-internal.h): the OpenSSL contexts of a handshake step, made
 * once and lent for one call at a time. See docs/DESIGN.md, "OpenSSL contexts: the kit
 * pool".
 */
#include <pthread.h>
#include <stdbool.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "common/common-internal.h"
#include "handshake/noise-internal.h"

/* Kits kept idle: enough for every thread of a busy server to find one, few enough
 * that an idle process holds little (a kit holds about 3.5 KB of OpenSSL state). */
#define KIT_IDLE_MAX 16

static pthread_mutex_t kit_lock = PTHREAD_MUTEX_INITIALIZER;
static struct noise_kit *kit_idle; /* under kit_lock */
static unsigned kit_nidle;	   /* under kit_lock */

static const uint8_t zero_key[NOISE_KEYLEN];

static void kit_free(struct noise_kit *k)
{
	if (k == NULL) {
		return;
	}
	/* Each *_free wipes the key material it held. */
	EVP_MD_CTX_free(k->md);
	EVP_MAC_CTX_free(k->mac);
	EVP_CIPHER_CTX_free(k->aead[NOISE_AESGCM]);
	EVP_CIPHER_CTX_free(k->aead[NOISE_CHACHAPOLY]);
	EVP_PKEY_CTX_free(k->gen);
	EVP_PKEY_free(k->peer);
	OPENSSL_clear_free(k, sizeof(*k));
}

static int kit_new(struct noise_kit **out)
{
	const struct hush_algs *algs;
	HUSH_GUARD(hush__algs_get(&algs));
	/* From OpenSSL's allocator, like everything the kit holds: idle kits outlive hush's
	 * objects, and hush_set_allocator() may be called again once those are gone. */
	struct noise_kit *k = OPENSSL_zalloc(sizeof(*k));
	HUSH_ENSURE(k != NULL, HUSH_ENOMEM);
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};
	k->sha256 = algs->sha256;
	k->md = EVP_MD_CTX_new();
	k->mac = EVP_MAC_CTX_new(algs->hmac);
	k->aead[NOISE_AESGCM] = EVP_CIPHER_CTX_new();
	k->aead[NOISE_CHACHAPOLY] = EVP_CIPHER_CTX_new();
	k->gen = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
	/* Any valid point will do until the first DH gives it a peer's key. */
	static const uint8_t nine[NOISE_DHLEN] = {9};
	k->peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, nine, NOISE_DHLEN);
	bool ok =
	    k->md != NULL && k->mac != NULL && k->aead[NOISE_AESGCM] != NULL &&
	    k->aead[NOISE_CHACHAPOLY] != NULL && k->gen != NULL && k->peer != NULL &&
	    EVP_MAC_CTX_set_params(k->mac, params) == 1 &&
	    EVP_CipherInit_ex(k->aead[NOISE_AESGCM], algs->aes256gcm, NULL, NULL, NULL, 1) == 1 &&
	    EVP_CipherInit_ex(k->aead[NOISE_CHACHAPOLY], algs->chacha20poly1305, NULL, NULL, NULL,
			      1) == 1 &&
	    EVP_PKEY_keygen_init(k->gen) == 1;
	if (!ok) {
		kit_free(k);
		return HUSH_ECRYPTO;
	}
	*out = k;
	return 0;
}

int hush__noise_kit_take(struct noise_kit **out)
{
	pthread_mutex_lock(&kit_lock);
	struct noise_kit *k = kit_idle;
	if (k != NULL) {
		kit_idle = k->next;
		kit_nidle--;
	}
	pthread_mutex_unlock(&kit_lock);
	if (k == NULL) {
		return kit_new(out);
	}
	k->next = NULL;
	*out = k;
	return 0;
}

/*
 * Overwrites the keys a kit holds with zeros: an idle kit must not keep a secret of a
 * finished handshake (the last HMAC key of a handshake gives its record keys). A
 * cipher is re-keyed without allocating; HMAC costs its 4 allocations, once per call
 * that keyed it.
 */
static bool kit_scrub(struct noise_kit *k)
{
	static const uint8_t zero_nonce[12];
	if (!k->keyed) {
		return true;
	}
	bool ok =
	    EVP_MAC_init(k->mac, zero_key, sizeof(zero_key), NULL) == 1 &&
	    EVP_CipherInit_ex(k->aead[NOISE_AESGCM], NULL, NULL, zero_key, zero_nonce, 1) == 1 &&
	    EVP_CipherInit_ex(k->aead[NOISE_CHACHAPOLY], NULL, NULL, zero_key, zero_nonce, 1) == 1;
	k->keyed = !ok;
	return ok;
}

void hush__noise_kit_give(struct noise_kit *k)
{
	if (k == NULL) {
		return;
	}
	/* A kit that could not be scrubbed is freed, which wipes it. */
	if (kit_scrub(k)) {
		pthread_mutex_lock(&kit_lock);
		if (kit_nidle < KIT_IDLE_MAX) {
			k->next = kit_idle;
			kit_idle = k;
			kit_nidle++;
			k = NULL;
		}
		pthread_mutex_unlock(&kit_lock);
	}
	kit_free(k);
}
