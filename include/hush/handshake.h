/*
 * hush/handshake.h: hush's Noise handshake, sans I/O.
 *
 * A handshake object runs one end of a hush handshake (docs/PROTOCOL.md, Part II): a
 * Noise handshake (XX, XXpsk3 or NNpsk0 over 25519, AESGCM or ChaChaPoly, SHA256) with
 * a prologue that names hush's version and the Noise protocol, and a parameter block
 * that agrees on the ALTS record protocol and limits. It ends with ALTS record key
 * material (hush/record.h) for this end's side. It never touches a socket: the caller
 * moves bytes between it and the peer.
 *
 * Driving it:
 *
 *     while (!hush_handshake_done(hs)) {
 *             if (hush_handshake_wants_write(hs)) {
 *                     rc = hush_handshake_next(hs, buf, sizeof(buf), &n);  // send buf[0..n)
 *             } else {
 *                     // received bytes in[0..len): feed them, keep what was not consumed
 *                     rc = hush_handshake_read(hs, in, len, &used);
 *             }
 *     }
 *     hush_handshake_result(hs, &res);  // then hush_record_new(..., res.key, ...)
 *
 * Bytes that follow the last handshake message are records: hush_handshake_read()
 * leaves them unconsumed.
 *
 * Failures are permanent: once a call failed with a handshake error, every later call
 * returns that error (hush_handshake_error()). Calls that are refused without effect
 * (HUSH_EINVAL for bad arguments, HUSH_ENOSPACE, HUSH_ESTATE from hush_handshake_next()
 * when it is not our turn) are the exceptions and say so.
 *
 * Threads: a handshake object is used by one thread at a time; distinct objects are
 * independent. A configuration, a key pair and an allow-list may be shared read-only by
 * any number of handshakes on any threads. The verify callback runs on the thread that
 * called hush_handshake_read(), inside that call, and must not call back into the
 * handshake it is verifying.
 */
#ifndef HUSH_HANDSHAKE_H
#define HUSH_HANDSHAKE_H

#include <stdbool.h>

#include <hush/common.h>
#include <hush/keys.h>
#include <hush/record.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The Noise protocols hush speaks. Both ends must use the same one. */
enum hush_noise_protocol {
	/* Mutual authentication by static keys. The default. */
	HUSH_NOISE_XX_25519_AESGCM_SHA256 = 1,
	HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256 = 2,
	/* XX, and both ends must also hold the same pre-shared key. */
	HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256 = 3,
	HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256 = 4,
	/* No static keys: the pre-shared key is the only authentication. */
	HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256 = 5,
	HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256 = 6,
};

/* Largest handshake message (after its 2-byte length) hush accepts from a peer. */
#define HUSH_HANDSHAKE_MAX_MESSAGE 2048
/* Largest output of one hush_handshake_next() call: a buffer this big always does. */
#define HUSH_HANDSHAKE_MAX_OUTPUT 1024
/* Size of the handshake hash (Noise's h at the end: a channel binding value). */
#define HUSH_HANDSHAKE_HASH_SIZE 32
/* Longest application protocol name, in bytes. */
#define HUSH_APP_PROTOCOL_MAX 255

/* The protocol's Noise name ("Noise_XX_25519_AESGCM_SHA256", ...), or NULL if unknown.
 * Static string. Thread-safe. */
HUSH_EXTERN const char *hush_noise_protocol_name(enum hush_noise_protocol p);

/* Looks a protocol up by its exact Noise name. Returns 0, HUSH_EPROTO_UNKNOWN (a name
 * hush does not speak, as for an unknown record protocol name) or HUSH_EINVAL (NULL
 * arguments); *out is untouched on failure. Thread-safe. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_noise_protocol_from_name(const char *name,
							      enum hush_noise_protocol *out);

/*
 * The record protocol a handshake of protocol p carries when its configuration leaves
 * record_protocol at HUSH_RP_AUTO: the one whose AEAD the Noise name announces, so
 * that a name says what protects the data. AESGCM gives HUSH_RP_ALTS_AES128_GCM_REKEY
 * (gRPC's protocol; note that its AES key is 128 bits where Noise's AESGCM is AES-256),
 * ChaChaPoly gives HUSH_RP_CHACHA20_POLY1305_REKEY. HUSH_RP_AUTO if p is unknown.
 * Thread-safe.
 */
HUSH_EXTERN enum hush_record_protocol
hush_noise_default_record_protocol(enum hush_noise_protocol p);

/* Callback deciding whether a peer's static key is allowed: return 0 to accept it,
 * anything else to refuse (the handshake fails with HUSH_EPEER). */
