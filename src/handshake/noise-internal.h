/*
 * The Noise Protocol Framework (revision 34), sans I/O, for the patterns hush uses:
 * XX, XXpsk3 and NNpsk0 over 25519, AESGCM or ChaChaPoly, and SHA256. Section numbers
 * refer to the Noise specification. Never installed: hush's handshake (handshake.c,
 * include/hush/handshake.h) adds the framing, prologue and parameters of
 * docs/PROTOCOL.md, Part II on top of it.
 */
#ifndef HUSH_NOISE_INTERNAL_H
#define HUSH_NOISE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define NOISE_DHLEN   32
#define NOISE_HASHLEN 32
#define NOISE_KEYLEN  32
#define NOISE_TAGLEN  16
#define NOISE_PSKLEN  32
/* Section 3: every Noise message is at most 65535 bytes. */
#define NOISE_MAX_MSG 65535

enum noise_pattern {
	NOISE_XX,
	NOISE_XXPSK3,
	NOISE_NNPSK0,
};

enum noise_cipher {
	NOISE_AESGCM,
	NOISE_CHACHAPOLY,
};

/* Section 5.1. */
struct noise_cipherstate {
	uint8_t k[NOISE_KEYLEN];
	uint64_t n;
	bool has_key;
	uint8_t cipher; /* enum noise_cipher */
};

/*
 * The OpenSSL contexts a handshake step needs, made once and reused by step after step
 * (kit.c): OpenSSL 3 allocates a context and fetches its algorithm by name each time
 * one is made, which used to cost more allocations than every other part of a
 * handshake together. A kit is borrowed for one call and given back at its end, so it
 * is never used by two threads at once; idle kits wait in a small process-wide pool.
 * Measured with OpenSSL 3.0: making an HMAC context and setting its digest costs 7
 * allocations, a cipher context 2, an X25519 public key from raw bytes 10; re-keying
 * the ones kept here costs 0 for a cipher, 0 for the peer key and 4 or 5 for HMAC (its
 * digest contexts are made again by OpenSSL at each key: that part cannot be kept).
 */
struct noise_kit {
	struct noise_kit *next; /* in the idle pool */
	const EVP_MD *sha256;	/* hush__algs_get()'s */
	EVP_MD_CTX *md;
	EVP_MAC_CTX *mac;	 /* HMAC, its digest set to SHA-256 once */
	EVP_CIPHER_CTX *aead[2]; /* [enum noise_cipher], the cipher set once */
	EVP_PKEY_CTX *gen;	 /* X25519 key generation */
	/* X25519 public key object, given each peer key in turn
	 * (EVP_PKEY_set1_encoded_public_key overwrites it in place). */
	EVP_PKEY *peer;
	/* The MAC or a cipher holds a key from a handshake: overwritten when given back. */
	bool keyed;
};

/* Section 5.3. */
struct noise_handshake {
	uint8_t ck[NOISE_HASHLEN];
	uint8_t h[NOISE_HASHLEN];
	struct noise_cipherstate cs;
	uint8_t s_pub[NOISE_DHLEN];			 /* local static */
	uint8_t e_priv[NOISE_DHLEN], e_pub[NOISE_DHLEN]; /* local ephemeral; e_priv only
							  * when fixed_e */
	uint8_t rs[NOISE_DHLEN], re[NOISE_DHLEN];	 /* remote static, ephemeral */
	uint8_t psk[NOISE_PSKLEN];
	/* The local keys as OpenSSL objects, each ready to derive: s_dh from the start
	 * (a copy of the key pair's, or made from the private key), e_key when e is
	 * written, e_dh at its first DH. Owned by the state and freed by
	 * hush__noise_wipe(); building a key from raw bytes costs a scalar multiplication
	 * (OpenSSL derives the public key), as much as a DH. */
	EVP_PKEY_CTX *s_dh, *e_dh;
	EVP_PKEY *e_key;
	/* Borrowed for the current call (NULL between calls): the caller's, or one the
	 * call takes and gives back itself. */
	struct noise_kit *kit;
	bool has_s, has_e, has_rs, has_re, has_psk;
	bool initiator;
	bool fixed_e;	   /* tests: e_priv was given, do not generate one */
	uint8_t pattern;   /* enum noise_pattern */
	uint8_t msg_index; /* next message of the pattern */
	int err;	   /* sticky */
};

/*
 * Borrows a kit for a run of calls on one thread (hush's handshake takes one for each
 * hush_handshake_next() or hush_handshake_read() and puts it in noise_handshake.kit).
 * Returns 0 or HUSH_ENOMEM / HUSH_ECRYPTO. Thread-safe.
 */
int hush__noise_kit_take(struct noise_kit **out);

/* Gives a kit back: the key material it last held is overwritten first, so an idle kit
 * holds no secret. NULL is a no-op. Thread-safe. */
void hush__noise_kit_give(struct noise_kit *k);

/* A context ready to derive X25519 secrets with priv, and its public key; for
 * hush__noise_init() (a key pair keeps one, made once: see hush__keypair_dh()). Returns
 * 0 or HUSH_ECRYPTO (nothing to free). */
