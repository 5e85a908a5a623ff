/*
 * Tests for src/handshake/handshake.c: hush's handshake over the Noise core. Complete
 * handshakes for every protocol, fed in every split; the worked examples of
 * docs/PROTOCOL.md, Part II (test/data/hush-handshake-vectors.txt); the parameter
 * block's parser; and the negative set: unknown peers, wrong PSKs, mismatched
 * configurations, oversized, truncated and tampered messages at every step, low-order
 * keys, out-of-turn bytes, configuration errors and allocation failures. Every test
 * ends with no hush allocation alive.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hush/handshake.h>
#include <hush/record.h>

#include "handshake/handshake-internal.h"
#include "testlib.h"

#define VECTORS HUSH_SRCDIR "/test/data/hush-handshake-vectors.txt"

/* drive() result when bytes stop moving before both ends are done. */
#define STALLED 1

static const enum hush_noise_protocol all_protocols[] = {
    HUSH_NOISE_XX_25519_AESGCM_SHA256,	   HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256,
    HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256, HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256,
    HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256, HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256,
};
#define N_PROTOCOLS (sizeof(all_protocols) / sizeof(all_protocols[0]))

static bool has_static(enum hush_noise_protocol p)
{
	return p <= HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256;
}

static bool has_psk(enum hush_noise_protocol p)
{
	return p >= HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256;
}

static unsigned flights_of(enum hush_noise_protocol p)
{
	return has_static(p) ? 3 : 2;
}

/* ---- Both ends in memory ---- */

struct ends {
	struct hush_keypair ik, rk;
	uint8_t psk[32];
	uint8_t allow_i[1][HUSH_KEY_SIZE]; /* what the initiator accepts: rk */
	uint8_t allow_r[1][HUSH_KEY_SIZE]; /* what the responder accepts: ik */
	struct hush_handshake_config ci, cr;
	struct hush_handshake *i, *r;
};

static void make_keypair(struct hush_keypair *kp, uint64_t seed)
{
	testlib_fill(kp->priv, sizeof(kp->priv), seed);
	assert_int_equal(hush__noise_dh_public(kp->priv, kp->pub), 0);
}

/* Configurations for both ends of protocol p, each end allowing the other's key. */
static void setup_ends(struct ends *e, enum hush_noise_protocol p)
{
	memset(e, 0, sizeof(*e));
	make_keypair(&e->ik, 1);
	make_keypair(&e->rk, 2);
	testlib_fill(e->psk, sizeof(e->psk), 3);
	memcpy(e->allow_i[0], e->rk.pub, HUSH_KEY_SIZE);
	memcpy(e->allow_r[0], e->ik.pub, HUSH_KEY_SIZE);
	hush_handshake_config_init(&e->ci);
	hush_handshake_config_init(&e->cr);
	e->ci.protocol = e->cr.protocol = p;
	if (has_static(p)) {
		e->ci.keypair = &e->ik;
		e->ci.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])e->allow_i;
		e->ci.n_allowed_peers = 1;
		e->cr.keypair = &e->rk;
		e->cr.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])e->allow_r;
		e->cr.n_allowed_peers = 1;
	}
	if (has_psk(p)) {
		e->ci.psk = e->cr.psk = e->psk;
	}
}

static void start_ends(struct ends *e)
{
	assert_int_equal(hush_handshake_new(&e->i, &e->ci, HUSH_SIDE_CLIENT), 0);
	assert_int_equal(hush_handshake_new(&e->r, &e->cr, HUSH_SIDE_SERVER), 0);
}

static void free_ends(struct ends *e)
{
	hush_handshake_free(e->i);
	hush_handshake_free(e->r);
	e->i = e->r = NULL;
	/* The key pairs live on the stack here: drop the key objects they cached. */
	EVP_PKEY_CTX_free(atomic_exchange(&e->ik.dh, NULL));
	EVP_PKEY_CTX_free(atomic_exchange(&e->rk.dh, NULL));
}

/* May change flight number `flight` (from 1) before it is delivered: *len bytes at
 * buf, capacity cap. */
typedef void (*tamper_fn)(unsigned flight, uint8_t *buf, size_t *len, size_t cap, void *arg);

struct pipe {
	uint8_t buf[8192];
	size_t len;
};

/*
 * Moves bytes between the ends until both are done, one fails, or nothing moves. Each
 * end is fed what it received in pieces of at most chunk bytes. Returns 0 (both done),
 * the first error (*who names the end: 'i' or 'r'), or STALLED.
 */
static int drive(struct hush_handshake *i, struct hush_handshake *r, size_t chunk, tamper_fn t,
		 void *arg, char *who)
{
	static struct pipe to_i, to_r;
	to_i.len = to_r.len = 0;
	unsigned flight = 0;
	*who = '-';
	for (;;) {
		bool moved = false;
		for (int side = 0; side < 2; side++) {
			struct hush_handshake *me = side ? r : i;
			struct pipe *in = side ? &to_r : &to_i, *out = side ? &to_i : &to_r;
			char name = side ? 'r' : 'i';
			if (hush_handshake_wants_write(me)) {
				size_t n = 0;
				int rc = hush_handshake_next(me, out->buf + out->len,
							     sizeof(out->buf) - out->len, &n);
				if (rc != 0) {
					*who = name;
					return rc;
				}
				assert_true(n > 0 && n <= HUSH_HANDSHAKE_MAX_OUTPUT);
				flight++;
				if (t != NULL) {
					t(flight, out->buf + out->len, &n,
					  sizeof(out->buf) - out->len, arg);
				}
				out->len += n;
				moved = true;
			}
			while (in->len > 0 && hush_handshake_wants_read(me)) {
				size_t take = in->len < chunk ? in->len : chunk, used = 0;
				int rc = hush_handshake_read(me, in->buf, take, &used);
				if (rc != 0) {
					*who = name;
					return rc;
				}
				assert_true(used > 0 && used <= take);
				memmove(in->buf, in->buf + used, in->len - used);
				in->len -= used;
				moved = true;
			}
		}
		if (hush_handshake_done(i) && hush_handshake_done(r)) {
			return 0;
		}
		if (!moved) {
			return STALLED;
		}
	}
}

/* Seals a record at one end and opens it at the other. */
static void record_crosses(const struct hush_handshake_result *from,
			   const struct hush_handshake_result *to, const char *text)
{
	struct hush_record *a, *b;
	assert_int_equal(
	    hush_record_new(&a, from->record_protocol, from->key, from->key_len, from->side), 0);
	assert_int_equal(hush_record_new(&b, to->record_protocol, to->key, to->key_len, to->side),
			 0);
	assert_int_equal(hush_record_set_limits(a, from->max_send_frame, from->recv_limit), 0);
	assert_int_equal(hush_record_set_limits(b, to->max_send_frame, to->recv_limit), 0);
	uint8_t frame[256];
	size_t n = strlen(text), frame_len = 0;
	memcpy(frame + HUSH_RECORD_HEADER_SIZE, text, n);
	assert_int_equal(hush_record_seal(a, frame, sizeof(frame), n, &frame_len), 0);
	struct hush_iovec pt;
	assert_int_equal(hush_record_open(b, frame, frame_len, &pt), 0);
	assert_int_equal(pt.len, n);
	assert_memory_equal(pt.base, text, n);
	hush_record_free(a);
	hush_record_free(b);
}

/* The record protocol an end configured with c uses: its explicit choice, or else the
 * one its Noise name announces (a ChaChaPoly handshake carries ChaCha20 records). The
 * rule is written here from the name on purpose, not with the library's function. */
static enum hush_record_protocol expected_record_protocol(const struct hush_handshake_config *c)
{
	if (c->record_protocol != HUSH_RP_AUTO) {
		return c->record_protocol;
	}
	return strstr(hush_noise_protocol_name(c->protocol), "_ChaChaPoly_") != NULL
		   ? HUSH_RP_CHACHA20_POLY1305_REKEY
		   : HUSH_RP_ALTS_AES128_GCM_REKEY;
}

/* Both ends finished and agree; records sealed by each open at the other. */
static void check_agreement(const struct ends *e)
{
	struct hush_handshake_result a, b;
	assert_int_equal(hush_handshake_result(e->i, &a), 0);
	assert_int_equal(hush_handshake_result(e->r, &b), 0);
	assert_int_equal(a.side, HUSH_SIDE_CLIENT);
	assert_int_equal(b.side, HUSH_SIDE_SERVER);
	assert_int_equal(a.record_protocol, expected_record_protocol(&e->ci));
	assert_int_equal(b.record_protocol, expected_record_protocol(&e->cr));
	assert_int_equal(a.key_len, hush_record_key_size(a.record_protocol));
	assert_int_equal(b.key_len, a.key_len);
	assert_memory_equal(a.key, b.key, a.key_len);
	assert_memory_equal(a.handshake_hash, b.handshake_hash, HUSH_HANDSHAKE_HASH_SIZE);
	assert_int_equal(a.has_remote_static, has_static(e->ci.protocol));
	assert_int_equal(b.has_remote_static, has_static(e->ci.protocol));
	if (has_static(e->ci.protocol)) {
		assert_memory_equal(a.remote_static, e->rk.pub, HUSH_KEY_SIZE);
		assert_memory_equal(b.remote_static, e->ik.pub, HUSH_KEY_SIZE);
	}
	record_crosses(&a, &b, "ping from the client");
	record_crosses(&b, &a, "pong from the server");
	hush_handshake_result_wipe(&a);
	hush_handshake_result_wipe(&b);
}

/* Runs protocol p to its end with the default configurations; returns the error. */
static int run_protocol(enum hush_noise_protocol p, size_t chunk, tamper_fn t, void *arg, char *who)
{
	struct ends e;
	setup_ends(&e, p);
	start_ends(&e);
	int rc = drive(e.i, e.r, chunk, t, arg, who);
	if (rc == 0) {
		check_agreement(&e);
	} else {
		/* A failure never leaves both ends believing they are done. */
		assert_false(hush_handshake_done(e.i) && hush_handshake_done(e.r));
	}
	free_ends(&e);
	return rc;
}

/* ---- Fixtures: the counting allocator, and nothing alive at the end ---- */

static int alloc_setup(void **state)
{
	(void)state;
	testlib_alloc_install();
	return 0;
}

