/*
 * Tests for hush_listener_bind() and scale-out with SO_REUSEPORT (hush/listener.h):
 * two listeners bound to one address both accept, run the handshake and serve records;
 * without reuseport the address is one listener's alone. Every test ends with no
 * connection, no event and no pool buffer left.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hush/listener.h>

#include "envlib.h"
#include "testlib.h"

/* Connections opened, at most, until both listeners have accepted one: the kernel
 * hashes each connection's addresses and ports to one of the two, so the chance that
 * this many all land on one is 2^-63. */
#define MAX_TRIES 64

/* One end of a connection, either side. */
struct end {
	struct hush_conn *conn;
	int opened;
	int err;
	size_t got; /* client: bytes of the echo received */
};

/* What one listener accepted. */
struct side {
	struct end ends[MAX_TRIES];
	int n;
};

static const char ping[] = "ping through one of two listeners";

static void end_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct end *x = arg;
	if (x->got == SIZE_MAX) {
		/* The server's end echoes. */
		assert_int_equal(hush_conn_write(c, data, len), 0);
		return;
	}
	assert_true(x->got + len <= sizeof(ping));
	assert_memory_equal(data, ping + x->got, len);
	x->got += len;
}

static void end_on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct end *x = arg;
	(void)c;
	if (ev == HUSH_CONN_EV_OPEN) {
		x->opened = 1;
	} else if (ev == HUSH_CONN_EV_ERROR) {
		x->err = err;
	}
}

static const struct hush_conn_callbacks end_cb = {end_on_data, NULL, end_on_event};

static void on_accept(struct hush_listener *l, struct hush_conn *c, const struct sockaddr *addr,
		      socklen_t len, void *arg)
{
	struct side *s = arg;
	(void)l;
	(void)addr;
	(void)len;
	assert_true(s->n < MAX_TRIES);
	struct end *x = &s->ends[s->n++];
	x->conn = c;
	x->got = SIZE_MAX; /* marks the server's end */
	hush_conn_set_arg(c, x);
}

/* Each test's loop and identities (Noise XX, each end allowing only the other). */
struct fx {
	struct env e;
	struct ids d;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	env_init(&f->e, NULL);
	ids_init(&f->d, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	ids_done(&f->d);
	env_done(&f->e);
	free(f);
	return 0;
}

static void listener_config(struct hush_listener_config *lc, struct ids *d, struct side *s,
			    int reuseport)
{
	hush_listener_config_init(lc);
	lc->handshake = &d->sc;
	lc->callbacks = &end_cb;
	lc->on_accept = on_accept;
	lc->accept_arg = s;
	lc->reuseport = reuseport;
}

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	return sa;
}

static uint16_t bound_port(const struct hush_listener *l)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	assert_true(hush_listener_fd(l) >= 0);
	assert_int_equal(getsockname(hush_listener_fd(l), (struct sockaddr *)&sa, &sl), 0);
	return ntohs(sa.sin_port);
}

struct pair_wait {
	struct end *client;
	struct side *sides[2];
	int accepted_before;
};

/* The client's echo is back and the server's end that took it is open. */
static bool echoed(void *arg)
{
	struct pair_wait *w = arg;
	return (w->client->got == sizeof(ping) &&
		w->sides[0]->n + w->sides[1]->n > w->accepted_before) ||
	       w->client->err != 0;
}

/*
 * Two listeners on one address, each with SO_REUSEPORT: connections are spread between
 * them by the kernel, and each listener runs the handshake of the ones it takes and
 * serves their records.
 */
