/*
 * hush-demo: what `make demo` runs. A hush echo server (a child process) and this
 * client open many secure connections over loopback, keep a few of them busy with
 * continuous 16 KiB echoes and leave the rest idle, print a progress line every second,
 * then print ready-read mode beside pinned mode (the classic design, each connection
 * holding its own buffers).
 *
 *   hush-demo [--conns N] [--busy PERCENT] [--seconds S] [--mode ready|pinned|both]
 *
 * Every figure is measured in this run: heap bytes are counted exactly by allocator
 * hooks on hush, OpenSSL and libevent in both processes; pool figures come from
 * hush_pool_stats(). Every connection starts with a full hush handshake
 * (Noise_XX_25519_AESGCM_SHA256: each end proves its static key, and each allows only
 * the other's), run by a hush_listener on the server; the handshake rate is measured
 * while the connections open.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/rand.h>

#include <hush.h>

#include "benchlib.h"

#define MSG_SIZE 16384

/* What a process reports about itself. */
struct report {
	int64_t heap;            /* live heap bytes: hush + OpenSSL + libevent */
	uint64_t pool_in_use;    /* pool buffers out now */
	uint64_t pool_bytes_peak;/* peak bytes of pool buffers out at once */
	uint64_t pool_retained;  /* bytes the pool keeps idle */
	uint64_t conns;
	uint64_t buffers_held;   /* buffers held by connections now */
};

struct side {
	struct event_base *base;
	struct hush_pool *pool;
	struct hush_loop *loop;
	struct hush_conn_config cfg;
	struct hush_handshake_config hcfg;
	struct hush_listener *listener;
	int pinned;
	uint64_t conns;
};

static struct side S;

/* ---- Server: echo everything, report on request ---- */

static void srv_data(struct hush_conn *c, const uint8_t *d, size_t n, void *arg)
{
	(void)arg;
	if (hush_conn_write(c, d, n) == 1) {
		hush_conn_pause_reading(c);
	}
}

static void srv_writable(struct hush_conn *c, void *arg)
{
	(void)arg;
	hush_conn_resume_reading(c);
}

static void srv_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	(void)arg;
	(void)err;
	if (ev == HUSH_CONN_EV_EOF || ev == HUSH_CONN_EV_ERROR) {
		hush_conn_free(c);
		S.conns--;
	}
}

static void fill_report(struct report *r)
{
	struct bench_alloc_counts a;
	struct hush_pool_stats st;
	bench_alloc_read(&a);
	hush_pool_stats(S.pool, &st);
	memset(r, 0, sizeof(*r));
	r->heap = a.live_bytes;
	r->pool_in_use = st.total.in_use;
	r->pool_bytes_peak = st.total.bytes_high_water;
	r->pool_retained = st.total.bytes_retained;
	r->conns = S.conns;
}

static void srv_accept(struct hush_listener *l, struct hush_conn *c, const struct sockaddr *sa,
		       socklen_t len, void *arg)
{
	(void)l;
	(void)c;
	(void)sa;
	(void)len;
	(void)arg;
	S.conns++;
}

static void srv_control(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	char cmd;
	ssize_t n = read(fd, &cmd, 1);
	if (n <= 0 || cmd == 'q') {
		event_base_loopbreak(S.base);
		return;
	}
	if (cmd == 't') {
		hush_pool_trim(S.pool);
	}
	struct report r;
	fill_report(&r);
	if (write(fd, &r, sizeof(r)) != sizeof(r)) {
		event_base_loopbreak(S.base);
	}
}

static void setup_side(int pinned)
{
	evthread_use_pthreads();
	S.base = event_base_new();
	if (S.base == NULL || hush_pool_new(&S.pool, NULL) < 0 ||
	    hush_loop_new(&S.loop, S.base, S.pool) < 0) {
		fprintf(stderr, "hush-demo: setup failed\n");
		exit(1);
	}
	hush_conn_config_init(&S.cfg);
	S.pinned = pinned;
	if (pinned) {
		S.cfg.flags |= HUSH_CONN_PINNED;
	}
}

