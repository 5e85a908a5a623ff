/* Internal interfaces between the two flavours of hush bufferevents. Never installed. */
#ifndef HUSH_BUFFEREVENT_INTERNAL_H
#define HUSH_BUFFEREVENT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

struct bufferevent;

/* Whether bev is of hush's own socket type, and its stored error. */
bool hush__bev_is_sock(const struct bufferevent *bev);
int hush__bev_sock_error(struct bufferevent *bev);
int hush__bev_sock_shutdown(struct bufferevent *bev);
int hush__bev_sock_peer_key(struct bufferevent *bev, uint8_t *out);

#endif /* HUSH_BUFFEREVENT_INTERNAL_H */
