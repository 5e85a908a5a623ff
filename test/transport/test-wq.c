/*
 * Tests for src/transport/wq.c, the write queue, byte by byte and without sockets: what
 * it hands out for sending is opened with the peer's record context and compared with
 * what was written; a write that fails part-way leaves the queue as it was, byte for
 * byte; partial sends at every offset keep the rest in order; buffers go back to the
 * pool the moment their last byte is sent.
 */
#include <stdlib.h>
#include <string.h>

#include "common/common-internal.h"
#include "envlib.h"
#include "testlib.h"
#include "transport/wq.h"

#define KEY_LEN	   44
#define STREAM_MAX (1u << 20)

struct fx {
	struct hush_pool *pool;
	struct hush_record *tx; /* seals: the client */
	struct hush_record *rx; /* opens: the server */
	struct hush__wq q;
	uint8_t *wire;	/* sealed bytes gathered from the queue */
	uint8_t *plain; /* what the peer opened */
	uint8_t *data;	/* what the tests write */
};

static int make_fx(void **state, size_t budget, size_t max_send_frame)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->pool = pool_with_budget(budget);
	uint8_t key[KEY_LEN];
	testlib_fill(key, sizeof(key), 7);
	assert_int_equal(hush_record_new(&f->tx, HUSH_RP_ALTS_AES128_GCM_REKEY, key, sizeof(key),
					 HUSH_SIDE_CLIENT),
			 0);
	assert_int_equal(hush_record_new(&f->rx, HUSH_RP_ALTS_AES128_GCM_REKEY, key, sizeof(key),
					 HUSH_SIDE_SERVER),
			 0);
	assert_int_equal(hush_record_set_limits(f->tx, max_send_frame, 0), 0);
	assert_int_equal(hush_record_set_limits(f->rx, 0, HUSH_RECORD_MAX_RECV_LIMIT), 0);
	f->wire = malloc(STREAM_MAX);
	f->plain = malloc(STREAM_MAX);
	f->data = malloc(STREAM_MAX);
	assert_true(f->wire != NULL && f->plain != NULL && f->data != NULL);
	testlib_fill(f->data, STREAM_MAX, 11);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return make_fx(state, 0, HUSH_RECORD_DEFAULT_SEND_FRAME);
}

/* A pool whose budget holds one 16 KiB write buffer and no second. */
static int setup_budget(void **state)
{
	return make_fx(state, 20000, HUSH_RECORD_DEFAULT_SEND_FRAME);
}

/* Frames of 1 MiB: larger than the 64 KiB tier write buffers stop at. */
static int setup_big_frames(void **state)
{
	return make_fx(state, 0, HUSH_RECORD_MAX_RECV_LIMIT + 4);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	hush__wq_clear(&f->q);
	assert_int_equal(pool_in_use(f->pool), 0);
	hush_pool_free(f->pool);
	hush_record_free(f->tx);
	hush_record_free(f->rx);
	free(f->wire);
	free(f->plain);
	free(f->data);
	free(f);
	return 0;
}

