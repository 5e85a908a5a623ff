/*
 * hush-bench's two-thread harness (one connection, each end on its own thread and
 * event_base), used by PingPong here and by LargeMessage (bench-large.c).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hush-bench.h"

/* ------------------------------------------------------------------------------------ */
/* One connection, each end on its own thread: LargeMessage, PingPong                    */
/* ------------------------------------------------------------------------------------ */

void pair_finish(struct pair *p, int how)
{
	int expected = 0;
	atomic_compare_exchange_strong(&p->done, &expected, how);
	event_base_loopbreak(p->env[0].base);
	event_base_loopbreak(p->env[1].base);
}

void pair_on_close(struct ep *e)
{
	pair_finish(e->user, -1);
}

static void *pair_thread(void *arg)
{
	struct pair_thread *t = arg;
	while (atomic_load(&t->p->done) == 0) {
		event_base_loop(t->env->base, EVLOOP_NO_EXIT_ON_EMPTY);
	}
	atomic_store(&t->exited, 1);
	return NULL;
}

void pair_free(struct pair *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->ep[i].ops != NULL) {
			p->ep[i].ops->free(&p->ep[i]);
		}
	}
	if (p->check != NULL) {
		event_free(p->check);
	}
	for (int i = 0; i < 2; i++) {
		if (p->env[i].base != NULL) {
			env_free(&p->env[i]);
		}
	}
	hush_pool_free(p->pool);
}

/*
 * Connects the two ends (cb[0] for the client, cb[1] for the server), runs each on its
 * own thread until pair_finish, for at most 60 s. Returns 0 when the benchmark finished.
 */
int pair_run(struct pair *p, ep_open_fn open, const struct ep_cb *cb0, const struct ep_cb *cb1,
	     void (*check)(evutil_socket_t, short, void *))
{
	int fds[2];
	if (hush_pool_new(&p->pool, NULL) < 0 || env_init(&p->env[0], p->pool) < 0 ||
	    env_init(&p->env[1], p->pool) < 0 || tcp_pair(fds) < 0) {
		return -1;
	}
	if (check != NULL) {
		p->check = event_new(p->env[1].base, -1, 0, check, p);
		if (p->check == NULL) {
			close(fds[0]);
			close(fds[1]);
			return -1;
		}
	}
	ep_init(&p->ep[0], cb0, p);
	ep_init(&p->ep[1], cb1, p);
	/* Both ends are made here, before their threads start; from then on each is used
	 * only by the thread running its base. */
	if (open(&p->ep[1], &p->env[1], fds[1], 1) < 0) {
		close(fds[0]);
		return -1;
	}
	if (open(&p->ep[0], &p->env[0], fds[0], 0) < 0) {
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		p->arg[i].p = p;
		p->arg[i].env = &p->env[i];
		p->started[i] = pthread_create(&p->th[i], NULL, pair_thread, &p->arg[i]) == 0;
		if (!p->started[i]) {
			pair_finish(p, -1);
		}
	}
	uint64_t end = bench_now_ns() + 60000000000ull;
	while (atomic_load(&p->done) == 0 && bench_now_ns() < end) {
		usleep(2000);
	}
	/* A loop that had not started when it was told to break would miss it: repeat. */
	for (int i = 0; i < 2; i++) {
		while (p->started[i] && !atomic_load(&p->arg[i].exited)) {
			pair_finish(p, -1); /* no effect on done when already finished */
			usleep(1000);
		}
		if (p->started[i]) {
			pthread_join(p->th[i], NULL);
		}
	}
	return atomic_load(&p->done) == 1 ? 0 : -1;
}

/* The client's first message, and PingPong's every one. */
void pair_send_ping(struct ep *e)
{
	if (e->ops->write(e, ping_msg, PING_SIZE) < 0) {
		pair_finish(e->user, -1);
	}
}

/* --- PingPong --- */

#define PP_WARM 200

static void pp_client_data(struct ep *e, const uint8_t *data, size_t len)
{
	struct pair *p = e->user;
	(void)data;
	p->pending += len;
	if (p->pending < PING_SIZE) {
		return;
	}
	p->pending -= PING_SIZE;
	if (p->warm > 0) {
		if (--p->warm == 0) {
			p->t0 = bench_now_ns();
		}
	} else if (++p->count % 64 == 0) {
		uint64_t now = bench_now_ns();
		if (now - p->t0 >= p->target) {
			p->t1 = now;
			pair_finish(p, 1);
			return;
		}
	}
	pair_send_ping(e);
}

static void pp_server_data(struct ep *e, const uint8_t *data, size_t len)
{
	if (e->ops->write(e, data, len) < 0) {
		pair_finish(e->user, -1);
	}
}

static const struct ep_cb pp_client_cb = {pair_send_ping, pp_client_data, NULL, pair_on_close};
static const struct ep_cb pp_server_cb = {NULL, pp_server_data, NULL, pair_on_close};

/*
 * PingPong: the client sends 64 bytes, the server echoes them, the client sends again
 * when the echo is in: round trips per second over one loopback TCP connection, each end
 * on its own thread and event_base.
 */
static void pingpong_run(const struct benchmark *b, const struct variant *v)
{
	char name[128];
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	if (!wanted(name)) {
		return;
	}
	struct pair p;
	memset(&p, 0, sizeof(p));
	p.target = target_ns();
	p.warm = PP_WARM;
	if (pair_run(&p, v->open, &pp_client_cb, &pp_server_cb, NULL) < 0) {
		bench_fail(name, "the connection failed or stalled");
	} else {
		double secs = (double)(p.t1 - p.t0) / 1e9;
		struct bench_metric m[] = {
		    {round((double)p.count / secs), "round-trips/s"},
		    {round((double)(p.t1 - p.t0) / (double)p.count), "ns/op"},
		};
		report(name, 2, p.count, m, ARRAY_SIZE(m));
	}
	pair_free(&p);
}

static const struct variant pingpong_variants[] = {
    {"hush", open_hush, NULL},
    {"hush-bufferevent", open_hush_bev, NULL},
    {"openssl-tls", open_tls, NULL},
    {"plain-bufferevent", open_plain, NULL},
};

const struct benchmark bench_pingpong = {"PingPong", pingpong_variants,
					 ARRAY_SIZE(pingpong_variants), pingpong_run};
