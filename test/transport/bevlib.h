/*
 * What the hush bufferevent tests share beyond the transport fixture (envlib.h): raw
 * keys and a raw-keyed socket bufferevent.
 */
#ifndef HUSH_TEST_BEVLIB_H
#define HUSH_TEST_BEVLIB_H

#include <stdint.h>

#include <event2/event.h>

#include <hush/conn.h>
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

#endif /* HUSH_TEST_BEVLIB_H */
