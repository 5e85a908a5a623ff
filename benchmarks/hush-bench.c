/*
 * hush-bench: hush side by side with OpenSSL TLS 1.3 (libevent's bufferevent_openssl), a
 * plain libevent bufferevent and hush's own pinned-buffer baseline, every figure measured
 * in the same run on the same machine.
 *
 *   hush-bench [--quick] [--count N] [--filter REGEX] [--json] [--plot FILE]
 *
 *   --quick         short run (under a minute); the full run takes a few minutes
 *   --count N       run each benchmark N times and print, per result, the median of each
 *                   metric (the minimum of a metric whose unit starts with "min-") plus
 *                   one extra metric, spread%: (max - min) / median * 100 of the result's
 *                   first metric
 *   --filter REGEX  run only results whose name (as "IdleConnMemory/hush-native/N=8000",
 *                   without "Benchmark" and the -procs suffix) matches the POSIX extended
 *                   regular expression
 *   --json          print one JSON document instead of Go benchmark lines
 *   --plot FILE     write an SVG chart of IdleConnMemory: heap against idle connections
 *   --list          print every benchmark/variant name, one a line, and run nothing
 *
 * Output is Go's benchmark format (benchstat compares two runs), one line per result:
 *   BenchmarkIdleConnMemory/hush-native/N=8000-2  1  <v> B/conn  <v> server-B/conn  ...
 * where the -2 suffix is the number of processes or threads the benchmark ran on.
 *
 * Benchmarks, each a table of variants (one function per row):
 *  - IdleConnMemory: heap bytes per established, idle connection, counted exactly by the
 *    allocator hooks of hush, OpenSSL and libevent (benchlib), server side in a forked
 *    child, client side here, over loopback TCP.
 *  - ReadMemoryUsage, WriteMemoryUsage: time and allocations of receiving or sending one
 *    1 KiB message on an established connection.
 *  - LargeMessage: throughput of 1 MiB messages, sender and receiver on their own threads.
 *  - PingPong: round trips of 64-byte messages, each end on its own thread.
 *  - Handshake: full handshakes per second, both ends on one thread.
 *  - Pool: one 16 KiB acquire and release, against malloc and free.
 *  - ManyConns: 1,000 to 9,000 connections with 5% of them echoing 16 KiB messages: peak
 *    heap, throughput, and the page faults and allocator calls per second while busy;
 *    hush's ready-read and pinned modes side by side at each count, with their ratio.
 *
 * The secure variants use the same cipher: hush runs ALTSRP_GCM_AES128_REKEY with raw
 * keys (as from an external handshaker); OpenSSL runs TLS 1.3 with TLS_AES_128_GCM_SHA256
 * and X25519, with an ECDSA P-256 certificate made here at start-up and verified by the
 * client. Every variant runs over loopback TCP with TCP_NODELAY and its library's
 * defaults. Heap counts cover hush, OpenSSL and libevent; the benchmark's own bookkeeping
 * uses plain malloc and is not counted.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <hush.h>

#include "benchlib.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Idle connections opened before the baseline and kept open (see idle_run). */
#define WARM_CONNS 32
/* Size of the message exchanged each way before a connection counts as established. */
#define PING_SIZE 64
/* Message size of ReadMemoryUsage and WriteMemoryUsage. */
#define RW_SIZE 1024
/* Message size of LargeMessage. */
#define LARGE_SIZE (1024 * 1024)
/* ManyConns: the share of connections busy and their echo message size (the connection
 * counts are in many_run). */
#define MANY_BUSY_EVERY 20 /* 5% */
#define MANY_KICK	32 /* busy connections started per loop iteration */
#define MANY_MAX_SLICES 64 /* busy-phase slices per variant, at most */
#define MANY_MSG	16384
/* Payload of one 16 KiB record, hush's default send frame: 16384 - 24 bytes overhead. */
#define RECORD_PAYLOAD (HUSH_RECORD_DEFAULT_SEND_FRAME - HUSH_RECORD_OVERHEAD)
/* The bufferevent variants stop writing above this many queued bytes, as hush does by
 * default (hush_conn_config.write_high_water), and resume when the queue is empty. */
#define BEV_HIGH_WATER (256 * 1024)

/* ------------------------------------------------------------------------------------ */
/* Options, results and output                                                          */
/* ------------------------------------------------------------------------------------ */

static struct {
	int quick;
	int count;
	int json;
	const char *plot;
	int has_filter;
	regex_t filter;
} opt = {0, 1, 0, NULL, 0, {0}};

#define MAX_METRICS 12

struct result {
	char name[128]; /* without "Benchmark" and the -procs suffix */
	int procs;
	uint64_t n;
	size_t nm;
	struct bench_metric m[MAX_METRICS];
};

struct result_list {
	struct result *v;
	size_t n;
	size_t cap;
};

/* What the running repetition reported, and the medians of every finished benchmark. */
static struct result_list run_results;
static struct result_list final_results;
static int failures;

static void die(const char *what)
{
	fprintf(stderr, "hush-bench: %s\n", what);
	exit(1);
}

static void list_add(struct result_list *l, const struct result *r)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct result *v = realloc(l->v, cap * sizeof(*v));
		if (v == NULL) {
			die("out of memory");
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = *r;
}

/* Reports a failure on stderr; the program goes on with the next variant and exits 1. */
static void fail(const char *name, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "hush-bench: %s: ", name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	failures++;
}

static int wanted(const char *name)
{
	return !opt.has_filter || regexec(&opt.filter, name, 0, NULL, 0) == 0;
}

/* Records one result of the running repetition. */
static void report(const char *name, int procs, uint64_t n, const struct bench_metric *m, size_t nm)
{
	struct result r;
	memset(&r, 0, sizeof(r));
	snprintf(r.name, sizeof(r.name), "%s", name);
	r.procs = procs;
	r.n = n;
	r.nm = nm < MAX_METRICS ? nm : MAX_METRICS;
	memcpy(r.m, m, r.nm * sizeof(*m));
	list_add(&run_results, &r);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double minimum(const double *v, size_t n)
{
	double lo = v[0];
	for (size_t i = 1; i < n; i++) {
		lo = v[i] < lo ? v[i] : lo;
	}
	return lo;
}

/* Prints one result as a Go benchmark line (or keeps it for the JSON document). */
static void publish(const struct result *r)
{
	list_add(&final_results, r);
	if (!opt.json) {
		bench_print(r->name, r->procs, r->n, r->m, r->nm);
	}
}

/*
 * Runs fn opt.count times and publishes, for each result name (in the order of the
 * repetition that reported the most), the median of each metric over the repetitions
 * that reported it, or the minimum for a metric whose unit starts with "min-" (a floor
 * that must hold in every repetition); with more than one repetition, spread% is added:
 * (max - min) / median * 100 of the first metric.
 */
static void repeat(void (*fn)(const void *arg), const void *arg)
{
	struct result_list *reps = calloc((size_t)opt.count, sizeof(*reps));
	if (reps == NULL) {
		die("out of memory");
	}
	for (int k = 0; k < opt.count; k++) {
		run_results = (struct result_list){NULL, 0, 0};
		fn(arg);
		reps[k] = run_results;
	}
	double *vals = calloc((size_t)opt.count, sizeof(*vals));
	if (vals == NULL) {
		die("out of memory");
	}
	int ref = 0;
	for (int k = 1; k < opt.count; k++) {
		ref = reps[k].n > reps[ref].n ? k : ref;
	}
	for (size_t i = 0; i < reps[ref].n; i++) {
		struct result out = reps[ref].v[i];
		const struct result *same[opt.count];
		size_t ns = 0;
		for (int k = 0; k < opt.count; k++) {
			for (size_t j = 0; j < reps[k].n; j++) {
				if (strcmp(reps[k].v[j].name, out.name) == 0 &&
				    reps[k].v[j].nm == out.nm) {
					same[ns++] = &reps[k].v[j];
					break;
				}
			}
		}
		for (size_t m = 0; m < out.nm; m++) {
			for (size_t k = 0; k < ns; k++) {
				vals[k] = same[k]->m[m].value;
			}
			out.m[m].value = strncmp(out.m[m].unit, "min-", 4) == 0 ? minimum(vals, ns)
										: median(vals, ns);
		}
		for (size_t k = 0; k < ns; k++) {
			vals[k] = (double)same[k]->n;
		}
		out.n = (uint64_t)median(vals, ns);
		if (opt.count > 1 && out.nm < MAX_METRICS) {
			double lo = same[0]->m[0].value, hi = lo;
			for (size_t k = 1; k < ns; k++) {
				double v = same[k]->m[0].value;
				lo = v < lo ? v : lo;
				hi = v > hi ? v : hi;
			}
			double mid = out.m[0].value;
			double spread = mid != 0 ? (hi - lo) / fabs(mid) * 100 : 0;
			out.m[out.nm++] = (struct bench_metric){round(spread * 10) / 10, "spread%"};
		}
		publish(&out);
	}
	for (int k = 0; k < opt.count; k++) {
		free(reps[k].v);
	}
	free(reps);
	free(vals);
	run_results = (struct result_list){NULL, 0, 0};
}

static void cpu_model(char *out, size_t cap)
{
	snprintf(out, cap, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f == NULL) {
		return;
	}
	char line[256];
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "model name", 10) == 0) {
			char *p = strchr(line, ':');
			if (p != NULL) {
				p++;
				p += strspn(p, " \t");
				p[strcspn(p, "\n")] = '\0';
				snprintf(out, cap, "%s", p);
			}
			break;
		}
	}
	fclose(f);
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			printf("\\%c", c);
		} else if (c < 0x20) {
			printf("\\u%04x", c);
		} else {
			putchar(c);
		}
	}
	putchar('"');
}

static void json_number(double v)
{
	if (!isfinite(v)) {
		printf("null");
	} else if (v == (double)(int64_t)v && fabs(v) < 1e15) {
		printf("%lld", (long long)v);
	} else {
		printf("%.6g", v);
	}
}