static int alloc_teardown(void **state)
{
	(void)state;
	struct testlib_alloc_stats st;
	testlib_alloc_get(&st);
	testlib_alloc_uninstall();
	if (st.live != 0) {
		fprintf(stderr, "# %llu hush allocations still alive\n",
			(unsigned long long)st.live);
		return -1;
	}
	return 0;
}

/* ---- The worked examples ---- */

struct example {
	char protocol[64], record_protocol[64], app_protocol[256];
	size_t recv_limit, max_send_frame;
	uint8_t init_static[32], init_static_public[32], resp_static[32], resp_static_public[32];
	uint8_t init_e[32], resp_e[32], psk[32];
	bool has_static, has_psk, has_app;
	uint8_t prologue[300], init_params[600], resp_params[600];
	size_t prologue_len, init_params_len, resp_params_len;
	uint8_t flight[4][1024];
	size_t flight_len[4];
	unsigned nflights;
	uint8_t hash[32], k1[32], k2[32], key[44];
	size_t key_len;
};

static void unhex_exact(const char *hex, uint8_t *out, size_t n)
{
	assert_int_equal(testlib_unhex(hex, out, n), (long)n);
}

static size_t unhex_any(const char *hex, uint8_t *out, size_t cap)
{
	long n = testlib_unhex(hex, out, cap);
	assert_true(n >= 0);
	return (size_t)n;
}

static unsigned load_examples(struct example *ex, unsigned max)
{
	FILE *f = fopen(VECTORS, "r");
	assert_non_null(f);
	static char line[8192];
	int n = -1;
	const char *k, *v;
	while (testlib_next_kv(f, line, sizeof(line), &k, &v)) {
		if (strcmp(k, "protocol") == 0) {
			assert_true(++n < (int)max);
			memset(&ex[n], 0, sizeof(ex[n]));
			snprintf(ex[n].protocol, sizeof(ex[n].protocol), "%s", v);
			continue;
		}
		assert_true(n >= 0);
		struct example *x = &ex[n];
		unsigned idx;
		if (strcmp(k, "record_protocol") == 0) {
			snprintf(x->record_protocol, sizeof(x->record_protocol), "%s", v);
		} else if (strcmp(k, "app_protocol") == 0) {
			snprintf(x->app_protocol, sizeof(x->app_protocol), "%s", v);
			x->has_app = true;
		} else if (strcmp(k, "recv_limit") == 0) {
			x->recv_limit = strtoul(v, NULL, 10);
		} else if (strcmp(k, "max_send_frame") == 0) {
			x->max_send_frame = strtoul(v, NULL, 10);
		} else if (strcmp(k, "init_static") == 0) {
			unhex_exact(v, x->init_static, 32);
			x->has_static = true;
		} else if (strcmp(k, "init_static_public") == 0) {
			unhex_exact(v, x->init_static_public, 32);
		} else if (strcmp(k, "resp_static") == 0) {
			unhex_exact(v, x->resp_static, 32);
		} else if (strcmp(k, "resp_static_public") == 0) {
			unhex_exact(v, x->resp_static_public, 32);
		} else if (strcmp(k, "init_ephemeral") == 0) {
			unhex_exact(v, x->init_e, 32);
		} else if (strcmp(k, "resp_ephemeral") == 0) {
			unhex_exact(v, x->resp_e, 32);
		} else if (strcmp(k, "psk") == 0) {
			unhex_exact(v, x->psk, 32);
			x->has_psk = true;
		} else if (strcmp(k, "prologue") == 0) {
			x->prologue_len = unhex_any(v, x->prologue, sizeof(x->prologue));
		} else if (strcmp(k, "init_params") == 0) {
			x->init_params_len = unhex_any(v, x->init_params, sizeof(x->init_params));
		} else if (strcmp(k, "resp_params") == 0) {
			x->resp_params_len = unhex_any(v, x->resp_params, sizeof(x->resp_params));
		} else if (sscanf(k, "flight_%u", &idx) == 1) {
			assert_true(idx >= 1 && idx <= 4);
			x->flight_len[idx - 1] = unhex_any(v, x->flight[idx - 1], 1024);
			if (idx > x->nflights) {
				x->nflights = idx;
			}
		} else if (strcmp(k, "handshake_hash") == 0) {
			unhex_exact(v, x->hash, 32);
		} else if (strcmp(k, "split_k1") == 0) {
			unhex_exact(v, x->k1, 32);
		} else if (strcmp(k, "split_k2") == 0) {
			unhex_exact(v, x->k2, 32);
		} else if (strcmp(k, "record_key") == 0) {
			x->key_len = unhex_any(v, x->key, sizeof(x->key));
		}
	}
	fclose(f);
	return (unsigned)(n + 1);
}

struct example_ends {
	struct hush_keypair ik, rk;
	struct hush_handshake_config ci, cr;
	uint8_t allow_i[1][32], allow_r[1][32];
	struct hush_handshake *i, *r;
};

static void start_example(const struct example *x, struct example_ends *e)
{
	memset(e, 0, sizeof(*e));
	enum hush_noise_protocol p;
	enum hush_record_protocol rp;
	assert_int_equal(hush_noise_protocol_from_name(x->protocol, &p), 0);
	assert_int_equal(hush_record_protocol_from_name(x->record_protocol, &rp), 0);
	hush_handshake_config_init(&e->ci);
	hush_handshake_config_init(&e->cr);
	e->ci.protocol = e->cr.protocol = p;
	e->ci.record_protocol = e->cr.record_protocol = rp;
	e->ci.recv_limit = e->cr.recv_limit = x->recv_limit;
	e->ci.max_send_frame = e->cr.max_send_frame = x->max_send_frame;
	if (x->has_app) {
		e->ci.app_protocol = e->cr.app_protocol = x->app_protocol;
	}
	if (x->has_static) {
		memcpy(e->ik.priv, x->init_static, 32);
		memcpy(e->ik.pub, x->init_static_public, 32);
		memcpy(e->rk.priv, x->resp_static, 32);
		memcpy(e->rk.pub, x->resp_static_public, 32);
		memcpy(e->allow_i[0], x->resp_static_public, 32);
		memcpy(e->allow_r[0], x->init_static_public, 32);
		e->ci.keypair = &e->ik;
		e->cr.keypair = &e->rk;
		e->ci.allowed_peers = (const uint8_t(*)[32])e->allow_i;
		e->cr.allowed_peers = (const uint8_t(*)[32])e->allow_r;
		e->ci.n_allowed_peers = e->cr.n_allowed_peers = 1;
	}
	if (x->has_psk) {
		e->ci.psk = e->cr.psk = x->psk;
	}
	assert_int_equal(hush_handshake_new(&e->i, &e->ci, HUSH_SIDE_CLIENT), 0);
	assert_int_equal(hush_handshake_new(&e->r, &e->cr, HUSH_SIDE_SERVER), 0);
	hush__handshake_set_ephemeral(e->i, x->init_e);
	hush__handshake_set_ephemeral(e->r, x->resp_e);
}

static void free_example(struct example_ends *e)
{
	hush_handshake_free(e->i);
	hush_handshake_free(e->r);
	e->i = e->r = NULL;
	EVP_PKEY_CTX_free(atomic_exchange(&e->ik.dh, NULL));
	EVP_PKEY_CTX_free(atomic_exchange(&e->rk.dh, NULL));
}

static void check_example_result(const struct example *x, const struct example_ends *e)
{
	struct hush_handshake_result a, b;
	assert_int_equal(hush_handshake_result(e->i, &a), 0);
	assert_int_equal(hush_handshake_result(e->r, &b), 0);
	assert_int_equal(a.key_len, x->key_len);
	assert_memory_equal(a.key, x->key, x->key_len);
	assert_memory_equal(b.key, x->key, x->key_len);
	assert_memory_equal(a.handshake_hash, x->hash, 32);
	assert_memory_equal(b.handshake_hash, x->hash, 32);
	assert_string_equal(a.app_protocol, x->has_app ? x->app_protocol : "");
	assert_string_equal(b.app_protocol, x->has_app ? x->app_protocol : "");
	if (x->has_static) {
		assert_memory_equal(a.remote_static, x->resp_static_public, 32);
		assert_memory_equal(b.remote_static, x->init_static_public, 32);
	}
}

/* hush, both ends, reproduces every flight, the hash and the key of each example. */
static void handshake_worked_examples_reproduce_data_file(void **state)
{
	(void)state;
	static struct example ex[8];
	unsigned n = load_examples(ex, 8);
	assert_int_equal(n, 3);
	for (unsigned k = 0; k < n; k++) {
		const struct example *x = &ex[k];
		struct example_ends e;
		start_example(x, &e);
		uint8_t prologue[HUSH_HS_PROLOGUE_MAX], params[HUSH_PARAMS_MAX];
		assert_int_equal(hush__handshake_prologue(e.ci.protocol, prologue),
				 x->prologue_len);
		assert_memory_equal(prologue, x->prologue, x->prologue_len);
		assert_int_equal(hush__params_encode(&e.i->mine, params), x->init_params_len);
		assert_memory_equal(params, x->init_params, x->init_params_len);
		assert_int_equal(hush__params_encode(&e.r->mine, params), x->resp_params_len);
		assert_memory_equal(params, x->resp_params, x->resp_params_len);
		for (unsigned f = 0; f < x->nflights; f++) {
			struct hush_handshake *w = f % 2 == 0 ? e.i : e.r,
					      *rd = f % 2 == 0 ? e.r : e.i;
			uint8_t out[HUSH_HANDSHAKE_MAX_OUTPUT];
			size_t len = 0, used = 0;
			assert_true(hush_handshake_wants_write(w));
			assert_int_equal(hush_handshake_next(w, out, sizeof(out), &len), 0);
			assert_int_equal(len, x->flight_len[f]);
			assert_memory_equal(out, x->flight[f], len);
			assert_int_equal(hush_handshake_read(rd, out, len, &used), 0);
			assert_int_equal(used, len);
		}
		assert_true(hush_handshake_done(e.i) && hush_handshake_done(e.r));
		check_example_result(x, &e);
		free_example(&e);
	}
}

/* The bare Noise layer, given the example's prologue and parameter blocks as payloads,
 * makes the same messages, hash and Split() keys; HKDF of those gives the record key. */
