/*
 * hush-shim.c: what a programmer porting libevent's regression tests to hush writes,
 * linked into libevent's own regress program by run-libevent-regress.sh (see
 * hush-shim.h for how the calls reach it).
 *
 * Keys, as a port must choose them: a connection that libevent's tests open with a
 * TLS handshake (BUFFEREVENT_SSL_CONNECTING or _ACCEPTING), and every plain socket
 * bufferevent swapped for hush, gets a hush handshake, Noise XX with one static key
 * pair per side generated for the process, each side allowing the other's key. Raw
 * keys could not serve there: hush refuses a raw key's second use (HUSH_EKEYREUSE)
 * and the two ends of a connection are made independently. A connection the tests
 * open as already established (BUFFEREVENT_SSL_OPEN) gets raw keys, hush's
 * counterpart: a fresh random key for each socketpair, shared by its two ends. So that
 * both ends find their pair and take opposite sides, socketpair() is wrapped at link
 * time to remember each pair's two sockets (by inode, which survives dup() and fd
 * reuse); the first socket of a pair is the client.
 *
 * Sides: a plain socket bufferevent made with fd -1 connects later, so it is the
 * client; one made on an accepted socket is the server; on a socketpair, the pair
 * decides. The TLS constructors say the side in their state argument.
 *
 * Each event_base gets a hush loop (and the process one pool) the first time a hush
 * bufferevent is made on it. A NULL base means libevent's current base, as it does
 * for bufferevent_socket_new(). The loops are never freed: libevent's tests free
 * their bases with bufferevents still alive, and each test runs in its own process.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* RTLD_NEXT */
#endif

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/rand.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_compat.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <hush/bufferevent.h>
#include <hush/handshake.h>

#include "hush-shim.h"

/* Declared here as the libevent build defines them: the shim's own prototypes. */
struct bufferevent *hush_shim_socket_new(struct event_base *base, evutil_socket_t fd,
					 int options);
struct bufferevent *hush_shim_bufferevent_new(evutil_socket_t fd, bufferevent_data_cb readcb,
					      bufferevent_data_cb writecb,
					      bufferevent_event_cb errorcb, void *cbarg);
struct bufferevent *hush_shim_openssl_socket_new(struct event_base *base, evutil_socket_t fd,
						 struct ssl_st *ssl,
						 enum bufferevent_ssl_state state, int options);
struct bufferevent *hush_shim_openssl_filter_new(struct event_base *base,
						 struct bufferevent *underlying,
						 struct ssl_st *ssl,
						 enum bufferevent_ssl_state state, int options);
struct ssl_st *hush_shim_openssl_get_ssl(struct bufferevent *bufev);
void hush_shim_openssl_set_allow_dirty_shutdown(struct bufferevent *bev,
						int allow_dirty_shutdown);
int socketpair(int domain, int type, int protocol, int sv[2]);
void event_base_free(struct event_base *base);

/* libevent's current base (event.c), exported by libevent_core: what a NULL base
 * means to libevent's constructors. */
extern struct event_base *event_global_current_base_;

#define SHIM_MAX 256

struct shim_pair {
	ino_t ino[2];
	uint8_t key[HUSH_RECORD_MAX_KEY_SIZE];
	bool keyed;
	bool used[2]; /* by the client end, by the server end */
};

struct shim_loop {
	struct event_base *base;
	struct hush_loop *loop;
};

struct shim_ssl {
	struct bufferevent *bev;
	struct ssl_st *ssl;
};

static pthread_mutex_t shim_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shim_pair pairs[SHIM_MAX];
static unsigned n_pairs;
static struct shim_loop loops[SHIM_MAX];
static struct shim_ssl ssls[SHIM_MAX];
static struct hush_pool *pool;
static struct hush_keypair *kp[2];
static uint8_t pub[2][HUSH_KEY_SIZE];
static struct hush_handshake_config hcfg[2];
static bool ready;

static void die(const char *what, int rc)
{
	fprintf(stderr, "hush-shim: %s: %s\n", what, hush_strerror(rc));
	abort();
}

