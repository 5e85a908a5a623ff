/* Tests for src/handshake/keys.c: key pairs, key and PSK files, base64. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hush/keys.h>

#include "handshake/handshake-internal.h"
#include "testlib.h"

static char dir[256];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/test/handshake/keys-XXXXXX", HUSH_BUILDDIR);
	return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", dir, name);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	fchmod(fd, mode);
	close(fd);
}

static void keys_save_then_load_round_trips_with_mode_0600(void **state)
{
	(void)state;
	char p[300];
	path_of(p, sizeof(p), "id");
	struct hush_keypair *a, *b;
	assert_int_equal(hush_keypair_generate(&a), 0);
	assert_int_equal(hush_keypair_save(a, p), 0);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(hush_keypair_load(&b, p), 0);
	uint8_t pa[32], pb[32];
	hush_keypair_public(a, pa);
	hush_keypair_public(b, pb);
	assert_memory_equal(pa, pb, 32);
	/* Never overwritten. */
	assert_int_equal(hush_keypair_save(b, p), HUSH_EEXIST);
	hush_keypair_free(a);
	hush_keypair_free(b);
	hush_keypair_free(NULL);
}

static void keys_load_refuses_group_or_world_readable(void **state)
{
	(void)state;
	char p[300];
	path_of(p, sizeof(p), "loose");
	struct hush_keypair *a, *b = NULL;
	assert_int_equal(hush_keypair_generate(&a), 0);
	assert_int_equal(hush_keypair_save(a, p), 0);
	static const mode_t modes[] = {0640, 0644, 0604, 0660};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		chmod(p, modes[i]);
		assert_int_equal(hush_keypair_load(&b, p), HUSH_EKEYPERM);
		assert_null(b);
	}
	chmod(p, 0400);
	assert_int_equal(hush_keypair_load(&b, p), 0);
	hush_keypair_free(a);
	hush_keypair_free(b);
}

static void keys_malformed_files_are_bad_keys(void **state)
{
	(void)state;
	char p[300];
	path_of(p, sizeof(p), "bad");
	struct hush_keypair *a;
	assert_int_equal(hush_keypair_generate(&a), 0);
	uint8_t pub[32];
	char b64[45];
	hush_keypair_public(a, pub);
	hush_key_to_base64(pub, b64);
	char other[45];
	uint8_t pub2[32] = {1};
	hush_key_to_base64(pub2, other);
	char good[200];
	snprintf(good, sizeof(good), "private: %s\n", b64); /* any 32 bytes are a private key */
	const char *bad[] = {
	    "",
	    "# only a comment\n",
	    "private: not-base64-at-all-not-base64-at-all-xx\n",
	    "private: AAAA\n",
	    "private: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
	    "garbage line without a colon\n",
	};
	struct hush_keypair *b = NULL;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(p, bad[i], 0600);
		assert_int_equal(hush_keypair_load(&b, p), HUSH_EBADKEY);
		assert_null(b);
	}
	/* A public line that does not match the private key. */
	char mismatch[300];
	snprintf(mismatch, sizeof(mismatch), "private: %s\npublic: %s\n", b64, other);
	write_file(p, mismatch, 0600);
	assert_int_equal(hush_keypair_load(&b, p), HUSH_EBADKEY);
	/* The good file, truncated at every byte, is never accepted as another key. */
	for (size_t k = 0; k < strlen(good); k++) {
		char t[200];
		memcpy(t, good, k);
		t[k] = '\0';
		write_file(p, t, 0600);
		int rc = hush_keypair_load(&b, p);
		if (k >= strlen("private: ") + 44) {
			assert_int_equal(rc, 0); /* only the newline was cut */
			hush_keypair_free(b);
			b = NULL;
		} else {
			assert_int_equal(rc, HUSH_EBADKEY);
		}
	}
	char missing[300];
	path_of(missing, sizeof(missing), "no-such-file");
	assert_int_equal(hush_keypair_load(&b, missing), HUSH_ESYS);
	hush_keypair_free(a);
}

