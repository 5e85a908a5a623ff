/*
 * altsrp-echo: ALTS records over TCP with a fixed key, on hush's raw-key API.
 *
 *   altsrp-echo (--listen HOST:PORT [--ready FILE] [--count N] | --connect HOST:PORT)
 *               --rp ALTSRP_GCM_AES128_REKEY|ALTSRP_GCM_AES128 --key HEX
 *               [--side client|server] [--echo] [--send FILE] [--out FILE]
 *               [--frame BYTES]
 *
 * This is how a program uses keys from an external handshaker (such as gRPC's ALTS
 * handshaker service): make a hush_loop for the event_base, wrap each connected socket
 * in a hush_conn, and start it with hush_conn_start_raw(). It speaks to gRPC's own
 * ALTS record code (see test/interop/). examples/hush-echo is the same program keyed
 * by a hush handshake instead.
 *
 * --echo sends every byte received back; when the peer shuts down its write side the
 * echo is flushed and ours is shut down too. --send FILE sends the file, shuts down the
 * write side and reads the reply until EOF. Each connection ends with one line
 *   RESULT sent_bytes=N sent_sha256=HEX recv_bytes=N recv_sha256=HEX
 * and the program exits 0, or prints the error and exits 1. The session code is in
 * echo-common.c.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "echo-common.h"

static enum hush_record_protocol rp;
static uint8_t key[HUSH_RECORD_MAX_KEY_SIZE];
static size_t key_len;
static int side = -1; /* -1: by role */
static size_t frame;

static void usage(void)
{
	fprintf(stderr,
		"usage: altsrp-echo (--listen HOST:PORT [--ready FILE] [--count N] | --connect "
		"HOST:PORT)\n"
		"                   --rp ALTSRP_GCM_AES128_REKEY|ALTSRP_GCM_AES128 --key HEX\n"
		"                   [--side client|server] [--echo] [--send FILE] [--out FILE]\n"
		"                   [--frame BYTES]\n");
	exit(2);
}

static int unhex(const char *s, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = strlen(s);
	if (n % 2 != 0 || n / 2 > cap) {
		return -1;
	}
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1) {
			return -1;
		}
		out[i] = (uint8_t)v;
	}
	*len = n / 2;
	return 0;
}

/* Wraps fd in a connection with the fixed key and starts it. */
static int start_session(int fd, enum hush_side role)
{
	struct echo_session *s = echo_session_new();
	if (s == NULL) {
		close(fd);
		return -1;
	}
	struct hush_conn_config cfg;
	hush_conn_config_init(&cfg);
	if (frame != 0) {
		cfg.max_send_frame = frame;
	}
	int rc = hush_conn_new(&s->conn, echo_loop, fd, &cfg, &echo_callbacks, s);
	if (rc == 0) {
		rc = hush_conn_start_raw(s->conn, rp, key, key_len,
					 side < 0 ? role : (enum hush_side)side);
	}
	if (rc < 0) {
		echo_session_fail(s, "start", rc);
		return -1;
	}
	return 0;
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	(void)what;
	(void)arg;
	int fd = accept(lfd, NULL, NULL);
	if (fd >= 0) {
		start_session(fd, HUSH_SIDE_SERVER);
	}
}

static const char *rp_name, *key_hex;

static int program_option(const char *name, const char *v)
{
	if (strcmp(name, "--rp") == 0) {
		rp_name = v;
	} else if (strcmp(name, "--key") == 0) {
		key_hex = v;
	} else if (strcmp(name, "--side") == 0 && strcmp(v, "client") == 0) {
		side = HUSH_SIDE_CLIENT;
	} else if (strcmp(name, "--side") == 0 && strcmp(v, "server") == 0) {
		side = HUSH_SIDE_SERVER;
	} else if (strcmp(name, "--frame") == 0) {
		frame = (size_t)atol(v);
	} else {
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	echo_init("altsrp-echo");
	echo_parse_args(argc, argv, program_option, usage);
	if (rp_name == NULL || key_hex == NULL) {
		usage();
	}
	if (hush_record_protocol_from_name(rp_name, &rp) < 0) {
		fprintf(stderr, "altsrp-echo: unknown record protocol %s\n", rp_name);
		return 2;
	}
	if (unhex(key_hex, key, sizeof(key), &key_len) < 0) {
		fprintf(stderr, "altsrp-echo: --key must be hex\n");
		return 2;
	}
	int lfd = -1;
	struct event *listen_ev = NULL;
	if (echo_opt.listen != NULL) {
		lfd = echo_listen_socket();
		evutil_make_socket_nonblocking(lfd);
		listen_ev = event_new(echo_base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
		if (listen_ev == NULL || event_add(listen_ev, NULL) != 0) {
			fprintf(stderr, "altsrp-echo: cannot watch the listening socket\n");
			return 1;
		}
	} else if (start_session(echo_connect_socket(), HUSH_SIDE_CLIENT) < 0) {
		echo_cleanup();
		return 1;
	}
	echo_run();
	if (listen_ev != NULL) {
		event_free(listen_ev);
		close(lfd);
	}
	return echo_cleanup();
}
