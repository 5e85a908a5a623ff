/*
 * The per-event_base state: end-of-iteration work, cipher contexts lent to active
 * connections, and the wake-up that resumes reading when pool buffers come back.
 */
#include <pthread.h>
#include <string.h>

#include "record/record-internal.h"
#include "transport/transport-internal.h"

/*
 * Every live loop, so that a pool's "buffers are back" callback, which runs on whatever
 * thread released a buffer, can wake the loops that have starved connections.
 */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hush_loop *registry;

static void pool_available(void *arg)
{
	struct hush_pool *pool = arg;

	pthread_mutex_lock(&registry_lock);
	for (struct hush_loop *l = registry; l != NULL; l = l->next_loop) {
		if (l->pool == pool && atomic_load(&l->has_starved)) {
			/* Thread-safe once evthread_use_pthreads() was called. */
			event_active(l->wake_ev, EV_READ, 0);
		}
	}
	pthread_mutex_unlock(&registry_lock);
}

static int vec_push(struct conn_vec *vec, void *item, uint32_t *slot)
{
	if (vec->n == vec->cap) {
		size_t cap = vec->cap ? vec->cap * 2 : 16;
		struct conn_vec_ent *v = hush__alloc(cap * sizeof(*v));
		if (v == NULL) {
			return HUSH_ENOMEM;
		}
		if (vec->n > 0) {
			memcpy(v, vec->v, vec->n * sizeof(*v));
		}
		hush__free(vec->v, vec->cap * sizeof(*v));
		vec->v = v;
		vec->cap = cap;
	}
	if (slot != NULL) {
		*slot = (uint32_t)vec->n;
	}
	vec->v[vec->n++] = (struct conn_vec_ent){item, slot};
	return 0;
}

/* An item is on a list at most once (its owner's flags say so). */
static void vec_forget(struct conn_vec *vec, const void *item, const uint32_t *slot)
{
	if (slot != NULL) {
		if (*slot < vec->n && vec->v[*slot].item == item) {
			vec->v[*slot].item = NULL;
		}
		return;
	}
	for (size_t i = 0; i < vec->n; i++) {
		if (vec->v[i].item == item) {
			vec->v[i].item = NULL;
			return;
		}
	}
}

static void vec_free(struct conn_vec *vec)
{
	hush__free(vec->v, vec->cap * sizeof(*vec->v));
	memset(vec, 0, sizeof(*vec));
}

static void on_pending(evutil_socket_t fd, short what, void *arg)
{
	struct hush_loop *loop = arg;
	(void)fd;
	(void)what;
	/* Items added while walking are appended and walked in this same pass. */
	for (size_t i = 0; i < loop->pending.n; i++) {
		void *item = loop->pending.v[i].item;
		if (item != NULL) {
			loop->pending.v[i].item = NULL;
			loop->ops->on_pending(item);
		}
	}
	loop->pending.n = 0;
	/* After a burst (thousands of connections opening at once) give the list's memory
	 * back, so that it does not stay on the books of every idle connection; small lists
	 * are kept so steady traffic allocates nothing. */
	if (loop->pending.cap > 1024) {
		vec_free(&loop->pending);
	}
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct hush_loop *loop = arg;
	(void)fd;
	(void)what;
	atomic_store(&loop->has_starved, false);
	/* An item that starves again while we walk is appended past the end we saw, so it
	 * waits for the next wake-up instead of spinning here. */
	size_t n = loop->starved.n;
	for (size_t i = 0; i < n; i++) {
		void *item = loop->starved.v[i].item;
		if (item != NULL) {
			loop->starved.v[i].item = NULL;
			loop->ops->on_wake(item);
		}
	}
	size_t kept = 0;
	for (size_t i = 0; i < loop->starved.n; i++) {
		struct conn_vec_ent e = loop->starved.v[i];
		if (e.item != NULL) {
			if (e.slot != NULL) {
				*e.slot = (uint32_t)kept;
			}
			loop->starved.v[kept++] = e;
		}
	}
	loop->starved.n = kept;
	if (kept > 0) {
		atomic_store(&loop->has_starved, true);
		return;
	}
	event_del(loop->wake_ev);
	/* As for the pending list: a burst's memory goes back once it has passed. */
	if (loop->starved.cap > 1024) {
		vec_free(&loop->starved);
	}
}

int hush_loop_new(struct hush_loop **out, struct event_base *base, struct hush_pool *pool)
{
	HUSH_ENSURE(out != NULL && base != NULL && pool != NULL, HUSH_EINVAL);
	struct hush_loop *loop = hush__calloc(sizeof(*loop));
	HUSH_ENSURE(loop != NULL, HUSH_ENOMEM);
	loop->base = base;
	atomic_init(&loop->thread, (unsigned long)pthread_self());
	loop->pool = pool;
	loop->pending_ev = event_new(base, -1, 0, on_pending, loop);
	loop->wake_ev = event_new(base, -1, 0, on_wake, loop);
	if (loop->pending_ev == NULL || loop->wake_ev == NULL) {
		if (loop->pending_ev != NULL) {
			event_free(loop->pending_ev);
		}
		if (loop->wake_ev != NULL) {
			event_free(loop->wake_ev);
		}
		hush__free(loop, sizeof(*loop));
		return HUSH_ENOMEM;
	}
	pthread_mutex_lock(&registry_lock);
	loop->next_loop = registry;
	registry = loop;
	pthread_mutex_unlock(&registry_lock);
	hush_pool_set_available_cb(pool, pool_available, pool);
	*out = loop;
	return 0;
}

