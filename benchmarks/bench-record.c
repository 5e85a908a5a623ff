/*
 * bench-record: seal and open throughput of hush's record layer per protocol, beside
 * the raw EVP AEAD on the same sizes in the same run (the ceiling), with allocations
 * counted through the hooks of hush, OpenSSL and libevent.
 *
 *   bench-record [--quick]
 *
 * Output: Go benchmark format, one line per result, e.g.
 *   BenchmarkRecord/seal/ALTSRP_GCM_AES128_REKEY/16K-1  N  x ns/op  y MB/s  0 B/op
 *   0 allocs/op  0.97 ratio-vs-raw
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include <hush/record.h>

#include "benchlib.h"

struct size_case {
	const char *name;
	size_t payload;
};

/* 16K is one default record: 16384 bytes on the wire, 16360 of payload. */
static const struct size_case sizes[] = {
	{"1K", 1024},
	{"16K", 16384 - 24},
	{"1M", 1048576 - 20},
};

static uint64_t target_ns;

/* Raw AEAD on the same bytes: one context keyed once, per record: set the nonce,
 * encrypt or decrypt in place, produce or check the tag. */
static double raw_aead(const EVP_CIPHER *cipher, size_t len, int enc, uint64_t *iters)
{
	static const uint8_t key[32] = {1};
	uint8_t nonce[12] = {0};
	uint8_t tag[16];
	uint8_t *buf = calloc(1, len + 16);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	EVP_CipherInit_ex(ctx, cipher, NULL, key, NULL, 1);
	int n;
	/* For decryption, a valid tag for the zero plaintext is needed at each nonce; the
	 * decrypt loop therefore checks the tag of its own encryption under the same
	 * nonce, which costs what a receiver pays. */
	uint64_t count = 0;
	uint64_t start = bench_now_ns();
	uint64_t now = start;
	while (now - start < target_ns) {
		for (int k = 0; k < 16; k++) {
			nonce[0] = (uint8_t)count;
			nonce[1] = (uint8_t)(count >> 8);
			if (enc) {
				EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, 1);
				EVP_CipherUpdate(ctx, buf, &n, buf, (int)len);
				EVP_CipherFinal_ex(ctx, buf + n, &n);
				EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
			} else {
				EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, 0);
				EVP_CipherUpdate(ctx, buf, &n, buf, (int)len);
				EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag);
				EVP_CipherFinal_ex(ctx, buf + n, &n); /* fails: timing is the same */
			}
			count++;
		}
		now = bench_now_ns();
	}
	EVP_CIPHER_CTX_free(ctx);
	free(buf);
	*iters = count;
	return (double)(now - start) / (double)count;
}

/* hush: seal (or seal then open, timing only the open) records of len bytes. */
static double hush_records(enum hush_record_protocol rp, size_t len, int seal_only,
			   uint64_t *iters, struct bench_alloc_counts *delta)
{
	uint8_t key[44] = {7};
	struct hush_record *c = NULL, *s = NULL;
	if (hush_record_new(&c, rp, key, hush_record_key_size(rp), HUSH_SIDE_CLIENT) < 0 ||
	    hush_record_new(&s, rp, key, hush_record_key_size(rp), HUSH_SIDE_SERVER) < 0 ||
	    hush_record_set_limits(c, len + 24, 0) < 0) {
		fprintf(stderr, "bench-record: setup failed\n");
		exit(1);
	}
	size_t cap = len + 24;
	uint8_t *frame = calloc(1, cap);
	uint8_t *copy = calloc(1, cap);
	size_t flen = 0;
	struct hush_iovec pt;
	/* Warm up: derive the first key, touch the buffers. */
	for (int k = 0; k < 4; k++) {
		if (hush_record_seal(c, frame, cap, len, &flen) < 0 ||
		    hush_record_open(s, frame, flen, &pt) < 0) {
			fprintf(stderr, "bench-record: warm-up failed\n");
			exit(1);
		}
	}
	/* Opening needs frames sealed in order: seal a batch (not timed), then time
	 * opening it. Sealing is timed in a loop of its own. */
	size_t batch = (4u << 20) / cap;
	batch = batch < 1 ? 1 : batch > 64 ? 64 : batch;
	uint8_t **frames = calloc(batch, sizeof(*frames));
	for (size_t k = 0; k < batch; k++) {
		frames[k] = calloc(1, cap);
	}
	struct bench_alloc_counts a0, a1;
	bench_alloc_read(&a0);
	uint64_t count = 0, spent = 0;
	uint64_t start = bench_now_ns();
	int rc = 0;
	while (spent < target_ns && bench_now_ns() - start < 4 * target_ns) {
		if (seal_only) {
			uint64_t t0 = bench_now_ns();
			for (size_t k = 0; k < batch; k++) {
				rc |= hush_record_seal(c, frame, cap, len, &flen);
			}
			spent += bench_now_ns() - t0;
		} else {
			for (size_t k = 0; k < batch; k++) {
				rc |= hush_record_seal(c, frames[k], cap, len, &flen);
			}
			uint64_t t0 = bench_now_ns();
			for (size_t k = 0; k < batch; k++) {
				rc |= hush_record_open(s, frames[k], flen, &pt);
			}
			spent += bench_now_ns() - t0;
		}
		if (rc < 0) {
			fprintf(stderr, "bench-record: record failed\n");
			exit(1);
		}
		count += batch;
	}
	bench_alloc_read(&a1);
	delta->allocs = a1.allocs - a0.allocs;
	delta->bytes = a1.bytes - a0.bytes;
	for (size_t k = 0; k < batch; k++) {
		free(frames[k]);
	}
	free(frames);
	free(frame);
	free(copy);
	hush_record_free(c);
	hush_record_free(s);
	*iters = count;
	return (double)spent / (double)count;
}

