/*
 * libFuzzer harness: arbitrary bytes, delivered at arbitrary split points, to a
 * receiving record context, as the transport delivers socket bytes. Checks that parse
 * and open never read or write outside the bytes given, never release plaintext from a
 * frame that fails, and that a failed context stays failed.
 *
 * Input layout: byte 0 chooses the protocol and receive limit; bytes 1..2 the chunk size
 * pattern; the rest is the stream. The first frames of the stream may be valid: the
 * corpus seeds hold real frames sealed with the harness key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hush/record.h>

static const uint8_t KEY[44] = {0x68, 0x75, 0x73, 0x68};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3) {
		return 0;
	}
	static const enum hush_record_protocol rps[] = {HUSH_RP_ALTS_AES128_GCM_REKEY,
							HUSH_RP_ALTS_AES128_GCM,
							HUSH_RP_CHACHA20_POLY1305_REKEY};
	enum hush_record_protocol rp = rps[data[0] % 3];
	struct hush_record *r;
	if (hush_record_new(&r, rp, KEY, hush_record_key_size(rp), HUSH_SIDE_SERVER) != 0) {
		abort();
	}
	if (data[0] & 0x80) {
		(void)hush_record_set_limits(r, 0, 4096);
	}
	size_t step = 1 + (((size_t)data[1] << 8 | data[2]) % 5000);
	data += 3;
	size_t len = size - 3;

	/* The receiver's buffer: a private copy of the stream, so in-place opening is legal
	 * and ASan sees any access outside it. */
	uint8_t *buf = malloc(len ? len : 1);
	size_t have = 0;
	size_t fed = 0;
	int failed = 0;
	while (fed < len && !failed) {
		size_t k = len - fed < step ? len - fed : step;
		memcpy(buf + have, data + fed, k);
		have += k;
		fed += k;
		for (;;) {
			size_t need = 0;
			int rc = hush_record_parse(r, buf, have, &need);
			if (rc == HUSH_EAGAIN) {
				break;
			}
			if (rc != 0) {
				failed = rc;
				break;
			}
			struct hush_iovec pt = {NULL, 0};
			rc = hush_record_open(r, buf, need, &pt);
			if (rc != 0) {
				if (pt.base != NULL) {
					abort(); /* plaintext escaped from a failed frame */
				}
				failed = rc;
				break;
			}
			if (pt.base != buf + 8 || pt.len != need - 24) {
				abort();
			}
			memmove(buf, buf + need, have - need);
			have -= need;
		}
	}
	if (failed) {
		size_t need;
		if (hush_record_error(r) != failed || hush_record_parse(r, buf, have, &need) != failed) {
			abort(); /* failure must be sticky */
		}
	}
	free(buf);
	hush_record_free(r);
	return 0;
}
