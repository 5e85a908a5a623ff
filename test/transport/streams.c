#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "streams.h"

/* The largest message end_pump() writes in one hush_conn_write() call. */
#define STREAM_MAX_MSG (256u * 1024u)
/* end_pump() stops while this much is queued and not sent. */
#define STREAM_MAX_QUEUED (128u * 1024u)

/* splitmix64's finaliser: every input bit affects every output bit. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

void stream_fill(uint64_t seed, uint64_t pos, uint8_t *out, size_t n)
{
	while (n > 0) {
		uint64_t w = mix(seed ^ mix(pos >> 3));
		for (unsigned k = (unsigned)(pos & 7); k < 8 && n > 0; k++, n--, pos++) {
			*out++ = (uint8_t)(w >> (8 * k));
		}
	}
}

uint64_t stream_rand(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

void end_reset(struct end *x)
{
	x->conn = NULL;
	x->tx_done = x->rx_done = x->msgs = 0;
	x->bad_at = UINT64_MAX;
	x->opened = x->eof = x->shut = x->err = x->write_err = 0;
	x->shut_sent = false;
}

/* Log-uniform in 1..max: small messages are common, large ones occur. */
static size_t next_size(struct end *x)
{
	size_t max = x->max_msg < STREAM_MAX_MSG ? x->max_msg : STREAM_MAX_MSG;
	unsigned bits = 0;
	while (bits < 63 && ((size_t)1 << (bits + 1)) <= max) {
		bits++;
	}
	uint64_t r = stream_rand(&x->rng);
	size_t n = 1 + (size_t)((r >> 8) % ((uint64_t)1 << (r % (bits + 1))));
	return n > max ? max : n;
}

void end_pump(struct end *x)
{
	static _Thread_local uint8_t buf[STREAM_MAX_MSG];
	if (x->conn == NULL || !x->opened || x->err != 0 || x->write_err != 0 || x->shut_sent ||
	    x->hold) {
		return;
	}
	while (x->tx_done < x->tx_total) {
		if (x->window != 0 && x->tx_done - x->peer->rx_done >= x->window) {
			return;
		}
		if (hush_conn_queued(x->conn) >= STREAM_MAX_QUEUED) {
			return;
		}
		size_t n = next_size(x);
		if (n > x->tx_total - x->tx_done) {
			n = (size_t)(x->tx_total - x->tx_done);
		}
		stream_fill(x->tx_seed, x->tx_done, buf, n);
		int rc = hush_conn_write(x->conn, buf, n);
		if (rc < 0) {
			x->write_err = rc;
			return;
		}
		x->tx_done += n;
		x->msgs++;
	}
	int rc = hush_conn_shutdown(x->conn);
	if (rc < 0) {
		x->write_err = rc;
		return;
	}
	x->shut_sent = true;
}

static void end_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct end *x = arg;
	uint8_t want[4096];
	(void)c;
	if (x->bad_at != UINT64_MAX) {
		return;
	}
	if (x->rx_done + len > x->peer->tx_done) {
		x->bad_at = x->rx_done; /* more than the peer ever wrote */
		return;
	}
	for (size_t off = 0; off < len;) {
		size_t k = len - off < sizeof(want) ? len - off : sizeof(want);
		stream_fill(x->peer->tx_seed, x->rx_done, want, k);
		if (memcmp(want, data + off, k) != 0) {
			size_t i = 0;
			while (want[i] == data[off + i]) {
				i++;
			}
			x->bad_at = x->rx_done + i;
			return;
		}
		off += k;
		x->rx_done += k;
	}
	if (x->pump_on_data) {
		end_pump(x->peer);
	}
}

static void end_on_writable(struct hush_conn *c, void *arg)
{
	(void)c;
	end_pump(arg);
}

static void end_on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct end *x = arg;
	(void)c;
	switch (ev) {
	case HUSH_CONN_EV_OPEN:
		x->opened++;
		end_pump(x);
		break;
	case HUSH_CONN_EV_EOF:
		x->eof++;
		break;
	case HUSH_CONN_EV_SHUTDOWN:
		x->shut++;
		break;
	case HUSH_CONN_EV_ERROR:
		x->err = err;
		break;
	}
}

const struct hush_conn_callbacks end_cb = {end_on_data, end_on_writable, end_on_event};

bool pair_done(const struct end *a, const struct end *b)
{
	return a->tx_done == a->tx_total && b->tx_done == b->tx_total &&
	       a->rx_done == b->tx_total && b->rx_done == a->tx_total && a->eof == 1 &&
	       b->eof == 1 && a->shut == 1 && b->shut == 1;
}

bool end_failed(const struct end *x)
{
	return x->err != 0 || x->write_err != 0 || x->bad_at != UINT64_MAX;
}
