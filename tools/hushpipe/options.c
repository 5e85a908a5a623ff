/*
 * hushpipe's command line. Defaults are documented in hushpipe(1); keep them in step.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hush/common.h>

#include "hushpipe.h"

static void usage(FILE *f)
{
	fprintf(
	    f, "usage: hushpipe {-e | -d} -s SOURCE -t TARGET\n"
	       "                {-k KEYFILE {--peer KEY ... | --peers FILE} [--psk FILE] | --psk "
	       "FILE}\n"
	       "                [-j N] [--cipher aes-128-gcm | chacha20-poly1305]\n"
	       "                [--max-conns N] [--max-handshakes N] [--max-per-source N]\n"
	       "                [--backlog N] [--reuseport] [--pool-budget MIB]\n"
	       "                [--handshake-timeout SEC]\n"
	       "                [--first-message-timeout SEC] [--record-timeout SEC]\n"
	       "                [--connect-timeout SEC]\n"
	       "                [--idle-timeout SEC] [--drain-timeout SEC]\n"
	       "                [--log-level error|warn|info|debug] [-v] [-q] [--pidfile FILE]\n"
	       "       hushpipe --help | --version\n"
	       "SOURCE and TARGET: HOST:PORT, [IPV6]:PORT, or a Unix socket path (/... or ./...).\n"
	       "See hushpipe(1).\n");
}

/* Parses seconds ("10", "0.5") into milliseconds, at most ~49 days. */
static bool parse_seconds(const char *text, uint32_t *ms)
{
	char *end;
	errno = 0;
	double v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(v >= 0) || v > 4.0e6) {
		return false;
	}
	*ms = (uint32_t)(v * 1000.0 + 0.5);
	return true;
}

static bool parse_uint(const char *text, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < lo || v > hi) {
		return false;
	}
	*out = (unsigned)v;
	return true;
}

enum {
	OPT_PEER = 256,
	OPT_PEERS,
	OPT_PSK,
	OPT_CIPHER,
	OPT_MAX_CONNS,
	OPT_MAX_HANDSHAKES,
	OPT_MAX_PER_SOURCE,
	OPT_FIRST_TIMEOUT,
	OPT_RECORD_TIMEOUT,
	OPT_BACKLOG,
	OPT_REUSEPORT,
	OPT_POOL_BUDGET,
	OPT_HS_TIMEOUT,
	OPT_CONNECT_TIMEOUT,
	OPT_IDLE_TIMEOUT,
	OPT_DRAIN_TIMEOUT,
	OPT_LOG_LEVEL,
	OPT_PIDFILE,
	OPT_VERSION,
};

