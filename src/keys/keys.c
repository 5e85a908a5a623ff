/*
 * Identities: X25519 key pairs, key files, pre-shared key files and peers files. File
 * formats are in include/hush/keys.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
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
	if (key == NULL || out == NULL) {
		if (out != NULL) {
			out[0] = '\0';
		}
		return;
	}
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
	/* EVP_DecodeBlock also takes an '=' inside the text, and ignores the two bits the
	 * last character has to spare, so many texts would give one key. Only the key's
	 * own spelling, as hush_key_to_base64() writes it, is a key. The text may be a
	 * secret: compare in constant time. */
	char canon[HUSH_KEY_BASE64_LEN + 1];
	int rc = HUSH_EBADKEY;
	if (got == 33) {
		hush_key_to_base64(buf, canon);
		if (CRYPTO_memcmp(canon, text, HUSH_KEY_BASE64_LEN) == 0) {
			memcpy(key, buf, HUSH_KEY_SIZE);
			rc = 0;
		}
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	OPENSSL_cleanse(canon, sizeof(canon));
	return rc;
}

int hush_keypair_generate(struct hush_keypair **out)
{
	HUSH_ENSURE(out != NULL, HUSH_EINVAL);
	struct hush_keypair *kp = hush__calloc(sizeof(*kp));
	HUSH_ENSURE(kp != NULL, HUSH_ENOMEM);
	if (RAND_bytes(kp->priv, HUSH_KEY_SIZE) != 1 || hush__noise_dh_public(kp->priv, kp->pub) != 0) {
		hush__free_secret(kp, sizeof(*kp));
		return HUSH_ECRYPTO;
	}
	*out = kp;
	return 0;
}

void hush_keypair_public(const struct hush_keypair *kp, uint8_t pub[HUSH_KEY_SIZE])
{
	if (pub == NULL) {
		return;
	}
	if (kp != NULL) {
		memcpy(pub, kp->pub, HUSH_KEY_SIZE);
	} else {
		memset(pub, 0, HUSH_KEY_SIZE);
	}
}

void hush_keypair_free(struct hush_keypair *kp)
{
	if (kp == NULL) {
		return;
	}
	EVP_PKEY_CTX_free(atomic_load(&kp->dh));
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

/*
 * Opens a file to read, refusing anything but a regular file (HUSH_ENOTFILE) without
 * blocking: a FIFO put in a key's place would otherwise block open() until a writer
 * comes, and a device could block any read. O_NONBLOCK makes the open return at once;
 * it changes nothing for a regular file. Fills *st. Returns the descriptor or a
 * negative code (HUSH_ESYS with errno set).
 */
static int open_regular(const char *path, struct stat *st)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		return HUSH_ESYS;
	}
	if (fstat(fd, st) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return HUSH_ESYS;
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return HUSH_ENOTFILE;
	}
	return fd;
}

