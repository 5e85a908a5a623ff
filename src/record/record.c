/*
 * ALTS records, sans I/O: framing, counters, the REKEY key schedule and the AEAD.
 * Section numbers refer to docs/PROTOCOL.md, which restates gRPC's ALTS record
 * protocol (grpc-go credentials/alts/internal/conn, grpc C++ tsi/alts).
 */
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>

#include "common/common-internal.h"
#include "record/record-internal.h"

#define NONCE_SIZE 12
#define KDF_KEY_SIZE 32
#define MASK_SIZE 12
#define KDF_COUNTER_SIZE 6
#define FRAMES_PER_KEY_LOG2 16 /* counter bytes 0..1 vary under one key */

/* One direction's state: the next frame index, and the AEAD key for its epoch. */
struct direction {
	uint64_t index;      /* counter value of the next frame, without the side bit */
	uint64_t epoch;      /* index >> 16 that key[] was derived for (REKEY protocols) */
	EVP_CIPHER_CTX *ctx; /* NULL while none is lent */
	uint8_t key[32];     /* current AEAD key: 16 bytes for AES-128, 32 for ChaCha20 */
	bool exhausted;      /* the last counter value was used */
	bool keyed;          /* ctx holds key[] */
	bool epoch_valid;
};

struct hush_record {
	/* REKEY protocols: the KDF key and the nonce mask, shared by both directions
	 * (section 5: both walk the same key sequence; the side bit separates them).
	 * ALTSRP_GCM_AES128: the key in secret[0..16). */
	uint8_t secret[KDF_KEY_SIZE];
	uint8_t mask[MASK_SIZE];
	uint8_t rp;
	uint8_t side;
	int err;                 /* sticky error, 0 while healthy */
	uint32_t max_send_frame; /* total wire bytes of the largest frame sealed */
	uint32_t recv_limit;     /* largest LENGTH accepted */
	struct direction seal;
	struct direction open;
};

/* ---- Protocol table ---- */

struct proto {
	const char *name;
	size_t key_size;
	unsigned overflow_len; /* counter bytes that carry (section 3) */
	bool rekey;
	bool chacha;
};

static const struct proto *proto_of(enum hush_record_protocol rp)
{
	static const struct proto rekey = {"ALTSRP_GCM_AES128_REKEY", 44, 8, true, false};
	static const struct proto plain = {"ALTSRP_GCM_AES128", 16, 5, false, false};
	static const struct proto chacha = {"HUSHRP_CHACHA20_POLY1305_REKEY", 44, 8, true, true};
	switch (rp) {
	case HUSH_RP_ALTS_AES128_GCM_REKEY:
		return &rekey;
	case HUSH_RP_ALTS_AES128_GCM:
		return &plain;
	case HUSH_RP_CHACHA20_POLY1305_REKEY:
		return &chacha;
	}
	return NULL;
}

const char *hush_record_protocol_name(enum hush_record_protocol rp)
{
	const struct proto *p = proto_of(rp);
	return p != NULL ? p->name : NULL;
}

int hush_record_protocol_from_name(const char *name, enum hush_record_protocol *out)
{
	static const enum hush_record_protocol all[] = {HUSH_RP_ALTS_AES128_GCM_REKEY,
							HUSH_RP_ALTS_AES128_GCM,
							HUSH_RP_CHACHA20_POLY1305_REKEY};
	HUSH_ENSURE(name != NULL && out != NULL, HUSH_EINVAL);
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(all); i++) {
		if (strcmp(name, proto_of(all[i])->name) == 0) {
			*out = all[i];
			return 0;
		}
	}
	return HUSH_EPROTO_UNKNOWN;
}

size_t hush_record_key_size(enum hush_record_protocol rp)
{
	const struct proto *p = proto_of(rp);
	return p != NULL ? p->key_size : 0;
}

/* The ciphers, fetched once per process: implicit fetches per call would cost a lookup
 * on every record. */
static pthread_once_t ciphers_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *aes128gcm;
static EVP_CIPHER *chacha20poly1305;

static void fetch_ciphers(void)
{
	aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	chacha20poly1305 = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
}

static const EVP_CIPHER *cipher_of(const struct proto *p)
{
	pthread_once(&ciphers_once, fetch_ciphers);
	return p->chacha ? chacha20poly1305 : aes128gcm;
}

/* ---- Counters and keys ---- */