/* The keys and the pool, once per process (under shim_lock). */
static void shim_init(void)
{
	if (ready) {
		return;
	}
	int rc = hush_pool_new(&pool, NULL);
	if (rc != 0) {
		die("hush_pool_new", rc);
	}
	/* Programs in two processes (the samples) share keys through files:
	 * HUSH_SHIM_KEYDIR names a folder with client.key and server.key. */
	const char *dir = getenv("HUSH_SHIM_KEYDIR");
	for (int i = 0; i < 2; i++) {
		if (dir != NULL) {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s.key", dir, i == 0 ? "client" : "server");
			rc = hush_keypair_load(&kp[i], path);
		} else {
			rc = hush_keypair_generate(&kp[i]);
		}
		if (rc != 0) {
			die("the shim's key pairs", rc);
		}
		hush_keypair_public(kp[i], pub[i]);
	}
	for (int i = 0; i < 2; i++) {
		hush_handshake_config_init(&hcfg[i]);
		hcfg[i].keypair = kp[i];
		hcfg[i].allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])pub[1 - i];
		hcfg[i].n_allowed_peers = 1;
	}
	ready = true;
}

static int side_index(enum hush_side side)
{
	return side == HUSH_SIDE_CLIENT ? 0 : 1;
}

static struct hush_loop *loop_for(struct event_base *base)
{
	for (unsigned i = 0; i < SHIM_MAX; i++) {
		if (loops[i].base == base) {
			return loops[i].loop;
		}
	}
	for (unsigned i = 0; i < SHIM_MAX; i++) {
		if (loops[i].base == NULL) {
			int rc = hush_loop_new(&loops[i].loop, base, pool);
			if (rc != 0) {
				die("hush_loop_new", rc);
			}
			loops[i].base = base;
			return loops[i].loop;
		}
	}
	die("too many event bases", HUSH_ENOMEM);
	return NULL;
}

static ino_t fd_ino(evutil_socket_t fd)
{
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		return 0;
	}
	return st.st_ino;
}

/* The socketpair fd belongs to, and which end it is (0 = the first, the client). */
static struct shim_pair *pair_of(evutil_socket_t fd, int *end)
{
	ino_t ino = fd_ino(fd);
	if (ino == 0) {
		return NULL;
	}
	unsigned n = n_pairs < SHIM_MAX ? n_pairs : SHIM_MAX;
	for (unsigned i = 0; i < n; i++) {
		for (int e = 0; e < 2; e++) {
			if (pairs[i].ino[e] == ino) {
				*end = e;
				return &pairs[i];
			}
		}
	}
	return NULL;
}

int socketpair(int domain, int type, int protocol, int sv[2])
{
	static int (*real)(int, int, int, int[2]);
	if (real == NULL) {
		real = (int (*)(int, int, int, int[2]))dlsym(RTLD_NEXT, "socketpair");
	}
	int rc = real(domain, type, protocol, sv);
	if (rc == 0) {
		pthread_mutex_lock(&shim_lock);
		struct shim_pair *p = &pairs[n_pairs++ % SHIM_MAX];
		memset(p, 0, sizeof(*p));
		p->ino[0] = fd_ino(sv[0]);
		p->ino[1] = fd_ino(sv[1]);
		pthread_mutex_unlock(&shim_lock);
	}
	return rc;
}

/* A freed base's address may come back for the next base: forget its loop (leaked,
 * since bufferevents of the old base may still point at it). */
void event_base_free(struct event_base *base)
{
	static void (*real)(struct event_base *);
	if (real == NULL) {
		real = (void (*)(struct event_base *))dlsym(RTLD_NEXT, "event_base_free");
	}
	pthread_mutex_lock(&shim_lock);
	for (unsigned i = 0; i < SHIM_MAX; i++) {
		if (base != NULL && loops[i].base == base) {
			loops[i].base = NULL;
			loops[i].loop = NULL;
		}
	}
	pthread_mutex_unlock(&shim_lock);
	real(base);
}

/* The configuration of a handshake (raw == false) or raw-key connection on side. */
static void shim_config(struct hush_bufferevent_config *cfg, struct event_base *base,
			enum hush_side side, const struct shim_pair *raw)
{
	hush_bufferevent_config_init(cfg);
	cfg->loop = base != NULL ? loop_for(base) : NULL;
	cfg->pool = pool;
	cfg->side = side;
	if (raw != NULL) {
		cfg->key = raw->key;
		cfg->key_len = HUSH_RECORD_MAX_KEY_SIZE;
	} else {
		cfg->handshake = &hcfg[side_index(side)];
	}
}

