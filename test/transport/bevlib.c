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

void bev_env_init(struct env *e)
{
	bev_new_key();
	env_init(e, NULL);
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
