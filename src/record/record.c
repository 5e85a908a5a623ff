/*
 * ALTS records, sans I/O: framing, counters, the REKEY key schedule and the AEAD.
 *
 * "Section N" refers to docs/PROTOCOL.md, which restates gRPC's ALTS record protocol
 * (grpc-go credentials/alts/internal/conn, grpc C++ src/core/tsi/alts) and specifies
 * hush's ChaCha20-Poly1305 variant.
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>

#include "common/common-internal.h"
#include "record/record-internal.h"

#define NONCE_SIZE	  12
#define KDF_KEY_SIZE	  32
#define MASK_SIZE	  12
#define KDF_COUNTER_SIZE  6
#define MAX_AEAD_KEY_SIZE 32
#define SERVER_SIDE_BIT	  0x80
/* Counter bytes 0 and 1 vary under one derived key; bytes 2..7 select it (section 3.2). */
#define FRAMES_PER_KEY_LOG2 16
/* key_epoch of a REKEY direction whose key is not derived yet: epochs fit in 48 bits. */
#define NO_EPOCH UINT64_MAX

enum dir { SEAL = 0, OPEN = 1 };

/* Bits of hush_record.flags. */
#define F_SERVER	   0x01u
#define F_KEYED(which)	   (0x02u << (which)) /* dir[which].ctx holds dir[which].key */
#define F_EXHAUSTED(which) (0x08u << (which)) /* the last counter value was used */
#define F_HOLDS(which)	   (0x20u << (which)) /* dir[which].ctx is ours now */

/*
 * One direction: the next frame's index and the AEAD key of its epoch. 56 bytes.
 *
 * ctx is the cipher context the direction holds (F_HOLDS) or, once taken back, the one
 * it held last, kept only to be recognised (never used) when it comes back: a
 * connection alone on its loop gets the same contexts at every readiness event, and a
 * context that still holds this direction's key schedule is not keyed again (key
 * expansion and GCM's table, several hundred nanoseconds a record). A context comes
 * back keyed only if, besides being the same one, its application data still names
 * this direction: every keying here writes it (direction_ready), so a context keyed by
 * any other record context since, or freed and made anew at the same address, is not
 * taken for keyed. While this record context lives no other can own that address.
 */
struct direction {
	uint64_t index;			/* counter of the next frame, without the side bit */
	uint64_t key_epoch;		/* index >> 16 that key[] belongs to; NO_EPOCH before any */
	EVP_CIPHER_CTX *ctx;		/* see above; NULL before any was given */
	uint8_t key[MAX_AEAD_KEY_SIZE]; /* 16 bytes used for AES-128, 32 for ChaCha20 */
};

/*
 * An idle context is exactly this: 2 x 56 bytes of direction state, the 32-byte KDF key
 * and 12-byte nonce mask shared by both directions (section 3.2: both walk the same key
 * sequence, the side bit keeps them apart), limits, the sticky error, the protocol and
 * flags. 168 bytes on LP64, no pointers besides the lent cipher contexts.
 */
struct hush_record {
	struct direction dir[2];       /* [SEAL], [OPEN] */
	uint8_t kdf_key[KDF_KEY_SIZE]; /* REKEY protocols only; ALTSRP_GCM_AES128 keeps
					* its key in dir[].key */
	uint8_t mask[MASK_SIZE];
	uint32_t max_send_frame; /* total wire bytes of the largest frame sealed */
	uint32_t recv_limit;	 /* largest LENGTH accepted */
	int16_t err;		 /* sticky error, 0 while healthy */
	uint8_t rp;
	uint8_t flags;
};

/* ---- Protocol table ---- */

struct proto {
	const char *name;
	uint8_t key_size;      /* key material given to hush_record_new */
	uint8_t aead_key_size; /* key of the AEAD itself */
	uint8_t chacha;	       /* ChaCha20-Poly1305, else AES-128-GCM */
	uint8_t rekey;	       /* section 3.2 key schedule and nonce mask */
	uint64_t last_index;   /* last counter value: 2^(8 * overflow_len) - 1 (section 2) */
};

