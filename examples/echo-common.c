/*
 * echo-common: the session, loop and sockets shared by altsrp-echo and hush-echo (see
 * echo-common.h).
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "echo-common.h"

struct echo_opts echo_opt;
struct event_base *echo_base;
struct hush_loop *echo_loop;
int (*echo_on_open)(struct echo_session *s);

static const char *prog = "echo";
static struct hush_pool *pool;
static struct echo_session *sessions;
static long served;
static int exit_code;

void echo_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

void echo_error(const char *what, int rc)
{
	fprintf(stderr, "%s: %s: %s (%s)\n", prog, what, hush_strerror(rc), hush_err_name(rc));
}

/* Like echo_error, for a failed system call (errno). */
static void sys_error(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
}

void echo_init(const char *name)
{
	prog = name;
	echo_opt.count = 1;
	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	echo_base = event_base_new();
	if (echo_base == NULL) {
		fprintf(stderr, "%s: cannot create the event base\n", prog);
		exit(1);
	}
	int rc = hush_pool_new(&pool, NULL);
	if (rc == 0) {
		rc = hush_loop_new(&echo_loop, echo_base, pool);
	}
	if (rc < 0) {
		echo_error("setup", rc);
		exit(1);
	}
}

/* Takes the shared option name (with its value v, NULL if there is none). Returns 1
 * when it took the option and its value, 0 when it took just the option, -1 when the
 * option is not a shared one. */
static int shared_option(const char *name, const char *v)
{
	if (strcmp(name, "--echo") == 0) {
		echo_opt.echo = 1;
		return 0;
	}
	const char **slot = NULL;
	if (strcmp(name, "--listen") == 0) {
		slot = &echo_opt.listen;
	} else if (strcmp(name, "--connect") == 0) {
		slot = &echo_opt.connect;
	} else if (strcmp(name, "--ready") == 0) {
		slot = &echo_opt.ready;
	} else if (strcmp(name, "--send") == 0) {
		slot = &echo_opt.send;
	} else if (strcmp(name, "--out") == 0) {
		slot = &echo_opt.out;
	} else if (strcmp(name, "--count") != 0) {
		return -1;
	}
	if (v == NULL) {
		return -1;
	}
	if (slot != NULL) {
		*slot = v;
	} else {
		echo_opt.count = atol(v);
	}
	return 1;
}

void echo_parse_args(int argc, char **argv,
		     int (*program_option)(const char *name, const char *value),
		     void (*usage)(void))
{
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		int took = shared_option(argv[i], v);
		if (took < 0) {
			if (v == NULL || program_option(argv[i], v) < 0) {
				usage();
			}
			took = 1;
		}
		i += took;
	}
	if ((echo_opt.listen == NULL) == (echo_opt.connect == NULL) || echo_opt.count < 1) {
		usage();
	}
}

struct echo_session *echo_session_new(void)
{
	struct echo_session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return NULL;
	}
	s->sent_md = EVP_MD_CTX_new();
	s->recv_md = EVP_MD_CTX_new();
	if (s->sent_md == NULL || s->recv_md == NULL ||
	    EVP_DigestInit_ex(s->sent_md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestInit_ex(s->recv_md, EVP_sha256(), NULL) != 1) {
		fprintf(stderr, "%s: cannot set up SHA-256\n", prog);
		goto fail;
	}
	if (echo_opt.send != NULL && (s->send_file = fopen(echo_opt.send, "rb")) == NULL) {
		sys_error(echo_opt.send);
		goto fail;
	}
	if (echo_opt.out != NULL && (s->out_file = fopen(echo_opt.out, "wb")) == NULL) {
		sys_error(echo_opt.out);
		goto fail;
	}
	s->next = sessions;
	sessions = s;
	return s;
fail:
	if (s->send_file != NULL) {
		fclose(s->send_file);
	}
	EVP_MD_CTX_free(s->sent_md);
	EVP_MD_CTX_free(s->recv_md);
	free(s);
	return NULL;
}