static void print_header(void)
{
	char cpu[200];
	cpu_model(cpu, sizeof(cpu));
	if (opt.json) {
		return;
	}
	/* "key: value" lines are configuration labels to benchstat. */
	printf("cpu: %s\n", cpu);
	printf("cores: %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
	printf("openssl: %s\n", OpenSSL_version(OPENSSL_VERSION));
	printf("libevent: %s\n", event_get_version());
	printf("hush: %s\n", hush_version());
	fflush(stdout);
}

static void print_json(void)
{
	char cpu[200];
	cpu_model(cpu, sizeof(cpu));
	printf("{\"machine\":{\"cpu\":");
	json_string(cpu);
	printf(",\"cores\":%ld,\"openssl\":", sysconf(_SC_NPROCESSORS_ONLN));
	json_string(OpenSSL_version(OPENSSL_VERSION));
	printf(",\"libevent\":");
	json_string(event_get_version());
	printf(",\"hush\":");
	json_string(hush_version());
	printf("},\"results\":[");
	for (size_t i = 0; i < final_results.n; i++) {
		const struct result *r = &final_results.v[i];
		printf("%s\n{\"name\":", i ? "," : "");
		json_string(r->name);
		printf(",\"procs\":%d,\"n\":%llu,\"metrics\":{", r->procs,
		       (unsigned long long)r->n);
		for (size_t m = 0; m < r->nm; m++) {
			printf("%s", m ? "," : "");
			json_string(r->m[m].unit);
			putchar(':');
			json_number(r->m[m].value);
		}
		printf("}}");
	}
	printf("]}\n");
}

/* ------------------------------------------------------------------------------------ */
/* The SVG chart of IdleConnMemory                                                      */
/* ------------------------------------------------------------------------------------ */

#define PLOT_MAX_SERIES 8
#define PLOT_MAX_POINTS 8

struct series {
	char name[48];
	size_t n;
	double x[PLOT_MAX_POINTS]; /* connections */
	double y[PLOT_MAX_POINTS]; /* heap bytes, the larger side */
	double per_conn;	   /* B/conn at the largest N */
};

/* An axis from 0 to *top in *ticks steps of 1, 2 or 5 times a power of ten, *top >= v. */
static void nice_axis(double v, double *top, int *ticks)
{
	if (v <= 0) {
		*top = 1;
		*ticks = 1;
		return;
	}
	double raw = v / 5, p = pow(10, floor(log10(raw)));
	static const double steps[] = {1, 2, 5, 10};
	double step = 10 * p;
	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		if (steps[i] * p >= raw * (1 - 1e-9)) {
			step = steps[i] * p;
			break;
		}
	}
	*ticks = (int)ceil(v / step - 1e-9);
	*top = step * *ticks;
}

static int plot_write(const char *path)
{
	static const char *colors[PLOT_MAX_SERIES] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a",
						      "#66a61e", "#e6ab02", "#a6761d", "#666666"};
	struct series s[PLOT_MAX_SERIES];
	size_t ns = 0;
	double xmax = 0, ymax = 0;

	for (size_t i = 0; i < final_results.n; i++) {
		const struct result *r = &final_results.v[i];
		const char *prefix = "IdleConnMemory/";
		if (strncmp(r->name, prefix, strlen(prefix)) != 0) {
			continue;
		}
		const char *var = r->name + strlen(prefix);
		const char *slash = strstr(var, "/N=");
		if (slash == NULL || r->nm == 0 || strcmp(r->m[0].unit, "B/conn") != 0) {
			continue;
		}
		size_t vl = (size_t)(slash - var);
		size_t k;
		for (k = 0; k < ns; k++) {
			if (strlen(s[k].name) == vl && strncmp(s[k].name, var, vl) == 0) {
				break;
			}
		}
		if (k == ns) {
			if (ns == PLOT_MAX_SERIES) {
				continue;
			}
			memset(&s[ns], 0, sizeof(s[ns]));
			snprintf(s[ns].name, sizeof(s[ns].name), "%.*s", (int)vl, var);
			ns++;
		}
		if (s[k].n == PLOT_MAX_POINTS) {
			continue;
		}
		double n = atof(slash + 3);
		s[k].x[s[k].n] = n;
		s[k].y[s[k].n] = r->m[0].value * n;
		s[k].per_conn = r->m[0].value;
		xmax = n > xmax ? n : xmax;
		ymax = s[k].y[s[k].n] > ymax ? s[k].y[s[k].n] : ymax;
		s[k].n++;
	}
	if (ns == 0) {
		fprintf(stderr, "hush-bench: --plot: no IdleConnMemory results to draw\n");
		return -1;
	}
	FILE *f = fopen(path, "w");
	if (f == NULL) {
		fprintf(stderr, "hush-bench: --plot: %s: %s\n", path, strerror(errno));
		return -1;
	}
	const double W = 940, H = 500, L = 80, R = 560, T = 74, B = 440;
	int xticks, yticks;
	double ymb;
	nice_axis(xmax, &xmax, &xticks);
	nice_axis(ymax / 1e6, &ymb, &yticks);
	fprintf(f,
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		"viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
		W, H, W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f,
		"<text x=\"%.0f\" y=\"24\" font-size=\"15\" font-weight=\"bold\">Heap held by idle "
		"connections (larger of server and client side)</text>\n",
		L);
	char cpu[200];
	cpu_model(cpu, sizeof(cpu));
	fprintf(f,
		"<text x=\"%.0f\" y=\"42\" fill=\"#555\">measured by hush-bench%s: heap counted "
		"by the allocator hooks of hush, OpenSSL and libevent</text>\n",
		L, opt.quick ? " --quick" : "");
	fprintf(f,
		"<text x=\"%.0f\" y=\"58\" fill=\"#555\">%s, libevent %s, %s, %ld cores</text>\n",
		L, OpenSSL_version(OPENSSL_VERSION), event_get_version(), cpu,
		sysconf(_SC_NPROCESSORS_ONLN));
	for (int i = 0; i <= xticks; i++) {
		double px = L + (R - L) * i / xticks;
		fprintf(f,
			"<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>\n",
			px, T, px, B);
		fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n", px,
			B + 18, xmax * i / xticks);
	}
	for (int i = 0; i <= yticks; i++) {
		double py = B - (B - T) * i / yticks;
		fprintf(f,
			"<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
			L, py, R, py);
		fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6,
			py + 4, ymb * i / yticks);
	}
	fprintf(f,
		"<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
		"stroke=\"#333\"/>\n",
		L, T, R - L, B - T);
	fprintf(f,
		"<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">idle established "
		"connections</text>\n",
		(L + R) / 2, B + 40);
	fprintf(f,
		"<text transform=\"translate(22 %.0f) rotate(-90)\" text-anchor=\"middle\">heap "
		"(MB)</text>\n",
		(T + B) / 2);
	for (size_t k = 0; k < ns; k++) {
		const char *c = colors[k];
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
		for (size_t i = 0; i < s[k].n; i++) {
			fprintf(f, "%s%.1f,%.1f", i ? " " : "", L + (R - L) * s[k].x[i] / xmax,
				B - (B - T) * (s[k].y[i] / 1e6) / ymb);
		}
		fprintf(f, "\"/>\n");
		for (size_t i = 0; i < s[k].n; i++) {
			fprintf(f,
				"<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s: "
				"%.0f connections, %.2f MB</title></circle>\n",
				L + (R - L) * s[k].x[i] / xmax,
				B - (B - T) * (s[k].y[i] / 1e6) / ymb, c, s[k].name, s[k].x[i],
				s[k].y[i] / 1e6);
		}
		double ly = T + 10 + 22 * (double)k;
		fprintf(f,
			"<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
			"stroke-width=\"3\"/>\n",
			R + 20, ly, R + 44, ly, c);
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">%s: %.0f B/conn at N=%.0f</text>\n", R + 52,
			ly + 4, s[k].name, s[k].per_conn, s[k].x[s[k].n - 1]);
	}
	fprintf(f, "</svg>\n");
	if (fclose(f) != 0) {
		fprintf(stderr, "hush-bench: --plot: %s: write failed\n", path);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Event loops and sockets                                                              */
/* ------------------------------------------------------------------------------------ */

/* What the connections on one event_base share: the base, hush's loop and a pool. */
struct env {
	struct event_base *base;
	struct hush_pool *pool;
	int own_pool;
	struct hush_loop *loop;
	struct event *tick; /* bounds how long one pump() may block */
};

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Sets up env; pool is shared (borrowed) when not NULL, else env makes its own. */
static int env_init(struct env *env, struct hush_pool *pool)
{
	memset(env, 0, sizeof(*env));
	env->base = event_base_new();
	if (env->base == NULL) {
		return -1;
	}
	env->pool = pool;
	if (pool == NULL) {
		if (hush_pool_new(&env->pool, NULL) < 0) {
			return -1;
		}
		env->own_pool = 1;
	}
	env->tick = evtimer_new(env->base, tick_cb, NULL);
	if (env->tick == NULL || hush_loop_new(&env->loop, env->base, env->pool) < 0) {
		return -1;
	}
	return 0;
}

/* Frees env; every connection on it must have been freed. */
static void env_free(struct env *env)
{
	hush_loop_free(env->loop);
	if (env->tick != NULL) {
		event_free(env->tick);
	}
	if (env->base != NULL) {
		event_base_free(env->base);
	}
	if (env->own_pool) {
		hush_pool_free(env->pool);
	}
	memset(env, 0, sizeof(*env));
}

/* Runs one loop iteration, waiting at most block_ms for something to happen. */
static void pump(struct env *env, int block_ms)
{
	if (block_ms <= 0) {
		event_base_loop(env->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		return;
	}
	struct timeval tv = {block_ms / 1000, (block_ms % 1000) * 1000};
	evtimer_add(env->tick, &tv);
	event_base_loop(env->base, EVLOOP_ONCE);
}

/* TCP_NODELAY (every variant sends small messages at once) and non-blocking. */
static int tune_socket(int fd)
{
	int one = 1;
	int fl = fcntl(fd, F_GETFL);
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 || fl < 0 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		return -1;
	}
	return 0;
}

/* A listening socket on 127.0.0.1 with an ephemeral port, written to *addr. */
static int listen_loopback(struct sockaddr_in *addr, int backlog)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	socklen_t len = sizeof(*addr);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 ||
	    listen(fd, backlog) < 0 || getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
		if (fd >= 0) {
			close(fd);
		}
		return -1;
	}
	return fd;
}

/* A connected loopback TCP pair: fds[0] the client end, fds[1] the server end. */
static int tcp_pair(int fds[2])
{
	struct sockaddr_in addr;
	int l = listen_loopback(&addr, 1);
	if (l < 0) {
		return -1;
	}
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int s = -1;
	if (c >= 0 && connect(c, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
		s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	}
	close(l);
	if (s < 0 || tune_socket(c) < 0 || tune_socket(s) < 0) {
		if (c >= 0) {
			close(c);
		}
		if (s >= 0) {
			close(s);
		}
		return -1;
	}
	fds[0] = c;
	fds[1] = s;
	return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Endpoints: one end of a connection, whatever the variant                             */
/* ------------------------------------------------------------------------------------ */

struct ep;

/* What the benchmark wants to hear; any member may be NULL. */
struct ep_cb {
	void (*on_open)(struct ep *e);					/* keys in place */
	void (*on_data)(struct ep *e, const uint8_t *data, size_t len); /* plaintext */
	void (*on_writable)(struct ep *e); /* the queue drained after write() returned 1 */
	void (*on_close)(struct ep *e);	   /* EOF or error; e may be freed here */
};

/* What the benchmark can do with an end. */
struct ep_ops {
	/* Queues a copy of data: 0; 1 queued but above the high watermark (wait for
	 * on_writable); -1 error. */
	int (*write)(struct ep *e, const void *data, size_t len);
	/* Bytes queued and not yet handed to the socket. */
	size_t (*queued)(const struct ep *e);
	/* Frees the end and closes its socket. */
	void (*free)(struct ep *e);
};

struct ep {
	const struct ep_ops *ops; /* set by the variant's open function */
	const struct ep_cb *cb;
	void *user;
	struct hush_conn *hc;	 /* hush variants */
	struct bufferevent *bev; /* bufferevent variants */
	uint64_t rx;		 /* plaintext bytes delivered */
	int open;
	int closed;
	int over_high;
	/* The benchmark's own. */
	int ready;
	int busy;
	int in_flight; /* ManyConns: a message is out and its echo not yet all back */
	uint64_t busy_rx;
};

/*
 * A variant's way to make one end of a connection over fd, a connected non-blocking
 * socket it takes over (closed on failure too); server says which end. e->cb and e->user
 * are set before the call. Returns 0 or -1.
 */
typedef int (*ep_open_fn)(struct ep *e, struct env *env, int fd, int server);

static void ep_init(struct ep *e, const struct ep_cb *cb, void *user)
{
	memset(e, 0, sizeof(*e));
	e->cb = cb;
	e->user = user;
}

static void ep_opened(struct ep *e)
{
	e->open = 1;
	if (e->cb->on_open != NULL) {
		e->cb->on_open(e);
	}
}

static void ep_closed(struct ep *e)
{
	e->closed = 1;
	if (e->cb->on_close != NULL) {
		e->cb->on_close(e);
	}
}

static void ep_data(struct ep *e, const uint8_t *data, size_t len)
{
	e->rx += len;
	if (e->cb->on_data != NULL) {
		e->cb->on_data(e, data, len);
	}
}

/* --- hush --- */

/* Raw record keys, as an external handshaker (gRPC's ALTS service) would hand them to
 * both ends. Random per run; children inherit them. */
static uint8_t hush_key[44];

static void hush_on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	(void)c;
	ep_data(arg, data, len);
}

static void hush_on_writable(struct hush_conn *c, void *arg)
{
	struct ep *e = arg;
	(void)c;
	if (e->cb->on_writable != NULL) {
		e->cb->on_writable(e);
	}
}

static void hush_on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	(void)c;
	(void)err;
	if (ev == HUSH_CONN_EV_OPEN) {
		ep_opened(arg);
	} else if (ev == HUSH_CONN_EV_EOF || ev == HUSH_CONN_EV_ERROR) {
		ep_closed(arg);
	}
}

