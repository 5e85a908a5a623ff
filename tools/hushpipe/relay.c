/*
 * One tunnelled connection (a "session"): a hush connection on one side, a plaintext
 * socket on the other, and the bytes between them.
 *
 *   -e  plaintext accepted -> CONNECT to the hush endpoint -> HANDSHAKE (client) -> RELAY
 *   -d  hush accepted, HANDSHAKE (server) -> CONNECT to the plaintext target -> RELAY
 *
 * The plaintext socket is read only in RELAY, when the hush side is open (before that
 * hush_conn_write() would refuse the bytes) and the target is connected. Target
 * addresses are tried in the order they resolved to, each within the connect timeout.
 *
 * Memory and copies: an idle session holds this struct (one struct event included) and
 * its hush connection, and no buffer. Plaintext read from the socket goes into the
 * worker's scratch buffer and from there straight into hush_conn_write(), which seals
 * the whole records of it from the scratch buffer into hush's write queue in one pass
 * (only the last, partial record of a read is copied, to be sealed when it is sent).
 * Plaintext from hush is sent to the socket from the view on_data gives, in hush's read
 * buffer, where it was decrypted; what the socket does not take at once stays there
 * (hush_conn_keep_data()), and hush reading is paused until it is sent. Neither
 * direction copies the bytes beyond the kernel's copies and the cipher's pass.
 *
 * Backpressure, both ways: hush reading stops while bytes wait for the plaintext
 * socket; plaintext reading stops while hush's write queue is above its high watermark
 * (hush_conn_write() returned 1) and starts again from on_writable.
 *
 * Half-close, both ways: a plaintext EOF becomes hush_conn_shutdown() (hush's
 * authenticated close record); hush's EOF (the peer's close record) becomes
 * shutdown(SHUT_WR) on the plaintext socket once every byte before it was sent. The
 * session ends cleanly when both directions have ended. Any failure ends it abortively:
 * both sockets are reset (SO_LINGER 0), so neither end mistakes a cut stream for a
 * complete one.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "hushpipe.h"

enum sess_state {
	S_CONNECT = 1, /* connecting to the next hop (the hush endpoint or the target) */
	S_HANDSHAKE,   /* hush handshake running */
	S_RELAY,       /* bytes flow */
};

/* Session flags. */
enum {
	F_PLAIN_EOF = 1u << 0,	/* plaintext EOF read; hush_conn_shutdown() called */
	F_HUSH_SHUT = 1u << 1,	/* hush reported SHUTDOWN: our close record is out */
	F_HUSH_EOF = 1u << 2,	/* hush reported EOF: the peer's close record came */
	F_PLAIN_SHUT = 1u << 3, /* the plaintext socket's write side is shut down */
	F_PLAIN_HELD = 1u << 4, /* plaintext reading stopped: hush's queue is full */
	F_HUSH_HELD = 1u << 5,	/* hush reading paused: bytes wait for the plaintext side */
};
#define F_ALL_DONE (F_PLAIN_EOF | F_HUSH_SHUT | F_HUSH_EOF | F_PLAIN_SHUT)

/* The peer's address, compact, for the close line. */
struct peer_addr {
	uint8_t family;
	uint16_t port;
	uint8_t addr[16];
};

struct session {
	struct worker *w;
	struct session *prev; /* worker's list, least recently active first */
	struct session *next;
	struct hush_conn *hc;	   /* NULL in -e until the hush endpoint is connected */
	struct hush_buf *pend_buf; /* holds pend: hush -> plaintext bytes not sent yet */
	const uint8_t *pend;
	size_t pend_len;
	uint64_t id;
	uint64_t to_hush;  /* plaintext bytes read and handed to hush */
	uint64_t to_plain; /* bytes from hush sent to the plaintext socket */
	uint64_t start_ms;
	int pfd;	      /* plaintext socket, -1 until there is one */
	int cfd;	      /* socket being connected, -1 otherwise */
	int connect_err;      /* errno of the last failed connect attempt */
	uint32_t last_active; /* pipe_coarse_ms() at the last byte moved */
	uint16_t flags;
	uint8_t state;
	uint8_t interest; /* what ev is added with (0: not added) */
	uint16_t target;  /* index of the target address being tried */
	struct peer_addr peer;
	struct event ev; /* the plaintext socket, or the socket being connected */
};

static void on_sock(evutil_socket_t fd, short what, void *arg);

/* ---- The worker's list and the clock ---- */

