/*
 * hush/keys.h: identities for hush's Noise handshakes: X25519 static key pairs, their
 * files, pre-shared keys, and lists of allowed peers.
 *
 * File formats (text, '#' starts a comment line; secret files hold one "name: value"
 * per line):
 *   private key file   private: <base64 of the 32-byte X25519 private key>
 *                      public: <base64 of its public key>       (checked if present)
 *   pre-shared key     psk: <base64 of 32 random bytes>
 *   peers file         <base64 of a peer's 32-byte X25519 public key> [name]
 *                      one key a line, optionally followed by spaces or tabs and a
 *                      free-text name; see hush_peers_parse()
 * Base64 is standard (RFC 4648, with padding): 44 characters for 32 bytes.
 * Secret files are created with mode 0600 and never overwritten; loading refuses a
 * secret file that its group or others may read (HUSH_EKEYPERM). A peers file holds
 * only public keys: it is not checked for permissions.
 *
 * Threads: every function is thread-safe; a key pair and a peer list are read-only
 * after creation, so any number of threads may use one at once.
 */
#ifndef HUSH_KEYS_H
#define HUSH_KEYS_H

#include <stdbool.h>

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
 * HUSH_ENOTFILE (not a regular file: a FIFO, a device or a directory is refused at
 * once, never read or waited on); HUSH_EKEYPERM (group or others may read it);
 * HUSH_EBADKEY (malformed, wrong length, an all-zero private key, or a public line that
 * does not match the private key); HUSH_ENOMEM. *out untouched
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

/* Decodes exactly one 32-byte key from base64 (surrounding spaces allowed), spelt as
 * hush_key_to_base64() writes it: other texts that base64 decoders would map to the
 * same bytes (an '=' inside, unused low bits set in the last character) are refused.
 * Returns 0 or HUSH_EBADKEY, with key untouched on failure. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_key_from_base64(const char *text, uint8_t key[HUSH_KEY_SIZE]);

/* Writes a fresh random pre-shared key to a new file at path, mode 0600. Returns 0,
 * HUSH_EEXIST, HUSH_ESYS or HUSH_ECRYPTO. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_psk_generate_file(const char *path);

/* Loads a pre-shared key file. Errors as hush_keypair_load(); psk untouched on
 * failure. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_psk_load(const char *path, uint8_t psk[HUSH_KEY_SIZE]);

/*
 * A list of allowed peer public keys, read from a peers file. Opaque and immutable
 * once made: share it read-only with any number of handshakes on any threads, and
 * free it only after the last handshake configured with it is freed.
 */
struct hush_peers;

/* A peers file larger than this many bytes is refused. */
#define HUSH_PEERS_MAX_FILE (1024 * 1024)

/*
 * Parses the text of a peers file: len bytes at text (not necessarily NUL-terminated;
 * borrowed for the call only). Lines end with LF, and a CR just before it (or at the
 * very end of text) is ignored. A line is
 *   - blank: only spaces and tabs; ignored;
 *   - a comment: optional spaces or tabs, then '#', then anything; ignored;
 *   - a key: optional spaces or tabs, exactly one base64 key of 44 characters as
 *     hush_key_to_base64() writes it, then either the end of the line or one or more
 *     spaces or tabs followed by any text (a name for people; hush ignores it).
 * Anything else is malformed, as is a zero byte anywhere. A key listed more than once
 * is kept once. A file without keys is valid and gives a list of count 0: whether
 * that is acceptable is the caller's decision.
 *
 * On success *out is a new list the caller owns (free it with hush_peers_free()).
 * bad_line may be NULL; otherwise it is always written: the 1-based number of the
 * first malformed line when that is the error, else 0.
 * Returns 0; HUSH_EINVAL (out or text NULL); HUSH_EBADKEY (a malformed line, or a key
 * that is a low-order X25519 point, which no one can own: *bad_line is its number; or len
 * above HUSH_PEERS_MAX_FILE with *bad_line 0); HUSH_ENOMEM. *out is untouched on
 * failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_peers_parse(struct hush_peers **out, const char *text,
						 size_t len, unsigned *bad_line);

/*
 * Reads the peers file at path and parses it as hush_peers_parse() does. The file is
 * read once, whole, during the call; its permissions are not checked (it holds no
 * secret).
 * Returns 0; HUSH_EINVAL (out or path NULL); HUSH_ESYS (cannot open or read it: see
 * errno); HUSH_ENOTFILE (not a regular file: a FIFO, a device or a directory is refused
 * at once, never read or waited on); HUSH_EBADKEY (a malformed line or a low-order
 * X25519 point, with its number, or a file larger
 * than HUSH_PEERS_MAX_FILE with *bad_line 0); HUSH_ENOMEM. *out is untouched and
 * bad_line as for hush_peers_parse() on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_peers_load(struct hush_peers **out, const char *path,
						unsigned *bad_line);

/* The number of distinct keys in the list (0 for NULL). */
HUSH_EXTERN size_t hush_peers_count(const struct hush_peers *p);

/*
 * The keys: hush_peers_count(p) entries of HUSH_KEY_SIZE bytes, each distinct, in
 * ascending byte order (not the file's order). Owned by p and valid until
 * hush_peers_free(p); suitable for hush_handshake_config.allowed_peers with
 * n_allowed_peers = hush_peers_count(p). NULL for a NULL p; with count 0 the pointer
 * must not be read through.
 */
HUSH_EXTERN const uint8_t (*hush_peers_keys(const struct hush_peers *p))[HUSH_KEY_SIZE];

/* Whether key is in the list. Every stored key is compared, each with CRYPTO_memcmp,
 * so the time taken depends on the list's size, not on where or whether key matches.
 * False for a NULL p or key. */
HUSH_EXTERN bool hush_peers_contains(const struct hush_peers *p,
				     const uint8_t key[HUSH_KEY_SIZE]);

/* Frees the list. NULL is a no-op. */
HUSH_EXTERN void hush_peers_free(struct hush_peers *p);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_KEYS_H */
