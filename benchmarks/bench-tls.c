/* The TLS 1.3 contexts hush's benchmarks compare against (hush-bench, hush-scale). */
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "bench-tls.h"

/*
 * The TLS configuration every OpenSSL variant shares: TLS 1.3 only,
 * TLS_AES_128_GCM_SHA256 (hush's AES-128-GCM), X25519, and a self-signed ECDSA P-256
 * certificate made here, which the client trusts and verifies. No session cache and no
 * tickets: hush has no resumption either, and a ticket kept by the client would be
 * charged to the connection. mode (0, or SSL_MODE_RELEASE_BUFFERS, ...) is set on both
 * contexts. Returns 0, or -1 with OpenSSL's errors printed.
 */
int bench_tls_init(SSL_CTX **server_out, SSL_CTX **client_out, long mode)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *cert = X509_new();
	int ok = key != NULL && cert != NULL;
	if (ok) {
		X509_NAME *name = X509_get_subject_name(cert);
		ok = X509_set_version(cert, 2) &&
		     ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) &&
		     X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != NULL &&
		     X509_gmtime_adj(X509_getm_notAfter(cert), 7 * 86400) != NULL &&
		     X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
						(const unsigned char *)"hush-bench", -1, -1, 0) &&
		     X509_set_issuer_name(cert, name) && X509_set_pubkey(cert, key) &&
		     X509_sign(cert, key, EVP_sha256()) > 0;
	}
	SSL_CTX *tls_server_ctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX *tls_client_ctx = SSL_CTX_new(TLS_client_method());
	ok = ok && tls_server_ctx != NULL && tls_client_ctx != NULL;
	SSL_CTX *both[] = {tls_server_ctx, tls_client_ctx};
	for (size_t i = 0; ok && i < 2; i++) {
		ok = SSL_CTX_set_min_proto_version(both[i], TLS1_3_VERSION) &&
		     SSL_CTX_set_max_proto_version(both[i], TLS1_3_VERSION) &&
		     SSL_CTX_set_ciphersuites(both[i], "TLS_AES_128_GCM_SHA256") &&
		     SSL_CTX_set1_groups_list(both[i], "X25519");
		SSL_CTX_set_session_cache_mode(both[i], SSL_SESS_CACHE_OFF);
		if (mode != 0) {
			SSL_CTX_set_mode(both[i], mode);
		}
	}
	ok = ok && SSL_CTX_use_certificate(tls_server_ctx, cert) &&
	     SSL_CTX_use_PrivateKey(tls_server_ctx, key) &&
	     SSL_CTX_check_private_key(tls_server_ctx) &&
	     SSL_CTX_set_num_tickets(tls_server_ctx, 0) &&
	     X509_STORE_add_cert(SSL_CTX_get_cert_store(tls_client_ctx), cert);
	if (ok) {
		SSL_CTX_set_verify(tls_client_ctx, SSL_VERIFY_PEER, NULL);
	}
	X509_free(cert);
	EVP_PKEY_free(key);
	if (!ok) {
		ERR_print_errors_fp(stderr);
		SSL_CTX_free(tls_server_ctx);
		SSL_CTX_free(tls_client_ctx);
		return -1;
	}
	*server_out = tls_server_ctx;
	*client_out = tls_client_ctx;
	return 0;
}
