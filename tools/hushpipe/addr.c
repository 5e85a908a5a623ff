/*
 * Addresses: what -s and -t accept, and the sockets made from them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hushpipe.h"

void addr_format(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
	} else if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)(const void *)sa;
		size_t off = offsetof(struct sockaddr_un, sun_path);
		/* Accepted Unix sockets usually have no name. */
		if (len > off && un->sun_path[0] != '\0') {
			snprintf(out, cap, "%.*s", (int)(len - off), un->sun_path);
		} else {
			snprintf(out, cap, "unix");
		}
	} else {
		snprintf(out, cap, "?");
	}
}

static int resolve_unix(const char *path, struct pipe_addr **out, size_t *n, char *err,
			size_t errlen)
{
	struct sockaddr_un un;
	if (strlen(path) >= sizeof(un.sun_path)) {
		snprintf(err, errlen, "%s: Unix socket path longer than %zu bytes", path,
			 sizeof(un.sun_path) - 1);
		return -1;
	}
	struct pipe_addr *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	memcpy(un.sun_path, path, strlen(path) + 1);
	memcpy(&a->ss, &un, sizeof(un));
	a->len = (socklen_t)sizeof(un);
	snprintf(a->text, sizeof(a->text), "%s", path);
	*out = a;
	*n = 1;
	return 0;
}

int addr_resolve(const char *spec, bool passive, struct pipe_addr **out, size_t *n, char *err,
		 size_t errlen)
{
	if (spec[0] == '/' || spec[0] == '.') {
		return resolve_unix(spec, out, n, err, errlen);
	}
	char host[256];
	const char *port;
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (close == NULL || close[1] != ':' ||
		    (size_t)(close - spec - 1) >= sizeof(host)) {
			snprintf(err, errlen, "%s: expected [IPv6-address]:port", spec);
			return -1;
		}
		memcpy(host, spec + 1, (size_t)(close - spec - 1));
		host[close - spec - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(spec, ':');
		if (colon == NULL || (size_t)(colon - spec) >= sizeof(host)) {
			snprintf(err, errlen,
				 "%s: expected host:port, [IPv6-address]:port or a path", spec);
			return -1;
		}
		if (memchr(spec, ':', (size_t)(colon - spec)) != NULL) {
			snprintf(err, errlen, "%s: write IPv6 addresses in brackets, as [::1]:port",
				 spec);
			return -1;
		}
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
		port = colon + 1;
	}
	if (port[0] == '\0') {
		snprintf(err, errlen, "%s: no port", spec);
		return -1;
	}
	/* "*:port" and ":port" mean every IPv4 address; [::]:port is every address. */
	if (host[0] == '\0' || strcmp(host, "*") == 0) {
		snprintf(host, sizeof(host), "0.0.0.0");
	}
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE : 0;
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "%s: %s", spec,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return -1;
	}
	size_t cnt = 0;
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		cnt++;
	}
	struct pipe_addr *v = cnt > 0 ? calloc(cnt, sizeof(*v)) : NULL;
	if (v == NULL) {
		freeaddrinfo(res);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	size_t i = 0;
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof(v[i].ss)) {
			continue;
		}
		memcpy(&v[i].ss, ai->ai_addr, ai->ai_addrlen);
		v[i].len = ai->ai_addrlen;
		addr_format(ai->ai_addr, ai->ai_addrlen, v[i].text, sizeof(v[i].text));
		i++;
	}
	freeaddrinfo(res);
	if (i == 0) {
		free(v);
		snprintf(err, errlen, "%s: no usable address", spec);
		return -1;
	}
	*out = v;
	*n = i;
	return 0;
}

int addr_listen(const struct pipe_addr *a, bool reuseport, int backlog)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
	if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)(const void *)sa;
		struct stat st;
		if (lstat(un->sun_path, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				errno = EEXIST;
				return -1;
			}
			/* Left behind by an earlier run: bind() would fail on it. */
			unlink(un->sun_path);
		}
	}
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -1;
	}
	int one = 1;
	if (sa->sa_family != AF_UNIX) {
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    (reuseport &&
		     setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)) {
			goto fail;
		}
	}
	if (bind(fd, sa, a->len) < 0 || listen(fd, backlog) < 0) {
		goto fail;
	}
	return fd;
fail:;
	int e = errno;
	close(fd);
	errno = e;
	return -1;
}

unsigned addr_bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		return 0;
	}
	if (ss.ss_family == AF_INET) {
		return ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port);
	}
	if (ss.ss_family == AF_INET6) {
		return ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
	}
	return 0;
}

void addr_nodelay(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
	    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
		/* The tunnel coalesces writes itself (one record batch per loop iteration), so
		 * Nagle's algorithm would only add latency to interactive traffic. */
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
}

int addr_connect_start(const struct pipe_addr *a)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->ss;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		return -1;
	}
	if (connect(fd, sa, a->len) < 0 && errno != EINPROGRESS) {
		/* A Unix socket whose listener's backlog is full says EAGAIN: treat it as a
		 * failure of this attempt like any other. */
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	addr_nodelay(fd);
	return fd;
}
