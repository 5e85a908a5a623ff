/*
 * The read buffer of the ReadOnReady path: borrowed for a readiness event, kept between
 * events only for a partial record, and then in a buffer sized for what arrived of it.
 * See docs/DESIGN.md, "Read path".
 */
#include <string.h>

#include "common/common-internal.h"
#include "transport/rbuf.h"

int hush__rbuf_acquire(struct hush__rbuf *rb, struct hush_pool *pool, size_t size)
{
	if (rb->buf != NULL) {
		return 0;
	}
	HUSH_GUARD(hush_pool_acquire(pool, size, &rb->buf));
	rb->start = rb->len = 0;
	return 0;
}

uint8_t *hush__rbuf_bytes(const struct hush__rbuf *rb)
{
	return hush_buf_data(rb->buf) + rb->start;
}

uint8_t *hush__rbuf_tail(const struct hush__rbuf *rb, size_t *room)
{
	size_t off = (size_t)rb->start + rb->len;
	*room = hush_buf_capacity(rb->buf) - off;
	return hush_buf_data(rb->buf) + off;
}

void hush__rbuf_filled(struct hush__rbuf *rb, size_t n)
{
	rb->len += (uint32_t)n;
}

void hush__rbuf_consume(struct hush__rbuf *rb, size_t n)
{
	rb->start += (uint32_t)n;
	rb->len -= (uint32_t)n;
}

void hush__rbuf_release(struct hush__rbuf *rb)
{
	hush_buf_release(rb->buf);
	rb->buf = NULL;
	rb->start = rb->len = 0;
}

/* Moves the unused bytes to the front of the buffer. */
static void to_front(struct hush__rbuf *rb)
{
	if (rb->start > 0) {
		uint8_t *d = hush_buf_data(rb->buf);
		memmove(d, d + rb->start, rb->len);
		rb->start = 0;
	}
}

int hush__rbuf_settle(struct hush__rbuf *rb, struct hush_pool *pool, size_t need, size_t read_size,
		      unsigned how, bool *kept)
{
	bool final = (how & HUSH__RBUF_FINAL) != 0;
	size_t cap = hush_buf_capacity(rb->buf);
	if (rb->len == 0) {
		rb->start = 0;
		/* A buffer sized for the partial record that waited between events is given
		 * back once that record is used, while reading goes on: the next read then
		 * borrows read_size bytes, not the rest of a small buffer, at no copy. */
		bool small = !final && !(how & HUSH__RBUF_PINNED) && cap < read_size;
		if (*kept || small) {
			hush__rbuf_release(rb);
			*kept = false;
		}
		return 0;
	}
	size_t total = need > rb->len ? need : rb->len;
	/*
	 * The room a partial record gets grows with the bytes that actually arrived, not
	 * with the LENGTH it announces: the header is not authenticated, so four bytes
	 * from anyone on the path could otherwise pin a buffer of the whole receive limit
	 * for as long as they stay silent. Doubling costs a large record at most
	 * log2(limit / read_size) copies, about its own size in all.
	 */
	size_t floor = final ? HUSH__RBUF_IDLE_ROOM : read_size;
	size_t grow = 2 * (size_t)rb->len > floor ? 2 * (size_t)rb->len : floor;
	size_t want = total < grow ? total : grow;
	/* Much larger than what it is for: a smaller tier would hold it. */
	bool oversized = final && !(how & HUSH__RBUF_PINNED) && cap > 2 * want + HUSH_POOL_HEADROOM;
	if (!*kept && want <= cap && !oversized) {
		/* A record whose size is known and whose rest fits after it stays where it
		 * is: moving it on every read that ends inside a record copied half of all
		 * bulk bytes received once more. Once the buffer's end is near, the bytes
		 * left there are few. */
		if (need <= rb->len || (size_t)rb->start + need > cap) {
			to_front(rb);
		}
		return 0;
	}
	if (*kept && !final && rb->start + want <= cap) {
		return 0; /* appending after the kept plaintext overwrites none of it */
	}
	struct hush_buf *nb;
	int rc = hush_pool_acquire(pool, want, &nb);
	if (rc < 0) {
		/* Without a new buffer the current one still works while it has room for
		 * more of the record; once full, reading waits for the pool. */
		if (!*kept && rb->len < cap) {
			to_front(rb);
			return 0;
		}
		if (rb->start + rb->len < cap) {
			return 0;
		}
		return rc;
	}
	memcpy(hush_buf_data(nb), hush_buf_data(rb->buf) + rb->start, rb->len);
	hush_buf_release(rb->buf);
	rb->buf = nb;
	rb->start = 0;
	*kept = false;
	return 0;
}