static int hush_write(struct ep *e, const void *data, size_t len)
{
	int rc = hush_conn_write(e->hc, data, len);
	return rc < 0 ? -1 : rc;
}

static size_t hush_queued(const struct ep *e)
{
	return hush_conn_queued(e->hc);
}

static void hush_free(struct ep *e)
{
	hush_conn_free(e->hc);
	e->hc = NULL;
}

static const struct ep_ops hush_ops = {hush_write, hush_queued, hush_free};

static int open_hush_flags(struct ep *e, struct env *env, int fd, int server, unsigned flags)
{
	static const struct hush_conn_callbacks cb = {hush_on_data, hush_on_writable,
						      hush_on_event};
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	cfg.flags |= flags;
	if (hush_conn_new(&e->hc, env->loop, fd, &cfg, &cb, e) < 0) {
		return -1; /* the socket was closed (HUSH_CONN_CLOSE_ON_FREE) */
	}
	if (hush_conn_start_raw(e->hc, HUSH_RP_ALTS_AES128_GCM_REKEY, hush_key, sizeof(hush_key),
				server ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT) < 0) {
		hush_conn_free(e->hc);
		e->hc = NULL;
		return -1;
	}
	e->ops = &hush_ops;
	return 0;
}

/* hush as designed: buffers borrowed from the pool only while bytes move. */
static int open_hush(struct ep *e, struct env *env, int fd, int server)
{
	return open_hush_flags(e, env, fd, server, 0);
}

/* hush's baseline: read and write buffers and cipher contexts held for life. */
static int open_hush_pinned(struct ep *e, struct env *env, int fd, int server)
{
	return open_hush_flags(e, env, fd, server, HUSH_CONN_PINNED);
}

/* --- libevent bufferevents (plain and OpenSSL) --- */

static void bev_on_read(struct bufferevent *bev, void *arg)
{
	struct ep *e = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	/* The plaintext is viewed in place and drained, as hush's on_data views it. */
	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v[16];
		int k = evbuffer_peek(in, -1, NULL, v, 16);
		size_t done = 0;
		for (int i = 0; i < k && i < 16; i++) {
			ep_data(e, v[i].iov_base, v[i].iov_len);
			done += v[i].iov_len;
		}
		evbuffer_drain(in, done);
	}
}

/* Runs when the output buffer drained to the low watermark (0). */
static void bev_on_write(struct bufferevent *bev, void *arg)
{
	struct ep *e = arg;
	(void)bev;
	if (e->over_high) {
		e->over_high = 0;
		if (e->cb->on_writable != NULL) {
			e->cb->on_writable(e);
		}
	}
}

static void bev_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		ep_opened(arg);
	} else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		ep_closed(arg);
	}
}

static int bev_write(struct ep *e, const void *data, size_t len)
{
	if (bufferevent_write(e->bev, data, len) < 0) {
		return -1;
	}
	if (evbuffer_get_length(bufferevent_get_output(e->bev)) > BEV_HIGH_WATER) {
		e->over_high = 1;
		return 1;
	}
	return 0;
}

static size_t bev_queued(const struct ep *e)
{
	return evbuffer_get_length(bufferevent_get_output(e->bev));
}

static void bev_free(struct ep *e)
{
	bufferevent_free(e->bev);
	e->bev = NULL;
}

static const struct ep_ops bev_ops = {bev_write, bev_queued, bev_free};

/* Makes e drive bev, which it owns from now on. */
static void bev_attach(struct ep *e, struct bufferevent *bev)
{
	e->bev = bev;
	e->ops = &bev_ops;
	bufferevent_setcb(bev, bev_on_read, bev_on_write, bev_on_event, e);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* A plain libevent socket bufferevent: no crypto, the floor for any bufferevent. */
static int open_plain(struct ep *e, struct env *env, int fd, int server)
{
	(void)server;
	struct bufferevent *bev = bufferevent_socket_new(env->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return -1;
	}
	bev_attach(e, bev);
	ep_opened(e); /* nothing to negotiate */
	return 0;
}

/*
 * A hush bufferevent refuses a raw key that keyed one before in the process (a key
 * twice would repeat nonces), so each connection's key is hush_key hashed with the
 * connection's addresses, client's first: both ends derive the same one, and no two
 * connections open at once share it.
 */
static int bev_conn_key(int fd, int server, uint8_t out[44])
{
	struct sockaddr_storage a[2];
	socklen_t la = sizeof(a[0]), lb = sizeof(a[1]);
	memset(a, 0, sizeof(a));
	if (getsockname(fd, (struct sockaddr *)&a[server ? 1 : 0], &la) != 0 ||
	    getpeername(fd, (struct sockaddr *)&a[server ? 0 : 1], &lb) != 0) {
		return -1;
	}
	uint8_t md[2][32];
	unsigned int n;
	if (EVP_Digest(a, sizeof(a), md[0], &n, EVP_sha256(), NULL) != 1) {
		return -1;
	}
	memcpy(md[1], hush_key, 32);
	for (int i = 0; i < 32; i++) {
		md[1][i] ^= md[0][i];
	}
	if (EVP_Digest(md, sizeof(md), md[0], &n, EVP_sha256(), NULL) != 1 ||
	    EVP_Digest(md[0], 32, md[1], &n, EVP_sha256(), NULL) != 1) {
		return -1;
	}
	memcpy(out, md, 44);
	return 0;
}

/* hush as a bufferevent (include/hush/bufferevent.h), keyed by raw keys or, with hc, a
 * hush handshake, whose end CONNECTED reports. */
static int open_hush_bev_with(struct ep *e, struct env *env, int fd, int server,
			      const struct hush_handshake_config *hc)
{
	struct hush_bufferevent_config cfg;
	hush_bufferevent_config_init(&cfg);
	cfg.loop = env->loop;
	cfg.handshake = hc;
	uint8_t key[44];
	if (hc == NULL && bev_conn_key(fd, server, key) != 0) {
		close(fd);
		return -1;
	}
	cfg.key = key;
	cfg.key_len = sizeof(key);
	cfg.side = server ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT;
	struct bufferevent *bev =
		hush_bufferevent_socket_new(env->base, fd, &cfg, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return -1;
	}
	bev_attach(e, bev);
	if (hc == NULL) {
		ep_opened(e); /* raw keys start open: no CONNECTED, as bufferevent_openssl */
	}
	return 0;
}

static int open_hush_bev(struct ep *e, struct env *env, int fd, int server)
{
	return open_hush_bev_with(e, env, fd, server, NULL);
}

/* Keyed by a Noise XX handshake (static keys, both verified): what an evhttp server
 * over hush holds per idle client. The bench accepts any peer key; the verification
 * itself is measured by the Handshake benchmark. */
static int bench_accept_any_peer(const uint8_t remote_static[HUSH_KEY_SIZE], void *arg)
{
	(void)remote_static;
	(void)arg;
	return 0;
}

static int open_hush_bev_xx(struct ep *e, struct env *env, int fd, int server)
{
	static struct hush_keypair *kp;
	static struct hush_handshake_config hc;
	if (kp == NULL) {
		if (hush_keypair_generate(&kp) != 0) {
			close(fd);
			return -1;
		}
		hush_handshake_config_init(&hc);
		hc.keypair = kp;
		hc.verify = bench_accept_any_peer;
	}
	return open_hush_bev_with(e, env, fd, server, &hc);
}

/* Made once at start-up (before any fork); see tls_init. */
static SSL_CTX *tls_server_ctx;
static SSL_CTX *tls_client_ctx;

static int open_tls_mode(struct ep *e, struct env *env, int fd, int server, long mode)
{
	SSL *ssl = SSL_new(server ? tls_server_ctx : tls_client_ctx);
	if (ssl == NULL) {
		close(fd);
		return -1;
	}
	if (mode != 0) {
		SSL_set_mode(ssl, mode);
	}
	struct bufferevent *bev = bufferevent_openssl_socket_new(
	    env->base, fd, ssl, server ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		/* libevent 2.1 does not say who owns ssl and fd after this failure: leak
		 * them rather than free twice. */
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	bev_attach(e, bev);
	return 0;
}

/* OpenSSL TLS 1.3 through libevent's bufferevent_openssl, OpenSSL's defaults. */
static int open_tls(struct ep *e, struct env *env, int fd, int server)
{
	return open_tls_mode(e, env, fd, server, 0);
}

/* The same with SSL_MODE_RELEASE_BUFFERS: OpenSSL frees its record buffers when empty. */
static int open_tls_release(struct ep *e, struct env *env, int fd, int server)
{
	return open_tls_mode(e, env, fd, server, SSL_MODE_RELEASE_BUFFERS);
}

/*
 * The TLS configuration every OpenSSL variant shares: TLS 1.3 only,
 * TLS_AES_128_GCM_SHA256 (hush's AES-128-GCM), X25519, and a self-signed ECDSA P-256
 * certificate made here, which the client trusts and verifies. No session cache and no
 * tickets: hush has no resumption either, and a ticket kept by the client would be
 * charged to the connection.
 */
static int tls_init(void)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *cert = X509_new();
	int ok = key != NULL && cert != NULL;
	if (ok) {
		X509_NAME *name = X509_get_subject_name(cert);
		ok = X509_set_version(cert, 2) &&
		     ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) &&
		     X509_gmtime_adj(X509_getm_notBefore(cert), -3600) != NULL &&
		     X509_gmtime_adj(X509_getm_notAfter(cert), 7 * 86400) != NULL &&
		     X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
						(const unsigned char *)"hush-bench", -1, -1, 0) &&
		     X509_set_issuer_name(cert, name) && X509_set_pubkey(cert, key) &&
		     X509_sign(cert, key, EVP_sha256()) > 0;
	}
	tls_server_ctx = SSL_CTX_new(TLS_server_method());
	tls_client_ctx = SSL_CTX_new(TLS_client_method());
	ok = ok && tls_server_ctx != NULL && tls_client_ctx != NULL;
	SSL_CTX *both[] = {tls_server_ctx, tls_client_ctx};
	for (size_t i = 0; ok && i < ARRAY_SIZE(both); i++) {
		ok = SSL_CTX_set_min_proto_version(both[i], TLS1_3_VERSION) &&
		     SSL_CTX_set_max_proto_version(both[i], TLS1_3_VERSION) &&
		     SSL_CTX_set_ciphersuites(both[i], "TLS_AES_128_GCM_SHA256") &&
		     SSL_CTX_set1_groups_list(both[i], "X25519");
		SSL_CTX_set_session_cache_mode(both[i], SSL_SESS_CACHE_OFF);
	}
	ok = ok && SSL_CTX_use_certificate(tls_server_ctx, cert) &&
	     SSL_CTX_use_PrivateKey(tls_server_ctx, key) &&
	     SSL_CTX_check_private_key(tls_server_ctx) &&
	     SSL_CTX_set_num_tickets(tls_server_ctx, 0) &&
	     X509_STORE_add_cert(SSL_CTX_get_cert_store(tls_client_ctx), cert);
	if (ok) {
		SSL_CTX_set_verify(tls_client_ctx, SSL_VERIFY_PEER, NULL);
	}
	X509_free(cert);
	EVP_PKEY_free(key);
	if (!ok) {
		ERR_print_errors_fp(stderr);
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Variant tables                                                                       */
/* ------------------------------------------------------------------------------------ */

/*
 * One row per variant: its name as printed and one function. Connection benchmarks take
 * the function that makes one end of a connection (open); the others take a function
 * that performs n operations (ops), which the harness times.
 */
struct variant {
	const char *name;
	ep_open_fn open;
	int (*ops)(uint64_t n);
};

struct benchmark {
	const char *name;
	const struct variant *variants;
	size_t nvariants;
	void (*run)(const struct benchmark *b, const struct variant *v);
};

/* ------------------------------------------------------------------------------------ */
/* Many connections across two processes: IdleConnMemory and ManyConns                  */
/* ------------------------------------------------------------------------------------ */

/* What one process says about its heap. */
struct mem_report {
	int64_t heap;		/* live bytes: hush + OpenSSL + libevent */
	int64_t buffers;	/* live blocks of at least BENCH_BUFFER_MIN bytes */
	uint64_t pool_retained; /* idle bytes the pool kept, given back by the trim first */
	uint64_t pool_in_use;	/* pool buffers out */
	uint64_t allocs;	/* allocator calls so far: hush + OpenSSL + libevent */
	uint64_t minflt;	/* minor page faults so far (getrusage) */
	int64_t conns;		/* connections alive (server) */
	int64_t failures;	/* connections that failed (server) */
};

/* Fills r; with trim, first hands the pool's retained buffers back to the allocator. */
static void mem_report_fill(struct mem_report *r, struct env *env, int trim)
{
	struct bench_alloc_counts a;
	struct hush_pool_stats st;
	struct rusage ru;
	memset(r, 0, sizeof(*r));
	hush_pool_stats(env->pool, &st);
	r->pool_in_use = st.total.in_use;
	if (trim) {
		r->pool_retained = st.total.bytes_retained;
		hush_pool_trim(env->pool);
	}
	bench_alloc_read(&a);
	r->heap = a.live_bytes;
	r->buffers = a.live_buffers;
	r->allocs = a.allocs;
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		r->minflt = (uint64_t)ru.ru_minflt;
	}
}

