/*
 * hush-attack: the attacker and the well-behaved clients of hush's attack suite
 * (run-attack.py), against a hush server on loopback (hushpipe -d in the suite). Every
 * mode is bounded in count and time and prints one line of name=value results.
 *
 *   hush-attack stall --port P --from ADDR --conns N --seconds S
 *       N connections from ADDR that send part of a first flight and then trickle one
 *       byte a second; each one cut is opened again at once (slowloris).
 *   hush-attack flood --port P --from ADDR[,ADDR...] --conns N --seconds S
 *       N connections from each ADDR that send a whole XX first flight (a fresh
 *       ephemeral key, so the server computes its answer) and then stall; reopened
 *       when cut.
 *   hush-attack legit --port P --from ADDR --key FILE --peer B64 --n N --conc C
 *                     [--tunnels T --seconds S]
 *       T tunnels that echo 100 bytes every 200 ms through the server for S seconds,
 *       and N handshakes, C at a time, each timed from connect() to the end of the
 *       handshake, then closed with the close record.
 *   hush-attack replay --port P --psk FILE --n N [--conc C]
 *       one NNpsk0 first flight, sent N times (C connections at a time); counts the
 *       answers (message 2) and whether anything else ever arrives.
 *   hush-attack pin --port P --key FILE --peer B64 --n N --bytes B
 *       N handshakes, then on each B bytes of a record of 1 MiB, and silence; prints
 *       how long until the server cut each one.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <hush.h>

/* Returns from the function when expr fails (a negative hush code). */
#define GUARD(expr)                       \
	do {                              \
		int guard_rc_ = (expr);   \
		if (guard_rc_ < 0) {      \
			return guard_rc_; \
		}                         \
	} while (0)

static uint16_t port;
static const char *from = "127.0.0.1";
static const char *key_file;
static const char *peer_b64;
static const char *psk_file;
static long n_ops = 100;
static long conc = 16;
static long conns = 100;
static long tunnels;
static double seconds = 10;
static long pin_bytes = 600000;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "hush-attack: %s: %s\n", what, rc == HUSH_ESYS ? strerror(errno)
								 : hush_strerror(rc));
	exit(1);
}

/* Raises the open-files soft limit to the hard limit. */
static void fd_room(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* A TCP socket bound to src, connecting to 127.0.0.1:port; blocking unless nb. Returns
 * the descriptor (connected or in progress) or -1. */
static int dial(const char *src, bool nb)
{
	int fd = socket(AF_INET, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0) {
		return -1;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET};
	inet_pton(AF_INET, src, &sa.sin_addr);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			return -1;
		}
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static void set_timeout(int fd, double s)
{
	struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* ---- Identities ---- */

static struct hush_handshake_config hc;
static struct hush_keypair *kp;
static uint8_t peer_key[HUSH_KEY_SIZE];
static uint8_t psk[HUSH_KEY_SIZE];

static void identity_xx(void)
{
	hush_handshake_config_init(&hc);
	int rc = hush_keypair_load(&kp, key_file);
	if (rc < 0) {
		die(key_file, rc);
	}
	if ((rc = hush_key_from_base64(peer_b64, peer_key)) < 0) {
		die("--peer", rc);
	}
	hc.keypair = kp;
	hc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])peer_key;
	hc.n_allowed_peers = 1;
	hc.max_send_frame = 32768;
}

/* A blocking client handshake on fd. Returns 0 with *res filled, or an error. */
static int handshake(int fd, struct hush_handshake_result *res)
{
	struct hush_handshake *hs;
	GUARD(hush_handshake_new(&hs, &hc, HUSH_SIDE_CLIENT));
	uint8_t buf[4096];
	size_t have = 0;
	int rc = 0;
	while (rc == 0 && !hush_handshake_done(hs)) {
		if (hush_handshake_wants_write(hs)) {
			uint8_t out[HUSH_HANDSHAKE_MAX_OUTPUT];
			size_t n = 0;
			rc = hush_handshake_next(hs, out, sizeof(out), &n);
			if (rc == 0 && send_all(fd, out, n) < 0) {
				rc = HUSH_EPIPE;
			}
			continue;
		}
		if (have == 0) {
			ssize_t k = recv(fd, buf, sizeof(buf), 0);
			if (k <= 0) {
				rc = k == 0 ? HUSH_ECLOSED : HUSH_ETIMEDOUT;
				break;
			}
			have = (size_t)k;
		}
		size_t used = 0;
		rc = hush_handshake_read(hs, buf, have, &used);
		memmove(buf, buf + used, have - used);
		have -= used;
	}
	if (rc == 0) {
		rc = hush_handshake_result(hs, res);
	}
	hush_handshake_free(hs);
	return rc;
}

