#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testlib.h"

static _Atomic uint64_t n_calls, n_frees, n_live, n_live_bytes;
static _Atomic uint64_t fail_at, fail_from;
static _Atomic size_t watch_size;
static _Atomic uint64_t watch_freed, watch_zeroed;

static void *counting_alloc(void *ctx, size_t size)
{
	(void)ctx;
	uint64_t call = atomic_fetch_add(&n_calls, 1) + 1;
	uint64_t at = atomic_load(&fail_at);
	uint64_t from = atomic_load(&fail_from);
	if ((at != 0 && call == at) || (from != 0 && call >= from)) {
		return NULL;
	}
	void *p = malloc(size);
	if (p != NULL) {
		atomic_fetch_add(&n_live, 1);
		atomic_fetch_add(&n_live_bytes, size);
	}
	return p;
}

static void counting_release(void *ctx, void *ptr, size_t size)
{
	(void)ctx;
	if (size != 0 && size == atomic_load(&watch_size)) {
		const uint8_t *p = ptr;
		size_t nz = 0;
		for (size_t i = 0; i < size; i++) {
			nz |= p[i];
		}
		atomic_fetch_add(&watch_freed, 1);
		if (nz == 0) {
			atomic_fetch_add(&watch_zeroed, 1);
		}
	}
	atomic_fetch_add(&n_frees, 1);
	atomic_fetch_sub(&n_live, 1);
	atomic_fetch_sub(&n_live_bytes, size);
	free(ptr);
}

void testlib_alloc_install(void)
{
	static const struct hush_allocator a = {counting_alloc, counting_release, NULL};
	atomic_store(&n_calls, 0);
	atomic_store(&n_frees, 0);
	atomic_store(&n_live, 0);
	atomic_store(&n_live_bytes, 0);
	atomic_store(&fail_at, 0);
	atomic_store(&fail_from, 0);
	hush_set_allocator(&a);
}

void testlib_alloc_uninstall(void)
{
	hush_set_allocator(NULL);
}

void testlib_alloc_fail_at(uint64_t k)
{
	atomic_store(&fail_at, k == 0 ? 0 : atomic_load(&n_calls) + k);
}

void testlib_alloc_fail_from(uint64_t k)
{
	atomic_store(&fail_from, k == 0 ? 0 : atomic_load(&n_calls) + k);
}

void testlib_alloc_watch_size(size_t size)
{
	atomic_store(&watch_size, size);
	atomic_store(&watch_freed, 0);
	atomic_store(&watch_zeroed, 0);
}

void testlib_alloc_watched(uint64_t *freed, uint64_t *zeroed)
{
	*freed = atomic_load(&watch_freed);
	*zeroed = atomic_load(&watch_zeroed);
}

void testlib_alloc_get(struct testlib_alloc_stats *out)
{
	out->calls = atomic_load(&n_calls);
	out->frees = atomic_load(&n_frees);
	out->live = atomic_load(&n_live);
	out->live_bytes = atomic_load(&n_live_bytes);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') {
		return c - '0';
	}
	if (c >= 'a' && c <= 'f') {
		return c - 'a' + 10;
	}
	if (c >= 'A' && c <= 'F') {
		return c - 'A' + 10;
	}
	return -1;
}

long testlib_unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = strlen(hex);
	if (n % 2 != 0 || n / 2 > cap) {
		return -1;
	}
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]);
		int lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			return -1;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (long)(n / 2);
}

void testlib_fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
}

int testlib_fd_room(const char *what, int want, int per_unit, int spare)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		fprintf(stderr, "# %s: getrlimit failed; assuming 1024 descriptors\n", what);
		rl.rlim_cur = rl.rlim_max = 1024;
	}
	rlim_t before = rl.rlim_cur;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			rl.rlim_cur = before;
		}
	}
	/* A hard limit of "unlimited" still leaves the kernel's nr_open: want is small. */
	rlim_t room = rl.rlim_cur > (rlim_t)spare ? rl.rlim_cur - (rlim_t)spare : 0;
	rlim_t fit = room / (rlim_t)per_unit;
	if (fit >= (rlim_t)want) {
		return want;
	}
	fprintf(stderr,
		"# %s: scaled down from %d to %d (open-files soft limit %llu, hard %llu; "
		"%d descriptors each)\n",
		what, want, (int)fit, (unsigned long long)before,
		(unsigned long long)rl.rlim_max, per_unit);
	return (int)fit;
}

const char *const testlib_low_order_x25519[TESTLIB_N_LOW_ORDER] = {
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0000000000000000000000000000000000000000000000000000000000000080",
    "0100000000000000000000000000000000000000000000000000000000000080",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
};

int testlib_next_kv(FILE *f, char *line, size_t cap, const char **key, const char **value)
{
	while (fgets(line, (int)cap, f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		char *eq = strchr(line, '=');
		if (line[0] == '#' || eq == NULL) {
			continue;
		}
		*eq = '\0';
		*key = line;
		*value = eq + 1;
		return 1;
	}
	return 0;
}

uint16_t testlib_closed_port(void)
{
	int probe = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(probe >= 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(probe, (struct sockaddr *)&sin, sizeof(sin)), 0);
	socklen_t sl = sizeof(sin);
	assert_int_equal(getsockname(probe, (struct sockaddr *)&sin, &sl), 0);
	close(probe);
	return ntohs(sin.sin_port);
}
