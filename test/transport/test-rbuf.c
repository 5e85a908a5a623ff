/*
 * Tests for src/transport/rbuf.c, the read buffer, byte by byte and without sockets:
 * where the unused bytes sit after each call, which buffer holds a partial record (sized
 * for what arrived of it, not for the LENGTH it announces), that a buffer the
 * application kept is never written over, and what happens when the pool refuses.
 */
#include <stdlib.h>
#include <string.h>

#include <hush/record.h>

#include "envlib.h"
#include "testlib.h"
#include "transport/rbuf.h"

#define READ_SIZE (32768u + 512u)

struct fx {
	struct hush_pool *pool;
	struct hush__rbuf rb;
	uint8_t data[2 * READ_SIZE];
};

static int make_fx(void **state, size_t budget)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->pool = pool_with_budget(budget);
	testlib_fill(f->data, sizeof(f->data), 3);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return make_fx(state, 0);
}

/* A pool whose budget is one read buffer: every other acquire is refused. */
static int setup_one_buffer(void **state)
{
	return make_fx(state, READ_SIZE);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	hush__rbuf_release(&f->rb);
	assert_int_equal(pool_in_use(f->pool), 0);
	hush_pool_free(f->pool);
	free(f);
	return 0;
}

/* Borrows a read buffer and receives n bytes of f->data into it, after skip used ones. */
static void receive(struct fx *f, size_t n, size_t skip)
{
	assert_int_equal(hush__rbuf_acquire(&f->rb, f->pool, READ_SIZE), 0);
	size_t room;
	uint8_t *at = hush__rbuf_tail(&f->rb, &room);
	assert_true(room >= n);
	memcpy(at, f->data, n);
	hush__rbuf_filled(&f->rb, n);
	hush__rbuf_consume(&f->rb, skip);
}

/* hush__rbuf_settle() on f's buffer and pool, with the usual read size. */
static int settle(struct fx *f, size_t need, unsigned how, bool *kept)
{
	return hush__rbuf_settle(&f->rb, f->pool, need, READ_SIZE, how, kept);
}

/* Settles (no record size known yet) and checks the bytes stayed in the same buffer,
 * which kept says the application holds. Returns kept afterwards. */
static bool settle_in_place(struct fx *f, unsigned how, bool kept)
{
	struct hush_buf *b = f->rb.buf;
	assert_int_equal(settle(f, 0, how, &kept), 0);
	assert_ptr_equal(f->rb.buf, b);
	return kept;
}

/* Settles while the application holds a reference to the buffer (hush_conn_keep_data):
 * rb must give it up. Returns the application's buffer, whose bytes must be intact, for
 * the caller to check and release. */
static struct hush_buf *settle_off_kept(struct fx *f, unsigned how)
{
	struct hush_buf *app = f->rb.buf;
	hush_buf_ref(app);
	bool kept = true;
	assert_int_equal(settle(f, 0, how, &kept), 0);
	assert_false(kept);
	assert_true(f->rb.buf != app);
	return app;
}

/* Borrows a read buffer and fills all of it with f->data; returns its capacity. */
static size_t receive_full(struct fx *f)
{
	assert_int_equal(hush__rbuf_acquire(&f->rb, f->pool, READ_SIZE), 0);
	size_t room;
	uint8_t *at = hush__rbuf_tail(&f->rb, &room);
	memcpy(at, f->data, room);
	hush__rbuf_filled(&f->rb, room);
	return room;
}

static void rbuf_acquire_borrows_once_and_starts_empty(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__rbuf_acquire(&f->rb, f->pool, READ_SIZE), 0);
	struct hush_buf *b = f->rb.buf;
	assert_non_null(b);
	assert_true(hush_buf_capacity(b) >= READ_SIZE);
	assert_int_equal(f->rb.start, 0);
	assert_int_equal(f->rb.len, 0);
	assert_int_equal(hush__rbuf_acquire(&f->rb, f->pool, READ_SIZE), 0);
	assert_ptr_equal(f->rb.buf, b);
}

static void rbuf_acquire_refused_leaves_it_without_a_buffer(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__rbuf_acquire(&f->rb, f->pool, 2 * READ_SIZE), HUSH_ENOBUFS);
	assert_null(f->rb.buf);
	assert_int_equal(f->rb.start, 0);
	assert_int_equal(f->rb.len, 0);
}

static void rbuf_filled_and_consumed_bytes_are_tracked_byte_by_byte(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hush__rbuf_acquire(&f->rb, f->pool, READ_SIZE), 0);
	size_t cap = hush_buf_capacity(f->rb.buf);
	for (size_t i = 0; i < 300; i++) {
		size_t room;
		uint8_t *at = hush__rbuf_tail(&f->rb, &room);
		assert_int_equal(room, cap - i);
		*at = f->data[i];
		hush__rbuf_filled(&f->rb, 1);
		assert_int_equal(f->rb.len, i + 1);
	}
	for (size_t i = 0; i < 300; i++) {
		assert_int_equal(f->rb.start, i);
		assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data + i, 300 - i);
		hush__rbuf_consume(&f->rb, 1);
	}
	assert_int_equal(f->rb.len, 0);
}

