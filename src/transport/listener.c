/*
 * Accepting hush connections: libevent's evconnlistener, each accepted socket started
 * as the server of a hush handshake, with a cap on handshakes in progress.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <event2/listener.h>

#include <hush/listener.h>

#include "transport/transport-internal.h"

/* Pause after accept() failed for lack of descriptors or memory, instead of spinning. */
#define ACCEPT_BACKOFF_MS 100

struct hush_listener {
	struct hush_loop *loop;
	struct evconnlistener *lev;  /* NULL once freed by the application */
	struct event *backoff;
	const struct hush_handshake_config *hcfg;
	struct hush_conn_config conn;
	struct hush_conn_callbacks cb;
	hush_accept_fn on_accept;
	void *accept_arg;
	unsigned max_handshakes;
	unsigned handshakes;         /* in progress, started here */
	bool capped;                 /* not accepting: at max_handshakes */
	bool paused;                 /* not accepting: hush_listener_pause() */
	bool backing_off;            /* not accepting: accept() ran out of resources */
	bool in_accept;              /* inside on_accept */
	bool freed;                  /* hush_listener_free() was called */
};

void hush_listener_config_init(struct hush_listener_config *cfg)
{
	if (cfg == NULL) {
		return;
	}
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_handshakes = 256;
	cfg->backlog = 1024;
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
	hush__free(l, sizeof(*l));
}

/* Freed by the application and no handshake of ours runs any more: the memory goes. */
static void maybe_destroy(struct hush_listener *l)
{
	if (l->freed && l->handshakes == 0 && !l->in_accept) {
		destroy(l);
	}
}

void hush__listener_handshake_ended(struct hush_listener *l)
{
	l->handshakes--;
	if (l->capped && l->handshakes < l->max_handshakes) {
		l->capped = false;
		update_accepting(l);
	}
	maybe_destroy(l);
}

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
	/* hush_conn_new closes fd itself on failure when it was to own it. */
	if (hush_conn_new(&c, l->loop, fd, &l->conn, &l->cb, l->accept_arg) < 0) {
		drop_socket(l, NULL, fd);
		return;
	}
	if (hush__conn_start_handshake_for(c, l->hcfg, HUSH_SIDE_SERVER, l) < 0) {
		drop_socket(l, c, fd);
		return;
	}
	l->handshakes++;
	if (l->handshakes >= l->max_handshakes) {
		l->capped = true;
		update_accepting(l);
	}
	l->in_accept = true;
	l->on_accept(l, c, addr, (socklen_t)addrlen, l->accept_arg);
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
	    cfg->max_handshakes == 0 || cfg->backlog < 0) {
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
	l->backoff = evtimer_new(loop->base, on_backoff_end, l);
	if (l->backoff == NULL) {
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
		if (l->backoff != NULL) {
			event_free(l->backoff);
		}
		hush__free(l, sizeof(*l));
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
