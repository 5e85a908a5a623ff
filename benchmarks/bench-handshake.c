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
};

const struct benchmark bench_handshake = {"Handshake", handshake_variants,
					  ARRAY_SIZE(handshake_variants), handshake_run};
