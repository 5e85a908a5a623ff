/*
 * hush-bench's Handshake: full handshakes per second with both ends on this thread (one
 * core): hush's Noise XX and NNpsk0 beside OpenSSL's TLS 1.3.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "hush-bench.h"

/* ------------------------------------------------------------------------------------ */
/* Handshake                                                                            */
/* ------------------------------------------------------------------------------------ */

/* Steps one end's handshake: 1 done, 0 waiting for the peer, -1 failed. */
static int tls_step(SSL *ssl)
{
	int rc = SSL_do_handshake(ssl);
	if (rc == 1) {
		return 1;
	}
	int err = SSL_get_error(ssl, rc);
	return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/*
 * n full TLS 1.3 handshakes (X25519, ECDSA P-256, verified by the client; no tickets, no
 * resumption) between two SSL objects made for each, over one AF_UNIX socketpair, both
 * ends stepped in turn on this thread.
 */
static int hs_openssl_tls13(uint64_t n)
{
	int sv[2];
	int rc = 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		return -1;
	}
	if (evutil_make_socket_nonblocking(sv[0]) < 0 ||
	    evutil_make_socket_nonblocking(sv[1]) < 0) {
		rc = -1;
	}
	for (uint64_t i = 0; i < n && rc == 0; i++) {
		SSL *c = SSL_new(tls_client_ctx);
		SSL *s = SSL_new(tls_server_ctx);
		int dc = 0, ds = 0;
		if (c == NULL || s == NULL || !SSL_set_fd(c, sv[0]) || !SSL_set_fd(s, sv[1])) {
			rc = -1;
		} else {
			SSL_set_connect_state(c);
			SSL_set_accept_state(s);
			/* A TLS 1.3 full handshake takes three flights. */
			for (int k = 0; k < 8 && (dc != 1 || ds != 1) && dc >= 0 && ds >= 0; k++) {
				dc = dc == 1 ? 1 : tls_step(c);
				ds = ds == 1 ? 1 : tls_step(s);
			}
			if (dc != 1 || ds != 1) {
				ERR_print_errors_fp(stderr);
				rc = -1;
			}
		}
		SSL_free(c);
		SSL_free(s);
	}
	close(sv[0]);
	close(sv[1]);
	return rc;
}

/*
 * Moves one end's pending handshake bytes to the other through the socket: writes what
 * `from` has to send on wfd, reads it on rfd and feeds it to `to`. Returns -1 on a
 * failure.
 */
static int hush_hs_pass(struct hush_handshake *from, int wfd, struct hush_handshake *to, int rfd)
{
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t n, used;
	if (hush_handshake_next(from, buf, sizeof(buf), &n) != 0 ||
	    write(wfd, buf, n) != (ssize_t)n || read(rfd, buf, n) != (ssize_t)n) {
		return -1;
	}
	return hush_handshake_read(to, buf, n, &used) == 0 && used == n ? 0 : -1;
}

/* Static keys made once, like the TLS variant's certificate. */
static struct hush_keypair *hs_kp_client;
static struct hush_keypair *hs_kp_server;
static uint8_t hs_pub_client[HUSH_KEY_SIZE];
static uint8_t hs_pub_server[HUSH_KEY_SIZE];
static uint8_t hs_psk[HUSH_KEY_SIZE];

/*
 * n full hush handshakes of protocol p (fresh ephemeral keys each, static keys verified
 * against an allow-list, record keys derived), both ends stepped in turn on this thread
 * over one AF_UNIX socketpair, as the TLS variant does.
 */
