/* Tests for src/keys/keys.c: key pairs, key and PSK files, base64, peers files. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hush/handshake.h>
#include <hush/keys.h>

#include "handshake/handshake-internal.h"
#include "testlib.h"

static char dir[256];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/test/keys/keys-XXXXXX", HUSH_BUILDDIR);
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

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/*
 * Regression (found by fuzz-keyfile): base64 has other spellings of the same 32 bytes,
 * which EVP_DecodeBlock accepted: an '=' in place of a character, and the two unused
 * low bits of the last character set. Only hush_key_to_base64()'s spelling is a key.
 */
static void keys_base64_other_spellings_are_bad_keys(void **state)
{
	(void)state;
	uint8_t k[32], out[32], untouched[32];
	testlib_fill(k, 32, 21);
	k[31] &= 0xf0; /* so the last character has its spare bits to set */
	char b64[45];
	hush_key_to_base64(k, b64);
	memset(out, 0x6b, sizeof(out));
	memcpy(untouched, out, sizeof(out));
	for (size_t i = 0; i < 43; i++) {
		char t[45];
		memcpy(t, b64, sizeof(t));
		t[i] = '=';
		assert_int_equal(hush_key_from_base64(t, out), HUSH_EBADKEY);
		assert_memory_equal(out, untouched, 32);
	}
	const char *at = strchr(b64_alphabet, b64[42]);
	assert_non_null(at);
	size_t v = (size_t)(at - b64_alphabet);
	assert_int_equal(v & 3, 0);
	for (size_t spare = 1; spare < 4; spare++) {
		char t[45];
		memcpy(t, b64, sizeof(t));
		t[42] = b64_alphabet[v | spare];
		assert_int_equal(hush_key_from_base64(t, out), HUSH_EBADKEY);
		assert_memory_equal(out, untouched, 32);
	}
	/* The input fuzz-keyfile reported: its last character has a spare bit set. */
	assert_int_equal(
	    hush_key_from_base64("reTgdO1YlYpw4IFfuIAxUPPPPPPPPPPPPPPPPPSh4Di=\n", out),
	    HUSH_EBADKEY);
	assert_int_equal(
	    hush_key_from_base64("reTgdO1YlYpw4IFfuIAxUPPPPPPPPPPPPPPPPPSh4Dg=\n", out), 0);
	/* The same through the files that hold keys. */
	char p[300], text[200];
	char odd[45];
	memcpy(odd, b64, sizeof(odd));
	odd[42] = b64_alphabet[v | 1];
	path_of(p, sizeof(p), "odd-psk");
	snprintf(text, sizeof(text), "psk: %s\n", odd);
	write_file(p, text, 0600);
	memcpy(out, untouched, sizeof(out));
	assert_int_equal(hush_psk_load(p, out), HUSH_EBADKEY);
	assert_memory_equal(out, untouched, 32);
	struct hush_peers *peers = NULL;
	unsigned bad = 0;
	snprintf(text, sizeof(text), "%s\n%s\n", b64, odd);
	assert_int_equal(hush_peers_parse(&peers, text, strlen(text), &bad), HUSH_EBADKEY);
	assert_int_equal(bad, 2);
	assert_null(peers);
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

/* The base64 of test key i (a deterministic 32-byte value). */
static void key_text(unsigned i, uint8_t key[32], char b64[45])
{
	testlib_fill(key, 32, 100 + i);
	hush_key_to_base64(key, b64);
}

/* A poisoned list pointer, to check that failures leave *out untouched. */
#define PEERS_POISON ((struct hush_peers *)(uintptr_t)0x5eed)

static void peers_parse_commented_file_gives_each_key_once(void **state)
{
	(void)state;
	uint8_t k[4][32];
	char b[4][45];
	for (unsigned i = 0; i < 4; i++) {
		key_text(i, k[i], b[i]);
	}
	char text[1024];
	snprintf(text, sizeof(text),
		 "# allowed peers\r\n"
		 "\n"
		 "%s alice's laptop\n"
		 "   \t\n"
		 "  \t# indented comment\n"
		 "\t%s\tbob\t# tabs\r\n"
		 "%s\n"
		 "%s alice again, same key\n"
		 "  %s   \n"
		 "%s",
		 b[0], b[1], b[2], b[0], b[3], b[1]);
	struct hush_peers *p = NULL;
	unsigned bad = 99;
	assert_int_equal(hush_peers_parse(&p, text, strlen(text), &bad), 0);
	assert_int_equal(bad, 0);
	assert_int_equal(hush_peers_count(p), 4);
	for (unsigned i = 0; i < 4; i++) {
		assert_true(hush_peers_contains(p, k[i]));
	}
	uint8_t other[32];
	key_text(4, other, b[0]);
	assert_false(hush_peers_contains(p, other));
	/* Distinct and in ascending order. */
	const uint8_t(*keys)[32] = hush_peers_keys(p);
	for (size_t i = 1; i < 4; i++) {
		assert_true(memcmp(keys[i - 1], keys[i], 32) < 0);
	}
	hush_peers_free(p);
}

static void peers_parse_crlf_and_missing_final_newline_are_accepted(void **state)
{
	(void)state;
	uint8_t k[32];
	char b[45], text[200];
	key_text(0, k, b);
	const char *forms[] = {"%s\r\n", "%s\r", "%s", "%s name\r\n", "%s\n\r\n"};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		snprintf(text, sizeof(text), forms[i], b);
		struct hush_peers *p = NULL;
		assert_int_equal(hush_peers_parse(&p, text, strlen(text), NULL), 0);
		assert_int_equal(hush_peers_count(p), 1);
		assert_memory_equal(hush_peers_keys(p)[0], k, 32);
		hush_peers_free(p);
	}
}

