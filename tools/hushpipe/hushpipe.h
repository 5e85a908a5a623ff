/*
 * hushpipe: internal interfaces between its files.
 *
 *   main.c     worker threads, connection limit, signals, statistics
 *   options.c  the command line
 *   identity.c keys, peer verification, the peers file and its reload
 *   addr.c     address parsing and resolution, listening and connecting sockets
 *   relay.c    one tunnelled connection: a hush connection and a plaintext socket
 *   log.c      the log and the clocks (the bottom layer: it calls no other file)
 *
 * Threads: the main thread parses options, creates the workers and then only handles
 * signals. Each worker thread owns an event_base, a hush_loop, its listener and every
 * connection it accepted; nothing of a worker is touched by another thread except the
 * atomics in struct pipe and struct worker, and event_active() on its control event.
 */
#ifndef HUSHPIPE_H
#define HUSHPIPE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <hush/conn.h>
#include <hush/handshake.h>
#include <hush/keys.h>
#include <hush/listener.h>

/* ---- log.c ---- */

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Messages above this level are dropped. Set once, before the workers start. */
extern enum log_level log_threshold;

/* Writes one line to stderr: a UTC timestamp, the level and the message. Thread-safe:
 * each line goes out in one write(2). */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes a statistics line (labelled "stats"), whatever the level. */
