/* Internal interfaces of the record layer, for the transport and the tests. Never installed. */
#ifndef HUSH_RECORD_INTERNAL_H
#define HUSH_RECORD_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include <hush/record.h>

/*
 * Cipher-context lending.
 *
 * An idle record context holds only keys, counters and limits (hush__record_size()
 * bytes, 168 on x86-64): the two EVP_CIPHER_CTX it needs to seal and open (each several
 * hundred bytes with its key schedule) can instead be lent to it from a per-thread cache
 * while its connection moves bytes.
 *
 * hush__record_new_bare() is hush_record_new() without cipher contexts. Until contexts
 * are given, hush_record_seal() and hush_record_open() return HUSH_ESTATE, which does
 * not fail the context.
 *
 * hush__record_give_ciphers() hands r two contexts, r then owns them. They may be in any
 * state (fresh, or keyed for another connection, another direction or another cipher):
 * r keys each on its next use, unless it is one r itself held last and keyed, in either
 * position (r puts each back in the direction that held it), and no record context has
 * keyed it since: each keying by a record context marks the context as the keyer's
 * (EVP_CIPHER_CTX_set_app_data), so a context is not keyed again when it comes back
 * still marked as r's. Whoever keys a lent context otherwise must clear that mark. A
 * context that already holds r's cipher is re-keyed in place, without allocating; any
 * other is initialised afresh with the cipher. r must hold none when called.
 *
 * hush__record_take_ciphers() moves r's contexts out to *seal and *open (NULL when r holds
 * none); r keeps its keys, counters and error, and remembers which contexts it held,
 * only to compare them with those given next. The contexts still hold r's key schedule:
 * another borrower keys them again before use, as give says.
 *
 * hush_record_free() frees any context r holds at the time.
 */
HUSH_MUST_CHECK int hush__record_new_bare(struct hush_record **out, enum hush_record_protocol rp,
					  const uint8_t *key, size_t key_len, enum hush_side side);
void hush__record_give_ciphers(struct hush_record *r, EVP_CIPHER_CTX *seal, EVP_CIPHER_CTX *open);
void hush__record_take_ciphers(struct hush_record *r, EVP_CIPHER_CTX **seal, EVP_CIPHER_CTX **open);

/*
 * hush_record_seal() with the plaintext in two parts: the first head_len bytes are in
 * place at frame + HUSH_RECORD_HEADER_SIZE, the other payload_len - head_len are read
 * from src and encrypted into the frame after them in the same pass, so a writer seals
 * straight from its caller's bytes, even a record it began with bytes of an earlier
 * write, without copying them first. src must not overlap the frame (it may be NULL when
 * head_len == payload_len: that is hush_record_seal()). Returns what hush_record_seal()
 * returns, and HUSH_EINVAL when head_len > payload_len or src is NULL with bytes to read.
 */
HUSH_MUST_CHECK int hush__record_seal_from(struct hush_record *r, uint8_t *frame, size_t frame_cap,
					   size_t head_len, const uint8_t *src, size_t payload_len,
					   size_t *frame_len);

/* sizeof(struct hush_record): everything an idle record context holds. */
size_t hush__record_size(void);

/*
 * Test hook: sets the index of the next frame sealed and of the next frame opened (the
 * counter value without the side bit) and clears the exhausted state of both directions.
 * An index past the protocol's last counter value leaves that direction exhausted. The
 * stored error, if any, stays.
 */
void hush__record_set_counters(struct hush_record *r, uint64_t seal_index, uint64_t open_index);

/*
 * The AEAD of a protocol on its own, for known-answer vectors that carry associated data
 * or counters no frame index produces. key is the protocol's key material
 * (hush_record_key_size(rp) bytes); counter is the 12-byte counter used as given (for the
 * REKEY protocols: unmasked; bytes 2..7 pick the derived key and the nonce is counter XOR
 * mask); aad (aad_len bytes, may be NULL when 0) is authenticated but not encrypted.
 * enc: encrypts len bytes of in into out, followed by the 16-byte tag (out holds len + 16).
 * !enc: in holds len bytes of ciphertext followed by the tag; writes len - 16 bytes of
 * plaintext into out, and wipes them again if the tag does not verify.
 * Allocates an EVP_CIPHER_CTX per call: for tests, not for records.
 * Returns 0, HUSH_EPROTO_UNKNOWN, HUSH_EINVAL, HUSH_EAUTH or HUSH_ECRYPTO.
 */
HUSH_MUST_CHECK int hush__record_aead(enum hush_record_protocol rp, const uint8_t *key,
				      const uint8_t counter[12], const uint8_t *aad, size_t aad_len,
				      const uint8_t *in, size_t len, uint8_t *out, bool enc);

/*
 * The 12-byte counter of frame index in the direction sent by side (docs/PROTOCOL.md
 * section 2): index in overflow_len little-endian bytes, then zeros, and 0x80 in byte 11
 * for the server's direction. Returns false (out untouched) when overflow_len is not
 * 1..8 or index does not fit in overflow_len bytes.
 */
bool hush__record_counter(uint64_t index, enum hush_side side, unsigned overflow_len,
			  uint8_t out[12]);

#endif /* HUSH_RECORD_INTERNAL_H */
