/* What the hush bufferevent tests share (bevlib.h). */
#include "bevlib.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
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

static const uint8_t PSK[HUSH_KEY_SIZE] = {0x70, 0x73, 0x6b};

void bev_hs_init(struct bev_hs *h, bool xx)
{
	memset(h, 0, sizeof(*h));
	hush_handshake_config_init(&h->c);
	hush_handshake_config_init(&h->s);
	if (!xx) {
		h->c.protocol = h->s.protocol = HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256;
		h->c.psk = h->s.psk = PSK;
		return;
	}
	assert_int_equal(hush_keypair_generate(&h->kc), 0);
	assert_int_equal(hush_keypair_generate(&h->ks), 0);
	hush_keypair_public(h->kc, h->pub_c);
	hush_keypair_public(h->ks, h->pub_s);
	h->c.keypair = h->kc;
	h->s.keypair = h->ks;
	h->c.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])h->pub_s;
	h->s.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])h->pub_c;
	h->c.n_allowed_peers = h->s.n_allowed_peers = 1;
}

void bev_hs_done(struct bev_hs *h)
{
	hush_keypair_free(h->kc);
	hush_keypair_free(h->ks);
}

struct hush_record *bev_raw_peer(void)
{
	struct hush_record *peer;
	assert_int_equal(hush_record_new(&peer, HUSH_RP_ALTS_AES128_GCM_REKEY, BEV_KEY44,
					 sizeof(BEV_KEY44), HUSH_SIDE_SERVER),
			 0);
	return peer;
}

size_t bev_raw_seal(struct hush_record *peer, uint8_t *frame, size_t cap, const void *pt,
		    size_t len)
{
	memcpy(frame + HUSH_RECORD_HEADER_SIZE, pt, len);
	size_t flen = 0;
	assert_int_equal(hush_record_seal(peer, frame, cap, len, &flen), 0);
	return flen;
}

void bev_app_init(struct bev_app *a, struct env *e)
{
	memset(a, 0, sizeof(*a));
	a->got = evbuffer_new();
	assert_non_null(a->got);
	a->base = e->base;
}

void bev_app_done(struct bev_app *a)
{
	if (a->bev != NULL) {
		bufferevent_free(a->bev);
		a->bev = NULL;
	}
	if (a->got != NULL) {
		evbuffer_free(a->got);
		a->got = NULL;
	}
}

struct bufferevent *bev_app_use(struct bev_app *a, struct bufferevent *bev)
{
	if (bev != NULL) {
		bufferevent_setcb(bev, bev_app_read, NULL, bev_app_event, a);
		assert_int_equal(bufferevent_enable(bev, EV_READ | EV_WRITE), 0);
	}
	return bev;
}

void bev_app_attach(struct bev_app *a, struct bufferevent *bev)
{
	a->bev = bev_app_use(a, bev);
}

/* Copies the input out and drains it (moving the chains would keep the pool buffers,
 * which is the application's right but not what the tests measure). */
static void app_take(struct bev_app *a, struct evbuffer *in)
{
	size_t n = evbuffer_get_length(in);
	uint8_t *tmp = malloc(n + 1);
	assert_non_null(tmp);
	assert_int_equal(evbuffer_remove(in, tmp, n), (int)n);
	evbuffer_add(a->got, tmp, n);
	free(tmp);
	if (a->stop_at != 0 && evbuffer_get_length(a->got) >= a->stop_at) {
		event_base_loopbreak(a->base);
	}
}

static void app_drain_later(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct bev_app *a = arg;
	if (a->bev != NULL) {
		app_take(a, bufferevent_get_input(a->bev));
	}
}

static void app_free(struct bev_app *a, struct bufferevent *bev)
{
	bufferevent_free(bev);
	a->bev = NULL;
	event_base_loopbreak(a->base);
}

void bev_app_read(struct bufferevent *bev, void *arg)
{
	struct bev_app *a = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t high = 0;
	a->reads++;
	/* The read high watermark is honoured exactly, as bufferevent_openssl does. */
	(void)bufferevent_getwatermark(bev, EV_READ, NULL, &high);
	assert_true(high == 0 || evbuffer_get_length(in) <= high);
	if (a->no_read) {
		return;
	}
	if (a->echo) {
		bufferevent_write_buffer(bev, in);
		return;
	}
	size_t n = evbuffer_get_length(in);
	if (a->wait_for != 0 && n < a->wait_for && evbuffer_get_length(a->got) + n < a->want) {
		return;
	}
	if (a->free_on_read == 2) {
		app_free(a, bev);
		return;
	}
	if (a->drain_later) {
		assert_int_equal(event_base_once(a->base, -1, EV_TIMEOUT, app_drain_later, a, NULL),
				 0);
		return;
	}
	app_take(a, in);
	if (a->free_on_read) {
		app_free(a, bev);
	}
}

void bev_app_write(struct bufferevent *bev, void *arg)
{
	struct bev_app *a = arg;
	(void)bev;
	a->writes++;
	a->writes_inside += a->in_call;
}

