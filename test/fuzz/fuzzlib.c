/* Helpers shared by the handshake harnesses (see fuzzlib.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hush/common.h>

#include "fuzzlib.h"

bool fuzz_case_read(struct fuzz_case *c, const uint8_t *data, size_t size)
{
	if (size < FUZZ_HEADER) {
		return false;
	}
	c->protocol = (enum hush_noise_protocol)(1 + data[0] % 6);
	c->mode = (enum fuzz_mode)(data[1] & 3);
	c->opts = data[1] & (FUZZ_OPT_APP | FUZZ_OPT_STRANGER | FUZZ_OPT_CALLBACK);
	c->record_protocol = (enum hush_record_protocol)(1 + data[2] % 3);
	c->chunk = data[3];
	c->fail_alloc = data[4] < 16 ? data[4] : 0;
	c->rest = data + FUZZ_HEADER;
	c->rest_len = size - FUZZ_HEADER;
	return true;
}

static void unhex(const char *hex, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		char two[3] = {hex[2 * i], hex[2 * i + 1], '\0'};
		v = (unsigned)strtoul(two, NULL, 16);
		out[i] = (uint8_t)v;
	}
}

static void make_keypair(struct hush_keypair *kp, const char *priv_hex)
{
	unhex(priv_hex, kp->priv, HUSH_KEY_SIZE);
	if (hush__noise_dh_public(kp->priv, kp->pub) != 0) {
		abort();
	}
}

const struct fuzz_keys *fuzz_keys(void)
{
	static struct fuzz_keys k;
	static bool ready;
	if (!ready) {
		/* The inputs of docs/handshake-protocol.md, "Worked examples". */
		make_keypair(&k.init, "000102030405060708090a0b0c0d0e0f"
				      "101112131415161718191a1b1c1d1e1f");
		make_keypair(&k.resp, "0102030405060708090a0b0c0d0e0f10"
				      "1112131415161718191a1b1c1d1e1f20");
		make_keypair(&k.stranger, "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
					  "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a");
		unhex("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f", k.init_e,
		      NOISE_DHLEN);
		unhex("4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60", k.resp_e,
		      NOISE_DHLEN);
		unhex("2176657279736563726574766572797365637265747665727973656372657421", k.psk,
		      HUSH_KEY_SIZE);
		ready = true;
	}
	return &k;
}

bool fuzz_has_static(enum hush_noise_protocol p)
{
	return p <= HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256;
}

bool fuzz_has_psk(enum hush_noise_protocol p)
{
	return p >= HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256;
}

enum noise_pattern fuzz_pattern(enum hush_noise_protocol p)
{
	if (p <= HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256) {
		return NOISE_XX;
	}
	return p <= HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256 ? NOISE_XXPSK3 : NOISE_NNPSK0;
}

enum noise_cipher fuzz_cipher(enum hush_noise_protocol p)
{
	/* The AESGCM and ChaChaPoly variants alternate, AESGCM first. */
	return (p - HUSH_NOISE_XX_25519_AESGCM_SHA256) % 2 == 0 ? NOISE_AESGCM : NOISE_CHACHAPOLY;
}

static int verify_allowed(const uint8_t remote_static[HUSH_KEY_SIZE], void *arg)
{
	return memcmp(remote_static, arg, HUSH_KEY_SIZE) == 0 ? 0 : -1;
}

void fuzz_config(struct hush_handshake_config *cfg, const struct fuzz_case *c,
		 const struct hush_keypair *own, const struct hush_keypair *peer,
		 uint8_t allow[1][HUSH_KEY_SIZE])
{
	hush_handshake_config_init(cfg);
	cfg->protocol = c->protocol;
	cfg->record_protocol = c->record_protocol;
	if (c->opts & FUZZ_OPT_APP) {
		cfg->app_protocol = "echo/1";
	}
	if (fuzz_has_psk(c->protocol)) {
		cfg->psk = fuzz_keys()->psk;
	}
	if (fuzz_has_static(c->protocol)) {
		cfg->keypair = own;
		memcpy(allow[0], peer->pub, HUSH_KEY_SIZE);
		if (c->opts & FUZZ_OPT_CALLBACK) {
			cfg->verify = verify_allowed;
			cfg->verify_arg = allow[0];
		} else {
			cfg->allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])allow;
			cfg->n_allowed_peers = 1;
		}
	}
}

