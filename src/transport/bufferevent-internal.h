/*
 * What the flavours of hush bufferevents take from bufferevent.c, their public face:
 * the raw-key registry, and the layout guard's test hook
 * (bufferevent-abi.c). The machinery they share is bufferevent-core.h. The flavours
 * call the core and bufferevent.c; bufferevent.c calls the core; the core calls a
 * flavour only through its table; no flavour calls the other. Never installed.
 */
#ifndef HUSH_BUFFEREVENT_INTERNAL_H
#define HUSH_BUFFEREVENT_INTERNAL_H

#include <stddef.h>

struct hush_bufferevent_config;

/* Records the raw key of cfg as used in this process: 0, or HUSH_EKEYREUSE when it
 * keyed a hush bufferevent before (same key, protocol and side), HUSH_ENOMEM,
 * HUSH_ECRYPTO. */
int hush__bev_claim_raw_key(const struct hush_bufferevent_config *cfg);

/* ---- bufferevent-abi.c ---- */

/* For tests: the size of libevent's struct bufferevent_private that the layout check
 * expects of the running library, as if hush had been built against a libevent of that
 * layout (0: the build's own). Forgets the cached verdict. */
void hush__bev_layout_expect(size_t size);

#endif /* HUSH_BUFFEREVENT_INTERNAL_H */
