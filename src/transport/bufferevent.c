/*
 * hush bufferevents: a libevent filter bufferevent whose filters open and seal ALTS
 * records. See include/hush/bufferevent.h for the contract and docs/DESIGN.md for why
 * it is a filter.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <hush/bufferevent.h>

#include "record/record-internal.h"
#include "transport/bufferevent-internal.h"
#include "transport/transport-internal.h"

struct hbev {
	struct bufferevent *bev;        /* the filter the application holds */
	struct bufferevent *underlying;
	struct hush_record *rec;
	struct hush_pool *pool;
	/* The filter's own callbacks on the underlying bufferevent, which we wrap. */
	bufferevent_data_cb inner_read;
	bufferevent_event_cb inner_event;
	/* While records wait in the underlying input for the application to drain its
	 * input below the read high watermark (see hold_back()): */
	struct evbuffer_cb_entry *drained_cb; /* on bev's input; NULL the rest of the time */
	int err;
	bool error_reported;
	bool held_back;                 /* drained_cb is enabled */
	bool resume_pending;            /* resume_reading() is queued on the loop */
	short eof_pending;              /* the underlying EOF, told after those records */
	bool freed;                     /* bev was finalized: only the pending callbacks hold h */
	struct hbev *next;              /* registry chain */
};

/* ---- Registry: which bufferevents are ours (public API takes only the pointer) ---- */

#define REG_BUCKETS 4096
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hbev *reg[REG_BUCKETS];

static size_t reg_slot(const struct bufferevent *bev)
{
	return ((uintptr_t)bev >> 4) % REG_BUCKETS;
}

