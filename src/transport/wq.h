/*
 * A connection's write queue: records laid out in pool buffers, sealed as they are
 * written (whole records) or late (the open last one), and handed out as gather lists. It knows
 * pool buffers and a hush_record only: no socket, no event. Never installed.
 */
#ifndef HUSH_TRANSPORT_WQ_H
#define HUSH_TRANSPORT_WQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <hush/common.h>
#include <hush/pool.h>
#include <hush/record.h>

/*
 * Pool buffers in a list, each beginning with a small header; records follow it. Bytes
 * are first unsealed records (header, payload, room for the tag), then sealed, then
 * sent; a buffer goes back to the pool when its last byte was sent. All zero is an
 * empty queue that holds no buffer.
 */
struct hush__wq {
	struct hush_buf *head;
	struct hush_buf *tail;
	size_t queued; /* bytes in the queue and not yet sent, record overhead included */
};

/* Largest buffer a write borrows at once: the 64 KiB tier. */
#define HUSH__WQ_MAX_BUF 65536u

/* The bytes each write buffer spends on its header. */
size_t hush__wq_header_size(void);

/*
 * Makes sure the queue holds a buffer of at least frame bytes of records (pinned mode:
 * the connection's write buffer for its whole life). Returns 0 or the pool's error,
 * with the queue untouched.
 */
HUSH_MUST_CHECK int hush__wq_reserve(struct hush__wq *q, struct hush_pool *pool, size_t frame);

/*
 * Appends n bytes that need no sealing (a handshake message): they leave as they are.
 * Returns 0 or the pool's error, with the queue untouched.
 */
HUSH_MUST_CHECK int hush__wq_add_plain(struct hush__wq *q, struct hush_pool *pool, const uint8_t *p,
				       size_t n);

/*
 * Appends one record of the n bytes at p, sealed now with rec (which must hold cipher
 * contexts). Returns 0, the pool's error or rec's; the queue keeps no bytes of a record
 * that failed.
 */
HUSH_MUST_CHECK int hush__wq_add_sealed(struct hush__wq *q, struct hush_pool *pool,
					struct hush_record *rec, const uint8_t *p, size_t n);

/*
 * Appends the close record (an empty record), unsealed, after everything queued, and
 * ends the open record so nothing is written after it. Returns 0 or the pool's error,
 * with the queue untouched.
 */
HUSH_MUST_CHECK int hush__wq_add_close(struct hush__wq *q, struct hush_pool *pool);

/*
 * Writes len bytes of plaintext as records of at most max_payload bytes each, extending
 * the last record while it is open. Buffers it borrows are at most the 64 KiB tier, so
 * with larger frames a record ends where its buffer does.
 *
 * With rec (which must hold cipher contexts), a write that completes a record seals
 * every record it completes straight from data into the queue (out of place, no copy;
 * an open record it completes is sealed from the bytes it held, in place, and the rest
 * from data), after sealing the older unsealed records, so that counters follow queue
 * order; the last record, while it can still grow, is copied and sealed late
 * (hush__wq_seal()), so that small writes share records. Record boundaries are the same
 * either way. With rec NULL everything is copied and sealed late.
 *
 * All or nothing: every buffer is borrowed before any byte is sealed, so on the pool's
 * error the queue is byte for byte what it was and no counter advanced. rec's error
 * (sticky: rec seals nothing more) leaves records in the queue that are neither sent
 * nor sendable; the caller fails the connection, which clears the queue.
 */
HUSH_MUST_CHECK int hush__wq_write(struct hush__wq *q, struct hush_pool *pool,
				   struct hush_record *rec, size_t max_payload, const uint8_t *data,
				   size_t len);

/* Seals every unsealed record with rec, in queue order, and closes the last one to
 * further writes. Returns 0 or rec's error (the records before the failing one stay
 * sealed). */
HUSH_MUST_CHECK int hush__wq_seal(struct hush__wq *q, struct hush_record *rec);

/* Fills iov with the sealed bytes not yet sent, in order, at most max entries; stops at
 * the first unsealed record. Returns the number of entries. */
int hush__wq_sealed(const struct hush__wq *q, struct iovec *iov, int max);

/*
 * Marks the first n sealed bytes sent (n at most what hush__wq_sealed() gave). Buffers
 * whose bytes are all out go back to the pool, except the last when keep_last is set
 * (pinned mode), which is emptied for reuse instead.
 */
void hush__wq_sent(struct hush__wq *q, size_t n, bool keep_last);

/* Releases every buffer: the queue is empty. */
void hush__wq_clear(struct hush__wq *q);

/* The buffers the queue holds. */
unsigned hush__wq_buffers(const struct hush__wq *q);

#endif /* HUSH_TRANSPORT_WQ_H */
