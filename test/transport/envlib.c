/* The transport tests' fixture (envlib.h). */
#include "envlib.h"

#include <event2/thread.h>

#include "testlib.h"
#include "transport/transport-internal.h"

void env_init(struct env *e, const struct hush_pool_config *pcfg)
{
	evthread_use_pthreads();
	e->base = event_base_new();
	assert_non_null(e->base);
	assert_int_equal(hush_pool_new(&e->pool, pcfg), 0);
	assert_int_equal(hush_loop_new(&e->loop, e->base, e->pool), 0);
}

struct hush_pool *pool_with_budget(size_t budget)
{
	struct hush_pool_config pc;
	hush_pool_config_init(&pc);
	pc.budget = budget;
	struct hush_pool *pool = NULL;
	assert_int_equal(hush_pool_new(&pool, &pc), 0);
	return pool;
}

uint64_t pool_in_use(const struct hush_pool *pool)
{
	struct hush_pool_stats st;
	hush_pool_stats(pool, &st);
	return st.total.in_use;
}

void env_done(struct env *e)
{
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	assert_int_equal(e->loop->nconns, 0);
	assert_int_equal(pool_in_use(e->pool), 0);
	hush_loop_free(e->loop);
	event_base_loop(e->base, EVLOOP_NONBLOCK);
	/* With the loop gone nothing may remain registered on the base. */
	assert_int_equal(event_base_get_num_events(e->base, EVENT_BASE_COUNT_ADDED), 0);
	assert_int_equal(event_base_get_num_events(e->base, EVENT_BASE_COUNT_ACTIVE), 0);
	hush_pool_free(e->pool);
	event_base_free(e->base);
}

static void on_run_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

void run_for_ms(struct env *e, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	struct event *t = evtimer_new(e->base, on_run_timer, e->base);
	evtimer_add(t, &tv);
	event_base_dispatch(e->base);
	event_free(t);
}

void run(struct env *e)
{
	run_for_ms(e, 10000);
}

void run_until(struct env *e, int ms, bool (*done)(void *), void *arg)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	struct event *t = evtimer_new(e->base, on_run_timer, e->base);
	evtimer_add(t, &tv);
	while (!done(arg) && evtimer_pending(t, NULL)) {
		event_base_loop(e->base, EVLOOP_ONCE);
	}
	event_free(t);
}
