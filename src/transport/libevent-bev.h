/*
 * The bufferevent implementation interface of libevent 2.1, as far as a bufferevent
 * type outside libevent needs it. libevent_openssl is built on the same exported
 * functions; libevent installs no header for them, so their declarations are written
 * here from the 2.1 ABI, and the one layout fact hush needs, the size of libevent's
 * struct bufferevent_private, is measured by configure from the library itself
 * (HUSH_LIBEVENT_BEV_PRIVATE_SIZE) and checked again at run time. Never installed.
 */
#ifndef HUSH_LIBEVENT_BEV_H
#define HUSH_LIBEVENT_BEV_H

#include <stddef.h>
#include <sys/types.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

#include "config.h"

/* Storage for libevent's struct bufferevent_private, whose first member is the
 * struct bufferevent the application holds. Only libevent's functions touch it. */
struct hush__bev_private {
	union {
		struct bufferevent bev;
		unsigned char bytes[HUSH_LIBEVENT_BEV_PRIVATE_SIZE];
		max_align_t align;
	} u;
};

/* enum bufferevent_ctrl_op and union bufferevent_ctrl_data. */
enum hush__bev_ctrl_op {
	HUSH__BEV_CTRL_SET_FD = 0,
	HUSH__BEV_CTRL_GET_FD = 1,
	HUSH__BEV_CTRL_GET_UNDERLYING = 2,
	HUSH__BEV_CTRL_CANCEL_ALL = 3,
};
union hush__bev_ctrl_data {
	void *ptr;
	evutil_socket_t fd;
};

/* struct bufferevent_ops: a bufferevent type's table of operations. */
struct hush__bev_ops {
	const char *type;
	off_t mem_offset; /* where struct bufferevent sits in the type's struct */
	int (*enable)(struct bufferevent *bev, short what);
	int (*disable)(struct bufferevent *bev, short what);
	void (*unlink)(struct bufferevent *bev);  /* the last reference went */
	void (*destruct)(struct bufferevent *bev); /* finalized: free the type's parts */
	int (*adj_timeouts)(struct bufferevent *bev);
	int (*flush)(struct bufferevent *bev, short what, enum bufferevent_flush_mode mode);
	int (*ctrl)(struct bufferevent *bev, enum hush__bev_ctrl_op op,
		    union hush__bev_ctrl_data *data);
};

/* Exported by libevent_core 2.1. */
int bufferevent_init_common_(struct hush__bev_private *p, struct event_base *base,
			     const struct hush__bev_ops *ops, enum bufferevent_options options);
void bufferevent_incref_and_lock_(struct bufferevent *bev);
int bufferevent_decref_and_unlock_(struct bufferevent *bev);
void bufferevent_run_readcb_(struct bufferevent *bev, int options);
void bufferevent_run_writecb_(struct bufferevent *bev, int options);
void bufferevent_run_eventcb_(struct bufferevent *bev, short what, int options);
int bufferevent_decrement_read_buckets_(struct hush__bev_private *p, ev_ssize_t bytes);
int bufferevent_decrement_write_buckets_(struct hush__bev_private *p, ev_ssize_t bytes);
ev_ssize_t bufferevent_get_write_max_(struct hush__bev_private *p);
int bufferevent_get_options_(struct bufferevent *bev);
void *bufferevent_socket_get_conn_address_(struct bufferevent *bev);
void bufferevent_socket_set_conn_address_fd_(struct bufferevent *bev, evutil_socket_t fd);
/* A filter's hold on its underlying bufferevent's reading (BEV_SUSPEND_FILT_READ, as
 * libevent's own filter uses): reading stops without touching the enabled flags. */
#define HUSH__BEV_SUSPEND_FILT_READ 0x10
void bufferevent_suspend_read_(struct bufferevent *bev, ev_uint16_t what);
void bufferevent_unsuspend_read_(struct bufferevent *bev, ev_uint16_t what);
void *event_mm_calloc_(size_t count, size_t size);
void event_mm_free_(void *p);

#endif /* HUSH_LIBEVENT_BEV_H */
