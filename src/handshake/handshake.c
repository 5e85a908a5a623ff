/*
 * hush's handshake (docs/PROTOCOL.md, Part II) on the Noise core (noise.c): framing,
 * the prologue, the parameter block, peer verification and the derivation of the
 * record key material. Sans I/O: bytes in, bytes out.
 */
#include <string.h>

#include <openssl/crypto.h>

#include <hush/handshake.h>

#include "common/common-internal.h"
#include "handshake/handshake-internal.h"

/* The longest first flight (a hello at its longest, then a message with two keys, two
 * tags and the longest parameter block) fits in what the header promises, and hush
 * accepts every message it sends. */
_Static_assert(2 * HUSH_HS_LENGTH_SIZE + HUSH_HS_PROLOGUE_MAX + 2 * (NOISE_DHLEN + NOISE_TAGLEN) +
		       HUSH_PARAMS_MAX + NOISE_TAGLEN <=
		   HUSH_HANDSHAKE_MAX_OUTPUT,
	       "HUSH_HANDSHAKE_MAX_OUTPUT is too small for hush's own messages");
_Static_assert(HUSH_HANDSHAKE_MAX_OUTPUT <= HUSH_HANDSHAKE_MAX_MESSAGE,
	       "hush must accept every message it sends");

/* ---- Protocol names ---- */

static const struct {
	enum noise_pattern pattern;
	enum noise_cipher cipher;
} protocols[] = {
    [HUSH_NOISE_XX_25519_AESGCM_SHA256] = {NOISE_XX, NOISE_AESGCM},
    [HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256] = {NOISE_XX, NOISE_CHACHAPOLY},
    [HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256] = {NOISE_XXPSK3, NOISE_AESGCM},
    [HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256] = {NOISE_XXPSK3, NOISE_CHACHAPOLY},
    [HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256] = {NOISE_NNPSK0, NOISE_AESGCM},
    [HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256] = {NOISE_NNPSK0, NOISE_CHACHAPOLY},
};

static bool known_protocol(enum hush_noise_protocol p)
{
	return p >= HUSH_NOISE_XX_25519_AESGCM_SHA256 &&
	       p <= HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256;
}

const char *hush_noise_protocol_name(enum hush_noise_protocol p)
{
	if (!known_protocol(p)) {
		return NULL;
	}
	return hush__noise_protocol_name(protocols[p].pattern, protocols[p].cipher);
}

int hush_noise_protocol_from_name(const char *name, enum hush_noise_protocol *out)
{
	HUSH_ENSURE(name != NULL && out != NULL, HUSH_EINVAL);
	for (int p = HUSH_NOISE_XX_25519_AESGCM_SHA256;
	     p <= HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256; p++) {
		if (strcmp(name, hush_noise_protocol_name((enum hush_noise_protocol)p)) == 0) {
			*out = (enum hush_noise_protocol)p;
			return 0;
		}
	}
	return HUSH_EPROTO_UNKNOWN;
}

enum hush_record_protocol hush_noise_default_record_protocol(enum hush_noise_protocol p)
{
	if (!known_protocol(p)) {
		return HUSH_RP_AUTO;
	}
	/* Both ends derive this from the Noise name alone, which the prologue makes equal
	 * at both ends: two ends left at the default therefore agree without any
	 * negotiation, as the parameter block requires. */
	return protocols[p].cipher == NOISE_CHACHAPOLY ? HUSH_RP_CHACHA20_POLY1305_REKEY
						       : HUSH_RP_ALTS_AES128_GCM_REKEY;
}

/* ---- The prologue and the parameter block ---- */

size_t hush__handshake_prologue(enum hush_noise_protocol p, uint8_t out[HUSH_HS_PROLOGUE_MAX])
{
	const char *name = hush_noise_protocol_name(p);
	if (name == NULL) {
		return 0;
	}
	size_t nl = strlen(name);
	memcpy(out, HUSH_HS_VERSION, HUSH_HS_VERSION_LEN);
	out[HUSH_HS_VERSION_LEN] = 0;
	out[HUSH_HS_VERSION_LEN + 1] = (uint8_t)nl;
	memcpy(out + HUSH_HS_PROLOGUE_MIN, name, nl);
	return HUSH_HS_PROLOGUE_MIN + nl;
}

