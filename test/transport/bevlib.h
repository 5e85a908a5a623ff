/*
 * What the hush bufferevent tests share: an event base with a pool and a hush loop,
 * the check that everything came back, and a bounded run of the loop.
 */
#ifndef HUSH_TEST_BEVLIB_H
#define HUSH_TEST_BEVLIB_H

#include <stdint.h>

#include <event2/event.h>

#include <hush/conn.h>
#include <hush/record.h>
#include <hush/pool.h>

/* The raw key both ends of a raw-keyed pair use. A hush bufferevent refuses a raw key
 * that keyed one before in the process, so env_init() draws a new one, and a test that
 * makes several pairs draws one for each with bev_new_key(). */
extern uint8_t BEV_KEY44[44];
void bev_new_key(void);

struct bufferevent;

struct env {
	struct event_base *base;
	struct hush_pool *pool;
	struct hush_loop *loop;
};

void env_init(struct env *e);

/* Runs what is pending, frees the loop, then checks every pool buffer came back and no
 * event is left added or active, and frees the rest. */
void env_done(struct env *e);

/* A hush socket bufferevent on fd keyed by BEV_KEY44 for side, owning fd;
 * max_send_frame 0 for the default record size. */
struct bufferevent *bev_raw_socket(struct env *e, int fd, enum hush_side side,
				   size_t max_send_frame);

/* Runs the loop until a callback breaks it (10 s at most); leaves no timer behind. */
void run(struct env *e);

#endif /* HUSH_TEST_BEVLIB_H */