/* Copies the sealed, unsent bytes of the queue into f->wire; returns their count. */
static size_t gather(struct fx *f)
{
	struct iovec iov[64];
	int n = hush__wq_sealed(&f->q, iov, 64);
	size_t len = 0;
	for (int i = 0; i < n; i++) {
		assert_true(len + iov[i].iov_len <= STREAM_MAX);
		memcpy(f->wire + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	return len;
}

/* Opens every record of wire (len bytes, whole records only) into f->plain. Returns
 * the record count; *plen is the plaintext's length. */
static size_t open_all(struct fx *f, uint8_t *wire, size_t len, size_t *plen)
{
	size_t off = 0;
	size_t recs = 0;
	*plen = 0;
	while (off < len) {
		size_t need = 0;
		assert_int_equal(hush_record_parse(f->rx, wire + off, len - off, &need), 0);
		struct hush_iovec pt;
		assert_int_equal(hush_record_open(f->rx, wire + off, need, &pt), 0);
		if (pt.len > 0) {
			memcpy(f->plain + *plen, pt.base, pt.len);
		}
		*plen += pt.len;
		off += need;
		recs++;
	}
	return recs;
}

/* The peer opens the len wire bytes: recs records (any number when recs is 0) carrying
 * the first plain_len bytes of f->data. */
static void expect_wire(struct fx *f, uint8_t *wire, size_t len, size_t recs, size_t plain_len)
{
	size_t plen;
	size_t n = open_all(f, wire, len, &plen);
	if (recs != 0) {
		assert_int_equal(n, recs);
	}
	assert_int_equal(plen, plain_len);
	assert_memory_equal(f->plain, f->data, plain_len);
}

/* Seals the queue and sends it all to the peer: see expect_wire(). */
static void expect_stream(struct fx *f, size_t recs, size_t len)
{
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t wire = gather(f);
	assert_int_equal(wire, f->q.queued);
	expect_wire(f, f->wire, wire, recs, len);
}

static void wq_small_write_seals_to_one_record_that_opens(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 5), 0);
	assert_int_equal(f->q.queued, 5 + HUSH_RECORD_OVERHEAD);
	assert_int_equal(hush__wq_buffers(&f->q), 1);
	expect_stream(f, 1, 5);
}

static void wq_writes_before_sealing_share_one_record(void **state)
{
	struct fx *f = *state;
	for (size_t i = 0; i < 10; i++) {
		assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data + i, 1), 0);
	}
	assert_int_equal(f->q.queued, 10 + HUSH_RECORD_OVERHEAD);
	expect_stream(f, 1, 10);
}

static void wq_write_after_sealing_starts_a_new_record(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 3), 0);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data + 3, 4), 0);
	assert_int_equal(f->q.queued, 7 + 2 * HUSH_RECORD_OVERHEAD);
	expect_stream(f, 2, 7);
}

static void wq_write_beyond_max_payload_splits_into_full_records(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 100, f->data, 250), 0);
	assert_int_equal(f->q.queued, 250 + 3 * HUSH_RECORD_OVERHEAD);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t len = gather(f);
	/* Records of 100, 100 and 50 bytes: their LENGTH fields say so. */
	assert_int_equal(hush__load_le32(f->wire), 100 + 20);
	assert_int_equal(hush__load_le32(f->wire + 124), 100 + 20);
	assert_int_equal(hush__load_le32(f->wire + 248), 50 + 20);
	expect_wire(f, f->wire, len, 3, 250);
}

static void wq_many_writes_fill_buffers_in_order(void **state)
{
	struct fx *f = *state;
	size_t total = 0;
	for (size_t n = 1; total + n <= 300000; n += 997) {
		assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data + total, n),
				 0);
		total += n;
	}
	assert_true(hush__wq_buffers(&f->q) > 1);
	expect_stream(f, 0, total);
}

