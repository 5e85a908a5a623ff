/* The transport tests' fixture (envlib.h). */
#include "envlib.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

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

void write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		assert_true(k > 0);
		p += k;
		n -= (size_t)k;
	}
}

bool ids_has_static(enum hush_noise_protocol p)
{
	return p != HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256 &&
	       p != HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256;
}

static bool has_psk(enum hush_noise_protocol p)
{
	return p >= HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256;
}

void ids_init(struct ids *d, enum hush_noise_protocol p)
{
	memset(d, 0, sizeof(*d));
	hush_handshake_config_init(&d->cc);
	hush_handshake_config_init(&d->sc);
	d->cc.protocol = d->sc.protocol = p;
	if (ids_has_static(p)) {
		assert_int_equal(hush_keypair_generate(&d->kc), 0);
		assert_int_equal(hush_keypair_generate(&d->ks), 0);
		hush_keypair_public(d->kc, d->pub_c);
		hush_keypair_public(d->ks, d->pub_s);
		d->cc.keypair = d->kc;
		d->sc.keypair = d->ks;
		d->cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])d->pub_s;
		d->sc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])d->pub_c;
		d->cc.n_allowed_peers = d->sc.n_allowed_peers = 1;
	}
	if (has_psk(p)) {
		testlib_fill(d->psk, sizeof(d->psk), 7);
		d->cc.psk = d->sc.psk = d->psk;
	}
}

void ids_done(struct ids *d)
{
	hush_keypair_free(d->kc);
	hush_keypair_free(d->ks);
	d->kc = d->ks = NULL;
}