/* --- The server: a forked child that echoes everything and reports on request --- */

static struct {
	struct env env;
	ep_open_fn open;
	int64_t conns;
	int64_t failures;
} srv;

static void srv_on_data(struct ep *e, const uint8_t *data, size_t len)
{
	if (e->ops->write(e, data, len) < 0) {
		srv.failures++;
	}
}

static void srv_on_close(struct ep *e)
{
	e->ops->free(e);
	free(e);
	srv.conns--;
}

static const struct ep_cb srv_cb = {NULL, srv_on_data, NULL, srv_on_close};

static void srv_on_accept(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	(void)arg;
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED) {
				continue;
			}
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				srv.failures++;
			}
			return;
		}
		struct ep *e = malloc(sizeof(*e));
		if (e == NULL || tune_socket(fd) < 0) {
			close(fd);
			free(e);
			srv.failures++;
			continue;
		}
		ep_init(e, &srv_cb, NULL);
		if (srv.open(e, &srv.env, fd, 1) < 0) {
			free(e);
			srv.failures++;
			continue;
		}
		srv.conns++;
	}
}

static int write_full(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t k = write(fd, b, n);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			return -1;
		}
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

static int read_full(int fd, void *p, size_t n)
{
	uint8_t *b = p;
	while (n > 0) {
		ssize_t k = read(fd, b, n);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			return -1;
		}
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Commands: 't' trim the pool and report, 's' report, 'q' exit. */
static void srv_on_control(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	(void)arg;
	char cmd;
	if (read(fd, &cmd, 1) != 1 || cmd == 'q') {
		_exit(0);
	}
	struct mem_report r;
	mem_report_fill(&r, &srv.env, cmd == 't');
	r.conns = srv.conns;
	r.failures = srv.failures;
	if (write_full(fd, &r, sizeof(r)) < 0) {
		_exit(1);
	}
}

static void server_main(ep_open_fn open, int lfd, int ctl)
{
	srv.open = open;
	if (env_init(&srv.env, NULL) < 0 || evutil_make_socket_nonblocking(lfd) < 0) {
		_exit(1);
	}
	struct event *lev = event_new(srv.env.base, lfd, EV_READ | EV_PERSIST, srv_on_accept, NULL);
	struct event *cev =
	    event_new(srv.env.base, ctl, EV_READ | EV_PERSIST, srv_on_control, NULL);
	if (lev == NULL || cev == NULL || event_add(lev, NULL) < 0 || event_add(cev, NULL) < 0) {
		_exit(1);
	}
	event_base_dispatch(srv.env.base);
	_exit(0);
}

/* --- The client side: this process --- */

struct session {
	const char *name; /* for messages */
	ep_open_fn open;
	pid_t pid;
	int ctl;
	struct sockaddr_in addr;
	struct env env;
	struct ep *eps; /* never moved: the connections point at their entries */
	long cap;
	long n;	    /* connections opened */
	long ready; /* connections that finished their first exchange */
	long failures;
	uint64_t echo_bytes; /* ManyConns: bytes echoed back to busy connections */
	long in_flight;	     /* ManyConns: busy connections waiting for an echo */
	int draining;	     /* ManyConns: echoes complete without a new message */
};

static uint8_t ping_msg[PING_SIZE];
static uint8_t many_msg[MANY_MSG];

static void cli_on_open(struct ep *e)
{
	struct session *s = e->user;
	if (e->ops->write(e, ping_msg, sizeof(ping_msg)) < 0) {
		s->failures++;
	}
}

static void cli_on_data(struct ep *e, const uint8_t *data, size_t len)
{
	struct session *s = e->user;
	(void)data;
	if (!e->ready) {
		if (e->rx >= PING_SIZE) {
			e->ready = 1;
			s->ready++;
		}
		return;
	}
	s->echo_bytes += len;
	e->busy_rx += len;
	if (e->busy && e->busy_rx >= MANY_MSG) {
		e->busy_rx -= MANY_MSG;
		if (s->draining) {
			e->in_flight = 0;
			s->in_flight--;
		} else if (e->ops->write(e, many_msg, sizeof(many_msg)) < 0) {
			s->failures++;
		}
	}
}

static void cli_on_close(struct ep *e)
{
	struct session *s = e->user;
	s->failures++;
}

static const struct ep_cb cli_cb = {cli_on_open, cli_on_data, NULL, cli_on_close};

/* Forks the server for variant open and prepares this side for up to cap connections. */
static int session_start(struct session *s, const char *name, ep_open_fn open, long cap)
{
	int sv[2];
	memset(s, 0, sizeof(*s));
	s->name = name;
	s->open = open;
	s->pid = -1;
	s->ctl = -1;
	s->cap = cap;
	s->eps = calloc((size_t)cap, sizeof(*s->eps));
	if (s->eps == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		return -1;
	}
	int lfd = listen_loopback(&s->addr, 4096);
	if (lfd < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	fflush(stdout);
	fflush(stderr);
	s->pid = fork();
	if (s->pid == 0) {
		close(sv[0]);
		server_main(open, lfd, sv[1]);
	}
	close(sv[1]);
	close(lfd);
	s->ctl = sv[0];
	if (s->pid < 0 || env_init(&s->env, NULL) < 0) {
		return -1;
	}
	return 0;
}

static int session_ask(struct session *s, char cmd, struct mem_report *r)
{
	if (write_full(s->ctl, &cmd, 1) < 0 || read_full(s->ctl, r, sizeof(*r)) < 0) {
		return -1;
	}
	return 0;
}

/* Runs env's loop until cond holds (0), a failure is counted or ms pass (-1). */
static int session_wait(struct session *s, int (*cond)(const struct session *), int ms)
{
	uint64_t end = bench_now_ns() + (uint64_t)ms * 1000000u;
	while (!cond(s)) {
		if (s->failures > 0 || bench_now_ns() > end) {
			return -1;
		}
		pump(&s->env, 5);
	}
	return 0;
}

static int all_ready(const struct session *s)
{
	return s->ready >= s->n;
}

/* Connections opened and not ready yet, at most. */
#define MAX_IN_FLIGHT 256

static int few_in_flight(const struct session *s)
{
	return s->n - s->ready < MAX_IN_FLIGHT / 2;
}

/* Opens connections until there are target, and waits until each has been through its
 * handshake (if any) and one ping echoed by the server. */
static int session_grow(struct session *s, long target)
{
	while (s->n < target && s->n < s->cap) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&s->addr, sizeof(s->addr)) < 0 ||
		    tune_socket(fd) < 0) {
			fail(s->name, "connection %ld: %s", s->n, strerror(errno));
			if (fd >= 0) {
				close(fd);
			}
			return -1;
		}
		struct ep *e = &s->eps[s->n];
		ep_init(e, &cli_cb, s);
		if (s->open(e, &s->env, fd, 0) < 0) {
			fail(s->name, "connection %ld could not be made", s->n);
			return -1;
		}
		s->n++;
		/* Let handshakes and echoes progress while the rest connect, and keep the
		 * server's accept queue short: a full one drops SYNs, and the kernel retries a
		 * dropped SYN only after a second. */
		if (s->n % 32 == 0) {
			pump(&s->env, 0);
		}
		if (s->n - s->ready >= MAX_IN_FLIGHT &&
		    session_wait(s, few_in_flight, 120000) < 0) {
			break;
		}
	}
	if (session_wait(s, all_ready, 120000) < 0) {
		fail(s->name, "%ld of %ld connections ready, %ld failed", s->ready, s->n,
		     s->failures);
		return -1;
	}
	/* A moment for anything deferred (frees, flushes) on this side. */
	for (int i = 0; i < 4; i++) {
		pump(&s->env, 0);
	}
	return 0;
}