static void peers_parse_no_keys_gives_empty_list(void **state)
{
	(void)state;
	const char *texts[] = {"", "\n", "# nobody yet\n", "  \t \r\n\n#\n", "#"};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct hush_peers *p = NULL;
		unsigned bad = 99;
		assert_int_equal(hush_peers_parse(&p, texts[i], strlen(texts[i]), &bad), 0);
		assert_int_equal(bad, 0);
		assert_non_null(p);
		assert_int_equal(hush_peers_count(p), 0);
		uint8_t zero[32] = {0};
		assert_false(hush_peers_contains(p, zero));
		hush_peers_free(p);
	}
}

static void peers_parse_null_arguments_are_einval(void **state)
{
	(void)state;
	struct hush_peers *p = PEERS_POISON;
	unsigned bad = 99;
	assert_int_equal(hush_peers_parse(NULL, "", 0, &bad), HUSH_EINVAL);
	assert_int_equal(bad, 0);
	bad = 99;
	assert_int_equal(hush_peers_parse(&p, NULL, 0, &bad), HUSH_EINVAL);
	assert_int_equal(bad, 0);
	assert_ptr_equal(p, PEERS_POISON);
	assert_int_equal(hush_peers_load(NULL, "/dev/null", &bad), HUSH_EINVAL);
	assert_int_equal(hush_peers_load(&p, NULL, &bad), HUSH_EINVAL);
	assert_ptr_equal(p, PEERS_POISON);
}

static void peers_accessors_with_null_are_empty(void **state)
{
	(void)state;
	uint8_t k[32] = {0};
	assert_int_equal(hush_peers_count(NULL), 0);
	assert_null(hush_peers_keys(NULL));
	assert_false(hush_peers_contains(NULL, k));
	struct hush_peers *p;
	char b[45];
	key_text(0, k, b);
	assert_int_equal(hush_peers_parse(&p, b, strlen(b), NULL), 0);
	assert_false(hush_peers_contains(p, NULL));
	hush_peers_free(p);
	hush_peers_free(NULL);
}