bool hush__record_counter(uint64_t index, enum hush_side side, unsigned overflow_len,
			  uint8_t out[12])
{
	if (overflow_len < 8 && (index >> (8 * overflow_len)) != 0) {
		return false;
	}
	/* Section 3: a 96-bit little-endian frame counter; the server's direction has bit 7
	 * of byte 11 set. Bytes past overflow_len stay zero. */
	memset(out, 0, NONCE_SIZE);
	for (unsigned i = 0; i < 8; i++) {
		out[i] = (uint8_t)(index >> (8 * i));
	}
	if (side == HUSH_SIDE_SERVER) {
		out[11] = 0x80;
	}
	return true;
}

/*
 * Section 5: the AEAD key for counter bytes 2..7 (the epoch) is
 * HMAC-SHA256(kdf_key, epoch as 6 little-endian bytes || 0x01), truncated to the
 * cipher's key size: the first block of HKDF-Expand(kdf_key, epoch, L).
 */
static int derive_key(const uint8_t kdf_key[KDF_KEY_SIZE], uint64_t epoch, uint8_t *key,
		      size_t key_len)
{
	uint8_t msg[KDF_COUNTER_SIZE + 1];
	uint8_t mac[32];
	unsigned int mac_len = 0;
	for (unsigned i = 0; i < KDF_COUNTER_SIZE; i++) {
		msg[i] = (uint8_t)(epoch >> (8 * i));
	}
	msg[KDF_COUNTER_SIZE] = 0x01;
	if (HMAC(EVP_sha256(), kdf_key, KDF_KEY_SIZE, msg, sizeof(msg), mac, &mac_len) == NULL ||
	    mac_len != sizeof(mac)) {
		OPENSSL_cleanse(mac, sizeof(mac));
		return HUSH_ECRYPTO;
	}
	memcpy(key, mac, key_len);
	OPENSSL_cleanse(mac, sizeof(mac));
	return 0;
}

static size_t aead_key_size(const struct proto *p)
{
	return p->chacha ? 32 : 16;
}

/* Makes d's context ready to seal or open frame d->index: derives the epoch's key when
 * it changed (every 2^16 frames) and keys the context when it is not. */
static int direction_prepare(const struct hush_record *r, const struct proto *p,
			     struct direction *d, int enc)
{
	if (p->rekey) {
		uint64_t epoch = d->index >> FRAMES_PER_KEY_LOG2;
		if (!d->epoch_valid || epoch != d->epoch) {
			HUSH_GUARD(derive_key(r->secret, epoch, d->key, aead_key_size(p)));
			d->epoch = epoch;
			d->epoch_valid = true;
			d->keyed = false;
		}
	}
	if (!d->keyed) {
		/* OpenSSL 3 frees and re-creates a context's provider state whenever a cipher
		 * is passed, even the one it already has: pass it only when the (possibly
		 * lent) context holds another, so re-keying allocates nothing. */
		const EVP_CIPHER *want = cipher_of(p);
		const EVP_CIPHER *have = EVP_CIPHER_CTX_get0_cipher(d->ctx);
		if (!EVP_CipherInit_ex(d->ctx, have == want ? NULL : want, NULL, d->key, NULL, enc)) {
			return HUSH_ECRYPTO;
		}
		d->keyed = true;
	}
	return 0;
}

/* The nonce of frame d->index: the counter, XORed with the mask for REKEY protocols. */
static void direction_nonce(const struct hush_record *r, const struct proto *p,
			    const struct direction *d, enum hush_side side, uint8_t nonce[12])
{
	(void)hush__record_counter(d->index, side, p->overflow_len, nonce);
	if (p->rekey) {
		for (unsigned i = 0; i < NONCE_SIZE; i++) {
			nonce[i] ^= r->mask[i];
		}
	}
}

/* Section 6: the frame that uses the last counter value succeeds; the next call fails. */
static void direction_advance(const struct proto *p, struct direction *d)
{
	uint64_t last = p->overflow_len >= 8 ? UINT64_MAX
					     : (((uint64_t)1 << (8 * p->overflow_len)) - 1);
	if (d->index == last) {
		d->exhausted = true;
	} else {
		d->index++;
	}
}

static int fail(struct hush_record *r, int err)
{
	r->err = err;
	return err;
}

/* ---- Creation ---- */