static void handshake_worked_examples_follow_from_noise_split(void **state)
{
	(void)state;
	static struct example ex[8];
	unsigned n = load_examples(ex, 8);
	for (unsigned k = 0; k < n; k++) {
		const struct example *x = &ex[k];
		enum hush_noise_protocol p;
		assert_int_equal(hush_noise_protocol_from_name(x->protocol, &p), 0);
		enum noise_pattern pat = !has_static(p) ? NOISE_NNPSK0
					 : has_psk(p)	? NOISE_XXPSK3
							: NOISE_XX;
		enum noise_cipher c =
		    strstr(x->protocol, "ChaChaPoly") ? NOISE_CHACHAPOLY : NOISE_AESGCM;
		struct noise_handshake i, r;
		assert_int_equal(hush__noise_init(&i, pat, c, true, x->prologue, x->prologue_len,
					    x->has_static ? x->init_static : NULL, NULL,
					    x->has_psk ? x->psk : NULL),
				 0);
		assert_int_equal(hush__noise_init(&r, pat, c, false, x->prologue, x->prologue_len,
					    x->has_static ? x->resp_static : NULL, NULL,
					    x->has_psk ? x->psk : NULL),
				 0);
		hush__noise_set_ephemeral(&i, x->init_e);
		hush__noise_set_ephemeral(&r, x->resp_e);
		for (unsigned f = 0; f < x->nflights; f++) {
			/* Payloads: XX 1 empty, 2 the responder's block, 3 the initiator's;
			 * NNpsk0 1 the initiator's, 2 the responder's. */
			const uint8_t *pl = x->init_params;
			size_t pl_len = x->init_params_len;
			if (f == 1) {
				pl = x->resp_params, pl_len = x->resp_params_len;
			} else if (f == 0 && x->has_static) {
				pl_len = 0;
			}
			struct noise_handshake *w = f % 2 == 0 ? &i : &r,
					       *rd = f % 2 == 0 ? &r : &i;
			uint8_t msg[1024], got[1024];
			size_t len = 0, got_len = 0;
			assert_int_equal(hush__noise_write_message(w, pl, pl_len, msg, sizeof(msg), &len),
					 0);
			/* The flight is [hello frame] then the message's frame. */
			size_t at = f == 0 ? 2 + x->prologue_len : 0;
			assert_int_equal(x->flight_len[f], at + 2 + len);
			assert_int_equal(x->flight[f][at] << 8 | x->flight[f][at + 1], len);
			assert_memory_equal(x->flight[f] + at + 2, msg, len);
			assert_int_equal(
			    hush__noise_read_message(rd, msg, len, got, sizeof(got), &got_len), 0);
			assert_int_equal(got_len, pl_len);
		}
		assert_memory_equal(i.h, x->hash, 32);
		struct noise_cipherstate k1, k2;
		assert_int_equal(hush__noise_split(&i, &k1, &k2), 0);
		assert_memory_equal(k1.k, x->k1, 32);
		assert_memory_equal(k2.k, x->k2, 32);
		hush__noise_wipe(&i);
		hush__noise_wipe(&r);
	}
}

/* Every chunk size, down to a byte at a time (so the 2-byte lengths are split too),
 * gives the example's key. */
static void handshake_any_split_of_the_bytes_gives_the_same_result(void **state)
{
	(void)state;
	static struct example ex[8];
	unsigned n = load_examples(ex, 8);
	for (unsigned k = 0; k < n; k++) {
		size_t longest = 0;
		for (unsigned f = 0; f < ex[k].nflights; f++) {
			longest = ex[k].flight_len[f] > longest ? ex[k].flight_len[f] : longest;
		}
		for (size_t chunk = 1; chunk <= longest; chunk++) {
			struct example_ends e;
			start_example(&ex[k], &e);
			char who;
			assert_int_equal(drive(e.i, e.r, chunk, NULL, NULL, &who), 0);
			check_example_result(&ex[k], &e);
			free_example(&e);
		}
	}
}

/* ---- Complete handshakes ---- */

static void handshake_every_protocol_completes_and_keys_records(void **state)
{
	(void)state;
	for (size_t k = 0; k < N_PROTOCOLS; k++) {
		char who;
		assert_int_equal(run_protocol(all_protocols[k], SIZE_MAX, NULL, NULL, &who), 0);
	}
}

static void handshake_every_record_protocol_gets_its_key_size(void **state)
{
	(void)state;
	static const enum hush_record_protocol rps[] = {HUSH_RP_ALTS_AES128_GCM_REKEY,
							HUSH_RP_ALTS_AES128_GCM,
							HUSH_RP_CHACHA20_POLY1305_REKEY};
	for (size_t k = 0; k < 3; k++) {
		for (size_t p = 0; p < N_PROTOCOLS; p++) {
			struct ends e;
			setup_ends(&e, all_protocols[p]);
			e.ci.record_protocol = e.cr.record_protocol = rps[k];
			start_ends(&e);
			char who;
			assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), 0);
			check_agreement(&e);
			free_ends(&e);
		}
	}
}

/* Left at its default, the record protocol follows the Noise name: ChaCha20-Poly1305
 * records for ChaChaPoly, ALTS's AES-128-GCM for AESGCM. An explicit choice wins
 * whatever the cipher, and an end left at the default agrees with a peer that names the
 * same protocol explicitly (nothing on the wire says which end chose how). */
static void handshake_default_record_protocol_follows_noise_cipher(void **state)
{
	(void)state;
	static const enum hush_record_protocol explicit_rps[] = {HUSH_RP_ALTS_AES128_GCM_REKEY,
								 HUSH_RP_ALTS_AES128_GCM,
								 HUSH_RP_CHACHA20_POLY1305_REKEY};
	for (size_t p = 0; p < N_PROTOCOLS; p++) {
		enum hush_noise_protocol np = all_protocols[p];
		bool chacha = strstr(hush_noise_protocol_name(np), "_ChaChaPoly_") != NULL;
		enum hush_record_protocol want =
		    chacha ? HUSH_RP_CHACHA20_POLY1305_REKEY : HUSH_RP_ALTS_AES128_GCM_REKEY;
		assert_int_equal(hush_noise_default_record_protocol(np), want);

		/* Both ends at the default. */
		struct ends e;
		setup_ends(&e, np);
		assert_int_equal(e.ci.record_protocol, HUSH_RP_AUTO);
		start_ends(&e);
		char who;
		assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), 0);
		struct hush_handshake_result res;
		assert_int_equal(hush_handshake_result(e.i, &res), 0);
		assert_int_equal(res.record_protocol, want);
		assert_int_equal(res.key_len, hush_record_key_size(want));
		hush_handshake_result_wipe(&res);
		check_agreement(&e);
		free_ends(&e);

		for (size_t k = 0; k < 3; k++) {
			/* Both explicit: any record protocol under any Noise cipher. */
			setup_ends(&e, np);
			e.ci.record_protocol = e.cr.record_protocol = explicit_rps[k];
			start_ends(&e);
			assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), 0);
			check_agreement(&e);
			free_ends(&e);
			/* One end explicit, the other at the default, each way round: they
			 * agree exactly when the explicit choice is the default. */
			for (int explicit_end = 0; explicit_end < 2; explicit_end++) {
				setup_ends(&e, np);
				(explicit_end == 0 ? &e.ci : &e.cr)->record_protocol =
				    explicit_rps[k];
				start_ends(&e);
				int rc = drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who);
				assert_int_equal(rc, explicit_rps[k] == want ? 0 : HUSH_EPARAMS);
				if (rc == 0) {
					check_agreement(&e);
				}
				free_ends(&e);
			}
		}
	}
	assert_int_equal(hush_noise_default_record_protocol((enum hush_noise_protocol)0),
			 HUSH_RP_AUTO);
	assert_int_equal(hush_noise_default_record_protocol((enum hush_noise_protocol)7),
			 HUSH_RP_AUTO);
}

/* Each end learns the other's limits and application protocol. */
static void handshake_limits_and_app_protocol_are_exchanged(void **state)
{
	(void)state;
	for (size_t p = 0; p < N_PROTOCOLS; p++) {
		struct ends e;
		setup_ends(&e, all_protocols[p]);
		e.ci.recv_limit = 16384;
		e.ci.max_send_frame = 16384;
		e.ci.app_protocol = "grpc-exp";
		e.cr.recv_limit = 1048576;
		e.cr.max_send_frame = 65536;
		start_ends(&e);
		char who;
		assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), 0);
		struct hush_handshake_result a, b;
		assert_int_equal(hush_handshake_result(e.i, &a), 0);
		assert_int_equal(hush_handshake_result(e.r, &b), 0);
		assert_int_equal(a.max_send_frame, 16384);
		assert_int_equal(a.recv_limit, 16384);
		assert_int_equal(a.peer_max_frame, 16388);
		assert_int_equal(b.max_send_frame, 16388);
		assert_int_equal(b.recv_limit, 1048576);
		assert_int_equal(b.peer_max_frame, 16384);
		assert_string_equal(a.app_protocol, "");
		assert_string_equal(b.app_protocol, "grpc-exp");
		check_agreement(&e);
		free_ends(&e);
	}
}

/* Bytes after the last message are records: left for the record layer. Bytes after a
 * message that makes it our turn are left too. */
static void handshake_bytes_after_a_turn_are_not_consumed(void **state)
{
	(void)state;
	static const uint8_t extra[] = "\x1f\x00\x00\x00\x06\x00\x00\x00record bytes";
	for (size_t p = 0; p < N_PROTOCOLS; p++) {
		struct ends e;
		setup_ends(&e, all_protocols[p]);
		start_ends(&e);
		struct hush_handshake *w = e.i, *rd = e.r;
		while (!hush_handshake_done(rd)) {
			uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT + sizeof(extra)];
			size_t len = 0, used = 0;
			assert_int_equal(
			    hush_handshake_next(w, buf, HUSH_HANDSHAKE_MAX_OUTPUT, &len), 0);
			memcpy(buf + len, extra, sizeof(extra));
			assert_int_equal(hush_handshake_read(rd, buf, len + sizeof(extra), &used),
					 0);
			assert_int_equal(used, len);
			if (!hush_handshake_done(rd)) {
				/* Feeding the extra bytes now is the peer speaking out of turn. */
				struct hush_handshake *t = w;
				w = rd;
				rd = t;
			}
		}
		assert_true(hush_handshake_done(e.i) && hush_handshake_done(e.r));
		check_agreement(&e);
		free_ends(&e);
	}
}

/* ---- Peers, keys and configurations that do not match ---- */