static void reg_add(struct hbev *h)
{
	pthread_mutex_lock(&reg_lock);
	size_t i = reg_slot(h->bev);
	h->next = reg[i];
	reg[i] = h;
	pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(struct hbev *h)
{
	pthread_mutex_lock(&reg_lock);
	for (struct hbev **p = &reg[reg_slot(h->bev)]; *p != NULL; p = &(*p)->next) {
		if (*p == h) {
			*p = h->next;
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
}

/* bev's state; the caller holds reg_lock. NULL if bev is not ours. */
static struct hbev *reg_find_locked(const struct bufferevent *bev)
{
	for (struct hbev *h = reg[reg_slot(bev)]; h != NULL; h = h->next) {
		if (h->bev == bev) {
			return h;
		}
	}
	return NULL;
}

/* ---- Cipher contexts lent per call, from a per-thread cache ---- */

#define CTX_CACHE 8
struct ctx_cache {
	EVP_CIPHER_CTX *c[CTX_CACHE];
	unsigned n;
};
static _Thread_local struct ctx_cache *tcache;
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_destroy(void *p)
{
	struct ctx_cache *cc = p;
	for (unsigned i = 0; i < cc->n; i++) {
		EVP_CIPHER_CTX_free(cc->c[i]);
	}
	hush__free(cc, sizeof(*cc));
}

static void cache_key_init(void)
{
	(void)pthread_key_create(&cache_key, cache_destroy);
}

static EVP_CIPHER_CTX *ctx_borrow(void)
{
	if (tcache != NULL && tcache->n > 0) {
		return tcache->c[--tcache->n];
	}
	return EVP_CIPHER_CTX_new();
}

static void ctx_return(EVP_CIPHER_CTX *c)
{
	if (c == NULL) {
		return;
	}
	if (tcache == NULL) {
		pthread_once(&cache_once, cache_key_init);
		tcache = hush__calloc(sizeof(*tcache));
		if (tcache != NULL) {
			/* Freed with the thread; the main thread's lives until exit. */
			(void)pthread_setspecific(cache_key, tcache);
		}
	}
	if (tcache != NULL && tcache->n < CTX_CACHE) {
		tcache->c[tcache->n++] = c;
		return;
	}
	EVP_CIPHER_CTX_free(c);
}

static int ciphers_lend(struct hbev *h)
{
	EVP_CIPHER_CTX *s = ctx_borrow();
	EVP_CIPHER_CTX *o = ctx_borrow();
	if (s == NULL || o == NULL) {
		ctx_return(s);
		ctx_return(o);
		return HUSH_ENOMEM;
	}
	hush__record_give_ciphers(h->rec, s, o);
	return 0;
}

static void ciphers_back(struct hbev *h)
{
	EVP_CIPHER_CTX *s, *o;
	hush__record_take_ciphers(h->rec, &s, &o);
	ctx_return(s);
	ctx_return(o);
}

/* ---- Filters ---- */

/* An evbuffer reference's cleanup: the pool buffer goes back. */
static void buf_cleanup(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	struct hush_buf *b = arg;
	hush_buf_release(b);
}

static void fail(struct hbev *h, int err)
{
	if (h->err == 0) {
		h->err = err;
	}
}

/*
 * libevent's filter ignores an input filter's BEV_ERROR, so the error is reported
 * here, once, from the loop (deferred), and reading stops.
 */
static void report_error(struct hbev *h)
{
	if (h->error_reported) {
		return;
	}
	h->error_reported = true;
	bufferevent_disable(h->bev, EV_READ);
	bufferevent_trigger_event(h->bev, BEV_EVENT_ERROR | BEV_EVENT_READING,
				  BEV_TRIG_DEFER_CALLBACKS);
}

/* The end of a filter call: the contexts go back, and the outcome is told to libevent. */
static enum bufferevent_filter_result filter_done(struct hbev *h, size_t produced)
{
	ciphers_back(h);
	if (h->err != 0) {
		report_error(h);
		return BEV_ERROR;
	}
	return produced > 0 ? BEV_OK : BEV_NEED_MORE;
}

static void on_input_drained(struct evbuffer *input, const struct evbuffer_cb_info *info,
			     void *arg);

/*
 * The read high watermark. libevent's filter calls the input filter only while the
 * application's input is below the watermark, and only when the underlying bufferevent
 * reads: records it has already read wait in its input until more bytes arrive, which
 * never happens once the peer has sent everything. (libevent's own retry, an input
 * callback, is armed only if the input is still full after the read callback, so not
 * for an application that drains from inside its read callback.) So when the filter
 * stops at the watermark with bytes left, a callback on the application's input waits
 * for it to be drained below the watermark and queues resume_reading() on the loop,
 * which runs the filter's read path again. The callback exists only while records wait.
 */
static int hold_back(struct hbev *h, struct evbuffer *input)
{
	if (h->held_back) {
		return 0;
	}
	if (h->drained_cb == NULL) {
		h->drained_cb = evbuffer_add_cb(input, on_input_drained, h);
		if (h->drained_cb == NULL) {
			return HUSH_ENOMEM;
		}
	} else {
		evbuffer_cb_set_flags(input, h->drained_cb, EVBUFFER_CB_ENABLED);
	}
	h->held_back = true;
	return 0;
}

/*
 * The underlying bufferevent's end, held back behind records that waited for the
 * application (see on_underlying_event()), is told once they are all delivered: a
 * partial record left is truncation, reported with it rather than as a second event.
 */
static void tell_eof(struct hbev *h, struct evbuffer *src)
{
	short what = h->eof_pending;
	h->eof_pending = 0;
	if (evbuffer_get_length(src) > 0) {
		fail(h, HUSH_ETRUNCATED);
		h->error_reported = true;
		what |= BEV_EVENT_ERROR;
	}
	bufferevent_trigger_event(h->bev, what, BEV_TRIG_DEFER_CALLBACKS);
}

/*
 * Opens every complete record in src into dst (the application's input), up to lim
 * bytes when lim > 0 (the read high watermark). Plaintext goes by reference to the
 * pool buffer it was opened in.
 */
static enum bufferevent_filter_result open_records(struct evbuffer *src, struct evbuffer *dst,
						   ev_ssize_t lim, enum bufferevent_flush_mode mode,
						   void *arg)
{
	struct hbev *h = arg;
	(void)mode;
	if (h->err != 0) {
		return BEV_ERROR;
	}
	if (ciphers_lend(h) < 0) {
		fail(h, HUSH_ENOMEM);
		return BEV_ERROR;
	}
	size_t produced = 0;
	bool held = false;
	for (;;) {
		if (lim > 0 && produced >= (size_t)lim) {
			held = evbuffer_get_length(src) > 0;
			break;
		}
		uint8_t hdr[HUSH_RECORD_HEADER_SIZE];
		size_t have = evbuffer_get_length(src);
		size_t peek = have < sizeof(hdr) ? have : sizeof(hdr);
		if (evbuffer_copyout(src, hdr, peek) != (ev_ssize_t)peek) {
			fail(h, HUSH_ECRYPTO);
			break;
		}
		size_t need = 0;
		int rc = hush_record_parse(h->rec, hdr, peek, &need);
		if (rc == HUSH_EAGAIN && (have < HUSH_RECORD_LENGTH_SIZE || have < need)) {
			break;
		}
		if (rc < 0 && rc != HUSH_EAGAIN) {
			fail(h, rc);
			break;
		}
		struct hush_buf *b;
		rc = hush_pool_acquire(h->pool, need, &b);
		if (rc < 0) {
			/* No pool buffer (budget or memory): open inside libevent's own buffer
			 * and copy the plaintext out, so the stream never stalls. */
			uint8_t *frame = evbuffer_pullup(src, (ev_ssize_t)need);
			struct hush_iovec pt;
			if (frame == NULL) {
				fail(h, HUSH_ENOMEM);
				break;
			}
			rc = hush_record_open(h->rec, frame, need, &pt);
			if (rc == 0 && pt.len > 0 && evbuffer_add(dst, pt.base, pt.len) < 0) {
				rc = HUSH_ENOMEM;
			}
			if (rc < 0) {
				fail(h, rc);
				break;
			}
			evbuffer_drain(src, need);
			produced += pt.len;
			continue;
		}
		uint8_t *frame = hush_buf_data(b);
		struct hush_iovec pt;
		if (evbuffer_remove(src, frame, need) != (int)need) {
			hush_buf_release(b);
			fail(h, HUSH_ENOMEM);
			break;
		}
		rc = hush_record_open(h->rec, frame, need, &pt);
		if (rc < 0) {
			hush_buf_release(b);
			fail(h, rc);
			break;
		}
		if (pt.len == 0) {
			hush_buf_release(b);
			continue;
		}
		if (evbuffer_add_reference(dst, pt.base, pt.len, buf_cleanup, b) < 0) {
			hush_buf_release(b);
			fail(h, HUSH_ENOMEM);
			break;
		}
		produced += pt.len;
	}
	if (held && h->err == 0 && hold_back(h, dst) < 0) {
		fail(h, HUSH_ENOMEM);
	}
	enum bufferevent_filter_result res = filter_done(h, produced);
	/* After the outcome is settled: libevent must still run the read callback for what
	 * this call delivered, even if the end is a truncation. */
	if (!held && h->err == 0 && h->eof_pending != 0) {
		tell_eof(h, src);
	}
	return res;
}

/* Seals what the application wrote (src) into records on the underlying output. */
static enum bufferevent_filter_result seal_records(struct evbuffer *src, struct evbuffer *dst,
						   ev_ssize_t lim, enum bufferevent_flush_mode mode,
						   void *arg)
{
	struct hbev *h = arg;
	(void)mode;
	if (h->err != 0) {
		return BEV_ERROR;
	}
	size_t maxp = hush_record_max_payload(h->rec);
	size_t produced = 0;
	if (evbuffer_get_length(src) == 0) {
		return BEV_NEED_MORE;
	}
	if (ciphers_lend(h) < 0) {
		fail(h, HUSH_ENOMEM);
		return BEV_ERROR;
	}
	size_t left;
	while ((left = evbuffer_get_length(src)) > 0 && (lim <= 0 || produced < (size_t)lim)) {
		size_t plen = left < maxp ? left : maxp;
		struct hush_buf *b;
		int rc = hush_pool_acquire(h->pool, plen + HUSH_RECORD_OVERHEAD, &b);
		if (rc < 0) {
			/* Leave the rest queued in the application's output; it is sealed on
			 * the next write or flush. */
			break;
		}
		uint8_t *frame = hush_buf_data(b);
		size_t flen;
		if (evbuffer_remove(src, frame + HUSH_RECORD_HEADER_SIZE, plen) != (int)plen) {
			hush_buf_release(b);
			fail(h, HUSH_ENOMEM);
			break;
		}
		rc = hush_record_seal(h->rec, frame, hush_buf_capacity(b), plen, &flen);
		if (rc == 0 && evbuffer_add_reference(dst, frame, flen, buf_cleanup, b) < 0) {
			rc = HUSH_ENOMEM;
		}
		if (rc < 0) {
			hush_buf_release(b);
			fail(h, rc);
			break;
		}
		produced += flen;
	}
	return filter_done(h, produced);
}

/* ---- Events ---- */

/*
 * Wraps the filter's read callback on the underlying bufferevent. libevent's filter
 * runs the application's read callback holding no reference to the filter, and checks
 * the filter's input against the read high watermark after it returns; when the
 * application freed the filter in there with its input at the watermark, that check
 * took and dropped a reference on a bufferevent that had none left and freed it a
 * second time. So the filter is held for the call. One the application has freed has
 * no callbacks (bufferevent_free() clears them) and must not be held again; nothing can
 * free a filter without a read callback from inside one, so it need not be held.
 */
static void on_underlying_read(struct bufferevent *under, void *arg)
{
	bufferevent_data_cb inner = NULL;
	pthread_mutex_lock(&reg_lock);
	struct hbev *h = reg_find_locked(arg);
	if (h != NULL) {
		inner = h->inner_read;
	}
	pthread_mutex_unlock(&reg_lock);
	if (inner == NULL) {
		return;
	}
	struct bufferevent *bev = arg;
	bufferevent_data_cb app_read;
	bufferevent_getcb(bev, &app_read, NULL, NULL, NULL);
	if (app_read == NULL) {
		inner(under, arg);
		return;
	}
	bufferevent_incref(bev);
	inner(under, arg);
	bufferevent_decref(bev);
}

/*
 * Wraps the filter's event callback on the underlying bufferevent: a stream that ends
 * with part of a record unread is truncation, not a clean EOF. libevent gives one
 * argument to all three callbacks, and the filter's read and write callbacks need
 * theirs (the filter bufferevent itself), so our state is found in the registry.
 */
static void on_underlying_event(struct bufferevent *under, short what, void *arg)
{
	bufferevent_event_cb inner = NULL;
	pthread_mutex_lock(&reg_lock);
	struct hbev *h = reg_find_locked(arg);
	if (h != NULL) {
		inner = h->inner_event;
		if ((what & BEV_EVENT_EOF) &&
		    evbuffer_get_length(bufferevent_get_input(under)) > 0) {
			if (h->held_back || h->resume_pending) {
				/* What is left may be whole records the read high watermark
				 * held back (a pair tells its EOF at once): the end comes
				 * after them (tell_eof()). */
				h->eof_pending = what;
				inner = NULL;
			} else {
				fail(h, HUSH_ETRUNCATED);
				what |= BEV_EVENT_ERROR;
			}
		} else if ((what & BEV_EVENT_ERROR) && h->err == 0) {
			fail(h, HUSH_EIO);
		}
	}
	pthread_mutex_unlock(&reg_lock);
	if (inner != NULL) {
		inner(under, what, arg);
	}
}

/*
 * Without BEV_OPT_CLOSE_ON_FREE, libevent's filter gives the underlying bufferevent back
 * by clearing its callbacks only if the event callback is still the filter's own, and
 * ours is the wrapper, so they are cleared here, when the filter is finalized (the
 * filter's reference keeps underlying alive until then). Callbacks the caller set in
 * the meantime are left alone; with BEV_OPT_CLOSE_ON_FREE underlying was freed, which
 * cleared them.
 */
static void detach_underlying(struct hbev *h)
{
	bufferevent_event_cb ecb;
	void *arg;
	bufferevent_getcb(h->underlying, NULL, NULL, &ecb, &arg);
	if (ecb == on_underlying_event && arg == h->bev) {
		bufferevent_setcb(h->underlying, NULL, NULL, NULL, NULL);
	}
}

/* A finalized filter's state goes once no callback queued on the loop holds it. */
static void release_if_unused(struct hbev *h)
{
	if (h->freed && !h->resume_pending) {
		hush__free(h, sizeof(*h));
	}
}

/* libevent's filter's free_context: bev is being finalized, from the loop. */
static void free_state(void *arg)
{
	struct hbev *h = arg;
	reg_remove(h);
	if (h->drained_cb != NULL) {
		evbuffer_remove_cb_entry(bufferevent_get_input(h->bev), h->drained_cb);
		h->drained_cb = NULL;
		h->held_back = false;
	}
	detach_underlying(h);
	hush_record_free(h->rec);
	h->rec = NULL;
	h->freed = true;
	release_if_unused(h);
}

static void resume_reading(evutil_socket_t fd, short what, void *arg);

/*
 * The application drained its input (see hold_back()). This runs inside the evbuffer's
 * callbacks, often inside the application's own read callback and libevent's filter
 * code under it, so it only queues the work: reading from here would re-enter both.
 */
static void on_input_drained(struct evbuffer *input, const struct evbuffer_cb_info *info,
			     void *arg)
{
	struct hbev *h = arg;
	if (info->n_deleted == 0) {
		return;
	}
	size_t high = 0;
	(void)bufferevent_getwatermark(h->bev, EV_READ, NULL, &high);
	if (high != 0 && evbuffer_get_length(input) >= high) {
		return;
	}
	/* Disabled, not removed: removing an entry from inside the callbacks could pull it
	 * from under a walk of the list further up the stack. */
	evbuffer_cb_clear_flags(input, h->drained_cb, EVBUFFER_CB_ENABLED);
	h->held_back = false;
	if (h->resume_pending) {
		return;
	}
	/* Set first: with BEV_OPT_THREADSAFE the loop's thread may run it at once (it
	 * waits for the input's lock, held here, before it clears the flag). */
	h->resume_pending = true;
	if (event_base_once(bufferevent_get_base(h->bev), -1, EV_TIMEOUT, resume_reading, h,
			    NULL) < 0) {
		h->resume_pending = false;
		fail(h, HUSH_ENOMEM);
		report_error(h);
	}
}

/*
 * From the loop: drops the input callback unless records were held back again since,
 * and runs the underlying bufferevent's read callback, that is libevent's filter's read
 * path, as if it had read (at once: this already runs from the loop, not from inside
 * anything of libevent's). If the application freed bev in the meantime, bev is either
 * finalized (h->freed: nothing is touched) or waiting to be, in which case libevent's
 * filter does nothing for it and, with BEV_OPT_CLOSE_ON_FREE, underlying has no
 * callbacks left (it is kept alive by bev's reference until bev is finalized).
 */
static void resume_reading(evutil_socket_t fd, short what, void *arg)
{
	struct hbev *h = arg;
	(void)fd;
	(void)what;
	if (h->freed) {
		h->resume_pending = false;
		release_if_unused(h);
		return;
	}
	/* The input's lock is bev's; bufferevent_lock() would take a reference too, which a
	 * freed bev must not be given. */
	struct evbuffer *input = bufferevent_get_input(h->bev);
	evbuffer_lock(input);
	h->resume_pending = false;
	if (!h->held_back && h->drained_cb != NULL) {
		evbuffer_remove_cb_entry(input, h->drained_cb);
		h->drained_cb = NULL;
	}
	evbuffer_unlock(input);
	bufferevent_event_cb ecb;
	void *cbarg;
	bufferevent_getcb(h->underlying, NULL, NULL, &ecb, &cbarg);
	if (ecb == on_underlying_event && cbarg == h->bev) {
		bufferevent_trigger(h->underlying, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
	}
}

/* ---- Raw keys: each keys one connection in the process ---- */

/*
 * A fingerprint of every raw key a hush bufferevent took, with its record protocol and
 * side (the two ends of one connection share the key bytes, one per side): SHA-256 over
 * a per-process random salt, the protocol, the side and the key, cut to 16 bytes, in an
 * open-addressed table that only grows, for the life of the process. A key seen twice
 * would repeat AES-GCM nonces, so its second use is refused. The table comes from the C
 * library, not hush's allocator: it outlives every hush object, and hush_set_allocator()
 * may be called again once they are all gone.
 */
#define FP_LEN 16
static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t (*keys_tab)[FP_LEN];
static size_t keys_cap, keys_n;
static uint8_t keys_salt[32];
static bool keys_salted;

static int fingerprint(const struct hush_bufferevent_config *cfg, uint8_t out[FP_LEN])
{
	uint8_t md[32];
	uint8_t tag[2] = {(uint8_t)cfg->rp, (uint8_t)cfg->side};
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(ctx, keys_salt, sizeof(keys_salt)) == 1 &&
		 EVP_DigestUpdate(ctx, tag, sizeof(tag)) == 1 &&
		 EVP_DigestUpdate(ctx, cfg->key, cfg->key_len) == 1 &&
		 EVP_DigestFinal_ex(ctx, md, NULL) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		return HUSH_ECRYPTO;
	}
	memcpy(out, md, FP_LEN);
	out[0] |= 1; /* an all-zero slot is empty */
	return 0;
}

/* The slot of fp in the table: its own, or the empty one where it belongs. */
static uint8_t *keys_slot(const uint8_t fp[FP_LEN])
{
	uint64_t h;
	memcpy(&h, fp + 1, sizeof(h));
	for (size_t i = (size_t)h & (keys_cap - 1);; i = (i + 1) & (keys_cap - 1)) {
		static const uint8_t empty[FP_LEN];
		if (memcmp(keys_tab[i], fp, FP_LEN) == 0 || memcmp(keys_tab[i], empty, FP_LEN) == 0) {
			return keys_tab[i];
		}
	}
}

static int keys_grow(void)
{
	size_t cap = keys_cap ? keys_cap * 2 : 64;
	uint8_t(*old)[FP_LEN] = keys_tab;
	size_t old_cap = keys_cap;
	keys_tab = calloc(cap, FP_LEN);
	if (keys_tab == NULL) {
		keys_tab = old;
		return HUSH_ENOMEM;
	}
	keys_cap = cap;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i][0] != 0) {
			memcpy(keys_slot(old[i]), old[i], FP_LEN);
		}
	}
	free(old);
	return 0;
}

