/*
 * filter-enable-stall: the ping-pong of libevent's regress_ssl.c over two filter
 * bufferevents on a socketpair, reduced to what stalls it. Each side, on reading a
 * number, writes the next one with EV_WRITE disabled, then enables EV_WRITE and
 * disables EV_READ; once its output is empty, it disables EV_WRITE and enables EV_READ.
 * bufferevent_openssl_filter_new() sends the number on bufferevent_enable(EV_WRITE)
 * and defers the write callback to the loop, so the callback's enabling of EV_READ
 * comes after the read callback's disabling. libevent's own filter sends nothing on
 * bufferevent_enable(EV_WRITE) and stops at the third number. hush's filter stopped
 * there too, for another reason: it sent the number but ran the write callback inside
 * bufferevent_enable(), so the read callback then disabled reading for good.
 *
 * Usage: filter-enable-stall {hush|libevent} [defer]. "hush" wraps each end with
 * hush_bufferevent_filter_new() (raw keys), "libevent" with libevent's pass-through
 * bufferevent_filter_new(); "defer" adds BEV_OPT_DEFER_CALLBACKS. Prints the last
 * number read and exits 0 if the exchange reached 100 within 5 s, 1 if it stalled.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/rand.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <hush/bufferevent.h>

#define LAST 100

static int last_read;

static void read_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	char *line = evbuffer_readln(bufferevent_get_input(bev), NULL, EVBUFFER_EOL_LF);
	if (line == NULL) {
		return;
	}
	int n = atoi(line);
	free(line);
	last_read = n;
	if (n >= LAST) {
		event_base_loopexit(bufferevent_get_base(bev), NULL);
		return;
	}
	evbuffer_add_printf(bufferevent_get_output(bev), "%d\n", n + 1);
	bufferevent_enable(bev, EV_WRITE);
	bufferevent_disable(bev, EV_READ);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		bufferevent_disable(bev, EV_WRITE);
		bufferevent_enable(bev, EV_READ);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || (strcmp(argv[1], "hush") != 0 && strcmp(argv[1], "libevent") != 0)) {
		fprintf(stderr, "usage: filter-enable-stall {hush|libevent} [defer]\n");
		return 2;
	}
	bool hush = strcmp(argv[1], "hush") == 0;
	int options = BEV_OPT_CLOSE_ON_FREE;
	if (argc > 2 && strcmp(argv[2], "defer") == 0) {
		options |= BEV_OPT_DEFER_CALLBACKS;
	}
	struct event_base *base = event_base_new();
	struct hush_pool *pool = NULL;
	uint8_t key[HUSH_RECORD_MAX_KEY_SIZE];
	int fds[2];
	if (base == NULL || hush_pool_new(&pool, NULL) != 0 ||
	    RAND_bytes(key, sizeof(key)) != 1 || socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
		fprintf(stderr, "filter-enable-stall: setup failed\n");
		return 2;
	}
	struct bufferevent *ends[2];
	for (int i = 0; i < 2; i++) {
		struct bufferevent *under = bufferevent_socket_new(base, fds[i], BEV_OPT_CLOSE_ON_FREE);
		struct hush_bufferevent_config cfg;
		hush_bufferevent_config_init(&cfg);
		cfg.pool = pool;
		cfg.key = key;
		cfg.key_len = sizeof(key);
		cfg.side = i == 0 ? HUSH_SIDE_CLIENT : HUSH_SIDE_SERVER;
		ends[i] = hush ? hush_bufferevent_filter_new(under, &cfg, options)
			       : bufferevent_filter_new(under, NULL, NULL, options, NULL, NULL);
		if (ends[i] == NULL) {
			fprintf(stderr, "filter-enable-stall: the filter was refused\n");
			return 2;
		}
		bufferevent_setcb(ends[i], read_cb, write_cb, NULL, NULL);
		bufferevent_enable(ends[i], EV_READ | EV_WRITE);
	}
	evbuffer_add_printf(bufferevent_get_output(ends[0]), "1\n");
	struct timeval limit = {5, 0};
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	printf("%s filter%s: the last number read was %d of %d\n", argv[1],
	       (options & BEV_OPT_DEFER_CALLBACKS) ? " (deferred callbacks)" : "", last_read, LAST);
	for (int i = 0; i < 2; i++) {
		bufferevent_free(ends[i]);
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	hush_pool_free(pool);
	return last_read >= LAST ? 0 : 1;
}
