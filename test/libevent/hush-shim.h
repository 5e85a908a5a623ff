/*
 * hush-shim.h: force-included (gcc -include) into a copy of libevent's own
 * test/regress_bufferevent.c or test/regress_ssl.c, so that their bufferevents become
 * hush bufferevents with no line of libevent's code changed: the porting programmer's
 * one-line constructor swap, made by the preprocessor.
 *
 * The macros are object-like on purpose: libevent's headers, included after this one,
 * then declare the shim's functions under libevent's own prototypes (for example
 * "struct bufferevent *hush_shim_socket_new(struct event_base *, evutil_socket_t,
 * int)"), so the compiler checks every call against libevent's signature and this
 * header needs no include of its own.
 *
 * HUSH_SHIM_SOCKET: bufferevent_socket_new() and bufferevent_new() make hush socket
 * bufferevents (regress_bufferevent.c). HUSH_SHIM_SSL: the bufferevent_openssl_* constructors make
 * hush bufferevents, and the few bufferevent_openssl_* calls a port has to touch are
 * answered for hush (regress_ssl.c; there bufferevent_socket_new() stays libevent's,
 * since it makes the plain underlying bufferevent a filter wraps).
 */
#ifndef HUSH_LIBEVENT_SHIM_H
#define HUSH_LIBEVENT_SHIM_H

struct bufferevent;
struct event_base;

#ifdef HUSH_SHIM_SOCKET
#define bufferevent_socket_new hush_shim_socket_new
/* libevent 1.x's constructor (event2/bufferevent_compat.h), which the legacy cases
 * use: bufferevent_socket_new(NULL, fd, 0) and bufferevent_setcb(). */
#define bufferevent_new hush_shim_bufferevent_new
#endif

#ifdef HUSH_SHIM_SSL
#define bufferevent_openssl_socket_new hush_shim_openssl_socket_new
#define bufferevent_openssl_filter_new hush_shim_openssl_filter_new
#define bufferevent_openssl_get_ssl hush_shim_openssl_get_ssl
#define bufferevent_openssl_set_allow_dirty_shutdown hush_shim_openssl_set_allow_dirty_shutdown
#endif

/* Whether the handshake of hush bufferevent bev verified its peer's static key: the
 * port's counterpart of a TLS peer-certificate check (run-libevent-regress.sh puts it
 * where regress_ssl.c checks SSL_get_peer_certificate()). */
int hush_shim_peer_verified(struct bufferevent *bev);

/* For evhttp_set_bevcb() on a server, the setup line a ported evhttp server adds:
 * the server side of a hush handshake, with the socket evhttp sets later. */
struct bufferevent *hush_shim_evhttp_bevcb(struct event_base *base, void *arg);

#endif /* HUSH_LIBEVENT_SHIM_H */
