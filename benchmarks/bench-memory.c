/*
 * hush-bench's ReadMemoryUsage and WriteMemoryUsage: one connection with both ends in
 * this process, each end's work timed and its allocations counted while the other end
 * stands still.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hush-bench.h"

/* ------------------------------------------------------------------------------------ */
/* One connection, both ends in this process: ReadMemoryUsage, WriteMemoryUsage          */
/* ------------------------------------------------------------------------------------ */

/*
 * The two ends sit on two event_bases driven by this one thread, so each end can be run
 * (and timed, and its allocations counted) while the other stands still.
 */
struct duo {
	struct hush_pool *pool;
	struct env env[2]; /* [0] client end, [1] server end */
	struct ep ep[2];
	int failed;
};

static void duo_on_close(struct ep *e)
{
	struct duo *d = e->user;
	d->failed = 1;
}

static const struct ep_cb duo_cb = {NULL, NULL, NULL, duo_on_close};

static void duo_free(struct duo *d)
{
	for (int i = 0; i < 2; i++) {
		if (d->ep[i].ops != NULL) {
			d->ep[i].ops->free(&d->ep[i]);
		}
		if (d->env[i].base != NULL) {
			env_free(&d->env[i]);
		}
	}
	hush_pool_free(d->pool);
	memset(d, 0, sizeof(*d));
}

/* Runs env until e has received want bytes in all; -1 on failure or after 10 s. */
static int duo_recv(struct duo *d, int i, uint64_t want)
{
	uint64_t end = bench_now_ns() + 10000000000ull;
	while (d->ep[i].rx < want) {
		if (d->failed || bench_now_ns() > end) {
			return -1;
		}
		env_pump(&d->env[i], 0);
	}
	return 0;
}

/* Runs env until everything e queued is in the socket. */
static int duo_flush(struct duo *d, int i)
{
	uint64_t end = bench_now_ns() + 10000000000ull;
	while (d->ep[i].ops->queued(&d->ep[i]) > 0) {
		if (d->failed || bench_now_ns() > end) {
			return -1;
		}
		env_pump(&d->env[i], 0);
	}
	return 0;
}

/* Sends len bytes from end i to the other end and has them delivered there. */
static int duo_send(struct duo *d, int i, const void *msg, size_t len)
{
	uint64_t want = d->ep[!i].rx + len;
	if (d->ep[i].ops->write(&d->ep[i], msg, len) < 0 || duo_flush(d, i) < 0 ||
	    duo_recv(d, !i, want) < 0) {
		return -1;
	}
	return 0;
}

static int duo_setup(struct duo *d, ep_open_fn open)
{
	int fds[2];
	memset(d, 0, sizeof(*d));
	if (hush_pool_new(&d->pool, NULL) < 0 || env_init(&d->env[0], d->pool) < 0 ||
	    env_init(&d->env[1], d->pool) < 0 || tcp_pair(fds) < 0) {
		return -1;
	}
	ep_init(&d->ep[0], &duo_cb, d);
	ep_init(&d->ep[1], &duo_cb, d);
	if (open(&d->ep[0], &d->env[0], fds[0], 0) < 0) {
		close(fds[1]);
		return -1;
	}
	if (open(&d->ep[1], &d->env[1], fds[1], 1) < 0) {
		return -1;
	}
	uint64_t end = bench_now_ns() + 10000000000ull;
	while (!d->ep[0].open || !d->ep[1].open) {
		if (d->failed || bench_now_ns() > end) {
			return -1;
		}
		env_pump(&d->env[0], 0);
		env_pump(&d->env[1], 0);
	}
	/* One message each way, as an established, used connection. */
	if (duo_send(d, 0, ping_msg, PING_SIZE) < 0 || duo_send(d, 1, ping_msg, PING_SIZE) < 0) {
		return -1;
	}
	return 0;
}

/*
 * ReadMemoryUsage and WriteMemoryUsage: one op is one 1 KiB message, written by end 0
 * and flushed into the socket (write), or received and delivered by end 1 (read). Only
 * the op's own side is timed and has its allocations counted; the other side then runs
 * untimed to deliver or produce the message.
 */
static void rw_run(const struct benchmark *b, const struct variant *v, int reading)
{
	static uint8_t msg[RW_SIZE];
	char name[128];
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	if (!wanted(name)) {
		return;
	}
	struct duo d;
	if (duo_setup(&d, v->open) < 0) {
		bench_fail(name, "could not establish the connection");
		duo_free(&d);
		return;
	}
	/* Warm-up: fill the pools and free lists every variant keeps. */
	for (int i = 0; i < 200; i++) {
		if (duo_send(&d, 0, msg, sizeof(msg)) < 0) {
			bench_fail(name, "warm-up failed");
			duo_free(&d);
			return;
		}
	}
	uint64_t ops = 0, spent = 0, allocs = 0, bytes = 0;
	uint64_t start = bench_now_ns();
	while ((spent < target_ns() || ops < 1000) && bench_now_ns() - start < 10 * target_ns()) {
		struct bench_alloc_counts a0, a1;
		uint64_t want = d.ep[1].rx + sizeof(msg);
		int rc;
		if (reading) {
			if (d.ep[0].ops->write(&d.ep[0], msg, sizeof(msg)) < 0 ||
			    duo_flush(&d, 0) < 0) {
				rc = -1;
			} else {
				bench_alloc_read(&a0);
				uint64_t t0 = bench_now_ns();
				rc = duo_recv(&d, 1, want);
				spent += bench_now_ns() - t0;
				bench_alloc_read(&a1);
			}
		} else {
			bench_alloc_read(&a0);
			uint64_t t0 = bench_now_ns();
			rc = d.ep[0].ops->write(&d.ep[0], msg, sizeof(msg)) < 0 ? -1
										: duo_flush(&d, 0);
			spent += bench_now_ns() - t0;
			bench_alloc_read(&a1);
			if (rc == 0) {
				rc = duo_recv(&d, 1, want);
			}
		}
		if (rc < 0) {
			bench_fail(name, "a message was lost");
			duo_free(&d);
			return;
		}
		allocs += a1.allocs - a0.allocs;
		bytes += a1.bytes - a0.bytes;
		ops++;
	}
	struct bench_metric m[] = {
	    {round((double)spent / (double)ops), "ns/op"},
	    {round((double)bytes / (double)ops), "B/op"},
	    {round((double)allocs / (double)ops * 100) / 100, "allocs/op"},
	};
	report(name, 1, ops, m, ARRAY_SIZE(m));
	duo_free(&d);
}

static void read_run(const struct benchmark *b, const struct variant *v)
{
	rw_run(b, v, 1);
}

static void write_run(const struct benchmark *b, const struct variant *v)
{
	rw_run(b, v, 0);
}

static const struct variant rw_variants[] = {
    {"hush", open_hush, NULL},
    {"hush-pinned", open_hush_pinned, NULL},
    {"openssl-tls", open_tls, NULL},
};

const struct benchmark bench_read = {"ReadMemoryUsage", rw_variants, ARRAY_SIZE(rw_variants),
				     read_run};
const struct benchmark bench_write = {"WriteMemoryUsage", rw_variants, ARRAY_SIZE(rw_variants),
				      write_run};