static void keys_base64_round_trip_and_strictness(void **state)
{
	(void)state;
	uint8_t k[32], back[32];
	testlib_fill(k, 32, 5);
	char b64[45];
	hush_key_to_base64(k, b64);
	assert_int_equal(strlen(b64), 44);
	assert_int_equal(hush_key_from_base64(b64, back), 0);
	assert_memory_equal(k, back, 32);
	char spaced[60];
	snprintf(spaced, sizeof(spaced), "  %s \n", b64);
	assert_int_equal(hush_key_from_base64(spaced, back), 0);
	memset(back, 0xaa, 32);
	uint8_t untouched[32];
	memset(untouched, 0xaa, 32);
	assert_int_equal(hush_key_from_base64("", back), HUSH_EBADKEY);
	assert_int_equal(hush_key_from_base64("AAAA", back), HUSH_EBADKEY);
	char extra[60];
	snprintf(extra, sizeof(extra), "%s x", b64);
	assert_int_equal(hush_key_from_base64(extra, back), HUSH_EBADKEY);
	b64[10] = '*';
	assert_int_equal(hush_key_from_base64(b64, back), HUSH_EBADKEY);
	assert_memory_equal(back, untouched, 32);
}

static void keys_psk_file_round_trip_and_rules(void **state)
{
	(void)state;
	char p[300];
	path_of(p, sizeof(p), "psk");
	assert_int_equal(hush_psk_generate_file(p), 0);
	assert_int_equal(hush_psk_generate_file(p), HUSH_EEXIST);
	uint8_t a[32], b[32];
	assert_int_equal(hush_psk_load(p, a), 0);
	assert_int_equal(hush_psk_load(p, b), 0);
	assert_memory_equal(a, b, 32);
	chmod(p, 0644);
	assert_int_equal(hush_psk_load(p, a), HUSH_EKEYPERM);
	write_file(p, "psk: short\n", 0600);
	assert_int_equal(hush_psk_load(p, a), HUSH_EBADKEY);
}

/* PSK files get the same negative set as key files. */
static void keys_malformed_psk_files_are_bad_keys(void **state)
{
	(void)state;
	char p[300];
	path_of(p, sizeof(p), "bad-psk");
	uint8_t k[32], b64k[32];
	testlib_fill(k, 32, 11);
	char b64[45];
	hush_key_to_base64(k, b64);
	char good[200];
	snprintf(good, sizeof(good), "# a comment\n\npsk: %s\n", b64);
	const char *bad[] = {
	    "",
	    "# no psk line\n",
	    "private: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", /* a key file */
	    "psk: AAAA\n",
	    "psk: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
	    "psk: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n", /* 31 bytes */
	    "psk: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*=\n",
	    "psk: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= trailing\n",
	    "psk AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
	};
	uint8_t out[32], untouched[32];
	memset(out, 0xee, sizeof(out));
	memset(untouched, 0xee, sizeof(untouched));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(p, bad[i], 0600);
		assert_int_equal(hush_psk_load(p, out), HUSH_EBADKEY);
		assert_memory_equal(out, untouched, 32);
	}
	/* The psk line twice, even with the same value. */
	char twice[300];
	snprintf(twice, sizeof(twice), "psk: %s\npsk: %s\n", b64, b64);
	write_file(p, twice, 0600);
	assert_int_equal(hush_psk_load(p, out), HUSH_EBADKEY);
	/* Comments, blank lines and unknown "name: value" lines are fine. */
	char extra[300];
	snprintf(extra, sizeof(extra), "# hush\ncreated: today\n\npsk: %s\n", b64);
	write_file(p, extra, 0600);
	assert_int_equal(hush_psk_load(p, out), 0);
	assert_memory_equal(out, k, 32);
	/* Truncated at every byte: never another key. */
	size_t full = strlen(good);
	for (size_t cut = 0; cut < full; cut++) {
		char t[200];
		memcpy(t, good, cut);
		t[cut] = '\0';
		write_file(p, t, 0600);
		memset(b64k, 0, sizeof(b64k));
		int rc = hush_psk_load(p, b64k);
		if (cut == full - 1) {
			assert_int_equal(rc, 0); /* only the newline was cut */
			assert_memory_equal(b64k, k, 32);
		} else {
			assert_int_equal(rc, HUSH_EBADKEY);
		}
	}
	/* Loose permissions, whatever the content. */
	static const mode_t modes[] = {0640, 0644, 0604, 0620, 0602};
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		write_file(p, good, modes[i]);
		assert_int_equal(hush_psk_load(p, out), HUSH_EKEYPERM);
	}
	path_of(p, sizeof(p), "no-such-psk");
	assert_int_equal(hush_psk_load(p, out), HUSH_ESYS);
}

