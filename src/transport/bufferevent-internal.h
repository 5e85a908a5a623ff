/* Internal interfaces between the two flavours of hush bufferevents. Never installed. */
#ifndef HUSH_BUFFEREVENT_INTERNAL_H
#define HUSH_BUFFEREVENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct hush_bufferevent_config;

/* Whether bev is of hush's own socket type, and its stored error. */
bool hush__bev_is_sock(const struct bufferevent *bev);
int hush__bev_sock_error(struct bufferevent *bev);
int hush__bev_sock_shutdown(struct bufferevent *bev);
int hush__bev_sock_peer_key(struct bufferevent *bev, uint8_t *out);

/* Records the raw key of cfg as used in this process: 0, or HUSH_EKEYREUSE when it
 * keyed a hush bufferevent before (same key, protocol and side), HUSH_ENOMEM,
 * HUSH_ECRYPTO. */
int hush__bev_claim_raw_key(const struct hush_bufferevent_config *cfg);

/* For tests: the size of libevent's struct bufferevent_private that the layout check
 * expects of the running library, as if hush had been built against a libevent of that
 * layout (0: the build's own). Forgets the cached verdict. */
void hush__bev_layout_expect(size_t size);

#endif /* HUSH_BUFFEREVENT_INTERNAL_H */
