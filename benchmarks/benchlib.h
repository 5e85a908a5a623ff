/*
 * Helpers shared by hush's benchmarks: a clock, Go benchmark-format output (so that
 * benchstat can compare runs), and exact allocation counting through the allocator
 * hooks of hush, OpenSSL (CRYPTO_set_mem_functions) and libevent
 * (event_set_mem_functions).
 */
#ifndef HUSH_BENCHLIB_H
#define HUSH_BENCHLIB_H

#include <stdbool.h>
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
void bench_print(const char *name, int procs, uint64_t n, const struct bench_metric *m, size_t nm);

/*
 * Routes hush's, OpenSSL's and libevent's allocations through counters. Call first
 * thing in main, before any OpenSSL or libevent call. Returns 0, or -1 if OpenSSL had
 * already allocated (its hook can then no longer be set).
 */
int bench_alloc_install(void);

/*
 * Blocks of at least this many bytes count as buffers in live_buffers: every
 * record-sized buffer (OpenSSL's read and write buffers of about 16.5 KiB, hush's pool
 * tiers from 16 KiB up) is at least this large, and no per-connection object is (the
 * largest, OpenSSL's SSL, is about 7.5 KiB).
 */
#define BENCH_BUFFER_MIN 8192

struct bench_alloc_counts {
	uint64_t allocs; /* allocation calls (malloc, realloc of NULL, calloc) */
	uint64_t frees;
	uint64_t bytes; /* bytes requested by allocation calls */
	int64_t live_bytes;
	int64_t live_buffers; /* live blocks of at least BENCH_BUFFER_MIN bytes */
};
void bench_alloc_read(struct bench_alloc_counts *out);

/*
 * Runs fn(args[t], n) on nthreads threads released together and waits for all of them.
 * *ns is the wall time from the release to the last thread's return; *delta the
 * allocations counted by the hooks meanwhile (all threads). Returns 0, or -1 if a thread
 * could not be started (nothing was run).
 */
int bench_run_threads(int nthreads, void (*fn)(void *arg, uint64_t n), void *const *args,
		      uint64_t n, uint64_t *ns, struct bench_alloc_counts *delta);

/* True when argv holds flag (e.g. "--quick"). */
int bench_has_flag(int argc, char **argv, const char *flag);

/*
 * The pool benchmark, one implementation for bench-pool and hush-bench's Pool group: n
 * acquires and releases from a hush pool (or mallocs and frees) on each of `threads`
 * threads sharing the pool, sizes taken from seq in turn. Each operation writes the
 * first and last byte of its buffer, so neither malloc nor the pool can skip the work.
 */
#define BENCH_POOL_SEQ	       64 /* length of a size sequence; a power of two */
#define BENCH_POOL_MAX_THREADS 8

enum bench_pool_kind {
	BENCH_POOL_HUSH,   /* hush_pool_acquire and hush_buf_release */
	BENCH_POOL_MALLOC, /* malloc and free: glibc, not hooked, so counted here */
};

struct hush_pool;

struct bench_pool_case {
	enum bench_pool_kind kind;
	struct hush_pool *pool; /* BENCH_POOL_HUSH */
	size_t seq[BENCH_POOL_SEQ];
	int threads; /* 1..BENCH_POOL_MAX_THREADS */
};

struct bench_pool_result {
	uint64_t n;	 /* operations per thread in the timed run */
	uint64_t ns;	 /* its wall time, from the threads' release to the last one's end */
	uint64_t cpu_ns; /* the process's CPU time (user and system) over the same run */
	uint64_t allocs; /* allocator calls of all threads: hush's hooks plus malloc's */
	uint64_t bytes;	 /* bytes those calls asked for */
};

/*
 * One run of 1000 operations per thread to warm the pool's lists (and malloc's), then
 * runs from start_n operations per thread, growing n as Go's testing package does, until
 * one lasts target ns; *r describes that last run. Returns 0, or -1 when an allocation
 * failed or the threads could not be started.
 */
int bench_pool_measure(const struct bench_pool_case *c, uint64_t start_n, uint64_t target,
		       struct bench_pool_result *r);

/* Reads (writing false) or writes n bytes at p in full, retrying on EINTR. Returns 0,
 * or -1 at EOF or on an error. For the benchmarks' parent-child pipes. */
int bench_io_full(int fd, void *p, size_t n, bool writing);

static inline int bench_write_full(int fd, const void *p, size_t n)
{
	return bench_io_full(fd, (void *)p, n, true);
}

static inline int bench_read_full(int fd, void *p, size_t n)
{
	return bench_io_full(fd, p, n, false);
}

/* Raises the open-files soft limit to the hard limit; returns the limit now in force
 * (at most 2^20). */
long bench_raise_nofile(void);

#endif /* HUSH_BENCHLIB_H */