typedef int (*hush_verify_fn)(const uint8_t remote_static[HUSH_KEY_SIZE], void *arg);

/*
 * What one end brings to its handshakes. Fill it with hush_handshake_config_init(), then
 * set what applies. hush_handshake_new() copies the scalars, the private key, the PSK
 * and the application protocol name; the allow-list and verify_arg are borrowed and must
 * stay valid and unchanged until every handshake made from the configuration is freed.
 */
struct hush_handshake_config {
	/* Default HUSH_NOISE_XX_25519_AESGCM_SHA256. */
	enum hush_noise_protocol protocol;
	/* This end's static key pair: required by XX and XXpsk3, refused with NNpsk0. */
	const struct hush_keypair *keypair;
	/* The pre-shared key (HUSH_KEY_SIZE bytes): required by XXpsk3 and NNpsk0, refused
	 * with XX. */
	const uint8_t *psk;
	/*
	 * Peer verification, needed by XX and XXpsk3 (hush fails closed: with neither,
	 * hush_handshake_new() returns HUSH_ENOVERIFY) and refused with NNpsk0, which has
	 * no static keys. A peer's static key is accepted if it is one of the
	 * n_allowed_peers keys at allowed_peers, or else if verify (when set) returns 0.
	 */
	const uint8_t (*allowed_peers)[HUSH_KEY_SIZE];
	size_t n_allowed_peers;
	hush_verify_fn verify;
	void *verify_arg;
	/* The record protocol; both ends must use the same one (else HUSH_EPARAMS), since
	 * it is configured, not negotiated. Default HUSH_RP_AUTO: the one that follows
	 * the Noise cipher (hush_noise_default_record_protocol()), which two ends
	 * configured with the same Noise protocol derive alike. Set it to choose any of
	 * the three explicitly, whatever the Noise cipher. */
	enum hush_record_protocol record_protocol;
	/* The largest record LENGTH this end accepts, told to the peer:
	 * HUSH_RECORD_MIN_SEND_FRAME - 4 .. HUSH_RECORD_MAX_RECV_LIMIT; default
	 * HUSH_RECORD_DEFAULT_RECV_LIMIT. */
	size_t recv_limit;
	/* The largest frame this end sends: HUSH_RECORD_MIN_SEND_FRAME ..
	 * HUSH_RECORD_MAX_RECV_LIMIT + 4; default HUSH_RECORD_DEFAULT_SEND_FRAME. Lowered
	 * to the peer's receive limit + 4 in the result. */
	size_t max_send_frame;
	/* An application protocol name told to the peer (1 .. HUSH_APP_PROTOCOL_MAX
	 * bytes, NUL-terminated), or NULL for none. hush does not compare it with the
	 * peer's: it reports the peer's in the result for the application to check. */
	const char *app_protocol;
};

/* Fills cfg with the defaults above: XX with AESGCM, no keys, no verification, the
 * record protocol that follows the Noise cipher (HUSH_RP_AUTO), the default limits, no
 * application protocol. Thread-safe. */
HUSH_EXTERN void hush_handshake_config_init(struct hush_handshake_config *cfg);

/* The outcome of a finished handshake, copied out by hush_handshake_result(). */
struct hush_handshake_result {
	/* This end's ALTS side: the initiator (HUSH_SIDE_CLIENT) is the client. */
	enum hush_side side;
	/* The record protocol in use: never HUSH_RP_AUTO (a default is resolved). */
	enum hush_record_protocol record_protocol;
	/* Record key material for hush_record_new(): key_len bytes
	 * (hush_record_key_size(record_protocol)). Secret: wipe it when done, for example
	 * with hush_handshake_result_wipe(). */
	uint8_t key[HUSH_RECORD_MAX_KEY_SIZE];
	size_t key_len;
	/* Limits for hush_record_set_limits(r, max_send_frame, recv_limit):
	 * max_send_frame is the smaller of this end's and the peer's receive limit + 4;
	 * recv_limit is this end's. */
	size_t max_send_frame;
	size_t recv_limit;
	/* The largest frame the peer will send: the smaller of the frame size it announced
	 * and recv_limit + 4 (to size receive buffers). */
	size_t peer_max_frame;
	/* The peer's static key (XX, XXpsk3), already verified; has_remote_static is false
	 * and remote_static zero with NNpsk0. */
	bool has_remote_static;
	uint8_t remote_static[HUSH_KEY_SIZE];
	/* Noise's handshake hash: equal at both ends, unique to this session. */
	uint8_t handshake_hash[HUSH_HANDSHAKE_HASH_SIZE];
	/* The peer's application protocol name, NUL-terminated; "" if it sent none. */
	char app_protocol[HUSH_APP_PROTOCOL_MAX + 1];
};

