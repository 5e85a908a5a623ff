/*
 * Accepting hush connections: libevent's evconnlistener, each accepted socket started
 * as the server of a hush handshake, with admission control over the handshakes in
 * progress (see hush/listener.h): eviction at the cap, the first message's deadline and
 * a cap per source address.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/listener.h>

#include <hush/listener.h>

#include "transport/transport-internal.h"

/* Pause after accept() failed for lack of descriptors or memory, instead of spinning. */
#define ACCEPT_BACKOFF_MS 100
/* Buckets of the per-source table: a power of two, at most this many. */
#define MAX_BUCKETS 4096u
/* Candidates looked at, per stage, when choosing whom to evict. */
#define EVICT_SCAN 16
/* Source key: a family byte, then the address (IPv4) or its /64 (IPv6). */
#define SOURCE_KEY_MAX 9

/* Admission stages: a handshake moves from the first list to the second once the
 * peer's first message is in, and eviction takes from the first list first. */
enum { STAGE_FIRST = 0, STAGE_LATER = 1, N_STAGES = 2 };

/*
 * The listener's record of one handshake in progress. The connection's handshake phase
 * holds a pointer to its watch (first, so the record is found from it) and reports
 * progress and the end through it.
 */
struct hush__admission {
	struct hush__hs_watch watch;
	struct hush_listener *l;
	struct hush_conn *c;
	struct hush__admission *prev;  /* the stage's list, oldest first */
	struct hush__admission *next;
	struct hush__admission *hnext; /* the source's bucket */
	uint32_t started;              /* loop clock, ms, at the accept */
	uint32_t since;                /* loop clock, ms, when it entered its stage */
	uint8_t stage;
	uint8_t keylen;                /* 0: not counted per source (Unix sockets) */
	uint8_t key[SOURCE_KEY_MAX];
};

struct adm_list {
	struct hush__admission *head;
	struct hush__admission *tail;
};

struct hush_listener {
	struct hush_loop *loop;
	struct evconnlistener *lev;  /* NULL once freed by the application */
	struct event *backoff;
	struct event *first_timer;   /* the oldest first-message deadline */
	struct event *stall_timer;   /* capped: when the oldest may have stalled */
	struct adm_list stages[N_STAGES];
	struct hush__admission **buckets;
	unsigned nbuckets;
	unsigned max_per_source;
	uint32_t first_timeout_ms;
	uint32_t min_stall_ms;
	struct hush_listener_stats stats;
	const struct hush_handshake_config *hcfg;
	struct hush_conn_config conn;
	struct hush_conn_callbacks cb;
	hush_accept_fn on_accept;
	void *accept_arg;
	unsigned max_handshakes;
	unsigned handshakes;         /* in progress, started here */
	bool capped;                 /* not accepting: at the cap, and every handshake
				      * looked at had bytes waiting (a burst, not a stall) */
	bool paused;                 /* not accepting: hush_listener_pause() */
	bool backing_off;            /* not accepting: accept() ran out of resources */
	bool in_accept;              /* inside on_accept or another walk: keep the struct */
	bool freed;                  /* hush_listener_free() was called */
};

void hush_listener_config_init(struct hush_listener_config *cfg)
{
	if (cfg == NULL) {
		return;
	}
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_handshakes = 256;
	cfg->max_per_source = 32;
	cfg->first_message_timeout_ms = 3000;
	cfg->min_stall_ms = 1000;
	cfg->backlog = 1024;
}

static void maybe_destroy(struct hush_listener *l);
static void update_accepting(struct hush_listener *l);

static uint32_t loop_ms(const struct hush_listener *l)
{
	struct timeval tv;
	event_base_gettimeofday_cached(l->loop->base, &tv);
	return (uint32_t)((uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u);
}

/* ---- Admission records ---- */

/* The key a source is counted under; 0 when it is not counted. */
static uint8_t source_key(const struct sockaddr *sa, socklen_t len, uint8_t key[SOURCE_KEY_MAX])
{
	static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (sa == NULL) {
		return 0;
	}
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		key[0] = 4;
		memcpy(key + 1, &in->sin_addr, 4);
		return 5;
	}
	if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
			return 5;
		}
		/* One host of IPv6 commonly owns a whole /64: count it as one source. */
		key[0] = 6;
		memcpy(key + 1, a, 8);
		return 9;
	}
	return 0;
}

