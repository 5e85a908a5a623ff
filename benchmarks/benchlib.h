/*
 * Helpers shared by hush's benchmarks: a clock, Go benchmark-format output (so that
 * benchstat can compare runs), and exact allocation counting through the allocator
 * hooks of hush, OpenSSL (CRYPTO_set_mem_functions) and libevent
 * (event_set_mem_functions).
 */
#ifndef HUSH_BENCHLIB_H
#define HUSH_BENCHLIB_H

#include <stddef.h>
#include <stdint.h>

struct bench_metric {
	double value;
	const char *unit; /* "ns/op", "B/op", "allocs/op", "MB/s", ... */
};

/* Monotonic nanoseconds. */
uint64_t bench_now_ns(void);

/*
 * Prints one result line: "Benchmark<name>-<procs>\t<n>\t<v> <unit>\t...". procs is the
 * number of threads the benchmark ran on (Go's GOMAXPROCS suffix).
 */
void bench_print(const char *name, int procs, uint64_t n, const struct bench_metric *m,
		 size_t nm);

/*
 * Routes hush's, OpenSSL's and libevent's allocations through counters. Call first
 * thing in main, before any OpenSSL or libevent call. Returns 0, or -1 if OpenSSL had
 * already allocated (its hook can then no longer be set).
 */
int bench_alloc_install(void);

struct bench_alloc_counts {
	uint64_t allocs; /* allocation calls (malloc, realloc of NULL, calloc) */
	uint64_t frees;
	uint64_t bytes;  /* bytes requested by allocation calls */
	int64_t live_bytes;
};
void bench_alloc_read(struct bench_alloc_counts *out);

/* True when argv holds flag (e.g. "--quick"). */
int bench_has_flag(int argc, char **argv, const char *flag);

#endif /* HUSH_BENCHLIB_H */