static int hs_hush(uint64_t n, enum hush_noise_protocol p)
{
	if (hs_kp_client == NULL) {
		if (hush_keypair_generate(&hs_kp_client) != 0 ||
		    hush_keypair_generate(&hs_kp_server) != 0) {
			return -1;
		}
		hush_keypair_public(hs_kp_client, hs_pub_client);
		hush_keypair_public(hs_kp_server, hs_pub_server);
		memset(hs_psk, 0x42, sizeof(hs_psk));
	}
	struct hush_handshake_config cc, sc;
	hush_handshake_config_init(&cc);
	hush_handshake_config_init(&sc);
	cc.protocol = sc.protocol = p;
	if (p == HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256) {
		cc.psk = sc.psk = hs_psk;
	} else {
		cc.keypair = hs_kp_client;
		sc.keypair = hs_kp_server;
		cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])hs_pub_server;
		sc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])hs_pub_client;
		cc.n_allowed_peers = sc.n_allowed_peers = 1;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		return -1;
	}
	int rc = 0;
	for (uint64_t i = 0; i < n && rc == 0; i++) {
		struct hush_handshake *c = NULL, *s = NULL;
		if (hush_handshake_new(&c, &cc, HUSH_SIDE_CLIENT) != 0 ||
		    hush_handshake_new(&s, &sc, HUSH_SIDE_SERVER) != 0) {
			rc = -1;
		}
		while (rc == 0 && !(hush_handshake_done(c) && hush_handshake_done(s))) {
			if (hush_handshake_wants_write(c)) {
				rc = hush_hs_pass(c, sv[0], s, sv[1]);
			} else if (hush_handshake_wants_write(s)) {
				rc = hush_hs_pass(s, sv[1], c, sv[0]);
			} else {
				rc = -1;
			}
		}
		struct hush_handshake_result res;
		if (rc == 0 && hush_handshake_result(c, &res) != 0) {
			rc = -1;
		}
		hush_handshake_result_wipe(&res);
		hush_handshake_free(c);
		hush_handshake_free(s);
	}
	close(sv[0]);
	close(sv[1]);
	return rc;
}

static int hs_hush_xx(uint64_t n)
{
	return hs_hush(n, HUSH_NOISE_XX_25519_AESGCM_SHA256);
}

static int hs_hush_nnpsk0(uint64_t n)
{
	return hs_hush(n, HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256);
}

/* X25519 operations of one Noise XX handshake, both ends: each end makes its ephemeral
 * key and computes ee, es and se. NNpsk0 has half as many: each end's e and ee. */
#define XX_X25519_OPS	  8
#define NNPSK0_X25519_OPS 4

/*
 * The curve's own speed: n times the XX_X25519_OPS X25519 operations of one XX handshake,
 * each an EVP_PKEY_derive on one context made once (as `openssl speed ecdhx25519`
 * measures them), on this thread.
 */
static int x25519_limit_ops(uint64_t n)
{
	static EVP_PKEY_CTX *ctx;
	if (ctx == NULL) {
		EVP_PKEY *a = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
		EVP_PKEY *b = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
		ctx = a != NULL ? EVP_PKEY_CTX_new_from_pkey(NULL, a, NULL) : NULL;
		int ok = b != NULL && ctx != NULL && EVP_PKEY_derive_init(ctx) == 1 &&
			 EVP_PKEY_derive_set_peer(ctx, b) == 1;
		EVP_PKEY_free(a);
		EVP_PKEY_free(b);
		if (!ok) {
			EVP_PKEY_CTX_free(ctx);
			ctx = NULL;
			return -1;
		}
	}
	uint8_t out[32];
	for (uint64_t i = 0; i < n * XX_X25519_OPS; i++) {
		size_t len = sizeof(out);
		if (EVP_PKEY_derive(ctx, out, &len) != 1 || len != sizeof(out)) {
			return -1;
		}
	}
	return 0;
}

/* What an XX handshake must ask of OpenSSL, both ends (the Noise specification, with
 * SHA-256, whose 28-byte protocol name needs no hash): per end 8 MixHash, 4 HKDF (3 MixKey
 * and Split; each HMACs with the chaining key, then with temp_key twice), 1 new key pair,
 * 3 DH (2 with the new key, 1 with the static key), and in all 4 payloads or static keys
 * sealed at one end and opened at the other. */
#define XX_HASHES_PER_END 8
#define XX_HKDFS_PER_END  4
#define XX_DH_E_PER_END	  2
#define XX_AEAD_MESSAGES  4

