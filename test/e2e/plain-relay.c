/*
 * plain-relay: a plaintext TCP relay, the baseline for hushpipe's throughput in
 * run-hushpipe-e2e.sh. Two of them in a row make the same three hops as a hushpipe
 * tunnel without its cryptography, so the test can tell what the tunnel costs beyond
 * the hops themselves.
 *
 *   plain-relay LISTEN_PORT TARGET_PORT     (both on 127.0.0.1)
 *
 * Each accepted connection gets a connection to the target and two threads copying
 * 64 KiB at a time with blocking read/write; an EOF is passed on as shutdown(SHUT_WR),
 * an error ends both directions. Runs until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct pair {
	int fd[2];
	atomic_int left; /* copying threads still running */
};

struct half {
	struct pair *p;
	int from;
	int to;
};

static void pair_put(struct pair *p)
{
	if (atomic_fetch_sub(&p->left, 1) == 1) {
		close(p->fd[0]);
		close(p->fd[1]);
		free(p);
	}
}

static void *copy(void *arg)
{
	struct half *h = arg;
	static _Thread_local char buf[65536];
	for (;;) {
		ssize_t n = read(h->from, buf, sizeof(buf));
		if (n == 0) {
			shutdown(h->to, SHUT_WR);
			break;
		}
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			shutdown(h->to, SHUT_RDWR);
			break;
		}
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(h->to, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR) {
				continue;
			}
			if (w <= 0) {
				/* The far end is gone: stop reading this side too. */
				shutdown(h->from, SHUT_RDWR);
				goto out;
			}
			off += w;
		}
	}
out:
	pair_put(h->p);
	free(h);
	return NULL;
}

static int start_half(struct pair *p, int from, int to)
{
	struct half *h = malloc(sizeof(*h));
	pthread_t t;
	if (h == NULL) {
		return -1;
	}
	h->p = p;
	h->from = from;
	h->to = to;
	if (pthread_create(&t, NULL, copy, h) != 0) {
		free(h);
		return -1;
	}
	pthread_detach(t);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: plain-relay LISTEN_PORT TARGET_PORT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)atoi(argv[1]));
	int one = 1;
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 64) < 0) {
		perror("plain-relay: listen");
		return 1;
	}
	a.sin_port = htons((uint16_t)atoi(argv[2]));
	for (;;) {
		int c = accept(ls, NULL, NULL);
		if (c < 0) {
			continue;
		}
		int t = socket(AF_INET, SOCK_STREAM, 0);
		if (t < 0 || connect(t, (struct sockaddr *)&a, sizeof(a)) < 0) {
			close(c);
			if (t >= 0) {
				close(t);
			}
			continue;
		}
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct pair *p = malloc(sizeof(*p));
		if (p == NULL) {
			close(c);
			close(t);
			continue;
		}
		p->fd[0] = c;
		p->fd[1] = t;
		atomic_init(&p->left, 2);
		if (start_half(p, c, t) < 0) {
			atomic_fetch_sub(&p->left, 1);
		}
		if (start_half(p, t, c) < 0) {
			pair_put(p);
		}
	}
}