void hush_loop_free(struct hush_loop *loop)
{
	if (loop == NULL) {
		return;
	}
	pthread_mutex_lock(&registry_lock);
	for (struct hush_loop **p = &registry; *p != NULL; p = &(*p)->next_loop) {
		if (*p == loop) {
			*p = loop->next_loop;
			break;
		}
	}
	pthread_mutex_unlock(&registry_lock);
	event_free(loop->pending_ev);
	event_free(loop->wake_ev);
	vec_free(&loop->pending);
	vec_free(&loop->starved);
	for (unsigned i = 0; i < loop->nctx; i++) {
		EVP_CIPHER_CTX_free(loop->ctx_cache[i]);
	}
	while (loop->cfgs != NULL) {
		struct conn_cfg *next = loop->cfgs->next;
		hush__free(loop->cfgs, sizeof(*loop->cfgs));
		loop->cfgs = next;
	}
	hush__free(loop, sizeof(*loop));
}

int hush__loop_cfg_get(struct hush_loop *loop, const struct hush_conn_config *cfg,
		       const struct hush_conn_callbacks *cb, void (*guard)(void *, bool),
		       struct conn_cfg **out)
{
	for (struct conn_cfg *k = loop->cfgs; k != NULL; k = k->next) {
		if (memcmp(&k->c, cfg, sizeof(*cfg)) == 0 && memcmp(&k->cb, cb, sizeof(*cb)) == 0 &&
		    k->guard == guard) {
			k->refs++;
			*out = k;
			return 0;
		}
	}
	struct conn_cfg *k = hush__calloc(sizeof(*k));
	HUSH_ENSURE(k != NULL, HUSH_ENOMEM);
	k->c = *cfg;
	k->cb = *cb;
	k->guard = guard;
	k->refs = 1;
	k->next = loop->cfgs;
	loop->cfgs = k;
	*out = k;
	return 0;
}

void hush__loop_cfg_put(struct hush_loop *loop, struct conn_cfg *cfg)
{
	if (--cfg->refs > 0) {
		return;
	}
	for (struct conn_cfg **p = &loop->cfgs; *p != NULL; p = &(*p)->next) {
		if (*p == cfg) {
			*p = cfg->next;
			break;
		}
	}
	hush__free(cfg, sizeof(*cfg));
}

int hush__loop_add_pending(struct hush_loop *loop, void *item)
{
	HUSH_GUARD(vec_push(&loop->pending, item, NULL));
	event_active(loop->pending_ev, 0, 0);
	return 0;
}

int hush__loop_add_starved(struct hush_loop *loop, void *item, uint32_t *slot)
{
	HUSH_GUARD(vec_push(&loop->starved, item, slot));
	atomic_store(&loop->has_starved, true);
	/* The pool's callback wakes us as soon as buffers come back. Should its call race
	 * with this one (another thread released in between), a slow timer retries, so a
	 * starved connection never waits for ever and the loop never spins. */
	static const struct timeval retry = {0, 100 * 1000};
	event_add(loop->wake_ev, &retry);
	return 0;
}

void hush__loop_forget(struct hush_loop *loop, void *item, uint32_t *slot)
{
	vec_forget(&loop->pending, item, NULL);
	vec_forget(&loop->starved, item, slot);
}

EVP_CIPHER_CTX *hush__loop_ctx_borrow(struct hush_loop *loop)
{
	if (loop->nctx > 0) {
		return loop->ctx_cache[--loop->nctx];
	}
	return EVP_CIPHER_CTX_new();
}

void hush__loop_ctx_return(struct hush_loop *loop, EVP_CIPHER_CTX *ctx)
{
	if (ctx == NULL) {
		return;
	}
	if (loop->nctx < HUSH_LOOP_CTX_CACHE) {
		loop->ctx_cache[loop->nctx++] = ctx;
		return;
	}
	EVP_CIPHER_CTX_free(ctx);
}

int hush__loop_lend_ciphers(struct hush_loop *loop, struct hush_record *rec)
{
	EVP_CIPHER_CTX *s = hush__loop_ctx_borrow(loop);
	EVP_CIPHER_CTX *o = hush__loop_ctx_borrow(loop);
	if (s == NULL || o == NULL) {
		hush__loop_ctx_return(loop, s);
		hush__loop_ctx_return(loop, o);
		return HUSH_ENOMEM;
	}
	hush__record_give_ciphers(rec, s, o);
	return 0;
}

void hush__loop_take_ciphers(struct hush_loop *loop, struct hush_record *rec)
{
	EVP_CIPHER_CTX *s = NULL;
	EVP_CIPHER_CTX *o = NULL;
	hush__record_take_ciphers(rec, &s, &o);
	hush__loop_ctx_return(loop, s);
	hush__loop_ctx_return(loop, o);
}
