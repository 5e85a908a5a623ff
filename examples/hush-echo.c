/*
 * hush-echo: hush connections keyed by a hush (Noise) handshake, over TCP.
 *
 *   hush-echo (--listen HOST:PORT [--ready FILE] [--count N] | --connect HOST:PORT)
 *             [--protocol NAME] [--rp RECORD_PROTOCOL] [--key PRIVATE_KEY_FILE]
 *             [--peer PUBLIC_KEY_B64]... [--psk FILE] [--echo] [--send FILE] [--out FILE]
 *
 * This is how a program authenticates its peers with hush itself: a server accepts
 * through a hush_listener, which runs the server side of the handshake on every
 * connection it accepts; a client wraps its connected socket in a hush_conn and starts
 * the client side with hush_conn_start_handshake(). Records flow after
 * HUSH_CONN_EV_OPEN, and each direction ends with hush's authenticated close record.
 *
 * --protocol is a Noise protocol name (docs/PROTOCOL.md section 8; default
 * Noise_XX_25519_AESGCM_SHA256). XX and XXpsk3 need --key (a file from
 * tools/hush-keygen) and at least one --peer: the base64 public keys allowed at the
 * other end. XXpsk3 and NNpsk0 need --psk (a file from hush-keygen --psk).
 *
 * --rp is the record protocol's wire name (docs/PROTOCOL.md section 3):
 * ALTSRP_GCM_AES128_REKEY, ALTSRP_GCM_AES128 or HUSHRP_CHACHA20_POLY1305_REKEY. Both
 * ends must name the same one. Without it the record protocol follows the Noise name:
 * HUSHRP_CHACHA20_POLY1305_REKEY for a ChaChaPoly handshake, ALTSRP_GCM_AES128_REKEY
 * for an AESGCM one.
 *
 * --echo, --send, --out, --ready and --count behave as in altsrp-echo. With --listen
 * HOST:0 the kernel picks the port, and --ready FILE tells it. Each connection ends
 * with one line
 *   RESULT sent_bytes=N sent_sha256=HEX recv_bytes=N recv_sha256=HEX
 *          handshake_hash=HEX remote_static=B64
 * (one line; remote_static=- with NNpsk0, which has no static keys) and the program
 * exits 0, or prints "hush-echo: WHAT: MESSAGE (NAME)" and exits 1. With --listen a bad
 * client does not end the server: it serves the next, until --count connections have
 * ended, and exits 1 if any failed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "echo-common.h"

/* Enough --peer keys for an example; a real server would load a file of them. */
#define MAX_PEERS 64

static struct hush_handshake_config hcfg;
static struct hush_keypair *keypair;
static uint8_t psk[HUSH_KEY_SIZE];
static uint8_t peers[MAX_PEERS][HUSH_KEY_SIZE];
static size_t n_peers;
static const char *protocol, *record_protocol, *key_file, *psk_file;

static void usage(void)
{
	fprintf(stderr,
		"usage: hush-echo (--listen HOST:PORT [--ready FILE] [--count N] | --connect "
		"HOST:PORT)\n"
		"                 [--protocol NAME] [--rp RECORD_PROTOCOL] "
		"[--key PRIVATE_KEY_FILE]\n"
		"                 [--peer PUBLIC_KEY_B64]... [--psk FILE] [--echo] [--send FILE] "
		"[--out FILE]\n");
	exit(2);
}

/* Prints what failed and exits 1. For HUSH_ESYS the message is errno's. */
static void die(const char *what, int rc)
{
	if (rc == HUSH_ESYS) {
		fprintf(stderr, "hush-echo: %s: %s (%s)\n", what, strerror(errno),
			hush_err_name(rc));
	} else {
		echo_error(what, rc);
	}
	exit(1);
}

/* Copies the outcome of the handshake, which the connection does not keep, into the
 * session's RESULT line. */
static int on_open(struct echo_session *s)
{
	struct hush_handshake_result res;
	int rc = hush_conn_handshake_result(s->conn, &res);
	if (rc < 0) {
		echo_error("handshake result", rc);
		return rc;
	}
	char hash[2 * HUSH_HANDSHAKE_HASH_SIZE + 1];
	char remote[HUSH_KEY_BASE64_LEN + 1] = "-";
	echo_hex(res.handshake_hash, sizeof(res.handshake_hash), hash);
	if (res.has_remote_static) {
		hush_key_to_base64(res.remote_static, remote);
	}
	hush_handshake_result_wipe(&res);
	snprintf(s->result_extra, sizeof(s->result_extra), "handshake_hash=%s remote_static=%s",
		 hash, remote);
	return 0;
}

static void on_accept(struct hush_listener *l, struct hush_conn *c, const struct sockaddr *addr,
		      socklen_t addrlen, void *arg)
{
	(void)l;
	(void)addr;
	(void)addrlen;
	(void)arg;
	struct echo_session *s = echo_session_new();
	if (s == NULL) {
		hush_conn_free(c); /* refuses the peer */
		return;
	}
	s->conn = c;
	hush_conn_set_arg(c, s);
}