static void wq_write_failing_part_way_leaves_queue_byte_for_byte(void **state)
{
	struct fx *f = *state;
	/* An open record in the one buffer the budget allows. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 1000), 0);
	struct hush__wq before = f->q;
	assert_non_null(f->q.head);
	assert_ptr_equal(f->q.head, f->q.tail);
	/* What the queue holds: the buffer's header, then the open record's header and
	 * payload (the room after them is free space, which the failed write may use). */
	size_t n = hush__wq_header_size() + HUSH_RECORD_HEADER_SIZE + 1000;
	uint8_t *snap = malloc(n);
	assert_non_null(snap);
	memcpy(snap, hush_buf_data(f->q.head), n);
	uint64_t in_use = pool_in_use(f->pool);
	/* It fills this buffer, then needs another the budget refuses. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data + 1000, 40000),
			 HUSH_ENOBUFS);
	assert_memory_equal(&f->q, &before, sizeof(before));
	assert_memory_equal(hush_buf_data(f->q.head), snap, n);
	assert_int_equal(pool_in_use(f->pool), in_use);
	/* And it goes on as if the failed write never happened. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data + 1000, 10), 0);
	expect_stream(f, 1, 1010);
	free(snap);
}

static void wq_write_failing_on_empty_queue_leaves_it_empty(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 40000), HUSH_ENOBUFS);
	assert_null(f->q.head);
	assert_null(f->q.tail);
	assert_int_equal(f->q.queued, 0);
	assert_int_equal(pool_in_use(f->pool), 0);
}

static void wq_sent_at_every_offset_keeps_the_rest_in_order(void **state)
{
	struct fx *f = *state;
	/* Two buffers' worth, so that offsets cross a buffer's end. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 70000), 0);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t total = gather(f);
	uint8_t *all = malloc(total);
	assert_non_null(all);
	memcpy(all, f->wire, total);
	hush__wq_clear(&f->q);
	for (size_t k = 0; k <= total; k += (k < 64 || total - k < 64) ? 1 : 4093) {
		struct hush_record *tx;
		uint8_t key[KEY_LEN];
		testlib_fill(key, sizeof(key), 7);
		assert_int_equal(hush_record_new(&tx, HUSH_RP_ALTS_AES128_GCM_REKEY, key,
						 sizeof(key), HUSH_SIDE_CLIENT),
				 0);
		assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 70000), 0);
		assert_int_equal(hush__wq_seal(&f->q, tx), 0);
		hush__wq_sent(&f->q, k, false);
		assert_int_equal(f->q.queued, total - k);
		assert_int_equal(gather(f), total - k);
		assert_memory_equal(f->wire, all + k, total - k);
		hush__wq_clear(&f->q);
		hush_record_free(tx);
	}
	free(all);
}

static void wq_sent_gives_each_buffer_back_after_its_last_byte(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 70000), 0);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	unsigned bufs = hush__wq_buffers(&f->q);
	assert_true(bufs >= 2);
	struct iovec iov[64];
	assert_int_equal(hush__wq_sealed(&f->q, iov, 64), (int)bufs);
	hush__wq_sent(&f->q, iov[0].iov_len - 1, false);
	assert_int_equal(hush__wq_buffers(&f->q), bufs);
	hush__wq_sent(&f->q, 1, false);
	assert_int_equal(hush__wq_buffers(&f->q), bufs - 1);
	assert_int_equal(pool_in_use(f->pool), bufs - 1);
	hush__wq_sent(&f->q, f->q.queued, false);
	assert_null(f->q.head);
	assert_null(f->q.tail);
	assert_int_equal(pool_in_use(f->pool), 0);
}

static void wq_sent_with_keep_last_keeps_one_empty_buffer(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_reserve(&f->q, f->pool, 16384), 0);
	struct hush_buf *pinned = f->q.head;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 100), 0);
	expect_stream(f, 1, 100);
	hush__wq_sent(&f->q, f->q.queued, true);
	assert_ptr_equal(f->q.head, pinned);
	assert_ptr_equal(f->q.tail, pinned);
	assert_int_equal(f->q.queued, 0);
	assert_int_equal(hush__wq_sealed(&f->q, (struct iovec[1]){{0}}, 1), 0);
	/* The next write reuses it from its start. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 20), 0);
	assert_int_equal(hush__wq_buffers(&f->q), 1);
	expect_stream(f, 1, 20);
}

static void wq_reserve_on_a_queue_with_a_buffer_borrows_nothing(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 1), 0);
	struct hush_buf *head = f->q.head;
	assert_int_equal(hush__wq_reserve(&f->q, f->pool, 16384), 0);
	assert_ptr_equal(f->q.head, head);
	assert_int_equal(pool_in_use(f->pool), 1);
}

static void wq_sealed_stops_at_the_first_unsealed_record(void **state)
{
	struct fx *f = *state;
	static const uint8_t msg[] = "handshake message";
	assert_int_equal(hush__wq_add_plain(&f->q, f->pool, msg, sizeof(msg)), 0);
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 9), 0);
	assert_int_equal(f->q.queued, sizeof(msg) + 9 + HUSH_RECORD_OVERHEAD);
	/* Only the plain bytes may leave: the record after them is not sealed yet. */
	assert_int_equal(gather(f), sizeof(msg));
	assert_memory_equal(f->wire, msg, sizeof(msg));
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t len = gather(f);
	assert_int_equal(len, sizeof(msg) + 9 + HUSH_RECORD_OVERHEAD);
	expect_wire(f, f->wire + sizeof(msg), len - sizeof(msg), 1, 9);
}

