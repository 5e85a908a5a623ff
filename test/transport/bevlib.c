/* What the hush bufferevent tests share (bevlib.h). */
#include "bevlib.h"

#include <event2/bufferevent.h>

#include <hush/bufferevent.h>

#include "testlib.h"

uint8_t BEV_KEY44[44];

void bev_new_key(void)
{
	static uint64_t n;
	testlib_fill(BEV_KEY44, sizeof(BEV_KEY44), ++n * 7919u);
}

void env_init(struct env *e)
{
	bev_new_key();
	e->base = event_base_new();
	assert_non_null(e->base);
	assert_int_equal(hush_pool_new(&e->pool, NULL), 0);
	assert_int_equal(hush_loop_new(&e->loop, e->base, e->pool), 0);
}

void env_done(struct env *e)
{
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	hush_loop_free(e->loop);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	struct hush_pool_stats st;
	hush_pool_stats(e->pool, &st);
	assert_int_equal(st.total.in_use, 0);
	assert_int_equal(event_base_get_num_events(e->base, EVENT_BASE_COUNT_ADDED), 0);
	assert_int_equal(event_base_get_num_events(e->base, EVENT_BASE_COUNT_ACTIVE), 0);
	event_base_free(e->base);
	hush_pool_free(e->pool);
}

static void on_run_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

void run(struct env *e)
{
	struct timeval tv = {10, 0};
	struct event *t = evtimer_new(e->base, on_run_timer, e->base);
	evtimer_add(t, &tv);
	event_base_dispatch(e->base);
	event_free(t);
}

struct bufferevent *bev_raw_socket(struct env *e, int fd, enum hush_side side,
				   size_t max_send_frame)
{
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.key = BEV_KEY44;
	cfg.key_len = sizeof(BEV_KEY44);
	cfg.side = side;
	cfg.loop = e->loop;
	cfg.max_send_frame = max_send_frame;
	struct bufferevent *b = hush_bufferevent_socket_new(e->base, fd, &cfg, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(b);
	return b;
}