/* The contexts evp-floor makes once, as a perfect implementation would keep them. */
struct evp_floor {
	EVP_MD *sha256;
	EVP_MD_CTX *md;
	EVP_MAC_CTX *hmac;
	EVP_CIPHER_CTX *aead;
	EVP_PKEY_CTX *keygen;
	EVP_PKEY_CTX *static_dh; /* this end's static key, derive set up once */
	EVP_PKEY *peer;		 /* takes each peer key in place */
	uint8_t peer_pub[32];
};

static int evp_floor_init(struct evp_floor *f)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_CIPHER *gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	EVP_PKEY *st = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	f->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	f->md = EVP_MD_CTX_new();
	f->hmac = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
	f->aead = EVP_CIPHER_CTX_new();
	f->keygen = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
	f->static_dh = st != NULL ? EVP_PKEY_CTX_new_from_pkey(NULL, st, NULL) : NULL;
	size_t len = sizeof(f->peer_pub);
	f->peer = st != NULL && EVP_PKEY_get_raw_public_key(st, f->peer_pub, &len) == 1
		      ? EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, f->peer_pub, len)
		      : NULL;
	OSSL_PARAM dp[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
			   OSSL_PARAM_construct_end()};
	static const uint8_t zero[32];
	int ok = f->sha256 != NULL && f->md != NULL && f->hmac != NULL && gcm != NULL &&
		 f->aead != NULL && f->keygen != NULL && f->static_dh != NULL && f->peer != NULL &&
		 EVP_MAC_CTX_set_params(f->hmac, dp) == 1 &&
		 EVP_CipherInit_ex2(f->aead, gcm, zero, zero, 1, NULL) == 1 &&
		 EVP_PKEY_keygen_init(f->keygen) == 1 && EVP_PKEY_derive_init(f->static_dh) == 1;
	EVP_MAC_free(mac);
	EVP_CIPHER_free(gcm);
	EVP_PKEY_free(st);
	return ok ? 0 : -1;
}

static int evp_floor_hmac(struct evp_floor *f, const uint8_t *key, uint8_t out[32])
{
	size_t len;
	return EVP_MAC_init(f->hmac, key, key != NULL ? 32 : 0, NULL) == 1 &&
		       EVP_MAC_update(f->hmac, out, 32) == 1 &&
		       EVP_MAC_final(f->hmac, out, &len, 32) == 1
		   ? 0
		   : -1;
}

/* One DH of ctx's private key with the peer key, set in place as a handshake would. */
static int evp_floor_dh(struct evp_floor *f, EVP_PKEY_CTX *ctx, uint8_t out[32])
{
	size_t len = 32;
	return EVP_PKEY_set1_encoded_public_key(f->peer, f->peer_pub, sizeof(f->peer_pub)) == 1 &&
		       EVP_PKEY_derive_set_peer_ex(ctx, f->peer, 0) == 1 &&
		       EVP_PKEY_derive(ctx, out, &len) == 1
		   ? 0
		   : -1;
}

/* One end's part: its hashes, HKDFs, new key and DH. */
static int evp_floor_end(struct evp_floor *f, uint8_t h[32])
{
	for (int i = 0; i < XX_HASHES_PER_END; i++) {
		if (EVP_DigestInit_ex2(f->md, f->sha256, NULL) != 1 ||
		    EVP_DigestUpdate(f->md, h, 32) != 1 || EVP_DigestFinal_ex(f->md, h, NULL) != 1) {
			return -1;
		}
	}
	for (int i = 0; i < XX_HKDFS_PER_END; i++) {
		uint8_t temp[32];
		memcpy(temp, h, 32);
		if (evp_floor_hmac(f, h, temp) < 0 || evp_floor_hmac(f, temp, h) < 0 ||
		    evp_floor_hmac(f, NULL, h) < 0) {
			return -1;
		}
	}
	EVP_PKEY *e = NULL;
	EVP_PKEY_CTX *dh = NULL;
	int rc = EVP_PKEY_keygen(f->keygen, &e) == 1 &&
			 (dh = EVP_PKEY_CTX_new_from_pkey(NULL, e, NULL)) != NULL &&
			 EVP_PKEY_derive_init(dh) == 1
		     ? 0
		     : -1;
	for (int i = 0; i < XX_DH_E_PER_END && rc == 0; i++) {
		rc = evp_floor_dh(f, dh, h);
	}
	if (rc == 0) {
		rc = evp_floor_dh(f, f->static_dh, h);
	}
	EVP_PKEY_CTX_free(dh);
	EVP_PKEY_free(e);
	return rc;
}