/* The raw key for fd's next connection on its socketpair, and fd's side; NULL if fd
 * is not one end of a socketpair. A key serves one connection, one use by each end: an
 * end asking again (a new bufferevent on the same socketpair, as the tests' second,
 * open phase makes) gets a fresh key, which the other end then takes too. */
static struct shim_pair *raw_key_for(evutil_socket_t fd, enum hush_side *side,
				     enum hush_side side_wanted, bool by_pair)
{
	int end = 0;
	struct shim_pair *p = pair_of(fd, &end);
	if (p == NULL) {
		return NULL;
	}
	*side = by_pair ? (end == 0 ? HUSH_SIDE_CLIENT : HUSH_SIDE_SERVER) : side_wanted;
	int i = side_index(*side);
	if (!p->keyed || p->used[i]) {
		if (RAND_bytes(p->key, sizeof(p->key)) != 1) {
			die("RAND_bytes", HUSH_ECRYPTO);
		}
		p->keyed = true;
		p->used[0] = p->used[1] = false;
	}
	p->used[i] = true;
	return p;
}

/* Says once per process that a hush bufferevent was made, so that
 * run-libevent-regress.sh can tell the cases hush took part in from those that make
 * no socket bufferevent. */
static void made(struct bufferevent *bev)
{
	static bool said;
	if (bev != NULL && !said) {
		fprintf(stderr, "hush-shim: made a hush bufferevent\n");
		said = true;
	}
}

static void remember_ssl(struct bufferevent *bev, struct ssl_st *ssl)
{
	if (bev == NULL) {
		return;
	}
	int free_slot = -1;
	for (int i = 0; i < SHIM_MAX; i++) {
		if (ssls[i].bev == bev) {
			ssls[i].ssl = ssl;
			return;
		}
		if (free_slot < 0 && ssls[i].bev == NULL) {
			free_slot = i;
		}
	}
	if (free_slot >= 0) {
		ssls[free_slot].bev = bev;
		ssls[free_slot].ssl = ssl;
	}
}

static struct event_base *base_or_current(struct event_base *base)
{
	return base != NULL ? base : event_global_current_base_;
}

static struct bufferevent *socket_new(struct event_base *base, evutil_socket_t fd,
				      enum hush_side side, const struct shim_pair *raw,
				      int options)
{
	struct hush_bufferevent_config cfg;
	base = base_or_current(base);
	shim_config(&cfg, base, side, raw);
	struct bufferevent *bev = hush_bufferevent_socket_new(base, fd, &cfg, options);
	if (bev == NULL) {
		int rc = base != NULL ? hush_bufferevent_check_libevent(base) : HUSH_EINVAL;
		if (rc == 0) {
			rc = hush_bufferevent_config_check(&cfg);
		}
		fprintf(stderr, "hush-shim: hush_bufferevent_socket_new(fd %d) refused: %s\n",
			(int)fd, rc != 0 ? hush_strerror(rc) : "see the header");
	}
	made(bev);
	return bev;
}

struct bufferevent *hush_shim_socket_new(struct event_base *base, evutil_socket_t fd,
					 int options)
{
	pthread_mutex_lock(&shim_lock);
	shim_init();
	enum hush_side side = HUSH_SIDE_SERVER;
	int end = 0;
	if (fd < 0) {
		side = HUSH_SIDE_CLIENT;
	} else if (pair_of(fd, &end) != NULL) {
		side = end == 0 ? HUSH_SIDE_CLIENT : HUSH_SIDE_SERVER;
	}
	struct bufferevent *bev = socket_new(base, fd, side, NULL, options);
	pthread_mutex_unlock(&shim_lock);
	return bev;
}

struct bufferevent *hush_shim_bufferevent_new(evutil_socket_t fd, bufferevent_data_cb readcb,
					      bufferevent_data_cb writecb,
					      bufferevent_event_cb errorcb, void *cbarg)
{
	struct bufferevent *bev = hush_shim_socket_new(NULL, fd, 0);
	if (bev != NULL) {
		bufferevent_setcb(bev, readcb, writecb, errorcb, cbarg);
	}
	return bev;
}