static void wq_add_sealed_is_ready_to_send_at_once(void **state)
{
	struct fx *f = *state;
	static const uint8_t one = 0x01;
	assert_int_equal(hush__wq_add_sealed(&f->q, f->pool, f->tx, &one, 1), 0);
	assert_int_equal(f->q.queued, 1 + HUSH_RECORD_OVERHEAD);
	size_t len = gather(f);
	assert_int_equal(len, 1 + HUSH_RECORD_OVERHEAD);
	size_t plen;
	assert_int_equal(open_all(f, f->wire, len, &plen), 1);
	assert_int_equal(plen, 1);
	assert_int_equal(f->plain[0], 0x01);
}

static void wq_add_close_queues_an_empty_record_after_the_data(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 30), 0);
	assert_int_equal(hush__wq_add_close(&f->q, f->pool), 0);
	assert_int_equal(f->q.queued, 30 + 2 * HUSH_RECORD_OVERHEAD);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t len = gather(f);
	assert_int_equal(len, 30 + 2 * HUSH_RECORD_OVERHEAD);
	/* The last record is empty: LENGTH 20. */
	assert_int_equal(hush__load_le32(f->wire + 30 + HUSH_RECORD_OVERHEAD), 20);
	expect_wire(f, f->wire, len, 2, 30);
}

static void wq_large_frames_borrow_buffers_of_at_most_64k(void **state)
{
	struct fx *f = *state;
	size_t maxp = hush_record_max_payload(f->tx);
	assert_true(maxp > HUSH__WQ_MAX_BUF);
	/* A one-byte write must not borrow a 1 MiB buffer. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, maxp, f->data, 1), 0);
	assert_true(hush_buf_capacity(f->q.head) <= HUSH__WQ_MAX_BUF);
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, maxp, f->data + 1, 200000), 0);
	/* Each buffer holds at most a tier's worth of records: the stream is at least
	 * four buffers long. */
	assert_true(hush__wq_buffers(&f->q) >= 4);
	struct hush_pool_stats st;
	hush_pool_stats(f->pool, &st);
	for (unsigned t = 0; t < st.ntiers; t++) {
		if (st.tier[t].size > HUSH__WQ_MAX_BUF) {
			assert_int_equal(st.tier[t].in_use, 0);
		}
	}
	assert_int_equal(st.oversize.in_use, 0);
	expect_stream(f, 0, 200001);
}

/* A client record context of protocol rp from the first counter, keyed as the
 * fixture's: for comparing wire bytes. */
static struct hush_record *fresh_tx(enum hush_record_protocol rp)
{
	uint8_t key[KEY_LEN];
	testlib_fill(key, sizeof(key), 7);
	struct hush_record *tx;
	assert_int_equal(hush_record_new(&tx, rp, key, hush_record_key_size(rp), HUSH_SIDE_CLIENT),
			 0);
	assert_int_equal(hush_record_set_limits(tx, HUSH_RECORD_DEFAULT_SEND_FRAME, 0), 0);
	return tx;
}

static void wq_write_with_rec_seals_whole_records_before_returning(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data, 40000), 0);
	/* Two whole records are ready to send; the last (7280 bytes) waits, open. */
	size_t len = gather(f);
	assert_int_equal(len, 2 * (16360 + HUSH_RECORD_OVERHEAD));
	expect_wire(f, f->wire, len, 2, 2 * 16360);
	assert_int_equal(f->q.queued, 40000 + 3 * HUSH_RECORD_OVERHEAD);
	/* The open record still takes a small write. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + 40000, 5), 0);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	hush__wq_sent(&f->q, len, false);
	size_t rest = gather(f);
	assert_int_equal(rest, 7285 + HUSH_RECORD_OVERHEAD);
	size_t plen;
	assert_int_equal(open_all(f, f->wire, rest, &plen), 1);
	assert_int_equal(plen, 7285);
	assert_memory_equal(f->plain, f->data + 2 * 16360, 7285);
}

static void wq_write_with_rec_below_a_record_seals_nothing(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data, 100), 0);
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + 100, 16000), 0);
	/* Nothing was sealed: both writes still share one open record. */
	assert_int_equal(gather(f), 0);
	expect_stream(f, 1, 16100);
}