/* Wipes a result (its key material included). NULL is a no-op. */
HUSH_EXTERN void hush_handshake_result_wipe(struct hush_handshake_result *res);

struct hush_handshake;

/*
 * Starts one end of a handshake: side HUSH_SIDE_CLIENT is the Noise initiator (the end
 * that connected), HUSH_SIDE_SERVER the responder. cfg is read now (see the config for
 * what stays borrowed).
 * Returns 0; HUSH_EINVAL (NULL arguments, unknown protocol or side, a key or PSK
 * missing or not wanted by the protocol, verification set with NNpsk0, limits out of
 * range, an application protocol name empty or too long); HUSH_EPROTO_UNKNOWN (unknown
 * record protocol); HUSH_ENOVERIFY (static keys but no allow-list and no verify
 * callback); HUSH_ENOMEM; HUSH_ECRYPTO. On failure *out is untouched.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_handshake_new(struct hush_handshake **out,
						   const struct hush_handshake_config *cfg,
						   enum hush_side side);

/* Wipes every secret the handshake holds and frees it. NULL is a no-op. */
HUSH_EXTERN void hush_handshake_free(struct hush_handshake *hs);

/*
 * When it is this end's turn (hush_handshake_wants_write()), writes the next bytes to
 * send to out (capacity cap: HUSH_HANDSHAKE_MAX_OUTPUT always suffices), each message
 * with its 2-byte length; *out_len is their count. The caller sends all of them, in
 * order. This may finish the handshake (hush_handshake_done()).
 * Returns 0; without effect: HUSH_EINVAL (NULL arguments), HUSH_ESTATE (not our turn,
 * or already done), HUSH_ENOSPACE (cap too small); failing the handshake for good:
 * HUSH_EBADKEY (the peer's ephemeral key is of low order), HUSH_ECRYPTO; or the stored
 * error. *out_len is untouched on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_handshake_next(struct hush_handshake *hs, uint8_t *out,
						    size_t cap, size_t *out_len);

/*
 * Feeds len received bytes, in any pieces (a message and even its 2-byte length may be
 * split anywhere). Whole messages are processed as they complete; an incomplete one is
 * kept (copied) for the next call. Reading stops after a message that makes it our
 * turn to write or that finishes the handshake: the bytes after it are left, and
 * *consumed says how many were taken. Feed the rest again after hush_handshake_next(),
 * or, once the handshake is done, hand it to the record layer.
 * Returns 0; without effect: HUSH_EINVAL (NULL arguments), HUSH_ESTATE (already done);
 * failing the handshake for good: HUSH_EOUTOFTURN (bytes arrived while it is our
 * turn to write: the peer spoke out of turn), HUSH_EHANDSHAKE (a message too long or too short
 * for its length, malformed, failing to decrypt, or not from a hush peer), HUSH_EPARAMS
 * (another hush version or Noise protocol, or the peer's parameters do not match ours:
 * record protocol, limits), HUSH_EPEER (the peer's static key is not allowed),
 * HUSH_EBADKEY (a low-order key), HUSH_ENOMEM, HUSH_ECRYPTO; or the stored error.
 * len == 0 does nothing and returns 0 (or the stored error). *consumed is untouched on
 * failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_handshake_read(struct hush_handshake *hs, const uint8_t *in,
						    size_t len, size_t *consumed);

/* Whether hush_handshake_next() has bytes to give now. */
HUSH_EXTERN bool hush_handshake_wants_write(const struct hush_handshake *hs);

/* Whether the handshake waits for bytes from the peer. */
HUSH_EXTERN bool hush_handshake_wants_read(const struct hush_handshake *hs);

/* Whether the handshake finished successfully: the result is ready. */
HUSH_EXTERN bool hush_handshake_done(const struct hush_handshake *hs);

/* The stored error of a failed handshake, 0 if none (HUSH_EINVAL for NULL). */
HUSH_EXTERN int hush_handshake_error(const struct hush_handshake *hs);

/*
 * Copies the result of a finished handshake to *out. May be called any number of times
 * until the handshake is freed. Returns 0, HUSH_EINVAL (NULL arguments), HUSH_ESTATE
 * (not finished) or the stored error; *out is untouched on failure.
 */
HUSH_EXTERN HUSH_MUST_CHECK int hush_handshake_result(const struct hush_handshake *hs,
						      struct hush_handshake_result *out);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_HANDSHAKE_H */
