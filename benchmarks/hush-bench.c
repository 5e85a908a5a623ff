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
 *  - LargeMessage: throughput of 1 MiB messages, sender and receiver on their own threads,
 *    beside three limits measured in the same run: aes-gcm-limit (one core sealing 16 KiB
 *    records), raw-socket (plain loopback TCP, 64 KiB reads) and bound (1 / (1/raw-socket
 *    + 1/aes-gcm-limit), a sender sealing on one core over that wire).
 *  - PingPong: round trips of 64-byte messages, each end on its own thread.
 *  - Handshake: full handshakes per second, both ends on one thread, with the allocations
 *    of both ends per handshake; x25519-limit is X25519's own speed divided by the 8
 *    operations of an XX handshake (and by 4 for NNpsk0, as nnpsk0-handshakes/s);
 *    evp-floor is every OpenSSL call an XX handshake needs (hashes, HMACs, new key, DH,
 *    AEAD) on contexts made once, whose allocs/op is the fewest any XX on this OpenSSL
 *    can make.
 *  - Pool: one 16 KiB acquire and release, against malloc and free, on 1, 2 and 4
 *    threads.
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
 *
 * Files: this one holds the options, the repetitions and their output, the Pool group
 * (its loop is benchlib's bench_pool_measure, shared with bench-pool) and main;
 * hush-bench.h what the parts share; bench-endpoints.c the event loops, sockets and one
 * endpoint per variant; bench-manyconns.c IdleConnMemory and ManyConns; bench-memory.c
 * ReadMemoryUsage and WriteMemoryUsage; bench-pingpong.c the two-thread harness and
 * PingPong; bench-large.c LargeMessage; bench-handshake.c Handshake; bench-plot.c --plot.
 */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "hush-bench.h"

/* ------------------------------------------------------------------------------------ */
/* Options, results and output                                                          */
/* ------------------------------------------------------------------------------------ */

struct bench_options opt = {0, 1, 0, NULL, 0, {0}};

/* What the running repetition reported, and the medians of every finished benchmark. */
static struct result_list run_results;
struct result_list final_results;
static int failures;

void die(const char *what)
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

void bench_fail(const char *name, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "hush-bench: %s: ", name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	failures++;
}

int wanted(const char *name)
{
	return !opt.has_filter || regexec(&opt.filter, name, 0, NULL, 0) == 0;
}

void report(const char *name, int procs, uint64_t n, const struct bench_metric *m, size_t nm)
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

double median(double *v, size_t n)
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

void cpu_model(char *out, size_t cap)
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

uint8_t ping_msg[PING_SIZE];
uint8_t many_msg[MANY_MSG];
uint8_t *large_msg;

uint64_t target_ns(void)
{
	return opt.quick ? 100000000ull : 1000000000ull;
}

int time_ops(int (*fn)(uint64_t n), uint64_t target, uint64_t *n_out, uint64_t *ns_out,
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

/* ------------------------------------------------------------------------------------ */
/* Pool                                                                                 */
/* ------------------------------------------------------------------------------------ */

#define POOL_SIZE 16384 /* one record's buffer, the size the transport borrows most */

static struct hush_pool *pool_shared;

/*
 * Pool: one acquire and release of a 16 KiB buffer from hush's pool (default tiers),
 * against malloc and free of the same size, on 1, 2 and 4 threads sharing the pool (4
 * threads on a 2-core machine show what preemption in the middle of an operation costs:
 * a thread holding a lock may be switched out). ns/op
 * is wall time over the operations of one thread; cpu-ns/op is the process's CPU time
 * over the operations of all threads, the cost of one operation whatever the number of
 * cores (wall time at 4 threads on 2 cores is at least twice that at 1); allocs/op and B/op count every
 * allocator call of all threads over all operations. The loop is benchlib's
 * bench_pool_measure, which benchmarks/bench-pool runs over every tier.
 */
static void pool_run(const struct benchmark *b, const struct variant *v)
{
	static const int thread_counts[] = {1, 2, 4};
	for (size_t t = 0; t < ARRAY_SIZE(thread_counts); t++) {
		int threads = thread_counts[t];
		char name[128];
		snprintf(name, sizeof(name), "%s/%s/threads=%d", b->name, v->name, threads);
		if (!wanted(name)) {
			continue;
		}
		if (pool_shared == NULL && hush_pool_new(&pool_shared, NULL) < 0) {
			bench_fail(name, "hush_pool_new failed");
			return;
		}
		struct bench_pool_case c;
		memset(&c, 0, sizeof(c));
		c.kind = strcmp(v->name, "malloc") == 0 ? BENCH_POOL_MALLOC : BENCH_POOL_HUSH;
		c.pool = pool_shared;
		c.threads = threads;
		for (size_t k = 0; k < BENCH_POOL_SEQ; k++) {
			c.seq[k] = POOL_SIZE;
		}
		struct bench_pool_result r;
		if (bench_pool_measure(&c, 1000, target_ns() / 2, &r) < 0) {
			bench_fail(name, "an allocation failed or the threads could not start");
			return;
		}
		double ops = (double)r.n * threads;
		struct bench_metric m[] = {
		    {round((double)r.ns / (double)r.n * 10) / 10, "ns/op"},
		    {round((double)r.cpu_ns / ops * 10) / 10, "cpu-ns/op"},
		    {round((double)r.bytes / ops), "B/op"},
		    {round((double)r.allocs / ops * 1000) / 1000, "allocs/op"},
		};
		report(name, threads, r.n, m, ARRAY_SIZE(m));
	}
}

static const struct variant pool_variants[] = {
    {"hush-pool", NULL, NULL},
    {"malloc", NULL, NULL},
};

const struct benchmark bench_pool = {"Pool", pool_variants, ARRAY_SIZE(pool_variants), pool_run};

/* ------------------------------------------------------------------------------------ */
/* The tables                                                                           */
/* ------------------------------------------------------------------------------------ */

static const struct benchmark *const benchmarks[] = {
    &bench_idle,     &bench_read,      &bench_write, &bench_large,
    &bench_pingpong, &bench_handshake, &bench_pool,  &bench_many,
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
				for (size_t k = 0; k < benchmarks[b]->nvariants; k++) {
					printf("%s/%s\n", benchmarks[b]->name,
					       benchmarks[b]->variants[k].name);
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
	nofile_limit = bench_raise_nofile();
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
		for (size_t k = 0; k < benchmarks[i]->nvariants; k++) {
			struct job j = {benchmarks[i], &benchmarks[i]->variants[k]};
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
	hush_pool_free(pool_shared);
	SSL_CTX_free(tls_server_ctx);
	SSL_CTX_free(tls_client_ctx);
	free(large_msg);
	free(final_results.v);
	if (opt.has_filter) {
		regfree(&opt.filter);
	}
	return failures ? 1 : 0;
}