/* Both sides' reports, each pool trimmed first. */
static int session_measure(struct session *s, struct mem_report *srv_r, struct mem_report *cli_r)
{
	if (session_ask(s, 't', srv_r) < 0) {
		fail(s->name, "lost the server process");
		return -1;
	}
	if (srv_r->failures > 0) {
		fail(s->name, "%lld server-side connection failures", (long long)srv_r->failures);
		return -1;
	}
	mem_report_fill(cli_r, &s->env, 1);
	return 0;
}

static void session_end(struct session *s)
{
	/* The server goes first, so its side of each connection closes first and the
	 * client's ephemeral ports do not linger in TIME_WAIT. */
	if (s->pid > 0) {
		char q = 'q';
		int status;
		if (write_full(s->ctl, &q, 1) < 0) {
			kill(s->pid, SIGKILL);
		}
		waitpid(s->pid, &status, 0);
	}
	if (s->ctl >= 0) {
		close(s->ctl);
	}
	for (long i = 0; i < s->n; i++) {
		if (s->eps[i].ops != NULL) {
			s->eps[i].ops->free(&s->eps[i]);
		}
	}
	if (s->env.base != NULL) {
		env_free(&s->env);
	}
	free(s->eps);
	memset(s, 0, sizeof(*s));
}

/* Raises the open-files limit to the hard limit; returns the limit now in force. */
static long raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		return 1024;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : (long)rl.rlim_cur;
}

static long nofile_limit;

/* Most connections one process may hold next to its other descriptors. */
static long max_conns(void)
{
	return nofile_limit - WARM_CONNS - 64;
}

/*
 * IdleConnMemory. The server side runs in a forked child, so each process holds one
 * socket per connection. Each side first opens WARM_CONNS connections and keeps them
 * open: the baseline is taken after them, so one-time costs are not charged to
 * connections (OpenSSL's lazily built algorithm caches and DRBGs, libevent's first map
 * entries, hush's cipher-context cache). Then connections are added up to each N; every
 * one completes its handshake and one 64-byte ping echoed by the server (so its buffers
 * are those of an established, used connection) before both processes report their
 * heap. B/conn is the larger side's growth over its baseline divided by N.
 *
 * Each hush pool is trimmed (hush_pool_trim) before a report: the idle buffers a pool
 * retains for reuse are bounded by its per-tier retention caps and shared by every
 * connection of the process, so they are not a per-connection cost; pool-retained-B says
 * how much the two pools gave back at that trim.
 */
static void idle_run(const struct benchmark *b, const struct variant *v)
{
	static const long full_n[] = {250, 1000, 4000, 8000};
	static const long quick_n[] = {1000, 8000};
	const long *all = opt.quick ? quick_n : full_n;
	size_t nall = opt.quick ? ARRAY_SIZE(quick_n) : ARRAY_SIZE(full_n);
	long ns[ARRAY_SIZE(full_n)];
	size_t k = 0;
	char name[128];

	for (size_t i = 0; i < nall; i++) {
		snprintf(name, sizeof(name), "%s/%s/N=%ld", b->name, v->name, all[i]);
		if (!wanted(name)) {
			continue;
		}
		if (all[i] > max_conns()) {
			fail(name, "needs %ld open files per process; the limit is %ld",
			     all[i] + WARM_CONNS + 64, nofile_limit);
			continue;
		}
		ns[k++] = all[i];
	}
	if (k == 0) {
		return;
	}
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	struct session s;
	struct mem_report srv0, cli0;
	if (session_start(&s, name, v->open, WARM_CONNS + ns[k - 1]) < 0) {
		fail(name, "could not start the server process: %s", strerror(errno));
		session_end(&s);
		return;
	}
	if (session_grow(&s, WARM_CONNS) < 0 || session_measure(&s, &srv0, &cli0) < 0) {
		session_end(&s);
		return;
	}
	for (size_t i = 0; i < k; i++) {
		struct mem_report sr, cr;
		snprintf(name, sizeof(name), "%s/%s/N=%ld", b->name, v->name, ns[i]);
		if (session_grow(&s, WARM_CONNS + ns[i]) < 0 || session_measure(&s, &sr, &cr) < 0) {
			break;
		}
		double n = (double)ns[i];
		double sb = (double)(sr.heap - srv0.heap) / n;
		double cb = (double)(cr.heap - cli0.heap) / n;
		double sbuf = (double)(sr.buffers - srv0.buffers) / n;
		double cbuf = (double)(cr.buffers - cli0.buffers) / n;
		struct bench_metric m[] = {
		    {round(sb > cb ? sb : cb), "B/conn"},
		    {round(sb), "server-B/conn"},
		    {round(cb), "client-B/conn"},
		    {round((sbuf > cbuf ? sbuf : cbuf) * 1000) / 1000, "buffers/conn"},
		    {(double)(sr.pool_retained + cr.pool_retained), "pool-retained-B"},
		};
		report(name, 2, 1, m, ARRAY_SIZE(m));
	}
	session_end(&s);
}

/* What one ManyConns phase (one variant at one connection count) measured. */
struct many_phase {
	double peak, peak_srv, peak_cli; /* heap growth over the baseline, busy (B) */
	double mbps;			 /* echoed bytes received back per second */
	double idle_per_conn;		 /* heap per idle connection, the larger side */
	double idle_buffers;		 /* pool buffers out while idle, both sides */
	double faults_per_s;		 /* minor page faults per second, both sides, busy */
	double allocs_per_s;		 /* allocator calls per second, both sides, busy */
};

/*
 * One variant at one connection count: its server process, its connections on this
 * side, and what they cost. Two variants live side by side in this process, so this
 * side's heap is attributed by difference: only one variant's loop runs at a time, and
 * the heap change across each of its steps is its own.
 */
struct many_side {
	const char *name;
	ep_open_fn open;
	struct session s;
	struct mem_report srv0;	 /* the server's baseline */
	struct mem_report srv_b; /* the server's counters when busy began */
	int64_t cli_heap;	 /* this side's share of the client heap over its baseline */
	int64_t peak, peak_srv, peak_cli;
	uint64_t busy_ns;    /* time its busy connections ran */
	uint64_t cli_faults; /* the client's minor page faults while it ran */
	uint64_t cli_allocs; /* the client's allocator calls while it ran */
	double rate[MANY_MAX_SLICES]; /* echoed bytes per second of each slice */
	int nslices;
	struct many_phase out;
};

static int64_t client_heap(void)
{
	struct bench_alloc_counts a;
	bench_alloc_read(&a);
	return a.live_bytes;
}

/* Starts the server and WARM_CONNS connections and takes the baseline. */
static int many_side_open(struct many_side *d, const char *name, ep_open_fn open, long n)
{
	struct mem_report cli0;
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->open = open;
	if (session_start(&d->s, name, open, WARM_CONNS + n) < 0) {
		fail(name, "could not start the server process: %s", strerror(errno));
		return -1;
	}
	if (session_grow(&d->s, WARM_CONNS) < 0 || session_measure(&d->s, &d->srv0, &cli0) < 0) {
		return -1;
	}
	return 0;
}

/* Opens the other n connections and takes the idle figures (both pools trimmed). */
static int many_side_grow(struct many_side *d, long n)
{
	struct mem_report sr, cr;
	int64_t h0 = client_heap();
	if (session_grow(&d->s, WARM_CONNS + n) < 0 || session_measure(&d->s, &sr, &cr) < 0) {
		return -1;
	}
	d->cli_heap += client_heap() - h0;
	double sb = (double)(sr.heap - d->srv0.heap) / (double)n;
	double cb = (double)d->cli_heap / (double)n;
	d->out.idle_per_conn = round(sb > cb ? sb : cb);
	d->out.idle_buffers = (double)(sr.pool_in_use + cr.pool_in_use);
	for (long i = WARM_CONNS; i < d->s.n; i += MANY_BUSY_EVERY) {
		d->s.eps[i].busy = 1;
	}
	if (session_ask(&d->s, 's', &d->srv_b) < 0) {
		fail(d->name, "lost the server process");
		return -1;
	}
	return 0;
}

/* Samples both processes' heap growth for the peaks. */
static int many_side_sample(struct many_side *d, int64_t h0)
{
	struct mem_report sr;
	if (session_ask(&d->s, 's', &sr) < 0) {
		fail(d->name, "lost the server process");
		return -1;
	}
	int64_t ds = sr.heap - d->srv0.heap;
	int64_t dc = d->cli_heap + client_heap() - h0;
	d->peak = ds + dc > d->peak ? ds + dc : d->peak;
	d->peak_srv = ds > d->peak_srv ? ds : d->peak_srv;
	d->peak_cli = dc > d->peak_cli ? dc : d->peak_cli;
	return 0;
}

/*
 * One slice of the busy phase: every busy connection sends a message and echoes go on
 * for ms; then no new message is sent and the slice ends when every echo is back, so
 * the next slice (of either variant) starts with nothing in flight. The whole slice,
 * the drain too, counts as this variant's busy time.
 */
static int many_side_slice(struct many_side *d, uint64_t ms)
{
	struct session *s = &d->s;
	struct mem_report c0, c1;
	int64_t h0 = client_heap();
	mem_report_fill(&c0, &s->env, 0);
	uint64_t t0 = bench_now_ns(), next = t0, now;
	uint64_t bytes0 = s->echo_bytes;
	long kick = WARM_CONNS;
	s->draining = 0;
	while ((now = bench_now_ns()) - t0 < ms * 1000000u || s->in_flight > 0 || kick < s->n) {
		/* The first messages go out MANY_KICK connections per loop iteration: a write
		 * made outside any callback waits in its buffer for the end of the iteration,
		 * and hundreds of them at once would hold more buffers than the pool keeps
		 * (docs/DESIGN.md), once per slice. */
		for (int k = 0; k < MANY_KICK && kick < s->n && !s->draining;
		     kick += MANY_BUSY_EVERY) {
			struct ep *e = &s->eps[kick];
			if (!e->in_flight) {
				e->in_flight = 1;
				s->in_flight++;
				k++;
				if (e->ops->write(e, many_msg, sizeof(many_msg)) < 0) {
					s->failures++;
				}
			}
		}
		if (s->draining) {
			kick = s->n;
		}
		if (s->failures > 0) {
			fail(d->name, "%ld connections failed while busy", s->failures);
			return -1;
		}
		if (now - t0 >= ms * 1000000u) {
			s->draining = 1;
		}
		if (now - t0 > (ms + 10000) * 1000000u) {
			fail(d->name, "%ld echoes still missing 10 s after the slice",
			     s->in_flight);
			return -1;
		}
		if (now >= next) {
			if (many_side_sample(d, h0) < 0) {
				return -1;
			}
			next = now + 100000000u;
		}
		pump(&s->env, 5);
	}
	uint64_t took = bench_now_ns() - t0;
	d->busy_ns += took;
	if (d->nslices < MANY_MAX_SLICES) {
		d->rate[d->nslices++] = (double)(s->echo_bytes - bytes0) / ((double)took / 1e9);
	}
	if (many_side_sample(d, h0) < 0) {
		return -1;
	}
	mem_report_fill(&c1, &s->env, 0);
	d->cli_faults += c1.minflt - c0.minflt;
	d->cli_allocs += c1.allocs - c0.allocs;
	d->cli_heap += client_heap() - h0;
	return 0;
}