static void wq_write_with_rec_seals_the_older_open_record_first(void **state)
{
	struct fx *f = *state;
	/* An open record of 100 bytes, then a write that completes it and two more. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 100), 0);
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + 100, 3 * 16360), 0);
	/* The peer opens them in queue order, so the counters followed it: the older
	 * record first, then those sealed from the caller's bytes (where records end
	 * depends on the buffers' sizes: at least two whole ones). */
	size_t len = gather(f);
	size_t sealed_plen;
	open_all(f, f->wire, len, &sealed_plen);
	assert_true(sealed_plen >= 2 * 16360 && sealed_plen < 3 * 16360 + 100);
	assert_memory_equal(f->plain, f->data, sealed_plen);
	hush__wq_sent(&f->q, len, false);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t rest = gather(f);
	size_t plen;
	assert_int_equal(open_all(f, f->wire, rest, &plen), 1);
	assert_int_equal(sealed_plen + plen, 3 * 16360 + 100);
	assert_memory_equal(f->plain, f->data + sealed_plen, plen);
}

static void wq_large_small_large_writes_open_in_order(void **state)
{
	struct fx *f = *state;
	size_t sizes[] = {50000, 7, 70001, 1, 16360, 33000};
	size_t total = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		assert_int_equal(
		    hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + total, sizes[i]), 0);
		total += sizes[i];
	}
	expect_stream(f, 0, total);
}

/* Writes the same sizes to a queue that seals early (with rp's cipher) and to one that
 * copies and seals late, and checks that both put the same bytes on the wire. */
static void expect_early_equals_late(struct fx *f, enum hush_record_protocol rp)
{
	size_t sizes[] = {100, 40000, 3, 65536, 7, 16360, 1, 16359, 50000};
	struct hush__wq early = {0};
	struct hush__wq late = {0};
	struct hush_record *tx_early = fresh_tx(rp);
	struct hush_record *tx_late = fresh_tx(rp);
	size_t total = 0;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		assert_int_equal(
		    hush__wq_write(&early, f->pool, tx_early, 16360, f->data + total, sizes[i]), 0);
		assert_int_equal(
		    hush__wq_write(&late, f->pool, NULL, 16360, f->data + total, sizes[i]), 0);
		total += sizes[i];
	}
	assert_int_equal(hush__wq_seal(&early, tx_early), 0);
	assert_int_equal(hush__wq_seal(&late, tx_late), 0);
	f->q = early;
	size_t len = gather(f);
	assert_int_equal(len, early.queued);
	uint8_t *copy = malloc(len);
	assert_non_null(copy);
	memcpy(copy, f->wire, len);
	f->q = late;
	assert_int_equal(gather(f), len);
	assert_memory_equal(f->wire, copy, len);
	hush__wq_clear(&early);
	hush__wq_clear(&late);
	f->q = (struct hush__wq){0};
	free(copy);
	hush_record_free(tx_early);
	hush_record_free(tx_late);
}

static void wq_write_sealing_early_puts_the_same_bytes_on_the_wire(void **state)
{
	struct fx *f = *state;
	expect_early_equals_late(f, HUSH_RP_ALTS_AES128_GCM_REKEY);
	/* And the peer opens them to what was written. */
	size_t sizes_total = 100 + 40000 + 3 + 65536 + 7 + 16360 + 1 + 16359 + 50000;
	size_t total = 0;
	while (total < sizes_total) {
		size_t n = sizes_total - total < 40000 ? sizes_total - total : 40000;
		assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + total, n),
				 0);
		total += n;
	}
	expect_stream(f, 0, sizes_total);
}

