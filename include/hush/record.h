/*
 * hush/record.h: ALTS-format records, sans I/O.
 *
 * A record context turns plaintext into framed, authenticated records and back, byte
 * for byte as gRPC's ALTS record protocol (docs/PROTOCOL.md). It never touches a socket
 * and never allocates per record: seal and open work in place in buffers the caller
 * owns, typically borrowed from a hush_pool.
 *
 * Frame: LENGTH (4 bytes LE, = bytes after it) | TYPE (4 bytes LE, = 6) |
 *        ciphertext (n bytes) | tag (16 bytes).   Total n + 24 bytes.
 *
 * Threads: a context is used by one thread at a time; distinct contexts are independent.
 */
#ifndef HUSH_RECORD_H
#define HUSH_RECORD_H

#include <hush/common.h>

#ifdef __cplusplus
extern "C" {
#endif

enum hush_record_protocol {
	/* Not a protocol: in a handshake configuration only, "the record protocol that
	 * follows the Noise cipher" (hush_noise_default_record_protocol()). Everything
	 * else refuses it as unknown. */
	HUSH_RP_AUTO = 0,
	/* "ALTSRP_GCM_AES128_REKEY": AES-128-GCM, 44 bytes of key material (32-byte KDF key,
	 * 12-byte nonce mask), new key every 2^16 records. gRPC's production protocol. */
	HUSH_RP_ALTS_AES128_GCM_REKEY = 1,
	/* "ALTSRP_GCM_AES128": AES-128-GCM with a 16-byte key, nonce = counter. */
	HUSH_RP_ALTS_AES128_GCM = 2,
	/* "HUSHRP_CHACHA20_POLY1305_REKEY": hush's own, the REKEY construction with
	 * ChaCha20-Poly1305 and 32-byte derived keys, for machines without AES
	 * instructions. Not understood by gRPC peers. */
	HUSH_RP_CHACHA20_POLY1305_REKEY = 3,
};

enum hush_side {
	HUSH_SIDE_CLIENT = 0, /* the ALTS client: the connecting end / Noise initiator */
	HUSH_SIDE_SERVER = 1,
};

#define HUSH_RECORD_LENGTH_SIZE 4
#define HUSH_RECORD_HEADER_SIZE 8  /* LENGTH + TYPE */
#define HUSH_RECORD_TAG_SIZE 16
#define HUSH_RECORD_OVERHEAD 24    /* header + tag */
#define HUSH_RECORD_TYPE 6
#define HUSH_RECORD_MAX_KEY_SIZE 44

/* Default and bounds for the largest frame (total bytes on the wire) hush sends:
 * 16 KiB, which every gRPC peer accepts. gRPC peers refuse frames above 1 MiB + 4
 * (LENGTH above 1 MiB); larger ones are for hush peers only. */
#define HUSH_RECORD_DEFAULT_SEND_FRAME 16384
#define HUSH_RECORD_MIN_SEND_FRAME 64
/* Default and bounds for the largest LENGTH value hush accepts: 1 MiB, as gRPC. */
#define HUSH_RECORD_DEFAULT_RECV_LIMIT 1048576
#define HUSH_RECORD_MAX_RECV_LIMIT 16777216

/* The protocol's wire name ("ALTSRP_GCM_AES128_REKEY", ...), or NULL if unknown. */
HUSH_EXTERN const char *hush_record_protocol_name(enum hush_record_protocol rp);

/* Looks a protocol up by its wire name. Returns 0 or HUSH_EPROTO_UNKNOWN. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_record_protocol_from_name(const char *name,
							       enum hush_record_protocol *out);

/* Bytes of key material the protocol takes (44, 16, 44), or 0 if unknown. */
HUSH_EXTERN size_t hush_record_key_size(enum hush_record_protocol rp);

struct hush_record;

/*
 * Creates a record context for one connection end. key is copied (and the copy wiped
 * on free); side says which end this is: a client seals with the client counter and
 * opens with the server's.
 * Returns 0, HUSH_EINVAL, HUSH_EPROTO_UNKNOWN, HUSH_EKEYLEN, HUSH_ENOMEM or
 * HUSH_ECRYPTO. On failure *out is untouched.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_record_new(struct hush_record **out,
						enum hush_record_protocol rp,
						const uint8_t *key, size_t key_len,
						enum hush_side side);

/* Wipes and frees the context. NULL is a no-op. */
HUSH_EXTERN void hush_record_free(struct hush_record *r);

/*
 * Sets the largest frame sealed (total wire bytes, HUSH_RECORD_MIN_SEND_FRAME ..
 * HUSH_RECORD_MAX_RECV_LIMIT + 4) and the largest LENGTH accepted (20 ..
 * HUSH_RECORD_MAX_RECV_LIMIT). 0 keeps the current value. Returns 0 or HUSH_EINVAL
 * (nothing changed).
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_record_set_limits(struct hush_record *r,
						       size_t max_send_frame,
						       size_t recv_limit);

/* Most plaintext bytes one sealed record carries: max_send_frame - 24. */
HUSH_EXTERN size_t hush_record_max_payload(const struct hush_record *r);

/* Largest total frame the receive limit admits: recv_limit + 4. */
HUSH_EXTERN size_t hush_record_max_frame(const struct hush_record *r);

/*
 * Seals one record in place. The caller has put payload_len plaintext bytes at
 * frame + HUSH_RECORD_HEADER_SIZE; seal writes the header before them, encrypts them in
 * place and writes the tag after them. frame_cap is the space at frame.
 * On success *frame_len = payload_len + 24 and the outgoing counter advances.
 * Returns 0, HUSH_ENOSPACE (frame_cap too small), HUSH_EMSGSIZE (payload_len above
 * hush_record_max_payload), HUSH_ECOUNTER (no counter value left: the context is
 * failed), HUSH_ECRYPTO, or the context's stored error. On failure the counter does not
 * advance and *frame_len is untouched.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_record_seal(struct hush_record *r, uint8_t *frame,
						 size_t frame_cap, size_t payload_len,
						 size_t *frame_len);

/*
 * Parses the start of a frame from received bytes, validating before any memory is
 * reserved or any crypto runs. buf holds the len bytes received so far of the next frame.
 *  - 0: a complete frame of *need bytes is at buf (len >= *need).
 *  - HUSH_EAGAIN: incomplete. *need is the frame's total size once its 4-byte length is
 *    in (so a buffer can be sized for the whole frame), else HUSH_RECORD_LENGTH_SIZE.
 *  - HUSH_EFRAME_SHORT (LENGTH < 20), HUSH_EFRAME_LONG (LENGTH > receive limit),
 *    HUSH_EFRAME_TYPE (TYPE != 6, checked once 8 bytes are in): the context is failed.
 * The stored error of a failed context is returned as is.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_record_parse(struct hush_record *r, const uint8_t *buf,
						  size_t len, size_t *need);

/*
 * Opens one complete frame of frame_len bytes (as reported by hush_record_parse) in
 * place. On success *plaintext views the payload inside frame (frame + 8, LENGTH - 20
 * bytes) and the incoming counter advances.
 * Returns 0, HUSH_EFRAME_PARTIAL (frame_len is not the frame's size), the parse errors,
 * HUSH_EAUTH (tag mismatch: wrong key, side, order, replay or tampering), HUSH_ECOUNTER,
 * HUSH_ECRYPTO, or the stored error. Any failure leaves the context failed for good,
 * leaves *plaintext untouched, and wipes whatever was decrypted in the buffer: no
 * plaintext is released before its tag verifies.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_record_open(struct hush_record *r, uint8_t *frame,
						 size_t frame_len,
						 struct hush_iovec *plaintext);

/* The stored error of a failed context, or 0. */
HUSH_EXTERN int hush_record_error(const struct hush_record *r);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_RECORD_H */
