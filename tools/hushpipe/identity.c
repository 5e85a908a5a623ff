/*
 * Identities and peer verification: the handshake configuration made from -k, --peer,
 * --peers, --psk and --cipher, and the SIGHUP reload of the peers file.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <hush/common.h>

#include "hushpipe.h"

/* The handshake's verify callback: runs on worker threads, inside hush. */
static int verify_peer(const uint8_t key[HUSH_KEY_SIZE], void *arg)
{
	(void)arg;
	pthread_rwlock_rdlock(&P.peers_lock);
	bool ok = hush_peers_contains(P.fixed_peers, key) || hush_peers_contains(P.file_peers, key);
	pthread_rwlock_unlock(&P.peers_lock);
	if (!ok && log_enabled(LOG_INFO)) {
		char b64[HUSH_KEY_BASE64_LEN + 1];
		hush_key_to_base64(key, b64);
		log_limited(&log_limit_refusals, LOG_INFO, "refusing peer key %s: not an allowed peer",
			    b64);
	}
	return ok ? 0 : -1;
}

static int load_peers_file(struct hush_peers **out)
{
	unsigned bad_line = 0;
	int rc = hush_peers_load(out, P.opt.peers_file, &bad_line);
	if (rc == HUSH_ESYS) {
		log_msg(LOG_ERROR, "%s: %s", P.opt.peers_file, strerror(errno));
	} else if (rc < 0 && bad_line != 0) {
		log_msg(LOG_ERROR, "%s:%u: not a peer key line (malformed, or a low-order key)",
			P.opt.peers_file, bad_line);
	} else if (rc < 0) {
		log_msg(LOG_ERROR, "%s: %s", P.opt.peers_file, hush_strerror(rc));
	}
	return rc;
}

