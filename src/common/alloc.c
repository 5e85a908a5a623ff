/*
 * The process-wide allocator. Every allocation hush makes goes through here, so tests
 * can fail the k-th allocation and benchmarks can count bytes exactly.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/common-internal.h"

static void *default_alloc(void *ctx, size_t size)
{
	(void)ctx;
	return malloc(size);
}

static void default_release(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	(void)size;
	free(ptr);
}

static struct hush_allocator allocator = {default_alloc, default_release, NULL};

void hush_set_allocator(const struct hush_allocator *a)
{
	if (a == NULL || a->alloc == NULL || a->release == NULL) {
		allocator.alloc = default_alloc;
		allocator.release = default_release;
		allocator.ctx = NULL;
		return;
	}
	allocator = *a;
}

void *hush__alloc(size_t size)
{
	if (size == 0) {
		size = 1;
	}
	return allocator.alloc(allocator.ctx, size);
}

void *hush__calloc(size_t size)
{
	void *p = hush__alloc(size);
	if (p != NULL) {
		memset(p, 0, size);
	}
	return p;
}

void hush__free(void *ptr, size_t size)
{
	if (ptr == NULL) {
		return;
	}
	allocator.release(allocator.ctx, ptr, size == 0 ? 1 : size);
}

void hush__free_secret(void *ptr, size_t size)
{
	if (ptr == NULL) {
		return;
	}
	OPENSSL_cleanse(ptr, size);
	hush__free(ptr, size);
}