struct bufferevent *hush_shim_openssl_socket_new(struct event_base *base, evutil_socket_t fd,
						 struct ssl_st *ssl,
						 enum bufferevent_ssl_state state, int options)
{
	pthread_mutex_lock(&shim_lock);
	shim_init();
	struct bufferevent *bev = NULL;
	if (state == BUFFEREVENT_SSL_OPEN) {
		enum hush_side side;
		const struct shim_pair *raw = raw_key_for(fd, &side, HUSH_SIDE_CLIENT, true);
		if (raw != NULL) {
			bev = socket_new(base, fd, side, raw, options);
		} else {
			fprintf(stderr, "hush-shim: BUFFEREVENT_SSL_OPEN refused: raw keys are "
					"shared only between the ends of a socketpair\n");
		}
	} else {
		enum hush_side side = state == BUFFEREVENT_SSL_CONNECTING ? HUSH_SIDE_CLIENT
									  : HUSH_SIDE_SERVER;
		bev = socket_new(base, fd, side, NULL, options);
	}
	remember_ssl(bev, ssl);
	pthread_mutex_unlock(&shim_lock);
	return bev;
}

struct bufferevent *hush_shim_openssl_filter_new(struct event_base *base,
						 struct bufferevent *underlying,
						 struct ssl_st *ssl,
						 enum bufferevent_ssl_state state, int options)
{
	(void)base; /* A filter runs on its underlying bufferevent's base. */
	pthread_mutex_lock(&shim_lock);
	shim_init();
	struct hush_bufferevent_config cfg;
	struct bufferevent *bev = NULL;
	evutil_socket_t fd = underlying != NULL ? bufferevent_getfd(underlying) : -1;
	enum hush_side side = state == BUFFEREVENT_SSL_CONNECTING ? HUSH_SIDE_CLIENT
								  : HUSH_SIDE_SERVER;
	if (state != BUFFEREVENT_SSL_OPEN) {
		/* A handshake, as for a socket; should hush refuse the configuration
		 * (leaving underlying untouched), raw keys as for an open connection,
		 * which needs a socketpair underneath. */
		shim_config(&cfg, NULL, side, NULL);
		bev = hush_bufferevent_filter_new(underlying, &cfg, options);
	}
	if (bev == NULL) {
		enum hush_side raw_side;
		const struct shim_pair *raw =
			raw_key_for(fd, &raw_side, side, state == BUFFEREVENT_SSL_OPEN);
		if (raw != NULL) {
			shim_config(&cfg, NULL, raw_side, raw);
			bev = hush_bufferevent_filter_new(underlying, &cfg, options);
		}
		if (bev == NULL) {
			fprintf(stderr, "hush-shim: hush_bufferevent_filter_new refused: %s\n",
				raw != NULL ? hush_strerror(hush_bufferevent_config_check(&cfg))
					    : "the handshake configuration was refused, and no "
					      "socketpair underneath to share a raw key");
		}
	}
	made(bev);
	remember_ssl(bev, ssl);
	pthread_mutex_unlock(&shim_lock);
	return bev;
}

struct bufferevent *hush_shim_evhttp_bevcb(struct event_base *base, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&shim_lock);
	shim_init();
	struct bufferevent *bev = socket_new(base, -1, HUSH_SIDE_SERVER, NULL,
					     BEV_OPT_CLOSE_ON_FREE);
	pthread_mutex_unlock(&shim_lock);
	return bev;
}

/* The SSL object the test handed to the constructor: hush uses none, but the tests
 * check that there is one, and call SSL_renegotiate() on it (which, on an SSL that
 * never ran a handshake, does nothing). */
struct ssl_st *hush_shim_openssl_get_ssl(struct bufferevent *bufev)
{
	pthread_mutex_lock(&shim_lock);
	for (int i = 0; i < SHIM_MAX; i++) {
		if (bufev != NULL && ssls[i].bev == bufev) {
			struct ssl_st *ssl = ssls[i].ssl;
			pthread_mutex_unlock(&shim_lock);
			return ssl;
		}
	}
	pthread_mutex_unlock(&shim_lock);
	return bufferevent_openssl_get_ssl(bufev);
}

/* hush has no dirty shutdown by design (hush/bufferevent.h): nothing to set. */
void hush_shim_openssl_set_allow_dirty_shutdown(struct bufferevent *bev,
						int allow_dirty_shutdown)
{
	if (hush_bufferevent_get_error(bev) == HUSH_EINVAL) {
		bufferevent_openssl_set_allow_dirty_shutdown(bev, allow_dirty_shutdown);
	}
}

int hush_shim_peer_verified(struct bufferevent *bev)
{
	uint8_t key[HUSH_KEY_SIZE];
	return hush_bufferevent_peer_key(bev, key) == 0;
}
