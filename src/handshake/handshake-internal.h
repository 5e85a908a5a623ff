/*
 * hush's handshake on the Noise core: the wire pieces of docs/PROTOCOL.md, Part II
 * (prologue, parameter block) and the test hooks. Never installed.
 */
#ifndef HUSH_HANDSHAKE_INTERNAL_H
#define HUSH_HANDSHAKE_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hush/handshake.h>

#include "handshake/noise-internal.h"

/* Every handshake message goes on the wire after its length: 2 bytes, big-endian. */
#define HUSH_HS_LENGTH_SIZE 2

/* The prologue, which the initiator also sends first, as a message of its own:
 * "hush/1", a zero byte, the length of the Noise protocol name, the name. */
#define HUSH_HS_VERSION	     "hush/1"
#define HUSH_HS_VERSION_LEN  6
#define HUSH_HS_MAGIC_LEN    5 /* "hush/": a hush peer, of whatever version */
#define HUSH_HS_PROLOGUE_MIN (HUSH_HS_VERSION_LEN + 2)
#define HUSH_HS_PROLOGUE_MAX (HUSH_HS_PROLOGUE_MIN + 255)

/* The parameter block: a version byte, then type-length-value entries (1-byte type,
 * 1-byte length). */
#define HUSH_PARAMS_VERSION 1
enum hush__param_type {
	HUSH_PARAM_RECORD_PROTOCOL = 1, /* the record protocol's wire name */
	HUSH_PARAM_RECV_LIMIT = 2,	/* uint32, big-endian */
	HUSH_PARAM_MAX_SEND_FRAME = 3,	/* uint32, big-endian */
	HUSH_PARAM_APP_PROTOCOL = 4,	/* 1..255 bytes, no zero byte */
};
/* Largest block hush writes: version, then the four entries at their longest. */
#define HUSH_PARAMS_MAX (1 + (2 + 255) + (2 + 4) + (2 + 4) + (2 + HUSH_APP_PROTOCOL_MAX))
/* The smallest receive limit and send frame a peer may announce: room for one
 * record of the smallest frame the record layer sends. */
#define HUSH_PARAMS_MIN_RECV_LIMIT (HUSH_RECORD_MIN_SEND_FRAME - HUSH_RECORD_LENGTH_SIZE)
#define HUSH_PARAMS_MIN_SEND_FRAME HUSH_RECORD_MIN_SEND_FRAME

struct hush__params {
	enum hush_record_protocol record_protocol;
	uint32_t recv_limit;
	uint32_t max_send_frame;
	size_t app_protocol_len; /* 0: none */
	char app_protocol[HUSH_APP_PROTOCOL_MAX + 1];
};

/* The record key derivation's HKDF info: this label, then the record protocol's wire
 * name. */
#define HUSH_HS_KEY_LABEL "hush/1 record key "

/* A static key pair (keys.c). */
struct hush_keypair {
	uint8_t priv[HUSH_KEY_SIZE];
	uint8_t pub[HUSH_KEY_SIZE];
	/* priv as an OpenSSL context ready to derive (hush__noise_dh_ctx()), made by the
	 * first handshake that uses the pair and copied by each (hush__keypair_dh), so a
	 * handshake saves a scalar multiplication and 9 of OpenSSL's allocations. Never
	 * used to derive itself. Freed with the pair. */
	_Atomic(EVP_PKEY_CTX *) dh;
};

/* The pair's context (borrowed), made on first use; thread-safe. NULL on failure. */
EVP_PKEY_CTX *hush__keypair_dh(struct hush_keypair *kp);

/*
 * The text parsers behind hush_keypair_load() and hush_psk_load() (keys.c), for the
 * loaders and the fuzz harness: text is a file's content up to its first zero byte,
 * NUL-terminated. It is written to during the call (each line's end in turn) and
 * given back as it was. Return 0 or HUSH_EBADKEY (malformed, a line twice, a public
 * line that does not match the private key); the output is untouched on failure.
 */
int hush__keypair_parse(char *text, struct hush_keypair *out);
int hush__psk_parse(char *text, uint8_t psk[HUSH_KEY_SIZE]);

/* One end of a handshake (handshake.c). */
struct hush_handshake {
	struct noise_handshake noise;
	/* Copied from the configuration. */
	uint8_t protocol; /* enum hush_noise_protocol */
	bool initiator;
	struct hush__params mine;
	const uint8_t (*allowed)[HUSH_KEY_SIZE];
	size_t n_allowed;
	hush_verify_fn verify;
	void *verify_arg;
	/* Progress. */
	bool hello_done; /* the initiator sent its hello; the responder read it */
	bool done;
	int err; /* sticky */
	/* The frame being read: its 2-byte length, then its body, which is copied only
	 * when it arrives in pieces. */
	uint8_t len_buf[HUSH_HS_LENGTH_SIZE];
	uint8_t len_have;
	uint8_t *msg;
	size_t msg_cap, msg_have;
	/* The outcome. */
	struct hush__params peer;
	uint8_t key[HUSH_RECORD_MAX_KEY_SIZE];
	size_t key_len;
	uint8_t hash[NOISE_HASHLEN];
	uint8_t rs[NOISE_DHLEN];
	bool has_rs;
};

/* Writes the prologue of protocol p to out; returns its length (0: unknown p). */
size_t hush__handshake_prologue(enum hush_noise_protocol p, uint8_t out[HUSH_HS_PROLOGUE_MAX]);

/* Encodes p into out (capacity HUSH_PARAMS_MAX); returns the block's length. */
size_t hush__params_encode(const struct hush__params *p, uint8_t out[HUSH_PARAMS_MAX]);

/*
 * Decodes and checks a peer's block. Returns 0; HUSH_EHANDSHAKE (malformed: empty, an
 * entry running past the end, a known entry twice or with a wrong length, an empty
 * name, an application protocol name with a zero byte); HUSH_EPARAMS (another version,
 * a required entry missing, an unknown record protocol, a limit below the minimum).
 * Unknown entry types are skipped. *out is untouched on failure.
 */
int hush__params_decode(const uint8_t *in, size_t len, struct hush__params *out);

/* What hush_handshake_new() would refuse cfg for (0 if nothing), without starting one:
 * for a caller that starts the handshake later and must answer now. */
int hush__handshake_check_config(const struct hush_handshake_config *cfg, enum hush_side side);

/* Test hook: the handshake's next ephemeral key is e_priv instead of a random one. */
void hush__handshake_set_ephemeral(struct hush_handshake *hs, const uint8_t e_priv[NOISE_DHLEN]);

#endif /* HUSH_HANDSHAKE_INTERNAL_H */