static unsigned bucket_of(const struct hush_listener *l, const uint8_t *key, uint8_t keylen)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (uint8_t i = 0; i < keylen; i++) {
		h = (h ^ key[i]) * 16777619u;
	}
	return h & (l->nbuckets - 1);
}

static unsigned source_count(const struct hush_listener *l, const uint8_t *key, uint8_t keylen)
{
	unsigned n = 0;
	for (const struct hush__admission *a = l->buckets[bucket_of(l, key, keylen)]; a != NULL;
	     a = a->hnext) {
		n += a->keylen == keylen && memcmp(a->key, key, keylen) == 0;
	}
	return n;
}

static void list_push(struct adm_list *li, struct hush__admission *a)
{
	a->prev = li->tail;
	a->next = NULL;
	if (li->tail != NULL) {
		li->tail->next = a;
	} else {
		li->head = a;
	}
	li->tail = a;
}

static void list_unlink(struct adm_list *li, struct hush__admission *a)
{
	if (a->prev != NULL) {
		a->prev->next = a->next;
	} else {
		li->head = a->next;
	}
	if (a->next != NULL) {
		a->next->prev = a->prev;
	} else {
		li->tail = a->prev;
	}
	a->prev = a->next = NULL;
}

/* Arms the first-message timer for the oldest handshake still waiting, if any. */
static void arm_first_timer(struct hush_listener *l)
{
	const struct hush__admission *a = l->stages[STAGE_FIRST].head;
	if (a == NULL || l->first_timeout_ms == 0 || evtimer_pending(l->first_timer, NULL)) {
		return;
	}
	int32_t left = (int32_t)(a->started + l->first_timeout_ms - loop_ms(l));
	uint32_t ms = left > 0 ? (uint32_t)left : 0;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(l->first_timer, &tv);
}

static void on_first_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hush_listener *l = arg;
	(void)fd;
	(void)what;
	uint32_t now = loop_ms(l);
	/* The list is in accept order: stop at the first one still in time. Failing a
	 * connection ends its handshake, which takes it off the list; the guard keeps the
	 * listener (freed by the application meanwhile) until the walk is over. */
	struct hush__admission *a;
	bool was = l->in_accept;
	l->in_accept = true;
	while ((a = l->stages[STAGE_FIRST].head) != NULL &&
	       (int32_t)(now - a->started) >= (int32_t)l->first_timeout_ms) {
		l->stats.first_timeouts++;
		if (!hush__conn_abort_handshake(a->c, HUSH_ETIMEDOUT)) {
			break; /* not expected: the handshake did not end */
		}
	}
	l->in_accept = was;
	arm_first_timer(l);
	maybe_destroy(l);
}

/* The connection's report that the peer's first message is in. */
static void handshake_progressed(struct hush__hs_watch *w)
{
	struct hush__admission *a = (struct hush__admission *)(void *)w;
	if (a->stage != STAGE_FIRST) {
		return;
	}
	struct hush_listener *l = a->l;
	list_unlink(&l->stages[STAGE_FIRST], a);
	a->stage = STAGE_LATER;
	a->since = loop_ms(l);
	list_push(&l->stages[STAGE_LATER], a);
}

/* Whether the peer's bytes wait in the socket: the connection is busy, not stalled, and
 * reads them in this loop iteration. */
static bool bytes_waiting(const struct hush__admission *a)
{
	int n = 0;
	return ioctl(hush_conn_fd(a->c), FIONREAD, &n) == 0 && n > 0;
}

/*
 * At the cap, whom a newcomer replaces: the handshake with the least progress, the
 * oldest first, among the stalled ones: those that made no progress for min_stall_ms
 * and whose peer has no bytes waiting. A handshake that moved recently, or whose bytes
 * wait to be read, belongs to a peer that is merely slower than the accept loop (a
 * burst of real clients: the server's answer or the client's next message is on its
 * way). NULL when none of the first candidates has stalled; *next_ms is then how long
 * until the oldest candidate may have.
 */