static void rbuf_settle_with_no_bytes_left_resets_and_keeps_the_buffer(void **state)
{
	struct fx *f = *state;
	receive(f, 500, 500);
	settle_in_place(f, 0, false);
	assert_int_equal(f->rb.start, 0);
	assert_int_equal(f->rb.len, 0);
}

/* A partial record waited between events in a buffer sized for it (FINAL), then its rest
 * came and it was used: reading on gives that small buffer back, so the next acquire
 * borrows read_size bytes; at the end of an event, or pinned, the buffer stays. */
static void rbuf_settle_with_no_bytes_left_gives_up_a_small_buffer_while_reading(void **state)
{
	struct fx *f = *state;
	receive(f, 130, 30);
	bool kept = false;
	assert_int_equal(settle(f, 0, HUSH__RBUF_FINAL, &kept), 0);
	size_t room;
	(void)hush__rbuf_tail(&f->rb, &room);
	assert_true(room < READ_SIZE);
	hush__rbuf_consume(&f->rb, f->rb.len);
	settle_in_place(f, HUSH__RBUF_FINAL, false);
	settle_in_place(f, HUSH__RBUF_PINNED, false);
	assert_int_equal(settle(f, 0, 0, &kept), 0);
	assert_null(f->rb.buf);
	assert_false(kept);
	assert_int_equal(pool_in_use(f->pool), 0);
	assert_int_equal(hush__rbuf_acquire(&f->rb, f->pool, READ_SIZE), 0);
	(void)hush__rbuf_tail(&f->rb, &room);
	assert_true(room >= READ_SIZE);
}

static void rbuf_settle_with_no_bytes_left_gives_up_a_kept_buffer(void **state)
{
	struct fx *f = *state;
	receive(f, 500, 500);
	struct hush_buf *app = settle_off_kept(f, 0);
	assert_null(f->rb.buf);
	/* The application's reference still holds its bytes. */
	assert_memory_equal(hush_buf_data(app), f->data, 500);
	hush_buf_release(app);
}

static void rbuf_settle_moves_a_partial_record_to_the_front(void **state)
{
	struct fx *f = *state;
	for (size_t skip = 1; skip < 100; skip++) {
		receive(f, 100, skip);
		settle_in_place(f, 0, false);
		assert_int_equal(f->rb.start, 0);
		assert_int_equal(f->rb.len, 100 - skip);
		assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data + skip, 100 - skip);
		hush__rbuf_release(&f->rb);
	}
}

static void rbuf_settle_leaves_a_record_that_fits_where_it_is(void **state)
{
	struct fx *f = *state;
	/* 16408-byte records: one whole and 4000 bytes of the next arrived. */
	receive(f, 16408 + 4000, 16408);
	struct hush_buf *b = f->rb.buf;
	bool kept = false;
	assert_int_equal(settle(f, 16408, 0, &kept), 0);
	assert_ptr_equal(f->rb.buf, b);
	assert_int_equal(f->rb.start, 16408);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data + 16408, 4000);
	/* The rest of the record fits after it. */
	size_t room;
	hush__rbuf_tail(&f->rb, &room);
	assert_true(room >= 16408 - 4000);
}

static void rbuf_settle_moves_a_record_that_would_not_fit_to_the_front(void **state)
{
	struct fx *f = *state;
	receive(f, 2 * 16408 + 100, 2 * 16408);
	assert_true(2 * 16408 + 16408 > hush_buf_capacity(f->rb.buf));
	bool kept = false;
	assert_int_equal(settle(f, 16408, 0, &kept), 0);
	assert_int_equal(f->rb.start, 0);
	assert_int_equal(f->rb.len, 100);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data + 2 * 16408, 100);
}

static void rbuf_settle_final_moves_a_small_partial_into_a_small_buffer(void **state)
{
	struct fx *f = *state;
	receive(f, 130, 30);
	bool kept = false;
	assert_int_equal(settle(f, 0, HUSH__RBUF_FINAL, &kept), 0);
	assert_true(hush_buf_capacity(f->rb.buf) <= HUSH__RBUF_IDLE_ROOM + HUSH_POOL_HEADROOM);
	assert_int_equal(f->rb.start, 0);
	assert_int_equal(f->rb.len, 100);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data + 30, 100);
}

static void rbuf_settle_final_pinned_keeps_the_large_buffer(void **state)
{
	struct fx *f = *state;
	receive(f, 130, 30);
	settle_in_place(f, HUSH__RBUF_FINAL | HUSH__RBUF_PINNED, false);
	assert_int_equal(f->rb.start, 0);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data + 30, 100);
}