static void print_result(struct echo_session *s)
{
	uint8_t a[32], b[32];
	char ha[65], hb[65];
	EVP_DigestFinal_ex(s->sent_md, a, NULL);
	EVP_DigestFinal_ex(s->recv_md, b, NULL);
	echo_hex(a, sizeof(a), ha);
	echo_hex(b, sizeof(b), hb);
	printf("RESULT sent_bytes=%llu sent_sha256=%s recv_bytes=%llu recv_sha256=%s%s%s\n",
	       (unsigned long long)s->sent_bytes, ha, (unsigned long long)s->recv_bytes, hb,
	       s->result_extra[0] != '\0' ? " " : "", s->result_extra);
	fflush(stdout);
}

/* Unlinks s from the live list and frees it with its connection. */
static void session_free(struct echo_session *s)
{
	for (struct echo_session **p = &sessions; *p != NULL; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	hush_conn_free(s->conn);
	EVP_MD_CTX_free(s->sent_md);
	EVP_MD_CTX_free(s->recv_md);
	if (s->send_file != NULL) {
		fclose(s->send_file);
	}
	if (s->out_file != NULL && fclose(s->out_file) != 0 && !s->failed) {
		sys_error(echo_opt.out);
		exit_code = 1;
	}
	free(s);
}

void echo_session_finish(struct echo_session *s)
{
	if (s->failed) {
		exit_code = 1;
	} else {
		print_result(s);
	}
	session_free(s);
	served++;
	/* A server goes on to the next client after a bad one; --count connections served,
	 * well or not, end it (exit status 1 if any failed). */
	if (echo_opt.connect != NULL || served >= echo_opt.count) {
		event_base_loopbreak(echo_base);
	}
}

void echo_session_fail(struct echo_session *s, const char *what, int rc)
{
	echo_error(what, rc);
	s->failed = 1;
	echo_session_finish(s);
}

/* The exchange is over when both directions are: our write side is shut down and the
 * peer's end of stream was seen. */
static void maybe_finish(struct echo_session *s)
{
	if (s->eof && s->shut) {
		echo_session_finish(s);
	}
}

/* Shuts our direction down; on a handshake-keyed connection this sends the close
 * record. Returns 0, or fails and finishes the session. */
static int shut_down(struct echo_session *s)
{
	int rc = hush_conn_shutdown(s->conn);
	if (rc < 0) {
		echo_session_fail(s, "shutdown", rc);
	}
	return rc;
}

/* Sends more of the file until the queue passes the high watermark or the file ends. */
static void pump(struct echo_session *s)
{
	static uint8_t chunk[65536];
	while (s->send_file != NULL) {
		size_t n = fread(chunk, 1, sizeof(chunk), s->send_file);
		if (n == 0) {
			if (ferror(s->send_file)) {
				sys_error(echo_opt.send);
				s->failed = 1;
				echo_session_finish(s);
				return;
			}
			fclose(s->send_file);
			s->send_file = NULL;
			shut_down(s);
			return;
		}
		int rc = hush_conn_write(s->conn, chunk, n);
		if (rc < 0) {
			echo_session_fail(s, "write", rc);
			return;
		}
		EVP_DigestUpdate(s->sent_md, chunk, n);
		s->sent_bytes += n;
		if (rc == 1) {
			return; /* above the high watermark: on_writable resumes */
		}
	}
}

static void on_data(struct hush_conn *c, const uint8_t *data, size_t len, void *arg)
{
	struct echo_session *s = arg;
	EVP_DigestUpdate(s->recv_md, data, len);
	s->recv_bytes += len;
	if (s->out_file != NULL && fwrite(data, 1, len, s->out_file) != len) {
		sys_error(echo_opt.out);
		s->failed = 1;
		echo_session_finish(s);
		return;
	}
	if (echo_opt.echo) {
		int rc = hush_conn_write(c, data, len);
		if (rc < 0) {
			echo_session_fail(s, "echo", rc);
			return;
		}
		EVP_DigestUpdate(s->sent_md, data, len);
		s->sent_bytes += len;
		if (rc == 1) {
			hush_conn_pause_reading(c); /* the peer is not reading our echo */
		}
	}
}

static void on_writable(struct hush_conn *c, void *arg)
{
	struct echo_session *s = arg;
	if (echo_opt.echo) {
		hush_conn_resume_reading(c);
	} else {
		pump(s);
	}
}

static void on_event(struct hush_conn *c, enum hush_conn_event ev, int err, void *arg)
{
	struct echo_session *s = arg;
	(void)c;
	switch (ev) {
	case HUSH_CONN_EV_OPEN:
		s->open = 1;
		if (echo_on_open != NULL && echo_on_open(s) < 0) {
			s->failed = 1;
			echo_session_finish(s);
			return;
		}
		pump(s);
		break;
	case HUSH_CONN_EV_EOF:
		s->eof = 1;
		if (echo_opt.echo || echo_opt.send == NULL) {
			if (shut_down(s) < 0) {
				return;
			}
		}
		maybe_finish(s);
		break;
	case HUSH_CONN_EV_SHUTDOWN:
		s->shut = 1;
		maybe_finish(s);
		break;
	case HUSH_CONN_EV_ERROR:
		echo_session_fail(s, s->open ? "connection failed" : "handshake failed", err);
		break;
	}
}

const struct hush_conn_callbacks echo_callbacks = {on_data, on_writable, on_event};

/* Splits "host:port" (or "[v6]:port") into its parts. */
static int split_addr(const char *s, char *host, size_t hcap, char *port, size_t pcap)
{
	const char *colon = strrchr(s, ':');
	if (colon == NULL) {
		return -1;
	}
	const char *h = s;
	size_t hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= hcap || strlen(colon + 1) >= pcap) {
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

static struct addrinfo *resolve(const char *addr, int passive)
{
	char host[256], port[32];
	if (split_addr(addr, host, sizeof(host), port, sizeof(port)) < 0) {
		fprintf(stderr, "%s: bad address %s\n", prog, addr);
		exit(1);
	}
	struct addrinfo hints = {0}, *res;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	int e = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &res);
	if (e != 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, addr, gai_strerror(e));
		exit(1);
	}
	return res;
}