int fuzz_noise_init(struct noise_handshake *n, const struct fuzz_case *c, bool initiator,
		    const struct hush_keypair *s, const uint8_t e[NOISE_DHLEN])
{
	uint8_t prologue[HUSH_HS_PROLOGUE_MAX];
	size_t plen = hush__handshake_prologue(c->protocol, prologue);
	int rc = hush__noise_init(n, fuzz_pattern(c->protocol), fuzz_cipher(c->protocol), initiator,
			    prologue, plen, fuzz_has_static(c->protocol) ? s->priv : NULL, NULL,
			    fuzz_has_psk(c->protocol) ? fuzz_keys()->psk : NULL);
	if (rc == 0) {
		hush__noise_set_ephemeral(n, e);
	}
	return rc;
}

int fuzz_params_expect(const uint8_t *b, size_t len, enum hush_record_protocol mine)
{
	/* The record protocols' wire names (PROTOCOL.md section 3), by enum value. */
	static const char *const names[] = {NULL, "ALTSRP_GCM_AES128_REKEY", "ALTSRP_GCM_AES128",
					    "HUSHRP_CHACHA20_POLY1305_REKEY"};
	if (len == 0) {
		return HUSH_EHANDSHAKE;
	}
	if (b[0] != 1) {
		return HUSH_EPARAMS;
	}
	bool seen[5] = {false};
	int rp = 0; /* the named record protocol, 0 if unknown */
	uint32_t recv_limit = 0, max_send_frame = 0;
	size_t i = 1;
	while (i < len) {
		if (len - i < 2 || len - i - 2 < b[i + 1]) {
			return HUSH_EHANDSHAKE; /* runs past the end */
		}
		unsigned type = b[i], n = b[i + 1];
		const uint8_t *v = b + i + 2;
		i += 2 + n;
		if (type < 1 || type > 4) {
			continue;
		}
		if (seen[type]) {
			return HUSH_EHANDSHAKE;
		}
		seen[type] = true;
		if ((type == 2 || type == 3) && n != 4) {
			return HUSH_EHANDSHAKE;
		}
		if ((type == 1 || type == 4) && n == 0) {
			return HUSH_EHANDSHAKE;
		}
		if (type == 4 && memchr(v, 0, n) != NULL) {
			return HUSH_EHANDSHAKE;
		}
		uint32_t be = n == 4 ? (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 |
					   (uint32_t)v[2] << 8 | v[3]
				     : 0;
		if (type == 1) {
			for (int k = 1; k <= 3; k++) {
				if (strlen(names[k]) == n && memcmp(names[k], v, n) == 0) {
					rp = k;
				}
			}
		} else if (type == 2) {
			recv_limit = be;
		} else if (type == 3) {
			max_send_frame = be;
		}
	}
	if (!seen[1] || !seen[2] || !seen[3] || rp == 0 || recv_limit < 60 || max_send_frame < 64) {
		return HUSH_EPARAMS;
	}
	/* No negotiation: the peer must name our record protocol. */
	return rp == (int)mine ? 0 : HUSH_EPARAMS;
}

void fuzz_put_length(uint8_t *p, size_t len)
{
	p[0] = (uint8_t)(len >> 8);
	p[1] = (uint8_t)len;
}

/* ---- An allocator that fails on request and counts what is alive ---- */

static uint64_t n_calls, fail_at, n_live;

static void *failing_alloc(void *ctx, size_t size)
{
	(void)ctx;
	if (++n_calls == fail_at) {
		return NULL;
	}
	void *p = malloc(size);
	if (p != NULL) {
		n_live++;
	}
	return p;
}

static void failing_release(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	(void)size;
	n_live--;
	free(ptr);
}

void fuzz_alloc_begin(unsigned k)
{
	static const struct hush_allocator a = {failing_alloc, failing_release, NULL};
	n_calls = n_live = 0;
	fail_at = k;
	hush_set_allocator(&a);
}

void fuzz_alloc_end(void)
{
	hush_set_allocator(NULL);
	if (n_live != 0) {
		abort(); /* a hush allocation outlived its run */
	}
}

/* ---- Driving one end ---- */

int fuzz_drive(struct hush_handshake *hs, const uint8_t *in, size_t len, size_t chunk,
	       struct fuzz_drive *d)
{
	size_t off = 0;
	d->out_len = 0;
	d->used = 0;
	for (;;) {
		if (hush_handshake_wants_write(hs)) {
			size_t n = (size_t)-1;
			int rc = hush_handshake_next(hs, d->out, sizeof(d->out), &n);
			if (rc != 0) {
				if (n != (size_t)-1 || hush_handshake_error(hs) != rc) {
					abort();
				}
				return rc;
			}
			if (n == 0 || n > sizeof(d->out)) {
				abort();
			}
			d->out_len = n;
			continue;
		}
		if (hush_handshake_done(hs) || off == len) {
			break;
		}
		if (!hush_handshake_wants_read(hs)) {
			abort(); /* neither done, nor failed, nor waiting for anyone */
		}
		size_t k = chunk == 0 || chunk > len - off ? len - off : chunk;
		size_t used = (size_t)-1;
		int rc = hush_handshake_read(hs, in + off, k, &used);
		if (rc != 0) {
			if (used != (size_t)-1 || hush_handshake_error(hs) != rc) {
				abort(); /* output touched, or the failure not kept */
			}
			d->used = off;
			return rc;
		}
		/* Reading stops early only where the turn passes or the handshake ends. */
		if (used > k || (used < k && hush_handshake_wants_read(hs))) {
			abort();
		}
		off += used;
	}
	d->used = off;
	return 0;
}

bool fuzz_check_end(struct hush_handshake *hs, int rc, const struct hush_handshake_config *cfg,
		    const uint8_t *left, size_t left_len, struct hush_handshake_result *res)
{
	memset(res, 0, sizeof(*res));
#ifdef FUZZ_TRACE
	fprintf(stderr, "fuzz: %s, %s\n", hush_err_name(rc),
		hush_handshake_done(hs) ? "done" : "not done");
#endif
	size_t n;
	uint8_t out[HUSH_HANDSHAKE_MAX_OUTPUT];
	if (rc != 0) {
		/* Failed for good: every later call says so, and no result escapes. */
		static const uint8_t one = 0;
		struct hush_handshake_result r;
		memset(&r, 0x5a, sizeof(r));
		if (hush_handshake_error(hs) != rc || hush_handshake_done(hs) ||
		    hush_handshake_wants_read(hs) || hush_handshake_wants_write(hs) ||
		    hush_handshake_read(hs, &one, 1, &n) != rc ||
		    hush_handshake_next(hs, out, sizeof(out), &n) != rc ||
		    hush_handshake_result(hs, &r) != rc || r.key[0] != 0x5a) {
			abort();
		}
		return false;
	}
	if (!hush_handshake_done(hs)) {
		/* The bytes ran out first: nothing to report yet. */
		if (hush_handshake_result(hs, res) != HUSH_ESTATE ||
		    !hush_handshake_wants_read(hs)) {
			abort();
		}
		return false;
	}
	if (hush_handshake_result(hs, res) != 0) {
		abort();
	}
	/* The promises of struct hush_handshake_result. */
	size_t peer_min = HUSH_RECORD_MIN_SEND_FRAME;
	if (res->key_len != hush_record_key_size(cfg->record_protocol) ||
	    res->record_protocol != cfg->record_protocol || res->recv_limit != cfg->recv_limit ||
	    res->max_send_frame > cfg->max_send_frame || res->max_send_frame < peer_min ||
	    res->peer_max_frame > cfg->recv_limit + HUSH_RECORD_LENGTH_SIZE ||
	    res->peer_max_frame < peer_min ||
	    res->has_remote_static != fuzz_has_static(cfg->protocol) ||
	    memchr(res->app_protocol, '\0', sizeof(res->app_protocol)) == NULL) {
		abort();
	}
	/* Bytes after the last message belong to the records: refused without effect. */
	if (left_len > 0 && (hush_handshake_read(hs, left, left_len, &n) != HUSH_ESTATE ||
			     hush_handshake_error(hs) != 0 || !hush_handshake_done(hs))) {
		abort();
	}
	return true;
}