static int record_for(const struct hush_handshake_result *res, struct hush_record **out)
{
	GUARD(hush_record_new(out, res->record_protocol, res->key, res->key_len, res->side));
	return hush_record_set_limits(*out, res->max_send_frame, res->recv_limit);
}

static int send_record(int fd, struct hush_record *rec, const uint8_t *p, size_t n)
{
	uint8_t frame[2048];
	size_t flen;
	if (n > sizeof(frame) - HUSH_RECORD_OVERHEAD) {
		return HUSH_EMSGSIZE;
	}
	if (n > 0) {
		memcpy(frame + HUSH_RECORD_HEADER_SIZE, p, n);
	}
	GUARD(hush_record_seal(rec, frame, sizeof(frame), n, &flen));
	return send_all(fd, frame, flen) < 0 ? HUSH_EPIPE : 0;
}

/* ---- legit: handshakes timed, tunnels kept busy ---- */

static atomic_long next_op;
static atomic_long opened, failed;
static atomic_long fail_codes[128];
static double *lat;
static atomic_long tunnel_errors, tunnel_echoes;
static atomic_bool stop_tunnels;

static void *legit_worker(void *arg)
{
	(void)arg;
	for (;;) {
		long i = atomic_fetch_add(&next_op, 1);
		if (i >= n_ops) {
			return NULL;
		}
		double t0 = now_s();
		int fd = dial(from, false);
		int rc = fd < 0 ? HUSH_ESYS : 0;
		struct hush_handshake_result res;
		if (rc == 0) {
			set_timeout(fd, 10);
			rc = handshake(fd, &res);
		}
		lat[i] = now_s() - t0;
		if (rc == 0) {
			struct hush_record *rec;
			if (record_for(&res, &rec) == 0) {
				send_record(fd, rec, NULL, 0); /* the close record */
				hush_record_free(rec);
			}
			hush_handshake_result_wipe(&res);
			atomic_fetch_add(&opened, 1);
		} else {
			atomic_fetch_add(&failed, 1);
			atomic_fetch_add(&fail_codes[(-rc) & 127], 1);
			lat[i] = -1;
		}
		if (fd >= 0) {
			close(fd);
		}
	}
}

/* Reads and opens records until want plaintext bytes arrived into out. */
static int recv_plain(int fd, struct hush_record *rec, uint8_t *out, size_t want)
{
	static _Thread_local uint8_t buf[65536 + 1024];
	static _Thread_local size_t have;
	size_t got = 0;
	while (got < want) {
		size_t need = 0;
		int rc = have > 0 ? hush_record_parse(rec, buf, have, &need) : HUSH_EAGAIN;
		if (rc == HUSH_EAGAIN) {
			ssize_t k = recv(fd, buf + have, sizeof(buf) - have, 0);
			if (k <= 0) {
				return k == 0 ? HUSH_ECLOSED : HUSH_ETIMEDOUT;
			}
			have += (size_t)k;
			continue;
		}
		GUARD(rc);
		struct hush_iovec pt;
		GUARD(hush_record_open(rec, buf, need, &pt));
		if (pt.len > want - got) {
			return HUSH_EMSGSIZE;
		}
		memcpy(out + got, pt.base, pt.len);
		got += pt.len;
		memmove(buf, buf + need, have - need);
		have -= need;
	}
	return 0;
}