int main(int argc, char **argv)
{
	if (bench_alloc_install() < 0) {
		fprintf(stderr, "bench-record: cannot hook OpenSSL's allocator\n");
		return 1;
	}
	target_ns = bench_has_flag(argc, argv, "--quick") ? 150000000u : 1000000000u;
	static const struct {
		enum hush_record_protocol rp;
		const char *raw;
		const char *cipher;
	} protos[] = {
		{HUSH_RP_ALTS_AES128_GCM_REKEY, "aes-128-gcm", "AES-128-GCM"},
		{HUSH_RP_ALTS_AES128_GCM, "aes-128-gcm", "AES-128-GCM"},
		{HUSH_RP_CHACHA20_POLY1305_REKEY, "chacha20-poly1305", "ChaCha20-Poly1305"},
	};
	for (size_t z = 0; z < sizeof(sizes) / sizeof(sizes[0]); z++) {
		size_t len = sizes[z].payload;
		for (int op = 0; op < 2; op++) {
			const char *opname = op == 0 ? "seal" : "open";
			double raw_ns[2] = {0, 0};
			const char *raw_seen[2] = {NULL, NULL};
			for (size_t p = 0; p < sizeof(protos) / sizeof(protos[0]); p++) {
				int ci = protos[p].rp == HUSH_RP_CHACHA20_POLY1305_REKEY;
				if (raw_seen[ci] == NULL) {
					EVP_CIPHER *ciph = EVP_CIPHER_fetch(NULL, protos[p].cipher, NULL);
					uint64_t it;
					raw_ns[ci] = raw_aead(ciph, len, op == 0, &it);
					EVP_CIPHER_free(ciph);
					raw_seen[ci] = protos[p].raw;
					char name[128];
					snprintf(name, sizeof(name), "Record/raw-evp-%s/%s/%s", opname,
						 protos[p].raw, sizes[z].name);
					struct bench_metric m[] = {
						{raw_ns[ci], "ns/op"},
						{(double)len / raw_ns[ci] * 1e3, "MB/s"},
					};
					bench_print(name, 1, it, m, 2);
				}
				uint64_t it;
				struct bench_alloc_counts d;
				double ns = hush_records(protos[p].rp, len, op == 0, &it, &d);
				char name[128];
				snprintf(name, sizeof(name), "Record/%s/%s/%s", opname,
					 hush_record_protocol_name(protos[p].rp), sizes[z].name);
				struct bench_metric m[] = {
					{ns, "ns/op"},
					{(double)len / ns * 1e3, "MB/s"},
					{(double)d.bytes / (double)it, "B/op"},
					{(double)d.allocs / (double)it, "allocs/op"},
					{raw_ns[ci] / ns, "ratio-vs-raw"},
				};
				bench_print(name, 1, it, m, 5);
			}
		}
	}
	return 0;
}