/* Each malformed line, as line 3 of an otherwise good file: refused, and named. */
static void peers_parse_malformed_line_is_bad_key_with_its_number(void **state)
{
	(void)state;
	uint8_t k[32];
	char b[45];
	key_text(0, k, b);
	char line[200];
	const char *bad_lines[] = {
	    "AAAA",
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   /* 43 characters */
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* 45 characters */
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",  /* 31 bytes */
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  /* no padding */
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*=",  /* not base64 */
	    "AAAAAAAAAAAAAAAAAAAAA-_AAAAAAAAAAAAAAAAAAAA=",  /* base64url */
	    "%s#name",					     /* no blank before the name */
	    "%s,",
	    "%s%s",
	    "public: %s", /* a key file's line */
	    "alice %s",
	    "\v%s",   /* only spaces and tabs are blanks */
	    "%s\r\r", /* one CR only: the other joins the key */
	};
	for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
		snprintf(line, sizeof(line), bad_lines[i], b, b);
		char text[400];
		snprintf(text, sizeof(text), "# peers\n%s\n%s\n%s\n", b, line, b);
		struct hush_peers *p = PEERS_POISON;
		unsigned bad = 0;
		assert_int_equal(hush_peers_parse(&p, text, strlen(text), &bad), HUSH_EBADKEY);
		assert_int_equal(bad, 3);
		assert_ptr_equal(p, PEERS_POISON);
	}
	/* A zero byte, even inside a comment or a name. */
	char text[200];
	int n = snprintf(text, sizeof(text), "%s\n# com ment\n%s name\n", b, b);
	const size_t zero_at[] = {3, (size_t)(45 + 5), (size_t)(45 + 12 + 46)};
	for (size_t i = 0; i < sizeof(zero_at) / sizeof(zero_at[0]); i++) {
		char t[200];
		memcpy(t, text, (size_t)n);
		t[zero_at[i]] = '\0';
		struct hush_peers *p = PEERS_POISON;
		unsigned bad = 0;
		assert_int_equal(hush_peers_parse(&p, t, (size_t)n, &bad), HUSH_EBADKEY);
		assert_int_equal(bad, i + 1);
		assert_ptr_equal(p, PEERS_POISON);
	}
}

/* A two-key file cut at every byte: a cut inside a key is refused at that line; a cut
 * anywhere else gives the keys whose lines are complete. */