static void run_server(int ctl, int lfd)
{
	static const struct hush_conn_callbacks cb = {srv_data, srv_writable, srv_event};
	struct hush_listener_config lc;
	hush_listener_config_init(&lc);
	lc.handshake = &S.hcfg;
	lc.conn = &S.cfg;
	lc.callbacks = &cb;
	lc.on_accept = srv_accept;
	lc.backlog = 8192;
	if (hush_listener_new(&S.listener, S.loop, lfd, &lc) < 0) {
		fprintf(stderr, "hush-demo: listener failed\n");
		_exit(1);
	}
	struct event *cev = event_new(S.base, ctl, EV_READ | EV_PERSIST, srv_control, NULL);
	event_add(cev, NULL);
	event_base_dispatch(S.base);
	_exit(0);
}

/* ---- Client ---- */

struct cconn {
	struct hush_conn *c;
	size_t got;
	int busy;
	int opened;
};

static struct cconn *cc;
static uint64_t echo_bytes;
static uint64_t opened;
static uint64_t failed;
static uint8_t msg[MSG_SIZE];

static void cli_data(struct hush_conn *c, const uint8_t *d, size_t n, void *arg)
{
	struct cconn *k = arg;
	(void)d;
	k->got += n;
	echo_bytes += n;
	if (k->busy && k->got >= MSG_SIZE) {
		k->got -= MSG_SIZE;
		if (hush_conn_write(c, msg, MSG_SIZE) < 0) {
			failed++;
		}
	}
}

static void cli_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct cconn *k = arg;
	(void)c;
	if (ev == HUSH_CONN_EV_OPEN) {
		k->opened = 1;
		opened++;
	} else if (ev == HUSH_CONN_EV_ERROR || ev == HUSH_CONN_EV_EOF) {
		fprintf(stderr, "hush-demo: client connection ended: %s\n", hush_err_name(err));
		failed++;
	}
}

static void ask(int ctl, char cmd, struct report *r)
{
	if (write(ctl, &cmd, 1) != 1 || read(ctl, r, sizeof(*r)) != (ssize_t)sizeof(*r)) {
		fprintf(stderr, "hush-demo: lost the server\n");
		exit(1);
	}
}

static void client_report(struct report *r)
{
	fill_report(r);
	r->conns = opened;
}

/* Runs the loop until cond() holds or ms pass. */
static void spin(int ms, int (*cond)(void))
{
	uint64_t end = bench_now_ns() + (uint64_t)ms * 1000000u;
	while (bench_now_ns() < end && (cond == NULL || !cond())) {
		event_base_loop(S.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(200);
	}
}

static uint64_t want_open;
static int all_open(void)
{
	return opened >= want_open;
}

static uint64_t want_echo;
static int echo_done(void)
{
	return echo_bytes >= want_echo;
}

/* Each end's identity: its own key pair, and the other's public key as the only one
 * allowed. Made before the server forks, so both processes know both public keys. */
struct identity {
	struct hush_keypair *kp;
	uint8_t peer[HUSH_KEY_SIZE];
};

static void identity_use(const struct identity *id)
{
	hush_handshake_config_init(&S.hcfg);
	S.hcfg.keypair = id->kp;
	S.hcfg.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])id->peer;
	S.hcfg.n_allowed_peers = 1;
}

struct result {
	double handshakes_per_s;
	double srv_idle_per_conn;
	double cli_idle_per_conn;
	uint64_t srv_idle_buffers;
	uint64_t srv_pool_peak;
	uint64_t cli_pool_peak;
	double mbps;
	int64_t srv_heap_busy;
};

