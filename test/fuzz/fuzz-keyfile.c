/*
 * libFuzzer harness: the text parsers of secret key files (src/keys/keys.c):
 * hush__keypair_parse() and hush__psk_parse(), which hush_keypair_load() and
 * hush_psk_load() run on a file's content, and hush_key_from_base64(). Every input goes
 * to all three, as the loaders see a file: up to its first zero byte. Checks that the
 * text is given back unchanged, that outputs are untouched on failure, that a parsed
 * private key comes with its own public key, that a key is accepted only in the
 * spelling hush_key_to_base64() gives it, and that what parses survives a round trip
 * through the format hush writes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hush/keys.h>

#include "fuzzlib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The loaders read at most this much; a longer file is refused before parsing. */
#define MAX_FILE 4096

static void check_keypair(char *text, size_t len, const char *orig)
{
	struct hush_keypair kp;
	memset(&kp, 0xa5, sizeof(kp));
	int rc = hush__keypair_parse(text, &kp);
	if (memcmp(text, orig, len + 1) != 0) {
		abort(); /* the text must come back as it was */
	}
	if (rc != 0) {
		for (size_t i = 0; i < sizeof(kp); i++) {
			if (((const uint8_t *)&kp)[i] != 0xa5 || rc != HUSH_EBADKEY) {
				abort();
			}
		}
		return;
	}
	uint8_t pub[HUSH_KEY_SIZE];
	if (hush__noise_dh_public(kp.priv, pub) != 0 || memcmp(pub, kp.pub, HUSH_KEY_SIZE) != 0) {
		abort();
	}
	/* The file hush_keypair_save() would write for it parses to the same pair. */
	char p64[HUSH_KEY_BASE64_LEN + 1], q64[HUSH_KEY_BASE64_LEN + 1], file[256];
	hush_key_to_base64(kp.priv, p64);
	hush_key_to_base64(kp.pub, q64);
	snprintf(file, sizeof(file), "# hush private key\nprivate: %s\npublic: %s\n", p64, q64);
	struct hush_keypair again;
	if (hush__keypair_parse(file, &again) != 0 || memcmp(&again, &kp, sizeof(kp)) != 0) {
		abort();
	}
}

static void check_psk(char *text, size_t len, const char *orig)
{
	uint8_t psk[HUSH_KEY_SIZE], untouched[HUSH_KEY_SIZE];
	memset(psk, 0x3c, sizeof(psk));
	memset(untouched, 0x3c, sizeof(untouched));
	int rc = hush__psk_parse(text, psk);
	if (memcmp(text, orig, len + 1) != 0) {
		abort();
	}
	if (rc != 0) {
		if (rc != HUSH_EBADKEY || memcmp(psk, untouched, sizeof(psk)) != 0) {
			abort();
		}
		return;
	}
	char b64[HUSH_KEY_BASE64_LEN + 1], file[128];
	hush_key_to_base64(psk, b64);
	snprintf(file, sizeof(file), "psk: %s\n", b64);
	uint8_t again[HUSH_KEY_SIZE];
	if (hush__psk_parse(file, again) != 0 || memcmp(again, psk, sizeof(psk)) != 0) {
		abort();
	}
}

static void check_base64(const char *text)
{
	uint8_t key[HUSH_KEY_SIZE], untouched[HUSH_KEY_SIZE];
	memset(key, 0x77, sizeof(key));
	memset(untouched, 0x77, sizeof(untouched));
	int rc = hush_key_from_base64(text, key);
	if (rc != 0) {
		if (rc != HUSH_EBADKEY || memcmp(key, untouched, sizeof(key)) != 0) {
			abort();
		}
		return;
	}
	char b64[HUSH_KEY_BASE64_LEN + 1];
	uint8_t again[HUSH_KEY_SIZE];
	hush_key_to_base64(key, b64);
	if (hush_key_from_base64(b64, again) != 0 || memcmp(again, key, sizeof(key)) != 0) {
		abort();
	}
	/* What was accepted, blanks around it aside, is exactly the key's base64: one key
	 * has one spelling, and nothing that is not base64 passes for a key. */
	text += strspn(text, " \t");
	if (strncmp(text, b64, HUSH_KEY_BASE64_LEN) != 0) {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > MAX_FILE) {
		return 0;
	}
	/* Exactly sized copies, so ASan sees a read past the terminating zero. */
	char *text = malloc(size + 1);
	char *orig = malloc(size + 1);
	if (text == NULL || orig == NULL) {
		abort();
	}
	memcpy(text, data, size);
	text[size] = '\0';
	size_t len = strlen(text); /* the loaders stop at the first zero byte */
	memcpy(orig, text, size + 1);
	check_keypair(text, len, orig);
	check_psk(text, len, orig);
	check_base64(text);
	free(text);
	free(orig);
	return 0;
}