static void handshake_unknown_responder_fails_with_epeer_at_initiator(void **state)
{
	(void)state;
	for (size_t p = 0; p < N_PROTOCOLS; p++) {
		if (!has_static(all_protocols[p])) {
			continue;
		}
		struct ends e;
		setup_ends(&e, all_protocols[p]);
		e.allow_i[0][5] ^= 1;
		start_ends(&e);
		char who;
		assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), HUSH_EPEER);
		assert_int_equal(who, 'i');
		/* The initiator never sent message 3, which carries its own identity. */
		assert_true(hush_handshake_wants_read(e.r));
		free_ends(&e);
	}
}

static void handshake_unknown_initiator_fails_with_epeer_at_responder(void **state)
{
	(void)state;
	for (size_t p = 0; p < N_PROTOCOLS; p++) {
		if (!has_static(all_protocols[p])) {
			continue;
		}
		struct ends e;
		setup_ends(&e, all_protocols[p]);
		e.allow_r[0][31] ^= 0x40;
		start_ends(&e);
		char who;
		assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), HUSH_EPEER);
		assert_int_equal(who, 'r');
		free_ends(&e);
	}
}

struct verdict {
	int answer;
	unsigned calls;
	uint8_t seen[32];
};

static int verify_cb(const uint8_t remote_static[HUSH_KEY_SIZE], void *arg)
{
	struct verdict *v = arg;
	v->calls++;
	memcpy(v->seen, remote_static, 32);
	return v->answer;
}

static void handshake_verify_callback_accepts_or_refuses(void **state)
{
	(void)state;
	for (int refuse = 0; refuse < 2; refuse++) {
		for (int at_responder = 0; at_responder < 2; at_responder++) {
			struct ends e;
			setup_ends(&e, HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256);
			struct verdict v = {refuse ? 7 : 0, 0, {0}};
			struct hush_handshake_config *c = at_responder ? &e.cr : &e.ci;
			/* Not on the list: the callback decides. */
			c->n_allowed_peers = 0;
			c->allowed_peers = NULL;
			c->verify = verify_cb;
			c->verify_arg = &v;
			start_ends(&e);
			char who;
			int rc = drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who);
			assert_int_equal(v.calls, 1);
			assert_memory_equal(v.seen, at_responder ? e.ik.pub : e.rk.pub, 32);
			if (refuse) {
				assert_int_equal(rc, HUSH_EPEER);
				assert_int_equal(who, at_responder ? 'r' : 'i');
			} else {
				assert_int_equal(rc, 0);
				check_agreement(&e);
			}
			free_ends(&e);
		}
	}
	/* On the list: the callback is not asked. */
	struct ends e;
	setup_ends(&e, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	struct verdict v = {1, 0, {0}};
	e.ci.verify = verify_cb;
	e.ci.verify_arg = &v;
	start_ends(&e);
	char who;
	assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), 0);
	assert_int_equal(v.calls, 0);
	free_ends(&e);
}

static void handshake_wrong_psk_fails_with_ehandshake(void **state)
{
	(void)state;
	for (size_t p = 0; p < N_PROTOCOLS; p++) {
		if (!has_psk(all_protocols[p])) {
			continue;
		}
		struct ends e;
		setup_ends(&e, all_protocols[p]);
		uint8_t other[32];
		memcpy(other, e.psk, 32);
		other[17] ^= 0x08;
		e.cr.psk = other;
		start_ends(&e);
		char who;
		assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), HUSH_EHANDSHAKE);
		/* XXpsk3 mixes the PSK in message 3, NNpsk0 in message 1: the responder
		 * finds out. */
		assert_int_equal(who, 'r');
		free_ends(&e);
	}
}

/* Ends configured with different Noise protocols fail at the hello. */
static void handshake_noise_protocol_mismatch_fails_with_eparams(void **state)
{
	(void)state;
	for (size_t a = 0; a < N_PROTOCOLS; a++) {
		for (size_t b = 0; b < N_PROTOCOLS; b++) {
			if (a == b) {
				continue;
			}
			struct ends ea, eb;
			setup_ends(&ea, all_protocols[a]);
			setup_ends(&eb, all_protocols[b]);
			struct hush_handshake *i, *r;
			assert_int_equal(hush_handshake_new(&i, &ea.ci, HUSH_SIDE_CLIENT), 0);
			assert_int_equal(hush_handshake_new(&r, &eb.cr, HUSH_SIDE_SERVER), 0);
			char who;
			assert_int_equal(drive(i, r, SIZE_MAX, NULL, NULL, &who), HUSH_EPARAMS);
			assert_int_equal(who, 'r');
			hush_handshake_free(i);
			hush_handshake_free(r);
			free_ends(&ea);
			free_ends(&eb);
		}
	}
}

/* Ends configured with different record protocols fail when the first parameter
 * block arrives: the initiator's in NNpsk0, the responder's in XX. */
static void handshake_record_protocol_mismatch_fails_with_eparams(void **state)
{
	(void)state;
	for (size_t p = 0; p < N_PROTOCOLS; p++) {
		struct ends e;
		setup_ends(&e, all_protocols[p]);
		/* Neither end's default, whatever the Noise cipher. */
		e.cr.record_protocol = HUSH_RP_ALTS_AES128_GCM;
		start_ends(&e);
		char who;
		assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), HUSH_EPARAMS);
		assert_int_equal(who, has_static(all_protocols[p]) ? 'i' : 'r');
		free_ends(&e);
	}
}

/* The responder, fed a first frame by hand. */
static int responder_reads(enum hush_noise_protocol p, const uint8_t *bytes, size_t len)
{
	struct ends e;
	setup_ends(&e, p);
	start_ends(&e);
	size_t used = 12345;
	int rc = hush_handshake_read(e.r, bytes, len, &used);
	if (rc != 0) {
		assert_int_equal(used, 12345); /* untouched on failure */
		assert_int_equal(hush_handshake_error(e.r), rc);
	}
	free_ends(&e);
	return rc;
}

static void handshake_hello_from_other_versions_and_strangers_fails(void **state)
{
	(void)state;
	uint8_t hello[2 + HUSH_HS_PROLOGUE_MAX + 40];
	size_t n = hush__handshake_prologue(HUSH_NOISE_XX_25519_AESGCM_SHA256, hello + 2);
	hello[0] = 0;
	hello[1] = (uint8_t)n;
	/* The right hello, then nothing yet: fine. */
	assert_int_equal(responder_reads(HUSH_NOISE_XX_25519_AESGCM_SHA256, hello, 2 + n), 0);
	/* Another hush version. */
	hello[2 + 5] = '2';
	assert_int_equal(responder_reads(HUSH_NOISE_XX_25519_AESGCM_SHA256, hello, 2 + n),
			 HUSH_EPARAMS);
	hello[2 + 5] = '1';
	/* Another Noise protocol name of the same length, as an old peer might send. */
	hello[2 + n - 1] = '5';
	assert_int_equal(responder_reads(HUSH_NOISE_XX_25519_AESGCM_SHA256, hello, 2 + n),
			 HUSH_EPARAMS);
	/* Not hush at all. */
	static const uint8_t http[] = "\x00\x1aGET / HTTP/1.1\r\nHost: x\r\n\r\n";
	assert_int_equal(responder_reads(HUSH_NOISE_XX_25519_AESGCM_SHA256, http, sizeof(http) - 1),
			 HUSH_EHANDSHAKE);
	/* A TLS ClientHello's first bytes read as a length of 0x1603 = 5635. */
	static const uint8_t tls[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
	assert_int_equal(responder_reads(HUSH_NOISE_XX_25519_AESGCM_SHA256, tls, sizeof(tls)),
			 HUSH_EHANDSHAKE);
	/* A hello longer than any prologue, and an empty one. */
	static const uint8_t longer[] = {0x01, 0x08, 'h'};
	assert_int_equal(responder_reads(HUSH_NOISE_XX_25519_AESGCM_SHA256, longer, sizeof(longer)),
			 HUSH_EHANDSHAKE);
	static const uint8_t empty[] = {0x00, 0x00};
	assert_int_equal(responder_reads(HUSH_NOISE_XX_25519_AESGCM_SHA256, empty, sizeof(empty)),
			 HUSH_EHANDSHAKE);
}

/* ---- Damaged messages at every step ---- */

/* The frames of a flight: where each 2-byte length sits, and its value. */
static unsigned frames_of(const uint8_t *buf, size_t len, size_t at[2], size_t flen[2])
{
	unsigned n = 0;
	for (size_t off = 0; off + 2 <= len && n < 2; n++) {
		at[n] = off;
		flen[n] = (size_t)buf[off] << 8 | buf[off + 1];
		off += 2 + flen[n];
	}
	return n;
}

struct damage {
	unsigned flight;
	enum { FLIP, TRUNCATE, EXTEND, SET_LENGTH, LOW_ORDER } kind;
	unsigned frame;	      /* which frame of the flight */
	size_t pos;	      /* FLIP: byte of the flight; TRUNCATE: new body length */
	size_t length;	      /* SET_LENGTH */
	const uint8_t *point; /* LOW_ORDER: replaces the frame's first 32 bytes */
	bool applied;
	bool length_grew; /* FLIP hit a length and made it larger */
};

static void damage_flight(unsigned flight, uint8_t *buf, size_t *len, size_t cap, void *arg)
{
	struct damage *d = arg;
	if (flight != d->flight) {
		return;
	}
	size_t at[2], flen[2];
	unsigned nf = frames_of(buf, *len, at, flen);
	assert_true(d->frame < nf || d->kind == FLIP);
	d->applied = true;
	switch (d->kind) {
	case FLIP:
		if (d->pos >= *len) {
			d->applied = false;
			return;
		}
		buf[d->pos] ^= 0x01;
		for (unsigned f = 0; f < nf; f++) {
			if (d->pos == at[f] || d->pos == at[f] + 1) {
				size_t now = (size_t)buf[at[f]] << 8 | buf[at[f] + 1];
				d->length_grew = now > flen[f];
			}
		}
		break;
	case TRUNCATE: {
		size_t body = at[d->frame] + 2, end = body + flen[d->frame];
		if (d->pos >= flen[d->frame]) {
			d->applied = false;
			return;
		}
		memmove(buf + body + d->pos, buf + end, *len - end);
		*len -= flen[d->frame] - d->pos;
		buf[at[d->frame]] = (uint8_t)(d->pos >> 8);
		buf[at[d->frame] + 1] = (uint8_t)d->pos;
		break;
	}
	case EXTEND: {
		size_t end = at[d->frame] + 2 + flen[d->frame];
		assert_true(*len < cap);
		memmove(buf + end + 1, buf + end, *len - end);
		buf[end] = 0x5a;
		*len += 1;
		buf[at[d->frame]] = (uint8_t)((flen[d->frame] + 1) >> 8);
		buf[at[d->frame] + 1] = (uint8_t)(flen[d->frame] + 1);
		break;
	}
	case SET_LENGTH:
		buf[at[d->frame]] = (uint8_t)(d->length >> 8);
		buf[at[d->frame] + 1] = (uint8_t)d->length;
		break;
	case LOW_ORDER:
		memcpy(buf + at[d->frame] + 2, d->point, 32);
		break;
	}
}

/* The protocols the damage tests go through: one of each pattern, both ciphers. */
static const enum hush_noise_protocol damaged_protocols[] = {
    HUSH_NOISE_XX_25519_AESGCM_SHA256,
    HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256,
    HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256,
};

/* Frames in flight f: the hello and message 1 in the first, one message after. */
static unsigned frames_in(unsigned flight)
{
	return flight == 1 ? 2 : 1;
}

/* The end that reads flight f. */
static char reader_of(unsigned flight)
{
	return flight % 2 == 1 ? 'r' : 'i';
}

/* Rewrites flight 1's hello into the prologue of the protocol at arg. */
static void rewrite_hello(unsigned flight, uint8_t *buf, size_t *len, size_t cap, void *arg)
{
	const enum hush_noise_protocol *to = arg;
	if (flight != 1) {
		return;
	}
	size_t old = (size_t)buf[0] << 8 | buf[1];
	uint8_t hello[2 + HUSH_HS_PROLOGUE_MAX];
	size_t n = hush__handshake_prologue(*to, hello + 2);
	hello[0] = (uint8_t)(n >> 8);
	hello[1] = (uint8_t)n;
	size_t rest = *len - 2 - old;
	assert_true(2 + n + rest <= cap);
	memmove(buf + 2 + n, buf + 2 + old, rest);
	memcpy(buf, hello, 2 + n);
	*len = 2 + n + rest;
}

/*
 * Downgrade: an attacker who rewrites the initiator's hello so that it names the
 * protocol the responder is configured with (another cipher, or XX instead of XXpsk3:
 * the PSK stripped) gets it past the responder's check, but each end mixed its own
 * prologue into the handshake hash, so the first message encrypted under it fails and
 * neither end completes: message 2 at an XX initiator; message 1 at the responder when
 * the initiator's pattern has a PSK (its e is then mixed into the key, so message 1's
 * empty payload carries a tag).
 */
static void handshake_rewritten_hello_cannot_downgrade(void **state)
{
	(void)state;
	static const struct {
		enum hush_noise_protocol initiator, responder;
		char fails;
	} cases[] = {
	    {HUSH_NOISE_XX_25519_AESGCM_SHA256, HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256, 'i'},
	    {HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256, HUSH_NOISE_XX_25519_AESGCM_SHA256, 'r'},
	    {HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256, HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256,
	     'r'},
	    {HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256, HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256,
	     'r'},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct ends e;
		setup_ends(&e, cases[k].initiator);
		e.cr.protocol = cases[k].responder;
		if (!has_psk(cases[k].responder)) {
			e.cr.psk = NULL;
		}
		start_ends(&e);
		enum hush_noise_protocol to = cases[k].responder;
		char who;
		assert_int_equal(drive(e.i, e.r, SIZE_MAX, rewrite_hello, &to, &who),
				 HUSH_EHANDSHAKE);
		assert_int_equal(who, cases[k].fails);
		assert_false(hush_handshake_done(e.i));
		assert_false(hush_handshake_done(e.r));
		/* Without the rewrite the responder refuses the hello itself. */
		free_ends(&e);
		setup_ends(&e, cases[k].initiator);
		e.cr.protocol = cases[k].responder;
		if (!has_psk(cases[k].responder)) {
			e.cr.psk = NULL;
		}
		start_ends(&e);
		assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), HUSH_EPARAMS);
		assert_int_equal(who, 'r');
		free_ends(&e);
	}
}

