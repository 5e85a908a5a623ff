/*
 * libFuzzer harness: hush_peers_parse() (src/keys/keys.c) on arbitrary text.
 * Checks the exact error codes and the line reported, that *out is untouched on
 * failure, that a list holds distinct keys in order, each one found by
 * hush_peers_contains(), and no more than the text has lines; that the list written
 * back out as a canonical peers file parses to the same list; and that running out of
 * memory gives HUSH_ENOMEM exactly when the text is good.
 */
#include <stdlib.h>
#include <string.h>

#include <hush/keys.h>

#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define POISON ((struct hush_peers *)(uintptr_t)0x5eed)

static size_t count_lines(const uint8_t *data, size_t size)
{
	size_t n = 0;
	for (size_t i = 0; i < size; i++) {
		n += data[i] == '\n';
	}
	return n + (size > 0 && data[size - 1] != '\n');
}

/* Writes p's keys as a peers file, one named key a line; returns its text (malloc). */
static char *write_back(const struct hush_peers *p, size_t *len)
{
	size_t n = hush_peers_count(p);
	const size_t line = HUSH_KEY_BASE64_LEN + 7; /* key, " peer", CR, LF */
	char *text = malloc(n * line + 1);
	if (text == NULL) {
		abort();
	}
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		hush_key_to_base64(hush_peers_keys(p)[i], text + off);
		memcpy(text + off + HUSH_KEY_BASE64_LEN, " peer\r\n", 7);
		off += line;
	}
	*len = off;
	return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct hush_peers *p = POISON;
	unsigned bad = 12345;
	int rc = hush_peers_parse(&p, text, size, &bad);
	size_t lines = count_lines(data, size);
	if (rc != 0) {
		if (rc != HUSH_EBADKEY || p != POISON || bad == 0 || bad > lines) {
			abort();
		}
	} else {
		if (p == NULL || p == POISON || bad != 0) {
			abort();
		}
		size_t n = hush_peers_count(p);
		const uint8_t(*keys)[HUSH_KEY_SIZE] = hush_peers_keys(p);
		if (n > lines) {
			abort();
		}
		for (size_t i = 0; i < n; i++) {
			if ((i > 0 && memcmp(keys[i - 1], keys[i], HUSH_KEY_SIZE) >= 0) ||
			    !hush_peers_contains(p, keys[i])) {
				abort();
			}
		}
		/* Written back canonically, the list parses to itself. */
		size_t len;
		char *again_text = write_back(p, &len);
		struct hush_peers *q;
		if (hush_peers_parse(&q, again_text, len, NULL) != 0 || hush_peers_count(q) != n ||
		    (n > 0 && memcmp(hush_peers_keys(q), keys, n * HUSH_KEY_SIZE) != 0)) {
			abort();
		}
		hush_peers_free(q);
		free(again_text);
		hush_peers_free(p);
	}
	/* Out of memory: the text is judged first, so only good text sees HUSH_ENOMEM. */
	fuzz_alloc_begin(1);
	struct hush_peers *r = POISON;
	unsigned bad2 = 12345;
	int rc2 = hush_peers_parse(&r, text, size, &bad2);
	fuzz_alloc_end();
	if (r != POISON || rc2 != (rc == 0 ? HUSH_ENOMEM : rc) || bad2 != (rc == 0 ? 0 : bad)) {
		abort();
	}
	return 0;
}
