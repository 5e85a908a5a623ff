/* The TLS 1.3 contexts hush's benchmarks compare against. */
#ifndef HUSH_BENCH_TLS_H
#define HUSH_BENCH_TLS_H

#include <openssl/ssl.h>

int bench_tls_init(SSL_CTX **server, SSL_CTX **client, long mode);

#endif /* HUSH_BENCH_TLS_H */