static const struct proto protos[] = {
    [HUSH_RP_ALTS_AES128_GCM_REKEY] = {"ALTSRP_GCM_AES128_REKEY", 44, 16, 0, 1, UINT64_MAX},
    [HUSH_RP_ALTS_AES128_GCM] = {"ALTSRP_GCM_AES128", 16, 16, 0, 0, ((uint64_t)1 << 40) - 1},
    [HUSH_RP_CHACHA20_POLY1305_REKEY] = {"HUSHRP_CHACHA20_POLY1305_REKEY", 44, 32, 1, 1,
					 UINT64_MAX},
};

static const struct proto *proto_of(enum hush_record_protocol rp)
{
	if ((unsigned)rp >= HUSH_ARRAY_SIZE(protos) || protos[rp].name == NULL) {
		return NULL;
	}
	return &protos[rp];
}

const char *hush_record_protocol_name(enum hush_record_protocol rp)
{
	const struct proto *p = proto_of(rp);
	return p != NULL ? p->name : NULL;
}

int hush_record_protocol_from_name(const char *name, enum hush_record_protocol *out)
{
	HUSH_ENSURE(name != NULL && out != NULL, HUSH_EINVAL);
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(protos); i++) {
		if (protos[i].name != NULL && strcmp(name, protos[i].name) == 0) {
			*out = (enum hush_record_protocol)i;
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

/* ---- Algorithms ---- */

/* Fetched once per process (src/common/algs.c); set by the first hush_record_new. */
static const struct hush_algs *algs;

static int fetch_algorithms(void)
{
	return hush__algs_get(&algs);
}

static const EVP_CIPHER *cipher_of(const struct proto *p)
{
	return p->chacha ? algs->chacha20poly1305 : algs->aes128gcm;
}

/* ---- Counters and keys ---- */

/*
 * Section 2: the counter of frame i is i as a 96-bit little-endian integer, whose carry
 * never leaves the first overflow_len bytes, with bit 7 of byte 11 set in the server's
 * direction. side_bit is 0 or SERVER_SIDE_BIT.
 */
static void build_counter(uint64_t index, uint8_t side_bit, uint8_t out[NONCE_SIZE])
{
	for (unsigned i = 0; i < 8; i++) {
		out[i] = (uint8_t)(index >> (8 * i));
	}
	out[8] = 0;
	out[9] = 0;
	out[10] = 0;
	out[11] = side_bit;
}

bool hush__record_counter(uint64_t index, enum hush_side side, unsigned overflow_len,
			  uint8_t out[12])
{
	if (overflow_len == 0 || overflow_len > 8 ||
	    (overflow_len < 8 && (index >> (8 * overflow_len)) != 0)) {
		return false;
	}
	build_counter(index, side == HUSH_SIDE_SERVER ? SERVER_SIDE_BIT : 0, out);
	return true;
}

/*
 * Section 3.2: the AEAD key of epoch e (counter bytes 2..7, i.e. frame index >> 16) is
 * HMAC-SHA256(kdf_key, e as 6 little-endian bytes || 0x01), truncated to the AEAD's key
 * size: 16 bytes for AES-128-GCM, all 32 for ChaCha20-Poly1305 (section 3.3). This is the
 * first block of HKDF-Expand(kdf_key, info = e, L). It runs once per 2^16 frames and
 * allocates inside OpenSSL, never per record.
 */
static int derive_key(const uint8_t kdf_key[KDF_KEY_SIZE], uint64_t epoch, uint8_t *key,
		      size_t key_len)
{
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};
	uint8_t msg[KDF_COUNTER_SIZE + 1];
	uint8_t mac[32];
	size_t mac_len = 0;
	int rc = HUSH_ECRYPTO;
	for (unsigned i = 0; i < KDF_COUNTER_SIZE; i++) {
		msg[i] = (uint8_t)(epoch >> (8 * i));
	}
	msg[KDF_COUNTER_SIZE] = 0x01;
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(algs->hmac);
	if (ctx == NULL || EVP_MAC_init(ctx, kdf_key, KDF_KEY_SIZE, params) != 1 ||
	    EVP_MAC_update(ctx, msg, sizeof(msg)) != 1 ||
	    EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) != 1 || mac_len != sizeof(mac)) {
		goto out;
	}
	memcpy(key, mac, key_len);
	rc = 0;
out:
	EVP_MAC_CTX_free(ctx);
	OPENSSL_cleanse(mac, sizeof(mac));
	return rc;
}