static void wq_write_sealing_early_with_chacha_puts_the_same_bytes_on_the_wire(void **state)
{
	expect_early_equals_late(*state, HUSH_RP_CHACHA20_POLY1305_REKEY);
}

static void wq_write_sealing_early_without_rekey_puts_the_same_bytes_on_the_wire(void **state)
{
	expect_early_equals_late(*state, HUSH_RP_ALTS_AES128_GCM);
}

static void wq_large_write_after_a_small_one_completes_its_record(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data, 100), 0);
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + 100, 16360), 0);
	/* The small write's record was completed with the large write's bytes and sealed
	 * at once: a whole record, 100 bytes in place and 16260 from the caller. */
	size_t len = gather(f);
	assert_true(len >= 16360 + HUSH_RECORD_OVERHEAD);
	assert_int_equal(hush__load_le32(f->wire), 16360 + 20);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	len = gather(f);
	assert_int_equal(len, f->q.queued);
	expect_wire(f, f->wire, len, 0, 16460);
}

static void wq_writes_of_a_record_and_more_keep_records_whole(void **state)
{
	struct fx *f = *state;
	/* 16 KiB at a time (libevent's default single write): every record but the
	 * last is a whole one, as when the bytes were copied. */
	for (size_t i = 0; i < 8; i++) {
		assert_int_equal(
		    hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + i * 16384, 16384), 0);
	}
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t len = gather(f);
	size_t off = 0;
	size_t recs = 0;
	size_t short_recs = 0;
	while (off < len) {
		size_t flen = hush__load_le32(f->wire + off) + 4;
		short_recs += flen < 16384;
		off += flen;
		recs++;
	}
	/* Records end where a 64 KiB buffer does, too: at most one short one per buffer,
	 * and the last. */
	assert_true(short_recs <= hush__wq_buffers(&f->q) + 1);
	expect_wire(f, f->wire, len, recs, 8 * 16384);
}

static void wq_write_with_rec_failing_part_way_advances_no_counter(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 1000), 0);
	struct hush__wq before = f->q;
	size_t n = hush__wq_header_size() + HUSH_RECORD_HEADER_SIZE + 1000;
	uint8_t *snap = malloc(n);
	assert_non_null(snap);
	memcpy(snap, hush_buf_data(f->q.head), n);
	uint64_t in_use = pool_in_use(f->pool);
	/* Whole records to seal, but the second buffer is refused before any is. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + 1000, 40000),
			 HUSH_ENOBUFS);
	assert_memory_equal(&f->q, &before, sizeof(before));
	assert_memory_equal(hush_buf_data(f->q.head), snap, n);
	assert_int_equal(pool_in_use(f->pool), in_use);
	assert_int_equal(hush_record_error(f->tx), 0);
	/* The peer opens what follows with the first counter: none was used. */
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + 1000, 10), 0);
	expect_stream(f, 1, 1010);
	free(snap);
}

static void wq_write_with_rec_in_a_pinned_buffer_opens(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_reserve(&f->q, f->pool, 16384), 0);
	struct hush_buf *pinned = f->q.head;
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data, 16360), 0);
	/* A full record is sealed at once, in the pinned buffer. */
	assert_ptr_equal(f->q.head, pinned);
	size_t len = gather(f);
	assert_int_equal(len, 16360 + HUSH_RECORD_OVERHEAD);
	expect_wire(f, f->wire, len, 1, 16360);
	hush__wq_sent(&f->q, len, true);
	assert_ptr_equal(f->q.head, pinned);
	assert_int_equal(f->q.queued, 0);
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data + 16360, 20000), 0);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t rest = gather(f);
	size_t plen;
	assert_true(open_all(f, f->wire, rest, &plen) >= 2);
	assert_int_equal(plen, 20000);
	assert_memory_equal(f->plain, f->data + 16360, 20000);
}