/* Reads a secret file whole into buf (NUL-terminated), refusing loose permissions. */
static int read_secret_file(const char *path, char buf[MAX_FILE + 1])
{
	HUSH_ENSURE(path != NULL, HUSH_EINVAL);
	struct stat st;
	int fd = open_regular(path, &st);
	if (fd < 0) {
		return fd;
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

int hush__keypair_parse(char *text, struct hush_keypair *out)
{
	struct hush_keypair kp = {0};
	uint8_t pub[HUSH_KEY_SIZE];
	static const uint8_t zero[HUSH_KEY_SIZE];
	int rc = find_key(text, "private", kp.priv);
	/* An all-zero private key is no secret: a placeholder or a wiped file. */
	if (rc == 0 && CRYPTO_memcmp(kp.priv, zero, HUSH_KEY_SIZE) == 0) {
		rc = HUSH_EBADKEY;
	} else if (rc == 0) {
		rc = hush__noise_dh_public(kp.priv, kp.pub) == 0 ? 0 : HUSH_EBADKEY;
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
		*out = kp;
	}
	OPENSSL_cleanse(&kp, sizeof(kp));
	return rc;
}

int hush_keypair_load(struct hush_keypair **out, const char *path)
{
	HUSH_ENSURE(out != NULL, HUSH_EINVAL);
	char text[MAX_FILE + 1];
	HUSH_GUARD(read_secret_file(path, text));
	struct hush_keypair kp;
	int rc = hush__keypair_parse(text, &kp);
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

int hush__psk_parse(char *text, uint8_t psk[HUSH_KEY_SIZE])
{
	uint8_t k[HUSH_KEY_SIZE];
	int rc = find_key(text, "psk", k) == 0 ? 0 : HUSH_EBADKEY;
	if (rc == 0) {
		memcpy(psk, k, HUSH_KEY_SIZE);
	}
	OPENSSL_cleanse(k, sizeof(k));
	return rc;
}

int hush_psk_load(const char *path, uint8_t psk[HUSH_KEY_SIZE])
{
	HUSH_ENSURE(psk != NULL, HUSH_EINVAL);
	char text[MAX_FILE + 1];
	HUSH_GUARD(read_secret_file(path, text));
	int rc = hush__psk_parse(text, psk);
	OPENSSL_cleanse(text, sizeof(text));
	return rc;
}

/*
 * A peer list: one block holding cap key slots, of which the first n are used, sorted
 * and distinct. cap is the number of key lines in the file, so duplicates leave unused
 * slots at the end; it is kept to give the block's size back to the allocator.
 */
struct hush_peers {
	size_t n;
	size_t cap;
	uint8_t keys[][HUSH_KEY_SIZE];
};

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * Reads one line of a peers file, [s, s + n) without its LF. Returns 1 with key set for
 * a key line, 0 for a blank or comment line, HUSH_EBADKEY for anything else.
 */
static int peers_line(const char *s, size_t n, uint8_t key[HUSH_KEY_SIZE])
{
	HUSH_ENSURE(memchr(s, '\0', n) == NULL, HUSH_EBADKEY);
	if (n > 0 && s[n - 1] == '\r') {
		n--;
	}
	size_t i = 0;
	while (i < n && is_blank(s[i])) {
		i++;
	}
	if (i == n || s[i] == '#') {
		return 0;
	}
	size_t start = i;
	while (i < n && !is_blank(s[i])) {
		i++;
	}
	/* After the key comes the end of the line or a blank: "key#name" is malformed. */
	HUSH_ENSURE(i - start == HUSH_KEY_BASE64_LEN, HUSH_EBADKEY);
	char token[HUSH_KEY_BASE64_LEN + 1];
	memcpy(token, s + start, HUSH_KEY_BASE64_LEN);
	token[HUSH_KEY_BASE64_LEN] = '\0';
	HUSH_ENSURE(hush_key_from_base64(token, key) == 0, HUSH_EBADKEY);
	return 1;
}

/*
 * Runs peers_line() over every line of text, counting the keys into *n_keys. With keys
 * not NULL it also stores them in file order, at most cap of them. On HUSH_EBADKEY,
 * *bad_line is the line at fault (0 when the keys did not fit).
 */
static int peers_scan(const char *text, size_t len, uint8_t (*keys)[HUSH_KEY_SIZE], size_t cap,
		      size_t *n_keys, unsigned *bad_line)
{
	size_t n = 0;
	unsigned line = 0;
	for (size_t pos = 0; pos < len;) {
		const char *end = memchr(text + pos, '\n', len - pos);
		size_t k = end != NULL ? (size_t)(end - (text + pos)) : len - pos;
		line++;
		uint8_t key[HUSH_KEY_SIZE];
		int rc = peers_line(text + pos, k, key);
		/* A low-order point is no one's key: every DH with it gives zero. Judged in
		 * the first pass, which sees every line. */
		if (rc == 1 && keys == NULL && hush__noise_dh_check_public(key) != 0) {
			rc = HUSH_EBADKEY;
		}
		if (rc < 0) {
			*bad_line = line;
			return rc;
		}
		if (rc == 1) {
			if (keys != NULL) {
				if (n == cap) {
					*bad_line = 0;
					return HUSH_EBADKEY;
				}
				memcpy(keys[n], key, HUSH_KEY_SIZE);
			}
			n++;
		}
		pos += k + (end != NULL ? 1 : 0);
	}
	*n_keys = n;
	return 0;
}

static int key_order(const void *a, const void *b)
{
	return memcmp(a, b, HUSH_KEY_SIZE);
}

static size_t peers_block_size(size_t cap)
{
	return sizeof(struct hush_peers) + cap * HUSH_KEY_SIZE;
}

/* Sorts keys[0..n) and keeps one of each run of equal keys; returns how many remain. */
static size_t sort_unique(uint8_t (*keys)[HUSH_KEY_SIZE], size_t n)
{
	if (n < 2) {
		return n;
	}
	qsort(keys, n, HUSH_KEY_SIZE, key_order);
	size_t kept = 1;
	for (size_t i = 1; i < n; i++) {
		if (memcmp(keys[kept - 1], keys[i], HUSH_KEY_SIZE) != 0) {
			memmove(keys[kept], keys[i], HUSH_KEY_SIZE);
			kept++;
		}
	}
	return kept;
}

int hush_peers_parse(struct hush_peers **out, const char *text, size_t len, unsigned *bad_line)
{
	unsigned line = 0;
	if (bad_line != NULL) {
		*bad_line = 0;
	}
	HUSH_ENSURE(out != NULL && text != NULL, HUSH_EINVAL);
	HUSH_ENSURE(len <= HUSH_PEERS_MAX_FILE, HUSH_EBADKEY);
	/* Check every line before allocating, so a malformed file is HUSH_EBADKEY
	 * whatever the allocator does, and the block is sized once. */
	size_t cap = 0;
	int rc = peers_scan(text, len, NULL, 0, &cap, &line);
	struct hush_peers *p = NULL;
	if (rc == 0) {
		p = hush__alloc(peers_block_size(cap));
		rc = p != NULL ? 0 : HUSH_ENOMEM;
	}
	if (rc == 0) {
		/* Cannot fail unless the text changed under us, which the borrow forbids;
		 * even then no slot past cap is written. */
		size_t n;
		rc = peers_scan(text, len, p->keys, cap, &n, &line);
		if (rc == 0 && n != cap) {
			rc = HUSH_EBADKEY;
			line = 0;
		}
	}
	if (rc != 0) {
		hush__free(p, peers_block_size(cap));
		if (bad_line != NULL) {
			*bad_line = line;
		}
		return rc;
	}
	p->cap = cap;
	p->n = sort_unique(p->keys, cap);
	*out = p;
	return 0;
}

/*
 * Reads fd to its end into a new buffer from the allocator. A file longer than max
 * bytes is HUSH_EBADKEY. *buf is the caller's, *cap bytes long, on success.
 */
static int read_whole(int fd, size_t max, char **buf_out, size_t *len_out, size_t *cap_out)
{
	struct stat st;
	HUSH_ENSURE(fstat(fd, &st) == 0, HUSH_ESYS);
	/* One byte more than a regular file's size, so its end is seen without growing;
	 * other files (pipes, say) start small and grow. */
	size_t cap = 4096;
	if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size >= cap) {
		cap = (uintmax_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
	}
	if (cap > max + 1) {
		cap = max + 1;
	}
	char *buf = hush__alloc(cap);
	HUSH_ENSURE(buf != NULL, HUSH_ENOMEM);
	size_t len = 0;
	int rc = 0;
	for (;;) {
		if (len == cap) {
			/* len <= max here, so cap < max + 1: there is room to grow. */
			size_t ncap = cap > (max + 1) / 2 ? max + 1 : 2 * cap;
			char *nb = hush__alloc(ncap);
			if (nb == NULL) {
				rc = HUSH_ENOMEM;
				break;
			}
			memcpy(nb, buf, len);
			hush__free(buf, cap);
			buf = nb;
			cap = ncap;
		}
		ssize_t k = read(fd, buf + len, cap - len);
		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k < 0) {
			rc = HUSH_ESYS;
			break;
		}
		if (k == 0) {
			break;
		}
		len += (size_t)k;
		if (len > max) {
			rc = HUSH_EBADKEY;
			break;
		}
	}
	if (rc != 0) {
		int saved = errno;
		hush__free(buf, cap);
		errno = saved;
		return rc;
	}
	*buf_out = buf;
	*len_out = len;
	*cap_out = cap;
	return 0;
}

int hush_peers_load(struct hush_peers **out, const char *path, unsigned *bad_line)
{
	if (bad_line != NULL) {
		*bad_line = 0;
	}
	HUSH_ENSURE(out != NULL && path != NULL, HUSH_EINVAL);
	struct stat st;
	int fd = open_regular(path, &st);
	if (fd < 0) {
		return fd;
	}
	char *buf;
	size_t len, cap;
	int rc = read_whole(fd, HUSH_PEERS_MAX_FILE, &buf, &len, &cap);
	int saved = errno;
	close(fd);
	errno = saved;
	if (rc == 0) {
		rc = hush_peers_parse(out, buf, len, bad_line);
		hush__free(buf, cap);
	}
	return rc;
}

size_t hush_peers_count(const struct hush_peers *p)
{
	return p != NULL ? p->n : 0;
}

const uint8_t (*hush_peers_keys(const struct hush_peers *p))[HUSH_KEY_SIZE]
{
	return p != NULL ? (const uint8_t(*)[HUSH_KEY_SIZE])p->keys : NULL;
}

bool hush_peers_contains(const struct hush_peers *p, const uint8_t key[HUSH_KEY_SIZE])
{
	if (p == NULL || key == NULL) {
		return false;
	}
	/* No early exit: every key is compared, so the time does not tell where the
	 * match was. */
	int found = 0;
	for (size_t i = 0; i < p->n; i++) {
		found |= CRYPTO_memcmp(p->keys[i], key, HUSH_KEY_SIZE) == 0;
	}
	return found != 0;
}

void hush_peers_free(struct hush_peers *p)
{
	if (p == NULL) {
		return;
	}
	hush__free(p, peers_block_size(p->cap));
}