/* The side bit of frames going in direction which: ours when sealing, the peer's when
 * opening (section 2). */
static uint8_t side_bit_of(const struct hush_record *r, enum dir which)
{
	bool server = (r->flags & F_SERVER) != 0;
	return (server != (which == OPEN)) ? SERVER_SIDE_BIT : 0;
}

/*
 * The nonce of the next frame in direction which: its counter (section 2), XORed byte by
 * byte with the 12-byte mask for the REKEY protocols (sections 3.2, 3.3), used as is for
 * ALTSRP_GCM_AES128 (section 3.1). The exhaustion check keeps an ALTSRP_GCM_AES128 index
 * below 2^40, so bytes 5..10 are zero there as the 5-byte counter requires.
 */
static uint64_t load_le64(const uint8_t *p)
{
	return (uint64_t)hush__load_le32(p) | ((uint64_t)hush__load_le32(p + 4) << 32);
}

static void store_le64(uint8_t *p, uint64_t v)
{
	hush__store_le32(p, (uint32_t)v);
	hush__store_le32(p + 4, (uint32_t)(v >> 32));
}

/* As build_counter() and the mask byte by byte, in two words: this runs per record. */
static void build_nonce(const struct hush_record *r, const struct proto *p, enum dir which,
			uint8_t nonce[NONCE_SIZE])
{
	uint64_t lo = r->dir[which].index;		     /* counter bytes 0..7 */
	uint32_t hi = (uint32_t)side_bit_of(r, which) << 24; /* bytes 8..11 */
	if (p->rekey) {
		lo ^= load_le64(r->mask);
		hi ^= hush__load_le32(r->mask + 8);
	}
	store_le64(nonce, lo);
	hush__store_le32(nonce + 8, hi);
}

/* Makes dir[which].ctx ready for the next frame: derives the epoch's key when the
 * epoch changed (every 2^16 frames), and keys the context when it is not keyed. */
static int direction_ready(struct hush_record *r, const struct proto *p, enum dir which)
{
	struct direction *d = &r->dir[which];
	if (p->rekey) {
		uint64_t epoch = d->index >> FRAMES_PER_KEY_LOG2;
		if (epoch != d->key_epoch) {
			HUSH_GUARD(derive_key(r->kdf_key, epoch, d->key, p->aead_key_size));
			d->key_epoch = epoch;
			r->flags &= (uint8_t)~F_KEYED(which);
		}
	}
	if ((r->flags & F_KEYED(which)) == 0) {
		/* OpenSSL 3 frees and re-creates a context's provider state whenever a cipher
		 * is passed, even the one it already has: pass it only when the (possibly
		 * lent) context holds another, so that re-keying allocates nothing. The mark
		 * of struct direction goes first: a context that failed half-way is nobody's. */
		const EVP_CIPHER *want = cipher_of(p);
		const EVP_CIPHER *have = EVP_CIPHER_CTX_get0_cipher(d->ctx);
		EVP_CIPHER_CTX_set_app_data(d->ctx, NULL);
		if (EVP_CipherInit_ex(d->ctx, have == want ? NULL : want, NULL, d->key, NULL,
				      which == SEAL) != 1) {
			return HUSH_ECRYPTO;
		}
		EVP_CIPHER_CTX_set_app_data(d->ctx, d);
		r->flags |= F_KEYED(which);
	}
	return 0;
}

/* Section 2, overflow: the frame that used the last counter value succeeded; the next
 * seal or open in this direction fails with HUSH_ECOUNTER. */
static void direction_advance(struct hush_record *r, const struct proto *p, enum dir which)
{
	struct direction *d = &r->dir[which];
	if (d->index == p->last_index) {
		r->flags |= F_EXHAUSTED(which);
	} else {
		d->index++;
	}
}

static int rec_fail(struct hush_record *r, int err)
{
	r->err = (int16_t)err;
	return err;
}

/* ---- Creation and lending ---- */

