/*
 * hush/keys.h: identities for hush's Noise handshakes: X25519 static key pairs, their
 * files, and pre-shared keys.
 *
 * File formats (text, one "name: value" per line, '#' starts a comment line):
 *   private key file   private: <base64 of the 32-byte X25519 private key>
 *                      public: <base64 of its public key>       (checked if present)
 *   pre-shared key     psk: <base64 of 32 random bytes>
 * Base64 is standard (RFC 4648, with padding): 44 characters for 32 bytes.
 * Secret files are created with mode 0600 and never overwritten; loading refuses a
 * secret file that its group or others may read (HUSH_EKEYPERM).
 *
 * Threads: every function is thread-safe; a key pair is read-only after creation.
 */
#ifndef HUSH_KEYS_H
#define HUSH_KEYS_H

#include <hush/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_KEY_SIZE 32
/* Base64 text of a 32-byte key, without the terminating NUL. */
#define HUSH_KEY_BASE64_LEN 44

struct hush_keypair;

/* Generates a key pair from the system's random source. Returns 0, HUSH_ENOMEM or
 * HUSH_ECRYPTO; *out untouched on failure. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_keypair_generate(struct hush_keypair **out);

/*
 * Loads a private key file. Returns 0; HUSH_ESYS (cannot open or read: see errno);
 * HUSH_EKEYPERM (group or others may read it); HUSH_EBADKEY (malformed, wrong length,
 * or a public line that does not match the private key); HUSH_ENOMEM. *out untouched
 * on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_keypair_load(struct hush_keypair **out, const char *path);

/* Writes kp to a new file at path, mode 0600. Returns 0, HUSH_EEXIST or HUSH_ESYS; on
 * failure no file is left behind. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_keypair_save(const struct hush_keypair *kp, const char *path);

/* Copies the public key. */
HUSH_EXTERN void hush_keypair_public(const struct hush_keypair *kp, uint8_t pub[HUSH_KEY_SIZE]);

/* Wipes and frees. NULL is a no-op. */
HUSH_EXTERN void hush_keypair_free(struct hush_keypair *kp);

/* Encodes a key as base64 into out (HUSH_KEY_BASE64_LEN + 1 bytes, NUL-terminated). */
HUSH_EXTERN void hush_key_to_base64(const uint8_t key[HUSH_KEY_SIZE],
				    char out[HUSH_KEY_BASE64_LEN + 1]);

/* Decodes exactly one 32-byte key from base64 (surrounding spaces allowed). Returns 0
 * or HUSH_EBADKEY, with key untouched on failure. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_key_from_base64(const char *text, uint8_t key[HUSH_KEY_SIZE]);

/* Writes a fresh random pre-shared key to a new file at path, mode 0600. Returns 0,
 * HUSH_EEXIST, HUSH_ESYS or HUSH_ECRYPTO. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_psk_generate_file(const char *path);

/* Loads a pre-shared key file. Errors as hush_keypair_load(); psk untouched on
 * failure. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_psk_load(const char *path, uint8_t psk[HUSH_KEY_SIZE]);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_KEYS_H */