static void list_remove(struct worker *w, struct session *s)
{
	if (s->prev != NULL) {
		s->prev->next = s->next;
	} else {
		w->head = s->next;
	}
	if (s->next != NULL) {
		s->next->prev = s->prev;
	} else {
		w->tail = s->prev;
	}
	s->prev = s->next = NULL;
}

static void list_append(struct worker *w, struct session *s)
{
	s->prev = w->tail;
	s->next = NULL;
	if (w->tail != NULL) {
		w->tail->next = s;
	} else {
		w->head = s;
	}
	w->tail = s;
}

/* Bytes moved: the session goes to the end of the idle-timeout queue. */
static void touch(struct session *s)
{
	struct worker *w = s->w;
	s->last_active = pipe_coarse_ms();
	if (w->tail != s) {
		list_remove(w, s);
		list_append(w, s);
	}
}

/* ---- Creation and teardown ---- */

static void set_peer(struct session *s, const struct sockaddr *sa, socklen_t len)
{
	s->peer.family = (uint8_t)sa->sa_family;
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		s->peer.port = ntohs(in->sin_port);
		memcpy(s->peer.addr, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		s->peer.port = ntohs(in6->sin6_port);
		memcpy(s->peer.addr, &in6->sin6_addr, 16);
	}
}

static void peer_text(const struct session *s, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	if (s->peer.family == AF_INET) {
		inet_ntop(AF_INET, s->peer.addr, host, sizeof(host));
		snprintf(out, cap, "%s:%u", host, (unsigned)s->peer.port);
	} else if (s->peer.family == AF_INET6) {
		inet_ntop(AF_INET6, s->peer.addr, host, sizeof(host));
		snprintf(out, cap, "[%s]:%u", host, (unsigned)s->peer.port);
	} else {
		snprintf(out, cap, "unix");
	}
}

static struct session *session_new(struct worker *w, const struct sockaddr *sa, socklen_t len)
{
	struct session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		return NULL;
	}
	s->w = w;
	s->pfd = s->cfd = -1;
	s->id = atomic_fetch_add(&P.next_id, 1) + 1;
	s->start_ms = pipe_now_ms();
	s->last_active = pipe_coarse_ms();
	set_peer(s, sa, len);
	list_append(w, s);
	w->nsessions++;
	atomic_fetch_add(&P.accepted, 1);
	return s;
}

