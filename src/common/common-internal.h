/* Internal helpers shared by every module. Never installed. */
#ifndef HUSH_COMMON_INTERNAL_H
#define HUSH_COMMON_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include <hush/common.h>

/* Leave with the error when an expression fails (s2n-tls style guards). */
#define HUSH_GUARD(expr)                \
	do {                            \
		int hush__rc_ = (expr); \
		if (hush__rc_ < 0) {    \
			return hush__rc_; \
		}                       \
	} while (0)

/* Leave with err unless cond holds. */
#define HUSH_ENSURE(cond, err)   \
	do {                     \
		if (!(cond)) {   \
			return (err); \
		}                \
	} while (0)

#define HUSH_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__) || defined(__clang__)
#define HUSH_LIKELY(x) __builtin_expect(!!(x), 1)
#define HUSH_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define HUSH_LIKELY(x) (x)
#define HUSH_UNLIKELY(x) (x)
#endif

/* AddressSanitizer hooks: poison memory that must not be touched. */
#if defined(__SANITIZE_ADDRESS__)
#define HUSH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HUSH_ASAN 1
#endif
#endif
#ifdef HUSH_ASAN
#include <sanitizer/asan_interface.h>
#define HUSH_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define HUSH_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define HUSH_POISON(p, n) ((void)(p), (void)(n))
#define HUSH_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/*
 * The OpenSSL algorithms of every layer, fetched once per process (src/common/algs.c):
 * nothing in hush fetches implicitly (EVP_sha256(), HMAC(), ...) or per use, X25519
 * aside: OpenSSL's EVP_PKEY calls fetch for themselves (src/handshake/noise.c keeps what
 * it can of them). Never freed; read-only once returned.
 */
struct hush_algs {
	EVP_CIPHER *aes128gcm;        /* ALTS records */
	EVP_CIPHER *aes256gcm;        /* Noise's AESGCM */
	EVP_CIPHER *chacha20poly1305; /* Noise's ChaChaPoly and hush's ChaCha records */
	EVP_MD *sha256;               /* Noise's hash */
	EVP_MAC *hmac;                /* Noise's HKDF steps, hush's record key derivation
				       * (RFC 5869 on a reused HMAC context: OpenSSL's
				       * HKDF makes its HMAC again on every call), the ALTS
				       * rekey KDF */
};
/* Sets *out to the algorithms: 0, or HUSH_ECRYPTO when one cannot be fetched (the
 * next call tries again). Thread-safe. */
HUSH_MUST_CHECK int hush__algs_get(const struct hush_algs **out);

/* The process allocator (src/common/alloc.c). */
void *hush__alloc(size_t size);
void *hush__calloc(size_t size);
void hush__free(void *ptr, size_t size);
/* Wipes size bytes with OPENSSL_cleanse, then frees. */
void hush__free_secret(void *ptr, size_t size);

/* Little-endian loads and stores. */
static inline uint32_t hush__load_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static inline void hush__store_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

#endif /* HUSH_COMMON_INTERNAL_H */
