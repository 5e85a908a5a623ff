/*
 * The run-time half of the guard on libevent's internals. hush's socket bufferevent
 * embeds libevent's struct bufferevent_private, whose size configure measured from the
 * library hush was built against (HUSH_LIBEVENT_BEV_PRIVATE_SIZE). A libevent 2.1.x
 * update may change that size without changing its soname (Debian's 2.1.12-stable-8
 * +deb12u1 grew it from 536 to 632 bytes), and libevent would then write past the block
 * hush allocated. So before the first hush socket bufferevent of a process is made, the
 * running library's layout is measured and compared with the build's; on any
 * difference every construction is refused with HUSH_ELIBEVENT. docs/DESIGN.md, "What
 * hush relies on in libevent", lists every internal fact and how each is guarded.
 */
#include <stdatomic.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include <hush/bufferevent.h>

#include "transport/bufferevent-internal.h"
#include "transport/libevent-bev.h"

/* 0 until measured; then 1 when the layouts match, or the HUSH_E* code, for good. */
static atomic_int verdict;
/* The size expected of the running library; a test may pretend to a different build. */
static atomic_size_t expected = HUSH_LIBEVENT_BEV_PRIVATE_SIZE;

/*
 * sizeof(struct bufferevent_private) in the running library. libevent's pair type is
 * struct bufferevent_pair { struct bufferevent_private bev; struct bufferevent_pair
 * *partner; ... } (unchanged since 2.0), and a pair's partner is the other end's
 * struct bufferevent, which is at the start of its block: so the first pointer-sized
 * word after the public struct bufferevent that holds the partner's address sits at
 * exactly that size. No field of struct bufferevent_private points to another
 * bufferevent, and every word read before the match lies inside it.
 */
static int measure_private_size(struct event_base *base, size_t *out)
{
	struct bufferevent *pair[2];
	if (bufferevent_pair_new(base, 0, pair) < 0) {
		return HUSH_ENOMEM;
	}
	const unsigned char *p = (const unsigned char *)pair[0];
	uintptr_t partner = (uintptr_t)pair[1];
	size_t limit = 4 * atomic_load(&expected) + 4096;
	int rc = HUSH_ELIBEVENT;
	for (size_t off = sizeof(struct bufferevent); off <= limit; off += sizeof(void *)) {
		uintptr_t word;
		memcpy(&word, p + off, sizeof(word));
		if (word == partner) {
			*out = off;
			rc = 0;
			break;
		}
	}
	bufferevent_free(pair[0]);
	bufferevent_free(pair[1]);
	return rc;
}

/* Where libevent keeps a socket bufferevent's peer address, from its own accessor. */
static int measure_conn_address(struct event_base *base, long *out)
{
	struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
	if (bev == NULL) {
		return HUSH_ENOMEM;
	}
	*out = (long)((char *)bufferevent_socket_get_conn_address_(bev) - (char *)bev);
	bufferevent_free(bev);
	return 0;
}

static int judge(struct event_base *base)
{
	/* The implementation interface is libevent 2.1's; 2.2 changes it. */
	if ((event_get_version_number() >> 16) != 0x0201u) {
		return HUSH_ELIBEVENT;
	}
	size_t size = 0;
	int rc = measure_private_size(base, &size);
	if (rc < 0) {
		return rc;
	}
	if (size != atomic_load(&expected)) {
		return HUSH_ELIBEVENT;
	}
	long conn_address = 0;
	rc = measure_conn_address(base, &conn_address);
	if (rc < 0) {
		return rc;
	}
	return conn_address == HUSH_LIBEVENT_BEV_CONN_ADDR_OFFSET ? 0 : HUSH_ELIBEVENT;
}

int hush_bufferevent_check_libevent(struct event_base *base)
{
	int v = atomic_load(&verdict);
	if (v != 0) {
		return v == 1 ? 0 : v;
	}
	if (base == NULL) {
		return HUSH_EINVAL;
	}
	int rc = judge(base);
	if (rc == HUSH_ENOMEM) {
		return rc; /* not a verdict: a later call measures again */
	}
	/* Two threads measuring at once reach the same verdict. */
	atomic_store(&verdict, rc == 0 ? 1 : rc);
	return rc;
}

void hush__bev_layout_expect(size_t size)
{
	atomic_store(&expected, size != 0 ? size : (size_t)HUSH_LIBEVENT_BEV_PRIVATE_SIZE);
	atomic_store(&verdict, 0);
}