static void listener_reuseport_two_listeners_on_one_port_both_accept(void **state)
{
	struct fx *f = *state;
	struct side sides[2];
	struct end clients[MAX_TRIES];
	struct hush_listener *l[2] = {NULL, NULL};
	struct hush_listener_config lc;
	memset(sides, 0, sizeof(sides));
	memset(clients, 0, sizeof(clients));

	struct sockaddr_in sa = loopback(0);
	listener_config(&lc, &f->d, &sides[0], 1);
	assert_int_equal(
	    hush_listener_bind(&l[0], f->e.loop, (struct sockaddr *)&sa, sizeof(sa), &lc), 0);
	uint16_t port = bound_port(l[0]);
	sa = loopback(port);
	listener_config(&lc, &f->d, &sides[1], 1);
	assert_int_equal(
	    hush_listener_bind(&l[1], f->e.loop, (struct sockaddr *)&sa, sizeof(sa), &lc), 0);
	assert_int_equal(bound_port(l[1]), port);

	int tries = 0;
	while (tries < MAX_TRIES && (sides[0].n == 0 || sides[1].n == 0)) {
		struct end *x = &clients[tries++];
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fd >= 0);
		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(hush_conn_new(&x->conn, f->e.loop, fd, NULL, &end_cb, x), 0);
		assert_int_equal(hush_conn_start_handshake(x->conn, &f->d.cc, HUSH_SIDE_CLIENT), 0);
		struct pair_wait w = {x, {&sides[0], &sides[1]}, sides[0].n + sides[1].n};
		/* Written before OPEN: refused. Once open, the ping goes out and comes back. */
		assert_int_equal(hush_conn_write(x->conn, ping, sizeof(ping)), HUSH_ESTATE);
		while (!x->opened && x->err == 0) {
			event_base_loop(f->e.base, EVLOOP_ONCE);
		}
		assert_int_equal(x->err, 0);
		assert_int_equal(hush_conn_write(x->conn, ping, sizeof(ping)), 0);
		run_until(&f->e, 5000, echoed, &w);
		assert_int_equal(x->err, 0);
		assert_int_equal(x->got, sizeof(ping));
	}
	assert_true(sides[0].n > 0);
	assert_true(sides[1].n > 0);
	assert_int_equal(sides[0].n + sides[1].n, tries);
	for (int k = 0; k < 2; k++) {
		struct hush_listener_stats st;
		hush_listener_get_stats(l[k], &st);
		assert_int_equal(st.accepted, (uint64_t)sides[k].n);
		for (int i = 0; i < sides[k].n; i++) {
			assert_true(sides[k].ends[i].opened);
			assert_int_equal(sides[k].ends[i].err, 0);
			hush_conn_free(sides[k].ends[i].conn);
		}
		hush_listener_free(l[k]);
	}
	for (int i = 0; i < tries; i++) {
		hush_conn_free(clients[i].conn);
	}
}

/* Without reuseport a bound address is one listener's: the second bind fails with
 * HUSH_ESYS and EADDRINUSE, and leaves *out untouched. */
static void listener_bind_without_reuseport_is_exclusive(void **state)
{
	struct fx *f = *state;
	struct side s;
	struct hush_listener *l = NULL;
	struct hush_listener *l2 = (struct hush_listener *)&s; /* a sentinel, never used */
	struct hush_listener_config lc;
	memset(&s, 0, sizeof(s));
	listener_config(&lc, &f->d, &s, 0);
	struct sockaddr_in sa = loopback(0);
	assert_int_equal(hush_listener_bind(&l, f->e.loop, (struct sockaddr *)&sa, sizeof(sa), &lc),
			 0);
	sa = loopback(bound_port(l));
	errno = 0;
	assert_int_equal(
	    hush_listener_bind(&l2, f->e.loop, (struct sockaddr *)&sa, sizeof(sa), &lc), HUSH_ESYS);
	assert_int_equal(errno, EADDRINUSE);
	assert_ptr_equal(l2, (struct hush_listener *)&s);
	/* One side asking for sharing is not enough: every socket on the address must. */
	lc.reuseport = 1;
	assert_int_equal(
	    hush_listener_bind(&l2, f->e.loop, (struct sockaddr *)&sa, sizeof(sa), &lc), HUSH_ESYS);
	assert_int_equal(errno, EADDRINUSE);
	hush_listener_free(l);
}

/* Bad arguments: HUSH_EINVAL, nothing made; hush_listener_fd(NULL) is -1. */
static void listener_bind_bad_arguments_fail_with_einval(void **state)
{
	struct fx *f = *state;
	struct side s;
	struct hush_listener *l = NULL;
	struct hush_listener_config lc;
	listener_config(&lc, &f->d, &s, 1);
	struct sockaddr_in sa = loopback(0);
	assert_int_equal(
	    hush_listener_bind(NULL, f->e.loop, (struct sockaddr *)&sa, sizeof(sa), &lc),
	    HUSH_EINVAL);
	assert_int_equal(hush_listener_bind(&l, f->e.loop, NULL, sizeof(sa), &lc), HUSH_EINVAL);
	assert_int_equal(
	    hush_listener_bind(&l, f->e.loop, (struct sockaddr *)&sa, sizeof(sa), NULL),
	    HUSH_EINVAL);
	assert_int_equal(
	    hush_listener_bind(&l, f->e.loop, (struct sockaddr *)&sa, sizeof(sa) - 1, &lc),
	    HUSH_EINVAL);
	assert_int_equal(hush_listener_bind(&l, NULL, (struct sockaddr *)&sa, sizeof(sa), &lc),
			 HUSH_EINVAL);
	lc.on_accept = NULL;
	assert_int_equal(hush_listener_bind(&l, f->e.loop, (struct sockaddr *)&sa, sizeof(sa), &lc),
			 HUSH_EINVAL);
	assert_null(l);
	assert_int_equal(hush_listener_fd(NULL), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
		listener_reuseport_two_listeners_on_one_port_both_accept, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(listener_bind_without_reuseport_is_exclusive, fx_setup,
					    fx_teardown),
	    cmocka_unit_test_setup_teardown(listener_bind_bad_arguments_fail_with_einval, fx_setup,
					    fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