static int record_create(struct hush_record **out, enum hush_record_protocol rp,
			 const uint8_t *key, size_t key_len, enum hush_side side, bool ciphers)
{
	HUSH_ENSURE(out != NULL && (key != NULL || key_len == 0), HUSH_EINVAL);
	HUSH_ENSURE(side == HUSH_SIDE_CLIENT || side == HUSH_SIDE_SERVER, HUSH_EINVAL);
	const struct proto *p = proto_of(rp);
	HUSH_ENSURE(p != NULL, HUSH_EPROTO_UNKNOWN);
	HUSH_ENSURE(key_len == p->key_size, HUSH_EKEYLEN);
	HUSH_ENSURE(cipher_of(p) != NULL, HUSH_ECRYPTO);

	struct hush_record *r = hush__calloc(sizeof(*r));
	HUSH_ENSURE(r != NULL, HUSH_ENOMEM);
	r->rp = (uint8_t)rp;
	r->side = (uint8_t)side;
	r->max_send_frame = HUSH_RECORD_DEFAULT_SEND_FRAME;
	r->recv_limit = HUSH_RECORD_DEFAULT_RECV_LIMIT;
	if (p->rekey) {
		memcpy(r->secret, key, KDF_KEY_SIZE);
		memcpy(r->mask, key + KDF_KEY_SIZE, MASK_SIZE);
	} else {
		memcpy(r->secret, key, key_len);
		memcpy(r->seal.key, key, key_len);
		memcpy(r->open.key, key, key_len);
	}
	if (ciphers) {
		r->seal.ctx = EVP_CIPHER_CTX_new();
		r->open.ctx = EVP_CIPHER_CTX_new();
		if (r->seal.ctx == NULL || r->open.ctx == NULL) {
			hush_record_free(r);
			return HUSH_ENOMEM;
		}
	}
	*out = r;
	return 0;
}

int hush_record_new(struct hush_record **out, enum hush_record_protocol rp, const uint8_t *key,
		    size_t key_len, enum hush_side side)
{
	return record_create(out, rp, key, key_len, side, true);
}

int hush__record_new_bare(struct hush_record **out, enum hush_record_protocol rp,
			  const uint8_t *key, size_t key_len, enum hush_side side)
{
	return record_create(out, rp, key, key_len, side, false);
}

void hush_record_free(struct hush_record *r)
{
	if (r == NULL) {
		return;
	}
	EVP_CIPHER_CTX_free(r->seal.ctx);
	EVP_CIPHER_CTX_free(r->open.ctx);
	hush__free_secret(r, sizeof(*r));
}

void hush__record_give_ciphers(struct hush_record *r, EVP_CIPHER_CTX *seal,
			       EVP_CIPHER_CTX *open)
{
	r->seal.ctx = seal;
	r->open.ctx = open;
	r->seal.keyed = false;
	r->open.keyed = false;
}

void hush__record_take_ciphers(struct hush_record *r, EVP_CIPHER_CTX **seal,
			       EVP_CIPHER_CTX **open)
{
	*seal = r->seal.ctx;
	*open = r->open.ctx;
	r->seal.ctx = NULL;
	r->open.ctx = NULL;
	r->seal.keyed = false;
	r->open.keyed = false;
}

size_t hush__record_size(void)
{
	return sizeof(struct hush_record);
}

void hush__record_set_counters(struct hush_record *r, uint64_t seal_index, uint64_t open_index)
{
	r->seal.index = seal_index;
	r->open.index = open_index;
	r->seal.exhausted = false;
	r->open.exhausted = false;
}

int hush_record_set_limits(struct hush_record *r, size_t max_send_frame, size_t recv_limit)
{
	HUSH_ENSURE(r != NULL, HUSH_EINVAL);
	HUSH_ENSURE(max_send_frame == 0 || (max_send_frame >= HUSH_RECORD_MIN_SEND_FRAME &&
					    max_send_frame <= HUSH_RECORD_MAX_RECV_LIMIT + 4),
		    HUSH_EINVAL);
	HUSH_ENSURE(recv_limit == 0 || (recv_limit >= HUSH_RECORD_OVERHEAD - 4 &&
					recv_limit <= HUSH_RECORD_MAX_RECV_LIMIT),
		    HUSH_EINVAL);
	if (max_send_frame != 0) {
		r->max_send_frame = (uint32_t)max_send_frame;
	}
	if (recv_limit != 0) {
		r->recv_limit = (uint32_t)recv_limit;
	}
	return 0;
}

