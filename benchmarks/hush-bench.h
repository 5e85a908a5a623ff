/*
 * What the parts of hush-bench share: the options and the result list (hush-bench.c),
 * event loops, sockets and the endpoints every connection benchmark drives
 * (bench-endpoints.c), the two-thread connection harness (bench-pingpong.c), and one
 * struct benchmark per group, each defined in the file that measures it. The program's
 * own description, its options and its output format are at the top of hush-bench.c.
 */
#ifndef HUSH_BENCH_H
#define HUSH_BENCH_H

#include <netinet/in.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include <hush.h>

#include "benchlib.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Idle connections opened before the baseline and kept open (see idle_run). */
#define WARM_CONNS 32
/* Size of the message exchanged each way before a connection counts as established. */
#define PING_SIZE 64
/* Message size of ReadMemoryUsage and WriteMemoryUsage. */
#define RW_SIZE 1024
/* Message size of LargeMessage. */
#define LARGE_SIZE (1024 * 1024)
/* ManyConns: the share of connections busy and their echo message size (the connection
 * counts are in many_run). */
#define MANY_BUSY_EVERY 20 /* 5% */
#define MANY_KICK	32 /* busy connections started per loop iteration */
#define MANY_MAX_SLICES 64 /* busy-phase slices per variant, at most */
#define MANY_MSG	16384
/* Payload of one 16 KiB record, hush's default send frame: 16384 - 24 bytes overhead. */
#define RECORD_PAYLOAD (HUSH_RECORD_DEFAULT_SEND_FRAME - HUSH_RECORD_OVERHEAD)
/* The bufferevent variants stop writing above this many queued bytes, as hush does by
 * default (hush_conn_config.write_high_water), and resume when the queue is empty. */
#define BEV_HIGH_WATER (256 * 1024)

/* --- Options, results and output (hush-bench.c) --- */

struct bench_options {
	int quick;
	int count;
	int json;
	const char *plot;
	int has_filter;
	regex_t filter;
};
extern struct bench_options opt;

#define MAX_METRICS 12

struct result {
	char name[128]; /* without "Benchmark" and the -procs suffix */
	int procs;
	uint64_t n;
	size_t nm;
	struct bench_metric m[MAX_METRICS];
};

struct result_list {
	struct result *v;
	size_t n;
	size_t cap;
};

/* The medians of every finished benchmark, in the order they were printed. */
extern struct result_list final_results;

