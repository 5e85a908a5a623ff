/*
 * What the hush bufferevent tests share beyond the transport fixture (envlib.h): raw
 * keys, a raw-keyed socket bufferevent, a raw ALTS peer, an application on a
 * bufferevent, and the fixture for cmocka's setup and teardown.
 */
#ifndef HUSH_TEST_BEVLIB_H
#define HUSH_TEST_BEVLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include <hush/conn.h>
#include <hush/handshake.h>
#include <hush/keys.h>
#include <hush/record.h>
#include <hush/pool.h>

#include "envlib.h"

/* The raw key both ends of a raw-keyed pair use. A hush bufferevent refuses a raw key
 * that keyed one before in the process, so bev_env_init() draws a new one, and a test
 * that makes several pairs draws one for each with bev_new_key(). */
extern uint8_t BEV_KEY44[44];
void bev_new_key(void);

/* The transport fixture (env_init(), envlib.h) with a fresh BEV_KEY44. */
void bev_env_init(struct env *e);

struct bufferevent;

/* A hush socket bufferevent on fd keyed by BEV_KEY44 for side, owning fd;
 * max_send_frame 0 for the default record size. */
struct bufferevent *bev_raw_socket(struct env *e, int fd, enum hush_side side,
				   size_t max_send_frame);

/* Handshake configurations for both ends: NNpsk0 (cheap), or XX where each end trusts
 * the other's static key. */
struct bev_hs {
	struct hush_handshake_config c, s;
	struct hush_keypair *kc, *ks;
	uint8_t pub_c[HUSH_KEY_SIZE], pub_s[HUSH_KEY_SIZE];
};
void bev_hs_init(struct bev_hs *h, bool xx);
void bev_hs_done(struct bev_hs *h);

/* A raw ALTS peer: the server side of BEV_KEY44, outside any bufferevent. */
struct hush_record *bev_raw_peer(void);
/* peer seals len bytes of pt into frame (capacity cap); returns the frame's length. */
size_t bev_raw_seal(struct hush_record *peer, uint8_t *frame, size_t cap, const void *pt,
		    size_t len);

/*
 * An application on a hush bufferevent: collects what it reads (copied out and drained,
 * as most applications do), counts its events, and checks at every read that the
 * input holds no more than the read high watermark. The other fields change what it
 * does.
 */
struct bev_app {
	struct evbuffer *got;
	int connected;
	int eof;
	int error;
	int shutdown;  /* HUSH_BEV_EVENT_SHUTDOWN, counted apart */
	int reads;
	int echo;      /* writes back what it reads */
	int no_read;   /* leaves the input alone */
	size_t stop_at; /* breaks the loop once got holds this much */
	/* Reads only once the input holds wait_for bytes (or the rest of want). */
	size_t wait_for;
	size_t want;
	int drain_later;     /* drains from the loop, not from the read callback */
	int free_on_read;    /* frees the bufferevent in the read callback: 1 after reading,
			      * 2 instead of reading */
	short free_on_event; /* frees it in the event callback on any of these events */
	int err_seen;        /* hush_bufferevent_get_error() in the event callback */
	struct bufferevent *hold_at_connected; /* disabled when this one connects */
	/* Write callbacks (bev_app_write), and of them those run while in_call, which a
	 * test sets around a call of its own. */
	int writes;
	int writes_inside;
	int in_call;
	struct bufferevent *bev; /* NULL once the application freed it */
	struct event_base *base;
};

void bev_app_init(struct bev_app *a, struct env *e);
/* Frees the bufferevent if the application still has it, and what it read. */
void bev_app_done(struct bev_app *a);
/* Gives bev (may be NULL) to the application, reading and writing. */
void bev_app_attach(struct bev_app *a, struct bufferevent *bev);
/* Sets the application's callbacks on bev and enables it, leaving bev the caller's;
 * returns bev. */
struct bufferevent *bev_app_use(struct bev_app *a, struct bufferevent *bev);
void bev_app_read(struct bufferevent *bev, void *arg);
/* The write callback, counting (not set by bev_app_use()). */
void bev_app_write(struct bufferevent *bev, void *arg);
void bev_app_event(struct bufferevent *bev, short what, void *arg);
/* Asserts that the application got exactly msg[0..n). */
void bev_app_got(struct bev_app *a, const void *msg, size_t n);

/*
 * Writing enabled later, for both flavours (a's bufferevent, to peer's): len bytes
 * written while a's writing is disabled stay in its output; bufferevent_enable(EV_WRITE)
 * sends them, and a's write callback runs once they have left, from the loop and never
 * inside bufferevent_enable(), as with bufferevent_openssl (which defers it) and
 * libevent's socket type (whose write event runs it).
 */
void bev_check_write_enabled_later(struct env *e, struct bev_app *a, struct bev_app *peer,
				   size_t len);

/*
 * libevent's regress_ssl ping-pong (its "bufferevent_filter" and socketpair cases) on
 * two bufferevents, whose callbacks it replaces: each end, reading a number, writes the
 * next with writing disabled, then enables writing and disables reading; its write
 * callback, once the output is empty, disables writing and enables reading. x starts
 * with 1. Returns the last number read, after at most 5 s; the exchange stops at last.
 */
int bev_ping_pong(struct env *e, struct bufferevent *x, struct bufferevent *y, int last);

/*
 * The fixture of most bufferevent tests, as cmocka's setup and teardown
 * (cmocka_unit_test_setup_teardown(test, bev_fx_setup, bev_fx_teardown)): the transport
 * fixture with a fresh BEV_KEY44 and two applications. The teardown frees what the
 * applications still hold and ends with env_done()'s checks.
 */
struct bev_fx {
	struct env e;
	struct bev_app c, s;
};
int bev_fx_setup(void **state);
int bev_fx_teardown(void **state);
/* A test on the fixture, in cmocka's list of tests. */
#define BEV_FX_TEST(test) cmocka_unit_test_setup_teardown(test, bev_fx_setup, bev_fx_teardown)

#endif /* HUSH_TEST_BEVLIB_H */