static int run_mode(int pinned, long nconns, int busy_pct, int seconds, struct result *res)
{
	int ctl[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, ctl) < 0) {
		return -1;
	}
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 8192) < 0) {
		perror("hush-demo: listen");
		return -1;
	}
	getsockname(lfd, (struct sockaddr *)&sin, &sl);
	struct identity srv = {0}, cli = {0};
	if (hush_keypair_generate(&srv.kp) < 0 || hush_keypair_generate(&cli.kp) < 0) {
		fprintf(stderr, "hush-demo: key generation failed\n");
		return -1;
	}
	hush_keypair_public(cli.kp, srv.peer);
	hush_keypair_public(srv.kp, cli.peer);
	pid_t pid = fork();
	if (pid == 0) {
		close(ctl[0]);
		setup_side(pinned);
		identity_use(&srv);
		run_server(ctl[1], lfd);
	}
	close(ctl[1]);
	close(lfd);
	hush_keypair_free(srv.kp);
	setup_side(pinned);
	identity_use(&cli);
	const char *mode = pinned ? "pinned" : "ready-read";

	struct report base_srv, base_cli, r;
	ask(ctl[0], 't', &base_srv);
	client_report(&base_cli);

	/* Open the connections: a full handshake each. */
	cc = calloc((size_t)nconns, sizeof(*cc));
	opened = failed = echo_bytes = 0;
	uint64_t hs_t0 = bench_now_ns();
	static const struct hush_conn_callbacks cb = {cli_data, NULL, cli_event};
	for (long i = 0; i < nconns; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
			fprintf(stderr, "hush-demo: connect #%ld: %s\n", i, strerror(errno));
			return -1;
		}
		if (hush_conn_new(&cc[i].c, S.loop, fd, &S.cfg, &cb, &cc[i]) < 0 ||
		    hush_conn_start_handshake(cc[i].c, &S.hcfg, HUSH_SIDE_CLIENT) < 0) {
			fprintf(stderr, "hush-demo: conn #%ld failed\n", i);
			return -1;
		}
		if (i % 64 == 0) {
			event_base_loop(S.base, EVLOOP_NONBLOCK);
		}
	}
	want_open = (uint64_t)nconns;
	spin(60000, all_open);
	if (opened < want_open) {
		fprintf(stderr, "hush-demo: only %llu of %ld handshakes finished\n",
			(unsigned long long)opened, nconns);
		return -1;
	}
	res->handshakes_per_s = (double)nconns / ((double)(bench_now_ns() - hs_t0) / 1e9);
	printf("[%s] %ld handshakes (Noise XX, both processes) in %.2f s: %.0f handshakes/s\n",
	       mode, nconns, (double)nconns / res->handshakes_per_s, res->handshakes_per_s);
	/* One small exchange on every connection, so each has moved data, then idle. */
	uint8_t ping[64] = {0};
	for (long i = 0; i < nconns; i++) {
		if (hush_conn_write(cc[i].c, ping, sizeof(ping)) < 0) {
			failed++;
		}
	}
	want_echo = (uint64_t)nconns * sizeof(ping);
	spin(20000, echo_done);
	spin(200, NULL);
	struct report idle_srv, idle_cli;
	ask(ctl[0], 't', &idle_srv);
	hush_pool_trim(S.pool);
	client_report(&idle_cli);
	res->srv_idle_per_conn = (double)(idle_srv.heap - base_srv.heap) / (double)nconns;
	res->cli_idle_per_conn = (double)(idle_cli.heap - base_cli.heap) / (double)nconns;
	res->srv_idle_buffers = idle_srv.pool_in_use;
	printf("[%s] %ld connections open and idle: server heap %.0f B/conn, client heap "
	       "%.0f B/conn, server pool buffers in use %llu\n",
	       mode, nconns, res->srv_idle_per_conn, res->cli_idle_per_conn,
	       (unsigned long long)idle_srv.pool_in_use);

	/* Busy phase: a few connections echo 16 KiB messages continuously. */
	long nbusy = nconns * busy_pct / 100;
	if (nbusy < 1) {
		nbusy = 1;
	}
	memset(msg, 'h', sizeof(msg));
	echo_bytes = 0;
	for (long i = 0; i < nbusy; i++) {
		long k = i * (nconns / nbusy);
		cc[k].busy = 1;
		cc[k].got = 0;
		if (hush_conn_write(cc[k].c, msg, MSG_SIZE) < 0) {
			failed++;
		}
	}
	uint64_t t0 = bench_now_ns();
	uint64_t last_bytes = 0;
	int64_t peak_heap = 0;
	for (int sec = 1; sec <= seconds; sec++) {
		spin(1000, NULL);
		ask(ctl[0], 's', &r);
		struct report cr;
		client_report(&cr);
		double mbps = (double)(echo_bytes - last_bytes) / 1e6;
		last_bytes = echo_bytes;
		if (r.heap > peak_heap) {
			peak_heap = r.heap;
		}
		printf("[%s] t=%2ds  conns=%llu  busy=%ld  pool buffers in use: server %llu "
		       "client %llu  heap: server %.1f MB client %.1f MB  echo %.1f MB/s\n",
		       mode, sec, (unsigned long long)r.conns, nbusy,
		       (unsigned long long)r.pool_in_use, (unsigned long long)cr.pool_in_use,
		       (double)r.heap / 1e6, (double)cr.heap / 1e6, mbps);
		fflush(stdout);
	}
	double secs = (double)(bench_now_ns() - t0) / 1e9;
	res->mbps = (double)echo_bytes / 1e6 / secs;
	ask(ctl[0], 's', &r);
	struct report cr;
	client_report(&cr);
	res->srv_pool_peak = r.pool_bytes_peak;
	res->cli_pool_peak = cr.pool_bytes_peak;
	res->srv_heap_busy = peak_heap;
	if (failed != 0) {
		fprintf(stderr, "hush-demo: %llu connection failures\n", (unsigned long long)failed);
		return -1;
	}

	/* Tear down. */
	for (long i = 0; i < nconns; i++) {
		hush_conn_free(cc[i].c);
	}
	free(cc);
	char q = 'q';
	if (write(ctl[0], &q, 1) != 1) {
		/* the server is gone already; waitpid below tells */
	}
	int status;
	waitpid(pid, &status, 0);
	close(ctl[0]);
	hush_keypair_free(cli.kp);
	hush_loop_free(S.loop);
	hush_pool_free(S.pool);
	event_base_free(S.base);
	return 0;
}