/* Writes the bound address to echo_opt.ready, atomically (through a rename), so that a
 * script polling for the file never reads half of it. */
static void write_ready(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[128], port[16], tmp[4096];
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		sys_error("getsockname");
		exit(1);
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", echo_opt.ready);
	FILE *f = fopen(tmp, "w");
	if (f == NULL) {
		sys_error(tmp);
		exit(1);
	}
	fprintf(f, ss.ss_family == AF_INET6 ? "[%s]:%s\n" : "%s:%s\n", host, port);
	if (fclose(f) != 0 || rename(tmp, echo_opt.ready) != 0) {
		sys_error(echo_opt.ready);
		exit(1);
	}
}

int echo_listen_socket(void)
{
	struct addrinfo *ai = resolve(echo_opt.listen, 1);
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
		fprintf(stderr, "%s: listen %s: %s\n", prog, echo_opt.listen, strerror(errno));
		exit(1);
	}
	freeaddrinfo(ai);
	if (echo_opt.ready != NULL) {
		write_ready(fd);
	}
	return fd;
}

int echo_connect_socket(void)
{
	struct addrinfo *ai = resolve(echo_opt.connect, 0);
	int fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		fprintf(stderr, "%s: connect %s: %s\n", prog, echo_opt.connect, strerror(errno));
		exit(1);
	}
	freeaddrinfo(ai);
	return fd;
}

void echo_run(void)
{
	event_base_dispatch(echo_base);
}

int echo_cleanup(void)
{
	while (sessions != NULL) {
		session_free(sessions);
	}
	hush_loop_free(echo_loop);
	hush_pool_free(pool);
	event_base_free(echo_base);
	return exit_code;
}