void bev_app_event(struct bufferevent *bev, short what, void *arg)
{
	struct bev_app *a = arg;
	if (what == HUSH_BEV_EVENT_SHUTDOWN) {
		a->shutdown++;
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		a->connected++;
		if (a->hold_at_connected != NULL) {
			bufferevent_disable(a->hold_at_connected, EV_READ | EV_WRITE);
		}
	}
	if (what & BEV_EVENT_EOF) {
		a->eof++;
	}
	if (what & BEV_EVENT_ERROR) {
		a->error++;
	}
	a->err_seen = hush_bufferevent_get_error(bev);
	if (what & a->free_on_event) {
		app_free(a, bev);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		event_base_loopbreak(a->base);
	}
}

void bev_app_got(struct bev_app *a, const void *msg, size_t n)
{
	assert_int_equal(evbuffer_get_length(a->got), n);
	if (n > 0) {
		assert_memory_equal(evbuffer_pullup(a->got, -1), msg, n);
	}
}

int bev_fx_setup(void **state)
{
	struct bev_fx *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	bev_env_init(&fx->e);
	bev_app_init(&fx->c, &fx->e);
	bev_app_init(&fx->s, &fx->e);
	*state = fx;
	return 0;
}

int bev_fx_teardown(void **state)
{
	struct bev_fx *fx = *state;
	bev_app_done(&fx->c);
	bev_app_done(&fx->s);
	env_done(&fx->e);
	free(fx);
	return 0;
}

static bool peer_has_all(void *arg)
{
	struct bev_app *peer = arg;
	return peer->stop_at != 0 && evbuffer_get_length(peer->got) >= peer->stop_at;
}

static bool app_wrote(void *arg)
{
	return ((struct bev_app *)arg)->writes > 0;
}

void bev_check_write_enabled_later(struct env *e, struct bev_app *a, struct bev_app *peer,
				   size_t len)
{
	uint8_t *msg = malloc(len);
	assert_non_null(msg);
	testlib_fill(msg, len, len);
	struct evbuffer *out = bufferevent_get_output(a->bev);
	bufferevent_setcb(a->bev, bev_app_read, bev_app_write, bev_app_event, a);
	assert_int_equal(bufferevent_disable(a->bev, EV_WRITE), 0);
	assert_int_equal(bufferevent_write(a->bev, msg, len), 0);
	run_for_ms(e, 100);
	assert_int_equal(evbuffer_get_length(out), len);
	assert_int_equal(evbuffer_get_length(peer->got), 0);
	assert_int_equal(a->writes, 0);
	a->in_call = 1;
	assert_int_equal(bufferevent_enable(a->bev, EV_WRITE), 0);
	a->in_call = 0;
	assert_int_equal(a->writes, 0); /* not inside bufferevent_enable() */
	peer->stop_at = len;
	run_until(e, 5000, peer_has_all, peer);
	bev_app_got(peer, msg, len);
	run_until(e, 5000, app_wrote, a);
	assert_int_equal(a->writes_inside, 0);
	assert_int_equal(a->writes, 1);
	assert_int_equal(evbuffer_get_length(out), 0);
	assert_int_equal(a->error + peer->error, 0);
	free(msg);
}

/* The ping-pong's state: the last number read by either end. */
struct ping_pong {
	int last_read;
	int last;
};

static void pp_read(struct bufferevent *bev, void *arg)
{
	struct ping_pong *pp = arg;
	char *line = evbuffer_readln(bufferevent_get_input(bev), NULL, EVBUFFER_EOL_LF);
	if (line == NULL) {
		return;
	}
	int n = atoi(line);
	free(line);
	assert_int_equal(n, pp->last_read + 1); /* the ends take turns */
	pp->last_read = n;
	if (n >= pp->last) {
		event_base_loopbreak(bufferevent_get_base(bev));
		return;
	}
	evbuffer_add_printf(bufferevent_get_output(bev), "%d\n", n + 1);
	bufferevent_enable(bev, EV_WRITE);
	bufferevent_disable(bev, EV_READ);
}

static void pp_write(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		bufferevent_disable(bev, EV_WRITE);
		bufferevent_enable(bev, EV_READ);
	}
}

static bool pp_done(void *arg)
{
	struct ping_pong *pp = arg;
	return pp->last_read >= pp->last;
}

int bev_ping_pong(struct env *e, struct bufferevent *x, struct bufferevent *y, int last)
{
	struct ping_pong pp = {0, last};
	bufferevent_setcb(x, pp_read, pp_write, NULL, &pp);
	bufferevent_setcb(y, pp_read, pp_write, NULL, &pp);
	assert_int_equal(bufferevent_enable(x, EV_READ | EV_WRITE), 0);
	assert_int_equal(bufferevent_enable(y, EV_READ | EV_WRITE), 0);
	assert_int_equal(evbuffer_add_printf(bufferevent_get_output(x), "1\n"), 2);
	run_until(e, 5000, pp_done, &pp);
	bufferevent_setcb(x, NULL, NULL, NULL, NULL);
	bufferevent_setcb(y, NULL, NULL, NULL, NULL);
	return pp.last_read;
}