static void rbuf_settle_final_sizes_for_bytes_come_not_for_length_announced(void **state)
{
	struct fx *f = *state;
	/* Four bytes announcing a 1 MiB record must not pin a 1 MiB buffer. */
	receive(f, 4, 0);
	bool kept = false;
	assert_int_equal(settle(f, HUSH_RECORD_DEFAULT_RECV_LIMIT + 4, HUSH__RBUF_FINAL, &kept), 0);
	assert_true(hush_buf_capacity(f->rb.buf) <= HUSH__RBUF_IDLE_ROOM + HUSH_POOL_HEADROOM);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data, 4);
}

static void rbuf_settle_grows_a_full_buffer_by_doubling(void **state)
{
	struct fx *f = *state;
	size_t cap = receive_full(f);
	bool kept = false;
	assert_int_equal(settle(f, HUSH_RECORD_DEFAULT_RECV_LIMIT + 4, 0, &kept), 0);
	assert_true(hush_buf_capacity(f->rb.buf) >= 2 * cap);
	assert_int_equal(f->rb.len, cap);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data, cap);
	/* Room for the rest: the next receive has somewhere to go. */
	size_t room;
	hush__rbuf_tail(&f->rb, &room);
	assert_true(room >= cap);
}

static void rbuf_settle_never_writes_below_start_of_a_kept_buffer(void **state)
{
	struct fx *f = *state;
	receive(f, 150, 100);
	assert_true(settle_in_place(f, 0, true));
	assert_int_equal(f->rb.start, 100);
	assert_memory_equal(hush_buf_data(f->rb.buf), f->data, 150);
}

static void rbuf_settle_final_moves_off_a_kept_buffer(void **state)
{
	struct fx *f = *state;
	receive(f, 150, 100);
	struct hush_buf *app = settle_off_kept(f, HUSH__RBUF_FINAL);
	assert_int_equal(f->rb.start, 0);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data + 100, 50);
	assert_memory_equal(hush_buf_data(app), f->data, 150);
	hush_buf_release(app);
}

static void rbuf_settle_refused_a_smaller_buffer_keeps_using_the_current_one(void **state)
{
	struct fx *f = *state;
	receive(f, 130, 30);
	settle_in_place(f, HUSH__RBUF_FINAL, false);
	assert_int_equal(f->rb.start, 0);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data + 30, 100);
}

static void rbuf_settle_full_buffer_refused_a_larger_one_fails_unchanged(void **state)
{
	struct fx *f = *state;
	size_t cap = receive_full(f);
	struct hush__rbuf before = f->rb;
	bool kept = false;
	assert_int_equal(settle(f, cap + 1000, 0, &kept), HUSH_ENOBUFS);
	assert_memory_equal(&f->rb, &before, sizeof(before));
	assert_false(kept);
	assert_memory_equal(hush__rbuf_bytes(&f->rb), f->data, cap);
}

static void rbuf_release_gives_the_buffer_back(void **state)
{
	struct fx *f = *state;
	receive(f, 10, 3);
	hush__rbuf_release(&f->rb);
	assert_null(f->rb.buf);
	assert_int_equal(f->rb.start, 0);
	assert_int_equal(f->rb.len, 0);
	assert_int_equal(pool_in_use(f->pool), 0);
}

#define T(fn)	  cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define T_ONE(fn) cmocka_unit_test_setup_teardown(fn, setup_one_buffer, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(rbuf_acquire_borrows_once_and_starts_empty),
	    T_ONE(rbuf_acquire_refused_leaves_it_without_a_buffer),
	    T(rbuf_filled_and_consumed_bytes_are_tracked_byte_by_byte),
	    T(rbuf_settle_with_no_bytes_left_resets_and_keeps_the_buffer),
	    T(rbuf_settle_with_no_bytes_left_gives_up_a_kept_buffer),
	    T(rbuf_settle_with_no_bytes_left_gives_up_a_small_buffer_while_reading),
	    T(rbuf_settle_moves_a_partial_record_to_the_front),
	    T(rbuf_settle_leaves_a_record_that_fits_where_it_is),
	    T(rbuf_settle_moves_a_record_that_would_not_fit_to_the_front),
	    T(rbuf_settle_final_moves_a_small_partial_into_a_small_buffer),
	    T(rbuf_settle_final_pinned_keeps_the_large_buffer),
	    T(rbuf_settle_final_sizes_for_bytes_come_not_for_length_announced),
	    T(rbuf_settle_grows_a_full_buffer_by_doubling),
	    T(rbuf_settle_never_writes_below_start_of_a_kept_buffer),
	    T(rbuf_settle_final_moves_off_a_kept_buffer),
	    T_ONE(rbuf_settle_refused_a_smaller_buffer_keeps_using_the_current_one),
	    T_ONE(rbuf_settle_full_buffer_refused_a_larger_one_fails_unchanged),
	    T(rbuf_release_gives_the_buffer_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