/* The busy figures, once every slice ran. */
static int many_side_finish(struct many_side *d)
{
	struct mem_report sr;
	if (session_ask(&d->s, 's', &sr) < 0) {
		fail(d->name, "lost the server process");
		return -1;
	}
	if (sr.failures > 0) {
		fail(d->name, "%lld server-side connection failures", (long long)sr.failures);
		return -1;
	}
	double secs = (double)d->busy_ns / 1e9;
	d->out.peak = (double)d->peak;
	d->out.peak_srv = (double)d->peak_srv;
	d->out.peak_cli = (double)d->peak_cli;
	d->out.mbps = round((double)d->s.echo_bytes / secs / 1e6 * 10) / 10;
	d->out.faults_per_s = round((double)(sr.minflt - d->srv_b.minflt + d->cli_faults) / secs);
	d->out.allocs_per_s = round((double)(sr.allocs - d->srv_b.allocs + d->cli_allocs) / secs);
	return 0;
}

/*
 * Runs one or two variants (d[0], d[1]) at n connections, each in its own pair of
 * fresh processes, set up as for IdleConnMemory. The idle figures are taken once every
 * connection is established, both pools trimmed (as IdleConnMemory does), and the busy
 * phase then starts from trimmed pools, as make demo's does. Then every 20th connection
 * echoes 16 KiB messages through its server, one message in flight each. With two
 * variants the busy phase alternates between them in slices of 50 ms
 * (which one goes first alternates too), so that load from elsewhere on the machine
 * falls on both alike; their throughputs are compared within one run. Peak heap (B) is
 * the largest, over samples every 100 ms, of both processes' growth over their
 * baselines, pools untrimmed: what the processes really hold.
 */
static int many_phases(struct many_side *d, int nsides, const char *const *names,
		       const ep_open_fn *opens, long n)
{
	uint64_t total_ms = opt.quick ? 500 : 3000;
	uint64_t slice_ms = 50;
	for (int k = 0; k < nsides; k++) {
		if (many_side_open(&d[k], names[k], opens[k], n) < 0) {
			return -1;
		}
	}
	for (int k = 0; k < nsides; k++) {
		if (many_side_grow(&d[k], n) < 0) {
			return -1;
		}
	}
	for (uint64_t i = 0; i < total_ms / slice_ms; i++) {
		for (int j = 0; j < nsides; j++) {
			int k = (i % 2 == 0) ? j : nsides - 1 - j;
			if (many_side_slice(&d[k], slice_ms) < 0) {
				return -1;
			}
		}
	}
	for (int k = 0; k < nsides; k++) {
		if (many_side_finish(&d[k]) < 0) {
			return -1;
		}
	}
	return 0;
}

static void many_report(const char *name, const struct many_phase *p)
{
	struct bench_metric m[] = {
	    {p->peak, "B"},
	    {p->mbps, "MB/s"},
	    {p->peak_srv, "server-B"},
	    {p->peak_cli, "client-B"},
	    {p->idle_per_conn, "idle-B/conn"},
	    {p->idle_buffers, "idle-buffers"},
	    {p->faults_per_s, "faults/s"},
	    {p->allocs_per_s, "allocs/s"},
	};
	report(name, 2, 1, m, ARRAY_SIZE(m));
}

/* hush's pinned mode, measured beside hush-native at each connection count. */
static const struct variant many_pinned = {"hush-pinned", open_hush_pinned, NULL};

/*
 * ManyConns: many_phases at each connection count. hush-native (ready-read) runs with
 * hush-pinned beside it, and a third row, native-vs-pinned, compares their echo
 * throughputs: within a repetition, the median over the busy phase's slice pairs (each
 * a slice of one and the adjacent slice of the other) of ready-read's rate over
 * pinned's; across repetitions, x is the median of that and min-x the lowest. Which of
 * the two starts alternates from one repetition to the next. OpenSSL's handshakes make its
 * phases slow, so it runs at the largest count only.
 */
static void many_run(const struct benchmark *b, const struct variant *v)
{
	static const long full_n[] = {1000, 3000, 5000, 7000, 9000};
	static const long quick_n[] = {1000, 9000};
	static unsigned pair_runs;
	const long *all = opt.quick ? quick_n : full_n;
	size_t nall = opt.quick ? ARRAY_SIZE(quick_n) : ARRAY_SIZE(full_n);
	const struct variant *beside = v->open == open_hush ? &many_pinned : NULL;
	bool pinned_first = beside != NULL && (pair_runs++ % 2) == 1;

	for (size_t i = 0; i < nall; i++) {
		long n = all[i];
		char name[128], bname[128], rname[128];
		if (beside == NULL && i + 1 < nall) {
			continue;
		}
		snprintf(name, sizeof(name), "%s/%s/N=%ld", b->name, v->name, n);
		snprintf(bname, sizeof(bname), "%s/%s/N=%ld", b->name,
			 beside != NULL ? beside->name : "", n);
		snprintf(rname, sizeof(rname), "%s/native-vs-pinned/N=%ld", b->name, n);
		bool want_ratio = beside != NULL && wanted(rname);
		bool want_v = want_ratio || wanted(name);
		bool want_b = beside != NULL && (want_ratio || wanted(bname));
		if (!want_v && !want_b) {
			continue;
		}
		if (n > max_conns()) {
			fail(name, "needs %ld open files per process; the limit is %ld",
			     n + WARM_CONNS + 64, nofile_limit);
			continue;
		}
		/* d[iv] is v, d[!iv] the variant beside it. */
		struct many_side d[2];
		const char *names[2];
		ep_open_fn opens[2];
		int nsides = 0, iv = -1, ib = -1;
		if (want_b && pinned_first) {
			ib = nsides++;
		}
		if (want_v) {
			iv = nsides++;
		}
		if (want_b && !pinned_first) {
			ib = nsides++;
		}
		if (iv >= 0) {
			names[iv] = name;
			opens[iv] = v->open;
		}
		if (ib >= 0) {
			names[ib] = bname;
			opens[ib] = beside->open;
		}
		memset(d, 0, sizeof(d));
		int rc = many_phases(d, nsides, names, opens, n);
		for (int k = 0; k < nsides; k++) {
			if (d[k].name != NULL) { /* opened, if only in part */
				session_end(&d[k].s);
			}
		}
		if (rc < 0) {
			continue;
		}
		if (iv >= 0) {
			many_report(name, &d[iv].out);
		}
		if (ib >= 0) {
			many_report(bname, &d[ib].out);
		}
		if (want_ratio && d[iv].nslices == d[ib].nslices && d[iv].nslices > 0) {
			/* Slice by slice: a burst of load from elsewhere hits one slice of one
			 * variant, and the median leaves it out. */
			double r[MANY_MAX_SLICES];
			for (int k = 0; k < d[iv].nslices; k++) {
				r[k] = d[iv].rate[k] / d[ib].rate[k];
			}
			double x = round(median(r, (size_t)d[iv].nslices) * 1000) / 1000;
			struct bench_metric m[] = {{x, "x"}, {x, "min-x"}};
			report(rname, 2, 1, m, ARRAY_SIZE(m));
		}
	}
}

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
		pump(&d->env[i], 0);
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
		pump(&d->env[i], 0);
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
		pump(&d->env[0], 0);
		pump(&d->env[1], 0);
	}
	/* One message each way, as an established, used connection. */
	if (duo_send(d, 0, ping_msg, PING_SIZE) < 0 || duo_send(d, 1, ping_msg, PING_SIZE) < 0) {
		return -1;
	}
	return 0;
}

static uint64_t target_ns(void)
{
	return opt.quick ? 100000000ull : 1000000000ull;
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
		fail(name, "could not establish the connection");
		duo_free(&d);
		return;
	}
	/* Warm-up: fill the pools and free lists every variant keeps. */
	for (int i = 0; i < 200; i++) {
		if (duo_send(&d, 0, msg, sizeof(msg)) < 0) {
			fail(name, "warm-up failed");
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
			fail(name, "a message was lost");
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

/* ------------------------------------------------------------------------------------ */
/* One connection, each end on its own thread: LargeMessage, PingPong                    */
/* ------------------------------------------------------------------------------------ */

struct pair;

struct pair_thread {
	struct pair *p;
	struct env *env;
	_Atomic int exited;
};

struct pair {
	struct hush_pool *pool; /* shared by both threads' loops */
	struct env env[2];	/* [0] client (drives the benchmark), [1] server */
	struct ep ep[2];
	pthread_t th[2];
	int started[2];
	struct pair_thread arg[2];
	struct event *check; /* on env[1]: the sender stopped, compare counts */
	uint64_t target;
	_Atomic int done;	/* 1 finished, -1 failed */
	uint64_t t0, t1;	/* the timed part, on the monotonic clock */
	uint64_t count;		/* PingPong: round trips in the timed part */
	uint64_t pending;	/* PingPong: bytes of the current echo received */
	uint64_t warm;		/* PingPong: untimed round trips left */
	uint64_t sent;		/* LargeMessage: bulk bytes queued by the sender */
	int stopping;		/* LargeMessage: the sender is done sending */
	uint64_t ping_rx;	/* LargeMessage, server: ping bytes seen */
	uint64_t bulk_rx;	/* LargeMessage, server: bulk bytes received */
	_Atomic uint64_t total; /* LargeMessage: bytes sent in all, once stopping */
};

static void pair_finish(struct pair *p, int how)
{
	int expected = 0;
	atomic_compare_exchange_strong(&p->done, &expected, how);
	event_base_loopbreak(p->env[0].base);
	event_base_loopbreak(p->env[1].base);
}

static void pair_on_close(struct ep *e)
{
	pair_finish(e->user, -1);
}

static void *pair_thread(void *arg)
{
	struct pair_thread *t = arg;
	while (atomic_load(&t->p->done) == 0) {
		event_base_loop(t->env->base, EVLOOP_NO_EXIT_ON_EMPTY);
	}
	atomic_store(&t->exited, 1);
	return NULL;
}

static void pair_free(struct pair *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->ep[i].ops != NULL) {
			p->ep[i].ops->free(&p->ep[i]);
		}
	}
	if (p->check != NULL) {
		event_free(p->check);
	}
	for (int i = 0; i < 2; i++) {
		if (p->env[i].base != NULL) {
			env_free(&p->env[i]);
		}
	}
	hush_pool_free(p->pool);
}

/*
 * Connects the two ends (cb[0] for the client, cb[1] for the server), runs each on its
 * own thread until pair_finish, for at most 60 s. Returns 0 when the benchmark finished.
 */