static void peers_parse_truncated_at_every_byte_is_refused_or_a_prefix(void **state)
{
	(void)state;
	uint8_t k[2][32];
	char b[2][45];
	key_text(0, k[0], b[0]);
	key_text(1, k[1], b[1]);
	char text[300];
	int full = snprintf(text, sizeof(text), "# two\n%s one\r\n%s two\n", b[0], b[1]);
	const size_t key1 = 6, key2 = 6 + 44 + 6; /* where each key starts */
	for (size_t cut = 0; cut <= (size_t)full; cut++) {
		struct hush_peers *p = PEERS_POISON;
		unsigned bad = 99;
		int rc = hush_peers_parse(&p, text, cut, &bad);
		if ((cut > key1 && cut < key1 + 44) || (cut > key2 && cut < key2 + 44)) {
			assert_int_equal(rc, HUSH_EBADKEY);
			assert_int_equal(bad, cut < key2 ? 2 : 3);
			assert_ptr_equal(p, PEERS_POISON);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(bad, 0);
		size_t want = (cut >= key1 + 44) + (cut >= key2 + 44);
		assert_int_equal(hush_peers_count(p), want);
		if (want >= 1) {
			assert_true(hush_peers_contains(p, k[0]));
		}
		if (want == 2) {
			assert_true(hush_peers_contains(p, k[1]));
		}
		hush_peers_free(p);
	}
}

/* Every bit of a one-key file flipped: refused at line 1, or still one key (a flip in
 * the name, or one base64 character turned into another). */
static void peers_parse_flipped_bits_are_refused_or_one_key(void **state)
{
	(void)state;
	uint8_t k[32];
	char b[45], text[100];
	key_text(0, k, b);
	int n = snprintf(text, sizeof(text), "%s carol\n", b);
	for (size_t i = 0; i < (size_t)n; i++) {
		for (int bit = 0; bit < 8; bit++) {
			char t[100];
			memcpy(t, text, (size_t)n);
			t[i] ^= (char)(1 << bit);
			struct hush_peers *p = PEERS_POISON;
			unsigned bad = 99;
			int rc = hush_peers_parse(&p, t, (size_t)n, &bad);
			if (rc != 0) {
				assert_int_equal(rc, HUSH_EBADKEY);
				assert_int_equal(bad, 1);
				assert_ptr_equal(p, PEERS_POISON);
				assert_true(i < 45); /* never for a flip in the name */
				continue;
			}
			assert_int_equal(bad, 0);
			/* A flipped LF makes a one-line file whose name runs to the end. */
			assert_int_equal(hush_peers_count(p), 1);
			if (i >= 45) {
				assert_memory_equal(hush_peers_keys(p)[0], k, 32);
			}
			hush_peers_free(p);
		}
	}
}

static void peers_parse_over_one_mib_is_bad_key_line_zero(void **state)
{
	(void)state;
	size_t max = HUSH_PEERS_MAX_FILE;
	assert_int_equal(max, 1024 * 1024);
	char *big = malloc(max + 1);
	assert_non_null(big);
	/* Exactly 1 MiB: a key, then comment lines. */
	uint8_t k[32];
	char b[45];
	key_text(0, k, b);
	memset(big, '#', max + 1);
	memcpy(big, b, 44);
	big[44] = '\n';
	for (size_t i = 1000; i < max; i += 1000) {
		big[i] = '\n';
	}
	struct hush_peers *p = PEERS_POISON;
	unsigned bad = 99;
	assert_int_equal(hush_peers_parse(&p, big, max, &bad), 0);
	assert_int_equal(bad, 0);
	assert_int_equal(hush_peers_count(p), 1);
	hush_peers_free(p);
	p = PEERS_POISON;
	bad = 99;
	assert_int_equal(hush_peers_parse(&p, big, max + 1, &bad), HUSH_EBADKEY);
	assert_int_equal(bad, 0);
	assert_ptr_equal(p, PEERS_POISON);
	free(big);
}

static void peers_load_reads_a_public_file(void **state)
{
	(void)state;
	uint8_t k[2][32];
	char b[2][45], text[300], p1[300];
	key_text(0, k[0], b[0]);
	key_text(1, k[1], b[1]);
	snprintf(text, sizeof(text), "# peers\n%s a\n%s b\n%s a\n", b[0], b[1], b[0]);
	path_of(p1, sizeof(p1), "peers");
	write_file(p1, text, 0644); /* public data: any mode */
	struct hush_peers *p;
	unsigned bad = 99;
	assert_int_equal(hush_peers_load(&p, p1, &bad), 0);
	assert_int_equal(bad, 0);
	assert_int_equal(hush_peers_count(p), 2);
	assert_true(hush_peers_contains(p, k[0]));
	assert_true(hush_peers_contains(p, k[1]));
	hush_peers_free(p);
	/* Malformed: the line is named. */
	snprintf(text, sizeof(text), "%s\n\n%.40s\n", b[0], b[1]);
	write_file(p1, text, 0644);
	p = PEERS_POISON;
	assert_int_equal(hush_peers_load(&p, p1, &bad), HUSH_EBADKEY);
	assert_int_equal(bad, 3);
	assert_ptr_equal(p, PEERS_POISON);
	/* Empty file. */
	write_file(p1, "", 0600);
	assert_int_equal(hush_peers_load(&p, p1, &bad), 0);
	assert_int_equal(hush_peers_count(p), 0);
	hush_peers_free(p);
}

static void peers_load_missing_file_is_esys(void **state)
{
	(void)state;
	char missing[300];
	path_of(missing, sizeof(missing), "no-such-peers");
	struct hush_peers *p = PEERS_POISON;
	unsigned bad = 99;
	errno = 0;
	assert_int_equal(hush_peers_load(&p, missing, &bad), HUSH_ESYS);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(bad, 0);
	assert_ptr_equal(p, PEERS_POISON);
}

static void on_alarm(int sig)
{
	(void)sig;
	/* A load blocked: the test fails instead of hanging. */
	_exit(99);
}

/*
 * Key, PSK and peers files that are not regular files are refused at once with
 * HUSH_ENOTFILE, never read or waited on: a FIFO with no writer (open() would block
 * without O_NONBLOCK), a FIFO whose writer never writes, a directory, a device.
 */
static void keys_non_regular_files_are_refused_at_once(void **state)
{
	(void)state;
	char fifo[300];
	path_of(fifo, sizeof(fifo), "fifo");
	unlink(fifo);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	signal(SIGALRM, on_alarm);
	alarm(10);
	for (int writer = 0; writer < 2; writer++) {
		/* With a writer that holds the FIFO open and writes nothing, a read would
		 * block as well as the open. */
		int w = -1;
		int r = -1;
		if (writer) {
			r = open(fifo, O_RDONLY | O_NONBLOCK);
			assert_true(r >= 0);
			w = open(fifo, O_WRONLY);
			assert_true(w >= 0);
		}
		struct hush_keypair *kp = (struct hush_keypair *)PEERS_POISON;
		uint8_t psk[32];
		memset(psk, 0x5a, sizeof(psk));
		struct hush_peers *p = PEERS_POISON;
		unsigned bad = 99;
		assert_int_equal(hush_keypair_load(&kp, fifo), HUSH_ENOTFILE);
		assert_ptr_equal(kp, PEERS_POISON);
		assert_int_equal(hush_psk_load(fifo, psk), HUSH_ENOTFILE);
		assert_int_equal(psk[0], 0x5a);
		assert_int_equal(hush_peers_load(&p, fifo, &bad), HUSH_ENOTFILE);
		assert_ptr_equal(p, PEERS_POISON);
		assert_int_equal(bad, 0);
		if (writer) {
			close(w);
			close(r);
		}
	}
	const char *others[] = {dir, "/dev/null"};
	for (size_t i = 0; i < 2; i++) {
		struct hush_keypair *kp = NULL;
		uint8_t psk[32];
		struct hush_peers *p = PEERS_POISON;
		unsigned bad = 99;
		assert_int_equal(hush_keypair_load(&kp, others[i]), HUSH_ENOTFILE);
		assert_int_equal(hush_psk_load(others[i], psk), HUSH_ENOTFILE);
		assert_int_equal(hush_peers_load(&p, others[i], &bad), HUSH_ENOTFILE);
		assert_ptr_equal(p, PEERS_POISON);
	}
	alarm(0);
	assert_string_equal(hush_strerror(HUSH_ENOTFILE), "not a regular file");
	unlink(fifo);
}

/* An all-zero private key is refused when loaded, public line or not. */
static void keys_all_zero_private_key_is_bad_key(void **state)
{
	(void)state;
	char path[300];
	path_of(path, sizeof(path), "zero.key");
	struct hush_keypair *kp = NULL;
	write_file(path, "private: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 0600);
	assert_int_equal(hush_keypair_load(&kp, path), HUSH_EBADKEY);
	assert_null(kp);
	/* One bit set is a key (clamping makes it a valid scalar). */
	write_file(path, "private: AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 0600);
	assert_int_equal(hush_keypair_load(&kp, path), 0);
	hush_keypair_free(kp);
}

/*
 * A low-order X25519 point (every DH with it gives zero, so no one owns it) is refused
 * in a peers file, with its line number, and as a --peer style list: all 14 encodings
 * of the points of small order (the list of test-noise.c's
 * noise_low_order_public_keys_are_refused).
 */
static void peers_low_order_points_are_bad_keys_with_their_number(void **state)
{
	(void)state;
	const char *const *low = testlib_low_order_x25519;
	char path[300];
	path_of(path, sizeof(path), "low.peers");
	for (size_t i = 0; i < TESTLIB_N_LOW_ORDER; i++) {
		uint8_t k[32], good[32];
		char b[45], g[45], text[200];
		assert_int_equal(testlib_unhex(low[i], k, sizeof(k)), 32);
		hush_key_to_base64(k, b);
		key_text(1, good, g);
		snprintf(text, sizeof(text), "# two peers\n%s alice\n%s mallory\n", g, b);
		struct hush_peers *p = PEERS_POISON;
		unsigned bad = 0;
		assert_int_equal(hush_peers_parse(&p, text, strlen(text), &bad), HUSH_EBADKEY);
		assert_int_equal(bad, 3);
		assert_ptr_equal(p, PEERS_POISON);
		write_file(path, text, 0644);
		bad = 0;
		assert_int_equal(hush_peers_load(&p, path, &bad), HUSH_EBADKEY);
		assert_int_equal(bad, 3);
		assert_ptr_equal(p, PEERS_POISON);
	}
}

/* Writes n bytes of a big peers file to path: the key of test key 0, then comments. */
static void write_big_peers(const char *path, size_t n)
{
	char b[45];
	uint8_t k[32];
	key_text(0, k, b);
	char *t = malloc(n + 1);
	assert_non_null(t);
	memset(t, '#', n);
	memcpy(t, b, 44);
	t[44] = '\n';
	t[n] = '\0';
	write_file(path, t, 0644);
	free(t);
}

static void peers_load_over_one_mib_is_bad_key_line_zero(void **state)
{
	(void)state;
	char p1[300];
	path_of(p1, sizeof(p1), "big-peers");
	struct hush_peers *p = PEERS_POISON;
	unsigned bad = 99;
	write_big_peers(p1, HUSH_PEERS_MAX_FILE);
	assert_int_equal(hush_peers_load(&p, p1, &bad), 0);
	assert_int_equal(hush_peers_count(p), 1);
	hush_peers_free(p);
	p = PEERS_POISON;
	write_big_peers(p1, HUSH_PEERS_MAX_FILE + 1);
	assert_int_equal(hush_peers_load(&p, p1, &bad), HUSH_EBADKEY);
	assert_int_equal(bad, 0);
	assert_ptr_equal(p, PEERS_POISON);
}

/* Out of memory at each allocation in turn: HUSH_ENOMEM, *out untouched, nothing
 * left allocated; then success. */
static void peers_allocation_failure_at_every_step_is_clean(void **state)
{
	(void)state;
	uint8_t k[32];
	char b[45], text[300], p1[300];
	key_text(0, k, b);
	snprintf(text, sizeof(text), "%s\n%s again\n", b, b);
	path_of(p1, sizeof(p1), "nomem-peers");
	write_file(p1, text, 0644);
	testlib_alloc_install();
	struct testlib_alloc_stats st;
	for (int pass = 0; pass < 2; pass++) {
		uint64_t k_fail;
		for (k_fail = 1;; k_fail++) {
			struct hush_peers *p = PEERS_POISON;
			unsigned bad = 99;
			testlib_alloc_fail_at(k_fail);
			int rc = pass == 0 ? hush_peers_parse(&p, text, strlen(text), &bad)
					   : hush_peers_load(&p, p1, &bad);
			testlib_alloc_fail_at(0);
			if (rc == 0) {
				assert_int_equal(hush_peers_count(p), 1);
				hush_peers_free(p);
				break;
			}
			assert_int_equal(rc, HUSH_ENOMEM);
			assert_int_equal(bad, 0);
			assert_ptr_equal(p, PEERS_POISON);
			testlib_alloc_get(&st);
			assert_int_equal(st.live, 0);
		}
		/* parse makes one allocation; load one more for the file's text. */
		assert_int_equal(k_fail, pass == 0 ? 2 : 3);
	}
	testlib_alloc_get(&st);
	assert_int_equal(st.live, 0);
	testlib_alloc_uninstall();
}

static int accept_nobody(const uint8_t remote_static[HUSH_KEY_SIZE], void *arg)
{
	(void)remote_static;
	(void)arg;
	return -1;
}

/* The list plugs into a handshake configuration as its allow-list. */
static void peers_keys_serve_as_handshake_allow_list(void **state)
{
	(void)state;
	uint8_t k[32];
	char b[45];
	key_text(0, k, b);
	struct hush_peers *p;
	assert_int_equal(hush_peers_parse(&p, b, strlen(b), NULL), 0);
	struct hush_keypair *kp;
	assert_int_equal(hush_keypair_generate(&kp), 0);
	struct hush_handshake_config cfg;
	hush_handshake_config_init(&cfg);
	cfg.keypair = kp;
	cfg.allowed_peers = hush_peers_keys(p);
	cfg.n_allowed_peers = hush_peers_count(p);
	struct hush_handshake *hs;
	assert_int_equal(hush_handshake_new(&hs, &cfg, HUSH_SIDE_SERVER), 0);
	hush_handshake_free(hs);
	/* An empty list is no verification at all: the caller must add a callback. */
	struct hush_peers *none;
	assert_int_equal(hush_peers_parse(&none, "", 0, NULL), 0);
	cfg.allowed_peers = hush_peers_keys(none);
	cfg.n_allowed_peers = hush_peers_count(none);
	assert_int_equal(hush_handshake_new(&hs, &cfg, HUSH_SIDE_SERVER), HUSH_ENOVERIFY);
	cfg.verify = accept_nobody;
	assert_int_equal(hush_handshake_new(&hs, &cfg, HUSH_SIDE_SERVER), 0);
	hush_handshake_free(hs);
	hush_peers_free(none);
	hush_keypair_free(kp);
	hush_peers_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(keys_save_then_load_round_trips_with_mode_0600),
	    cmocka_unit_test(keys_load_refuses_group_or_world_readable),
	    cmocka_unit_test(keys_malformed_files_are_bad_keys),
	    cmocka_unit_test(keys_base64_round_trip_and_strictness),
	    cmocka_unit_test(keys_base64_other_spellings_are_bad_keys),
	    cmocka_unit_test(keys_psk_file_round_trip_and_rules),
	    cmocka_unit_test(keys_malformed_psk_files_are_bad_keys),
	    cmocka_unit_test(keys_key_file_lines_are_checked),
	    cmocka_unit_test(keys_allocation_failures_are_clean),
	    cmocka_unit_test(keys_free_wipes_the_private_key),
	    cmocka_unit_test(peers_parse_commented_file_gives_each_key_once),
	    cmocka_unit_test(peers_parse_crlf_and_missing_final_newline_are_accepted),
	    cmocka_unit_test(peers_parse_no_keys_gives_empty_list),
	    cmocka_unit_test(peers_parse_null_arguments_are_einval),
	    cmocka_unit_test(peers_accessors_with_null_are_empty),
	    cmocka_unit_test(peers_parse_malformed_line_is_bad_key_with_its_number),
	    cmocka_unit_test(peers_parse_truncated_at_every_byte_is_refused_or_a_prefix),
	    cmocka_unit_test(peers_parse_flipped_bits_are_refused_or_one_key),
	    cmocka_unit_test(peers_parse_over_one_mib_is_bad_key_line_zero),
	    cmocka_unit_test(peers_load_reads_a_public_file),
	    cmocka_unit_test(peers_load_missing_file_is_esys),
	    cmocka_unit_test(keys_non_regular_files_are_refused_at_once),
	    cmocka_unit_test(keys_all_zero_private_key_is_bad_key),
	    cmocka_unit_test(peers_low_order_points_are_bad_keys_with_their_number),
	    cmocka_unit_test(peers_load_over_one_mib_is_bad_key_line_zero),
	    cmocka_unit_test(peers_allocation_failure_at_every_step_is_clean),
	    cmocka_unit_test(peers_keys_serve_as_handshake_allow_list),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