/* Records cfg's raw key as used (claim) or only looks it up. Returns 0, HUSH_EKEYREUSE,
 * HUSH_ENOMEM or HUSH_ECRYPTO. */
static int raw_key_check(const struct hush_bufferevent_config *cfg, bool claim)
{
	int rc = 0;
	uint8_t fp[FP_LEN];
	pthread_mutex_lock(&keys_lock);
	if (!keys_salted) {
		if (RAND_bytes(keys_salt, sizeof(keys_salt)) != 1) {
			rc = HUSH_ECRYPTO;
			goto out;
		}
		keys_salted = true;
	}
	rc = fingerprint(cfg, fp);
	if (rc < 0) {
		goto out;
	}
	if (keys_cap == 0 && !claim) {
		goto out;
	}
	if ((keys_n + 1) * 2 > keys_cap && claim && (rc = keys_grow()) < 0) {
		goto out;
	}
	uint8_t *slot = keys_slot(fp);
	if (memcmp(slot, fp, FP_LEN) == 0) {
		rc = HUSH_EKEYREUSE;
	} else if (claim) {
		memcpy(slot, fp, FP_LEN);
		keys_n++;
	}
out:
	pthread_mutex_unlock(&keys_lock);
	return rc;
}

int hush__bev_claim_raw_key(const struct hush_bufferevent_config *cfg)
{
	return raw_key_check(cfg, true);
}

