/*
 * The handshake phase of a connection (conn-handshake.c): what a connection holds only
 * while its handshake runs, and the steps that run it over the connection's read
 * buffer and write queue. It knows no socket and no connection: conn.c reads, sends,
 * schedules and fails around it. Never installed.
 */
#ifndef HUSH_TRANSPORT_CONN_HANDSHAKE_H
#define HUSH_TRANSPORT_CONN_HANDSHAKE_H

#include <hush/handshake.h>

#include "transport/rbuf.h"
#include "transport/transport-internal.h"
#include "transport/wq.h"

/*
 * What a connection holds only while its handshake runs, freed (and wiped) when it
 * ends. Handshake messages go out through the write queue as bytes that need no
 * sealing, so partial sends and EV_WRITE work as for records.
 */
struct hush__conn_hs {
	struct hush_handshake *hs;	  /* NULL once finished */
	struct hush_record *rec;	  /* the record context, until OPEN is reported */
	struct hush__hs_watch *watch;	  /* told of progress and of the end, or NULL */
	uint32_t started;		  /* the loop clock (ms) when it started */
	uint8_t confirm;		  /* NNpsk0's key confirmation: enum confirm_role */
	struct hush_handshake_result res; /* key wiped; reported with OPEN */
};

/* What a step works on: the connection's loop (pool, cipher contexts), read buffer and
 * write queue, and whether the connection is pinned (its record context keeps its own
 * cipher contexts). */
struct hush__hs_io {
	struct hush_loop *loop;
	struct hush__rbuf *rb;
	struct hush__wq *wq;
	bool pinned;
};

/* What a step reports (hush__hs_step()'s *events). */
enum {
	HUSH__HS_FINISHED = 1u << 0, /* the Noise handshake ended: records are keyed */
	HUSH__HS_OPEN = 1u << 1,     /* OPEN is due (the handshake phase is over) */
};

/* Starts the phase: a handshake of hcfg on side, watched by watch (may be NULL), begun
 * at the loop clock now. Returns 0, HUSH_ENOMEM, or hush_handshake_new()'s error. */
HUSH_MUST_CHECK int hush__hs_new(struct hush__conn_hs **out,
				 const struct hush_handshake_config *hcfg, enum hush_side side,
				 struct hush__hs_watch *watch, uint32_t now);

/* Ends the phase, whichever way: tells the watcher if it was not told yet, and frees
 * everything it holds, wiped. NULL is a no-op. */
void hush__hs_free(struct hush__conn_hs *h);

/* Whether the phase still reads from the peer: its messages, or the NNpsk0 responder's
 * confirmation record. */
bool hush__hs_reading(const struct hush__conn_hs *h);

/*
 * Runs the handshake as far as the bytes at hand allow: feeds the unused bytes of
 * io->rb, writes this end's messages (and the NNpsk0 initiator's confirmation record)
 * into io->wq; once the Noise handshake ends makes the record context (h->rec) and
 * keeps the result (h->res, key wiped). Bytes received while it is this end's turn to
 * write fail it with HUSH_EOUTOFTURN: the handshake object judges that, since received
 * bytes are always fed first. *events says what happened (HUSH__HS_*). Returns 0 or the
 * error that fails the connection.
 */
HUSH_MUST_CHECK int hush__hs_step(struct hush__conn_hs *h, const struct hush__hs_io *io,
				  unsigned *events);

#endif /* HUSH_TRANSPORT_CONN_HANDSHAKE_H */
