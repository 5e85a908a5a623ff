/*
 * libFuzzer harness: a hush socket bufferevent (src/transport/bufferevent-sock.c) fed
 * through a socketpair. The first input byte chooses the mode; the next the read high
 * watermark; the two after it the size of the pieces written between loop iterations. The rest is either what the peer sends, raw (bit 0 clear), or a
 * list of record sizes (bit 0 set) that a correct peer seals with the same key, so the
 * bufferevent's delivery, watermark pauses and replays run on arbitrary record
 * boundaries.
 *
 * mode bit 1: the peer shuts down its side at the end; bit 2: BEV_OPT_DEFER_CALLBACKS;
 * bit 3: the application drains from the loop, between iterations, instead of inside
 * a read callback (so reading stays paused at the watermark until then).
 *
 * Raw bytes must never deliver plaintext and end in at most one ERROR with a known
 * code; sealed records must all arrive, in order and intact, never past the read high
 * watermark, and a clean EOF when the peer shut down. Either way,
 * once freed, no pool buffer may be out (LeakSanitizer checks the heap).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <hush/bufferevent.h>
#include <hush/conn.h>
#include <hush/record.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A hush bufferevent refuses a raw key that keyed one before in the process: each
 * input gets its own (a counter in the first bytes). */
static uint8_t KEY44[44] = {4, 4, 3, 2, 1};
static uint64_t inputs;

struct app {
	struct evbuffer *got;
	size_t high;
	size_t max_input; /* the input's largest length seen */
	size_t max_record;
	int drain_in_cb;
	int eof, errors, connected;
	int err;
};

static void on_read(struct bufferevent *bev, void *arg)
{
	struct app *a = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	if (evbuffer_get_length(in) > a->max_input) {
		a->max_input = evbuffer_get_length(in);
	}
	evbuffer_add_buffer(a->got, in);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct app *a = arg;
	if (what & BEV_EVENT_CONNECTED) {
		a->connected++;
	}
	if (what & BEV_EVENT_ERROR) {
		a->errors++;
		a->err = hush_bufferevent_get_error(bev);
	} else if (what & BEV_EVENT_EOF) {
		a->eof++;
	}
}