/* ---- Construction ---- */

void hush_bufferevent_config_init(struct hush_bufferevent_config *cfg)
{
	if (cfg != NULL) {
		*cfg = (struct hush_bufferevent_config){
		    .rp = HUSH_RP_ALTS_AES128_GCM_REKEY,
		    .side = HUSH_SIDE_CLIENT,
		};
	}
}

int hush_bufferevent_config_check(const struct hush_bufferevent_config *cfg)
{
	HUSH_ENSURE(cfg != NULL, HUSH_EINVAL);
	if (cfg->handshake != NULL) {
		return 0; /* checked by hush_handshake_new() when a socket is set */
	}
	HUSH_ENSURE(cfg->key != NULL, HUSH_EINVAL);
	HUSH_ENSURE(hush_record_protocol_name(cfg->rp) != NULL, HUSH_EPROTO_UNKNOWN);
	HUSH_ENSURE(cfg->key_len == hush_record_key_size(cfg->rp), HUSH_EKEYLEN);
	return raw_key_check(cfg, false);
}

static struct bufferevent *wrap(struct bufferevent *underlying,
				const struct hush_bufferevent_config *cfg, int options)
{
	struct hbev *h = hush__calloc(sizeof(*h));
	if (h == NULL) {
		return NULL;
	}
	h->pool = cfg->pool;
	h->underlying = underlying;
	if (hush__record_new_bare(&h->rec, cfg->rp, cfg->key, cfg->key_len, cfg->side) < 0 ||
	    hush_record_set_limits(h->rec, cfg->max_send_frame, cfg->recv_limit) < 0) {
		hush_record_free(h->rec);
		hush__free(h, sizeof(*h));
		return NULL;
	}
	h->bev = bufferevent_filter_new(underlying, open_records, seal_records, options,
					free_state, h);
	if (h->bev == NULL) {
		hush_record_free(h->rec);
		hush__free(h, sizeof(*h));
		return NULL;
	}
	/* Slip our reference and our EOF check in front of the filter's own read and event
	 * handling. */
	bufferevent_data_cb w;
	void *filter_arg;
	bufferevent_getcb(underlying, &h->inner_read, &w, &h->inner_event, &filter_arg);
	reg_add(h);
	bufferevent_setcb(underlying, on_underlying_read, w, on_underlying_event, filter_arg);
	/* Raw keys: the connection starts open, so no BEV_EVENT_CONNECTED is reported, as
	 * with bufferevent_openssl made in BUFFEREVENT_SSL_OPEN. */
	return h->bev;
}

