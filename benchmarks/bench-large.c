/*
 * hush-bench's LargeMessage: bulk throughput of 1 MiB messages over one loopback TCP
 * connection, sender and receiver on their own threads (bench-pingpong.c's harness),
 * beside the limits measured in the same run.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

/* LargeMessage/raw-socket reads this much per read(): a bulk reader's usual size. */
#define RAW_READ 65536

/* Messages the hush row moved in its last repetition: raw-socket moves as many. */
static uint64_t hush_msgs;

struct raw_reader {
	int fd;
	uint64_t got; /* bytes read */
	uint64_t t1;  /* when EOF arrived */
	int failed;
};

static void *raw_read_main(void *arg)
{
	struct raw_reader *r = arg;
	uint8_t *buf = malloc(RAW_READ);
	if (buf == NULL) {
		r->failed = 1;
		return NULL;
	}
	for (;;) {
		ssize_t k = read(r->fd, buf, RAW_READ);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k < 0) {
			r->failed = 1;
			break;
		}
		if (k == 0) {
			break;
		}
		r->got += (uint64_t)k;
	}
	r->t1 = bench_now_ns();
	free(buf);
	return NULL;
}

/* Makes fd blocking again (tcp_pair makes both ends non-blocking). */
static int make_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ? -1 : 0;
}

/*
 * The wire's own speed: plain loopback TCP, no libevent, no crypto. This thread writes
 * the same 1 MiB messages with blocking write() calls, msgs of them (or, when msgs is 0,
 * as many as fit in target ns), then shuts its side down; a second thread reads 64 KiB at
 * a time until EOF. *mbps is bytes read over the time from the first write to EOF.
 */
static int raw_socket_mbps(uint64_t msgs, uint64_t target, double *mbps, uint64_t *sent_msgs)
{
	int fds[2];
	if (tcp_pair(fds) < 0) {
		return -1;
	}
	struct raw_reader r = {fds[1], 0, 0, 0};
	pthread_t th;
	int rc = -1;
	if (make_blocking(fds[0]) < 0 || make_blocking(fds[1]) < 0 ||
	    pthread_create(&th, NULL, raw_read_main, &r) != 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	uint64_t t0 = bench_now_ns(), sent = 0;
	int ok = 1;
	while (ok && (msgs != 0 ? sent < msgs : bench_now_ns() - t0 < target)) {
		for (size_t off = 0; off < LARGE_SIZE;) {
			ssize_t k = write(fds[0], large_msg + off, LARGE_SIZE - off);
			if (k < 0 && errno == EINTR) {
				continue;
			}
			if (k <= 0) {
				ok = 0;
				break;
			}
			off += (size_t)k;
		}
		sent += ok;
	}
	shutdown(fds[0], SHUT_WR);
	pthread_join(th, NULL);
	close(fds[0]);
	close(fds[1]);
	if (ok && !r.failed && r.got == sent * LARGE_SIZE && r.t1 > t0) {
		*mbps = (double)r.got / (double)(r.t1 - t0) * 1e3;
		*sent_msgs = sent;
		rc = 0;
	}
	return rc;
}

/* How long a connection row sends: 2 s, 150 ms with --quick. */
static uint64_t large_target(void)
{
	return opt.quick ? 150000000ull : 2000000000ull;
}

/* aes-gcm-limit's figure: one core sealing 16 KiB records, MB/s. */
static int aead_limit_mbps(double *mbps, uint64_t *n_out)
{
	uint64_t n, ns;
	struct bench_alloc_counts d;
	if (time_ops(aead_limit_ops, target_ns(), &n, &ns, &d) < 0) {
		return -1;
	}
	*mbps = (double)n * LARGE_SIZE / (double)ns * 1e3;
	*n_out = n;
	return 0;
}

/*
 * The rows that are limits rather than connections, each measured in this repetition:
 *  - aes-gcm-limit: the single-core AEAD ceiling (aead_limit_ops);
 *  - raw-socket: plain loopback TCP with 64 KiB reads (raw_socket_mbps), moving as many
 *    1 MiB messages as the hush row moved in its last repetition (or, without it, for
 *    as long as a connection row sends);
 *  - bound: what a connection whose sender seals on one core and whose receiver opens on
 *    another can reach over that wire, 1 / (1/raw-socket + 1/aes-gcm-limit) in MB/s,
 *    with both measured again here, side by side, and printed beside it.
 */
static void large_limit_run(const char *name, const struct variant *v)
{
	double aes = 0, raw = 0;
	uint64_t n = 0, msgs = 0;
	int want_aes = strcmp(v->name, "raw-socket") != 0;
	int want_raw = strcmp(v->name, "aes-gcm-limit") != 0;
	if (want_aes && aead_limit_mbps(&aes, &n) < 0) {
		bench_fail(name, "the AEAD failed");
		return;
	}
	if (want_raw && raw_socket_mbps(hush_msgs, large_target(), &raw, &msgs) < 0) {
		bench_fail(name, "the loopback transfer failed");
		return;
	}
	if (!want_raw) {
		struct bench_metric m[] = {{round(aes * 10) / 10, "MB/s"}};
		report(name, 1, n, m, ARRAY_SIZE(m));
	} else if (!want_aes) {
		struct bench_metric m[] = {{round(raw * 10) / 10, "MB/s"}};
		report(name, 2, msgs, m, ARRAY_SIZE(m));
	} else {
		struct bench_metric m[] = {
		    {round(1 / (1 / raw + 1 / aes) * 10) / 10, "MB/s"},
		    {round(raw * 10) / 10, "raw-socket-MB/s"},
		    {round(aes * 10) / 10, "aes-gcm-MB/s"},
		};
		report(name, 2, msgs, m, ARRAY_SIZE(m));
	}
}

/*
 * LargeMessage: the client sends 1 MiB messages as fast as the connection takes them
 * (stopping above the high watermark until on_writable), the server only counts; MB/s
 * is bytes received over the time from the first message to the last byte's arrival.
 * Each end has its own thread and event_base. A row without an open function is a
 * limit instead (large_limit_run).
 */
static void large_run(const struct benchmark *b, const struct variant *v)
{
	char name[128];
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	if (!wanted(name)) {
		return;
	}
	if (v->open == NULL) {
		large_limit_run(name, v);
		return;
	}
	struct pair p;
	memset(&p, 0, sizeof(p));
	p.target = large_target();
	atomic_store(&p.total, UINT64_MAX);
	if (pair_run(&p, v->open, &large_client_cb, &large_server_cb, large_on_check) < 0) {
		bench_fail(name, "the connection failed or stalled");
	} else {
		struct bench_metric m[] = {
		    {round((double)p.bulk_rx / (double)(p.t1 - p.t0) * 1e3 * 10) / 10, "MB/s"},
		};
		report(name, 2, p.bulk_rx / LARGE_SIZE, m, ARRAY_SIZE(m));
		if (v->open == open_hush) {
			hush_msgs = p.bulk_rx / LARGE_SIZE;
		}
	}
	pair_free(&p);
}

static const struct variant large_variants[] = {
    {"hush", open_hush, NULL},	     {"hush-bufferevent", open_hush_bev, NULL},
    {"openssl-tls", open_tls, NULL}, {"aes-gcm-limit", NULL, NULL},
    {"raw-socket", NULL, NULL},	     {"bound", NULL, NULL},
};

const struct benchmark bench_large = {"LargeMessage", large_variants, ARRAY_SIZE(large_variants),
				      large_run};
