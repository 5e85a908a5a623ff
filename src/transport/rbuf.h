/*
 * A connection's read buffer: the bytes received and not yet used, the start of the
 * next record among them, in a pool buffer borrowed only while they exist. It knows
 * pool buffers only: no socket, no event. Never installed.
 */
#ifndef HUSH_TRANSPORT_RBUF_H
#define HUSH_TRANSPORT_RBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hush/common.h>
#include <hush/pool.h>

/*
 * Bytes [start, start + len) of buf are received and not yet used. buf is NULL when the
 * connection holds no read buffer; all zero is that state.
 */
struct hush__rbuf {
	struct hush_buf *buf;
	uint32_t start;
	uint32_t len;
};

/* Room a partial record waiting between readiness events gets at least: the 4 KiB
 * tier. It grows with the bytes that arrive (hush__rbuf_settle). */
#define HUSH__RBUF_IDLE_ROOM 4096u

/* Borrows a buffer of size bytes when rb holds none (rb then holds no bytes). Returns 0
 * or the pool's error, rb untouched. */
HUSH_MUST_CHECK int hush__rbuf_acquire(struct hush__rbuf *rb, struct hush_pool *pool, size_t size);

/* The bytes not yet used (len of them). rb must hold a buffer. */
uint8_t *hush__rbuf_bytes(const struct hush__rbuf *rb);

/* Where the next received bytes go, and (*room) how many fit. rb must hold a buffer. */
uint8_t *hush__rbuf_tail(const struct hush__rbuf *rb, size_t *room);

/* n bytes were written at hush__rbuf_tail(). */
void hush__rbuf_filled(struct hush__rbuf *rb, size_t n);

/* The first n bytes were used (n at most len). */
void hush__rbuf_consume(struct hush__rbuf *rb, size_t n);

/* Gives the buffer back, with whatever it held. */
void hush__rbuf_release(struct hush__rbuf *rb);

/* Ways for hush__rbuf_settle(). */
enum {
	/* The end of a readiness event: a record waiting for more bytes sits in a buffer
	 * sized for what arrived of it, not in a large one. */
	HUSH__RBUF_FINAL = 1u << 0,
	/* The buffer is the connection's for its life: never traded for a smaller one. */
	HUSH__RBUF_PINNED = 1u << 1,
};

/*
 * Decides where the partial record at the start of the unused bytes lives, once the
 * complete records before it were used. need is its total size when known (its 4-byte
 * length is in), else 0 or 4. The record must fit its buffer from start on, so the
 * next receive has room: it moves to the front only when it would not (or its size is
 * unknown), so bytes are not copied again on every read; a buffer the application kept
 * (*kept) is never written over
 * below start; with HUSH__RBUF_FINAL a record waiting for more bytes sits in a buffer
 * sized for it (twice what arrived, at least HUSH__RBUF_IDLE_ROOM, at most need), else
 * at least read_size. No bytes left: the offsets reset, and a kept buffer is given up,
 * as is (without HUSH__RBUF_FINAL or HUSH__RBUF_PINNED) one smaller than read_size, so
 * that reading on borrows read_size bytes (rb then holds no buffer). *kept turns false
 * when rb gives up the kept buffer. Returns 0, or the pool's error
 * when rb needs a new buffer it cannot get, with nothing changed.
 */
HUSH_MUST_CHECK int hush__rbuf_settle(struct hush__rbuf *rb, struct hush_pool *pool, size_t need,
				      size_t read_size, unsigned how, bool *kept);

#endif /* HUSH_TRANSPORT_RBUF_H */
