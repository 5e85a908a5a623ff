/*
 * echo-common: what examples/altsrp-echo and examples/hush-echo share. Both run one
 * event loop, wrap sockets in hush connections and move bytes the same way; they differ
 * only in how a connection gets its keys (raw key material, or a hush handshake).
 *
 * A session is one connection's exchange:
 *   --echo       every byte received is sent back; when the peer finishes its
 *                direction (HUSH_CONN_EV_EOF) the echo is flushed and ours is shut
 *                down too;
 *   --send FILE  the file is sent, then our direction is shut down, and what comes
 *                back is read until the peer's end of stream;
 *   --out FILE   what is received is also written to FILE.
 * It ends with one line on stdout,
 *   RESULT sent_bytes=N sent_sha256=HEX recv_bytes=N recv_sha256=HEX[ EXTRA]
 * (EXTRA is the program's: see echo_session.result_extra), or with an error on stderr
 * and exit status 1.
 *
 * Everything here runs on the one thread that runs the event loop.
 */
#ifndef HUSH_EXAMPLES_ECHO_COMMON_H
#define HUSH_EXAMPLES_ECHO_COMMON_H

#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

#include <hush.h>

/* The options both programs take. */
struct echo_opts {
	const char *listen;  /* HOST:PORT, or NULL */
	const char *connect; /* HOST:PORT, or NULL */
	const char *ready;   /* file to write the bound HOST:PORT to, or NULL */
	const char *send;
	const char *out;
	long count; /* connections a listener serves before exiting; default 1 */
	int echo;
};

struct echo_session {
	struct echo_session *next; /* in the list of live sessions */
	struct hush_conn *conn;	   /* owned: freed with the session */
	EVP_MD_CTX *sent_md;
	EVP_MD_CTX *recv_md;
	uint64_t sent_bytes;
	uint64_t recv_bytes;
	FILE *send_file;
	FILE *out_file;
	int open; /* HUSH_CONN_EV_OPEN was seen */
	int eof;
	int shut;
	int failed;
	/* Appended to the RESULT line after a space, when not empty; set by the program,
	 * typically from echo_on_open. */
	char result_extra[256];
};

/* The process's state, set up by echo_init(). */
extern struct echo_opts echo_opt;
extern struct event_base *echo_base;
extern struct hush_loop *echo_loop;

/*
 * Called on HUSH_CONN_EV_OPEN, before any byte is sent; NULL for nothing. Returns 0, or
 * a HUSH_E* code to fail the session (after printing why).
 */
extern int (*echo_on_open)(struct echo_session *s);

/* The callbacks every session's connection uses, with the session as arg. */
extern const struct hush_conn_callbacks echo_callbacks;

/* Sets the program name used in messages, the defaults of echo_opt, ignores SIGPIPE
 * and makes the event base, pool and loop. Exits 1 on failure. */
void echo_init(const char *prog);

/*
 * Parses the command line: the shared options (--listen, --connect, --ready, --count,
 * --echo, --send, --out) into echo_opt, and every other "--name value" pair through
 * program_option(name, value), which returns 0 when it took the option and -1 when it
 * does not know it. Calls usage(), which must not return, for an unknown option, a
 * missing value, or shared options that do not fit together (not exactly one of
 * --listen and --connect, or a --count below 1).
 */
void echo_parse_args(int argc, char **argv,
		     int (*program_option)(const char *name, const char *value),
		     void (*usage)(void));

/* Prints "PROG: WHAT: MESSAGE (NAME)" for the HUSH_E* code rc to stderr. */
void echo_error(const char *what, int rc);

/* A new session (digests ready, --send and --out opened), on the list of live ones;
 * NULL after printing why. conn is set by the caller. */
struct echo_session *echo_session_new(void);

/* Ends a session: prints its RESULT line (unless it failed, which makes the exit status
 * 1), frees it and its connection, and stops the loop when the program is done. */
void echo_session_finish(struct echo_session *s);

/* Fails a session: prints what went wrong (rc a HUSH_E* code) and finishes it. */
void echo_session_fail(struct echo_session *s, const char *what, int rc);

/* A bound, listening TCP socket for echo_opt.listen; writes echo_opt.ready when set
 * (with the port the kernel chose for port 0). Exits 1 on failure. */
int echo_listen_socket(void);

/* A TCP socket connected to echo_opt.connect. Exits 1 on failure. */
int echo_connect_socket(void);

/* Runs the loop until the program is done. */
void echo_run(void);

/* Frees the sessions still alive, the loop, the pool and the base; returns the exit
 * status. */
int echo_cleanup(void);

/* Lowercase hex of p[0..n) into out (2n + 1 bytes). */
void echo_hex(const uint8_t *p, size_t n, char *out);

#endif /* HUSH_EXAMPLES_ECHO_COMMON_H */
