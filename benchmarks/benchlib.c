#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include <hush/common.h>

#include "benchlib.h"

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_print(const char *name, int procs, uint64_t n, const struct bench_metric *m,
		 size_t nm)
{
	printf("Benchmark%s-%d\t%llu", name, procs, (unsigned long long)n);
	for (size_t i = 0; i < nm; i++) {
		double v = m[i].value;
		if (v == (double)(int64_t)v && v < 1e15 && v > -1e15) {
			printf("\t%lld %s", (long long)v, m[i].unit);
		} else {
			printf("\t%.3f %s", v, m[i].unit);
		}
	}
	printf("\n");
	fflush(stdout);
}

/*
 * Each counted block carries a 16-byte header holding its size, so frees and
 * reallocations know how many bytes leave.
 */
#define HDR 16
static _Atomic uint64_t n_allocs, n_frees, n_bytes;
static _Atomic int64_t n_live;

static void *count_malloc(size_t size)
{
	uint8_t *p = malloc(size + HDR);
	if (p == NULL) {
		return NULL;
	}
	memcpy(p, &size, sizeof(size));
	atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&n_bytes, size, memory_order_relaxed);
	atomic_fetch_add_explicit(&n_live, (int64_t)size, memory_order_relaxed);
	return p + HDR;
}

static void count_free(void *ptr)
{
	if (ptr == NULL) {
		return;
	}
	uint8_t *p = (uint8_t *)ptr - HDR;
	size_t size;
	memcpy(&size, p, sizeof(size));
	atomic_fetch_add_explicit(&n_frees, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&n_live, (int64_t)size, memory_order_relaxed);
	free(p);
}

static void *count_realloc(void *ptr, size_t size)
{
	if (ptr == NULL) {
		return count_malloc(size);
	}
	uint8_t *p = (uint8_t *)ptr - HDR;
	size_t old;
	memcpy(&old, p, sizeof(old));
	uint8_t *q = realloc(p, size + HDR);
	if (q == NULL) {
		return NULL;
	}
	memcpy(q, &size, sizeof(size));
	atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&n_bytes, size, memory_order_relaxed);
	atomic_fetch_add_explicit(&n_live, (int64_t)size - (int64_t)old, memory_order_relaxed);
	return q + HDR;
}

static void *ossl_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return count_malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return count_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	count_free(p);
}

static void *hush_alloc_cb(void *ctx, size_t size)
{
	(void)ctx;
	return count_malloc(size);
}

static void hush_release_cb(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	(void)size;
	count_free(ptr);
}

int bench_alloc_install(void)
{
	static const struct hush_allocator a = {hush_alloc_cb, hush_release_cb, NULL};
	hush_set_allocator(&a);
	event_set_mem_functions(count_malloc, count_realloc, count_free);
	if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free)) {
		return -1;
	}
	return 0;
}

void bench_alloc_read(struct bench_alloc_counts *out)
{
	out->allocs = atomic_load(&n_allocs);
	out->frees = atomic_load(&n_frees);
	out->bytes = atomic_load(&n_bytes);
	out->live_bytes = atomic_load(&n_live);
}

int bench_has_flag(int argc, char **argv, const char *flag)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], flag) == 0) {
			return 1;
		}
	}
	return 0;
}
