/*
 * hushpipe's log: one line per message on stderr,
 *   2026-11-22T10:15:02.123Z hushpipe[4242] info: conn 17 open ...
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "hushpipe.h"

enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_level_from_name(const char *name)
{
	for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			return i;
		}
	}
	return -1;
}

static void vlog(const char *label, const char *fmt, va_list ap)
{
	char line[1024];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	int n = snprintf(line, sizeof(line),
			 "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ hushpipe[%d] %s: ", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 (int)(tv.tv_usec / 1000), (int)getpid(), label);
	if (n < 0) {
		return;
	}
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	/* A line too long for the buffer is cut, and still ends with a newline. */
	if (len > sizeof(line) - 2) {
		len = sizeof(line) - 2;
	}
	line[len++] = '\n';
	/* One write per line, so lines from several threads never interleave. */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	if (!log_enabled(lvl)) {
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vlog(level_names[lvl], fmt, ap);
	va_end(ap);
}

void log_stats(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog("stats", fmt, ap);
	va_end(ap);
}
