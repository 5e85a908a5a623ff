/*
 * Helpers shared by hush's tests: a counting allocator that can be told to fail the
 * k-th allocation, and small byte utilities.
 */
#ifndef HUSH_TESTLIB_H
#define HUSH_TESTLIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hush/common.h>

struct testlib_alloc_stats {
	uint64_t calls;      /* allocation calls (successful or failed) */
	uint64_t frees;
	uint64_t live;       /* allocations not yet freed */
	uint64_t live_bytes;
};

/* Installs the counting allocator with counters at zero and no failure planned. */
void testlib_alloc_install(void);
/* Restores hush's default allocator. */
void testlib_alloc_uninstall(void);
/* Makes the k-th allocation from now fail (1 = the next one); 0 cancels. */
void testlib_alloc_fail_at(uint64_t k);
/* Makes every allocation from the k-th on fail; 0 cancels. */
void testlib_alloc_fail_from(uint64_t k);
void testlib_alloc_get(struct testlib_alloc_stats *out);

/*
 * Watches frees of blocks of exactly size bytes: counts them, and how many were all
 * zero when freed (secrets must be wiped before their memory goes back). 0 stops.
 */
void testlib_alloc_watch_size(size_t size);
void testlib_alloc_watched(uint64_t *freed, uint64_t *zeroed);

/*
 * Reads the next "key=value" line of a test-vector file into line (capacity cap),
 * skipping comments (#) and lines without '=', and points key and value into it.
 * Returns 0 at the end of the file.
 */
int testlib_next_kv(FILE *f, char *line, size_t cap, const char **key, const char **value);

/* A loopback TCP port nobody listens on (bound once, then closed). */
uint16_t testlib_closed_port(void);

/* Decodes hex into out (capacity cap). Returns the byte count, or -1 on bad input. */
long testlib_unhex(const char *hex, uint8_t *out, size_t cap);

/*
 * Makes room for descriptors: raises the open-files soft limit to the hard limit, then
 * returns how many of `want` units of `per_unit` descriptors each fit with `spare`
 * descriptors left over. When fewer than `want` fit, it says so on standard error
 * (naming `what` and both limits), so a log shows that a test ran scaled down.
 */
int testlib_fd_room(const char *what, int want, int per_unit, int spare);

/* The 14 encodings of Curve25519's points of small order (0, 1, the two of order 8,
 * p - 1, p, p + 1, and each with the top bit set, which X25519 ignores), as hex: a DH
 * with any of them is all zero. */
#define TESTLIB_N_LOW_ORDER 14
extern const char *const testlib_low_order_x25519[TESTLIB_N_LOW_ORDER];

/* Fills buf with bytes from a simple deterministic generator seeded by seed. */
void testlib_fill(uint8_t *buf, size_t len, uint64_t seed);

#endif /* HUSH_TESTLIB_H */