static struct hush__admission *pick_victim(const struct hush_listener *l, uint32_t *next_ms)
{
	uint32_t now = loop_ms(l);
	*next_ms = l->min_stall_ms;
	for (int stage = STAGE_FIRST; stage < N_STAGES; stage++) {
		int k = 0;
		for (struct hush__admission *a = l->stages[stage].head; a != NULL && k < EVICT_SCAN;
		     a = a->next, k++) {
			int32_t age = (int32_t)(now - a->since);
			if (age < (int32_t)l->min_stall_ms) {
				uint32_t left = l->min_stall_ms - (uint32_t)(age > 0 ? age : 0);
				*next_ms = left < *next_ms ? left : *next_ms;
				continue;
			}
			if (!bytes_waiting(a)) {
				return a;
			}
		}
	}
	return NULL;
}

/* Capped: look again once the oldest handshake may have stalled. */
static void on_stall_timer(evutil_socket_t fd, short what, void *arg)
{
	struct hush_listener *l = arg;
	(void)fd;
	(void)what;
	if (l->capped) {
		l->capped = false;
		update_accepting(l);
	}
}
/* Accepts again unless something still says not to. */
static void update_accepting(struct hush_listener *l)
{
	if (l->lev == NULL) {
		return;
	}
	if (l->capped || l->paused || l->backing_off) {
		evconnlistener_disable(l->lev);
	} else {
		evconnlistener_enable(l->lev);
	}
}

static void destroy(struct hush_listener *l)
{
	if (l->lev != NULL) {
		evconnlistener_free(l->lev);
	}
	if (l->backoff != NULL) {
		event_free(l->backoff);
	}
	if (l->first_timer != NULL) {
		event_free(l->first_timer);
	}
	if (l->stall_timer != NULL) {
		event_free(l->stall_timer);
	}
	hush__free(l->buckets, l->nbuckets * sizeof(*l->buckets));
	hush__free(l, sizeof(*l));
}

/* Freed by the application and no handshake of ours runs any more: the memory goes. */
static void maybe_destroy(struct hush_listener *l)
{
	if (l->freed && l->handshakes == 0 && !l->in_accept) {
		destroy(l);
	}
}

/* The connection's report that its handshake ended, whichever way. */
static void handshake_ended(struct hush__hs_watch *w)
{
	struct hush__admission *a = (struct hush__admission *)(void *)w;
	struct hush_listener *l = a->l;
	bool resume = l->capped && l->handshakes - 1 < l->max_handshakes;
	list_unlink(&l->stages[a->stage], a);
	if (a->keylen > 0) {
		struct hush__admission **pp = &l->buckets[bucket_of(l, a->key, a->keylen)];
		while (*pp != a) {
			pp = &(*pp)->hnext;
		}
		*pp = a->hnext;
	}
	hush__free(a, sizeof(*a));
	l->handshakes--;
	if (resume) {
		l->capped = false;
		event_del(l->stall_timer);
		update_accepting(l);
	}
	/* Inside the accept path or the timer the caller destroys the listener if due. */
	maybe_destroy(l);
}

static const struct hush__hs_watch_ops admission_ops = {
	.progressed = handshake_progressed,
	.ended = handshake_ended,
};

