/*
 * A program of a user's own, built against an installed hush with pkg-config alone
 * (test/install/run-installcheck.sh): two hush bufferevents on a socketpair, keyed by
 * a Noise NNpsk0 handshake, send "hello" one way and read it at the other end.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <hush.h>

static char got[16];

static void on_read(struct bufferevent *bev, void *arg)
{
	size_t n = bufferevent_read(bev, got, sizeof(got) - 1);
	got[n] = '\0';
	event_base_loopbreak(arg);
}

int main(void)
{
	static const uint8_t psk[HUSH_KEY_SIZE] = {'i', 'n', 's', 't', 'a', 'l', 'l'};
	struct event_base *base = event_base_new();
	struct hush_pool *pool;
	struct hush_loop *loop;
	int sv[2];
	if (base == NULL || hush_pool_new(&pool, NULL) != 0 ||
	    hush_loop_new(&loop, base, pool) != 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		return 1;
	}
	struct hush_handshake_config hs;
	hush_handshake_config_init(&hs);
	hs.protocol = HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256;
	hs.psk = psk;
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = loop;
	cfg.handshake = &hs;
	cfg.side = HUSH_SIDE_CLIENT;
	struct bufferevent *a = hush_bufferevent_socket_new(base, sv[0], &cfg, BEV_OPT_CLOSE_ON_FREE);
	cfg.side = HUSH_SIDE_SERVER;
	struct bufferevent *b = hush_bufferevent_socket_new(base, sv[1], &cfg, BEV_OPT_CLOSE_ON_FREE);
	if (a == NULL || b == NULL) {
		return 1;
	}
	bufferevent_setcb(b, on_read, NULL, NULL, base);
	bufferevent_enable(a, EV_WRITE);
	bufferevent_enable(b, EV_READ);
	bufferevent_write(a, "hello", 5);
	struct timeval limit = {10, 0};
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	printf("hush %s: received \"%s\"\n", hush_version(), got);
	bufferevent_free(a);
	bufferevent_free(b);
	event_base_loop(base, EVLOOP_NONBLOCK);
	hush_loop_free(loop);
	event_base_free(base);
	hush_pool_free(pool);
	return strcmp(got, "hello") != 0;
}
