/*
 * hushpipe's log: one line per message on stderr,
 *   2026-11-22T10:15:02.123Z hushpipe[4242] info: conn 17 open ...
 * and the monotonic clocks that its rate limits and the relay read. The bottom layer:
 * every other file calls it, and it calls none of them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "hushpipe.h"

enum log_level log_threshold = LOG_INFO;

uint64_t pipe_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint32_t pipe_coarse_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

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

struct log_limit log_limit_failures = LOG_LIMIT_INIT("connection failures");
struct log_limit log_limit_refusals = LOG_LIMIT_INIT("refused peer keys");

/* The count to report for a second that is over, or 0; starts the new second. */
static unsigned limit_roll(struct log_limit *rl, uint64_t now_s)
{
	unsigned n = 0;
	if (rl->window != now_s) {
		n = rl->suppressed;
		rl->window = now_s;
		rl->lines = 0;
		rl->suppressed = 0;
	}
	return n;
}

static void report_suppressed(const struct log_limit *rl, unsigned n)
{
	if (n > 0) {
		log_msg(LOG_WARN, "%u similar line%s suppressed (%s)", n, n == 1 ? "" : "s",
			rl->kind);
	}
}

void log_limited(struct log_limit *rl, enum log_level lvl, const char *fmt, ...)
{
	if (!log_enabled(lvl)) {
		return;
	}
	va_list ap;
	if (rl == NULL) {
		va_start(ap, fmt);
		vlog(level_names[lvl], fmt, ap);
		va_end(ap);
		return;
	}
	pthread_mutex_lock(&rl->lock);
	unsigned done = limit_roll(rl, pipe_now_ms() / 1000);
	bool emit = rl->lines < LOG_BURST;
	if (emit) {
		rl->lines++;
	} else {
		rl->suppressed++;
	}
	pthread_mutex_unlock(&rl->lock);
	report_suppressed(rl, done);
	if (emit) {
		va_start(ap, fmt);
		vlog(level_names[lvl], fmt, ap);
		va_end(ap);
	}
}

void log_limits_flush(void)
{
	struct log_limit *all[] = {&log_limit_failures, &log_limit_refusals};
	uint64_t now_s = pipe_now_ms() / 1000;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		pthread_mutex_lock(&all[i]->lock);
		unsigned done = limit_roll(all[i], now_s);
		pthread_mutex_unlock(&all[i]->lock);
		report_suppressed(all[i], done);
	}
}
