/*
 * Identities: X25519 key pairs, key files and pre-shared key files. File formats are
 * in include/hush/keys.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <hush/keys.h>

#include "common/common-internal.h"
#include "handshake/handshake-internal.h"

/* Secret files are small; anything longer is not one of ours. */
#define MAX_FILE 4096

void hush_key_to_base64(const uint8_t key[HUSH_KEY_SIZE], char out[HUSH_KEY_BASE64_LEN + 1])
{
	EVP_EncodeBlock((unsigned char *)out, key, HUSH_KEY_SIZE);
	out[HUSH_KEY_BASE64_LEN] = '\0';
}

int hush_key_from_base64(const char *text, uint8_t key[HUSH_KEY_SIZE])
{
	HUSH_ENSURE(text != NULL && key != NULL, HUSH_EINVAL);
	while (*text == ' ' || *text == '\t') {
		text++;
	}
	size_t n = strcspn(text, " \t\r\n");
	for (const char *p = text + n; *p != '\0'; p++) {
		HUSH_ENSURE(*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n', HUSH_EBADKEY);
	}
	/* 32 bytes are 44 characters, the last one '=' padding. */
	HUSH_ENSURE(n == HUSH_KEY_BASE64_LEN && text[43] == '=' && text[42] != '=', HUSH_EBADKEY);
	uint8_t buf[33];
	/* EVP_DecodeBlock ignores padding in its count: 44 characters give 33 bytes. */
	int got = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)n);
	if (got != 33) {
		OPENSSL_cleanse(buf, sizeof(buf));
		return HUSH_EBADKEY;
	}
	memcpy(key, buf, HUSH_KEY_SIZE);
	OPENSSL_cleanse(buf, sizeof(buf));
	return 0;
}

int hush_keypair_generate(struct hush_keypair **out)
{
	HUSH_ENSURE(out != NULL, HUSH_EINVAL);
	struct hush_keypair *kp = hush__calloc(sizeof(*kp));
	HUSH_ENSURE(kp != NULL, HUSH_ENOMEM);
	if (RAND_bytes(kp->priv, HUSH_KEY_SIZE) != 1 || noise_dh_public(kp->priv, kp->pub) != 0) {
		hush__free_secret(kp, sizeof(*kp));
		return HUSH_ECRYPTO;
	}
	*out = kp;
	return 0;
}

void hush_keypair_public(const struct hush_keypair *kp, uint8_t pub[HUSH_KEY_SIZE])
{
	memcpy(pub, kp->pub, HUSH_KEY_SIZE);
}

void hush_keypair_free(struct hush_keypair *kp)
{
	if (kp == NULL) {
		return;
	}
	EVP_PKEY_free(atomic_load(&kp->pkey));
	hush__free_secret(kp, sizeof(*kp));
}

/* Creates path with mode 0600 (never an existing file) and writes text to it. */
static int write_secret_file(const char *path, const char *text)
{
	HUSH_ENSURE(path != NULL, HUSH_EINVAL);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		return errno == EEXIST ? HUSH_EEXIST : HUSH_ESYS;
	}
	size_t len = strlen(text);
	size_t done = 0;
	while (done < len) {
		ssize_t k = write(fd, text + done, len - done);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			close(fd);
			unlink(path);
			return HUSH_ESYS;
		}
		done += (size_t)k;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		unlink(path);
		return HUSH_ESYS;
	}
	return 0;
}

/* Reads a secret file whole into buf (NUL-terminated), refusing loose permissions. */
static int read_secret_file(const char *path, char buf[MAX_FILE + 1])
{
	HUSH_ENSURE(path != NULL, HUSH_EINVAL);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		return HUSH_ESYS;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		close(fd);
		return HUSH_ESYS;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		close(fd);
		return HUSH_EKEYPERM;
	}
	size_t len = 0;
	for (;;) {
		ssize_t k = read(fd, buf + len, MAX_FILE + 1 - len);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k < 0) {
			close(fd);
			OPENSSL_cleanse(buf, MAX_FILE + 1);
			return HUSH_ESYS;
		}
		if (k == 0) {
			break;
		}
		len += (size_t)k;
		if (len > MAX_FILE) {
			close(fd);
			OPENSSL_cleanse(buf, MAX_FILE + 1);
			return HUSH_EBADKEY;
		}
	}
	close(fd);
	buf[len] = '\0';
	return 0;
}