size_t hush_record_max_payload(const struct hush_record *r)
{
	return r->max_send_frame - HUSH_RECORD_OVERHEAD;
}

size_t hush_record_max_frame(const struct hush_record *r)
{
	return (size_t)r->recv_limit + HUSH_RECORD_LENGTH_SIZE;
}

int hush_record_error(const struct hush_record *r)
{
	return r->err;
}

/* ---- Seal, parse, open ---- */

int hush_record_seal(struct hush_record *r, uint8_t *frame, size_t frame_cap, size_t payload_len,
		     size_t *frame_len)
{
	HUSH_ENSURE(r != NULL && frame != NULL && frame_len != NULL, HUSH_EINVAL);
	if (r->err != 0) {
		return r->err;
	}
	HUSH_ENSURE(payload_len <= hush_record_max_payload(r), HUSH_EMSGSIZE);
	HUSH_ENSURE(frame_cap >= payload_len + HUSH_RECORD_OVERHEAD, HUSH_ENOSPACE);
	struct direction *d = &r->seal;
	HUSH_ENSURE(d->ctx != NULL, HUSH_ESTATE);
	if (d->exhausted) {
		return fail(r, HUSH_ECOUNTER);
	}
	const struct proto *p = proto_of((enum hush_record_protocol)r->rp);
	int rc = direction_prepare(r, p, d, 1);
	if (rc < 0) {
		return fail(r, rc);
	}
	uint8_t nonce[NONCE_SIZE];
	direction_nonce(r, p, d, (enum hush_side)r->side, nonce);
	uint8_t *payload = frame + HUSH_RECORD_HEADER_SIZE;
	int n = 0;
	int ok = EVP_CipherInit_ex(d->ctx, NULL, NULL, NULL, nonce, 1) &&
		 (payload_len == 0 ||
		  EVP_CipherUpdate(d->ctx, payload, &n, payload, (int)payload_len)) &&
		 EVP_CipherFinal_ex(d->ctx, payload + n, &n) &&
		 EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_GET_TAG, HUSH_RECORD_TAG_SIZE,
				     payload + payload_len);
	if (!ok) {
		return fail(r, HUSH_ECRYPTO);
	}
	/* Section 1: LENGTH counts TYPE, ciphertext and tag; no AAD covers the header. */
	hush__store_le32(frame, (uint32_t)(payload_len + HUSH_RECORD_OVERHEAD - 4));
	hush__store_le32(frame + 4, HUSH_RECORD_TYPE);
	direction_advance(p, d);
	*frame_len = payload_len + HUSH_RECORD_OVERHEAD;
	return 0;
}

int hush_record_parse(struct hush_record *r, const uint8_t *buf, size_t len, size_t *need)
{
	HUSH_ENSURE(r != NULL && need != NULL && (buf != NULL || len == 0), HUSH_EINVAL);
	if (r->err != 0) {
		return r->err;
	}
	if (len < HUSH_RECORD_LENGTH_SIZE) {
		*need = HUSH_RECORD_LENGTH_SIZE;
		return HUSH_EAGAIN;
	}
	/* Section 7: validate LENGTH before any memory is reserved for the frame. */
	uint32_t length = hush__load_le32(buf);
	if (length < HUSH_RECORD_OVERHEAD - 4) {
		return fail(r, HUSH_EFRAME_SHORT);
	}
	if (length > r->recv_limit) {
		return fail(r, HUSH_EFRAME_LONG);
	}
	if (len >= HUSH_RECORD_HEADER_SIZE && hush__load_le32(buf + 4) != HUSH_RECORD_TYPE) {
		return fail(r, HUSH_EFRAME_TYPE);
	}
	*need = (size_t)length + HUSH_RECORD_LENGTH_SIZE;
	return len >= *need ? 0 : HUSH_EAGAIN;
}

