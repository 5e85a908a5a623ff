/*
 * bench-record: seal and open throughput of hush's record layer per protocol, beside the
 * raw EVP AEAD doing the same work on the same sizes in the same run (the ceiling), with
 * allocations counted through the hooks of hush, OpenSSL and libevent.
 *
 *   bench-record [--quick]
 *
 * Sizes are payload bytes per record: 1K = 1024; 16K = 16360, the largest payload of a
 * default 16384-byte frame; 1M = 1048556, the largest payload of a frame whose LENGTH is
 * the default receive limit of 1048576. MB/s counts payload bytes (10^6 per MB).
 *
 * Both sides work alike: a batch of buffers, each sealed (or opened) in place per call,
 * one EVP_CIPHER_CTX per direction keyed once, the nonce set per record. Opening needs
 * frames sealed in order, so a batch is sealed untimed before it is opened timed. hush
 * and raw EVP runs alternate in rounds so that a noisy neighbour slows both alike; the
 * figures are totals over all rounds.
 *
 * Output: Go benchmark format, one line per result, e.g.
 *   BenchmarkRecord/raw-evp/seal/aes-128-gcm/16K-1  N  x ns/op  y MB/s  0 B/op  0 allocs/op
 *   BenchmarkRecord/seal/ALTSRP_GCM_AES128_REKEY/16K-1  N  x ns/op  y MB/s  0 B/op
 *       0 allocs/op  0.98 ratio-vs-raw
 * ratio-vs-raw is raw EVP's ns/op over hush's for the same cipher, size and operation:
 * 1 means no overhead. The REKEY protocols derive a key (HMAC, a few OpenSSL allocations)
 * once per 65536 records, which shows as a small fraction in B/op on small records.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include <hush/record.h>

#include "benchlib.h"

enum op { SEAL, OPEN };

struct size_case {
	const char *name;
	size_t payload;
};

static const struct size_case sizes[] = {
    {"1K", 1024},
    {"16K", HUSH_RECORD_DEFAULT_SEND_FRAME - HUSH_RECORD_OVERHEAD},
    {"1M", HUSH_RECORD_DEFAULT_RECV_LIMIT + HUSH_RECORD_LENGTH_SIZE - HUSH_RECORD_OVERHEAD},
};

struct variant {
	const char *name;	      /* wire name, or the raw cipher's name */
	enum hush_record_protocol rp; /* 0 for raw EVP */
	const char *cipher;	      /* OpenSSL name of the AEAD */
	int raw_index;		      /* for hush: the raw variant it is compared with */
};

