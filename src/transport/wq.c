/*
 * The write queue: pool buffers laid out as records. A write first borrows every buffer
 * it needs and lays its records out; only then, when nothing can fail but the cipher,
 * does it fill them: records it completes are sealed straight from the caller's bytes
 * (one pass, no copy), and the last, still open to more small writes, is copied and
 * sealed late, when it is about to be sent. No counter advances before every buffer is
 * in hand, which is what makes a write all or nothing. See docs/DESIGN.md, "Write path".
 */
#include <string.h>

#include "common/common-internal.h"
#include "record/record-internal.h"
#include "transport/wq.h"

/*
 * Each write buffer begins with this header; records follow it. Records in
 * [sent, sealed) are sealed and not yet sent; [sealed, end) holds unsealed records, laid
 * out as header, payload and room for the tag, whose LENGTH field already says the
 * payload's size. The last of them, at last, may still grow while open is set.
 */
struct wq_hdr {
	struct hush_buf *next;
	uint32_t sent;
	uint32_t sealed;
	uint32_t end;
	uint32_t last;
	uint32_t open;
	uint32_t pad;
};
#define WQ_HDR_SIZE ((uint32_t)sizeof(struct wq_hdr))

static struct wq_hdr *wq_hdr(const struct hush_buf *b)
{
	return (struct wq_hdr *)(void *)hush_buf_data(b);
}

size_t hush__wq_header_size(void)
{
	return WQ_HDR_SIZE;
}

/* Borrows an empty write buffer of at least n bytes after its header. */
static int buf_new(struct hush_pool *pool, size_t n, struct hush_buf **out)
{
	struct hush_buf *b;
	HUSH_GUARD(hush_pool_acquire(pool, WQ_HDR_SIZE + n, &b));
	struct wq_hdr *h = wq_hdr(b);
	memset(h, 0, sizeof(*h));
	h->sent = h->sealed = h->end = h->last = WQ_HDR_SIZE;
	*out = b;
	return 0;
}

static void append_buf(struct hush__wq *q, struct hush_buf *b)
{
	if (q->tail != NULL) {
		wq_hdr(q->tail)->next = b;
	} else {
		q->head = b;
	}
	q->tail = b;
}

int hush__wq_reserve(struct hush__wq *q, struct hush_pool *pool, size_t frame)
{
	if (q->head != NULL) {
		return 0;
	}
	struct hush_buf *b;
	HUSH_GUARD(buf_new(pool, frame, &b));
	append_buf(q, b);
	return 0;
}

/* The tail with room for n more bytes, a new buffer added if needed. */
static int room(struct hush__wq *q, struct hush_pool *pool, size_t n, struct hush_buf **out)
{
	struct hush_buf *b = q->tail;
	if (b == NULL || hush_buf_capacity(b) - wq_hdr(b)->end < n) {
		HUSH_GUARD(buf_new(pool, n, &b));
		append_buf(q, b);
	}
	*out = b;
	return 0;
}

int hush__wq_add_plain(struct hush__wq *q, struct hush_pool *pool, const uint8_t *p, size_t n)
{
	struct hush_buf *b;
	HUSH_GUARD(room(q, pool, n, &b));
	struct wq_hdr *h = wq_hdr(b);
	memcpy(hush_buf_data(b) + h->end, p, n);
	h->end += (uint32_t)n;
	h->sealed = h->last = h->end;
	q->queued += n;
	return 0;
}

int hush__wq_add_sealed(struct hush__wq *q, struct hush_pool *pool, struct hush_record *rec,
			const uint8_t *p, size_t n)
{
	size_t frame = HUSH_RECORD_OVERHEAD + n;
	struct hush_buf *b;
	HUSH_GUARD(room(q, pool, frame, &b));
	struct wq_hdr *h = wq_hdr(b);
	uint8_t *d = hush_buf_data(b) + h->end;
	size_t flen = 0;
	HUSH_GUARD(hush__record_seal_from(rec, d, frame, 0, p, n, &flen));
	h->end += (uint32_t)flen;
	h->sealed = h->last = h->end;
	q->queued += flen;
	return 0;
}

/* Starts a new unsealed, empty record at the end of the buffer whose header is h. */
static void record_begin(struct wq_hdr *h, uint8_t *d)
{
	h->last = h->end;
	hush__store_le32(d + h->end, HUSH_RECORD_TAG_SIZE + 4);
	hush__store_le32(d + h->end + 4, HUSH_RECORD_TYPE);
	h->end += HUSH_RECORD_OVERHEAD;
	h->open = 1;
}

int hush__wq_add_close(struct hush__wq *q, struct hush_pool *pool)
{
	struct hush_buf *b;
	HUSH_GUARD(room(q, pool, HUSH_RECORD_OVERHEAD, &b));
	struct wq_hdr *h = wq_hdr(b);
	record_begin(h, hush_buf_data(b));
	h->open = 0;
	q->queued += HUSH_RECORD_OVERHEAD;
	return 0;
}