static const struct option long_opts[] = {
    {"encrypt", no_argument, NULL, 'e'},
    {"decrypt", no_argument, NULL, 'd'},
    {"source", required_argument, NULL, 's'},
    {"target", required_argument, NULL, 't'},
    {"key", required_argument, NULL, 'k'},
    {"threads", required_argument, NULL, 'j'},
    {"peer", required_argument, NULL, OPT_PEER},
    {"peers", required_argument, NULL, OPT_PEERS},
    {"psk", required_argument, NULL, OPT_PSK},
    {"cipher", required_argument, NULL, OPT_CIPHER},
    {"max-conns", required_argument, NULL, OPT_MAX_CONNS},
    {"max-handshakes", required_argument, NULL, OPT_MAX_HANDSHAKES},
    {"max-per-source", required_argument, NULL, OPT_MAX_PER_SOURCE},
    {"first-message-timeout", required_argument, NULL, OPT_FIRST_TIMEOUT},
    {"record-timeout", required_argument, NULL, OPT_RECORD_TIMEOUT},
    {"backlog", required_argument, NULL, OPT_BACKLOG},
    {"reuseport", no_argument, NULL, OPT_REUSEPORT},
    {"pool-budget", required_argument, NULL, OPT_POOL_BUDGET},
    {"handshake-timeout", required_argument, NULL, OPT_HS_TIMEOUT},
    {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"pidfile", required_argument, NULL, OPT_PIDFILE},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* --peer is for a few keys; a peers file holds any number. */
#define MAX_PEER_ARGS 1024

/* The long name of option c, for messages. */
static const char *option_name(int c)
{
	for (const struct option *lo = long_opts; lo->name != NULL; lo++) {
		if (lo->val == c) {
			return lo->name;
		}
	}
	return "?";
}

/* Returns 0 to go on, or the exit status. */
int pipe_parse_options(int argc, char **argv, struct pipe_options *o)
{
	memset(o, 0, sizeof(*o));
	o->max_conns = 10000;
	o->max_handshakes = 256;
	o->max_per_source = 32;
	o->first_message_timeout_ms = 3000;
	o->record_timeout_ms = 30000;
	o->backlog = 1024;
	o->handshake_timeout_ms = 10000;
	o->connect_timeout_ms = 5000;
	o->idle_timeout_ms = 3600 * 1000;
	o->drain_timeout_ms = 30000;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	o->workers = ncpu > 0 ? (unsigned)(ncpu < 64 ? ncpu : 64) : 1;
	/* Locals, not fields of *o (a global): getopt_long() could change those as far as
	 * a static analyzer knows. */
	char **peers = calloc(MAX_PEER_ARGS, sizeof(char *));
	size_t npeers = 0;
	o->peer_keys = peers;
	if (peers == NULL) {
		fprintf(stderr, "hushpipe: out of memory\n");
		return 1;
	}
	int mode = 0;
	int c;
	while ((c = getopt_long(argc, argv, "eds:t:k:j:vqh", long_opts, NULL)) != -1) {
		uint32_t ms;
		unsigned u;
		switch (c) {
		case 'e':
		case 'd':
			if (mode != 0 && mode != c) {
				fprintf(stderr, "hushpipe: -e and -d exclude each other\n");
				return 2;
			}
			mode = c;
			break;
		case 's':
			o->source = optarg;
			break;
		case 't':
			o->target = optarg;
			break;
		case 'k':
			o->key_file = optarg;
			break;
		case 'j':
			if (!parse_uint(optarg, 1, 256, &o->workers)) {
				fprintf(stderr, "hushpipe: -j: expected 1 to 256 threads\n");
				return 2;
			}
			break;
		case OPT_PEER:
			if (npeers >= MAX_PEER_ARGS) {
				fprintf(stderr, "hushpipe: more than %d --peer: use --peers FILE\n",
					MAX_PEER_ARGS);
				return 2;
			}
			peers[npeers++] = optarg;
			o->n_peer_keys = npeers;
			break;
		case OPT_PEERS:
			o->peers_file = optarg;
			break;
		case OPT_PSK:
			o->psk_file = optarg;
			break;
		case OPT_CIPHER:
			if (strcmp(optarg, "chacha20-poly1305") == 0) {
				o->chacha = true;
			} else if (strcmp(optarg, "aes-128-gcm") == 0) {
				o->chacha = false;
			} else {
				fprintf(stderr,
					"hushpipe: --cipher: aes-128-gcm or chacha20-poly1305\n");
				return 2;
			}
			break;
		case OPT_MAX_CONNS:
			if (!parse_uint(optarg, 1, 1u << 24, &o->max_conns)) {
				fprintf(stderr, "hushpipe: --max-conns: expected 1 to 16777216\n");
				return 2;
			}
			o->max_conns_set = true;
			break;
		case OPT_MAX_HANDSHAKES:
			if (!parse_uint(optarg, 1, 1u << 20, &o->max_handshakes)) {
				fprintf(stderr,
					"hushpipe: --max-handshakes: expected a positive number\n");
				return 2;
			}
			break;
		case OPT_MAX_PER_SOURCE:
			if (!parse_uint(optarg, 1, 1u << 20, &o->max_per_source)) {
				fprintf(stderr,
					"hushpipe: --max-per-source: expected a positive number\n");
				return 2;
			}
			break;
		case OPT_POOL_BUDGET:
			if (!parse_uint(optarg, 0, 1u << 24, &u)) {
				fprintf(stderr, "hushpipe: --pool-budget: expected MiB (0: none)\n");
				return 2;
			}
			o->pool_budget = (uint64_t)u << 20;
			o->pool_budget_set = true;
			break;
		case OPT_BACKLOG:
			if (!parse_uint(optarg, 1, 1u << 20, &u)) {
				fprintf(stderr,
					"hushpipe: --backlog: expected a positive number\n");
				return 2;
			}
			o->backlog = (int)u;
			break;
		case OPT_REUSEPORT:
			o->reuseport = true;
			break;
		case OPT_HS_TIMEOUT:
		case OPT_FIRST_TIMEOUT:
		case OPT_RECORD_TIMEOUT:
		case OPT_CONNECT_TIMEOUT:
		case OPT_IDLE_TIMEOUT:
		case OPT_DRAIN_TIMEOUT:
			if (!parse_seconds(optarg, &ms) ||
			    ((c == OPT_HS_TIMEOUT || c == OPT_CONNECT_TIMEOUT) && ms == 0)) {
				fprintf(
				    stderr, "hushpipe: --%s: expected seconds%s\n", option_name(c),
				    c == OPT_HS_TIMEOUT || c == OPT_CONNECT_TIMEOUT ? " (above 0)"
										    : "");
				return 2;
			}
			if (c == OPT_HS_TIMEOUT) {
				o->handshake_timeout_ms = ms;
			} else if (c == OPT_RECORD_TIMEOUT) {
				o->record_timeout_ms = ms;
			} else if (c == OPT_FIRST_TIMEOUT) {
				o->first_message_timeout_ms = ms;
			} else if (c == OPT_CONNECT_TIMEOUT) {
				o->connect_timeout_ms = ms;
			} else if (c == OPT_IDLE_TIMEOUT) {
				o->idle_timeout_ms = ms;
			} else {
				o->drain_timeout_ms = ms;
			}
			break;
		case OPT_LOG_LEVEL: {
			int l = log_level_from_name(optarg);
			if (l < 0) {
				fprintf(stderr,
					"hushpipe: --log-level: error, warn, info or debug\n");
				return 2;
			}
			log_threshold = (enum log_level)l;
			break;
		}
		case 'v':
			if (log_threshold < LOG_DEBUG) {
				log_threshold++;
			}
			break;
		case 'q':
			if (log_threshold > LOG_ERROR) {
				log_threshold--;
			}
			break;
		case OPT_PIDFILE:
			o->pidfile = optarg;
			break;
		case 'h':
			usage(stdout);
			return -1;
		case OPT_VERSION:
			printf("hushpipe (hush) %s\n", hush_version());
			return -1;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "hushpipe: unexpected argument: %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (mode == 0 || o->source == NULL || o->target == NULL) {
		fprintf(stderr, "hushpipe: need -e or -d, -s SOURCE and -t TARGET\n");
		usage(stderr);
		return 2;
	}
	o->encrypt = mode == 'e';
	return 0;
}
