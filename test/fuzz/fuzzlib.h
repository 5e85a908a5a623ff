/*
 * Helpers shared by the handshake harnesses: the fixed inputs of the worked examples
 * (test/data/hush-handshake-vectors.txt, so the corpus seeds are real messages), the
 * layout of an input's header, an allocator that fails on request, and a driver that
 * feeds bytes to one end of a handshake. Built with each harness by `make fuzz`.
 * Built with -DFUZZ_TRACE (FUZZ_FLAGS), a harness prints how each run ended: a way
 * to check that seeds reach the end of the handshake.
 */
#ifndef HUSH_FUZZLIB_H
#define HUSH_FUZZLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hush/handshake.h>

#include "handshake/handshake-internal.h"

/*
 * Every handshake input starts with this header; the bytes after it are the fuzzed
 * part, whose meaning the mode gives.
 *   0  protocol: 1 + byte % 6 (enum hush_noise_protocol)
 *   1  bits 0-1: mode (FUZZ_MODE_*); bit 4: both ends announce the application
 *      protocol "echo/1"; bit 5: the peer's static key is not allowed (structured
 *      mode); bit 6: verify the peer with a callback instead of the allow-list
 *   2  record protocol: 1 + byte % 3 (enum hush_record_protocol)
 *   3  feeding: pieces of at most this many bytes (0: all at once)
 *   4  allocation to fail: the k-th hush allocation of the run for 1 <= k < 16
 */
#define FUZZ_HEADER 5
enum fuzz_mode {
	FUZZ_MODE_RAW = 0,	  /* the fuzzed bytes are the whole stream from the peer */
	FUZZ_MODE_REAL_FIRST = 1, /* a real peer's earlier messages, then the fuzzed bytes */
	FUZZ_MODE_STRUCTURED = 2, /* a Noise peer sends the fuzzed bytes as its payload */
	FUZZ_MODE_RAW_TOO = 3,	  /* as FUZZ_MODE_RAW */
};
#define FUZZ_OPT_APP	  0x10
#define FUZZ_OPT_STRANGER 0x20
#define FUZZ_OPT_CALLBACK 0x40

struct fuzz_case {
	enum hush_noise_protocol protocol;
	enum fuzz_mode mode;
	unsigned opts;
	enum hush_record_protocol record_protocol;
	size_t chunk; /* 0: all at once */
	unsigned fail_alloc;
	const uint8_t *rest; /* the fuzzed part */
	size_t rest_len;
};

/* Splits an input into its header and fuzzed part; false if it is too short. */
bool fuzz_case_read(struct fuzz_case *c, const uint8_t *data, size_t size);

/* The worked examples' fixed inputs, and one static key nobody allows. */
struct fuzz_keys {
	struct hush_keypair init, resp, stranger;
	uint8_t init_e[NOISE_DHLEN], resp_e[NOISE_DHLEN];
	uint8_t psk[HUSH_KEY_SIZE];
};
const struct fuzz_keys *fuzz_keys(void);

bool fuzz_has_static(enum hush_noise_protocol p);
bool fuzz_has_psk(enum hush_noise_protocol p);
enum noise_pattern fuzz_pattern(enum hush_noise_protocol p);
enum noise_cipher fuzz_cipher(enum hush_noise_protocol p);

/*
 * A configuration for one end of case c: its own key pair (own), the peer's public key
 * on the allow-list (or checked by the callback), the PSK, the record protocol and the
 * application protocol the case asks for. The allow-list is kept in *allow.
 */
void fuzz_config(struct hush_handshake_config *cfg, const struct fuzz_case *c,
		 const struct hush_keypair *own, const struct hush_keypair *peer,
		 uint8_t allow[1][HUSH_KEY_SIZE]);

/* A Noise end without hush's framing (a peer written against a Noise library):
 * static key s (ignored by NNpsk0) and the case's PSK, ephemeral e. */
int fuzz_noise_init(struct noise_handshake *n, const struct fuzz_case *c, bool initiator,
		    const struct hush_keypair *s, const uint8_t e[NOISE_DHLEN]);

/*
 * What a receiver configured with record protocol mine must make of a peer's parameter
 * block, worked out from docs/handshake-protocol.md section 5 alone (not from
 * handshake.c): 0, HUSH_EHANDSHAKE or HUSH_EPARAMS. A block of another version is
 * judged on its version byte only; otherwise a malformed block is HUSH_EHANDSHAKE
 * before anything it says is judged.
 */
int fuzz_params_expect(const uint8_t *b, size_t len, enum hush_record_protocol mine);

/* Writes the 2-byte length of a message of len bytes. */
void fuzz_put_length(uint8_t *p, size_t len);

/* Installs hush's allocator for one run, failing the k-th allocation (0: none). */
void fuzz_alloc_begin(unsigned k);
/* Restores the default allocator; aborts if a hush allocation is still alive. */
void fuzz_alloc_end(void);

/* What fuzz_drive() saw. */
struct fuzz_drive {
	uint8_t out[HUSH_HANDSHAKE_MAX_OUTPUT]; /* the last bytes hs gave to send */
	size_t out_len;
	size_t used; /* stream bytes hs consumed */
};

/*
 * Feeds len bytes to hs in pieces of at most chunk bytes (0: all at once), taking its
 * output whenever it is its turn to write, until it is done, fails, or the bytes run
 * out. Aborts on any broken promise of include/hush/handshake.h it can see. Returns 0
 * or the handshake's error.
 */
int fuzz_drive(struct hush_handshake *hs, const uint8_t *in, size_t len, size_t chunk,
	       struct fuzz_drive *d);

/*
 * Checks the end's state after fuzz_drive() returned rc, with its case c and its
 * configuration cfg: a failure is sticky; a finished end has a consistent result,
 * copied to *res (zeroed otherwise); bytes after the end are left for the records.
 * Returns whether the handshake is done.
 */
bool fuzz_check_end(struct hush_handshake *hs, int rc, const struct hush_handshake_config *cfg,
		    const uint8_t *left, size_t left_len, struct hush_handshake_result *res);

#endif /* HUSH_FUZZLIB_H */