/* Grows b's open record by up to left bytes, within max_payload and b's room; the
 * caller puts the bytes there (at once, or in fill()). Returns how many it took (0: the
 * record or the buffer is full). */
static size_t extend_open(struct hush_buf *b, size_t max_payload, size_t left)
{
	struct wq_hdr *h = wq_hdr(b);
	size_t cap = hush_buf_capacity(b);
	size_t plen = h->end - h->last - HUSH_RECORD_OVERHEAD;
	size_t n = max_payload - plen;
	if (n > cap - h->end) {
		n = cap - h->end;
	}
	if (n > left) {
		n = left;
	}
	if (n > 0) {
		h->end += (uint32_t)n;
		hush__store_le32(hush_buf_data(b) + h->last,
				 (uint32_t)(plen + n + HUSH_RECORD_TAG_SIZE + 4));
	}
	return n;
}

/* Drops the buffers after tail0 and gives tail0 back its saved header and the open
 * record's LENGTH (len0): the queue as it was before a write. */
static void undo(struct hush__wq *q, struct hush_buf *tail0, const struct wq_hdr *save,
		 uint32_t len0)
{
	struct hush_buf *first = tail0 != NULL ? wq_hdr(tail0)->next : q->head;
	while (first != NULL) {
		struct hush_buf *next = wq_hdr(first)->next;
		hush_buf_release(first);
		first = next;
	}
	if (tail0 != NULL) {
		*wq_hdr(tail0) = *save;
		wq_hdr(tail0)->next = NULL;
		if (save->open) {
			hush__store_le32(hush_buf_data(tail0) + save->last, len0);
		}
	} else {
		q->head = NULL;
	}
	q->tail = tail0;
}

/* Seals, in place and in queue order, the unsealed records that begin before offset
 * stop of buffer sb (every one when sb is NULL). */
static int seal_before(struct hush__wq *q, struct hush_record *rec, const struct hush_buf *sb,
		       uint32_t stop)
{
	for (struct hush_buf *b = q->head; b != NULL; b = wq_hdr(b)->next) {
		struct wq_hdr *h = wq_hdr(b);
		uint8_t *d = hush_buf_data(b);
		size_t cap = hush_buf_capacity(b);
		uint32_t end = b == sb ? stop : h->end;
		while (h->sealed < end) {
			uint32_t len = hush__load_le32(d + h->sealed);
			size_t plen = len - (HUSH_RECORD_TAG_SIZE + 4);
			size_t flen;
			HUSH_GUARD(
			    hush_record_seal(rec, d + h->sealed, cap - h->sealed, plen, &flen));
			h->sealed += (uint32_t)flen;
		}
		if (b == sb) {
			break;
		}
		h->open = 0;
	}
	return 0;
}

/*
 * Fills the records a write laid out, from offset at of buffer b to the queue's end,
 * with the bytes at src; the first record's first head bytes are already in place (the
 * open record this write completes). With rec, every record but an open last one is
 * sealed straight from src into its place (out of place: the plaintext is read once and
 * never copied), after the older unsealed records, so that counters follow queue order;
 * without rec, or for that open last record, the bytes are copied and sealed late.
 */
static int fill(struct hush__wq *q, struct hush_record *rec, size_t max_payload, struct hush_buf *b,
		uint32_t at, size_t head, const uint8_t *src)
{
	bool early = false;
	if (rec != NULL) {
		/* Sealing early is worth it only when the write completes a record. */
		struct wq_hdr *t = wq_hdr(q->tail);
		size_t tail_plen =
		    hush__load_le32(hush_buf_data(q->tail) + t->last) - (HUSH_RECORD_TAG_SIZE + 4);
		early = b != q->tail || at != t->last || tail_plen == max_payload;
	}
	if (early) {
		HUSH_GUARD(seal_before(q, rec, b, at));
	}
	for (; b != NULL; b = wq_hdr(b)->next, at = WQ_HDR_SIZE) {
		struct wq_hdr *h = wq_hdr(b);
		uint8_t *d = hush_buf_data(b);
		size_t cap = hush_buf_capacity(b);
		while (at < h->end) {
			size_t plen = hush__load_le32(d + at) - (HUSH_RECORD_TAG_SIZE + 4);
			bool last = b == q->tail && at == h->last;
			if (!early || (last && plen < max_payload)) {
				memcpy(d + at + HUSH_RECORD_HEADER_SIZE + head, src, plen - head);
				at += (uint32_t)(plen + HUSH_RECORD_OVERHEAD);
			} else {
				size_t flen;
				HUSH_GUARD(hush__record_seal_from(rec, d + at, cap - at, head, src,
								  plen, &flen));
				at += (uint32_t)flen;
				h->sealed = at;
				if (last) {
					h->open = 0; /* full: it takes no more bytes */
				}
			}
			src += plen - head;
			head = 0;
		}
	}
	return 0;
}