int hush_record_open(struct hush_record *r, uint8_t *frame, size_t frame_len,
		     struct hush_iovec *plaintext)
{
	HUSH_ENSURE(r != NULL && frame != NULL && plaintext != NULL, HUSH_EINVAL);
	if (r->err != 0) {
		return r->err;
	}
	size_t need;
	int rc = hush_record_parse(r, frame, frame_len, &need);
	if (rc == HUSH_EAGAIN || (rc == 0 && need != frame_len)) {
		return HUSH_EFRAME_PARTIAL;
	}
	HUSH_GUARD(rc);
	struct direction *d = &r->open;
	HUSH_ENSURE(d->ctx != NULL, HUSH_ESTATE);
	if (d->exhausted) {
		return fail(r, HUSH_ECOUNTER);
	}
	const struct proto *p = proto_of((enum hush_record_protocol)r->rp);
	rc = direction_prepare(r, p, d, 0);
	if (rc < 0) {
		return fail(r, rc);
	}
	/* The peer's frames carry the peer's side bit. */
	enum hush_side peer = r->side == HUSH_SIDE_CLIENT ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	uint8_t nonce[NONCE_SIZE];
	direction_nonce(r, p, d, peer, nonce);
	size_t plen = frame_len - HUSH_RECORD_OVERHEAD;
	uint8_t *payload = frame + HUSH_RECORD_HEADER_SIZE;
	int n = 0;
	int ok = EVP_CipherInit_ex(d->ctx, NULL, NULL, NULL, nonce, 0) &&
		 (plen == 0 || EVP_CipherUpdate(d->ctx, payload, &n, payload, (int)plen)) &&
		 EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_TAG, HUSH_RECORD_TAG_SIZE,
				     payload + plen);
	if (!ok) {
		OPENSSL_cleanse(payload, plen);
		return fail(r, HUSH_ECRYPTO);
	}
	if (EVP_CipherFinal_ex(d->ctx, payload + n, &n) <= 0) {
		/* No plaintext leaves before its tag verifies: wipe what was decrypted. */
		OPENSSL_cleanse(payload, plen);
		return fail(r, HUSH_EAUTH);
	}
	direction_advance(p, d);
	plaintext->base = payload;
	plaintext->len = plen;
	return 0;
}

/* ---- Known-answer access to the AEAD ---- */

int hush__record_aead(enum hush_record_protocol rp, const uint8_t *key,
		      const uint8_t counter[12], const uint8_t *aad, size_t aad_len,
		      const uint8_t *in, size_t len, uint8_t *out, bool enc)
{
	const struct proto *p = proto_of(rp);
	HUSH_ENSURE(p != NULL, HUSH_EPROTO_UNKNOWN);
	uint8_t aead_key[32];
	uint8_t nonce[NONCE_SIZE];
	memcpy(nonce, counter, NONCE_SIZE);
	int rc = 0;
	if (p->rekey) {
		uint64_t epoch = 0;
		for (unsigned i = 0; i < KDF_COUNTER_SIZE; i++) {
			epoch |= (uint64_t)counter[2 + i] << (8 * i);
		}
		HUSH_GUARD(derive_key(key, epoch, aead_key, aead_key_size(p)));
		for (unsigned i = 0; i < NONCE_SIZE; i++) {
			nonce[i] ^= key[KDF_KEY_SIZE + i];
		}
	} else {
		memcpy(aead_key, key, p->key_size);
	}
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n = 0;
	if (ctx == NULL || !EVP_CipherInit_ex(ctx, cipher_of(p), NULL, aead_key, nonce, enc) ||
	    (aad_len > 0 && !EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len))) {
		rc = HUSH_ECRYPTO;
		goto out;
	}
	if (enc) {
		if ((len > 0 && !EVP_CipherUpdate(ctx, out, &n, in, (int)len)) ||
		    !EVP_CipherFinal_ex(ctx, out + n, &n) ||
		    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, HUSH_RECORD_TAG_SIZE,
					 out + len)) {
			rc = HUSH_ECRYPTO;
		}
		goto out;
	}
	if (len < HUSH_RECORD_TAG_SIZE) {
		rc = HUSH_EAUTH;
		goto out;
	}
	len -= HUSH_RECORD_TAG_SIZE;
	if ((len > 0 && !EVP_CipherUpdate(ctx, out, &n, in, (int)len)) ||
	    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, HUSH_RECORD_TAG_SIZE,
				 (void *)(in + len))) {
		rc = HUSH_ECRYPTO;
		goto out;
	}
	if (EVP_CipherFinal_ex(ctx, out + n, &n) <= 0) {
		OPENSSL_cleanse(out, len);
		rc = HUSH_EAUTH;
	}
out:
	EVP_CIPHER_CTX_free(ctx);
	OPENSSL_cleanse(aead_key, sizeof(aead_key));
	return rc;
}