static size_t put_entry(uint8_t *out, size_t off, enum hush__param_type type, const void *value,
			size_t len)
{
	out[off] = (uint8_t)type;
	out[off + 1] = (uint8_t)len;
	memcpy(out + off + 2, value, len);
	return off + 2 + len;
}

static void store_be32(uint8_t p[4], uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t load_be32(const uint8_t p[4])
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

size_t hush__params_encode(const struct hush__params *p, uint8_t out[HUSH_PARAMS_MAX])
{
	const char *rp = hush_record_protocol_name(p->record_protocol);
	uint8_t be[4];
	size_t off = 0;
	out[off++] = HUSH_PARAMS_VERSION;
	off = put_entry(out, off, HUSH_PARAM_RECORD_PROTOCOL, rp, strlen(rp));
	store_be32(be, p->recv_limit);
	off = put_entry(out, off, HUSH_PARAM_RECV_LIMIT, be, sizeof(be));
	store_be32(be, p->max_send_frame);
	off = put_entry(out, off, HUSH_PARAM_MAX_SEND_FRAME, be, sizeof(be));
	if (p->app_protocol_len > 0) {
		off = put_entry(out, off, HUSH_PARAM_APP_PROTOCOL, p->app_protocol,
				p->app_protocol_len);
	}
	return off;
}

/* A cursor over untrusted bytes: a read that the bytes cannot satisfy fails and leaves
 * the cursor where it was. */
struct cursor {
	const uint8_t *p;
	size_t len;
};

static bool take(struct cursor *c, size_t n, const uint8_t **out)
{
	if (c->len < n) {
		return false;
	}
	*out = c->p;
	c->p += n;
	c->len -= n;
	return true;
}

int hush__params_decode(const uint8_t *in, size_t len, struct hush__params *out)
{
	struct cursor c = {in, len};
	const uint8_t *v, *hdr;
	HUSH_ENSURE(take(&c, 1, &v), HUSH_EHANDSHAKE);
	/* Another version may lay out the rest differently: nothing more can be read. */
	HUSH_ENSURE(v[0] == HUSH_PARAMS_VERSION, HUSH_EPARAMS);
	struct hush__params p;
	memset(&p, 0, sizeof(p));
	unsigned seen = 0;
	bool rp_known = false;
	while (c.len > 0) {
		HUSH_ENSURE(take(&c, 2, &hdr) && take(&c, hdr[1], &v), HUSH_EHANDSHAKE);
		unsigned type = hdr[0];
		size_t n = hdr[1];
		if (type < HUSH_PARAM_RECORD_PROTOCOL || type > HUSH_PARAM_APP_PROTOCOL) {
			continue; /* unknown entries are skipped: room to extend */
		}
		HUSH_ENSURE((seen & (1u << type)) == 0, HUSH_EHANDSHAKE);
		seen |= 1u << type;
		switch (type) {
		case HUSH_PARAM_RECORD_PROTOCOL: {
			HUSH_ENSURE(n > 0, HUSH_EHANDSHAKE);
			char name[256];
			memcpy(name, v, n);
			name[n] = '\0';
			/* An unknown name is judged once the whole block is known well formed. */
			rp_known = memchr(v, 0, n) == NULL &&
				   hush_record_protocol_from_name(name, &p.record_protocol) == 0;
			break;
		}
		case HUSH_PARAM_RECV_LIMIT:
			HUSH_ENSURE(n == 4, HUSH_EHANDSHAKE);
			p.recv_limit = load_be32(v);
			break;
		case HUSH_PARAM_MAX_SEND_FRAME:
			HUSH_ENSURE(n == 4, HUSH_EHANDSHAKE);
			p.max_send_frame = load_be32(v);
			break;
		default: /* HUSH_PARAM_APP_PROTOCOL */
			HUSH_ENSURE(n > 0 && memchr(v, 0, n) == NULL, HUSH_EHANDSHAKE);
			memcpy(p.app_protocol, v, n);
			p.app_protocol[n] = '\0';
			p.app_protocol_len = n;
			break;
		}
	}
	const unsigned required = 1u << HUSH_PARAM_RECORD_PROTOCOL | 1u << HUSH_PARAM_RECV_LIMIT |
				  1u << HUSH_PARAM_MAX_SEND_FRAME;
	HUSH_ENSURE((seen & required) == required && rp_known, HUSH_EPARAMS);
	HUSH_ENSURE(p.recv_limit >= HUSH_PARAMS_MIN_RECV_LIMIT &&
			p.max_send_frame >= HUSH_PARAMS_MIN_SEND_FRAME,
		    HUSH_EPARAMS);
	*out = p;
	return 0;
}

/* ---- Objects ---- */

void hush_handshake_config_init(struct hush_handshake_config *cfg)
{
	if (cfg != NULL) {
		*cfg = (struct hush_handshake_config){
		    .protocol = HUSH_NOISE_XX_25519_AESGCM_SHA256,
		    .record_protocol = HUSH_RP_AUTO,
		    .recv_limit = HUSH_RECORD_DEFAULT_RECV_LIMIT,
		    .max_send_frame = HUSH_RECORD_DEFAULT_SEND_FRAME,
		};
	}
}

void hush_handshake_result_wipe(struct hush_handshake_result *res)
{
	if (res != NULL) {
		OPENSSL_cleanse(res, sizeof(*res));
	}
}

static bool uses_static_keys(enum hush_noise_protocol p)
{
	return protocols[p].pattern != NOISE_NNPSK0;
}

static bool uses_psk(enum hush_noise_protocol p)
{
	return protocols[p].pattern != NOISE_XX;
}

static int check_config(const struct hush_handshake_config *cfg, enum hush_side side)
{
	HUSH_ENSURE(known_protocol(cfg->protocol), HUSH_EINVAL);
	HUSH_ENSURE(side == HUSH_SIDE_CLIENT || side == HUSH_SIDE_SERVER, HUSH_EINVAL);
	bool s = uses_static_keys(cfg->protocol);
	HUSH_ENSURE((cfg->keypair != NULL) == s, HUSH_EINVAL);
	HUSH_ENSURE((cfg->psk != NULL) == uses_psk(cfg->protocol), HUSH_EINVAL);
	HUSH_ENSURE(cfg->n_allowed_peers == 0 || cfg->allowed_peers != NULL, HUSH_EINVAL);
	bool verifies = cfg->n_allowed_peers > 0 || cfg->verify != NULL;
	HUSH_ENSURE(s || !verifies, HUSH_EINVAL);
	HUSH_ENSURE(cfg->record_protocol == HUSH_RP_AUTO ||
			hush_record_key_size(cfg->record_protocol) != 0,
		    HUSH_EPROTO_UNKNOWN);
	HUSH_ENSURE(cfg->recv_limit >= HUSH_PARAMS_MIN_RECV_LIMIT &&
			cfg->recv_limit <= HUSH_RECORD_MAX_RECV_LIMIT,
		    HUSH_EINVAL);
	HUSH_ENSURE(cfg->max_send_frame >= HUSH_RECORD_MIN_SEND_FRAME &&
			cfg->max_send_frame <= HUSH_RECORD_MAX_RECV_LIMIT + HUSH_RECORD_LENGTH_SIZE,
		    HUSH_EINVAL);
	if (cfg->app_protocol != NULL) {
		size_t n = strnlen(cfg->app_protocol, HUSH_APP_PROTOCOL_MAX + 1);
		HUSH_ENSURE(n >= 1 && n <= HUSH_APP_PROTOCOL_MAX, HUSH_EINVAL);
	}
	/* Static keys that nobody checks authenticate nobody: fail closed. */
	HUSH_ENSURE(!s || verifies, HUSH_ENOVERIFY);
	return 0;
}

int hush__handshake_check_config(const struct hush_handshake_config *cfg, enum hush_side side)
{
	HUSH_ENSURE(cfg != NULL, HUSH_EINVAL);
	return check_config(cfg, side);
}

int hush_handshake_new(struct hush_handshake **out, const struct hush_handshake_config *cfg,
		       enum hush_side side)
{
	HUSH_ENSURE(out != NULL && cfg != NULL, HUSH_EINVAL);
	HUSH_GUARD(check_config(cfg, side));
	struct hush_handshake *hs = hush__calloc(sizeof(*hs));
	HUSH_ENSURE(hs != NULL, HUSH_ENOMEM);
	hs->protocol = (uint8_t)cfg->protocol;
	hs->initiator = side == HUSH_SIDE_CLIENT;
	hs->mine.record_protocol = cfg->record_protocol != HUSH_RP_AUTO
				       ? cfg->record_protocol
				       : hush_noise_default_record_protocol(cfg->protocol);
	hs->mine.recv_limit = (uint32_t)cfg->recv_limit;
	hs->mine.max_send_frame = (uint32_t)cfg->max_send_frame;
	if (cfg->app_protocol != NULL) {
		hs->mine.app_protocol_len = strlen(cfg->app_protocol);
		memcpy(hs->mine.app_protocol, cfg->app_protocol, hs->mine.app_protocol_len);
	}
	hs->allowed = cfg->allowed_peers;
	hs->n_allowed = cfg->n_allowed_peers;
	hs->verify = cfg->verify;
	hs->verify_arg = cfg->verify_arg;
	uint8_t prologue[HUSH_HS_PROLOGUE_MAX];
	size_t prologue_len = hush__handshake_prologue(cfg->protocol, prologue);
	/* The pair is shared read-only; its key object is a cache, made once. */
	struct hush_keypair *kp = (struct hush_keypair *)cfg->keypair;
	int rc = hush__noise_init(&hs->noise, protocols[cfg->protocol].pattern,
				  protocols[cfg->protocol].cipher, hs->initiator, prologue,
				  prologue_len, kp != NULL ? kp->priv : NULL,
				  kp != NULL ? hush__keypair_dh(kp) : NULL, cfg->psk);
	if (rc != 0) {
		hush_handshake_free(hs);
		return rc;
	}
	*out = hs;
	return 0;
}

EVP_PKEY_CTX *hush__keypair_dh(struct hush_keypair *kp)
{
	EVP_PKEY_CTX *ctx = atomic_load(&kp->dh);
	if (ctx != NULL) {
		return ctx;
	}
	uint8_t pub[HUSH_KEY_SIZE];
	if (hush__noise_dh_ctx(kp->priv, &ctx, pub) != 0) {
		return NULL; /* hush__noise_init then makes its own */
	}
	EVP_PKEY_CTX *none = NULL;
	if (!atomic_compare_exchange_strong(&kp->dh, &none, ctx)) {
		EVP_PKEY_CTX_free(ctx); /* another thread was first */
		ctx = none;
	}
	return ctx;
}

/* Wipes and frees the copy of a message that came in pieces. */
static void drop_message(struct hush_handshake *hs)
{
	if (hs->msg != NULL) {
		hush__free_secret(hs->msg, hs->msg_cap);
		hs->msg = NULL;
	}
	hs->msg_cap = hs->msg_have = 0;
}

void hush_handshake_free(struct hush_handshake *hs)
{
	if (hs == NULL) {
		return;
	}
	drop_message(hs);
	hush__noise_wipe(&hs->noise); /* frees its key objects; a no-op once wiped */
	hush__free_secret(hs, sizeof(*hs));
}

void hush__handshake_set_ephemeral(struct hush_handshake *hs, const uint8_t e_priv[NOISE_DHLEN])
{
	hush__noise_set_ephemeral(&hs->noise, e_priv);
}

/* Fails the handshake for good, dropping every secret it holds. */
static int hs_fail(struct hush_handshake *hs, int err)
{
	hs->err = err;
	hush__noise_wipe(&hs->noise);
	drop_message(hs);
	OPENSSL_cleanse(hs->key, sizeof(hs->key));
	return err;
}

bool hush_handshake_wants_write(const struct hush_handshake *hs)
{
	return hs != NULL && hs->err == 0 && !hs->done && hush__noise_my_turn(&hs->noise);
}

bool hush_handshake_wants_read(const struct hush_handshake *hs)
{
	return hs != NULL && hs->err == 0 && !hs->done && !hush__noise_my_turn(&hs->noise);
}

bool hush_handshake_done(const struct hush_handshake *hs)
{
	return hs != NULL && hs->err == 0 && hs->done;
}

int hush_handshake_error(const struct hush_handshake *hs)
{
	return hs != NULL ? hs->err : HUSH_EINVAL;
}

/* ---- Peer checks and the record keys ---- */

static int verify_peer(const struct hush_handshake *hs, const uint8_t rs[NOISE_DHLEN])
{
	for (size_t i = 0; i < hs->n_allowed; i++) {
		if (CRYPTO_memcmp(hs->allowed[i], rs, NOISE_DHLEN) == 0) {
			return 0;
		}
	}
	if (hs->verify != NULL && hs->verify(rs, hs->verify_arg) == 0) {
		return 0;
	}
	return HUSH_EPEER;
}

/* Decodes the peer's parameter block into *out and checks it against ours. */
static int accept_params(const struct hush_handshake *hs, const uint8_t *block, size_t len,
			 struct hush__params *out)
{
	struct hush__params p;
	HUSH_GUARD(hush__params_decode(block, len, &p));
	HUSH_ENSURE(p.record_protocol == hs->mine.record_protocol, HUSH_EPARAMS);
	*out = p;
	return 0;
}

/*
 * The last message is through: the record key material (docs/PROTOCOL.md, Part II,
 * "Record keys"), from Noise's Split() keys and handshake hash h:
 *   k1, k2 = Split()
 *   key    = HKDF-SHA256(salt = h, IKM = k1 || k2,
 *                        info = "hush/1 record key " || record protocol wire name,
 *                        L = the record protocol's key size)
 * The Noise state is wiped; what the result needs is kept.
 */
static int finish(struct hush_handshake *hs)
{
	struct noise_cipherstate k1, k2;
	uint8_t ikm[2 * NOISE_KEYLEN], key[HUSH_RECORD_MAX_KEY_SIZE], info[64];
	const char *rp = hush_record_protocol_name(hs->mine.record_protocol);
	size_t label_len = strlen(HUSH_HS_KEY_LABEL), rp_len = strlen(rp);
	size_t key_len = hush_record_key_size(hs->mine.record_protocol);
	memcpy(info, HUSH_HS_KEY_LABEL, label_len);
	memcpy(info + label_len, rp, rp_len);
	int rc = hush__noise_split(&hs->noise, &k1, &k2);
	if (rc != 0) {
		goto out;
	}
	memcpy(ikm, k1.k, NOISE_KEYLEN);
	memcpy(ikm + NOISE_KEYLEN, k2.k, NOISE_KEYLEN);
	rc = hush__noise_hkdf_sha256(hs->noise.kit, hs->noise.h, NOISE_HASHLEN, ikm, sizeof(ikm),
				     info, label_len + rp_len, key, key_len);
	if (rc != 0) {
		goto out;
	}
	memcpy(hs->key, key, key_len);
	hs->key_len = key_len;
	memcpy(hs->hash, hs->noise.h, NOISE_HASHLEN);
	if (hs->noise.has_rs) {
		memcpy(hs->rs, hs->noise.rs, NOISE_DHLEN);
		hs->has_rs = true;
	}
	hs->done = true;
	hush__noise_wipe(&hs->noise);
out:
	OPENSSL_cleanse(&k1, sizeof(k1));
	OPENSSL_cleanse(&k2, sizeof(k2));
	OPENSSL_cleanse(ikm, sizeof(ikm));
	OPENSSL_cleanse(key, sizeof(key));
	return rc;
}

/* ---- The messages (docs/PROTOCOL.md, section 11) ---- */

static void put_length(uint8_t *p, size_t len)
{
	p[0] = (uint8_t)(len >> 8);
	p[1] = (uint8_t)len;
}

/* Writes the next Noise message, carrying payload, with its length at out + *off
 * (room checked by the caller); *off advances past it. */
static int put_message(struct hush_handshake *hs, const uint8_t *payload, size_t payload_len,
		       uint8_t *out, size_t cap, size_t *off)
{
	size_t n = 0;
	HUSH_GUARD(hush__noise_write_message(&hs->noise, payload, payload_len,
				       out + *off + HUSH_HS_LENGTH_SIZE,
				       cap - *off - HUSH_HS_LENGTH_SIZE, &n));
	put_length(out + *off, n);
	*off += HUSH_HS_LENGTH_SIZE + n;
	return 0;
}

static size_t framed_size(const struct hush_handshake *hs, size_t payload_len)
{
	return HUSH_HS_LENGTH_SIZE + hush__noise_message_size(&hs->noise, payload_len);
}

static bool is_nnpsk0(const struct hush_handshake *hs)
{
	return protocols[hs->protocol].pattern == NOISE_NNPSK0;
}

/*
 * Initiator, the first flight: the hello (the prologue, framed like a message), then
 * message 1:
 *   XX, XXpsk3   -> e              payload empty: it would travel in clear
 *   NNpsk0       -> psk, e         payload: our parameters (under the PSK)
 */
static int write_message_1(struct hush_handshake *hs, uint8_t *out, size_t cap, size_t *len)
{
	uint8_t hello[HUSH_HS_PROLOGUE_MAX], params[HUSH_PARAMS_MAX];
	size_t hello_len = hush__handshake_prologue(hs->protocol, hello);
	size_t params_len = is_nnpsk0(hs) ? hush__params_encode(&hs->mine, params) : 0;
	HUSH_ENSURE(cap >= HUSH_HS_LENGTH_SIZE + hello_len + framed_size(hs, params_len),
		    HUSH_ENOSPACE);
	size_t off = 0;
	put_length(out, hello_len);
	memcpy(out + HUSH_HS_LENGTH_SIZE, hello, hello_len);
	off = HUSH_HS_LENGTH_SIZE + hello_len;
	HUSH_GUARD(put_message(hs, params, params_len, out, cap, &off));
	hs->hello_done = true;
	*len = off;
	return 0;
}

/* Responder: the hello must be our prologue exactly. */
static int read_hello(struct hush_handshake *hs, const uint8_t *msg, size_t len)
{
	uint8_t mine[HUSH_HS_PROLOGUE_MAX];
	size_t mine_len = hush__handshake_prologue(hs->protocol, mine);
	/* Without "hush/" it is not a hush peer at all. */
	HUSH_ENSURE(len >= HUSH_HS_MAGIC_LEN && memcmp(msg, mine, HUSH_HS_MAGIC_LEN) == 0,
		    HUSH_EHANDSHAKE);
	/* Another version of hush, or another Noise protocol. */
	HUSH_ENSURE(len == mine_len && memcmp(msg, mine, mine_len) == 0, HUSH_EPARAMS);
	hs->hello_done = true;
	return 0;
}

/* Responder, message 1 (see write_message_1). */
static int read_message_1(struct hush_handshake *hs, const uint8_t *msg, size_t len)
{
	uint8_t payload[HUSH_HANDSHAKE_MAX_MESSAGE];
	size_t payload_len = 0;
	struct hush__params peer;
	int rc = hush__noise_read_message(&hs->noise, msg, len, payload, sizeof(payload), &payload_len);
	if (rc == 0 && is_nnpsk0(hs)) {
		rc = accept_params(hs, payload, payload_len, &peer);
	} else if (rc == 0 && payload_len != 0) {
		rc = HUSH_EHANDSHAKE;
	}
	if (rc == 0 && is_nnpsk0(hs)) {
		hs->peer = peer;
	}
	OPENSSL_cleanse(payload, payload_len);
	return rc;
}

/*
 * Responder, message 2, payload our parameters:
 *   XX, XXpsk3   <- e, ee, s, es
 *   NNpsk0       <- e, ee          (the last message: the handshake is done)
 */
static int write_message_2(struct hush_handshake *hs, uint8_t *out, size_t cap, size_t *len)
{
	uint8_t params[HUSH_PARAMS_MAX];
	size_t params_len = hush__params_encode(&hs->mine, params);
	HUSH_ENSURE(cap >= framed_size(hs, params_len), HUSH_ENOSPACE);
	size_t off = 0;
	HUSH_GUARD(put_message(hs, params, params_len, out, cap, &off));
	if (hush__noise_done(&hs->noise)) {
		HUSH_GUARD(finish(hs));
	}
	*len = off;
	return 0;
}

/* Initiator, message 2 (see write_message_2): the responder's static key is checked
 * before anything else, and before our own static key is sent in message 3. */
static int read_message_2(struct hush_handshake *hs, const uint8_t *msg, size_t len)
{
	uint8_t payload[HUSH_HANDSHAKE_MAX_MESSAGE];
	size_t payload_len = 0;
	struct hush__params peer;
	int rc = hush__noise_read_message(&hs->noise, msg, len, payload, sizeof(payload), &payload_len);
	if (rc == 0 && !is_nnpsk0(hs)) {
		rc = verify_peer(hs, hs->noise.rs);
	}
	if (rc == 0) {
		rc = accept_params(hs, payload, payload_len, &peer);
	}
	if (rc == 0) {
		hs->peer = peer;
		if (hush__noise_done(&hs->noise)) {
			rc = finish(hs);
		}
	}
	OPENSSL_cleanse(payload, payload_len);
	return rc;
}

/*
 * Initiator, message 3 (XX and XXpsk3 only), payload our parameters:
 *   XX           -> s, se
 *   XXpsk3       -> s, se, psk
 * It is the last message: the handshake is done.
 */
static int write_message_3(struct hush_handshake *hs, uint8_t *out, size_t cap, size_t *len)
{
	uint8_t params[HUSH_PARAMS_MAX];
	size_t params_len = hush__params_encode(&hs->mine, params);
	HUSH_ENSURE(cap >= framed_size(hs, params_len), HUSH_ENOSPACE);
	size_t off = 0;
	HUSH_GUARD(put_message(hs, params, params_len, out, cap, &off));
	HUSH_GUARD(finish(hs));
	*len = off;
	return 0;
}

/* Responder, message 3 (see write_message_3). */
static int read_message_3(struct hush_handshake *hs, const uint8_t *msg, size_t len)
{
	uint8_t payload[HUSH_HANDSHAKE_MAX_MESSAGE];
	size_t payload_len = 0;
	struct hush__params peer;
	int rc = hush__noise_read_message(&hs->noise, msg, len, payload, sizeof(payload), &payload_len);
	if (rc == 0) {
		rc = verify_peer(hs, hs->noise.rs);
	}
	if (rc == 0) {
		rc = accept_params(hs, payload, payload_len, &peer);
	}
	if (rc == 0) {
		hs->peer = peer;
		rc = finish(hs);
	}
	OPENSSL_cleanse(payload, payload_len);
	return rc;
}

/* ---- Driving ---- */

/*
 * One kit of OpenSSL contexts serves every step of one call (noise-internal.h): its
 * HMAC is scrubbed once when the call gives it back, rather than after each Noise
 * function. finish() and hs_fail() wipe the Noise state, the kit pointer with it, so the
 * caller keeps its own.
 */
static int lend_kit(struct hush_handshake *hs, struct noise_kit **kit)
{
	int rc = hush__noise_kit_take(kit);
	if (rc == 0) {
		hs->noise.kit = *kit;
	}
	return rc;
}

static void return_kit(struct hush_handshake *hs, struct noise_kit *kit)
{
	hs->noise.kit = NULL;
	hush__noise_kit_give(kit);
}

int hush_handshake_next(struct hush_handshake *hs, uint8_t *out, size_t cap, size_t *out_len)
{
	HUSH_ENSURE(hs != NULL && out_len != NULL && (out != NULL || cap == 0), HUSH_EINVAL);
	if (hs->err != 0) {
		return hs->err;
	}
	HUSH_ENSURE(hush_handshake_wants_write(hs), HUSH_ESTATE);
	struct noise_kit *kit;
	int rc = lend_kit(hs, &kit);
	if (rc != 0) {
		return hs_fail(hs, rc);
	}
	size_t len = 0;
	switch (hs->noise.msg_index) {
	case 0:
		rc = write_message_1(hs, out, cap, &len);
		break;
	case 1:
		rc = write_message_2(hs, out, cap, &len);
		break;
	default:
		rc = write_message_3(hs, out, cap, &len);
		break;
	}
	return_kit(hs, kit);
	if (rc == HUSH_ENOSPACE) {
		return rc; /* checked before anything changed */
	}
	if (rc != 0) {
		return hs_fail(hs, rc);
	}
	*out_len = len;
	return 0;
}

/* Processes one whole incoming message. */
static int process(struct hush_handshake *hs, const uint8_t *msg, size_t len)
{
	if (!hs->initiator && !hs->hello_done) {
		return read_hello(hs, msg, len);
	}
	switch (hs->noise.msg_index) {
	case 0:
		return read_message_1(hs, msg, len);
	case 1:
		return read_message_2(hs, msg, len);
	default:
		return read_message_3(hs, msg, len);
	}
}

/*
 * Takes bytes of the next message from in (len > 0) and processes the message once it
 * is whole; *used is the number of bytes taken. A message that is all in `in` is read
 * where it is; one that comes in pieces is gathered in a buffer of exactly its size,
 * allocated once its length has been checked.
 */
static int feed(struct hush_handshake *hs, const uint8_t *in, size_t len, size_t *used)
{
	size_t off = 0;
	while (hs->len_have < HUSH_HS_LENGTH_SIZE && off < len) {
		hs->len_buf[hs->len_have++] = in[off++];
	}
	*used = off;
	if (hs->len_have < HUSH_HS_LENGTH_SIZE) {
		return 0;
	}
	size_t msg_len = (size_t)hs->len_buf[0] << 8 | hs->len_buf[1];
	size_t limit =
	    !hs->initiator && !hs->hello_done ? HUSH_HS_PROLOGUE_MAX : HUSH_HANDSHAKE_MAX_MESSAGE;
	HUSH_ENSURE(msg_len > 0 && msg_len <= limit, HUSH_EHANDSHAKE);
	const uint8_t *msg;
	if (hs->msg == NULL && len - off >= msg_len) {
		msg = in + off;
		off += msg_len;
	} else {
		if (off == len) {
			return 0;
		}
		if (hs->msg == NULL) {
			hs->msg = hush__alloc(msg_len);
			HUSH_ENSURE(hs->msg != NULL, HUSH_ENOMEM);
			hs->msg_cap = msg_len;
			hs->msg_have = 0;
		}
		size_t n = msg_len - hs->msg_have;
		if (n > len - off) {
			n = len - off;
		}
		memcpy(hs->msg + hs->msg_have, in + off, n);
		hs->msg_have += n;
		off += n;
		*used = off;
		if (hs->msg_have < msg_len) {
			return 0;
		}
		msg = hs->msg;
	}
	*used = off;
	hs->len_have = 0;
	int rc = process(hs, msg, msg_len);
	drop_message(hs);
	return rc;
}

int hush_handshake_read(struct hush_handshake *hs, const uint8_t *in, size_t len, size_t *consumed)
{
	HUSH_ENSURE(hs != NULL && consumed != NULL && (in != NULL || len == 0), HUSH_EINVAL);
	if (hs->err != 0) {
		return hs->err;
	}
	if (len == 0) {
		*consumed = 0;
		return 0;
	}
	HUSH_ENSURE(!hs->done, HUSH_ESTATE);
	/* Bytes while it is our turn to write: the peer spoke out of turn. */
	if (!hush_handshake_wants_read(hs)) {
		return hs_fail(hs, HUSH_EOUTOFTURN);
	}
	struct noise_kit *kit;
	int rc = lend_kit(hs, &kit);
	if (rc != 0) {
		return hs_fail(hs, rc);
	}
	size_t off = 0;
	while (rc == 0 && off < len && hush_handshake_wants_read(hs)) {
		size_t used = 0;
		rc = feed(hs, in + off, len - off, &used);
		off += used;
	}
	return_kit(hs, kit);
	if (rc != 0) {
		return hs_fail(hs, rc);
	}
	*consumed = off;
	return 0;
}

int hush_handshake_result(const struct hush_handshake *hs, struct hush_handshake_result *out)
{
	HUSH_ENSURE(hs != NULL && out != NULL, HUSH_EINVAL);
	if (hs->err != 0) {
		return hs->err;
	}
	HUSH_ENSURE(hs->done, HUSH_ESTATE);
	memset(out, 0, sizeof(*out));
	out->side = hs->initiator ? HUSH_SIDE_CLIENT : HUSH_SIDE_SERVER;
	out->record_protocol = hs->mine.record_protocol;
	memcpy(out->key, hs->key, hs->key_len);
	out->key_len = hs->key_len;
	/* Never more than the peer accepts; never more than we accept from the peer. */
	uint64_t peer_accepts = (uint64_t)hs->peer.recv_limit + HUSH_RECORD_LENGTH_SIZE;
	uint64_t we_accept = (uint64_t)hs->mine.recv_limit + HUSH_RECORD_LENGTH_SIZE;
	out->max_send_frame =
	    (size_t)(hs->mine.max_send_frame < peer_accepts ? hs->mine.max_send_frame
							    : peer_accepts);
	out->recv_limit = hs->mine.recv_limit;
	out->peer_max_frame =
	    (size_t)(hs->peer.max_send_frame < we_accept ? hs->peer.max_send_frame : we_accept);
	out->has_remote_static = hs->has_rs;
	memcpy(out->remote_static, hs->rs, NOISE_DHLEN);
	memcpy(out->handshake_hash, hs->hash, NOISE_HASHLEN);
	memcpy(out->app_protocol, hs->peer.app_protocol, hs->peer.app_protocol_len);
	out->app_protocol[hs->peer.app_protocol_len] = '\0';
	return 0;
}
