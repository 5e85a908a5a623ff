/*
 * libFuzzer harness: a whole hush connection (src/transport) fed arbitrary bytes
 * through a socketpair, in arbitrary pieces. The first input byte chooses the mode:
 * a raw-key connection (records only) or the server side of a Noise XX handshake, and
 * whether the peer's side is shut down at the end; the next two give the size of the
 * pieces written between loop iterations. The rest is what the peer sends.
 *
 * Whatever arrives, the connection must end in one of three ways: still open, clean
 * EOF, or one ERROR with a known hush code that is also its stored error; random bytes
 * must never complete a handshake or open a record; and once it is freed, no pool
 * buffer may be out and no connection left on the loop (LeakSanitizer checks the
 * heap).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include <hush/conn.h>
#include <hush/handshake.h>
#include <hush/keys.h>

#include "transport/transport-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t KEY44[44] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

struct seen {
	int opened;
	int eof;
	int errors;
	int err;
	size_t bytes;
};

static void on_data(struct hush_conn *c, const uint8_t *d, size_t n, void *arg)
{
	struct seen *s = arg;
	(void)c;
	(void)d;
	s->bytes += n;
}

static void on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct seen *s = arg;
	(void)c;
	switch (ev) {
	case HUSH_CONN_EV_OPEN:
		s->opened++;
		break;
	case HUSH_CONN_EV_EOF:
		s->eof++;
		break;
	case HUSH_CONN_EV_ERROR:
		s->errors++;
		s->err = err;
		break;
	case HUSH_CONN_EV_SHUTDOWN:
		break;
	}
}

static const struct hush_conn_callbacks callbacks = {on_data, NULL, on_event};

static struct event_base *base;
static struct hush_pool *pool;
static struct hush_loop *loop;
static struct hush_keypair *server_key;
static uint8_t client_pub[HUSH_KEY_SIZE];

static void setup(void)
{
	struct hush_keypair *client_key;
	base = event_base_new();
	if (base == NULL || hush_pool_new(&pool, NULL) != 0 ||
	    hush_loop_new(&loop, base, pool) != 0 || hush_keypair_generate(&server_key) != 0 ||
	    hush_keypair_generate(&client_key) != 0) {
		abort();
	}
	hush_keypair_public(client_key, client_pub);
	hush_keypair_free(client_key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (base == NULL) {
		setup();
	}
	if (size < 3) {
		return 0;
	}
	uint8_t mode = data[0];
	size_t piece = (size_t)data[1] * 4 + data[2] % 4 + 1;
	data += 3;
	size -= 3;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		abort();
	}
	struct seen s = {0};
	struct hush_conn *c;
	if (hush_conn_new(&c, loop, sv[0], NULL, &callbacks, &s) != 0) {
		abort();
	}
	int rc;
	if (mode & 1) {
		struct hush_handshake_config hc;
		hush_handshake_config_init(&hc);
		hc.keypair = server_key;
		hc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])client_pub;
		hc.n_allowed_peers = 1;
		rc = hush_conn_start_handshake(c, &hc, HUSH_SIDE_SERVER);
	} else {
		rc = hush_conn_start_raw(c, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44, sizeof(KEY44),
					 HUSH_SIDE_SERVER);
	}
	if (rc != 0) {
		abort();
	}
	event_base_loop(base, EVLOOP_NONBLOCK);
	for (size_t off = 0; off < size && s.errors == 0;) {
		size_t k = size - off < piece ? size - off : piece;
		if (write(sv[1], data + off, k) != (ssize_t)k) {
			break; /* the connection shut its socket after failing */
		}
		off += k;
		event_base_loop(base, EVLOOP_NONBLOCK);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	if (mode & 2) {
		shutdown(sv[1], SHUT_WR);
	}
	for (int i = 0; i < 4; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	/* One ERROR at most, with a code the table knows; EOF and ERROR exclude each
	 * other; an ERROR is the connection's stored error. */
	if (s.errors > 1 || s.eof > 1 || (s.errors && s.eof) || s.opened > 1 ||
	    (s.errors && (s.err >= 0 || strcmp(hush_err_name(s.err), "UNKNOWN") == 0 ||
			  hush_conn_error(c) != s.err))) {
		abort();
	}
	/* Random bytes never pass a handshake or open a record. */
	if ((mode & 1) ? s.opened != 0 : s.bytes != 0) {
		abort();
	}
	hush_conn_free(c);
	close(sv[1]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	struct hush_pool_stats st;
	hush_pool_stats(pool, &st);
	if (st.total.in_use != 0 || loop->nconns != 0) {
		abort();
	}
	return 0;
}