/* Prints what failed and exits 1. */
void die(const char *what);
/* Reports a failure on stderr; the program goes on with the next variant and exits 1. */
void bench_fail(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when the result name passes --filter. */
int wanted(const char *name);
/* Records one result of the running repetition. */
void report(const char *name, int procs, uint64_t n, const struct bench_metric *m, size_t nm);
/* The median of v (sorted in place). */
double median(double *v, size_t n);
/* The CPU's model name from /proc/cpuinfo, or "unknown". */
void cpu_model(char *out, size_t cap);
/* How long one timed part lasts: 1 s, or 0.1 s with --quick. */
uint64_t target_ns(void);
/*
 * Grows n until one call of fn(n) lasts target ns, as Go's testing package does, after a
 * warm-up call; *delta holds the allocations of the last, timed call.
 */
int time_ops(int (*fn)(uint64_t n), uint64_t target, uint64_t *n_out, uint64_t *ns_out,
	     struct bench_alloc_counts *delta);

/* The messages the benchmarks send, filled by main: 'p's, 'm's and random bytes. */
extern uint8_t ping_msg[PING_SIZE];
extern uint8_t many_msg[MANY_MSG];
extern uint8_t *large_msg; /* LARGE_SIZE bytes */

/* --- The SVG chart of IdleConnMemory (bench-plot.c) --- */

/* Draws IdleConnMemory's final results into path; 0 or -1 (said on stderr). */
int plot_write(const char *path);

/* --- Event loops and sockets (bench-endpoints.c) --- */

/* What the connections on one event_base share: the base, hush's loop and a pool. */
struct env {
	struct event_base *base;
	struct hush_pool *pool;
	int own_pool;
	struct hush_loop *loop;
	struct event *tick; /* bounds how long one env_pump() may block */
};

/* Sets up env; pool is shared (borrowed) when not NULL, else env makes its own. */
int env_init(struct env *env, struct hush_pool *pool);
/* Frees env; every connection on it must have been freed. */
void env_free(struct env *env);
/* Runs one loop iteration, waiting at most block_ms for something to happen. */
void env_pump(struct env *env, int block_ms);
/* TCP_NODELAY (every variant sends small messages at once) and non-blocking. */
int tune_socket(int fd);
/* A listening socket on 127.0.0.1 with an ephemeral port, written to *addr. */
int listen_loopback(struct sockaddr_in *addr, int backlog);
/* A connected loopback TCP pair: fds[0] the client end, fds[1] the server end. */
int tcp_pair(int fds[2]);

/* --- Endpoints: one end of a connection, whatever the variant (bench-endpoints.c) --- */

struct ep;

/* What the benchmark wants to hear; any member may be NULL. */
struct ep_cb {
	void (*on_open)(struct ep *e);					/* keys in place */
	void (*on_data)(struct ep *e, const uint8_t *data, size_t len); /* plaintext */
	void (*on_writable)(struct ep *e); /* the queue drained after write() returned 1 */
	void (*on_close)(struct ep *e);	   /* EOF or error; e may be freed here */
};

/* What the benchmark can do with an end. */
struct ep_ops {
	/* Queues a copy of data: 0; 1 queued but above the high watermark (wait for
	 * on_writable); -1 error. */
	int (*write)(struct ep *e, const void *data, size_t len);
	/* Bytes queued and not yet handed to the socket. */
	size_t (*queued)(const struct ep *e);
	/* Frees the end and closes its socket. */
	void (*free)(struct ep *e);
};

struct ep {
	const struct ep_ops *ops; /* set by the variant's open function */
	const struct ep_cb *cb;
	void *user;
	struct hush_conn *hc;	 /* hush variants */
	struct bufferevent *bev; /* bufferevent variants */
	uint64_t rx;		 /* plaintext bytes delivered */
	int open;
	int closed;
	int over_high;
	/* The benchmark's own. */
	int ready;
	int busy;
	int in_flight; /* ManyConns: a message is out and its echo not yet all back */
	uint64_t busy_rx;
};

/*
 * A variant's way to make one end of a connection over fd, a connected non-blocking
 * socket it takes over (closed on failure too); server says which end. e->cb and e->user
 * are set before the call. Returns 0 or -1.
 */
typedef int (*ep_open_fn)(struct ep *e, struct env *env, int fd, int server);

void ep_init(struct ep *e, const struct ep_cb *cb, void *user);

/* Raw record keys, as an external handshaker would hand them to both ends; random per
 * run (main), inherited by forked children. */
extern uint8_t hush_key[44];

/* The variants' open functions; bench-endpoints.c says what each one is. */
int open_hush(struct ep *e, struct env *env, int fd, int server);
int open_hush_pinned(struct ep *e, struct env *env, int fd, int server);
int open_hush_bev(struct ep *e, struct env *env, int fd, int server);
int open_hush_bev_xx(struct ep *e, struct env *env, int fd, int server);
int open_tls(struct ep *e, struct env *env, int fd, int server);
int open_tls_release(struct ep *e, struct env *env, int fd, int server);
int open_plain(struct ep *e, struct env *env, int fd, int server);

/* The TLS 1.3 contexts every OpenSSL variant shares, made once by tls_init (0 or -1). */
extern SSL_CTX *tls_server_ctx;
extern SSL_CTX *tls_client_ctx;
int tls_init(void);

/* --- Benchmarks and their variants --- */

/*
 * One row per variant: its name as printed and one function. Connection benchmarks take
 * the function that makes one end of a connection (open); the others take a function
 * that performs n operations (ops), which the harness times.
 */
struct variant {
	const char *name;
	ep_open_fn open;
	int (*ops)(uint64_t n);
};

struct benchmark {
	const char *name;
	const struct variant *variants;
	size_t nvariants;
	void (*run)(const struct benchmark *b, const struct variant *v);
};

/* Each group, in the file that measures it. */
extern const struct benchmark bench_idle;      /* bench-manyconns.c */
extern const struct benchmark bench_many;      /* bench-manyconns.c */
extern const struct benchmark bench_read;      /* bench-memory.c */
extern const struct benchmark bench_write;     /* bench-memory.c */
extern const struct benchmark bench_large;     /* bench-large.c */
extern const struct benchmark bench_pingpong;  /* bench-pingpong.c */
extern const struct benchmark bench_handshake; /* bench-handshake.c */
extern const struct benchmark bench_pool;      /* hush-bench.c */

/* ManyConns and IdleConnMemory: the open-files limit, raised by main. */
extern long nofile_limit;

/* --- One connection, each end on its own thread (bench-pingpong.c) --- */

struct pair;

struct pair_thread {
	struct pair *p;
	struct env *env;
	_Atomic int exited;
};

struct pair {
	struct hush_pool *pool; /* shared by both threads' loops */
	struct env env[2];	/* [0] client (drives the benchmark), [1] server */
	struct ep ep[2];
	pthread_t th[2];
	int started[2];
	struct pair_thread arg[2];
	struct event *check; /* on env[1]: the sender stopped, compare counts */
	uint64_t target;
	_Atomic int done;	/* 1 finished, -1 failed */
	uint64_t t0, t1;	/* the timed part, on the monotonic clock */
	uint64_t count;		/* PingPong: round trips in the timed part */
	uint64_t pending;	/* PingPong: bytes of the current echo received */
	uint64_t warm;		/* PingPong: untimed round trips left */
	uint64_t sent;		/* LargeMessage: bulk bytes queued by the sender */
	int stopping;		/* LargeMessage: the sender is done sending */
	uint64_t ping_rx;	/* LargeMessage, server: ping bytes seen */
	uint64_t bulk_rx;	/* LargeMessage, server: bulk bytes received */
	_Atomic uint64_t total; /* LargeMessage: bytes sent in all, once stopping */
};

/* Ends the run: how is 1 (finished) or -1 (failed); the first call decides. */
void pair_finish(struct pair *p, int how);
/* An ep_cb.on_close for either end: a closed end fails the run. */
void pair_on_close(struct ep *e);
/* The client's first message, and PingPong's every one. */
void pair_send_ping(struct ep *e);
/*
 * Connects the two ends (cb0 for the client, cb1 for the server), runs each on its own
 * thread until pair_finish, for at most 60 s. Returns 0 when the benchmark finished.
 */
int pair_run(struct pair *p, ep_open_fn open, const struct ep_cb *cb0, const struct ep_cb *cb1,
	     void (*check)(evutil_socket_t, short, void *));
void pair_free(struct pair *p);

#endif /* HUSH_BENCH_H */
