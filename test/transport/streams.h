/*
 * Checked byte streams between two hush connections, shared by the fault-injection and
 * soak tests. Each end sends a stream of messages of pseudo-random sizes whose bytes
 * are a function of (seed, position), so the receiving end checks every byte against
 * what the sender must have written without keeping a copy: a byte lost, duplicated or
 * reordered shows up as a mismatch at a known position. Each end then closes its
 * direction with hush_conn_shutdown(), and both must see the other's clean end.
 */
#ifndef HUSH_TEST_STREAMS_H
#define HUSH_TEST_STREAMS_H

#include <stdbool.h>
#include <stdint.h>

#include <hush/conn.h>
#include <hush/handshake.h>
#include <hush/keys.h>

#include "envlib.h" /* struct ids */

/* Writes the n stream bytes of stream seed starting at position pos. */
void stream_fill(uint64_t seed, uint64_t pos, uint8_t *out, size_t n);

/* A small deterministic generator (xorshift64*); *state must start nonzero. */
uint64_t stream_rand(uint64_t *state);

/* One end of a checked pair. Zero it, then fill the inputs. */
struct end {
	/* Inputs. */
	struct end *peer;        /* the other end, whose stream this end receives */
	uint64_t tx_seed;        /* this end's stream */
	uint64_t tx_total;       /* bytes this end sends before shutting down */
	size_t max_msg;          /* largest message; sizes are log-uniform in 1..max_msg */
	uint64_t rng;            /* message sizes; nonzero */
	size_t window;           /* 0, or most bytes sent ahead of the peer's reading */
	bool pump_on_data;       /* on_data pumps the peer (its window may have opened) */
	bool hold;               /* pump writes nothing while set */
	/* State. */
	struct hush_conn *conn;
	uint64_t tx_done;        /* bytes accepted by hush_conn_write */
	uint64_t rx_done;        /* bytes received and found right */
	uint64_t msgs;           /* messages written */
	uint64_t bad_at;         /* UINT64_MAX, or the first wrong position received */
	int opened;
	int eof;
	int shut;
	int err;
	int write_err;           /* a write or shutdown call's failure */
	bool shut_sent;
};

extern const struct hush_conn_callbacks end_cb;

/* Prepares x: clears its state, sets bad_at. */
void end_reset(struct end *x);

/* Writes messages while the end is open, below its window and with the write queue
 * under 128 KiB; after the last byte, asks for shutdown. */
void end_pump(struct end *x);

/* Both directions delivered in full, checked, and closed cleanly at both ends. */
bool pair_done(const struct end *a, const struct end *b);

/* One end failed, or a write did. */
bool end_failed(const struct end *x);

#endif /* HUSH_TEST_STREAMS_H */