static const struct variant variants[] = {
    {"aes-128-gcm", 0, "AES-128-GCM", -1},
    {"ALTSRP_GCM_AES128_REKEY", HUSH_RP_ALTS_AES128_GCM_REKEY, "AES-128-GCM", 0},
    {"ALTSRP_GCM_AES128", HUSH_RP_ALTS_AES128_GCM, "AES-128-GCM", 0},
    {"chacha20-poly1305", 0, "ChaCha20-Poly1305", -1},
    {"HUSHRP_CHACHA20_POLY1305_REKEY", HUSH_RP_CHACHA20_POLY1305_REKEY, "ChaCha20-Poly1305", 3},
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

/* One variant's state for one size and operation, and what it measured. */
struct run {
	const struct variant *v;
	size_t len; /* payload bytes */
	size_t cap; /* frame bytes: len + 24 */
	size_t batch;
	uint8_t **bufs;
	/* raw EVP */
	EVP_CIPHER *cipher;
	EVP_CIPHER_CTX *enc, *dec;
	uint64_t nonce_seq, open_seq;
	/* hush */
	struct hush_record *client, *server;
	/* results */
	uint64_t n, ns, allocs, bytes;
};

static void die(const char *what)
{
	fprintf(stderr, "bench-record: %s\n", what);
	exit(1);
}

static void nonce_of(uint64_t seq, uint8_t nonce[12])
{
	memset(nonce, 0, 12);
	for (int i = 0; i < 8; i++) {
		nonce[i] = (uint8_t)(seq >> (8 * i));
	}
}

/* Raw EVP seal of one buffer: payload at +8 encrypted in place, tag after it. */
static void raw_seal(struct run *r, uint8_t *buf)
{
	uint8_t nonce[12];
	uint8_t *p = buf + HUSH_RECORD_HEADER_SIZE;
	int n = 0;
	nonce_of(r->nonce_seq++, nonce);
	if (EVP_CipherInit_ex(r->enc, NULL, NULL, NULL, nonce, 1) != 1 ||
	    EVP_CipherUpdate(r->enc, p, &n, p, (int)r->len) != 1 ||
	    EVP_CipherFinal_ex(r->enc, p + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(r->enc, EVP_CTRL_AEAD_GET_TAG, 16, p + r->len) != 1) {
		die("raw seal failed");
	}
}

/* Raw EVP open of one buffer sealed by raw_seal, in the same order. */
static void raw_open(struct run *r, uint8_t *buf)
{
	uint8_t nonce[12];
	uint8_t *p = buf + HUSH_RECORD_HEADER_SIZE;
	int n = 0;
	nonce_of(r->open_seq++, nonce);
	if (EVP_CipherInit_ex(r->dec, NULL, NULL, NULL, nonce, 0) != 1 ||
	    EVP_CipherUpdate(r->dec, p, &n, p, (int)r->len) != 1 ||
	    EVP_CIPHER_CTX_ctrl(r->dec, EVP_CTRL_AEAD_SET_TAG, 16, p + r->len) != 1 ||
	    EVP_CipherFinal_ex(r->dec, p + n, &n) != 1) {
		die("raw open failed");
	}
}

static void hush_seal(struct run *r, uint8_t *buf)
{
	size_t flen;
	if (hush_record_seal(r->client, buf, r->cap, r->len, &flen) != 0) {
		die("hush seal failed");
	}
}

static void hush_open(struct run *r, uint8_t *buf)
{
	struct hush_iovec pt;
	if (hush_record_open(r->server, buf, r->cap, &pt) != 0) {
		die("hush open failed");
	}
}

static void run_setup(struct run *r, const struct variant *v, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->v = v;
	r->len = len;
	r->cap = len + HUSH_RECORD_OVERHEAD;
	/* About 1 MiB of buffers: past L1 and L2 as a stream of records would be. */
	r->batch = ((size_t)1 << 20) / r->cap;
	r->batch = r->batch < 4 ? 4 : r->batch > 64 ? 64 : r->batch;
	r->bufs = calloc(r->batch, sizeof(*r->bufs));
	if (r->bufs == NULL) {
		die("out of memory");
	}
	for (size_t k = 0; k < r->batch; k++) {
		r->bufs[k] = calloc(1, r->cap);
		if (r->bufs[k] == NULL) {
			die("out of memory");
		}
	}
	static const uint8_t key[44] = {7, 1, 2, 3};
	if (v->rp == 0) {
		r->cipher = EVP_CIPHER_fetch(NULL, v->cipher, NULL);
		r->enc = EVP_CIPHER_CTX_new();
		r->dec = EVP_CIPHER_CTX_new();
		if (r->cipher == NULL || r->enc == NULL || r->dec == NULL ||
		    EVP_CipherInit_ex(r->enc, r->cipher, NULL, key, NULL, 1) != 1 ||
		    EVP_CipherInit_ex(r->dec, r->cipher, NULL, key, NULL, 0) != 1) {
			die("raw EVP setup failed");
		}
		return;
	}
	size_t klen = hush_record_key_size(v->rp);
	if (hush_record_new(&r->client, v->rp, key, klen, HUSH_SIDE_CLIENT) != 0 ||
	    hush_record_new(&r->server, v->rp, key, klen, HUSH_SIDE_SERVER) != 0 ||
	    hush_record_set_limits(r->client, r->cap, 0) != 0 ||
	    hush_record_max_frame(r->server) < r->cap) {
		die("hush setup failed");
	}
}

static void run_teardown(struct run *r)
{
	for (size_t k = 0; k < r->batch; k++) {
		free(r->bufs[k]);
	}
	free(r->bufs);
	EVP_CIPHER_CTX_free(r->enc);
	EVP_CIPHER_CTX_free(r->dec);
	EVP_CIPHER_free(r->cipher);
	hush_record_free(r->client);
	hush_record_free(r->server);
}

/* Runs whole batches of op until budget_ns of timed work; counts only timed work. */
static void run_for(struct run *r, enum op op, uint64_t budget_ns, int count)
{
	bool raw = r->v->rp == 0;
	uint64_t spent = 0;
	while (spent < budget_ns) {
		if (op == OPEN) {
			for (size_t k = 0; k < r->batch; k++) {
				if (raw) {
					raw_seal(r, r->bufs[k]);
				} else {
					hush_seal(r, r->bufs[k]);
				}
			}
		}
		struct bench_alloc_counts a0, a1;
		bench_alloc_read(&a0);
		uint64_t t0 = bench_now_ns();
		for (size_t k = 0; k < r->batch; k++) {
			if (raw) {
				(op == SEAL ? raw_seal : raw_open)(r, r->bufs[k]);
			} else {
				(op == SEAL ? hush_seal : hush_open)(r, r->bufs[k]);
			}
		}
		uint64_t t1 = bench_now_ns();
		bench_alloc_read(&a1);
		spent += t1 - t0;
		if (count) {
			r->ns += t1 - t0;
			r->n += r->batch;
			r->allocs += a1.allocs - a0.allocs;
			r->bytes += a1.bytes - a0.bytes;
		}
	}
}

int main(int argc, char **argv)
{
	if (bench_alloc_install() < 0) {
		die("cannot hook OpenSSL's allocator");
	}
	int quick = bench_has_flag(argc, argv, "--quick");
	uint64_t per_variant_ns = quick ? 150000000u : 1000000000u;
	int rounds = 10;
	static const char *opnames[] = {"seal", "open"};
	for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		for (int op = SEAL; op <= OPEN; op++) {
			struct run runs[NVARIANTS];
			for (size_t i = 0; i < NVARIANTS; i++) {
				run_setup(&runs[i], &variants[i], sizes[z].payload);
				/* Warm up: first keys derived, buffers paged in. */
				run_for(&runs[i], (enum op)op, 1, 0);
			}
			for (int round = 0; round < rounds; round++) {
				for (size_t i = 0; i < NVARIANTS; i++) {
					run_for(&runs[i], (enum op)op, per_variant_ns / rounds, 1);
				}
			}
			for (size_t i = 0; i < NVARIANTS; i++) {
				struct run *r = &runs[i];
				double ns = (double)r->ns / (double)r->n;
				char name[128];
				struct bench_metric m[5] = {
				    {ns, "ns/op"},
				    {(double)r->len / ns * 1e3, "MB/s"},
				    {(double)r->bytes / (double)r->n, "B/op"},
				    {(double)r->allocs / (double)r->n, "allocs/op"},
				    {0, "ratio-vs-raw"},
				};
				size_t nm = 4;
				if (r->v->rp == 0) {
					snprintf(name, sizeof(name), "Record/raw-evp/%s/%s/%s",
						 opnames[op], r->v->name, sizes[z].name);
				} else {
					const struct run *raw = &runs[r->v->raw_index];
					double raw_ns = (double)raw->ns / (double)raw->n;
					m[4].value = raw_ns / ns;
					nm = 5;
					snprintf(name, sizeof(name), "Record/%s/%s/%s", opnames[op],
						 r->v->name, sizes[z].name);
				}
				bench_print(name, 1, r->n, m, nm);
			}
			for (size_t i = 0; i < NVARIANTS; i++) {
				run_teardown(&runs[i]);
			}
		}
	}
	return 0;
}
