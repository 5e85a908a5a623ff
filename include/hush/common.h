/*
 * hush/common.h: conventions shared by every hush module.
 *
 * - Fallible functions return int: 0 on success, a negative HUSH_E* code on failure.
 *   Codes are stable ABI: a code's number never changes once released.
 * - Objects are opaque, made by hush_<thing>_new(&out, ...) and released by
 *   hush_<thing>_free(p); freeing NULL does nothing, and freeing wipes any secret held.
 * - Memory comes from the allocator set with hush_set_allocator() (default: the C
 *   library's malloc, realloc and free).
 */
#ifndef HUSH_COMMON_H
#define HUSH_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <hush/version.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define HUSH_EXTERN __attribute__((visibility("default")))
#define HUSH_MUST_CHECK __attribute__((warn_unused_result))
#else
#define HUSH_EXTERN
#define HUSH_MUST_CHECK
#endif

/*
 * The error table: XX(name, value, message). Values are negative and grouped by the
 * module that first reports them; gaps leave room to grow without renumbering.
 */
#define HUSH_ERRNO_MAP(XX)                                                              \
	/* General: callers and the system. */                                             \
	XX(EINVAL, -1, "invalid argument")                                                 \
	XX(ENOMEM, -2, "out of memory")                                                    \
	XX(ENOBUFS, -3, "buffer pool budget exhausted")                                    \
	XX(ESTATE, -4, "operation not valid in the object's current state")                \
	XX(ENOSPACE, -5, "destination buffer too small")                                   \
	XX(ECRYPTO, -6, "cryptographic library failure")                                   \
	XX(ESYS, -7, "system call failed")                                                 \
	XX(EAGAIN, -8, "operation would block; try again later")                           \
	/* Record layer: bytes from the peer and key material. */                         \
	XX(EPROTO_UNKNOWN, -20, "unknown record or Noise protocol")                        \
	XX(EKEYLEN, -21, "key material has the wrong length for the record protocol")      \
	XX(EFRAME_SHORT, -22, "record length field too small to hold a record")            \
	XX(EFRAME_LONG, -23, "record length field exceeds the receive limit")              \
	XX(EFRAME_TYPE, -24, "record has an unknown message type")                         \
	XX(EAUTH, -25, "record failed authentication (bad tag, key, side or order)")       \
	XX(ECOUNTER, -26, "record counter exhausted; the key must not be used again")     \
	XX(EFRAME_PARTIAL, -27, "buffer does not hold a complete record")                  \
	XX(EMSGSIZE, -28, "plaintext too large for one record")                            \
	XX(EKEYREUSE, -29, "raw key already keyed a connection in this process")           \
	/* Transport: the connection and its socket. */                                   \
	XX(ETRUNCATED, -40, "stream ended inside a record or before the close record")       \
	XX(ECONNRESET, -41, "connection reset by peer")                                    \
	XX(EPIPE, -42, "connection closed for writing")                                    \
	XX(ETIMEDOUT, -43, "timed out")                                                    \
	XX(ECLOSED, -44, "connection is closed")                                           \
	XX(EIO, -45, "socket error")                                                       \
	XX(ELIBEVENT, -46, "libevent's internal layout differs from the build's")           \
	XX(ESTALLED, -47, "a record begun by the peer was not completed within its deadline") \
	/* Handshake and identities. */                                                   \
	XX(EHANDSHAKE, -60, "handshake message malformed or failed to decrypt")            \
	XX(EPEER, -61, "peer's static key is not allowed")                                 \
	XX(EPARAMS, -62, "peer's handshake parameters do not match ours")                  \
	XX(EBADKEY, -63, "key is malformed or weak")                                       \
	XX(EKEYPERM, -64, "private key file is readable by group or others")               \
	XX(EEXIST, -65, "file already exists")                                             \
	XX(EBUSY, -66, "too many handshakes in progress")                                  \
	XX(ENOVERIFY, -67, "no peer verification configured")                             \
	XX(EOUTOFTURN, -68, "peer sent handshake bytes out of turn")                       \
	XX(ENOTFILE, -69, "not a regular file")

/* The error codes, as an enum so debuggers show names. */
enum hush_error {
	HUSH_OK = 0,
#define HUSH_ERRNO_ENUM(name, value, msg) HUSH_##name = (value),
	HUSH_ERRNO_MAP(HUSH_ERRNO_ENUM)
#undef HUSH_ERRNO_ENUM
};

/*
 * A human-readable message for an error code (0 gives "success"). Never NULL: an
 * unknown code gives "unknown error". The string is static. Thread-safe.
 */
HUSH_EXTERN const char *hush_strerror(int err);

/*
 * The code's symbolic name without prefix, such as "EAUTH" for HUSH_EAUTH ("OK" for 0,
 * "UNKNOWN" for a value not in the table). Static string; thread-safe.
 */
HUSH_EXTERN const char *hush_err_name(int err);

/* The library's version string, such as "0.1.0", and its HUSH_VERSION_NUMBER. */
HUSH_EXTERN const char *hush_version(void);
HUSH_EXTERN unsigned hush_version_number(void);

/*
 * A pluggable allocator. Every allocation hush itself makes goes through it (buffers,
 * objects, contexts); OpenSSL and libevent keep their own hooks
 * (CRYPTO_set_mem_functions, event_set_mem_functions).
 *
 * alloc(ctx, size) returns memory aligned for any type, or NULL on failure;
 * release(ctx, ptr, size) frees it and is given the size that was asked for, so a
 * counting allocator needs no header. ptr is never NULL.
 */
struct hush_allocator {
	void *(*alloc)(void *ctx, size_t size);
	void (*release)(void *ctx, void *ptr, size_t size);
	void *ctx;
};

/*
 * Installs an allocator for the whole process, or restores the default with NULL. The
 * structure is copied. Call it before creating any hush object and never while one
 * exists: memory must go back to the allocator that gave it. Not thread-safe.
 */
HUSH_EXTERN void hush_set_allocator(const struct hush_allocator *a);

/* A view of bytes owned by someone else; the owner is named where one is returned. */
struct hush_iovec {
	void *base;
	size_t len;
};

#ifdef __cplusplus
}
#endif

#endif /* HUSH_COMMON_H */
