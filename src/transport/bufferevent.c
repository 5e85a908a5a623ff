/*
 * hush bufferevents, the part both flavours share (bufferevent-internal.h): their
 * configuration, the raw-key registry, and the public calls, which look at the flavour a
 * bufferevent is and go to it. The flavours: bufferevent-sock.c (over a socket, through
 * a hush_conn) and bufferevent-filter.c (over any bufferevent). See
 * include/hush/bufferevent.h for the contract and docs/DESIGN.md, "Bufferevents".
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>

#include <hush/bufferevent.h>

#include "record/record-internal.h"
#include "transport/bufferevent-core.h"
#include "transport/bufferevent-internal.h"
#include "transport/transport-internal.h"

/* bev's state if bev is a hush bufferevent of either flavour, else NULL: both enable
 * through the core (HUSH__BEV_OPS), which no other type's table can name. */
static struct hush__bev *hush_of(struct bufferevent *bev)
{
	if (bev == NULL || bev->be_ops == NULL) {
		return NULL;
	}
	const struct hush__bev_ops *ops = (const struct hush__bev_ops *)(const void *)bev->be_ops;
	return ops->enable == hush__bev_enable ? hush__bev_of(bev) : NULL;
}

/* ---- Raw keys: each keys one connection in the process ---- */

/*
 * A fingerprint of every raw key a hush bufferevent took, with its record protocol and
 * side (the two ends of one connection share the key bytes, one per side): SHA-256 over
 * a per-process random salt, the protocol, the side and the key, cut to 16 bytes, in an
 * open-addressed table that only grows, for the life of the process. A key seen twice
 * would repeat AES-GCM nonces, so its second use is refused. The table comes from the C
 * library, not hush's allocator: it outlives every hush object, and hush_set_allocator()
 * may be called again once they are all gone.
 */
#define FP_LEN 16
static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t (*keys_tab)[FP_LEN];
static size_t keys_cap, keys_n;
static uint8_t keys_salt[32];
static bool keys_salted;

static int fingerprint(const struct hush_bufferevent_config *cfg, uint8_t out[FP_LEN])
{
	uint8_t md[32];
	uint8_t tag[2] = {(uint8_t)cfg->rp, (uint8_t)cfg->side};
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(ctx, keys_salt, sizeof(keys_salt)) == 1 &&
		 EVP_DigestUpdate(ctx, tag, sizeof(tag)) == 1 &&
		 EVP_DigestUpdate(ctx, cfg->key, cfg->key_len) == 1 &&
		 EVP_DigestFinal_ex(ctx, md, NULL) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		return HUSH_ECRYPTO;
	}
	memcpy(out, md, FP_LEN);
	out[0] |= 1; /* an all-zero slot is empty */
	return 0;
}

/* The slot of fp in the table: its own, or the empty one where it belongs. */
static uint8_t *keys_slot(const uint8_t fp[FP_LEN])
{
	uint64_t h;
	memcpy(&h, fp + 1, sizeof(h));
	for (size_t i = (size_t)h & (keys_cap - 1);; i = (i + 1) & (keys_cap - 1)) {
		static const uint8_t empty[FP_LEN];
		if (memcmp(keys_tab[i], fp, FP_LEN) == 0 || memcmp(keys_tab[i], empty, FP_LEN) == 0) {
			return keys_tab[i];
		}
	}
}

static int keys_grow(void)
{
	size_t cap = keys_cap ? keys_cap * 2 : 64;
	uint8_t(*old)[FP_LEN] = keys_tab;
	size_t old_cap = keys_cap;
	keys_tab = calloc(cap, FP_LEN);
	if (keys_tab == NULL) {
		keys_tab = old;
		return HUSH_ENOMEM;
	}
	keys_cap = cap;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i][0] != 0) {
			memcpy(keys_slot(old[i]), old[i], FP_LEN);
		}
	}
	free(old);
	return 0;
}

/* Records cfg's raw key as used (claim) or only looks it up. Returns 0, HUSH_EKEYREUSE,
 * HUSH_ENOMEM or HUSH_ECRYPTO. */
static int raw_key_check(const struct hush_bufferevent_config *cfg, bool claim)
{
	int rc = 0;
	uint8_t fp[FP_LEN];
	pthread_mutex_lock(&keys_lock);
	if (!keys_salted) {
		if (RAND_bytes(keys_salt, sizeof(keys_salt)) != 1) {
			rc = HUSH_ECRYPTO;
			goto out;
		}
		keys_salted = true;
	}
	rc = fingerprint(cfg, fp);
	if (rc < 0) {
		goto out;
	}
	if (keys_cap == 0 && !claim) {
		goto out;
	}
	if ((keys_n + 1) * 2 > keys_cap && claim && (rc = keys_grow()) < 0) {
		goto out;
	}
	uint8_t *slot = keys_slot(fp);
	if (memcmp(slot, fp, FP_LEN) == 0) {
		rc = HUSH_EKEYREUSE;
	} else if (claim) {
		memcpy(slot, fp, FP_LEN);
		keys_n++;
	}
out:
	pthread_mutex_unlock(&keys_lock);
	return rc;
}

int hush__bev_claim_raw_key(const struct hush_bufferevent_config *cfg)
{
	return raw_key_check(cfg, true);
}

/* ---- Configuration ---- */

void hush_bufferevent_config_init(struct hush_bufferevent_config *cfg)
{
	if (cfg != NULL) {
		*cfg = (struct hush_bufferevent_config){
		    .rp = HUSH_RP_ALTS_AES128_GCM_REKEY,
		    .side = HUSH_SIDE_CLIENT,
		};
	}
}

int hush_bufferevent_config_check(const struct hush_bufferevent_config *cfg)
{
	HUSH_ENSURE(cfg != NULL, HUSH_EINVAL);
	if (cfg->handshake != NULL) {
		return 0; /* checked by the constructor, or when a socket is set */
	}
	HUSH_ENSURE(cfg->key != NULL, HUSH_EINVAL);
	HUSH_ENSURE(hush_record_protocol_name(cfg->rp) != NULL, HUSH_EPROTO_UNKNOWN);
	HUSH_ENSURE(cfg->key_len == hush_record_key_size(cfg->rp), HUSH_EKEYLEN);
	return raw_key_check(cfg, false);
}

/* ---- The public calls, by flavour ---- */

int hush_bufferevent_get_error(struct bufferevent *bev)
{
	struct hush__bev *b = hush_of(bev);
	if (b == NULL) {
		return HUSH_EINVAL;
	}
	bufferevent_lock(bev);
	int err = b->err;
	bufferevent_unlock(bev);
	return err;
}

int hush_bufferevent_shutdown(struct bufferevent *bev)
{
	struct hush__bev *b = hush_of(bev);
	if (b == NULL) {
		return HUSH_EINVAL;
	}
	return hush__bev_shutdown(b);
}

int hush_bufferevent_peer_key(struct bufferevent *bev, uint8_t out[HUSH_KEY_SIZE])
{
	struct hush__bev *b = hush_of(bev);
	if (b == NULL || out == NULL) {
		return HUSH_EINVAL;
	}
	return hush__bev_peer_key(b, out);
}