static int record_create(struct hush_record **out, enum hush_record_protocol rp, const uint8_t *key,
			 size_t key_len, enum hush_side side, bool ciphers)
{
	HUSH_ENSURE(out != NULL && key != NULL, HUSH_EINVAL);
	HUSH_ENSURE(side == HUSH_SIDE_CLIENT || side == HUSH_SIDE_SERVER, HUSH_EINVAL);
	const struct proto *p = proto_of(rp);
	HUSH_ENSURE(p != NULL, HUSH_EPROTO_UNKNOWN);
	HUSH_ENSURE(key_len == p->key_size, HUSH_EKEYLEN);
	HUSH_GUARD(fetch_algorithms());

	struct hush_record *r = hush__calloc(sizeof(*r));
	HUSH_ENSURE(r != NULL, HUSH_ENOMEM);
	r->rp = (uint8_t)rp;
	r->flags = side == HUSH_SIDE_SERVER ? F_SERVER : 0;
	r->max_send_frame = HUSH_RECORD_DEFAULT_SEND_FRAME;
	r->recv_limit = HUSH_RECORD_DEFAULT_RECV_LIMIT;
	if (p->rekey) {
		/* Section 3.2: K[0..32) is the KDF key, K[32..44) the nonce mask. Keys are
		 * derived on first use, as grpc-go does. */
		memcpy(r->kdf_key, key, KDF_KEY_SIZE);
		memcpy(r->mask, key + KDF_KEY_SIZE, MASK_SIZE);
		r->dir[SEAL].key_epoch = NO_EPOCH;
		r->dir[OPEN].key_epoch = NO_EPOCH;
	} else {
		/* Section 3.1: one key for the whole connection, both directions. */
		memcpy(r->dir[SEAL].key, key, key_len);
		memcpy(r->dir[OPEN].key, key, key_len);
	}
	if (ciphers) {
		r->dir[SEAL].ctx = EVP_CIPHER_CTX_new();
		r->dir[OPEN].ctx = EVP_CIPHER_CTX_new();
		r->flags |= F_HOLDS(SEAL) | F_HOLDS(OPEN);
		if (r->dir[SEAL].ctx == NULL || r->dir[OPEN].ctx == NULL) {
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
	/* EVP_CIPHER_CTX_free wipes the key schedule; hush__free_secret wipes the keys. */
	if (r->flags & F_HOLDS(SEAL)) {
		EVP_CIPHER_CTX_free(r->dir[SEAL].ctx);
	}
	if (r->flags & F_HOLDS(OPEN)) {
		EVP_CIPHER_CTX_free(r->dir[OPEN].ctx);
	}
	hush__free_secret(r, sizeof(*r));
}

/* Whether ctx, given back to direction which, still holds its key (struct direction). */
static bool still_keyed(const struct hush_record *r, enum dir which, const EVP_CIPHER_CTX *ctx)
{
	const struct direction *d = &r->dir[which];
	return (r->flags & F_KEYED(which)) && ctx == d->ctx &&
	       EVP_CIPHER_CTX_get_app_data(ctx) == d;
}

void hush__record_give_ciphers(struct hush_record *r, EVP_CIPHER_CTX *seal, EVP_CIPHER_CTX *open)
{
	/* A cache handing contexts out last in, first out returns the pair swapped: each
	 * goes back to the direction that held it (both run the same cipher, and
	 * EVP_CipherInit_ex sets the direction per record anyway). */
	if (seal == r->dir[OPEN].ctx || open == r->dir[SEAL].ctx) {
		EVP_CIPHER_CTX *t = seal;
		seal = open;
		open = t;
	}
	uint8_t keep = 0;
	if (still_keyed(r, SEAL, seal)) {
		keep |= F_KEYED(SEAL);
	}
	if (still_keyed(r, OPEN, open)) {
		keep |= F_KEYED(OPEN);
	}
	r->dir[SEAL].ctx = seal;
	r->dir[OPEN].ctx = open;
	r->flags &= (uint8_t) ~(F_KEYED(SEAL) | F_KEYED(OPEN));
	r->flags |= (uint8_t)(keep | F_HOLDS(SEAL) | F_HOLDS(OPEN));
}

void hush__record_take_ciphers(struct hush_record *r, EVP_CIPHER_CTX **seal, EVP_CIPHER_CTX **open)
{
	/* The pointers and F_KEYED stay, to recognise the contexts if they come back. */
	*seal = (r->flags & F_HOLDS(SEAL)) ? r->dir[SEAL].ctx : NULL;
	*open = (r->flags & F_HOLDS(OPEN)) ? r->dir[OPEN].ctx : NULL;
	r->flags &= (uint8_t) ~(F_HOLDS(SEAL) | F_HOLDS(OPEN));
}

size_t hush__record_size(void)
{
	return sizeof(struct hush_record);
}

void hush__record_set_counters(struct hush_record *r, uint64_t seal_index, uint64_t open_index)
{
	const struct proto *p = proto_of((enum hush_record_protocol)r->rp);
	r->dir[SEAL].index = seal_index;
	r->dir[OPEN].index = open_index;
	r->flags &= (uint8_t) ~(F_EXHAUSTED(SEAL) | F_EXHAUSTED(OPEN));
	if (seal_index > p->last_index) {
		r->flags |= F_EXHAUSTED(SEAL);
	}
	if (open_index > p->last_index) {
		r->flags |= F_EXHAUSTED(OPEN);
	}
}

/* ---- Limits and state ---- */

int hush_record_set_limits(struct hush_record *r, size_t max_send_frame, size_t recv_limit)
{
	HUSH_ENSURE(r != NULL, HUSH_EINVAL);
	HUSH_ENSURE(max_send_frame == 0 ||
			(max_send_frame >= HUSH_RECORD_MIN_SEND_FRAME &&
			 max_send_frame <= HUSH_RECORD_MAX_RECV_LIMIT + HUSH_RECORD_LENGTH_SIZE),
		    HUSH_EINVAL);
	HUSH_ENSURE(recv_limit == 0 ||
			(recv_limit >= HUSH_RECORD_OVERHEAD - HUSH_RECORD_LENGTH_SIZE &&
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
	return r != NULL ? r->max_send_frame - HUSH_RECORD_OVERHEAD : 0;
}

size_t hush_record_max_frame(const struct hush_record *r)
{
	return r != NULL ? (size_t)r->recv_limit + HUSH_RECORD_LENGTH_SIZE : 0;
}

int hush_record_error(const struct hush_record *r)
{
	return r != NULL ? r->err : HUSH_EINVAL;
}

/* ---- Seal, parse, open ---- */

int hush_record_seal(struct hush_record *r, uint8_t *frame, size_t frame_cap, size_t payload_len,
		     size_t *frame_len)
{
	return hush__record_seal_from(r, frame, frame_cap, payload_len, NULL, payload_len,
				      frame_len);
}

int hush__record_seal_from(struct hush_record *r, uint8_t *frame, size_t frame_cap, size_t head_len,
			   const uint8_t *src, size_t payload_len, size_t *frame_len)
{
	HUSH_ENSURE(r != NULL && frame != NULL && frame_len != NULL && head_len <= payload_len &&
			(src != NULL || head_len == payload_len),
		    HUSH_EINVAL);
	if (r->err != 0) {
		return r->err;
	}
	/* Caller errors: nothing is touched and the context stays usable. */
	HUSH_ENSURE(payload_len <= hush_record_max_payload(r), HUSH_EMSGSIZE);
	HUSH_ENSURE(frame_cap >= payload_len + HUSH_RECORD_OVERHEAD, HUSH_ENOSPACE);
	HUSH_ENSURE(r->flags & F_HOLDS(SEAL), HUSH_ESTATE);
	if ((r->flags & F_EXHAUSTED(SEAL)) != 0) {
		return rec_fail(r, HUSH_ECOUNTER);
	}

	const struct proto *p = proto_of((enum hush_record_protocol)r->rp);
	EVP_CIPHER_CTX *ctx = r->dir[SEAL].ctx;
	uint8_t *payload = frame + HUSH_RECORD_HEADER_SIZE;
	uint8_t nonce[NONCE_SIZE];
	int n = 0;
	int rc = direction_ready(r, p, SEAL);
	if (rc < 0) {
		goto out;
	}
	build_nonce(r, p, SEAL, nonce);
	/* The tag is read as a parameter, what EVP_CIPHER_CTX_ctrl() would build and pass
	 * on, without the round through it (as open passes the tag with the nonce). Not
	 * OSSL_PARAM_modified(): OpenSSL 3.0's ChaCha20-Poly1305 copies the tag without
	 * marking the parameter. */
	OSSL_PARAM tag[] = {
	    OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, payload + payload_len,
					      HUSH_RECORD_TAG_SIZE),
	    OSSL_PARAM_construct_end(),
	};
	/*
	 * Section 1: no associated data. Any failure past this point is sticky: the payload
	 * may already be encrypted under this nonce, which therefore must never be used
	 * again, and a failed context never seals another frame.
	 */
	if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, 1) != 1 ||
	    (head_len > 0 && EVP_CipherUpdate(ctx, payload, &n, payload, (int)head_len) != 1) ||
	    (payload_len > head_len && EVP_CipherUpdate(ctx, payload + head_len, &n, src,
							(int)(payload_len - head_len)) != 1) ||
	    EVP_CipherFinal_ex(ctx, payload + payload_len, &n) != 1 ||
	    EVP_CIPHER_CTX_get_params(ctx, tag) != 1) {
		rc = HUSH_ECRYPTO;
		goto out;
	}
	/* Section 1: LENGTH counts TYPE, ciphertext and tag. */
	hush__store_le32(frame,
			 (uint32_t)(payload_len + HUSH_RECORD_OVERHEAD - HUSH_RECORD_LENGTH_SIZE));
	hush__store_le32(frame + HUSH_RECORD_LENGTH_SIZE, HUSH_RECORD_TYPE);
	direction_advance(r, p, SEAL);
	*frame_len = payload_len + HUSH_RECORD_OVERHEAD;
out:
	/* The nonce reveals the mask to anyone who knows the frame index. */
	OPENSSL_cleanse(nonce, sizeof(nonce));
	return rc < 0 ? rec_fail(r, rc) : 0;
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
	/* Section 5: LENGTH is judged as soon as it is in, before the caller reserves room
	 * for the frame; TYPE once it is in, all 32 bits of it. */
	uint32_t length = hush__load_le32(buf);
	if (length < HUSH_RECORD_OVERHEAD - HUSH_RECORD_LENGTH_SIZE) {
		return rec_fail(r, HUSH_EFRAME_SHORT);
	}
	if (length > r->recv_limit) {
		return rec_fail(r, HUSH_EFRAME_LONG);
	}
	if (len >= HUSH_RECORD_HEADER_SIZE &&
	    hush__load_le32(buf + HUSH_RECORD_LENGTH_SIZE) != HUSH_RECORD_TYPE) {
		return rec_fail(r, HUSH_EFRAME_TYPE);
	}
	size_t total = (size_t)length + HUSH_RECORD_LENGTH_SIZE;
	*need = total;
	return len >= total ? 0 : HUSH_EAGAIN;
}

int hush_record_open(struct hush_record *r, uint8_t *frame, size_t frame_len,
		     struct hush_iovec *plaintext)
{
	HUSH_ENSURE(r != NULL && frame != NULL && plaintext != NULL, HUSH_EINVAL);
	if (r->err != 0) {
		return r->err;
	}
	HUSH_ENSURE(r->flags & F_HOLDS(OPEN), HUSH_ESTATE);
	size_t need = 0;
	int rc = hush_record_parse(r, frame, frame_len, &need);
	if (rc == HUSH_EAGAIN || (rc == 0 && need != frame_len)) {
		return rec_fail(r, HUSH_EFRAME_PARTIAL);
	}
	HUSH_GUARD(rc); /* a framing error, already stored by parse */
	if ((r->flags & F_EXHAUSTED(OPEN)) != 0) {
		return rec_fail(r, HUSH_ECOUNTER);
	}

	const struct proto *p = proto_of((enum hush_record_protocol)r->rp);
	EVP_CIPHER_CTX *ctx = r->dir[OPEN].ctx;
	uint8_t *payload = frame + HUSH_RECORD_HEADER_SIZE;
	size_t plen = frame_len - HUSH_RECORD_OVERHEAD;
	uint8_t nonce[NONCE_SIZE];
	int n = 0;
	rc = direction_ready(r, p, OPEN);
	if (rc < 0) {
		goto out;
	}
	/* The peer sealed with its own side bit (section 2). The tag goes in with the nonce:
	 * the provider takes it the same way, without a separate EVP_CIPHER_CTX_ctrl()
	 * round through OpenSSL's dispatch (about 150 instructions a record). */
	build_nonce(r, p, OPEN, nonce);
	OSSL_PARAM tag[] = {
	    OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, payload + plen,
					      HUSH_RECORD_TAG_SIZE),
	    OSSL_PARAM_construct_end(),
	};
	if (EVP_CipherInit_ex2(ctx, NULL, NULL, nonce, 0, tag) != 1 ||
	    (plen > 0 && EVP_CipherUpdate(ctx, payload, &n, payload, (int)plen) != 1)) {
		rc = HUSH_ECRYPTO;
		goto wipe;
	}
	if (EVP_CipherFinal_ex(ctx, payload + n, &n) != 1) {
		rc = HUSH_EAUTH;
		goto wipe;
	}
	direction_advance(r, p, OPEN);
	plaintext->base = payload;
	plaintext->len = plen;
	goto out;
wipe:
	/* No plaintext leaves before its tag verifies: wipe what was decrypted in place. */
	OPENSSL_cleanse(payload, plen);
out:
	OPENSSL_cleanse(nonce, sizeof(nonce));
	return rc < 0 ? rec_fail(r, rc) : 0;
}

