/*
 * hush/bufferevent.h: hush as a libevent bufferevent, a one-line swap for
 * bufferevent_openssl_socket_new() / bufferevent_openssl_filter_new().
 *
 * The returned struct bufferevent works with the standard calls: bufferevent_setcb,
 * enable/disable, bufferevent_write/write_buffer/read/read_buffer, get_input/get_output,
 * watermarks, timeouts, BEV_OPT_CLOSE_ON_FREE, BEV_OPT_THREADSAFE and
 * BEV_OPT_DEFER_CALLBACKS. The application reads and writes plaintext; the bufferevent
 * underneath carries ALTS-format records.
 *
 * How it is built: libevent lets code outside it make bufferevents only through its
 * public constructors, so a hush bufferevent is a libevent filter bufferevent whose
 * filters seal and open records. Records are opened into pool buffers and the plaintext
 * reaches the application's input evbuffer by reference (evbuffer_add_reference, whose
 * cleanup returns the buffer to the pool): the one copy libevent forces is from the
 * underlying bufferevent's input evbuffer into the pool buffer. Sealed records go to the
 * underlying output the same way, by reference. An idle hush bufferevent holds no pool
 * buffer and no cipher context (contexts are lent per call from a per-thread cache).
 *
 * Known limits of libevent 2.1's filter bufferevents, which hush inherits: they do not
 * take a socket (BEV_CTRL_SET_FD), so evhttp, which calls bufferevent_setfd() and
 * bufferevent_socket_connect(), cannot use them; and records left in the underlying
 * input when the read high watermark stopped decryption are opened when more bytes
 * arrive from the socket, not when the application drains.
 *
 * Events: BEV_EVENT_CONNECTED when records may flow, BEV_EVENT_EOF on a clean end at a
 * record boundary, BEV_EVENT_ERROR otherwise, with the hush error code available from
 * hush_bufferevent_get_error(). A stream that ends inside a record is reported as
 * BEV_EVENT_EOF | BEV_EVENT_ERROR with HUSH_ETRUNCATED.
 *
 * Ownership: with BEV_OPT_CLOSE_ON_FREE, freeing the hush bufferevent frees the
 * underlying bufferevent (filter flavour) or closes the socket (socket flavour); without
 * it, the underlying bufferevent and the socket stay the caller's. Key material is
 * copied and wiped on free. If a constructor fails it returns NULL and takes ownership
 * of nothing: the caller still owns the underlying bufferevent and the socket.
 */
#ifndef HUSH_BUFFEREVENT_H
#define HUSH_BUFFEREVENT_H

#include <hush/common.h>
#include <hush/pool.h>
#include <hush/record.h>

#ifdef __cplusplus
extern "C" {
#endif

struct bufferevent;
struct event_base;

struct hush_bufferevent_config {
	/* Raw record keys (from an external handshaker), as hush_conn_start_raw(). */
	enum hush_record_protocol rp;
	const uint8_t *key; /* copied */
	size_t key_len;
	enum hush_side side;
	/* Largest record sent (total bytes) and largest LENGTH accepted; 0 = defaults
	 * (16384 and 1 MiB). */
	size_t max_send_frame;
	size_t recv_limit;
	/* Pool to borrow buffers from; borrowed, must outlive the bufferevent. */
	struct hush_pool *pool;
};

/* Fills cfg with defaults (protocol ALTSRP_GCM_AES128_REKEY, client side, no key). */
HUSH_EXTERN void hush_bufferevent_config_init(struct hush_bufferevent_config *cfg);

/*
 * Wraps underlying (a socket bufferevent, one end of a pair, a proxy's upstream...) so
 * that the returned bufferevent carries plaintext and underlying carries records.
 * options are BEV_OPT_* flags as for bufferevent_filter_new(). Returns NULL on failure
 * (bad config: see hush_bufferevent_config_check(); out of memory).
 */
HUSH_EXTERN struct bufferevent *hush_bufferevent_filter_new(
	struct bufferevent *underlying, const struct hush_bufferevent_config *cfg, int options);

/*
 * A hush bufferevent over a connected stream socket fd, or -1 for one set later with
 * bufferevent_setfd() (as evhttp does with a bufferevent from evhttp_set_bevcb()).
 * A filter over bufferevent_socket_new(base, fd, options) that is freed with it.
 */
HUSH_EXTERN struct bufferevent *hush_bufferevent_socket_new(
	struct event_base *base, int fd, const struct hush_bufferevent_config *cfg, int options);

/* Checks a configuration: 0, HUSH_EINVAL, HUSH_EPROTO_UNKNOWN or HUSH_EKEYLEN. */
HUSH_EXTERN HUSH_MUST_CHECK int hush_bufferevent_config_check(
	const struct hush_bufferevent_config *cfg);

/* The hush error that failed bev (a HUSH_E* code), 0 if none, HUSH_EINVAL if bev is
 * not a hush bufferevent. */
HUSH_EXTERN int hush_bufferevent_get_error(struct bufferevent *bev);

#ifdef __cplusplus
}
#endif

#endif /* HUSH_BUFFEREVENT_H */