static void reset_on_close(int fd)
{
	/* An abortive close sends RST: the far end sees an error, never a clean end. */
	struct linger lg = {1, 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/*
 * Ends the session: logs its close line and frees everything. Safe from inside the
 * hush connection's callbacks; the caller must not touch s afterwards.
 */
static void session_end(struct session *s, bool clean, const char *why, const char *detail)
{
	struct worker *w = s->w;
	if (log_enabled(LOG_INFO)) {
		char from[64];
		peer_text(s, from, sizeof(from));
		uint64_t ms = pipe_now_ms() - s->start_ms;
		/* A peer can make failures at will: their lines are rate-limited. */
		log_limited(clean ? NULL : &log_limit_failures, LOG_INFO,
			"conn %" PRIu64 " closed (%s%s%s): from %s, %" PRIu64
			" B plain->hush, %" PRIu64 " B hush->plain, %" PRIu64 ".%03u s",
			s->id, why, detail != NULL ? ": " : "", detail != NULL ? detail : "", from,
			s->to_hush, s->to_plain, ms / 1000, (unsigned)(ms % 1000));
	}
	if (!clean) {
		if (s->hc != NULL) {
			reset_on_close(hush_conn_fd(s->hc));
		}
		if (s->pfd >= 0) {
			reset_on_close(s->pfd);
		}
	}
	hush_conn_free(s->hc);
	if (s->interest != 0) {
		event_del(&s->ev);
	}
	if (s->pfd >= 0) {
		close(s->pfd);
	}
	if (s->cfd >= 0) {
		close(s->cfd);
	}
	hush_buf_release(s->pend_buf);
	list_remove(w, s);
	w->nsessions--;
	atomic_fetch_add(clean ? &P.closed_clean : &P.closed_error, 1);
	atomic_fetch_add(&P.bytes_to_hush, s->to_hush);
	atomic_fetch_add(&P.bytes_to_plain, s->to_plain);
	free(s);
	pipe_conn_release();
	if (w->draining && w->nsessions == 0) {
		worker_finish(w);
	}
}

static void session_fail_hush(struct session *s, const char *what, int err)
{
	char detail[160];
	snprintf(detail, sizeof(detail), "%s (%s)", hush_strerror(err), hush_err_name(err));
	session_end(s, false, what, detail);
}

static void session_fail_errno(struct session *s, const char *what, int e)
{
	session_end(s, false, what, strerror(e));
}

/* Both directions ended: the session closes cleanly. Returns false if it ended. */
static bool maybe_finish(struct session *s)
{
	if ((s->flags & F_ALL_DONE) == F_ALL_DONE) {
		session_end(s, true, "done", NULL);
		return false;
	}
	return true;
}

/* ---- The plaintext socket's event ---- */

/* (Re)adds ev on fd for want, with an optional timeout. */
static void watch(struct session *s, int fd, short want, const struct timeval *tv)
{
	if (want == s->interest && tv == NULL) {
		return;
	}
	if (s->interest != 0) {
		event_del(&s->ev);
	}
	s->interest = (uint8_t)want;
	if (want == 0) {
		return;
	}
	short persist = tv == NULL ? EV_PERSIST : 0;
	event_assign(&s->ev, s->w->base, fd, (short)(want | persist), on_sock, s);
	event_add(&s->ev, tv);
}

/* The plaintext socket's interest in RELAY. Before that, ev belongs to the connect. */
static void update_interest(struct session *s)
{
	if (s->state != S_RELAY) {
		return;
	}
	short want = 0;
	if (!(s->flags & (F_PLAIN_EOF | F_PLAIN_HELD))) {
		want |= EV_READ;
	}
	if (s->pend_len > 0) {
		want |= EV_WRITE;
	}
	watch(s, s->pfd, want, NULL);
}

/* ---- hush -> plaintext ---- */

/* Keeps len bytes at data (the current on_data view, or a copy) until the plaintext
 * socket takes them, and pauses hush reading meanwhile. Returns false on failure. */
static bool hold(struct session *s, const uint8_t *data, size_t len)
{
	struct hush_buf *kb = s->pend_len == 0 ? hush_conn_keep_data(s->hc) : NULL;
	if (kb != NULL) {
		s->pend_buf = kb;
		s->pend = data;
		s->pend_len = len;
	} else {
		/* Not reached with hush's ReadOnReady path, which always lends its buffer;
		 * kept for safety: copy what waits into one buffer. */
		struct hush_buf *nb;
		if (hush_pool_acquire(P.pool, s->pend_len + len, &nb) < 0) {
			return false;
		}
		memcpy(hush_buf_data(nb), s->pend, s->pend_len);
		memcpy(hush_buf_data(nb) + s->pend_len, data, len);
		hush_buf_release(s->pend_buf);
		s->pend_buf = nb;
		s->pend = hush_buf_data(nb);
		s->pend_len += len;
	}
	if (!(s->flags & F_HUSH_HELD)) {
		s->flags |= F_HUSH_HELD;
		hush_conn_pause_reading(s->hc);
	}
	return true;
}

static void plain_shutdown(struct session *s)
{
	if (s->flags & F_PLAIN_SHUT) {
		return;
	}
	s->flags |= F_PLAIN_SHUT;
	if (shutdown(s->pfd, SHUT_WR) < 0 && errno != ENOTCONN) {
		log_msg(LOG_DEBUG, "conn %" PRIu64 ": shutdown: %s", s->id, strerror(errno));
	}
}

/* Sends what waits for the plaintext socket. Returns false if the session ended. */
static bool plain_flush(struct session *s)
{
	while (s->pend_len > 0) {
		ssize_t n = send(s->pfd, s->pend, s->pend_len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				return true;
			}
			session_fail_errno(s, "plaintext send", errno);
			return false;
		}
		s->pend += n;
		s->pend_len -= (size_t)n;
		s->to_plain += (uint64_t)n;
		touch(s);
	}
	hush_buf_release(s->pend_buf);
	s->pend_buf = NULL;
	s->pend = NULL;
	if (s->flags & F_HUSH_HELD) {
		s->flags &= (uint16_t)~F_HUSH_HELD;
		hush_conn_resume_reading(s->hc);
	}
	if (s->flags & F_HUSH_EOF) {
		plain_shutdown(s);
		return maybe_finish(s);
	}
	return true;
}

static void on_hush_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct session *s = arg;
	(void)c;
	touch(s);
	if (s->state == S_RELAY && s->pend_len == 0) {
		/* The common case: the socket takes it all, nothing is kept. */
		ssize_t n;
		do {
			n = send(s->pfd, data, len, MSG_NOSIGNAL);
		} while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			session_fail_errno(s, "plaintext send", errno);
			return;
		}
		if (n > 0) {
			s->to_plain += (uint64_t)n;
			data += n;
			len -= (size_t)n;
		}
		if (len == 0) {
			return;
		}
	}
	if (!hold(s, data, len)) {
		session_end(s, false, "out of memory", NULL);
		return;
	}
	update_interest(s);
}

