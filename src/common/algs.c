/*
 * The OpenSSL algorithms hush uses, fetched once per process and shared by every layer.
 *
 * An implicit fetch (EVP_aes_128_gcm(), EVP_sha256(), HMAC(), or EVP_KDF_fetch() on each
 * use) costs a method-store lookup every time a context is keyed, so every algorithm is
 * fetched explicitly, once, and kept for the life of the process. A failed fetch (out of
 * memory) is retried by the next caller rather than remembered. The pointers are
 * written under the lock before `fetched` is released, and read only after it was
 * acquired.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "common/common-internal.h"

static pthread_mutex_t fetch_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool fetched;
static struct hush_algs algs;

int hush__algs_get(const struct hush_algs **out)
{
	if (!atomic_load_explicit(&fetched, memory_order_acquire)) {
		pthread_mutex_lock(&fetch_lock);
		if (algs.aes128gcm == NULL) {
			algs.aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
		}
		if (algs.aes256gcm == NULL) {
			algs.aes256gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
		}
		if (algs.chacha20poly1305 == NULL) {
			algs.chacha20poly1305 = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
		}
		if (algs.sha256 == NULL) {
			algs.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
		}
		if (algs.hmac == NULL) {
			algs.hmac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
		}
		bool ok = algs.aes128gcm != NULL && algs.aes256gcm != NULL &&
			  algs.chacha20poly1305 != NULL && algs.sha256 != NULL && algs.hmac != NULL;
		if (ok) {
			atomic_store_explicit(&fetched, true, memory_order_release);
		}
		pthread_mutex_unlock(&fetch_lock);
		if (!ok) {
			return HUSH_ECRYPTO;
		}
	}
	*out = &algs;
	return 0;
}