int main(int argc, char **argv)
{
	long nconns = 5000;
	int busy = 5, seconds = 8;
	const char *mode = "both";
	if (bench_alloc_install() < 0) {
		fprintf(stderr, "hush-demo: cannot hook OpenSSL's allocator\n");
		return 1;
	}
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--conns") == 0) {
			nconns = atol(argv[i + 1]);
		} else if (strcmp(argv[i], "--busy") == 0) {
			busy = atoi(argv[i + 1]);
		} else if (strcmp(argv[i], "--seconds") == 0) {
			seconds = atoi(argv[i + 1]);
		} else if (strcmp(argv[i], "--mode") == 0) {
			mode = argv[i + 1];
		} else {
			fprintf(stderr, "usage: hush-demo [--conns N] [--busy PCT] [--seconds S] "
					"[--mode ready|pinned|both]\n");
			return 2;
		}
	}
	if (nconns < 1 || nconns > 9000 || busy < 0 || busy > 100 || seconds < 1) {
		fprintf(stderr, "hush-demo: --conns 1..9000, --busy 0..100, --seconds >= 1\n");
		return 2;
	}
	/* Each process holds one socket per connection, plus a few. */
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)nconns + 64) {
		rl.rlim_cur = rl.rlim_max < (rlim_t)nconns + 64 ? rl.rlim_max : (rlim_t)nconns + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	printf("hush-demo: %ld secure connections over loopback (Noise_XX_25519_AESGCM_SHA256 "
	       "handshakes, ALTSRP_GCM_AES128_REKEY records), %d%% busy with 16 KiB echoes, %d s "
	       "per mode\n\n",
	       nconns, busy, seconds);
	struct result rr = {0}, rp = {0};
	int do_ready = strcmp(mode, "pinned") != 0;
	int do_pinned = strcmp(mode, "ready") != 0;
	if (do_ready && run_mode(0, nconns, busy, seconds, &rr) < 0) {
		return 1;
	}
	if (do_pinned && run_mode(1, nconns, busy, seconds, &rp) < 0) {
		return 1;
	}
	printf("\n%-36s %14s %14s\n", "measured in this run", "ready-read", "pinned");
	printf("%-36s %14.0f %14.0f\n", "server heap per idle conn (B)", rr.srv_idle_per_conn,
	       rp.srv_idle_per_conn);
	printf("%-36s %14.0f %14.0f\n", "client heap per idle conn (B)", rr.cli_idle_per_conn,
	       rp.cli_idle_per_conn);
	printf("%-36s %14llu %14llu\n", "server pool buffers while idle",
	       (unsigned long long)rr.srv_idle_buffers, (unsigned long long)rp.srv_idle_buffers);
	printf("%-36s %14.1f %14.1f\n", "server peak pool bytes (MB)", rr.srv_pool_peak / 1e6,
	       rp.srv_pool_peak / 1e6);
	printf("%-36s %14.1f %14.1f\n", "server peak heap, busy (MB)", rr.srv_heap_busy / 1e6,
	       rp.srv_heap_busy / 1e6);
	printf("%-36s %14.1f %14.1f\n", "echo throughput (MB/s)", rr.mbps, rp.mbps);
	printf("%-36s %14.0f %14.0f\n", "handshakes/s while opening", rr.handshakes_per_s,
	       rp.handshakes_per_s);
	return 0;
}
