/*
 * Prints, as TAP, what a hush socket bufferevent makes of the libevent loaded in this
 * process: "OK" when its layout is the one hush was built against, else the refusal's
 * error name, and whether a bufferevent could be made. Exits 0 when the verdict is argv[1]
 * ("OK" or an error name such as "ELIBEVENT"; "OK" when not given, as make check runs
 * it). run-bev-abi.sh runs it against another build of libevent.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include <hush/bufferevent.h>

int main(int argc, char **argv)
{
	struct event_base *base = event_base_new();
	struct hush_pool *pool;
	struct hush_loop *loop;
	const char *want = argc > 1 ? argv[1] : "OK";
	if (base == NULL || hush_pool_new(&pool, NULL) != 0 ||
	    hush_loop_new(&loop, base, pool) != 0) {
		return 2;
	}
	int rc = hush_bufferevent_check_libevent(base);
	static const uint8_t key[44] = {7};
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = loop;
	cfg.key = key;
	cfg.key_len = sizeof(key);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		return 2;
	}
	struct bufferevent *bev = hush_bufferevent_socket_new(base, sv[0], &cfg, 0);
	bool made = bev != NULL;
	bool as_wanted = strcmp(hush_err_name(rc), want) == 0 && made == (rc == 0);
	printf("1..1\n%s 1 - libevent %s: %s (%s), bufferevent %s\n", as_wanted ? "ok" : "not ok",
	       event_get_version(), hush_err_name(rc), hush_strerror(rc),
	       made ? "made" : "refused");
	if (bev != NULL) {
		bufferevent_free(bev);
	}
	close(sv[0]);
	close(sv[1]);
	hush_loop_free(loop);
	event_base_free(base);
	hush_pool_free(pool);
	return as_wanted ? 0 : 1;
}