/* Gives up an accepted socket: the connection closes it if it was to own it. */
static void drop_socket(const struct hush_listener *l, struct hush_conn *c, int fd)
{
	hush_conn_free(c);
	if (!(l->conn.flags & HUSH_CONN_CLOSE_ON_FREE)) {
		close(fd);
	}
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *addr,
		      int addrlen, void *arg)
{
	struct hush_listener *l = arg;
	struct hush_conn *c = NULL;
	(void)lev;
	uint8_t key[SOURCE_KEY_MAX];
	uint8_t keylen = source_key(addr, (socklen_t)addrlen, key);
	struct hush__admission *victim = NULL;
	uint32_t next_ms = 0;
	unsigned mine = 0;
	if (l->handshakes >= l->max_handshakes) {
		victim = pick_victim(l, &next_ms);
		mine = keylen > 0 ? source_count(l, key, keylen) : 0;
		/* Under pressure one source may not hold more than its share while others
		 * wait: it can neither take the place of another's handshake nor make the
		 * listener stop accepting. A source alone (one client opening many
		 * connections at once) waits in the backlog instead. */
		if (keylen > 0 && mine >= l->max_per_source &&
		    (victim != NULL || mine < l->handshakes)) {
			l->stats.refused_per_source++;
			close(fd);
			return;
		}
	}
	struct hush__admission *a = hush__calloc(sizeof(*a));
	if (a == NULL) {
		close(fd);
		return;
	}
	l->in_accept = true;
	if (victim != NULL) {
		/* The newcomer takes the place of the least advanced stalled handshake, so
		 * that peers which stall cannot hold the door shut (hush/listener.h). The
		 * guard keeps the listener alive if that was its last handshake after a
		 * free. */
		l->stats.evicted++;
		hush__conn_abort_handshake(victim->c, HUSH_EBUSY);
	} else if (l->handshakes >= l->max_handshakes &&
		   (mine >= l->max_per_source ||
		    l->handshakes >= l->max_handshakes + l->max_handshakes / 2)) {
		/* No one has stalled: a burst, not a flood. This one is taken over the cap;
		 * the next wait in the backlog until a handshake ends or the oldest may
		 * have stalled. Short of that, a source under its share gets headroom of
		 * half the cap: stopping accept() hands the backlog to whoever fills it
		 * fastest. */
		struct timeval tv = {next_ms / 1000, (next_ms % 1000) * 1000};
		l->capped = true;
		update_accepting(l);
		evtimer_add(l->stall_timer, &tv);
	}
	/* hush_conn_new closes fd itself on failure when it was to own it. */
	if (hush_conn_new(&c, l->loop, fd, &l->conn, &l->cb, l->accept_arg) < 0) {
		hush__free(a, sizeof(*a));
		drop_socket(l, NULL, fd);
		goto out;
	}
	a->watch.ops = &admission_ops;
	if (hush__conn_start_handshake_for(c, l->hcfg, HUSH_SIDE_SERVER, &a->watch) < 0) {
		hush__free(a, sizeof(*a));
		drop_socket(l, c, fd);
		goto out;
	}
	a->l = l;
	a->c = c;
	a->started = a->since = loop_ms(l);
	a->stage = STAGE_FIRST;
	a->keylen = keylen;
	memcpy(a->key, key, keylen);
	list_push(&l->stages[STAGE_FIRST], a);
	if (keylen > 0) {
		unsigned b = bucket_of(l, key, keylen);
		a->hnext = l->buckets[b];
		l->buckets[b] = a;
	}
	l->handshakes++;
	l->stats.accepted++;
	arm_first_timer(l);
	l->on_accept(l, c, addr, (socklen_t)addrlen, l->accept_arg);
out:
	l->in_accept = false;
	maybe_destroy(l);
}

static void on_backoff_end(evutil_socket_t fd, short what, void *arg)
{
	struct hush_listener *l = arg;
	(void)fd;
	(void)what;
	l->backing_off = false;
	update_accepting(l);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct hush_listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();
	(void)lev;
	/* The pending peers stay in the backlog; accepting again at once would only spin
	 * on the same failure. */
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		struct timeval tv = {0, ACCEPT_BACKOFF_MS * 1000};
		l->backing_off = true;
		update_accepting(l);
		event_add(l->backoff, &tv);
	}
}

