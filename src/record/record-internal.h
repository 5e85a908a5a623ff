/* Internal interfaces of the record layer, for the transport and the tests. */
#ifndef HUSH_RECORD_INTERNAL_H
#define HUSH_RECORD_INTERNAL_H

#include <stdbool.h>

#include <openssl/evp.h>

#include <hush/record.h>

/*
 * Cipher-context lending. An idle connection should not hold cipher contexts (an
 * AES-GCM EVP_CIPHER_CTX with its key schedule is several hundred bytes), so the
 * transport creates record contexts without them and lends contexts from a per-thread
 * cache while a connection moves bytes.
 *
 * hush__record_new_bare() is hush_record_new() without cipher contexts: seal and open
 * return HUSH_ESTATE until contexts are given. hush__record_give_ciphers() hands over
 * two contexts, in any state (keyed for another connection or another cipher): they
 * are fully initialised on first use. hush__record_take_ciphers() moves them out again;
 * the context keeps its keys and counters.
 */
int hush__record_new_bare(struct hush_record **out, enum hush_record_protocol rp,
			  const uint8_t *key, size_t key_len, enum hush_side side);
void hush__record_give_ciphers(struct hush_record *r, EVP_CIPHER_CTX *seal,
			       EVP_CIPHER_CTX *open);
void hush__record_take_ciphers(struct hush_record *r, EVP_CIPHER_CTX **seal,
			       EVP_CIPHER_CTX **open);

/* sizeof(struct hush_record): what an idle record context holds. */
size_t hush__record_size(void);

/* Test hook: sets the next frame index of each direction (counter value without the
 * side bit), and clears the exhausted state. */
void hush__record_set_counters(struct hush_record *r, uint64_t seal_index,
			       uint64_t open_index);

/*
 * The AEAD of a protocol on its own, for known-answer vectors: key is the protocol's
 * key material, counter the 12-byte (unmasked) counter used as given, aad may be empty.
 * Encrypts (enc) len bytes of in to out plus a 16-byte tag, or decrypts len bytes of
 * ciphertext followed by the tag. Returns 0, HUSH_EAUTH or HUSH_ECRYPTO.
 */
int hush__record_aead(enum hush_record_protocol rp, const uint8_t *key,
		      const uint8_t counter[12], const uint8_t *aad, size_t aad_len,
		      const uint8_t *in, size_t len, uint8_t *out, bool enc);

/*
 * The 12-byte counter of frame index for a direction (side bit 0x80 in byte 11 for the
 * server's direction), with overflow_len counter bytes. Returns false when index does
 * not fit in overflow_len bytes.
 */
bool hush__record_counter(uint64_t index, enum hush_side side, unsigned overflow_len,
			  uint8_t out[12]);

#endif /* HUSH_RECORD_INTERNAL_H */