/* The AEAD work: each message sealed and opened on the one context, re-keyed. */
static int evp_floor_aead(struct evp_floor *f, const uint8_t key[32])
{
	uint8_t iv[12] = {0}, msg[48] = {0}, tag[16];
	int len;
	for (int i = 0; i < XX_AEAD_MESSAGES; i++) {
		for (int enc = 1; enc >= 0; enc--) {
			if (EVP_CipherInit_ex2(f->aead, NULL, key, iv, enc, NULL) != 1 ||
			    (!enc && EVP_CIPHER_CTX_ctrl(f->aead, EVP_CTRL_AEAD_SET_TAG, 16, tag) != 1) ||
			    EVP_CipherUpdate(f->aead, msg, &len, msg, sizeof(msg)) != 1 ||
			    EVP_CipherFinal_ex(f->aead, msg, &len) != 1 ||
			    (enc && EVP_CIPHER_CTX_ctrl(f->aead, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)) {
				return -1;
			}
		}
	}
	return 0;
}

/*
 * evp-floor: n times what one XX handshake, both ends, cannot do without on OpenSSL's EVP
 * interface, each call on contexts made once and kept (no handshake logic, no message
 * parsing, no checks beyond OpenSSL's). Its allocs/op is the fewest allocations any
 * implementation of XX on this OpenSSL can make; its handshakes/s, the curve with all the
 * rest of the cryptography, is a second ceiling beside x25519-limit.
 */
static int evp_floor_ops(uint64_t n)
{
	static struct evp_floor f;
	if (f.md == NULL && evp_floor_init(&f) < 0) {
		return -1;
	}
	uint8_t h[32] = {0};
	for (uint64_t i = 0; i < n; i++) {
		if (evp_floor_end(&f, h) < 0 || evp_floor_end(&f, h) < 0 ||
		    evp_floor_aead(&f, h) < 0) {
			return -1;
		}
	}
	return 0;
}

/*
 * Handshake: full handshakes per second with both ends on one thread (one core).
 * allocs/op and B/op count every allocation of both ends, hush's and OpenSSL's (and
 * libevent's, none here), through benchlib's hooks. The x25519-limit row is the ceiling
 * the curve sets: X25519 operations per second divided by the 8 of an XX handshake
 * (handshakes/s), with NNpsk0's ceiling (the same divided by 4) beside it as
 * nnpsk0-handshakes/s, and the raw x25519-ops/s.
 */
static void handshake_run(const struct benchmark *b, const struct variant *v)
{
	char name[128];
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	if (!wanted(name)) {
		return;
	}
	uint64_t n, ns;
	struct bench_alloc_counts d;
	if (time_ops(v->ops, target_ns(), &n, &ns, &d) < 0) {
		bench_fail(name, "a handshake failed");
		return;
	}
	double per_s = (double)n / (double)ns * 1e9;
	struct bench_metric m[] = {
	    {round(per_s), "handshakes/s"},
	    {round((double)ns / (double)n), "ns/op"},
	    {round((double)d.bytes / (double)n), "B/op"},
	    {round((double)d.allocs / (double)n * 10) / 10, "allocs/op"},
	    {round(per_s * XX_X25519_OPS / NNPSK0_X25519_OPS), "nnpsk0-handshakes/s"},
	    {round(per_s * XX_X25519_OPS), "x25519-ops/s"},
	};
	report(name, 1, n, m, v->ops == x25519_limit_ops ? 6 : 4);
}

static const struct variant handshake_variants[] = {
    {"hush-xx", NULL, hs_hush_xx},
    {"hush-nnpsk0", NULL, hs_hush_nnpsk0},
    {"openssl-tls13", NULL, hs_openssl_tls13},
    {"x25519-limit", NULL, x25519_limit_ops},
    {"evp-floor", NULL, evp_floor_ops},
};

const struct benchmark bench_handshake = {"Handshake", handshake_variants,
					  ARRAY_SIZE(handshake_variants), handshake_run};