int hush__wq_write(struct hush__wq *q, struct hush_pool *pool, struct hush_record *rec,
		   size_t max_payload, const uint8_t *data, size_t len)
{
	const uint8_t *src = data;
	/* Remember the tail so that a failure part-way undoes everything. */
	struct hush_buf *tail0 = q->tail;
	struct wq_hdr save = {0};
	uint32_t len0 = 0;
	if (tail0 != NULL) {
		save = *wq_hdr(tail0);
		if (save.open) {
			len0 = hush__load_le32(hush_buf_data(tail0) + save.last);
		}
	}
	/*
	 * The first record whose bytes are filled once every buffer is in hand (fill()):
	 * the first this write begins, or, when the write completes the open record and
	 * will seal, that record, its head (the bytes it held) already in place. Bytes
	 * that only extend the open record are copied at once.
	 */
	struct hush_buf *first = NULL;
	uint32_t first_at = 0;
	size_t head = 0;
	size_t left = len;
	while (left > 0) {
		struct hush_buf *b = q->tail;
		if (b != NULL) {
			struct wq_hdr *h = wq_hdr(b);
			if (h->open) {
				size_t k = extend_open(b, max_payload, left);
				if (first == NULL && k > 0) {
					size_t plen = h->end - h->last - HUSH_RECORD_OVERHEAD;
					if (rec != NULL && k < left) {
						first = b;
						first_at = h->last;
						head = plen - k;
					} else {
						/* The payload ends where the tag room
						 * begins. */
						uint8_t *at = hush_buf_data(b) + h->end -
							      HUSH_RECORD_TAG_SIZE - k;
						memcpy(at, src, k);
						src += k;
					}
				}
				if (k > 0) {
					left -= k;
					continue;
				}
				h->open = 0;
			}
			if (hush_buf_capacity(b) - h->end > HUSH_RECORD_OVERHEAD) {
				if (first == NULL) {
					first = b;
					first_at = h->end;
				}
				record_begin(h, hush_buf_data(b));
				continue;
			}
		}
		/* A new buffer, large enough for the rest when it is small, else the 64 KiB
		 * tier; never smaller than one full record (or that tier) so small writes
		 * coalesce. With frames above the tier a record ends where its buffer does:
		 * a one-byte write must not borrow a 1 MiB buffer. */
		size_t recs = (left + max_payload - 1) / max_payload;
		size_t want = left > max_payload ? left + recs * HUSH_RECORD_OVERHEAD
						 : max_payload + HUSH_RECORD_OVERHEAD;
		want =
		    want > HUSH__WQ_MAX_BUF - WQ_HDR_SIZE ? HUSH__WQ_MAX_BUF - WQ_HDR_SIZE : want;
		struct hush_buf *nb;
		int rc = buf_new(pool, want, &nb);
		if (rc < 0) {
			undo(q, tail0, &save, len0);
			return rc;
		}
		append_buf(q, nb);
	}
	q->queued = 0;
	for (struct hush_buf *b = q->head; b != NULL; b = wq_hdr(b)->next) {
		q->queued += wq_hdr(b)->end - wq_hdr(b)->sent;
	}
	return first != NULL ? fill(q, rec, max_payload, first, first_at, head, src) : 0;
}

int hush__wq_seal(struct hush__wq *q, struct hush_record *rec)
{
	return seal_before(q, rec, NULL, 0);
}

int hush__wq_sealed(const struct hush__wq *q, struct iovec *iov, int max)
{
	int cnt = 0;
	for (struct hush_buf *b = q->head; b != NULL && cnt < max; b = wq_hdr(b)->next) {
		const struct wq_hdr *h = wq_hdr(b);
		if (h->sealed > h->sent) {
			iov[cnt].iov_base = hush_buf_data(b) + h->sent;
			iov[cnt].iov_len = h->sealed - h->sent;
			cnt++;
		}
		if (h->sealed < h->end) {
			break; /* records after this are not sealed yet */
		}
	}
	return cnt;
}

void hush__wq_sent(struct hush__wq *q, size_t n, bool keep_last)
{
	size_t left = n;
	q->queued -= left;
	while (q->head != NULL) {
		struct hush_buf *b = q->head;
		struct wq_hdr *h = wq_hdr(b);
		size_t avail = h->sealed - h->sent;
		size_t k = left < avail ? left : avail;
		h->sent += (uint32_t)k;
		left -= k;
		if (h->sent < h->end || h->open) {
			break;
		}
		/* Every byte of this buffer is out: it goes back to the pool now. */
		if (keep_last && b == q->tail) {
			h->sent = h->sealed = h->end = h->last = WQ_HDR_SIZE;
			break;
		}
		q->head = h->next;
		if (q->head == NULL) {
			q->tail = NULL;
		}
		hush_buf_release(b);
	}
}

void hush__wq_clear(struct hush__wq *q)
{
	for (struct hush_buf *b = q->head; b != NULL;) {
		struct hush_buf *next = wq_hdr(b)->next;
		hush_buf_release(b);
		b = next;
	}
	q->head = q->tail = NULL;
	q->queued = 0;
}

unsigned hush__wq_buffers(const struct hush__wq *q)
{
	unsigned n = 0;
	for (struct hush_buf *b = q->head; b != NULL; b = wq_hdr(b)->next) {
		n++;
	}
	return n;
}