void log_stats(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Rate-limited lines, for what a peer can make happen at will (failed handshakes,
 * refused keys, failed connects): at most LOG_BURST lines of a kind a second; the
 * rest are counted and reported as one line, "N similar lines suppressed (kind)", when
 * the second is over (at the next line of the kind or at log_limits_flush()), as sshd
 * and nginx do. Thread-safe.
 */
#define LOG_BURST 20
struct log_limit {
	pthread_mutex_t lock;
	const char *kind;
	uint64_t window; /* the second (pipe_now_ms() / 1000) being counted */
	unsigned lines;
	unsigned suppressed;
};
#define LOG_LIMIT_INIT(kind) {PTHREAD_MUTEX_INITIALIZER, kind, 0, 0, 0}

extern struct log_limit log_limit_failures; /* connections that ended in failure */
extern struct log_limit log_limit_refusals; /* refused peer keys */

/* rl NULL: not limited. */
void log_limited(struct log_limit *rl, enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports what each limiter suppressed in a second that is over. */
void log_limits_flush(void);

/* Monotonic clock, milliseconds: the log's rate limits and the relay's durations. */
uint64_t pipe_now_ms(void);

/* A cheaper, coarser one (a few ms), modulo 2^32: for activity times. */
uint32_t pipe_coarse_ms(void);

/* Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int log_level_from_name(const char *name);

#define log_enabled(lvl) ((lvl) <= log_threshold)

/* ---- addr.c ---- */

/* An address from the command line, resolved. */
struct pipe_addr {
	socklen_t len;
	struct sockaddr_storage ss;
	char text[128]; /* printable: "192.0.2.1:8080", "[::1]:8080" or the socket path */
};

/*
 * Parses and resolves spec: "/path" or "./path" (a Unix socket), "[v6addr]:port",
 * "host:port" with host an IPv4 literal or a name. passive is for a listening address
 * (getaddrinfo's AI_PASSIVE). On success *out is a malloc'ed array of *n >= 1
 * addresses in getaddrinfo's order; on failure a message is written to err.
 * Returns 0 or -1.
 */
int addr_resolve(const char *spec, bool passive, struct pipe_addr **out, size_t *n, char *err,
		 size_t errlen);

/*
 * A listening stream socket bound to a, non-blocking and close-on-exec; with reuseport
 * (TCP only) SO_REUSEPORT is set so that each worker, and with --reuseport other
 * processes, may have its own. A stale Unix
 * socket file is removed first (but never a file that is not a socket).
 * Returns the descriptor, or -1 with errno set.
 */
int addr_listen(const struct pipe_addr *a, bool reuseport, int backlog);

/* The port a TCP socket is bound to (0 for others). */
unsigned addr_bound_port(int fd);

/* Formats a socket address as addr_resolve() does. */
void addr_format(const struct sockaddr *sa, socklen_t len, char *out, size_t cap);

/* Starts a non-blocking connect to a. Returns the descriptor (connected or in progress),
 * or -1 with errno set. */
int addr_connect_start(const struct pipe_addr *a);

/* Sets TCP_NODELAY on TCP sockets; nothing on others. */
void addr_nodelay(int fd);

/* ---- options.c, identity.c ---- */

struct pipe_options;

/* Parses the command line into *o. Returns 0 to go on, -1 after --help or --version
 * (exit 0), or an exit status (2 for bad usage). */
int pipe_parse_options(int argc, char **argv, struct pipe_options *o);

/* Makes P.hcfg from the options: loads the keys and the peers. Returns 0 or -1 (logged). */
int pipe_setup_identity(void);

/* SIGHUP: reads the --peers file again and swaps it in, or keeps the old list. */
void pipe_reload_peers(void);

/* ---- main.c: process-wide state ---- */

/* The largest record hushpipe sends, header and tag included (see identity.c). */
#define PIPE_FRAME 32768

struct pipe_options {
	bool encrypt;		/* -e: plaintext in, hush out; -d: the reverse */
	const char *source;	/* -s */
	const char *target;	/* -t */
	const char *key_file;	/* -k */
	const char *peers_file; /* --peers */
	const char *psk_file;	/* --psk */
	char **peer_keys;	/* --peer, repeatable */
	size_t n_peer_keys;
	bool chacha;	    /* --cipher chacha20-poly1305 */
	unsigned workers;   /* -j */
	unsigned max_conns; /* --max-conns */
	bool max_conns_set;
	unsigned max_handshakes; /* --max-handshakes, per worker (-d) */
	unsigned max_per_source; /* --max-per-source, per worker (-d) */
	uint32_t first_message_timeout_ms; /* --first-message-timeout (-d); 0: none */
	uint32_t handshake_timeout_ms;
	uint32_t record_timeout_ms; /* --record-timeout; 0: none */
	uint32_t connect_timeout_ms;
	uint32_t idle_timeout_ms; /* 0: none */
	uint32_t drain_timeout_ms;
	int backlog;
	bool reuseport; /* --reuseport: other processes may listen on -s too */
	uint64_t pool_budget; /* --pool-budget, bytes; 0: none */
	bool pool_budget_set;
	const char *pidfile;
};

struct worker;

struct pipe {
	struct pipe_options opt;
	struct pipe_addr *source; /* the first resolved address is used */
	size_t nsource;
	struct pipe_addr *targets; /* tried in order */
	size_t ntargets;
	struct hush_pool *pool;
	struct hush_keypair *kp;
	uint8_t psk[HUSH_KEY_SIZE];
	struct hush_handshake_config hcfg;
	struct hush_conn_config ccfg;
	/* Peer verification: keys from --peer and from the --peers file. The handshake
	 * configuration has no allow-list, only the verify callback, which reads these
	 * under the lock, so SIGHUP can replace file_peers at any time. */
	pthread_rwlock_t peers_lock;
	struct hush_peers *fixed_peers;
	struct hush_peers *file_peers;
	struct worker *workers;
	unsigned nworkers;
	/* Connections open (from accept to close) in all workers, against max_conns. */
	atomic_uint nconns;
	/* Set while some worker stopped accepting because nconns reached max_conns. */
	atomic_bool any_full;
	atomic_uint_fast64_t next_id;
	/* Totals since start, for the statistics line. */
	atomic_uint_fast64_t accepted;
	atomic_uint_fast64_t closed_clean;
	atomic_uint_fast64_t closed_error;
	atomic_uint_fast64_t refused_full;
	atomic_uint_fast64_t bytes_to_hush;
	atomic_uint_fast64_t bytes_to_plain;
};

extern struct pipe P;

/* Commands to a worker, or'ed into worker.cmd before its ctl event is activated. */
enum {
	CMD_DRAIN = 1u << 0,  /* stop accepting; exit when the last connection closes */
	CMD_ABORT = 1u << 1,  /* abort every connection and exit */
	CMD_RESUME = 1u << 2, /* connections were closed: accept again if below the cap */
};

struct session;

struct worker {
	unsigned index;
	pthread_t thread;
	struct event_base *base;
	struct hush_loop *loop;
	int listen_fd;		   /* given to the listener at start */
	struct hush_listener *hl;  /* -d */
	struct evconnlistener *el; /* -e */
	struct event *ctl_ev;
	atomic_uint cmd;
	atomic_bool full;      /* stopped accepting at the cap */
	struct event *tick_ev; /* once a second: idle timeouts, accept retry */
	struct event *done_ev; /* main thread's: this worker has finished */
	bool draining;
	bool accept_backoff; /* accept failed for lack of descriptors */
	/* Sessions, least recently active first. */
	struct session *head;
	struct session *tail;
	unsigned nsessions;
	uint8_t *scratch; /* plaintext read buffer, RELAY_SCRATCH bytes */
};

/* Called by a worker when it accepted a connection: reserves a place against
 * max_conns. Returns false (nothing reserved) at the cap. */
bool pipe_conn_reserve(struct worker *w);
/* Gives a reserved place back, waking workers that stopped at the cap. */
void pipe_conn_release(void);
/* A worker with no listener and no connection left: ends its loop. */
void worker_finish(struct worker *w);

/* ---- relay.c ---- */

/* Size of a worker's plaintext read buffer. */
#define RELAY_SCRATCH (256 * 1024)

/* The callbacks of every hush connection hushpipe makes (listener's included). */
extern const struct hush_conn_callbacks relay_hush_callbacks;

/* -e: a plaintext connection was accepted on fd (owned from here on). */
void relay_accept_plain(struct worker *w, int fd, const struct sockaddr *sa, socklen_t len);

/* -d: the listener accepted c, whose handshake is running. */
void relay_accept_hush(struct worker *w, struct hush_conn *c, const struct sockaddr *sa,
		       socklen_t len);

/* Aborts sessions idle for idle_timeout_ms or more (the head of w's list). */
void relay_expire(struct worker *w);

/* Aborts every session of w (drain deadline, second signal). */
void relay_abort_all(struct worker *w, const char *why);

#endif /* HUSHPIPE_H */