static void *tunnel_worker(void *arg)
{
	long id = (long)(intptr_t)arg;
	int fd = dial(from, false);
	struct hush_handshake_result res;
	struct hush_record *rec = NULL;
	int rc = fd < 0 ? HUSH_ESYS : 0;
	if (rc == 0) {
		set_timeout(fd, 10);
		rc = handshake(fd, &res);
	}
	if (rc == 0) {
		rc = record_for(&res, &rec);
		hush_handshake_result_wipe(&res);
	}
	uint8_t msg[100], back[100];
	for (long k = 0; rc == 0 && !atomic_load(&stop_tunnels); k++) {
		for (size_t j = 0; j < sizeof(msg); j++) {
			msg[j] = (uint8_t)(id * 31 + k * 7 + (long)j);
		}
		rc = send_record(fd, rec, msg, sizeof(msg));
		if (rc == 0) {
			rc = recv_plain(fd, rec, back, sizeof(back));
		}
		if (rc == 0 && memcmp(msg, back, sizeof(msg)) != 0) {
			rc = HUSH_EAUTH;
		}
		if (rc == 0) {
			atomic_fetch_add(&tunnel_echoes, 1);
		}
		usleep(200000);
	}
	if (rc != 0) {
		fprintf(stderr, "hush-attack: tunnel %ld: %s\n", id, hush_err_name(rc));
		atomic_fetch_add(&tunnel_errors, 1);
	}
	hush_record_free(rec);
	if (fd >= 0) {
		close(fd);
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void run_legit(void)
{
	identity_xx();
	fd_room();
	pthread_t tt[256];
	long nt = tunnels > 256 ? 256 : tunnels;
	for (long i = 0; i < nt; i++) {
		pthread_create(&tt[i], NULL, tunnel_worker, (void *)(intptr_t)i);
	}
	lat = calloc((size_t)n_ops, sizeof(double));
	pthread_t *w = calloc((size_t)conc, sizeof(pthread_t));
	double t0 = now_s();
	for (long i = 0; i < conc; i++) {
		pthread_create(&w[i], NULL, legit_worker, NULL);
	}
	for (long i = 0; i < conc; i++) {
		pthread_join(w[i], NULL);
	}
	double took = now_s() - t0;
	while (nt > 0 && now_s() - t0 < seconds) {
		usleep(100000);
	}
	atomic_store(&stop_tunnels, true);
	for (long i = 0; i < nt; i++) {
		pthread_join(tt[i], NULL);
	}
	long ok = atomic_load(&opened);
	double *l = calloc((size_t)(ok > 0 ? ok : 1), sizeof(double));
	long m = 0;
	for (long i = 0; i < n_ops; i++) {
		if (lat[i] >= 0) {
			l[m++] = lat[i];
		}
	}
	qsort(l, (size_t)m, sizeof(double), cmp_double);
	double p50 = m ? l[m / 2] : -1, p99 = m ? l[(m * 99) / 100 < m ? (m * 99) / 100 : m - 1] : -1;
	printf("legit attempted=%ld opened=%ld failed=%ld success_pct=%.2f p50_ms=%.1f "
	       "p99_ms=%.1f max_ms=%.1f seconds=%.1f tunnels=%ld tunnel_echoes=%ld "
	       "tunnel_errors=%ld",
	       n_ops, ok, atomic_load(&failed), n_ops ? 100.0 * (double)ok / (double)n_ops : 0,
	       p50 * 1000, p99 * 1000, m ? l[m - 1] * 1000 : -1, took, nt,
	       atomic_load(&tunnel_echoes), atomic_load(&tunnel_errors));
	for (int c = 0; c < 128; c++) {
		if (atomic_load(&fail_codes[c]) > 0) {
			printf(" fail_%s=%ld", hush_err_name(-c), atomic_load(&fail_codes[c]));
		}
	}
	printf("\n");
	free(l);
	free(lat);
	free(w);
}

/* ---- stall and flood: many connections in one epoll loop ---- */

struct atk {
	int fd;
	const char *src;
	size_t sent;   /* bytes of the flight sent */
	bool connected;
};

static uint8_t flight[HUSH_HANDSHAKE_MAX_OUTPUT];
static size_t flight_len;
static bool whole_flight;
static long reconnects, cut;

/* A fresh XX first flight (hello and e): the server must compute its answer. */
static void make_flight(void)
{
	static struct hush_keypair *any;
	static uint8_t nobody[HUSH_KEY_SIZE] = {9};
	if (any == NULL) {
		if (hush_keypair_generate(&any) < 0) {
			exit(1);
		}
		hush_handshake_config_init(&hc);
		hc.keypair = any;
		hc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])nobody;
		hc.n_allowed_peers = 1;
		hc.max_send_frame = 32768;
	}
	struct hush_handshake *hs;
	if (hush_handshake_new(&hs, &hc, HUSH_SIDE_CLIENT) < 0 ||
	    hush_handshake_next(hs, flight, sizeof(flight), &flight_len) < 0) {
		exit(1);
	}
	hush_handshake_free(hs);
}

static void atk_open(int ep, struct atk *a)
{
	a->fd = dial(a->src, true);
	a->sent = 0;
	a->connected = false;
	if (a->fd < 0) {
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = a};
	epoll_ctl(ep, EPOLL_CTL_ADD, a->fd, &ev);
}

static void atk_send(struct atk *a, size_t upto)
{
	while (a->sent < upto) {
		ssize_t k = send(a->fd, flight + a->sent, upto - a->sent, MSG_NOSIGNAL);
		if (k <= 0) {
			return;
		}
		a->sent += (size_t)k;
	}
}