/* ---- plaintext -> hush ---- */

/* Bytes read from one plaintext socket per readiness event, for fairness. */
#define PLAIN_READ_BUDGET (256 * 1024)

static void plain_read(struct session *s)
{
	struct worker *w = s->w;
	size_t budget = PLAIN_READ_BUDGET;
	while (budget > 0) {
		ssize_t n = recv(s->pfd, w->scratch, RELAY_SCRATCH, 0);
		if (n > 0) {
			touch(s);
			int rc = hush_conn_write(s->hc, w->scratch, (size_t)n);
			if (rc < 0) {
				session_fail_hush(s, "hush write", rc);
				return;
			}
			s->to_hush += (uint64_t)n;
			budget -= (size_t)n > budget ? budget : (size_t)n;
			if (rc == 1) {
				/* Above hush's high watermark: on_writable resumes us. */
				s->flags |= F_PLAIN_HELD;
				break;
			}
			continue;
		}
		if (n == 0) {
			s->flags |= F_PLAIN_EOF;
			int rc = hush_conn_shutdown(s->hc);
			if (rc < 0) {
				session_fail_hush(s, "hush shutdown", rc);
				return;
			}
			break;
		}
		if (errno == EINTR) {
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			break;
		}
		session_fail_errno(s, "plaintext recv", errno);
		return;
	}
	update_interest(s);
}

static void on_hush_writable(struct hush_conn *c, void *arg)
{
	struct session *s = arg;
	(void)c;
	if (s->flags & F_PLAIN_HELD) {
		s->flags &= (uint16_t)~F_PLAIN_HELD;
		update_interest(s);
	}
}

/* ---- Connecting ---- */

static const char *target_spec(void)
{
	return P.opt.target;
}

/* Tries the target addresses from s->target on. Returns false if the session ended. */
static bool connect_next(struct session *s)
{
	while (s->target < P.ntargets) {
		const struct pipe_addr *a = &P.targets[s->target];
		int fd = addr_connect_start(a);
		if (fd >= 0) {
			s->cfd = fd;
			uint32_t ms = P.opt.connect_timeout_ms;
			struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
			watch(s, fd, EV_WRITE, &tv);
			return true;
		}
		s->connect_err = errno;
		log_msg(LOG_DEBUG, "conn %" PRIu64 ": connect to %s: %s", s->id, a->text,
			strerror(errno));
		s->target++;
	}
	char detail[256];
	snprintf(detail, sizeof(detail), "%s: %s", target_spec(), strerror(s->connect_err));
	log_limited(&log_limit_failures, LOG_WARN, "conn %" PRIu64 ": cannot connect to %s",
		    s->id, detail);
	session_end(s, false, "connect failed", detail);
	return false;
}

static void log_open(struct session *s, const struct hush_handshake_result *res)
{
	if (!log_enabled(LOG_INFO)) {
		return;
	}
	char from[64];
	char peer[HUSH_KEY_BASE64_LEN + 1] = "none (psk)";
	peer_text(s, from, sizeof(from));
	if (res != NULL && res->has_remote_static) {
		hush_key_to_base64(res->remote_static, peer);
	}
	log_msg(LOG_INFO, "conn %" PRIu64 " open: from %s, %s %s, peer key %s", s->id, from,
		P.opt.encrypt ? "through" : "to", P.opt.target, peer);
}