/* Sets up P.hcfg from -k, --peer, --peers, --psk and --cipher. Returns 0 or -1. */
int pipe_setup_identity(void)
{
	const struct pipe_options *o = &P.opt;
	bool have_peers = o->n_peer_keys > 0 || o->peers_file != NULL;
	hush_handshake_config_init(&P.hcfg);
	if (o->key_file == NULL && o->psk_file == NULL) {
		log_msg(LOG_ERROR,
			"no identity: give -k KEYFILE with --peer or --peers, or --psk FILE");
		return -1;
	}
	if (o->key_file == NULL && have_peers) {
		log_msg(LOG_ERROR, "--peer and --peers need -k: with --psk alone there are no "
				   "static keys to verify");
		return -1;
	}
	if (o->key_file != NULL && !have_peers) {
		/* hush fails closed, and so does hushpipe: no peer list, no tunnel. */
		log_msg(LOG_ERROR, "no peer verification: -k needs --peer KEY or --peers FILE");
		return -1;
	}
	if (o->key_file != NULL) {
		int rc = hush_keypair_load(&P.kp, o->key_file);
		if (rc < 0) {
			log_msg(LOG_ERROR, "%s: %s", o->key_file,
				rc == HUSH_ESYS ? strerror(errno) : hush_strerror(rc));
			return -1;
		}
		P.hcfg.keypair = P.kp;
		P.hcfg.verify = verify_peer;
	}
	if (o->psk_file != NULL) {
		int rc = hush_psk_load(o->psk_file, P.psk);
		if (rc < 0) {
			log_msg(LOG_ERROR, "%s: %s", o->psk_file,
				rc == HUSH_ESYS ? strerror(errno) : hush_strerror(rc));
			return -1;
		}
		P.hcfg.psk = P.psk;
	}
	if (o->key_file != NULL && o->psk_file != NULL) {
		P.hcfg.protocol = o->chacha ? HUSH_NOISE_XXPSK3_25519_CHACHAPOLY_SHA256
					    : HUSH_NOISE_XXPSK3_25519_AESGCM_SHA256;
	} else if (o->key_file != NULL) {
		P.hcfg.protocol = o->chacha ? HUSH_NOISE_XX_25519_CHACHAPOLY_SHA256
					    : HUSH_NOISE_XX_25519_AESGCM_SHA256;
	} else {
		P.hcfg.protocol = o->chacha ? HUSH_NOISE_NNPSK0_25519_CHACHAPOLY_SHA256
					    : HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256;
	}
	/* --cipher names the Noise cipher; the records follow it (the handshake's default
	 * record protocol): ChaChaPoly carries HUSHRP_CHACHA20_POLY1305_REKEY records,
	 * AESGCM ALTSRP_GCM_AES128_REKEY ones. */
	/* Both ends are hushpipes, so records can be larger than hush's 16 KiB default:
	 * 32 KiB frames halve the receiving end's sends to the plaintext socket, which
	 * measured as about a quarter less CPU there for bulk data. They still fit hush's
	 * default read buffer (32 KiB + 512) whole and its 64 KiB write buffers two at a
	 * time; 64 KiB frames saved little more and made every write take a 1 MiB buffer. */
	P.hcfg.max_send_frame = PIPE_FRAME;

	if (o->n_peer_keys > 0) {
		/* --peer keys become a peers list of their own, parsed like a file. */
		size_t cap = o->n_peer_keys * (HUSH_KEY_BASE64_LEN + 2) + 1;
		char *text = malloc(cap);
		if (text == NULL) {
			log_msg(LOG_ERROR, "out of memory");
			return -1;
		}
		size_t len = 0;
		for (size_t i = 0; i < o->n_peer_keys; i++) {
			uint8_t k[HUSH_KEY_SIZE];
			if (hush_key_from_base64(o->peer_keys[i], k) < 0) {
				log_msg(LOG_ERROR, "--peer %s: not a base64 public key",
					o->peer_keys[i]);
				free(text);
				return -1;
			}
			hush_key_to_base64(k, text + len);
			len += HUSH_KEY_BASE64_LEN;
			text[len++] = '\n';
		}
		int rc = hush_peers_parse(&P.fixed_peers, text, len, NULL);
		free(text);
		if (rc < 0) {
			log_msg(LOG_ERROR, "--peer: %s", hush_strerror(rc));
			return -1;
		}
	}
	if (o->peers_file != NULL && load_peers_file(&P.file_peers) < 0) {
		return -1;
	}
	size_t npeers = hush_peers_count(P.fixed_peers) + hush_peers_count(P.file_peers);
	if (o->key_file != NULL && npeers == 0) {
		log_msg(LOG_WARN, "no peer keys configured yet: every peer is refused until a "
				  "SIGHUP loads some");
	}
	/* Check the configuration once now rather than on the first connection. */
	struct hush_handshake *hs;
	int rc = hush_handshake_new(&hs, &P.hcfg, HUSH_SIDE_CLIENT);
	if (rc < 0) {
		log_msg(LOG_ERROR, "handshake configuration: %s", hush_strerror(rc));
		return -1;
	}
	hush_handshake_free(hs);
	log_msg(LOG_INFO, "identity: %s, %zu peer key%s", hush_noise_protocol_name(P.hcfg.protocol),
		npeers, npeers == 1 ? "" : "s");
	return 0;
}

void pipe_reload_peers(void)
{
	if (P.opt.peers_file == NULL) {
		log_msg(LOG_INFO, "SIGHUP: no --peers file to reload");
		return;
	}
	struct hush_peers *fresh = NULL;
	if (load_peers_file(&fresh) < 0) {
		log_msg(LOG_WARN, "SIGHUP: %s not reloaded; keeping the previous peers",
			P.opt.peers_file);
		return;
	}
	/* Handshakes read the list only inside verify_peer, under the lock, so the old one
	 * can go as soon as the new one is in. */
	pthread_rwlock_wrlock(&P.peers_lock);
	struct hush_peers *old = P.file_peers;
	P.file_peers = fresh;
	pthread_rwlock_unlock(&P.peers_lock);
	log_msg(LOG_INFO, "SIGHUP: %s reloaded: %zu peer keys (was %zu)", P.opt.peers_file,
		hush_peers_count(fresh), hush_peers_count(old));
	hush_peers_free(old);
}