/* Key files: lines missing or twice, unknown lines, a file too big to be a key. */
static void keys_key_file_lines_are_checked(void **state)
{
	(void)state;
	char p[300];
	path_of(p, sizeof(p), "lines");
	struct hush_keypair *a, *b = NULL;
	assert_int_equal(hush_keypair_generate(&a), 0);
	assert_int_equal(hush_keypair_save(a, p), 0);
	uint8_t pub[32], got[32];
	char pub64[45];
	hush_keypair_public(a, pub);
	hush_key_to_base64(pub, pub64);
	/* Only the public line: no private key. */
	char only_pub[200];
	snprintf(only_pub, sizeof(only_pub), "public: %s\n", pub64);
	write_file(p, only_pub, 0600);
	assert_int_equal(hush_keypair_load(&b, p), HUSH_EBADKEY);
	assert_null(b);
	/* The saved file, with an unknown line and a private line twice. */
	struct hush_keypair *c;
	char saved[300];
	path_of(saved, sizeof(saved), "lines-saved");
	assert_int_equal(hush_keypair_save(a, saved), 0);
	FILE *f = fopen(saved, "r");
	assert_non_null(f);
	char text[400];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	char more[800];
	snprintf(more, sizeof(more), "%screated: today\n", text);
	write_file(p, more, 0600);
	assert_int_equal(hush_keypair_load(&c, p), 0);
	hush_keypair_public(c, got);
	assert_memory_equal(got, pub, 32);
	hush_keypair_free(c);
	const char *priv_line = strstr(text, "private:");
	assert_non_null(priv_line);
	snprintf(more, sizeof(more), "%s%.*s", text, (int)(strchr(priv_line, '\n') - priv_line + 1),
		 priv_line);
	write_file(p, more, 0600);
	assert_int_equal(hush_keypair_load(&b, p), HUSH_EBADKEY);
	/* Longer than any key file. */
	static char big[5000];
	memset(big, '#', sizeof(big) - 2);
	big[sizeof(big) - 2] = '\n';
	write_file(p, big, 0600);
	assert_int_equal(hush_keypair_load(&b, p), HUSH_EBADKEY);
	/* Saving into a directory that does not exist. */
	char nodir[300];
	path_of(nodir, sizeof(nodir), "no/such/dir/id");
	assert_int_equal(hush_keypair_save(a, nodir), HUSH_ESYS);
	assert_int_equal(hush_psk_generate_file(nodir), HUSH_ESYS);
	hush_keypair_free(a);
}

/* Out of memory: nothing is created and nothing leaks. */
static void keys_allocation_failures_are_clean(void **state)
{
	(void)state;
	char p[300];
	path_of(p, sizeof(p), "nomem");
	testlib_alloc_install();
	struct hush_keypair *a = NULL, *b = NULL;
	testlib_alloc_fail_at(1);
	assert_int_equal(hush_keypair_generate(&a), HUSH_ENOMEM);
	assert_null(a);
	assert_int_equal(hush_keypair_generate(&a), 0);
	assert_int_equal(hush_keypair_save(a, p), 0);
	testlib_alloc_fail_at(1);
	assert_int_equal(hush_keypair_load(&b, p), HUSH_ENOMEM);
	assert_null(b);
	hush_keypair_free(a);
	struct testlib_alloc_stats st;
	testlib_alloc_get(&st);
	assert_int_equal(st.live, 0);
	testlib_alloc_uninstall();
}

/* A key pair's memory is wiped before it goes back to the allocator. */
static void keys_free_wipes_the_private_key(void **state)
{
	(void)state;
	char p[300];
	path_of(p, sizeof(p), "wipe");
	testlib_alloc_install();
	testlib_alloc_watch_size(sizeof(struct hush_keypair)); /* keys and the EVP_PKEY cache */
	struct hush_keypair *a, *b;
	assert_int_equal(hush_keypair_generate(&a), 0);
	assert_int_equal(hush_keypair_save(a, p), 0);
	assert_int_equal(hush_keypair_load(&b, p), 0);
	hush_keypair_free(a);
	hush_keypair_free(b);
	uint64_t freed, zeroed;
	testlib_alloc_watched(&freed, &zeroed);
	assert_int_equal(freed, 2);
	assert_int_equal(zeroed, 2);
	testlib_alloc_watch_size(0);
	testlib_alloc_uninstall();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(keys_save_then_load_round_trips_with_mode_0600),
	    cmocka_unit_test(keys_load_refuses_group_or_world_readable),
	    cmocka_unit_test(keys_malformed_files_are_bad_keys),
	    cmocka_unit_test(keys_base64_round_trip_and_strictness),
	    cmocka_unit_test(keys_psk_file_round_trip_and_rules),
	    cmocka_unit_test(keys_malformed_psk_files_are_bad_keys),
	    cmocka_unit_test(keys_key_file_lines_are_checked),
	    cmocka_unit_test(keys_allocation_failures_are_clean),
	    cmocka_unit_test(keys_free_wipes_the_private_key),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