static int pair_run(struct pair *p, ep_open_fn open, const struct ep_cb *cb0,
		    const struct ep_cb *cb1, void (*check)(evutil_socket_t, short, void *))
{
	int fds[2];
	if (hush_pool_new(&p->pool, NULL) < 0 || env_init(&p->env[0], p->pool) < 0 ||
	    env_init(&p->env[1], p->pool) < 0 || tcp_pair(fds) < 0) {
		return -1;
	}
	if (check != NULL) {
		p->check = event_new(p->env[1].base, -1, 0, check, p);
		if (p->check == NULL) {
			close(fds[0]);
			close(fds[1]);
			return -1;
		}
	}
	ep_init(&p->ep[0], cb0, p);
	ep_init(&p->ep[1], cb1, p);
	/* Both ends are made here, before their threads start; from then on each is used
	 * only by the thread running its base. */
	if (open(&p->ep[1], &p->env[1], fds[1], 1) < 0) {
		close(fds[0]);
		return -1;
	}
	if (open(&p->ep[0], &p->env[0], fds[0], 0) < 0) {
		return -1;
	}
	for (int i = 0; i < 2; i++) {
		p->arg[i].p = p;
		p->arg[i].env = &p->env[i];
		p->started[i] = pthread_create(&p->th[i], NULL, pair_thread, &p->arg[i]) == 0;
		if (!p->started[i]) {
			pair_finish(p, -1);
		}
	}
	uint64_t end = bench_now_ns() + 60000000000ull;
	while (atomic_load(&p->done) == 0 && bench_now_ns() < end) {
		usleep(2000);
	}
	/* A loop that had not started when it was told to break would miss it: repeat. */
	for (int i = 0; i < 2; i++) {
		while (p->started[i] && !atomic_load(&p->arg[i].exited)) {
			pair_finish(p, -1); /* no effect on done when already finished */
			usleep(1000);
		}
		if (p->started[i]) {
			pthread_join(p->th[i], NULL);
		}
	}
	return atomic_load(&p->done) == 1 ? 0 : -1;
}

/* --- PingPong --- */

#define PP_WARM 200

/* The client's first message, and PingPong's every one. */
static void pair_send_ping(struct ep *e)
{
	if (e->ops->write(e, ping_msg, PING_SIZE) < 0) {
		pair_finish(e->user, -1);
	}
}

static void pp_client_data(struct ep *e, const uint8_t *data, size_t len)
{
	struct pair *p = e->user;
	(void)data;
	p->pending += len;
	if (p->pending < PING_SIZE) {
		return;
	}
	p->pending -= PING_SIZE;
	if (p->warm > 0) {
		if (--p->warm == 0) {
			p->t0 = bench_now_ns();
		}
	} else if (++p->count % 64 == 0) {
		uint64_t now = bench_now_ns();
		if (now - p->t0 >= p->target) {
			p->t1 = now;
			pair_finish(p, 1);
			return;
		}
	}
	pair_send_ping(e);
}

static void pp_server_data(struct ep *e, const uint8_t *data, size_t len)
{
	if (e->ops->write(e, data, len) < 0) {
		pair_finish(e->user, -1);
	}
}

static const struct ep_cb pp_client_cb = {pair_send_ping, pp_client_data, NULL, pair_on_close};
static const struct ep_cb pp_server_cb = {NULL, pp_server_data, NULL, pair_on_close};

/*
 * PingPong: the client sends 64 bytes, the server echoes them, the client sends again
 * when the echo is in: round trips per second over one loopback TCP connection, each end
 * on its own thread and event_base.
 */
static void pingpong_run(const struct benchmark *b, const struct variant *v)
{
	char name[128];
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	if (!wanted(name)) {
		return;
	}
	struct pair p;
	memset(&p, 0, sizeof(p));
	p.target = target_ns();
	p.warm = PP_WARM;
	if (pair_run(&p, v->open, &pp_client_cb, &pp_server_cb, NULL) < 0) {
		fail(name, "the connection failed or stalled");
	} else {
		double secs = (double)(p.t1 - p.t0) / 1e9;
		struct bench_metric m[] = {
		    {round((double)p.count / secs), "round-trips/s"},
		    {round((double)(p.t1 - p.t0) / (double)p.count), "ns/op"},
		};
		report(name, 2, p.count, m, ARRAY_SIZE(m));
	}
	pair_free(&p);
}

/* --- LargeMessage --- */

static uint8_t *large_msg;

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
 * Grows n until one call of fn(n) lasts target ns, as Go's testing package does, after a
 * warm-up call; *delta holds the allocations of the last, timed call.
 */
static int time_ops(int (*fn)(uint64_t n), uint64_t target, uint64_t *n_out, uint64_t *ns_out,
		    struct bench_alloc_counts *delta)
{
	uint64_t n = 1;
	if (fn(1) < 0) {
		return -1;
	}
	for (;;) {
		struct bench_alloc_counts a0, a1;
		bench_alloc_read(&a0);
		uint64_t t0 = bench_now_ns();
		if (fn(n) < 0) {
			return -1;
		}
		uint64_t ns = bench_now_ns() - t0;
		bench_alloc_read(&a1);
		if (ns >= target || n >= 1000000000ull) {
			*n_out = n;
			*ns_out = ns;
			delta->allocs = a1.allocs - a0.allocs;
			delta->bytes = a1.bytes - a0.bytes;
			return 0;
		}
		double grow = ns == 0 ? 100.0 : 1.2 * (double)target / (double)ns;
		grow = grow < 2.0 ? 2.0 : grow > 100.0 ? 100.0 : grow;
		n = (uint64_t)((double)n * grow);
	}
}

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

/* ------------------------------------------------------------------------------------ */
/* Handshake                                                                            */
/* ------------------------------------------------------------------------------------ */

/* Steps one end's handshake: 1 done, 0 waiting for the peer, -1 failed. */
static int tls_step(SSL *ssl)
{
	int rc = SSL_do_handshake(ssl);
	if (rc == 1) {
		return 1;
	}
	int err = SSL_get_error(ssl, rc);
	return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/*
 * n full TLS 1.3 handshakes (X25519, ECDSA P-256, verified by the client; no tickets, no
 * resumption) between two SSL objects made for each, over one AF_UNIX socketpair, both
 * ends stepped in turn on this thread.
 */
static int hs_openssl_tls13(uint64_t n)
{
	int sv[2];
	int rc = 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		return -1;
	}
	if (evutil_make_socket_nonblocking(sv[0]) < 0 ||
	    evutil_make_socket_nonblocking(sv[1]) < 0) {
		rc = -1;
	}
	for (uint64_t i = 0; i < n && rc == 0; i++) {
		SSL *c = SSL_new(tls_client_ctx);
		SSL *s = SSL_new(tls_server_ctx);
		int dc = 0, ds = 0;
		if (c == NULL || s == NULL || !SSL_set_fd(c, sv[0]) || !SSL_set_fd(s, sv[1])) {
			rc = -1;
		} else {
			SSL_set_connect_state(c);
			SSL_set_accept_state(s);
			/* A TLS 1.3 full handshake takes three flights. */
			for (int k = 0; k < 8 && (dc != 1 || ds != 1) && dc >= 0 && ds >= 0; k++) {
				dc = dc == 1 ? 1 : tls_step(c);
				ds = ds == 1 ? 1 : tls_step(s);
			}
			if (dc != 1 || ds != 1) {
				ERR_print_errors_fp(stderr);
				rc = -1;
			}
		}
		SSL_free(c);
		SSL_free(s);
	}
	close(sv[0]);
	close(sv[1]);
	return rc;
}

/*
 * Moves one end's pending handshake bytes to the other through the socket: writes what
 * `from` has to send on wfd, reads it on rfd and feeds it to `to`. Returns -1 on a
 * failure.
 */
static int hush_hs_pass(struct hush_handshake *from, int wfd, struct hush_handshake *to,
			int rfd)
{
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t n, used;
	if (hush_handshake_next(from, buf, sizeof(buf), &n) != 0 ||
	    write(wfd, buf, n) != (ssize_t)n || read(rfd, buf, n) != (ssize_t)n) {
		return -1;
	}
	return hush_handshake_read(to, buf, n, &used) == 0 && used == n ? 0 : -1;
}

/* Static keys made once, like the TLS variant's certificate. */
static struct hush_keypair *hs_kp_client;
static struct hush_keypair *hs_kp_server;
static uint8_t hs_pub_client[HUSH_KEY_SIZE];
static uint8_t hs_pub_server[HUSH_KEY_SIZE];
static uint8_t hs_psk[HUSH_KEY_SIZE];

/*
 * n full hush handshakes of protocol p (fresh ephemeral keys each, static keys verified
 * against an allow-list, record keys derived), both ends stepped in turn on this thread
 * over one AF_UNIX socketpair, as the TLS variant does.
 */
static int hs_hush(uint64_t n, enum hush_noise_protocol p)
{
	if (hs_kp_client == NULL) {
		if (hush_keypair_generate(&hs_kp_client) != 0 ||
		    hush_keypair_generate(&hs_kp_server) != 0) {
			return -1;
		}
		hush_keypair_public(hs_kp_client, hs_pub_client);
		hush_keypair_public(hs_kp_server, hs_pub_server);
		memset(hs_psk, 0x42, sizeof(hs_psk));
	}
	struct hush_handshake_config cc, sc;
	hush_handshake_config_init(&cc);
	hush_handshake_config_init(&sc);
	cc.protocol = sc.protocol = p;
	if (p == HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256) {
		cc.psk = sc.psk = hs_psk;
	} else {
		cc.keypair = hs_kp_client;
		sc.keypair = hs_kp_server;
		cc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])hs_pub_server;
		sc.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])hs_pub_client;
		cc.n_allowed_peers = sc.n_allowed_peers = 1;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		return -1;
	}
	int rc = 0;
	for (uint64_t i = 0; i < n && rc == 0; i++) {
		struct hush_handshake *c = NULL, *s = NULL;
		if (hush_handshake_new(&c, &cc, HUSH_SIDE_CLIENT) != 0 ||
		    hush_handshake_new(&s, &sc, HUSH_SIDE_SERVER) != 0) {
			rc = -1;
		}
		while (rc == 0 && !(hush_handshake_done(c) && hush_handshake_done(s))) {
			if (hush_handshake_wants_write(c)) {
				rc = hush_hs_pass(c, sv[0], s, sv[1]);
			} else if (hush_handshake_wants_write(s)) {
				rc = hush_hs_pass(s, sv[1], c, sv[0]);
			} else {
				rc = -1;
			}
		}
		struct hush_handshake_result res;
		if (rc == 0 && hush_handshake_result(c, &res) != 0) {
			rc = -1;
		}
		hush_handshake_result_wipe(&res);
		hush_handshake_free(c);
		hush_handshake_free(s);
	}
	close(sv[0]);
	close(sv[1]);
	return rc;
}

static int hs_hush_xx(uint64_t n)
{
	return hs_hush(n, HUSH_NOISE_XX_25519_AESGCM_SHA256);
}

static int hs_hush_nnpsk0(uint64_t n)
{
	return hs_hush(n, HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256);
}