int hush__noise_dh_ctx(const uint8_t priv[NOISE_DHLEN], EVP_PKEY_CTX **ctx,
		       uint8_t pub[NOISE_DHLEN]);

/*
 * RFC 5869 HKDF-SHA256 with the kit's HMAC: out_len (at most 255 * 32) bytes from salt,
 * ikm and info. Returns 0 or HUSH_ECRYPTO.
 */
int hush__noise_hkdf_sha256(struct noise_kit *k, const uint8_t *salt, size_t salt_len,
			    const uint8_t *ikm, size_t ikm_len, const uint8_t *info,
			    size_t info_len, uint8_t *out, size_t out_len);

/*
 * Starts a handshake. s_priv may be NULL for patterns without a static key; psk NULL
 * for patterns without one. s_dh, when not NULL, is a context made by
 * hush__noise_dh_ctx(s_priv) and never used to derive: it is copied (read only, so
 * threads may share it), which saves computing the key again. The protocol name is
 * built from pattern and cipher. Returns 0 or HUSH_EINVAL / HUSH_ECRYPTO / HUSH_ENOMEM;
 * on failure the state is wiped (nothing to free).
 */
int hush__noise_init(struct noise_handshake *hs, enum noise_pattern pattern,
		     enum noise_cipher cipher, bool initiator, const uint8_t *prologue,
		     size_t prologue_len, const uint8_t *s_priv, const EVP_PKEY_CTX *s_dh,
		     const uint8_t *psk);

/* The protocol name (section 8), such as "Noise_XX_25519_AESGCM_SHA256"; NULL if the
 * pair is unknown. Static string. */
const char *hush__noise_protocol_name(enum noise_pattern pattern, enum noise_cipher cipher);

/* Test hook: use e_priv as the next ephemeral instead of a random one. */
void hush__noise_set_ephemeral(struct noise_handshake *hs, const uint8_t e_priv[NOISE_DHLEN]);

/* Number of messages of the pattern (3 for XX/XXpsk3, 2 for NNpsk0). */
unsigned hush__noise_message_count(enum noise_pattern pattern);

/* Whether the next message is ours to write. */
bool hush__noise_my_turn(const struct noise_handshake *hs);

/* Whether every message of the pattern has been written or read. */
bool hush__noise_done(const struct noise_handshake *hs);

/* Exact size of the next message of the pattern when it carries payload_len bytes of
 * payload (0 when the pattern has no next message). */
size_t hush__noise_message_size(const struct noise_handshake *hs, size_t payload_len);

/*
 * Section 5.3 WriteMessage: writes the next message, carrying payload, into out
 * (capacity cap); *out_len is its size, hush__noise_message_size(hs, payload_len).
 * Returns 0; without changing anything: HUSH_ESTATE (not our turn, or done),
 * HUSH_EINVAL (message would exceed 65535 bytes), HUSH_ENOSPACE (cap too small); or,
 * failing the handshake for good: HUSH_EBADKEY (a DH result was all zero: low-order
 * key), HUSH_ECOUNTER or HUSH_ECRYPTO.
 */
int hush__noise_write_message(struct noise_handshake *hs, const uint8_t *payload, size_t payload_len,
			uint8_t *out, size_t cap, size_t *out_len);

/*
 * Section 5.3 ReadMessage: reads one whole message msg, writing its payload to payload
 * (capacity cap, *payload_len its size). Returns 0; HUSH_ESTATE (our turn to write, or
 * done: nothing changed); or, failing the handshake for good: HUSH_EHANDSHAKE
 * (truncated, malformed or failed to decrypt), HUSH_EBADKEY, HUSH_ENOSPACE, HUSH_ECOUNTER
 * or HUSH_ECRYPTO. The state changes only when the whole message was read.
 */
int hush__noise_read_message(struct noise_handshake *hs, const uint8_t *msg, size_t len, uint8_t *payload,
		       size_t cap, size_t *payload_len);

/*
 * Section 5.2 Split, once hush__noise_done(): the initiator-to-responder and
 * responder-to-initiator cipher states (each with a 32-byte key, n = 0).
 */
int hush__noise_split(struct noise_handshake *hs, struct noise_cipherstate *i2r,
		struct noise_cipherstate *r2i);

/* Section 5.1 EncryptWithAd / DecryptWithAd on a cipher state (transport messages). */
int hush__noise_cs_encrypt(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
		     const uint8_t *in, size_t len, uint8_t *out);
int hush__noise_cs_decrypt(struct noise_cipherstate *cs, const uint8_t *ad, size_t ad_len,
		     const uint8_t *in, size_t len, uint8_t *out);

/* X25519 public key of a private key. Returns 0 or HUSH_ECRYPTO. */
int hush__noise_dh_public(const uint8_t priv[NOISE_DHLEN], uint8_t pub[NOISE_DHLEN]);
/* 0 when pub may be a peer's public key; HUSH_EBADKEY for a low-order point (its DH
 * result is all zero for every private key); HUSH_ECRYPTO. */
int hush__noise_dh_check_public(const uint8_t pub[NOISE_DHLEN]);

/* Wipes the whole handshake state and frees the key objects it owns (not the kit). */
void hush__noise_wipe(struct noise_handshake *hs);

#endif /* HUSH_NOISE_INTERNAL_H */
