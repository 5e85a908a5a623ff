/*
 * hush-bench's LargeMessage: bulk throughput of 1 MiB messages over one loopback TCP
 * connection, sender and receiver on their own threads (bench-pingpong.c's harness),
 * beside the limits measured in the same run.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "hush-bench.h"

/* --- LargeMessage --- */

static void large_stop(struct pair *p)
{
	p->stopping = 1;
	atomic_store(&p->total, p->sent);
	/* Wakes the receiver's thread to compare, in case everything is in already. */
	event_active(p->check, EV_TIMEOUT, 0);
}

/* Queues 1 MiB messages until the high watermark, or stops when the time is up. */
static void large_pump(struct ep *e)
{
	struct pair *p = e->user;
	while (!p->stopping) {
		if (bench_now_ns() - p->t0 >= p->target) {
			large_stop(p);
			return;
		}
		int rc = e->ops->write(e, large_msg, LARGE_SIZE);
		if (rc < 0) {
			pair_finish(p, -1);
			return;
		}
		p->sent += LARGE_SIZE;
		if (rc == 1) {
			return; /* on_writable resumes */
		}
	}
}

static void large_client_data(struct ep *e, const uint8_t *data, size_t len)
{
	struct pair *p = e->user;
	(void)data;
	(void)len;
	/* The ping came back: the connection is established both ways. */
	if (e->rx >= PING_SIZE && p->t0 == 0) {
		p->t0 = bench_now_ns();
		large_pump(e);
	}
}

static void large_server_check(struct pair *p)
{
	if (p->bulk_rx >= atomic_load(&p->total)) {
		p->t1 = bench_now_ns();
		pair_finish(p, 1);
	}
}

static void large_server_data(struct ep *e, const uint8_t *data, size_t len)
{
	struct pair *p = e->user;
	if (p->ping_rx < PING_SIZE) {
		size_t k = len < PING_SIZE - p->ping_rx ? len : PING_SIZE - p->ping_rx;
		p->ping_rx += k;
		if (e->ops->write(e, data, k) < 0) {
			pair_finish(p, -1);
			return;
		}
		len -= k;
	}
	p->bulk_rx += len;
	large_server_check(p);
}

static void large_on_check(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	large_server_check(arg);
}

static const struct ep_cb large_client_cb = {pair_send_ping, large_client_data, large_pump,
					     pair_on_close};
static const struct ep_cb large_server_cb = {NULL, large_server_data, NULL, pair_on_close};

/*
 * The ceiling for one sender: raw EVP AES-128-GCM sealing the same 1 MiB messages in
 * place, cut into records of hush's default payload (16 KiB frames), one core, no I/O.
 */
static int aead_limit_ops(uint64_t n)
{
	static EVP_CIPHER_CTX *ctx;
	static uint8_t *buf;
	static uint64_t counter;
	if (ctx == NULL) {
		static const uint8_t key[16] = {0x68, 0x75, 0x73, 0x68};
		EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
		ctx = EVP_CIPHER_CTX_new();
		buf = malloc(LARGE_SIZE);
		if (aes == NULL || ctx == NULL || buf == NULL ||
		    !EVP_EncryptInit_ex(ctx, aes, NULL, key, NULL)) {
			EVP_CIPHER_free(aes);
			return -1;
		}
		EVP_CIPHER_free(aes);
		memcpy(buf, large_msg, LARGE_SIZE);
	}
	for (uint64_t i = 0; i < n; i++) {
		for (size_t off = 0; off < LARGE_SIZE; off += RECORD_PAYLOAD) {
			int len = (int)(LARGE_SIZE - off < RECORD_PAYLOAD ? LARGE_SIZE - off
									  : RECORD_PAYLOAD);
			uint8_t nonce[12] = {0};
			uint8_t tag[16];
			int out, fin;
			counter++;
			memcpy(nonce, &counter, sizeof(counter));
			if (!EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) ||
			    !EVP_EncryptUpdate(ctx, buf + off, &out, buf + off, len) ||
			    !EVP_EncryptFinal_ex(ctx, buf + off + out, &fin) ||
			    !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, sizeof(tag), tag)) {
				return -1;
			}
		}
	}
	return 0;
}

/*
 * LargeMessage: the client sends 1 MiB messages as fast as the connection takes them
 * (stopping above the high watermark until on_writable), the server only counts; MB/s
 * is bytes received over the time from the first message to the last byte's arrival.
 * Each end has its own thread and event_base. A row without an open function is the
 * single-core AEAD ceiling instead.
 */
static void large_run(const struct benchmark *b, const struct variant *v)
{
	char name[128];
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	if (!wanted(name)) {
		return;
	}
	if (v->open == NULL) {
		uint64_t n, ns;
		struct bench_alloc_counts d;
		if (time_ops(v->ops, target_ns(), &n, &ns, &d) < 0) {
			fail(name, "failed");
			return;
		}
		struct bench_metric m[] = {
		    {round((double)n * LARGE_SIZE / (double)ns * 1e3 * 10) / 10, "MB/s"},
		};
		report(name, 1, n, m, ARRAY_SIZE(m));
		return;
	}
	struct pair p;
	memset(&p, 0, sizeof(p));
	p.target = opt.quick ? 150000000ull : 2000000000ull;
	atomic_store(&p.total, UINT64_MAX);
	if (pair_run(&p, v->open, &large_client_cb, &large_server_cb, large_on_check) < 0) {
		fail(name, "the connection failed or stalled");
	} else {
		struct bench_metric m[] = {
		    {round((double)p.bulk_rx / (double)(p.t1 - p.t0) * 1e3 * 10) / 10, "MB/s"},
		};
		report(name, 2, p.bulk_rx / LARGE_SIZE, m, ARRAY_SIZE(m));
	}
	pair_free(&p);
}

static const struct variant large_variants[] = {
    {"hush", open_hush, NULL},
    {"hush-bufferevent", open_hush_bev, NULL},
    {"openssl-tls", open_tls, NULL},
    {"aes-gcm-limit", NULL, aead_limit_ops},
};

const struct benchmark bench_large = {"LargeMessage", large_variants, ARRAY_SIZE(large_variants),
				      large_run};
