/*
 * include/hush/bufferevent.h is enough to use a hush bufferevent: this file includes no
 * other hush header, yet makes the pool and the loop, a pair of raw-keyed socket
 * bufferevents, and moves bytes through them. Its own include comes first so that the
 * header is compiled alone.
 */
#include <hush/bufferevent.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

static void got_bytes(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_input(bev)) >= 5) {
		event_base_loopbreak(arg);
	}
}

static void bufferevent_header_alone_is_enough_to_use_it(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct hush_pool *pool;
	struct hush_loop *loop;
	assert_int_equal(hush_pool_new(&pool, NULL), 0);
	assert_int_equal(hush_loop_new(&loop, base, pool), 0);
	static const uint8_t key[44] = {1, 2, 3};
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = loop;
	cfg.key = key;
	cfg.key_len = sizeof(key);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct bufferevent *c = hush_bufferevent_socket_new(base, sv[0], &cfg, BEV_OPT_CLOSE_ON_FREE);
	cfg.side = HUSH_SIDE_SERVER;
	struct bufferevent *s = hush_bufferevent_socket_new(base, sv[1], &cfg, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(c);
	assert_non_null(s);
	bufferevent_setcb(s, got_bytes, NULL, NULL, base);
	bufferevent_enable(s, EV_READ);
	assert_int_equal(bufferevent_write(c, "hello", 5), 0);
	struct timeval tv = {10, 0};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	assert_memory_equal(evbuffer_pullup(bufferevent_get_input(s), -1), "hello", 5);
	bufferevent_free(c);
	bufferevent_free(s);
	hush_loop_free(loop); /* at once: see hush/loop.h */
	event_base_free(base);
	hush_pool_free(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bufferevent_header_alone_is_enough_to_use_it),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
