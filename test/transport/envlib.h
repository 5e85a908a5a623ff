/*
 * The transport tests' fixture, shared by every test file of test/transport: an event
 * base with a pool and a hush loop, the clean end every test must reach, and bounded
 * runs of the loop.
 */
#ifndef HUSH_TEST_ENVLIB_H
#define HUSH_TEST_ENVLIB_H

#include <stdbool.h>

#include <event2/event.h>

#include <hush/handshake.h>
#include <hush/keys.h>
#include <hush/loop.h>
#include <hush/pool.h>

struct env {
	struct event_base *base;
	struct hush_pool *pool;
	struct hush_loop *loop;
};

/* A base (with libevent's pthreads locking), a pool of configuration pcfg (NULL for the
 * defaults) and the base's hush loop. */
void env_init(struct env *e, const struct hush_pool_config *pcfg);

/* The clean end, then frees the fixture: runs what is pending (deferred reports,
 * bufferevents finalized from the loop), checks that no connection is left on the loop
 * and every pool buffer came back, frees the loop, and checks that nothing is left
 * added or active on the base. */
void env_done(struct env *e);

/* A pool with the default tiers and the given budget (0: none). */
struct hush_pool *pool_with_budget(size_t budget);

/* Buffers of pool out now (every tier): 0 at a test's clean end. */
uint64_t pool_in_use(const struct hush_pool *pool);

/* Runs the loop for ms, or less if a callback breaks it; leaves no timer behind. */
void run_for_ms(struct env *e, int ms);

/* Runs the loop until a callback breaks it, 10 s at most. */
void run(struct env *e);

/* Runs the loop until done(arg) holds or ms pass. */
void run_until(struct env *e, int ms, bool (*done)(void *), void *arg);

/* Writes all n bytes at p to the blocking descriptor fd (a test's raw peer). */
void write_all(int fd, const uint8_t *p, size_t n);

/* Identities for both ends of a Noise protocol: key pairs, allow-lists, a PSK. */
struct ids {
	struct hush_keypair *kc;
	struct hush_keypair *ks;
	uint8_t pub_c[HUSH_KEY_SIZE];
	uint8_t pub_s[HUSH_KEY_SIZE];
	uint8_t psk[HUSH_KEY_SIZE];
	struct hush_handshake_config cc; /* client */
	struct hush_handshake_config sc; /* server */
};

/* Fresh key pairs (for protocols with static keys) that allow each other, and a PSK
 * (for protocols with one), for protocol p. */
void ids_init(struct ids *d, enum hush_noise_protocol p);
void ids_done(struct ids *d);
/* Whether protocol p has static keys (not NNpsk0). */
bool ids_has_static(enum hush_noise_protocol p);

#endif /* HUSH_TEST_ENVLIB_H */