static struct event_base *base;
static struct hush_pool *pool;
static struct hush_loop *loop;

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 7u + (i >> 8));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	inputs++;
	memcpy(KEY44 + 8, &inputs, sizeof(inputs));
	if (base == NULL) {
		base = event_base_new();
		if (base == NULL || hush_pool_new(&pool, NULL) != 0 ||
		    hush_loop_new(&loop, base, pool) != 0) {
			abort();
		}
	}
	if (size < 4) {
		return 0;
	}
	uint8_t mode = data[0];
	size_t high = (size_t)data[1] * 128;
	size_t piece = (size_t)data[2] * 64 + (data[3] & 63) + 1;
	int drain_in_cb = !(mode & 8);
	data += 4;
	size -= 4;

	/* What the peer sends: the input itself, or records sealed from its sizes. */
	uint8_t *wire = NULL;
	size_t wire_len = 0, plain_len = 0, max_record = 0;
	struct hush_record *peer = NULL;
	if (mode & 1) {
		if (hush_record_new(&peer, HUSH_RP_ALTS_AES128_GCM_REKEY, KEY44, sizeof(KEY44),
				    HUSH_SIDE_CLIENT) != 0) {
			abort();
		}
		wire = malloc(size * (HUSH_RECORD_OVERHEAD + 16 * 255 + 1) + 1);
		for (size_t i = 0; i < size; i++) {
			size_t n = (size_t)data[i] * 16 + 1; /* 1 .. 4081 bytes */
			uint8_t *f = wire + wire_len;
			for (size_t j = 0; j < n; j++) {
				f[HUSH_RECORD_HEADER_SIZE + j] = pattern(plain_len + j);
			}
			size_t flen;
			if (hush_record_seal(peer, f, n + HUSH_RECORD_OVERHEAD, n, &flen) != 0) {
				abort();
			}
			wire_len += flen;
			plain_len += n;
			max_record = n > max_record ? n : max_record;
		}
		hush_record_free(peer);
	} else {
		wire = malloc(size + 1);
		memcpy(wire, data, size);
		wire_len = size;
	}

	/* At most 20,000 loop rounds to write it all: pieces grow for long inputs. */
	if (wire_len / piece > 20000) {
		piece = wire_len / 20000 + 1;
	}

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		abort();
	}
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = loop;
	cfg.key = KEY44;
	cfg.key_len = sizeof(KEY44);
	cfg.side = HUSH_SIDE_SERVER;
	int opts = BEV_OPT_CLOSE_ON_FREE | ((mode & 4) ? BEV_OPT_DEFER_CALLBACKS : 0);
	struct bufferevent *bev = hush_bufferevent_socket_new(base, sv[0], &cfg, opts);
	if (bev == NULL) {
		abort();
	}
	struct app a = {evbuffer_new(), high, 0, max_record, drain_in_cb, 0, 0, 0, 0};
	/* An application that drains from elsewhere sets no read callback: libevent runs
	 * one again at once while the input stays above the watermark. */
	bufferevent_setcb(bev, drain_in_cb ? on_read : NULL, NULL, on_event, &a);
	if (high != 0) {
		bufferevent_setwatermark(bev, EV_READ, 0, high);
	}
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	event_base_loop(base, EVLOOP_NONBLOCK);

	size_t off = 0;
	int rounds = 0;
	/* Write in pieces; the socketpair holds ~200 KB, so keep the loop running (and, in
	 * loop-drain mode, draining) until everything is written and delivered. */
	while (a.errors == 0 && rounds < 40000) {
		rounds++;
		if (off < wire_len) {
			size_t k = wire_len - off < piece ? wire_len - off : piece;
			ssize_t w = send(sv[1], wire + off, k, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (w > 0) {
				off += (size_t)w;
			} else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
				break; /* the bufferevent shut its socket after failing */
			}
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (!a.drain_in_cb) {
			struct evbuffer *in = bufferevent_get_input(bev);
			if (evbuffer_get_length(in) > a.max_input) {
				a.max_input = evbuffer_get_length(in);
			}
			evbuffer_add_buffer(a.got, in);
		}
		if (off == wire_len &&
		    (!(mode & 1) || evbuffer_get_length(a.got) == plain_len)) {
			break;
		}
	}
	if (mode & 2) {
		shutdown(sv[1], SHUT_WR);
	}
	for (int i = 0; i < 4; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (!a.drain_in_cb) {
			evbuffer_add_buffer(a.got, bufferevent_get_input(bev));
		}
	}

	if (a.errors > 1 || a.eof > 1 || (a.errors && a.eof) || a.connected != 0 ||
	    (a.errors && (a.err >= 0 || strcmp(hush_err_name(a.err), "UNKNOWN") == 0))) {
		abort();
	}
	if (mode & 1) {
		/* Every record, in order, intact; the watermark held to within one record
		 * (libevent adds after the check, so the input may pass it by one). */
		if (a.errors != 0 || evbuffer_get_length(a.got) != plain_len) {
			abort();
		}
		const uint8_t *p = evbuffer_pullup(a.got, -1);
		for (size_t i = 0; i < plain_len; i++) {
			if (p[i] != pattern(i)) {
				abort();
			}
		}
		/* The socket flavour honours the read high watermark exactly. */
		if (high != 0 && a.max_input > high) {
			abort();
		}
		if ((mode & 2) && a.eof != 1) {
			abort();
		}
	} else if (evbuffer_get_length(a.got) != 0) {
		abort(); /* random bytes never open a record */
	}
	bufferevent_free(bev);
	close(sv[1]);
	event_base_loop(base, EVLOOP_NONBLOCK);
	evbuffer_free(a.got);
	free(wire);
	struct hush_pool_stats st;
	hush_pool_stats(pool, &st);
	if (st.total.in_use != 0) {
		abort();
	}
	return 0;
}