static void wq_write_with_rec_then_close_ends_with_the_close_record(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, 16360, f->data, 20000), 0);
	assert_int_equal(hush__wq_add_close(&f->q, f->pool), 0);
	assert_int_equal(hush__wq_seal(&f->q, f->tx), 0);
	size_t len = gather(f);
	assert_int_equal(len, 20000 + 3 * HUSH_RECORD_OVERHEAD);
	assert_int_equal(hush__load_le32(f->wire + len - HUSH_RECORD_OVERHEAD), 20);
	expect_wire(f, f->wire, len, 3, 20000);
}

static void wq_write_with_rec_and_large_frames_opens(void **state)
{
	struct fx *f = *state;
	size_t maxp = hush_record_max_payload(f->tx);
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, maxp, f->data, 1), 0);
	assert_int_equal(hush__wq_write(&f->q, f->pool, f->tx, maxp, f->data + 1, 200000), 0);
	/* Records end where their 64 KiB buffers do; all but the last are sealed. */
	assert_true(gather(f) > 0);
	expect_stream(f, 0, 200001);
}

static void wq_clear_gives_every_buffer_back(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__wq_add_plain(&f->q, f->pool, f->data, 10), 0);
	assert_int_equal(hush__wq_write(&f->q, f->pool, NULL, 16360, f->data, 100000), 0);
	assert_true(pool_in_use(f->pool) >= 2);
	hush__wq_clear(&f->q);
	assert_null(f->q.head);
	assert_null(f->q.tail);
	assert_int_equal(f->q.queued, 0);
	assert_int_equal(hush__wq_buffers(&f->q), 0);
	assert_int_equal(pool_in_use(f->pool), 0);
}

#define T(fn)	     cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define T_BUDGET(fn) cmocka_unit_test_setup_teardown(fn, setup_budget, teardown)
#define T_BIG(fn)    cmocka_unit_test_setup_teardown(fn, setup_big_frames, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(wq_small_write_seals_to_one_record_that_opens),
	    T(wq_writes_before_sealing_share_one_record),
	    T(wq_write_after_sealing_starts_a_new_record),
	    T(wq_write_beyond_max_payload_splits_into_full_records),
	    T(wq_many_writes_fill_buffers_in_order),
	    T_BUDGET(wq_write_failing_part_way_leaves_queue_byte_for_byte),
	    T_BUDGET(wq_write_failing_on_empty_queue_leaves_it_empty),
	    T(wq_sent_at_every_offset_keeps_the_rest_in_order),
	    T(wq_sent_gives_each_buffer_back_after_its_last_byte),
	    T(wq_sent_with_keep_last_keeps_one_empty_buffer),
	    T(wq_reserve_on_a_queue_with_a_buffer_borrows_nothing),
	    T(wq_sealed_stops_at_the_first_unsealed_record),
	    T(wq_add_sealed_is_ready_to_send_at_once),
	    T(wq_add_close_queues_an_empty_record_after_the_data),
	    T_BIG(wq_large_frames_borrow_buffers_of_at_most_64k),
	    T(wq_clear_gives_every_buffer_back),
	    T(wq_write_with_rec_seals_whole_records_before_returning),
	    T(wq_write_with_rec_below_a_record_seals_nothing),
	    T(wq_write_with_rec_seals_the_older_open_record_first),
	    T(wq_large_small_large_writes_open_in_order),
	    T(wq_write_sealing_early_puts_the_same_bytes_on_the_wire),
	    T(wq_write_sealing_early_with_chacha_puts_the_same_bytes_on_the_wire),
	    T(wq_write_sealing_early_without_rekey_puts_the_same_bytes_on_the_wire),
	    T(wq_large_write_after_a_small_one_completes_its_record),
	    T(wq_writes_of_a_record_and_more_keep_records_whole),
	    T_BUDGET(wq_write_with_rec_failing_part_way_advances_no_counter),
	    T(wq_write_with_rec_in_a_pinned_buffer_opens),
	    T(wq_write_with_rec_then_close_ends_with_the_close_record),
	    T_BIG(wq_write_with_rec_and_large_frames_opens),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