/* Handshake: full handshakes per second with both ends on one thread (one core). */
static void handshake_run(const struct benchmark *b, const struct variant *v)
{
	char name[128];
	snprintf(name, sizeof(name), "%s/%s", b->name, v->name);
	if (!wanted(name)) {
		return;
	}
	uint64_t n, ns;
	struct bench_alloc_counts d;
	if (time_ops(v->ops, target_ns(), &n, &ns, &d) < 0) {
		fail(name, "a handshake failed");
		return;
	}
	struct bench_metric m[] = {
	    {round((double)n / (double)ns * 1e9), "handshakes/s"},
	    {round((double)ns / (double)n), "ns/op"},
	    {round((double)d.bytes / (double)n), "B/op"},
	    {round((double)d.allocs / (double)n * 10) / 10, "allocs/op"},
	};
	report(name, 1, n, m, ARRAY_SIZE(m));
}

/* ------------------------------------------------------------------------------------ */
/* Pool                                                                                 */
/* ------------------------------------------------------------------------------------ */

#define POOL_SIZE 16384 /* one record's buffer, the size the transport borrows most */

static struct hush_pool *bench_pool;
/* malloc is not hooked: its variant counts its own calls. */
static _Atomic uint64_t malloc_calls;
static volatile uint8_t sink;

static int pool_ops_hush(uint64_t n)
{
	uint8_t acc = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct hush_buf *buf;
		if (hush_pool_acquire(bench_pool, POOL_SIZE, &buf) != 0) {
			return -1;
		}
		uint8_t *p = hush_buf_data(buf);
		p[0] = (uint8_t)i;
		p[POOL_SIZE - 1] = (uint8_t)i;
		acc ^= p[0];
		hush_buf_release(buf);
	}
	sink = acc;
	return 0;
}

static int pool_ops_malloc(uint64_t n)
{
	uint8_t acc = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint8_t *p = malloc(POOL_SIZE);
		if (p == NULL) {
			return -1;
		}
		p[0] = (uint8_t)i;
		p[POOL_SIZE - 1] = (uint8_t)i;
		acc ^= p[0];
		free(p);
	}
	atomic_fetch_add(&malloc_calls, n);
	sink = acc;
	return 0;
}

static _Atomic int pool_failed;

static void pool_thread(void *arg, uint64_t n)
{
	const struct variant *v = arg;
	if (v->ops(n) < 0) {
		atomic_store(&pool_failed, 1);
	}
}

/*
 * Pool: one acquire and release of a 16 KiB buffer from hush's pool (default tiers),
 * against malloc and free of the same size, on 1 and 2 threads sharing the pool. ns/op
 * is wall time over the operations of one thread; allocs/op and B/op count every
 * allocator call of all threads over all operations. benchmarks/bench-pool covers
 * every tier.
 */
static void pool_run(const struct benchmark *b, const struct variant *v)
{
	for (int threads = 1; threads <= 2; threads++) {
		char name[128];
		snprintf(name, sizeof(name), "%s/%s/threads=%d", b->name, v->name, threads);
		if (!wanted(name)) {
			continue;
		}
		if (bench_pool == NULL && hush_pool_new(&bench_pool, NULL) < 0) {
			fail(name, "hush_pool_new failed");
			return;
		}
		void *args[2] = {(void *)v, (void *)v};
		uint64_t n = 1000, ns = 0;
		struct bench_alloc_counts d;
		uint64_t calls0 = 0;
		atomic_store(&pool_failed, 0);
		/* Warm-up: fills the pool's free lists (and malloc's). */
		if (bench_run_threads(threads, pool_thread, args, 1000, &ns, &d) < 0) {
			fail(name, "could not start threads");
			return;
		}
		for (;;) {
			calls0 = atomic_load(&malloc_calls);
			if (bench_run_threads(threads, pool_thread, args, n, &ns, &d) < 0) {
				fail(name, "could not start threads");
				return;
			}
			if (ns >= target_ns() / 2 || n >= 1000000000ull) {
				break;
			}
			double grow = ns == 0 ? 100.0 : 0.6 * (double)target_ns() / (double)ns;
			grow = grow < 2.0 ? 2.0 : grow > 100.0 ? 100.0 : grow;
			n = (uint64_t)((double)n * grow);
		}
		if (atomic_load(&pool_failed)) {
			fail(name, "an allocation failed");
			return;
		}
		uint64_t mallocs = atomic_load(&malloc_calls) - calls0;
		double ops = (double)n * threads;
		struct bench_metric m[] = {
		    {round((double)ns / (double)n * 10) / 10, "ns/op"},
		    {round((double)(d.bytes + mallocs * POOL_SIZE) / ops), "B/op"},
		    {round((double)(d.allocs + mallocs) / ops * 1000) / 1000, "allocs/op"},
		};
		report(name, threads, n, m, ARRAY_SIZE(m));
	}
}

/* ------------------------------------------------------------------------------------ */
/* The tables                                                                           */
/* ------------------------------------------------------------------------------------ */

static const struct variant idle_variants[] = {
    {"hush-native", open_hush, NULL},		     /* ready-read: buffers only while busy */
    {"hush-bufferevent", open_hush_bev, NULL},	     /* hush_bufferevent_socket_new */
    {"hush-bufferevent-xx", open_hush_bev_xx, NULL},  /* the same, after an XX handshake */
    {"hush-pinned", open_hush_pinned, NULL},	     /* buffers and contexts for life */
    {"openssl-tls", open_tls, NULL},		     /* OpenSSL's defaults */
    {"openssl-tls-release", open_tls_release, NULL}, /* SSL_MODE_RELEASE_BUFFERS */
    {"plain-bufferevent", open_plain, NULL},	     /* no crypto at all */
};

static const struct variant rw_variants[] = {
    {"hush", open_hush, NULL},
    {"hush-pinned", open_hush_pinned, NULL},
    {"openssl-tls", open_tls, NULL},
};

static const struct variant large_variants[] = {
    {"hush", open_hush, NULL},
    {"hush-bufferevent", open_hush_bev, NULL},
    {"openssl-tls", open_tls, NULL},
    {"aes-gcm-limit", NULL, aead_limit_ops},
};

static const struct variant pingpong_variants[] = {
    {"hush", open_hush, NULL},
    {"hush-bufferevent", open_hush_bev, NULL},
    {"openssl-tls", open_tls, NULL},
    {"plain-bufferevent", open_plain, NULL},
};

static const struct variant handshake_variants[] = {
    {"hush-xx", NULL, hs_hush_xx},
    {"hush-nnpsk0", NULL, hs_hush_nnpsk0},
    {"openssl-tls13", NULL, hs_openssl_tls13},
};

static const struct variant pool_variants[] = {
    {"hush-pool", NULL, pool_ops_hush},
    {"malloc", NULL, pool_ops_malloc},
};

static const struct variant many_variants[] = {
    {"hush-native", open_hush, NULL}, /* with hush-pinned beside it (many_run) */
    {"openssl-tls", open_tls, NULL},
};

static const struct benchmark benchmarks[] = {
    {"IdleConnMemory", idle_variants, ARRAY_SIZE(idle_variants), idle_run},
    {"ReadMemoryUsage", rw_variants, ARRAY_SIZE(rw_variants), read_run},
    {"WriteMemoryUsage", rw_variants, ARRAY_SIZE(rw_variants), write_run},
    {"LargeMessage", large_variants, ARRAY_SIZE(large_variants), large_run},
    {"PingPong", pingpong_variants, ARRAY_SIZE(pingpong_variants), pingpong_run},
    {"Handshake", handshake_variants, ARRAY_SIZE(handshake_variants), handshake_run},
    {"Pool", pool_variants, ARRAY_SIZE(pool_variants), pool_run},
    {"ManyConns", many_variants, ARRAY_SIZE(many_variants), many_run},
};

struct job {
	const struct benchmark *b;
	const struct variant *v;
};

static void run_job(const void *arg)
{
	const struct job *j = arg;
	j->b->run(j->b, j->v);
}

static void usage(void)
{
	fprintf(stderr, "usage: hush-bench [--quick] [--count N] [--filter REGEX] [--json] "
			"[--plot FILE] | --list\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (bench_alloc_install() < 0) {
		die("cannot hook OpenSSL's allocator");
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--quick") == 0) {
			opt.quick = 1;
		} else if (strcmp(a, "--json") == 0) {
			opt.json = 1;
		} else if (strcmp(a, "--count") == 0 && i + 1 < argc) {
			opt.count = atoi(argv[++i]);
			if (opt.count < 1 || opt.count > 100) {
				die("--count takes 1 to 100");
			}
		} else if (strcmp(a, "--filter") == 0 && i + 1 < argc) {
			int rc = regcomp(&opt.filter, argv[++i], REG_EXTENDED | REG_NOSUB);
			if (rc != 0) {
				char msg[256];
				regerror(rc, &opt.filter, msg, sizeof(msg));
				fprintf(stderr, "hush-bench: --filter: %s\n", msg);
				return 2;
			}
			opt.has_filter = 1;
		} else if (strcmp(a, "--plot") == 0 && i + 1 < argc) {
			opt.plot = argv[++i];
		} else if (strcmp(a, "--list") == 0) {
			/* The benchmark and variant names, for scripts that check documents
			 * against them (test/docs/check-readme.py); runs nothing. */
			for (size_t b = 0; b < ARRAY_SIZE(benchmarks); b++) {
				for (size_t k = 0; k < benchmarks[b].nvariants; k++) {
					printf("%s/%s\n", benchmarks[b].name,
					       benchmarks[b].variants[k].name);
				}
			}
			return 0;
		} else {
			usage();
		}
	}
	/* Cross-thread wake-ups (PingPong, LargeMessage) need libevent's locking. */
	if (evthread_use_pthreads() < 0) {
		die("evthread_use_pthreads failed");
	}
	signal(SIGPIPE, SIG_IGN);
	nofile_limit = raise_nofile();
	large_msg = malloc(LARGE_SIZE);
	if (large_msg == NULL || RAND_bytes(hush_key, sizeof(hush_key)) != 1 ||
	    RAND_bytes(large_msg, LARGE_SIZE) != 1) {
		die("set-up failed");
	}
	memset(ping_msg, 'p', sizeof(ping_msg));
	memset(many_msg, 'm', sizeof(many_msg));
	if (tls_init() < 0) {
		die("could not set up TLS");
	}
	print_header();
	uint64_t start = bench_now_ns();
	for (size_t i = 0; i < ARRAY_SIZE(benchmarks); i++) {
		for (size_t k = 0; k < benchmarks[i].nvariants; k++) {
			struct job j = {&benchmarks[i], &benchmarks[i].variants[k]};
			repeat(run_job, &j);
		}
	}
	if (opt.json) {
		print_json();
	}
	if (opt.plot != NULL && plot_write(opt.plot) < 0) {
		failures++;
	}
	fprintf(stderr, "hush-bench: %zu results in %.1f s%s\n", final_results.n,
		(double)(bench_now_ns() - start) / 1e9, failures ? ", with failures" : "");
	hush_pool_free(bench_pool);
	SSL_CTX_free(tls_server_ctx);
	SSL_CTX_free(tls_client_ctx);
	free(large_msg);
	free(final_results.v);
	if (opt.has_filter) {
		regfree(&opt.filter);
	}
	return failures ? 1 : 0;
}