struct bufferevent *hush_bufferevent_filter_new(struct bufferevent *underlying,
						const struct hush_bufferevent_config *cfg,
						int options)
{
	if (underlying == NULL || hush_bufferevent_config_check(cfg) < 0 || cfg->pool == NULL ||
	    cfg->handshake != NULL || hush__bev_claim_raw_key(cfg) < 0) {
		return NULL;
	}
	return wrap(underlying, cfg, options);
}

int hush_bufferevent_get_error(struct bufferevent *bev)
{
	if (bev == NULL) {
		return HUSH_EINVAL;
	}
	if (hush__bev_is_sock(bev)) {
		return hush__bev_sock_error(bev);
	}
	pthread_mutex_lock(&reg_lock);
	struct hbev *h = reg_find_locked(bev);
	int err = h != NULL ? h->err : HUSH_EINVAL;
	pthread_mutex_unlock(&reg_lock);
	return err;
}


int hush_bufferevent_shutdown(struct bufferevent *bev)
{
	if (bev == NULL || !hush__bev_is_sock(bev)) {
		return HUSH_EINVAL;
	}
	return hush__bev_sock_shutdown(bev);
}

int hush_bufferevent_peer_key(struct bufferevent *bev, uint8_t out[HUSH_KEY_SIZE])
{
	if (bev == NULL || out == NULL || !hush__bev_is_sock(bev)) {
		return HUSH_EINVAL;
	}
	return hush__bev_sock_peer_key(bev, out);
}