static void handshake_every_flipped_byte_fails(void **state)
{
	(void)state;
	for (size_t p = 0; p < 3; p++) {
		enum hush_noise_protocol proto = damaged_protocols[p];
		for (unsigned f = 1; f <= flights_of(proto); f++) {
			for (size_t pos = 0;; pos++) {
				struct damage d = {.flight = f, .kind = FLIP, .pos = pos};
				char who;
				int rc = run_protocol(proto, SIZE_MAX, damage_flight, &d, &who);
				if (!d.applied) {
					break;
				}
				if (rc == STALLED) {
					/* A length made larger waits for bytes that never come:
					 * the transport's timeout or EOF ends it. */
					assert_true(d.length_grew);
					continue;
				}
				if (rc != HUSH_EHANDSHAKE && rc != HUSH_EPARAMS) {
					fail_msg("protocol %d flight %u byte %zu: %s", proto, f,
						 pos, hush_err_name(rc));
				}
			}
		}
	}
}

static void handshake_truncated_or_extended_messages_fail(void **state)
{
	(void)state;
	for (size_t p = 0; p < 3; p++) {
		enum hush_noise_protocol proto = damaged_protocols[p];
		for (unsigned f = 1; f <= flights_of(proto); f++) {
			for (unsigned fr = 0; fr < frames_in(f); fr++) {
				bool hello = f == 1 && fr == 0;
				for (size_t cut = 0;; cut++) {
					struct damage d = {
					    .flight = f, .kind = TRUNCATE, .frame = fr, .pos = cut};
					char who;
					int rc =
					    run_protocol(proto, SIZE_MAX, damage_flight, &d, &who);
					if (!d.applied) {
						break;
					}
					/* A hello that still starts with "hush/" is another
					 * version; shorter ones are not hush. */
					int want = hello && cut >= HUSH_HS_MAGIC_LEN
						       ? HUSH_EPARAMS
						       : HUSH_EHANDSHAKE;
					assert_int_equal(rc, want);
					assert_int_equal(who, reader_of(f));
				}
				struct damage d = {.flight = f, .kind = EXTEND, .frame = fr};
				char who;
				assert_int_equal(
				    run_protocol(proto, SIZE_MAX, damage_flight, &d, &who),
				    hello ? HUSH_EPARAMS : HUSH_EHANDSHAKE);
				assert_int_equal(who, reader_of(f));
			}
		}
	}
}

/* A length above the limit is refused as soon as its 2 bytes are in. */
static void handshake_oversized_or_empty_lengths_fail(void **state)
{
	(void)state;
	for (size_t p = 0; p < 3; p++) {
		enum hush_noise_protocol proto = damaged_protocols[p];
		for (unsigned f = 1; f <= flights_of(proto); f++) {
			for (unsigned fr = 0; fr < frames_in(f); fr++) {
				size_t limit = f == 1 && fr == 0 ? HUSH_HS_PROLOGUE_MAX
								 : HUSH_HANDSHAKE_MAX_MESSAGE;
				const size_t lengths[] = {0, limit + 1, 0xffff};
				for (size_t k = 0; k < 3; k++) {
					struct damage d = {.flight = f,
							   .kind = SET_LENGTH,
							   .frame = fr,
							   .length = lengths[k]};
					char who;
					/* A byte at a time: the length is judged before the body.
					 */
					assert_int_equal(
					    run_protocol(proto, 1, damage_flight, &d, &who),
					    HUSH_EHANDSHAKE);
					assert_int_equal(who, reader_of(f));
				}
			}
		}
	}
}


static void handshake_low_order_ephemeral_keys_fail(void **state)
{
	(void)state;
	for (size_t b = 0; b < sizeof(testlib_low_order_x25519) / sizeof(testlib_low_order_x25519[0]); b++) {
		uint8_t point[32];
		unhex_exact(testlib_low_order_x25519[b], point, 32);
		char who;
		/* XX message 1: the responder's ee (writing message 2) is all zero. */
		struct damage d = {.flight = 1, .kind = LOW_ORDER, .frame = 1, .point = point};
		assert_int_equal(run_protocol(HUSH_NOISE_XX_25519_AESGCM_SHA256, SIZE_MAX,
					      damage_flight, &d, &who),
				 HUSH_EBADKEY);
		assert_int_equal(who, 'r');
		/* XX and NNpsk0 message 2: the initiator's ee. */
		struct damage d2 = {.flight = 2, .kind = LOW_ORDER, .frame = 0, .point = point};
		assert_int_equal(run_protocol(HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256, SIZE_MAX,
					      damage_flight, &d2, &who),
				 HUSH_EBADKEY);
		assert_int_equal(who, 'i');
		d2.applied = false;
		assert_int_equal(run_protocol(HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256, SIZE_MAX,
					      damage_flight, &d2, &who),
				 HUSH_EBADKEY);
		assert_int_equal(who, 'i');
		/* NNpsk0 message 1: with a PSK, e goes into the key, so the payload no longer
		 * decrypts (there is no DH in message 1). */
		d.applied = false;
		assert_int_equal(run_protocol(HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256, SIZE_MAX,
					      damage_flight, &d, &who),
				 HUSH_EHANDSHAKE);
		assert_int_equal(who, 'r');
	}
}

/* ---- Turns, stickiness, results ---- */