static void connect_done(struct session *s, short what)
{
	int err = 0;
	if (what & EV_TIMEOUT) {
		err = ETIMEDOUT;
	} else {
		socklen_t len = sizeof(err);
		if (getsockopt(s->cfd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
			err = errno;
		}
	}
	/* The connect event is not persistent: it is no longer added. */
	s->interest = 0;
	int fd = s->cfd;
	s->cfd = -1;
	if (err != 0) {
		close(fd);
		s->connect_err = err;
		log_msg(LOG_DEBUG, "conn %" PRIu64 ": connect to %s: %s", s->id,
			P.targets[s->target].text, strerror(err));
		s->target++;
		connect_next(s);
		return;
	}
	if (P.opt.encrypt) {
		/* The hush endpoint answered: run the handshake as its client. */
		int rc = hush_conn_new(&s->hc, s->w->loop, fd, &P.ccfg, &relay_hush_callbacks, s);
		if (rc == 0) {
			rc = hush_conn_start_handshake(s->hc, &P.hcfg, HUSH_SIDE_CLIENT);
		}
		if (rc < 0) {
			session_fail_hush(s, "hush start", rc);
			return;
		}
		s->state = S_HANDSHAKE;
		return;
	}
	/* The plaintext target answered: bytes flow; any that came early are sent now. */
	s->pfd = fd;
	s->state = S_RELAY;
	if (s->pend_len == 0 && (s->flags & F_HUSH_EOF)) {
		plain_shutdown(s);
		if (!maybe_finish(s)) {
			return;
		}
	}
	update_interest(s);
}

static void on_sock(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	(void)fd;
	if (s->state == S_CONNECT) {
		connect_done(s, what);
		return;
	}
	if ((what & EV_WRITE) && !plain_flush(s)) {
		return;
	}
	if (what & EV_READ) {
		plain_read(s);
		return;
	}
	update_interest(s);
}

/* ---- hush events ---- */

static void on_hush_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct session *s = arg;
	switch (ev) {
	case HUSH_CONN_EV_OPEN: {
		struct hush_handshake_result res;
		bool have = hush_conn_handshake_result(c, &res) == 0;
		log_open(s, have ? &res : NULL);
		if (have) {
			hush_handshake_result_wipe(&res);
		}
		touch(s);
		if (P.opt.encrypt) {
			s->state = S_RELAY;
			update_interest(s);
		} else {
			s->state = S_CONNECT;
			connect_next(s);
		}
		return;
	}
	case HUSH_CONN_EV_EOF:
		s->flags |= F_HUSH_EOF;
		if (s->state == S_RELAY && s->pend_len == 0) {
			plain_shutdown(s);
			maybe_finish(s);
		}
		return;
	case HUSH_CONN_EV_SHUTDOWN:
		s->flags |= F_HUSH_SHUT;
		maybe_finish(s);
		return;
	case HUSH_CONN_EV_ERROR:
		session_fail_hush(s, s->state == S_HANDSHAKE ? "handshake failed" : "hush side",
				  err);
		return;
	}
}

const struct hush_conn_callbacks relay_hush_callbacks = {
    .on_data = on_hush_data,
    .on_writable = on_hush_writable,
    .on_event = on_hush_event,
};

/* ---- Entry points ---- */

void relay_accept_plain(struct worker *w, int fd, const struct sockaddr *sa, socklen_t len)
{
	if (!pipe_conn_reserve(w)) {
		reset_on_close(fd);
		close(fd);
		return;
	}
	struct session *s = session_new(w, sa, len);
	if (s == NULL) {
		log_msg(LOG_WARN, "out of memory: refusing a connection");
		close(fd);
		pipe_conn_release();
		return;
	}
	s->pfd = fd;
	addr_nodelay(fd);
	s->state = S_CONNECT;
	connect_next(s);
}

void relay_accept_hush(struct worker *w, struct hush_conn *c, const struct sockaddr *sa,
		       socklen_t len)
{
	if (!pipe_conn_reserve(w)) {
		reset_on_close(hush_conn_fd(c));
		hush_conn_free(c);
		return;
	}
	struct session *s = session_new(w, sa, len);
	if (s == NULL) {
		log_msg(LOG_WARN, "out of memory: refusing a connection");
		hush_conn_free(c);
		pipe_conn_release();
		return;
	}
	s->hc = c;
	hush_conn_set_arg(c, s);
	addr_nodelay(hush_conn_fd(c));
	s->state = S_HANDSHAKE;
}

void relay_expire(struct worker *w)
{
	uint32_t idle = P.opt.idle_timeout_ms;
	if (idle == 0) {
		return;
	}
	uint32_t now = pipe_coarse_ms();
	/* The list runs from the least recently active: stop at the first still in time. */
	struct session *next;
	for (struct session *s = w->head; s != NULL && now - s->last_active >= idle; s = next) {
		next = s->next;
		session_end(s, false, "idle timeout", NULL);
	}
}

void relay_abort_all(struct worker *w, const char *why)
{
	struct session *next;
	for (struct session *s = w->head; s != NULL; s = next) {
		next = s->next;
		session_end(s, false, why, NULL);
	}
}