/* Connects and starts the client side of the handshake. Returns 0, or -1 after
 * printing why. */
static int connect_client(void)
{
	struct echo_session *s = echo_session_new();
	if (s == NULL) {
		return -1;
	}
	int rc =
	    hush_conn_new(&s->conn, echo_loop, echo_connect_socket(), NULL, &echo_callbacks, s);
	if (rc == 0) {
		rc = hush_conn_start_handshake(s->conn, &hcfg, HUSH_SIDE_CLIENT);
	}
	if (rc < 0) {
		echo_session_fail(s, "start handshake", rc);
		return -1;
	}
	return 0;
}

static struct hush_listener *start_listener(void)
{
	struct hush_listener_config lcfg;
	hush_listener_config_init(&lcfg);
	lcfg.handshake = &hcfg;
	lcfg.callbacks = &echo_callbacks;
	lcfg.on_accept = on_accept;
	struct hush_listener *l;
	int rc = hush_listener_new(&l, echo_loop, echo_listen_socket(), &lcfg);
	if (rc < 0) {
		die("listener", rc);
	}
	return l;
}

/* Fills hcfg from the options, and checks it now rather than at the first peer. */
static void configure(void)
{
	hush_handshake_config_init(&hcfg);
	if (protocol != NULL && hush_noise_protocol_from_name(protocol, &hcfg.protocol) < 0) {
		fprintf(stderr, "hush-echo: unknown Noise protocol %s\n", protocol);
		exit(2);
	}
	/* Left unset, hcfg keeps HUSH_RP_AUTO: the record protocol follows the Noise name. */
	if (record_protocol != NULL &&
	    hush_record_protocol_from_name(record_protocol, &hcfg.record_protocol) < 0) {
		fprintf(stderr, "hush-echo: unknown record protocol %s\n", record_protocol);
		exit(2);
	}
	int rc;
	if (key_file != NULL) {
		if ((rc = hush_keypair_load(&keypair, key_file)) < 0) {
			die(key_file, rc);
		}
		hcfg.keypair = keypair;
	}
	if (psk_file != NULL) {
		if ((rc = hush_psk_load(psk_file, psk)) < 0) {
			die(psk_file, rc);
		}
		hcfg.psk = psk;
	}
	if (n_peers > 0) {
		hcfg.allowed_peers = (const uint8_t(*)[HUSH_KEY_SIZE])peers;
		hcfg.n_allowed_peers = n_peers;
	}
	struct hush_handshake *probe;
	rc = hush_handshake_new(&probe, &hcfg,
				echo_opt.listen != NULL ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT);
	if (rc == HUSH_EINVAL || rc == HUSH_ENOVERIFY) {
		static const char *const needs[] = {
		    "--key and at least one --peer, and no --psk",
		    "--key, at least one --peer, and --psk",
		    "--psk, and no --key or --peer",
		};
		/* The protocols come in pairs, AESGCM then ChaChaPoly: XX, XXpsk3, NNpsk0. */
		fprintf(stderr, "hush-echo: %s needs %s\n", hush_noise_protocol_name(hcfg.protocol),
			needs[(hcfg.protocol - 1) / 2]);
	}
	if (rc < 0) {
		die("handshake configuration", rc);
	}
	hush_handshake_free(probe);
}

static int program_option(const char *name, const char *v)
{
	if (strcmp(name, "--protocol") == 0) {
		protocol = v;
	} else if (strcmp(name, "--rp") == 0) {
		record_protocol = v;
	} else if (strcmp(name, "--key") == 0) {
		key_file = v;
	} else if (strcmp(name, "--psk") == 0) {
		psk_file = v;
	} else if (strcmp(name, "--peer") == 0) {
		if (n_peers == MAX_PEERS) {
			fprintf(stderr, "hush-echo: at most %d --peer keys\n", MAX_PEERS);
			exit(2);
		}
		int rc = hush_key_from_base64(v, peers[n_peers]);
		if (rc < 0) {
			die("--peer", rc);
		}
		n_peers++;
	} else {
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	echo_init("hush-echo");
	echo_parse_args(argc, argv, program_option, usage);
	configure();
	echo_on_open = on_open;
	struct hush_listener *l = NULL;
	if (echo_opt.listen != NULL) {
		l = start_listener();
	} else if (connect_client() < 0) {
		echo_cleanup();
		hush_keypair_free(keypair);
		OPENSSL_cleanse(psk, sizeof(psk));
		return 1;
	}
	echo_run();
	hush_listener_free(l);
	int status = echo_cleanup();
	hush_keypair_free(keypair);
	OPENSSL_cleanse(psk, sizeof(psk));
	return status;
}