static void handshake_bytes_out_of_turn_fail_with_eoutofturn(void **state)
{
	(void)state;
	struct ends e;
	setup_ends(&e, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	start_ends(&e);
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t len = 77, used = 77;
	/* The responder has nothing to say first: refused, no harm done. */
	assert_int_equal(hush_handshake_next(e.r, buf, sizeof(buf), &len), HUSH_ESTATE);
	assert_int_equal(len, 77);
	assert_int_equal(hush_handshake_error(e.r), 0);
	/* Nothing to read is fine at any time. */
	assert_int_equal(hush_handshake_read(e.i, buf, 0, &used), 0);
	assert_int_equal(used, 0);
	/* Bytes reaching the initiator before it spoke: the peer is out of turn, for good,
	 * with a code of its own (HUSH_ESTATE stays the harmless refusal above). */
	assert_int_equal(hush_handshake_read(e.i, buf, 5, &used), HUSH_EOUTOFTURN);
	assert_int_equal(used, 0);
	assert_int_equal(hush_handshake_error(e.i), HUSH_EOUTOFTURN);
	assert_int_equal(hush_handshake_next(e.i, buf, sizeof(buf), &len), HUSH_EOUTOFTURN);
	assert_false(hush_handshake_wants_write(e.i) || hush_handshake_wants_read(e.i));
	free_ends(&e);

	/* The responder, after message 1, gets more bytes before it answered. */
	setup_ends(&e, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	start_ends(&e);
	assert_int_equal(hush_handshake_next(e.i, buf, sizeof(buf), &len), 0);
	assert_int_equal(hush_handshake_read(e.r, buf, len, &used), 0);
	assert_true(hush_handshake_wants_write(e.r));
	assert_int_equal(hush_handshake_read(e.r, buf, 1, &used), HUSH_EOUTOFTURN);
	assert_int_equal(hush_handshake_error(e.r), HUSH_EOUTOFTURN);
	free_ends(&e);

	/* Done: further bytes belong to the record layer; the result stays. */
	setup_ends(&e, HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256);
	start_ends(&e);
	char who;
	assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), 0);
	assert_int_equal(hush_handshake_read(e.i, buf, 3, &used), HUSH_ESTATE);
	assert_int_equal(hush_handshake_next(e.i, buf, sizeof(buf), &len), HUSH_ESTATE);
	assert_int_equal(hush_handshake_error(e.i), 0);
	check_agreement(&e);
	free_ends(&e);
}

static void handshake_failure_is_sticky(void **state)
{
	(void)state;
	struct ends e;
	setup_ends(&e, HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256);
	uint8_t other[32] = {9};
	e.cr.psk = other;
	start_ends(&e);
	char who;
	assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), HUSH_EHANDSHAKE);
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t n = 99;
	struct hush_handshake_result res;
	memset(&res, 0xa5, sizeof(res));
	struct hush_handshake_result untouched = res;
	assert_int_equal(hush_handshake_read(e.r, buf, 10, &n), HUSH_EHANDSHAKE);
	assert_int_equal(hush_handshake_next(e.r, buf, sizeof(buf), &n), HUSH_EHANDSHAKE);
	assert_int_equal(hush_handshake_result(e.r, &res), HUSH_EHANDSHAKE);
	assert_int_equal(n, 99);
	assert_memory_equal(&res, &untouched, sizeof(res));
	assert_false(hush_handshake_done(e.r) || hush_handshake_wants_read(e.r) ||
		     hush_handshake_wants_write(e.r));
	assert_int_equal(hush_handshake_error(e.r), HUSH_EHANDSHAKE);
	/* The initiator sent its last message and believes it is done: the transport
	 * learns otherwise when the responder closes. */
	assert_true(hush_handshake_done(e.i));
	free_ends(&e);
}

static void handshake_result_before_the_end_fails_with_estate(void **state)
{
	(void)state;
	struct ends e;
	setup_ends(&e, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	start_ends(&e);
	struct hush_handshake_result res;
	memset(&res, 0x11, sizeof(res));
	assert_int_equal(hush_handshake_result(e.i, &res), HUSH_ESTATE);
	assert_int_equal(res.key_len, (size_t)0x1111111111111111ull);
	assert_int_equal(hush_handshake_result(e.i, NULL), HUSH_EINVAL);
	assert_int_equal(hush_handshake_result(NULL, &res), HUSH_EINVAL);
	char who;
	assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), 0);
	assert_int_equal(hush_handshake_result(e.i, &res), 0);
	hush_handshake_result_wipe(&res);
	static const struct hush_handshake_result zero;
	assert_memory_equal(&res, &zero, sizeof(res));
	hush_handshake_result_wipe(NULL);
	free_ends(&e);
}

static void handshake_small_output_buffer_is_refused_without_effect(void **state)
{
	(void)state;
	struct ends e;
	setup_ends(&e, HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256);
	start_ends(&e);
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t len = 0;
	assert_int_equal(hush_handshake_next(e.i, buf, 40, &len), HUSH_ENOSPACE);
	assert_int_equal(hush_handshake_next(e.i, NULL, 0, &len), HUSH_ENOSPACE);
	assert_int_equal(hush_handshake_next(e.i, NULL, 10, &len), HUSH_EINVAL);
	assert_int_equal(hush_handshake_next(e.i, buf, sizeof(buf), NULL), HUSH_EINVAL);
	assert_true(hush_handshake_wants_write(e.i));
	char who;
	assert_int_equal(drive(e.i, e.r, SIZE_MAX, NULL, NULL, &who), 0);
	check_agreement(&e);
	free_ends(&e);
}

/* ---- Configuration ---- */

static int new_rc(const struct hush_handshake_config *c, enum hush_side side)
{
	struct hush_handshake *hs = (struct hush_handshake *)(uintptr_t)0x1234;
	int rc = hush_handshake_new(&hs, c, side);
	if (rc == 0) {
		hush_handshake_free(hs);
	} else {
		assert_ptr_equal(hs, (struct hush_handshake *)(uintptr_t)0x1234);
	}
	return rc;
}

static void handshake_static_keys_without_verification_fail_with_enoverify(void **state)
{
	(void)state;
	for (size_t p = 0; p < N_PROTOCOLS; p++) {
		if (!has_static(all_protocols[p])) {
			continue;
		}
		struct ends e;
		setup_ends(&e, all_protocols[p]);
		e.ci.allowed_peers = NULL;
		e.ci.n_allowed_peers = 0;
		assert_int_equal(new_rc(&e.ci, HUSH_SIDE_CLIENT), HUSH_ENOVERIFY);
		assert_int_equal(new_rc(&e.ci, HUSH_SIDE_SERVER), HUSH_ENOVERIFY);
	}
}

static void handshake_bad_configurations_fail_with_einval(void **state)
{
	(void)state;
	struct ends e;
	struct hush_handshake *hs;
	setup_ends(&e, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	assert_int_equal(new_rc(&e.ci, HUSH_SIDE_CLIENT), 0);
	assert_int_equal(hush_handshake_new(NULL, &e.ci, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	assert_int_equal(hush_handshake_new(&hs, NULL, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	assert_int_equal(new_rc(&e.ci, (enum hush_side)2), HUSH_EINVAL);
	struct hush_handshake_config c = e.ci;
	c.protocol = (enum hush_noise_protocol)0;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c.protocol = (enum hush_noise_protocol)7;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c = e.ci;
	c.keypair = NULL; /* XX needs one */
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c = e.ci;
	c.psk = e.psk; /* XX has no PSK */
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c = e.ci;
	c.allowed_peers = NULL; /* a count without a list */
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c = e.ci;
	c.recv_limit = HUSH_PARAMS_MIN_RECV_LIMIT - 1;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c.recv_limit = HUSH_PARAMS_MIN_RECV_LIMIT;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), 0);
	c.recv_limit = HUSH_RECORD_MAX_RECV_LIMIT + 1;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c = e.ci;
	c.max_send_frame = HUSH_RECORD_MIN_SEND_FRAME - 1;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c.max_send_frame = HUSH_RECORD_MAX_RECV_LIMIT + 5;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c.max_send_frame = HUSH_RECORD_MAX_RECV_LIMIT + 4;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), 0);
	c = e.ci;
	c.record_protocol = HUSH_RP_AUTO; /* 0: follow the Noise cipher */
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), 0);
	c.record_protocol = (enum hush_record_protocol)4;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EPROTO_UNKNOWN);
	c.record_protocol = (enum hush_record_protocol)99;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EPROTO_UNKNOWN);
	c = e.ci;
	char name[HUSH_APP_PROTOCOL_MAX + 2];
	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	c.app_protocol = name; /* 256 bytes */
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c.app_protocol = name + 1; /* 255 */
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), 0);
	c.app_protocol = "";
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);

	free_ends(&e);
	setup_ends(&e, HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256);
	c = e.ci;
	c.psk = NULL;
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);

	free_ends(&e);
	setup_ends(&e, HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256);
	assert_int_equal(new_rc(&e.ci, HUSH_SIDE_CLIENT), 0);
	c = e.ci;
	c.psk = NULL;
	assert_int_equal(new_rc(&c, HUSH_SIDE_SERVER), HUSH_EINVAL);
	c = e.ci;
	c.keypair = &e.ik; /* NNpsk0 has no static keys */
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c = e.ci;
	c.verify = verify_cb; /* nothing to verify: it would give false comfort */
	assert_int_equal(new_rc(&c, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	c = e.ci;
	c.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])e.allow_i;
	c.n_allowed_peers = 1;
	assert_int_equal(new_rc(&c, HUSH_SIDE_SERVER), HUSH_EINVAL);
	free_ends(&e);
}

