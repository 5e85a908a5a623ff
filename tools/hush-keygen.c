/*
 * hush-keygen: makes hush identities.
 *
 *   hush-keygen PRIVATE_KEY_FILE            new key pair: writes the private key file
 *                                           (mode 0600), prints the public key (base64)
 *   hush-keygen --public PRIVATE_KEY_FILE   prints the public key of an existing file
 *   hush-keygen --psk PSK_FILE              writes a fresh 32-byte pre-shared key
 *                                           (base64 text, mode 0600)
 *
 * It never overwrites an existing file. A missing parent folder is created, with mode
 * 0700 (it is to hold a secret), as are any missing above it; existing folders are left
 * as they are. Exit status: 0 on success, 1 on failure, 2 on bad usage.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <hush/keys.h>

static int fail(const char *path, int rc)
{
	if (rc == HUSH_ESYS) {
		fprintf(stderr, "hush-keygen: %s: %s\n", path, strerror(errno));
	} else if (rc == HUSH_EEXIST) {
		fprintf(stderr, "hush-keygen: %s: file exists; refusing to overwrite it\n", path);
	} else {
		fprintf(stderr, "hush-keygen: %s: %s\n", path, hush_strerror(rc));
	}
	return 1;
}

/* Creates the folders above the file path that do not exist yet, each with mode 0700.
 * Returns 0, or -1 with errno set (ENAMETOOLONG for a path longer than PATH_MAX). */
static int make_parents(const char *path)
{
	char dir[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dir, path, n + 1);
	char *slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir) {
		return 0; /* the current folder or the root: both exist */
	}
	*slash = '\0';
	struct stat st;
	if (stat(dir, &st) == 0) {
		return 0;
	}
	if (errno != ENOENT || make_parents(dir) != 0) {
		return -1;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		return -1;
	}
	fprintf(stderr, "hush-keygen: created %s (mode 700)\n", dir);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--psk") == 0) {
		if (make_parents(argv[2]) != 0) {
			return fail(argv[2], HUSH_ESYS);
		}
		int rc = hush_psk_generate_file(argv[2]);
		return rc == 0 ? 0 : fail(argv[2], rc);
	}
	struct hush_keypair *kp = NULL;
	const char *path;
	int rc;
	if (argc == 3 && strcmp(argv[1], "--public") == 0) {
		path = argv[2];
		rc = hush_keypair_load(&kp, path);
	} else if (argc == 2 && argv[1][0] != '-') {
		path = argv[1];
		if (make_parents(path) != 0) {
			return fail(path, HUSH_ESYS);
		}
		rc = hush_keypair_generate(&kp);
		if (rc == 0) {
			rc = hush_keypair_save(kp, path);
		}
	} else {
		fprintf(stderr, "usage: hush-keygen PRIVATE_KEY_FILE\n"
				"       hush-keygen --public PRIVATE_KEY_FILE\n"
				"       hush-keygen --psk PSK_FILE\n");
		return 2;
	}
	if (rc != 0) {
		hush_keypair_free(kp);
		return fail(path, rc);
	}
	uint8_t pub[HUSH_KEY_SIZE];
	char b64[HUSH_KEY_BASE64_LEN + 1];
	hush_keypair_public(kp, pub);
	hush_key_to_base64(pub, b64);
	printf("%s\n", b64);
	hush_keypair_free(kp);
	return 0;
}