int hush_listener_new(struct hush_listener **out, struct hush_loop *loop, int fd,
		      const struct hush_listener_config *cfg)
{
	int rc = HUSH_EINVAL;
	struct hush_listener *l = NULL;
	if (out == NULL || loop == NULL || fd < 0 || cfg == NULL || cfg->handshake == NULL ||
	    cfg->callbacks == NULL || cfg->callbacks->on_event == NULL || cfg->on_accept == NULL ||
	    cfg->max_handshakes == 0 || cfg->max_per_source == 0 || cfg->backlog < 0) {
		goto fail;
	}
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0) {
		goto fail;
	}
	/* libevent's listener accepts until EAGAIN: on a blocking socket it would hang. */
	if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		rc = HUSH_ESYS;
		goto fail;
	}
	l = hush__calloc(sizeof(*l));
	if (l == NULL) {
		rc = HUSH_ENOMEM;
		goto fail;
	}
	l->loop = loop;
	l->hcfg = cfg->handshake;
	if (cfg->conn != NULL) {
		l->conn = *cfg->conn;
	} else {
		hush_conn_config_init(&l->conn);
	}
	l->cb = *cfg->callbacks;
	l->on_accept = cfg->on_accept;
	l->accept_arg = cfg->accept_arg;
	l->max_handshakes = cfg->max_handshakes;
	l->max_per_source = cfg->max_per_source;
	l->first_timeout_ms = cfg->first_message_timeout_ms;
	l->min_stall_ms = cfg->min_stall_ms;
	/* About one bucket per handshake at the cap, within bounds. */
	l->nbuckets = 16;
	while (l->nbuckets < cfg->max_handshakes && l->nbuckets < MAX_BUCKETS) {
		l->nbuckets *= 2;
	}
	l->buckets = hush__calloc(l->nbuckets * sizeof(*l->buckets));
	l->backoff = evtimer_new(loop->base, on_backoff_end, l);
	l->first_timer = evtimer_new(loop->base, on_first_timer, l);
	l->stall_timer = evtimer_new(loop->base, on_stall_timer, l);
	if (l->buckets == NULL || l->backoff == NULL || l->first_timer == NULL ||
	    l->stall_timer == NULL) {
		rc = HUSH_ENOMEM;
		goto fail;
	}
	/* listen() again on a listening socket only sets its backlog. */
	if (listen(fd, cfg->backlog > 0 ? cfg->backlog : 1024) < 0) {
		rc = HUSH_ESYS;
		goto fail;
	}
	l->lev = evconnlistener_new(loop->base, on_accept, l,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (l->lev == NULL) {
		rc = HUSH_ENOMEM;
		goto fail;
	}
	evconnlistener_set_error_cb(l->lev, on_accept_error);
	*out = l;
	return 0;
fail:
	if (l != NULL) {
		l->lev = NULL;
		destroy(l);
	}
	if (fd >= 0) {
		close(fd);
	}
	return rc;
}

void hush_listener_free(struct hush_listener *l)
{
	if (l == NULL || l->freed) {
		return;
	}
	l->freed = true;
	/* The socket closes now; the struct stays until the handshakes it counts end. */
	evconnlistener_free(l->lev);
	l->lev = NULL;
	event_del(l->backoff);
	event_del(l->stall_timer);
	maybe_destroy(l);
}

void hush_listener_pause(struct hush_listener *l)
{
	if (l == NULL) {
		return;
	}
	l->paused = true;
	update_accepting(l);
}

void hush_listener_resume(struct hush_listener *l)
{
	if (l == NULL) {
		return;
	}
	l->paused = false;
	update_accepting(l);
}

unsigned hush_listener_handshakes(const struct hush_listener *l)
{
	return l != NULL ? l->handshakes : 0;
}

void hush_listener_get_stats(const struct hush_listener *l, struct hush_listener_stats *out)
{
	*out = l->stats;
}

int hush_listener_bind(struct hush_listener **out, struct hush_loop *loop,
		       const struct sockaddr *addr, socklen_t addrlen,
		       const struct hush_listener_config *cfg)
{
	HUSH_ENSURE(out != NULL && addr != NULL && cfg != NULL, HUSH_EINVAL);
	int family = addr->sa_family;
	socklen_t need = family == AF_INET    ? (socklen_t)sizeof(struct sockaddr_in)
			 : family == AF_INET6 ? (socklen_t)sizeof(struct sockaddr_in6)
			 : family == AF_UNIX  ? (socklen_t)offsetof(struct sockaddr_un, sun_path) + 1
					      : 0;
	HUSH_ENSURE(need > 0 && addrlen >= need, HUSH_EINVAL);
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	HUSH_ENSURE(fd >= 0, HUSH_ESYS);
	int one = 1;
	/* SO_REUSEPORT only works when set before bind(): the kernel forms the group of
	 * sockets sharing the address as each binds. */
	if ((family != AF_UNIX &&
	     setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) ||
	    (cfg->reuseport && family != AF_UNIX &&
	     setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    bind(fd, addr, addrlen) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return HUSH_ESYS;
	}
	/* hush_listener_new() owns fd from here on, and closes it if it fails. */
	return hush_listener_new(out, loop, fd, cfg);
}

int hush_listener_fd(const struct hush_listener *l)
{
	return l != NULL && l->lev != NULL ? evconnlistener_get_fd(l->lev) : -1;
}