static void handshake_protocol_names_round_trip(void **state)
{
	(void)state;
	static const char *const names[] = {
	    "Noise_XX_25519_AESGCM_SHA256",	"Noise_XX_25519_ChaChaPoly_SHA256",
	    "Noise_XXpsk3_25519_AESGCM_SHA256", "Noise_XXpsk3_25519_ChaChaPoly_SHA256",
	    "Noise_NNpsk0_25519_AESGCM_SHA256", "Noise_NNpsk0_25519_ChaChaPoly_SHA256",
	};
	for (size_t k = 0; k < N_PROTOCOLS; k++) {
		assert_string_equal(hush_noise_protocol_name(all_protocols[k]), names[k]);
		enum hush_noise_protocol p = (enum hush_noise_protocol)0;
		assert_int_equal(hush_noise_protocol_from_name(names[k], &p), 0);
		assert_int_equal(p, all_protocols[k]);
	}
	assert_null(hush_noise_protocol_name((enum hush_noise_protocol)0));
	assert_null(hush_noise_protocol_name((enum hush_noise_protocol)7));
	enum hush_noise_protocol p = HUSH_NOISE_XX_25519_AESGCM_SHA256;
	assert_int_equal(hush_noise_protocol_from_name("Noise_IK_25519_AESGCM_SHA256", &p),
			 HUSH_EPROTO_UNKNOWN);
	assert_int_equal(hush_noise_protocol_from_name("noise_xx_25519_aesgcm_sha256", &p),
			 HUSH_EPROTO_UNKNOWN);
	assert_int_equal(hush_noise_protocol_from_name(NULL, &p), HUSH_EINVAL);
	assert_int_equal(p, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	struct hush_handshake_config c;
	memset(&c, 0xff, sizeof(c));
	hush_handshake_config_init(&c);
	assert_int_equal(c.protocol, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	assert_int_equal(c.record_protocol, HUSH_RP_AUTO);
	assert_int_equal(c.recv_limit, HUSH_RECORD_DEFAULT_RECV_LIMIT);
	assert_int_equal(c.max_send_frame, HUSH_RECORD_DEFAULT_SEND_FRAME);
	assert_null(c.keypair);
	assert_null(c.psk);
	assert_null(c.verify);
	assert_null(c.app_protocol);
	assert_int_equal(c.n_allowed_peers, 0);
}

/* ---- Memory ---- */

/* Allocation k fails, for every k a handshake makes (new, and messages gathered from
 * pieces): the failing call reports HUSH_ENOMEM and everything is freed. */
static void handshake_allocation_failure_at_every_step_is_clean(void **state)
{
	(void)state;
	static const enum hush_noise_protocol ps[] = {HUSH_NOISE_XX_25519_AESGCM_SHA256,
						      HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256};
	for (size_t p = 0; p < 2; p++) {
		struct testlib_alloc_stats before, after;
		struct ends e;
		char who;
		setup_ends(&e, ps[p]);
		testlib_alloc_get(&before);
		start_ends(&e);
		assert_int_equal(drive(e.i, e.r, 7, NULL, NULL, &who), 0);
		testlib_alloc_get(&after);
		free_ends(&e);
		uint64_t total = after.calls - before.calls;
		assert_true(total >= 4); /* two objects, and buffers for split messages */
		for (uint64_t k = 1; k <= total + 1; k++) {
			setup_ends(&e, ps[p]);
			testlib_alloc_fail_at(k);
			int rc = hush_handshake_new(&e.i, &e.ci, HUSH_SIDE_CLIENT);
			if (rc == 0) {
				rc = hush_handshake_new(&e.r, &e.cr, HUSH_SIDE_SERVER);
			}
			if (rc == 0) {
				rc = drive(e.i, e.r, 7, NULL, NULL, &who);
			}
			testlib_alloc_fail_at(0);
			if (k <= total) {
				assert_int_equal(rc, HUSH_ENOMEM);
			} else {
				assert_int_equal(rc, 0);
				check_agreement(&e);
			}
			free_ends(&e);
			struct testlib_alloc_stats st;
			testlib_alloc_get(&st);
			assert_int_equal(st.live, 0);
		}
	}
}

/* Freeing wipes the whole object: keys, hash and Noise state. */
static void handshake_free_wipes_the_object(void **state)
{
	(void)state;
	testlib_alloc_watch_size(sizeof(struct hush_handshake));
	char who;
	assert_int_equal(run_protocol(HUSH_NOISE_XX_25519_AESGCM_SHA256, 5, NULL, NULL, &who), 0);
	struct ends e;
	setup_ends(&e, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	start_ends(&e); /* freed mid-handshake */
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t len, used;
	assert_int_equal(hush_handshake_next(e.i, buf, sizeof(buf), &len), 0);
	assert_int_equal(hush_handshake_read(e.r, buf, len - 3, &used), 0);
	free_ends(&e);
	uint64_t freed, zeroed;
	testlib_alloc_watched(&freed, &zeroed);
	testlib_alloc_watch_size(0);
	assert_int_equal(freed, 4);
	assert_int_equal(zeroed, 4);
}

/* ---- The parameter block ---- */

static size_t good_block(uint8_t out[HUSH_PARAMS_MAX], const char *app)
{
	struct hush__params p;
	memset(&p, 0, sizeof(p));
	p.record_protocol = HUSH_RP_ALTS_AES128_GCM_REKEY;
	p.recv_limit = 1048576;
	p.max_send_frame = 16384;
	if (app != NULL) {
		p.app_protocol_len = strlen(app);
		memcpy(p.app_protocol, app, p.app_protocol_len);
	}
	return hush__params_encode(&p, out);
}

static int decode(const uint8_t *b, size_t n, struct hush__params *out)
{
	struct hush__params untouched;
	memset(out, 0x5c, sizeof(*out));
	memset(&untouched, 0x5c, sizeof(untouched));
	int rc = hush__params_decode(b, n, out);
	if (rc != 0) {
		assert_memory_equal(out, &untouched, sizeof(*out));
	}
	return rc;
}

static void params_encode_then_decode_round_trips(void **state)
{
	(void)state;
	uint8_t b[HUSH_PARAMS_MAX];
	struct hush__params p;
	size_t n = good_block(b, "h2");
	/* version, record protocol (2 + 23), receive limit, send frame, app protocol */
	assert_int_equal(n, 1 + 25 + 6 + 6 + 4);
	static const uint8_t head[] = {0x01, 0x01, 0x17, 'A', 'L', 'T', 'S'};
	assert_memory_equal(b, head, sizeof(head));
	assert_int_equal(decode(b, n, &p), 0);
	assert_int_equal(p.record_protocol, HUSH_RP_ALTS_AES128_GCM_REKEY);
	assert_int_equal(p.recv_limit, 1048576);
	assert_int_equal(p.max_send_frame, 16384);
	assert_int_equal(p.app_protocol_len, 2);
	assert_string_equal(p.app_protocol, "h2");
	n = good_block(b, NULL);
	assert_int_equal(decode(b, n, &p), 0);
	assert_int_equal(p.app_protocol_len, 0);
}

/* Cut at every length: between entries the block lacks a required entry (or, past the
 * last required one, is complete); inside an entry it is malformed. */
static void params_truncated_at_every_byte_fail(void **state)
{
	(void)state;
	uint8_t b[HUSH_PARAMS_MAX];
	struct hush__params p;
	size_t n = good_block(b, "h2");
	const size_t ends_of_entries[] = {1, 26, 32, 38};
	for (size_t cut = 0; cut < n; cut++) {
		int want = HUSH_EHANDSHAKE;
		for (size_t k = 0; k < 4; k++) {
			if (cut == ends_of_entries[k]) {
				want = k == 3 ? 0 : HUSH_EPARAMS;
			}
		}
		assert_int_equal(decode(b, cut, &p), want);
	}
}

static void params_bad_blocks_fail_with_exact_codes(void **state)
{
	(void)state;
	struct hush__params p;
	uint8_t b[HUSH_PARAMS_MAX + 16];
	size_t n = good_block(b, NULL);

	/* Another version: nothing after it can be read. */
	b[0] = 2;
	assert_int_equal(decode(b, n, &p), HUSH_EPARAMS);
	b[0] = 0;
	assert_int_equal(decode(b, n, &p), HUSH_EPARAMS);
	b[0] = 1;
	/* A length that runs past the end. */
	b[33] = 5;
	assert_int_equal(decode(b, n, &p), HUSH_EHANDSHAKE);
	b[33] = 4;
	/* A fixed-size entry of another size. */
	static const uint8_t short_limit[] = {
	    1,	 1,   17,  'A', 'L', 'T', 'S', 'R',  'P', '_', 'G', 'C', 'M', '_',  'A', 'E',
	    'S', '1', '2', '8', 2,   3,	  0,   0x40, 0,	  3,   4,   0,	 0,   0x40, 0};
	assert_int_equal(decode(short_limit, sizeof(short_limit), &p), HUSH_EHANDSHAKE);
	/* A known entry twice. */
	memcpy(b + n, b + 26, 6);
	assert_int_equal(decode(b, n + 6, &p), HUSH_EHANDSHAKE);
	/* An unknown entry (type 0 and 200) is skipped, whatever it holds. */
	static const uint8_t unknown[] = {200, 3, 0, 1, 2};
	memcpy(b + n, unknown, sizeof(unknown));
	assert_int_equal(decode(b, n + sizeof(unknown), &p), 0);
	b[n] = 0;
	assert_int_equal(decode(b, n + sizeof(unknown), &p), 0);
	/* Limits below the minimum. */
	uint8_t c[HUSH_PARAMS_MAX];
	size_t cn = good_block(c, NULL);
	c[28] = 0, c[29] = 0, c[30] = 0, c[31] = HUSH_PARAMS_MIN_RECV_LIMIT - 1;
	assert_int_equal(decode(c, cn, &p), HUSH_EPARAMS);
	c[31] = HUSH_PARAMS_MIN_RECV_LIMIT;
	assert_int_equal(decode(c, cn, &p), 0);
	c[34] = 0, c[35] = 0, c[36] = 0, c[37] = HUSH_PARAMS_MIN_SEND_FRAME - 1;
	assert_int_equal(decode(c, cn, &p), HUSH_EPARAMS);
	/* An unknown record protocol, one with a zero byte, an empty one. */
	cn = good_block(c, NULL);
	c[3] = 'X';
	assert_int_equal(decode(c, cn, &p), HUSH_EPARAMS);
	c[3] = '\0';
	assert_int_equal(decode(c, cn, &p), HUSH_EPARAMS);
	static const uint8_t empty_rp[] = {1, 1, 0, 2, 4, 0, 0, 0x40, 0, 3, 4, 0, 0, 0x40, 0};
	assert_int_equal(decode(empty_rp, sizeof(empty_rp), &p), HUSH_EHANDSHAKE);
	/* Application protocol names: empty, or with a zero byte. */
	cn = good_block(c, "ab");
	c[cn - 1] = '\0';
	assert_int_equal(decode(c, cn, &p), HUSH_EHANDSHAKE);
	cn = good_block(c, NULL);
	c[cn] = HUSH_PARAM_APP_PROTOCOL, c[cn + 1] = 0;
	assert_int_equal(decode(c, cn + 2, &p), HUSH_EHANDSHAKE);
	/* Each required entry missing. */
	cn = good_block(c, NULL);
	assert_int_equal(decode(c, 1, &p), HUSH_EPARAMS);
	uint8_t d[64];
	d[0] = 1;
	memcpy(d + 1, c + 26, 12); /* no record protocol */
	assert_int_equal(decode(d, 13, &p), HUSH_EPARAMS);
	memcpy(d + 1, c + 1, 25);
	memcpy(d + 26, c + 32, 6); /* no receive limit */
	assert_int_equal(decode(d, 32, &p), HUSH_EPARAMS);
	memcpy(d + 26, c + 26, 6); /* no send frame */
	assert_int_equal(decode(d, 32, &p), HUSH_EPARAMS);
	assert_int_equal(decode(c, 0, &p), HUSH_EHANDSHAKE);
}

/*
 * A peer written against the Noise layer alone (as with any Noise library) sends
 * hand-made parameter blocks to a hush responder: an unknown entry is skipped and the
 * application protocol comes through; another block version fails the handshake.
 */
static int fake_initiator_sends(const uint8_t *block, size_t block_len, char *app_seen)
{
	struct ends e;
	setup_ends(&e, HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256);
	assert_int_equal(hush_handshake_new(&e.r, &e.cr, HUSH_SIDE_SERVER), 0);
	uint8_t prologue[HUSH_HS_PROLOGUE_MAX], buf[2048];
	size_t plen = hush__handshake_prologue(HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256, prologue);
	struct noise_handshake n;
	assert_int_equal(
	    hush__noise_init(&n, NOISE_NNPSK0, NOISE_AESGCM, true, prologue, plen, NULL, NULL, e.psk), 0);
	buf[0] = 0;
	buf[1] = (uint8_t)plen;
	memcpy(buf + 2, prologue, plen);
	size_t mlen = 0, used = 0;
	assert_int_equal(hush__noise_write_message(&n, block, block_len, buf + 4 + plen,
					     sizeof(buf) - 4 - plen, &mlen),
			 0);
	buf[2 + plen] = (uint8_t)(mlen >> 8);
	buf[3 + plen] = (uint8_t)mlen;
	int rc = hush_handshake_read(e.r, buf, 4 + plen + mlen, &used);
	if (rc == 0) {
		/* The responder answers; the fake initiator reads it and both are done. */
		size_t out_len = 0, plen2 = 0;
		uint8_t payload[1024];
		assert_int_equal(hush_handshake_next(e.r, buf, sizeof(buf), &out_len), 0);
		assert_int_equal(
		    hush__noise_read_message(&n, buf + 2, out_len - 2, payload, sizeof(payload), &plen2),
		    0);
		struct hush_handshake_result res;
		assert_int_equal(hush_handshake_result(e.r, &res), 0);
		strcpy(app_seen, res.app_protocol);
		assert_memory_equal(res.handshake_hash, n.h, 32);
	}
	hush__noise_wipe(&n);
	free_ends(&e);
	return rc;
}

static void handshake_peer_parameter_blocks_are_judged(void **state)
{
	(void)state;
	uint8_t b[HUSH_PARAMS_MAX + 16];
	char app[300] = "";
	size_t n = good_block(b, NULL);
	static const uint8_t extra[] = {0x7f, 4,   'n', 'e', 'x', 't', HUSH_PARAM_APP_PROTOCOL,
					3,    'x', '/', '1'};
	memcpy(b + n, extra, sizeof(extra));
	assert_int_equal(fake_initiator_sends(b, n + sizeof(extra), app), 0);
	assert_string_equal(app, "x/1");
	b[0] = 2;
	assert_int_equal(fake_initiator_sends(b, n, app), HUSH_EPARAMS);
	assert_int_equal(fake_initiator_sends(b, 0, app), HUSH_EHANDSHAKE);
}

/* In XX, message 1 travels in clear: hush sends it empty and refuses anything else. */
static void handshake_xx_message_1_with_payload_fails(void **state)
{
	(void)state;
	/* In XXpsk3 the payload is encrypted, but under a key made of public values only
	 * (the PSK enters at message 3): it is refused there too. */
	static const struct {
		enum hush_noise_protocol p;
		enum noise_pattern pattern;
	} cases[] = {{HUSH_NOISE_XX_25519_AESGCM_SHA256, NOISE_XX},
		     {HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256, NOISE_XXPSK3}};
	for (size_t k = 0; k < 2; k++) {
		struct ends e;
		setup_ends(&e, cases[k].p);
		assert_int_equal(hush_handshake_new(&e.r, &e.cr, HUSH_SIDE_SERVER), 0);
		uint8_t prologue[HUSH_HS_PROLOGUE_MAX], buf[512];
		size_t plen = hush__handshake_prologue(cases[k].p, prologue);
		struct noise_handshake n;
		assert_int_equal(hush__noise_init(&n, cases[k].pattern, NOISE_AESGCM, true, prologue,
					    plen, e.ik.priv, NULL, e.ci.psk),
				 0);
		buf[0] = 0;
		buf[1] = (uint8_t)plen;
		memcpy(buf + 2, prologue, plen);
		size_t mlen = 0, used = 0;
		assert_int_equal(hush__noise_write_message(&n, (const uint8_t *)"hi", 2, buf + 4 + plen,
						     sizeof(buf) - 4 - plen, &mlen),
				 0);
		buf[2 + plen] = 0;
		buf[3 + plen] = (uint8_t)mlen;
		assert_int_equal(hush_handshake_read(e.r, buf, 4 + plen + mlen, &used),
				 HUSH_EHANDSHAKE);
		hush__noise_wipe(&n);
		free_ends(&e);
	}
}

/* ---- Threads ---- */

struct thread_job {
	const struct hush_handshake_config *ci, *cr;
	int rounds;
	int failures;
};

/* Passes one end's next flight to the other, whole. */
static int pass_flight(struct hush_handshake *from, struct hush_handshake *to)
{
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t n = 0, used = 0;
	int rc = hush_handshake_next(from, buf, sizeof(buf), &n);
	if (rc == 0) {
		rc = hush_handshake_read(to, buf, n, &used);
	}
	return rc == 0 && used != n ? -1 : rc;
}

/* Runs job->rounds handshakes between two fresh ends, counting those that failed or
 * whose ends disagree on the record key. */
static void *thread_handshakes(void *arg)
{
	struct thread_job *j = arg;
	for (int k = 0; k < j->rounds; k++) {
		struct hush_handshake *i = NULL, *r = NULL;
		int rc = hush_handshake_new(&i, j->ci, HUSH_SIDE_CLIENT);
		if (rc == 0) {
			rc = hush_handshake_new(&r, j->cr, HUSH_SIDE_SERVER);
		}
		while (rc == 0 && !(hush_handshake_done(i) && hush_handshake_done(r))) {
			rc = hush_handshake_wants_write(i)   ? pass_flight(i, r)
			     : hush_handshake_wants_write(r) ? pass_flight(r, i)
							     : -1;
		}
		struct hush_handshake_result a, b;
		if (rc == 0 &&
		    (hush_handshake_result(i, &a) != 0 || hush_handshake_result(r, &b) != 0 ||
		     a.key_len != b.key_len || memcmp(a.key, b.key, a.key_len) != 0)) {
			rc = -1;
		}
		j->failures += rc != 0;
		hush_handshake_result_wipe(&a);
		hush_handshake_result_wipe(&b);
		hush_handshake_free(i);
		hush_handshake_free(r);
	}
	return NULL;
}

/* hush.h lets threads share key pairs and configurations: handshakes on four threads at
 * once, all copying the same pairs' derive contexts and borrowing OpenSSL contexts from
 * the one process-wide pool, all complete and agree. */
static void handshake_threads_sharing_key_pairs_all_complete(void **state)
{
	(void)state;
	enum { THREADS = 4, ROUNDS = 25 };
	static const enum hush_noise_protocol ps[] = {HUSH_NOISE_XX_25519_AESGCM_SHA256,
						      HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256,
						      HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256};
	for (size_t p = 0; p < sizeof(ps) / sizeof(ps[0]); p++) {
		struct ends e;
		setup_ends(&e, ps[p]);
		pthread_t t[THREADS];
		struct thread_job jobs[THREADS];
		for (int k = 0; k < THREADS; k++) {
			jobs[k] = (struct thread_job){&e.ci, &e.cr, ROUNDS, 0};
			assert_int_equal(pthread_create(&t[k], NULL, thread_handshakes, &jobs[k]),
					 0);
		}
		for (int k = 0; k < THREADS; k++) {
			assert_int_equal(pthread_join(t[k], NULL), 0);
			assert_int_equal(jobs[k].failures, 0);
		}
		free_ends(&e);
	}
}

#define T(f) cmocka_unit_test_setup_teardown(f, alloc_setup, alloc_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(handshake_worked_examples_reproduce_data_file),
	    T(handshake_worked_examples_follow_from_noise_split),
	    T(handshake_any_split_of_the_bytes_gives_the_same_result),
	    T(handshake_every_protocol_completes_and_keys_records),
	    T(handshake_every_record_protocol_gets_its_key_size),
	    T(handshake_default_record_protocol_follows_noise_cipher),
	    T(handshake_limits_and_app_protocol_are_exchanged),
	    T(handshake_bytes_after_a_turn_are_not_consumed),
	    T(handshake_unknown_responder_fails_with_epeer_at_initiator),
	    T(handshake_unknown_initiator_fails_with_epeer_at_responder),
	    T(handshake_verify_callback_accepts_or_refuses),
	    T(handshake_wrong_psk_fails_with_ehandshake),
	    T(handshake_noise_protocol_mismatch_fails_with_eparams),
	    T(handshake_record_protocol_mismatch_fails_with_eparams),
	    T(handshake_hello_from_other_versions_and_strangers_fails),
	    T(handshake_rewritten_hello_cannot_downgrade),
	    T(handshake_every_flipped_byte_fails),
	    T(handshake_truncated_or_extended_messages_fail),
	    T(handshake_oversized_or_empty_lengths_fail),
	    T(handshake_low_order_ephemeral_keys_fail),
	    T(handshake_bytes_out_of_turn_fail_with_eoutofturn),
	    T(handshake_failure_is_sticky),
	    T(handshake_result_before_the_end_fails_with_estate),
	    T(handshake_small_output_buffer_is_refused_without_effect),
	    T(handshake_static_keys_without_verification_fail_with_enoverify),
	    T(handshake_bad_configurations_fail_with_einval),
	    T(handshake_protocol_names_round_trip),
	    T(handshake_allocation_failure_at_every_step_is_clean),
	    T(handshake_free_wipes_the_object),
	    T(params_encode_then_decode_round_trips),
	    T(params_truncated_at_every_byte_fail),
	    T(params_bad_blocks_fail_with_exact_codes),
	    T(handshake_peer_parameter_blocks_are_judged),
	    T(handshake_xx_message_1_with_payload_fails),
	    cmocka_unit_test(handshake_threads_sharing_key_pairs_all_complete),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