/*
 * Finds "name: value" in text and decodes value as a key. Returns 0, HUSH_EBADKEY
 * (malformed, or the name twice), or 1 when the name is absent.
 */
static int find_key(char *text, const char *name, uint8_t key[HUSH_KEY_SIZE])
{
	size_t nl = strlen(name);
	int found = 1;
	for (char *line = text; line != NULL && *line != '\0';) {
		char *end = strchr(line, '\n');
		if (end != NULL) {
			*end = '\0';
		}
		if (strncmp(line, name, nl) == 0 && line[nl] == ':') {
			if (found == 0) {
				found = HUSH_EBADKEY;
			} else {
				found = hush_key_from_base64(line + nl + 1, key) == 0
					    ? 0
					    : HUSH_EBADKEY;
			}
		} else if (line[0] != '#' && line[0] != '\0' && strchr(line, ':') == NULL) {
			found = HUSH_EBADKEY; /* not a comment, not a blank, not "name: value" */
		}
		if (end != NULL) {
			*end = '\n';
			line = end + 1;
		} else {
			break;
		}
		if (found < 0) {
			break;
		}
	}
	return found;
}

int hush_keypair_load(struct hush_keypair **out, const char *path)
{
	HUSH_ENSURE(out != NULL, HUSH_EINVAL);
	char text[MAX_FILE + 1];
	HUSH_GUARD(read_secret_file(path, text));
	struct hush_keypair kp = {0};
	uint8_t pub[HUSH_KEY_SIZE];
	int rc = find_key(text, "private", kp.priv);
	if (rc == 0) {
		rc = noise_dh_public(kp.priv, kp.pub) == 0 ? 0 : HUSH_EBADKEY;
	} else {
		rc = HUSH_EBADKEY;
	}
	if (rc == 0) {
		int prc = find_key(text, "public", pub);
		if (prc < 0 || (prc == 0 && CRYPTO_memcmp(pub, kp.pub, HUSH_KEY_SIZE) != 0)) {
			rc = HUSH_EBADKEY;
		}
	}
	if (rc == 0) {
		struct hush_keypair *k = hush__alloc(sizeof(*k));
		if (k == NULL) {
			rc = HUSH_ENOMEM;
		} else {
			*k = kp;
			*out = k;
		}
	}
	OPENSSL_cleanse(text, sizeof(text));
	OPENSSL_cleanse(&kp, sizeof(kp));
	return rc;
}

int hush_keypair_save(const struct hush_keypair *kp, const char *path)
{
	HUSH_ENSURE(kp != NULL, HUSH_EINVAL);
	char priv[HUSH_KEY_BASE64_LEN + 1], pub[HUSH_KEY_BASE64_LEN + 1], text[256];
	hush_key_to_base64(kp->priv, priv);
	hush_key_to_base64(kp->pub, pub);
	snprintf(text, sizeof(text),
		 "# hush private key (X25519). Keep this file secret.\nprivate: %s\npublic: %s\n",
		 priv, pub);
	int rc = write_secret_file(path, text);
	OPENSSL_cleanse(priv, sizeof(priv));
	OPENSSL_cleanse(text, sizeof(text));
	return rc;
}

int hush_psk_generate_file(const char *path)
{
	uint8_t psk[HUSH_KEY_SIZE];
	char b64[HUSH_KEY_BASE64_LEN + 1], text[128];
	if (RAND_bytes(psk, sizeof(psk)) != 1) {
		return HUSH_ECRYPTO;
	}
	hush_key_to_base64(psk, b64);
	snprintf(text, sizeof(text), "# hush pre-shared key. Keep this file secret.\npsk: %s\n",
		 b64);
	int rc = write_secret_file(path, text);
	OPENSSL_cleanse(psk, sizeof(psk));
	OPENSSL_cleanse(b64, sizeof(b64));
	OPENSSL_cleanse(text, sizeof(text));
	return rc;
}

int hush_psk_load(const char *path, uint8_t psk[HUSH_KEY_SIZE])
{
	HUSH_ENSURE(psk != NULL, HUSH_EINVAL);
	char text[MAX_FILE + 1];
	HUSH_GUARD(read_secret_file(path, text));
	uint8_t k[HUSH_KEY_SIZE];
	int rc = find_key(text, "psk", k) == 0 ? 0 : HUSH_EBADKEY;
	if (rc == 0) {
		memcpy(psk, k, HUSH_KEY_SIZE);
	}
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(text, sizeof(text));
	return rc;
}