/* ---- The AEAD alone, for known-answer vectors ---- */

int hush__record_aead(enum hush_record_protocol rp, const uint8_t *key, const uint8_t counter[12],
		      const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
		      uint8_t *out, bool enc)
{
	const struct proto *p = proto_of(rp);
	HUSH_ENSURE(p != NULL, HUSH_EPROTO_UNKNOWN);
	HUSH_ENSURE(key != NULL && counter != NULL && (aad != NULL || aad_len == 0) &&
			(in != NULL || len == 0) && out != NULL && aad_len <= INT32_MAX &&
			len <= INT32_MAX,
		    HUSH_EINVAL);
	HUSH_GUARD(fetch_algorithms());
	if (!enc && len < HUSH_RECORD_TAG_SIZE) {
		return HUSH_EAUTH;
	}
	size_t body = enc ? len : len - HUSH_RECORD_TAG_SIZE;
	uint8_t aead_key[MAX_AEAD_KEY_SIZE];
	uint8_t nonce[NONCE_SIZE];
	EVP_CIPHER_CTX *ctx = NULL;
	int n = 0;
	int rc = 0;
	memcpy(nonce, counter, NONCE_SIZE);
	if (p->rekey) {
		/* Sections 3.2 and 3.3 with an explicit counter. */
		uint64_t epoch = 0;
		for (unsigned i = 0; i < KDF_COUNTER_SIZE; i++) {
			epoch |= (uint64_t)counter[2 + i] << (8 * i);
		}
		rc = derive_key(key, epoch, aead_key, p->aead_key_size);
		if (rc < 0) {
			goto out;
		}
		for (unsigned i = 0; i < NONCE_SIZE; i++) {
			nonce[i] ^= key[KDF_KEY_SIZE + i];
		}
	} else {
		memcpy(aead_key, key, p->aead_key_size);
	}
	ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL || EVP_CipherInit_ex(ctx, cipher_of(p), NULL, aead_key, nonce, enc) != 1 ||
	    (aad_len > 0 && EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1) ||
	    (body > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)body) != 1)) {
		rc = HUSH_ECRYPTO;
		goto fail_wipe;
	}
	if (enc) {
		if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1 ||
		    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, HUSH_RECORD_TAG_SIZE,
					out + body) != 1) {
			rc = HUSH_ECRYPTO;
		}
		goto out;
	}
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, HUSH_RECORD_TAG_SIZE,
				(void *)(uintptr_t)(in + body)) != 1) {
		rc = HUSH_ECRYPTO;
		goto fail_wipe;
	}
	if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1) {
		rc = HUSH_EAUTH;
		goto fail_wipe;
	}
	goto out;
fail_wipe:
	if (!enc) {
		OPENSSL_cleanse(out, body);
	}
out:
	EVP_CIPHER_CTX_free(ctx);
	OPENSSL_cleanse(aead_key, sizeof(aead_key));
	OPENSSL_cleanse(nonce, sizeof(nonce));
	return rc;
}