static void run_many(bool flood)
{
	fd_room();
	whole_flight = flood;
	make_flight();
	char *srcs = strdup(from);
	const char *list[64];
	int nsrc = 0;
	for (char *t = strtok(srcs, ","); t != NULL && nsrc < 64; t = strtok(NULL, ",")) {
		list[nsrc++] = t;
	}
	long total = conns * nsrc;
	struct atk *a = calloc((size_t)total, sizeof(*a));
	int ep = epoll_create1(0);
	for (long i = 0; i < total; i++) {
		a[i].src = list[i % nsrc];
		atk_open(ep, &a[i]);
	}
	double t0 = now_s(), tick = t0;
	struct epoll_event evs[256];
	while (now_s() - t0 < seconds) {
		int n = epoll_wait(ep, evs, 256, 100);
		for (int i = 0; i < n; i++) {
			struct atk *x = evs[i].data.ptr;
			if (evs[i].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP | EPOLLIN)) {
				uint8_t junk[4096];
				ssize_t k = recv(x->fd, junk, sizeof(junk), MSG_DONTWAIT);
				if (k > 0 && !(evs[i].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))) {
					continue; /* the server's answer: stall on */
				}
				/* Cut: open again at once. */
				close(x->fd);
				cut++;
				reconnects++;
				if (flood) {
					make_flight();
				}
				atk_open(ep, x);
				continue;
			}
			if ((evs[i].events & EPOLLOUT) && !x->connected) {
				x->connected = true;
				atk_send(x, flood ? flight_len : 7);
				struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = x};
				epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &ev);
			}
		}
		/* Those that could not even get a socket try again. */
		for (long i = 0; i < total; i++) {
			if (a[i].fd < 0) {
				atk_open(ep, &a[i]);
			}
		}
		if (!flood && now_s() - tick >= 1.0) {
			tick = now_s();
			for (long i = 0; i < total; i++) {
				if (a[i].fd >= 0 && a[i].connected && a[i].sent < flight_len) {
					atk_send(&a[i], a[i].sent + 1);
				}
			}
		}
	}
	long open_now = 0;
	for (long i = 0; i < total; i++) {
		open_now += a[i].fd >= 0;
		if (a[i].fd >= 0) {
			close(a[i].fd);
		}
	}
	printf("%s sources=%d conns=%ld seconds=%.0f cut_and_reopened=%ld\n",
	       flood ? "flood" : "stall", nsrc, total, seconds, cut);
	(void)open_now;
	free(a);
	free(srcs);
}

/* ---- replay ---- */

static atomic_long replay_next, answered, beyond;

static void *replay_worker(void *arg)
{
	(void)arg;
	for (;;) {
		long i = atomic_fetch_add(&replay_next, 1);
		if (i >= n_ops) {
			return NULL;
		}
		int fd = dial("127.0.0.1", false);
		if (fd < 0) {
			continue;
		}
		set_timeout(fd, 5);
		if (send_all(fd, flight, flight_len) == 0) {
			uint8_t buf[4096];
			ssize_t k = recv(fd, buf, sizeof(buf), 0);
			if (k > 0) {
				atomic_fetch_add(&answered, 1);
				/* Message 2 is all a replayer may get: wait a little for more. */
				set_timeout(fd, 0.05);
				ssize_t more = recv(fd, buf, sizeof(buf), 0);
				if (more > 0) {
					atomic_fetch_add(&beyond, 1);
				}
			}
		}
		close(fd);
	}
}

static void run_replay(void)
{
	hush_handshake_config_init(&hc);
	int rc = hush_psk_load(psk_file, psk);
	if (rc < 0) {
		die(psk_file, rc);
	}
	hc.protocol = HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256;
	hc.psk = psk;
	hc.max_send_frame = 32768;
	struct hush_handshake *hs;
	if (hush_handshake_new(&hs, &hc, HUSH_SIDE_CLIENT) < 0 ||
	    hush_handshake_next(hs, flight, sizeof(flight), &flight_len) < 0) {
		die("flight", HUSH_ECRYPTO);
	}
	hush_handshake_free(hs);
	pthread_t *w = calloc((size_t)conc, sizeof(pthread_t));
	for (long i = 0; i < conc; i++) {
		pthread_create(&w[i], NULL, replay_worker, NULL);
	}
	for (long i = 0; i < conc; i++) {
		pthread_join(w[i], NULL);
	}
	printf("replay sent=%ld answered=%ld more_than_message_2=%ld\n", n_ops,
	       atomic_load(&answered), atomic_load(&beyond));
	free(w);
}

/* ---- pin ---- */

static void run_pin(void)
{
	identity_xx();
	fd_room();
	int *fds = calloc((size_t)n_ops, sizeof(int));
	size_t big = 1048576 - HUSH_RECORD_OVERHEAD + 4;
	uint8_t *rec_wire = malloc(big + HUSH_RECORD_OVERHEAD);
	uint8_t *plain = calloc(1, big);
	long ok = 0;
	for (long i = 0; i < n_ops; i++) {
		fds[i] = dial("127.0.0.1", false);
		struct hush_handshake_result res;
		set_timeout(fds[i], 10);
		if (fds[i] < 0 || handshake(fds[i], &res) != 0) {
			continue;
		}
		/* The server's receive limit is 1 MiB: a record of exactly that LENGTH. */
		struct hush_record *rec;
		if (hush_record_new(&rec, res.record_protocol, res.key, res.key_len, res.side) == 0 &&
		    hush_record_set_limits(rec, 1048576 + 4, 0) == 0) {
			memcpy(rec_wire + HUSH_RECORD_HEADER_SIZE, plain, big);
			size_t flen;
			if (hush_record_seal(rec, rec_wire, big + HUSH_RECORD_OVERHEAD, big, &flen) == 0 &&
			    send_all(fds[i], rec_wire, (size_t)pin_bytes) == 0) {
				ok++;
			}
			hush_record_free(rec);
		}
		hush_handshake_result_wipe(&res);
	}
	double t0 = now_s();
	printf("pin connections=%ld pinned_bytes_each=%ld\n", ok, pin_bytes);
	fflush(stdout);
	/* Wait for the server to cut them. */
	double first = -1, last = -1;
	long closed = 0;
	while (closed < ok && now_s() - t0 < seconds) {
		for (long i = 0; i < n_ops; i++) {
			if (fds[i] < 0) {
				continue;
			}
			uint8_t b[64];
			ssize_t k = recv(fds[i], b, sizeof(b), MSG_DONTWAIT);
			if (k == 0 || (k < 0 && errno != EAGAIN)) {
				double t = now_s() - t0;
				first = first < 0 ? t : first;
				last = t;
				closed++;
				close(fds[i]);
				fds[i] = -1;
			}
		}
		usleep(20000);
	}
	printf("pin closed_by_server=%ld first_s=%.1f last_s=%.1f\n", closed, first, last);
	for (long i = 0; i < n_ops; i++) {
		if (fds[i] >= 0) {
			close(fds[i]);
		}
	}
	free(fds);
	free(rec_wire);
	free(plain);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: hush-attack stall|flood|legit|replay|pin OPTIONS\n");
		return 2;
	}
	const char *mode = argv[1];
	for (int i = 2; i + 1 < argc; i += 2) {
		const char *o = argv[i], *v = argv[i + 1];
		if (strcmp(o, "--port") == 0) {
			port = (uint16_t)atoi(v);
		} else if (strcmp(o, "--from") == 0) {
			from = v;
		} else if (strcmp(o, "--key") == 0) {
			key_file = v;
		} else if (strcmp(o, "--peer") == 0) {
			peer_b64 = v;
		} else if (strcmp(o, "--psk") == 0) {
			psk_file = v;
		} else if (strcmp(o, "--n") == 0) {
			n_ops = atol(v);
		} else if (strcmp(o, "--conc") == 0) {
			conc = atol(v);
		} else if (strcmp(o, "--conns") == 0) {
			conns = atol(v);
		} else if (strcmp(o, "--tunnels") == 0) {
			tunnels = atol(v);
		} else if (strcmp(o, "--seconds") == 0) {
			seconds = atof(v);
		} else if (strcmp(o, "--bytes") == 0) {
			pin_bytes = atol(v);
		} else {
			fprintf(stderr, "hush-attack: unknown option %s\n", o);
			return 2;
		}
	}
	if (strcmp(mode, "legit") == 0) {
		run_legit();
	} else if (strcmp(mode, "stall") == 0) {
		run_many(false);
	} else if (strcmp(mode, "flood") == 0) {
		run_many(true);
	} else if (strcmp(mode, "replay") == 0) {
		run_replay();
	} else if (strcmp(mode, "pin") == 0) {
		run_pin();
	} else {
		fprintf(stderr, "hush-attack: unknown mode %s\n", mode);
		return 2;
	}
	hush_keypair_free(kp);
	return 0;
}
