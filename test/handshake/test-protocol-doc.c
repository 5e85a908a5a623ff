/*
 * docs/PROTOCOL.md's worked examples, read out of the document itself and checked
 * against the code and the vectors files, so that a byte or a size written wrong in the
 * document fails `make check` (issue 18: "Flight 1 (147 bytes)" was 149).
 *
 * The other tests check the vectors files against the code: test-record.c the record
 * frames of test/data/alts-record-vectors.txt, test-handshake.c the handshakes of
 * test/data/hush-handshake-vectors.txt, and run-noise-xcheck.sh both again with another
 * Noise library. This test closes the chain: every hex string and every size the
 * document's examples state equals what the vectors say, or what hush's code computes
 * (the counters, the prologue, the parameter block, the key derivation's info, the limits).
 *
 * The document's conventions this test relies on (keep them when editing an example):
 *  - In a code block, fields are separated by two or more spaces. A field made only of
 *    lowercase hex tokens of even length, separated by single spaces, is data; fields
 *    before the first data field of a line are its label, fields after it a comment. A
 *    line with data and no label, or with a label in parentheses such as "(44 bytes)",
 *    continues the previous labelled line.
 *  - In section 17, a line starting "Flight N" or "Block (N bytes):" introduces the next
 *    code block (the flight's bytes, or the parameter block); other blocks are labelled
 *    ("flight N", and "h", "k1", "k2", "K" as the last word of a label).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <hush/handshake.h>
#include <hush/record.h>

#include "handshake/handshake-internal.h"
#include "record/record-internal.h"
#include "testlib.h"

#define DOC	       HUSH_SRCDIR "/docs/PROTOCOL.md"
#define HS_VECTORS     HUSH_SRCDIR "/test/data/hush-handshake-vectors.txt"
#define RECORD_VECTORS HUSH_SRCDIR "/test/data/alts-record-vectors.txt"

#define MAX_LINES 4096
#define MAX_DATA  1024

/* ---- The document ---- */

static char *doc_text;
static char *lines[MAX_LINES];
static size_t n_lines;

static int load_doc(void **state)
{
	(void)state;
	FILE *f = fopen(DOC, "r");
	if (f == NULL) {
		return -1;
	}
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	doc_text = calloc(1, (size_t)size + 1);
	if (doc_text == NULL || fread(doc_text, 1, (size_t)size, f) != (size_t)size) {
		fclose(f);
		return -1;
	}
	fclose(f);
	n_lines = 0;
	for (char *p = doc_text; *p != '\0' && n_lines < MAX_LINES;) {
		lines[n_lines++] = p;
		char *nl = strchr(p, '\n');
		if (nl == NULL) {
			break;
		}
		*nl = '\0';
		p = nl + 1;
	}
	return 0;
}

static int free_doc(void **state)
{
	(void)state;
	free(doc_text);
	doc_text = NULL;
	return 0;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The first line at or after from that contains needle; fails the test if none. */
static size_t find_line(size_t from, const char *needle)
{
	for (size_t i = from; i < n_lines; i++) {
		if (strstr(lines[i], needle) != NULL) {
			return i;
		}
	}
	fail_msg("PROTOCOL.md: no line containing \"%s\"", needle);
	return 0;
}

/* The paragraph holding line i, its lines joined by single spaces. */
static void paragraph(size_t i, char *out, size_t cap)
{
	while (i > 0 && lines[i - 1][0] != '\0' && !starts_with(lines[i - 1], "```")) {
		i--;
	}
	size_t len = 0;
	out[0] = '\0';
	for (; i < n_lines && lines[i][0] != '\0' && !starts_with(lines[i], "```"); i++) {
		const char *l = lines[i];
		while (*l == ' ') {
			l++;
		}
		int n = snprintf(out + len, cap - len, "%s%s", len > 0 ? " " : "", l);
		assert_true(n >= 0 && (size_t)n < cap - len);
		len += (size_t)n;
	}
}

/* The number written just before `after` in s (as in "38 bytes" with after " bytes"). */
static size_t number_before(const char *s, const char *after)
{
	const char *p = strstr(s, after);
	assert_non_null(p);
	const char *q = p;
	while (q > s && isdigit((unsigned char)q[-1])) {
		q--;
	}
	assert_true(q < p);
	return strtoul(q, NULL, 10);
}

/* The text between the k-th pair of backticks in s (from 0). */
static void backticked(const char *s, unsigned k, char *out, size_t cap)
{
	const char *p = s;
	for (unsigned i = 0;; i++) {
		p = strchr(p, '`');
		assert_non_null(p);
		const char *e = strchr(p + 1, '`');
		assert_non_null(e);
		if (i == k) {
			size_t n = (size_t)(e - p - 1);
			assert_true(n < cap);
			memcpy(out, p + 1, n);
			out[n] = '\0';
			return;
		}
		p = e + 1;
	}
}

/* ---- Code blocks: rows of label, data and comment ---- */

struct entry {
	char label[128];
	char comment[512]; /* the comments of all its lines, space-separated */
	uint8_t data[MAX_DATA];
	size_t len;
	size_t rows; /* lines with data */
};

struct block {
	struct entry e[24]; /* labelled entries, continuation lines appended */
	size_t n;
	struct entry row[40]; /* every line with data, on its own */
	size_t n_rows;
	size_t end; /* the line of the closing ``` */
};

static bool is_hex_token(const char *t, size_t n)
{
	if (n == 0 || n % 2 != 0) {
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)t[i]) && !(t[i] >= 'a' && t[i] <= 'f')) {
			return false;
		}
	}
	return true;
}

/* Whether field f (n bytes) is data: hex tokens separated by single spaces. */
static bool is_data_field(const char *f, size_t n)
{
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || f[i] == ' ') {
			if (!is_hex_token(f + start, i - start)) {
				return false;
			}
			start = i + 1;
		}
	}
	return true;
}

static void append_text(char *dst, size_t cap, const char *src, size_t n)
{
	size_t len = strlen(dst);
	if (len > 0 && len + 1 < cap) {
		dst[len++] = ' ';
		dst[len] = '\0';
	}
	assert_true(len + n < cap);
	memcpy(dst + len, src, n);
	dst[len + n] = '\0';
}

static void append_hex(struct entry *e, const char *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (f[i] == ' ') {
			continue;
		}
		char pair[3] = {f[i], f[i + 1], '\0'};
		assert_true(e->len < MAX_DATA);
		e->data[e->len++] = (uint8_t)strtoul(pair, NULL, 16);
		i++;
	}
}

/* Parses the code block whose opening ``` is on line `open`. */
static void parse_block(size_t open, struct block *b)
{
	assert_true(starts_with(lines[open], "```"));
	memset(b, 0, sizeof(*b));
	size_t i = open + 1;
	for (; i < n_lines && !starts_with(lines[i], "```"); i++) {
		const char *l = lines[i];
		char label[128] = "", comment[256] = "";
		struct entry row;
		memset(&row, 0, sizeof(row));
		bool seen_data = false;
		/* Fields are separated by runs of two or more spaces. */
		size_t p = 0, len = strlen(l);
		while (p < len) {
			while (p < len && l[p] == ' ') {
				p++;
			}
			size_t start = p;
			while (p < len && !(l[p] == ' ' && (p + 1 == len || l[p + 1] == ' '))) {
				p++;
			}
			size_t flen = p - start;
			if (flen == 0) {
				continue;
			}
			if (is_data_field(l + start, flen)) {
				append_hex(&row, l + start, flen);
				seen_data = true;
			} else if (!seen_data) {
				append_text(label, sizeof(label), l + start, flen);
			} else {
				append_text(comment, sizeof(comment), l + start, flen);
			}
		}
		if (!seen_data) {
			continue; /* a line of labels for the line above, or a diagram */
		}
		assert_true(b->n_rows < sizeof(b->row) / sizeof(b->row[0]));
		row.rows = 1;
		snprintf(row.label, sizeof(row.label), "%s", label);
		snprintf(row.comment, sizeof(row.comment), "%s", comment);
		b->row[b->n_rows++] = row;
		bool continues = b->n > 0 && (label[0] == '\0' || label[0] == '(');
		if (!continues) {
			assert_true(b->n < sizeof(b->e) / sizeof(b->e[0]));
			snprintf(b->e[b->n].label, sizeof(b->e[b->n].label), "%s", label);
			b->n++;
		}
		struct entry *e = &b->e[b->n - 1];
		assert_true(e->len + row.len <= MAX_DATA);
		memcpy(e->data + e->len, row.data, row.len);
		e->len += row.len;
		e->rows++;
		if (comment[0] != '\0') {
			append_text(e->comment, sizeof(e->comment), comment, strlen(comment));
		}
	}
	assert_true(i < n_lines);
	b->end = i;
}

/* The next code block at or after line from. */
static size_t next_block(size_t from)
{
	for (size_t i = from; i < n_lines; i++) {
		if (starts_with(lines[i], "```")) {
			return i;
		}
	}
	fail_msg("PROTOCOL.md: no code block after line %zu", from + 1);
	return 0;
}

/* All the data of a block, in order. */
static size_t block_data(const struct block *b, uint8_t *out, size_t cap)
{
	size_t len = 0;
	for (size_t k = 0; k < b->n; k++) {
		assert_true(len + b->e[k].len <= cap);
		memcpy(out + len, b->e[k].data, b->e[k].len);
		len += b->e[k].len;
	}
	return len;
}

static const struct entry *entry_labelled(const struct block *b, const char *label)
{
	for (size_t k = 0; k < b->n; k++) {
		if (strcmp(b->e[k].label, label) == 0) {
			return &b->e[k];
		}
	}
	fail_msg("PROTOCOL.md: no line labelled \"%s\" in the block ending at line %zu", label,
		 b->end + 1);
	return NULL;
}

/* ---- The vectors files ---- */

struct kv {
	char key[32];
	char *value;
};

struct vector {
	struct kv kv[40];
	size_t n;
};

static void set_key(struct kv *kv, const char *key)
{
	size_t n = strlen(key);
	assert_true(n < sizeof(kv->key));
	memcpy(kv->key, key, n + 1);
}

static char *dup_string(const char *s)
{
	char *d = malloc(strlen(s) + 1);
	assert_non_null(d);
	strcpy(d, s);
	return d;
}

/* Adds one key=value to the vector being read. */
static void vector_add(struct vector *x, const char *key, const char *val)
{
	assert_true(x->n < 40);
	set_key(&x->kv[x->n], key);
	x->kv[x->n++].value = dup_string(val);
}

/*
 * Reads a vector file: the handshake examples (frames false: blocks of key=value lines,
 * each block starting with protocol=), or the record file's "frame" lines (frames true:
 * one vector a line, "frame" then name=value fields).
 */
static size_t load_vectors(const char *path, bool frames, struct vector *v, size_t max)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	static char line[8192];
	size_t n = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		char *eq = strchr(line, '=');
		if (!frames) {
			if (line[0] == '#' || eq == NULL) {
				continue;
			}
			*eq = '\0';
			if (strcmp(line, "protocol") == 0) {
				assert_true(n < max);
				v[n++].n = 0;
			}
			assert_true(n > 0);
			vector_add(&v[n - 1], line, eq + 1);
			continue;
		}
		if (!starts_with(line, "frame ")) {
			continue;
		}
		assert_true(n < max);
		struct vector *x = &v[n++];
		x->n = 0;
		for (char *tok = strtok(line + 6, " "); tok != NULL; tok = strtok(NULL, " ")) {
			eq = strchr(tok, '=');
			assert_non_null(eq);
			*eq = '\0';
			vector_add(x, tok, eq + 1);
		}
	}
	fclose(f);
	return n;
}

static void free_vectors(struct vector *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < v[i].n; k++) {
			free(v[i].kv[k].value);
		}
	}
}

static const char *get(const struct vector *v, const char *key)
{
	for (size_t k = 0; k < v->n; k++) {
		if (strcmp(v->kv[k].key, key) == 0) {
			return v->kv[k].value;
		}
	}
	return NULL;
}

static size_t get_hex(const struct vector *v, const char *key, uint8_t *out, size_t cap)
{
	const char *h = get(v, key);
	assert_non_null(h);
	long n = testlib_unhex(h, out, cap);
	assert_true(n >= 0);
	return (size_t)n;
}

static void assert_entry_equals(const struct entry *e, const uint8_t *want, size_t want_len)
{
	if (e->len != want_len || memcmp(e->data, want, want_len) != 0) {
		fail_msg("PROTOCOL.md: \"%s\" shows %zu bytes, %zu expected%s", e->label, e->len,
			 want_len, e->len == want_len ? " (the bytes differ)" : "");
	}
}

/* ---- Part I ---- */

/* Section 2: the four counters shown are those of section 2's rule. */
static void protocol_doc_counter_examples_follow_the_rule(void **state)
{
	(void)state;
	static struct block b;
	parse_block(next_block(find_line(0, "The 12-byte **counter** of frame i is")), &b);
	assert_int_equal(b.n, 4);
	for (size_t k = 0; k < b.n; k++) {
		char side[16];
		unsigned long index;
		assert_int_equal(sscanf(b.e[k].label, "%15[a-z]'s frame %lu:", side, &index), 2);
		uint8_t want[12] = {0};
		for (unsigned i = 0; i < 8; i++) {
			want[i] = (uint8_t)(index >> (8 * i));
		}
		want[11] = strcmp(side, "server") == 0 ? 0x80 : 0x00;
		assert_entry_equals(&b.e[k], want, sizeof(want));
	}
}

/* Section 4's conversion between LENGTH units and whole frames, against the record
 * layer's own limits. */
static void protocol_doc_limit_units_match_the_record_layer(void **state)
{
	(void)state;
	char text[2048];
	paragraph(find_line(0, "- **Units.**"), text, sizeof(text));
	const char *p = strstr(text, "A receive limit of");
	assert_non_null(p);
	size_t recv, frame1, pt1, send, len2, pt2, recv3, recv4, plus, frame3;
	assert_int_equal(
	    sscanf(p,
		   "A receive limit of %zu accepts frames of up to %zu bytes (%zu "
		   "bytes of plaintext); a max send frame of %zu gives LENGTH up to "
		   "%zu (%zu bytes of plaintext). So a sender whose peer announced a "
		   "receive limit of %zu seals frames of at most %zu + %zu = %zu bytes",
		   &recv, &frame1, &pt1, &send, &len2, &pt2, &recv3, &recv4, &plus, &frame3),
	    10);
	uint8_t key[44] = {0};
	struct hush_record *r;
	assert_int_equal(
	    hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 44, HUSH_SIDE_CLIENT), 0);
	assert_int_equal(hush_record_set_limits(r, send, recv), 0);
	assert_int_equal(hush_record_max_frame(r), frame1);
	assert_int_equal(frame1 - HUSH_RECORD_OVERHEAD, pt1);
	assert_int_equal(hush_record_max_payload(r), pt2);
	assert_int_equal(send - HUSH_RECORD_LENGTH_SIZE, len2);
	/* A frame whose LENGTH is the limit is accepted, one more byte is not. */
	uint8_t hdr[8] = {0, 0, 0, 0, 6, 0, 0, 0};
	size_t need = 0;
	hdr[0] = (uint8_t)recv;
	hdr[1] = (uint8_t)(recv >> 8);
	hdr[2] = (uint8_t)(recv >> 16);
	assert_int_equal(hush_record_parse(r, hdr, sizeof(hdr), &need), HUSH_EAGAIN);
	assert_int_equal(need, frame1);
	hush_record_free(r);
	assert_int_equal(
	    hush_record_new(&r, HUSH_RP_ALTS_AES128_GCM_REKEY, key, 44, HUSH_SIDE_CLIENT), 0);
	assert_int_equal(hush_record_set_limits(r, send, recv), 0);
	hdr[0] = (uint8_t)(recv + 1);
	assert_int_equal(hush_record_parse(r, hdr, sizeof(hdr), &need), HUSH_EFRAME_LONG);
	hush_record_free(r);

	/* The handshake: an end whose peer announced that receive limit seals frames of
	 * at most limit + 4 bytes (NNpsk0: the PSK is the only input needed). */
	assert_int_equal(recv3, recv);
	assert_int_equal(recv4, recv);
	assert_int_equal(plus, HUSH_RECORD_LENGTH_SIZE);
	uint8_t psk[32] = {1};
	struct hush_handshake_config ci, cr;
	hush_handshake_config_init(&ci);
	ci.protocol = HUSH_NOISE_NNPSK0_25519_AESGCM_SHA256;
	ci.psk = psk;
	ci.max_send_frame = HUSH_RECORD_MAX_RECV_LIMIT;
	cr = ci;
	cr.recv_limit = recv3;
	struct hush_handshake *i, *rs;
	assert_int_equal(hush_handshake_new(&i, &ci, HUSH_SIDE_CLIENT), 0);
	assert_int_equal(hush_handshake_new(&rs, &cr, HUSH_SIDE_SERVER), 0);
	uint8_t buf[HUSH_HANDSHAKE_MAX_OUTPUT];
	size_t n, used;
	assert_int_equal(hush_handshake_next(i, buf, sizeof(buf), &n), 0);
	assert_int_equal(hush_handshake_read(rs, buf, n, &used), 0);
	assert_int_equal(hush_handshake_next(rs, buf, sizeof(buf), &n), 0);
	assert_int_equal(hush_handshake_read(i, buf, n, &used), 0);
	struct hush_handshake_result res;
	assert_int_equal(hush_handshake_result(i, &res), 0);
	assert_int_equal(res.max_send_frame, frame3);
	hush_handshake_result_wipe(&res);
	hush_handshake_free(i);
	hush_handshake_free(rs);
}

/* Section 6: the headings name the protocol, side, frame and plaintext of the frame
 * lines of the record vectors; each step is recomputed here from section 3.2/3.3, and
 * the frame is sealed again by hush. */
static void protocol_doc_record_examples_match_vectors_and_code(void **state)
{
	(void)state;
	static struct vector v[8];
	size_t nv = load_vectors(RECORD_VECTORS, true, v, 8);
	static const char *const marks[] = {"**A. ", "**B. ", "**C. "};
	assert_int_equal(nv, 3);
	size_t at = find_line(0, "## 6. Worked examples");
	for (size_t k = 0; k < 3; k++) {
		size_t h = find_line(at, marks[k]);
		char text[1024], rp_name[64], pt_text[64];
		paragraph(h, text, sizeof(text));
		backticked(text, 0, rp_name, sizeof(rp_name));
		assert_string_equal(rp_name, get(&v[k], "rp"));
		const char *side = strstr(text, "client's") != NULL ? "client" : "server";
		assert_non_null(strstr(text, side));
		assert_string_equal(side, get(&v[k], "side"));
		const char *fp = strstr(text, "frame ");
		assert_non_null(fp);
		assert_int_equal(strtoul(fp + 6, NULL, 10), strtoul(get(&v[k], "index"), NULL, 10));
		const char *pp = strstr(text, "plaintext `");
		assert_non_null(pp);
		backticked(pp, 0, pt_text, sizeof(pt_text));
		uint8_t key[44], pt[64], frame[128];
		size_t key_len = get_hex(&v[k], "key", key, sizeof(key));
		size_t pt_len = get_hex(&v[k], "pt", pt, sizeof(pt));
		size_t frame_len = get_hex(&v[k], "frame", frame, sizeof(frame));
		assert_int_equal(strlen(pt_text), pt_len);
		assert_memory_equal(pt_text, pt, pt_len);
		/* The plaintext's hex, where the heading gives it. */
		const char *hp = strstr(pp + 1, "(`");
		if (hp != NULL) {
			char hex[160];
			uint8_t b[64];
			backticked(hp, 0, hex, sizeof(hex));
			assert_int_equal(testlib_unhex(hex, b, sizeof(b)), (long)pt_len);
			assert_memory_equal(b, pt, pt_len);
		}
		assert_int_equal(key_len, 44);
		static struct block b;
		parse_block(next_block(h), &b);
		enum hush_record_protocol rp;
		assert_int_equal(hush_record_protocol_from_name(rp_name, &rp), 0);
		uint64_t idx = strtoull(get(&v[k], "index"), NULL, 10);
		uint8_t kdf_counter[6], input[7], counter[12] = {0}, nonce[12];
		for (unsigned i = 0; i < 6; i++) {
			kdf_counter[i] = (uint8_t)((idx >> 16) >> (8 * i));
		}
		memcpy(input, kdf_counter, 6);
		input[6] = 0x01;
		for (unsigned i = 0; i < 8; i++) {
			counter[i] = (uint8_t)(idx >> (8 * i));
		}
		counter[11] = strcmp(side, "server") == 0 ? 0x80 : 0x00;
		for (unsigned i = 0; i < 12; i++) {
			nonce[i] = counter[i] ^ key[32 + i];
		}
		uint8_t mac[32];
		unsigned mac_len = 0;
		assert_non_null(HMAC(EVP_sha256(), key, 32, input, sizeof(input), mac, &mac_len));
		size_t aead_key_len = rp == HUSH_RP_CHACHA20_POLY1305_REKEY ? 32 : 16;
		assert_entry_equals(entry_labelled(&b, "kdf_counter"), kdf_counter, 6);
		assert_entry_equals(entry_labelled(&b, "HMAC input"), input, 7);
		assert_entry_equals(entry_labelled(&b, "aead key"), mac, aead_key_len);
		assert_entry_equals(entry_labelled(&b, "counter"), counter, 12);
		assert_entry_equals(entry_labelled(&b, "nonce"), nonce, 12);
		assert_entry_equals(entry_labelled(&b, "frame"), frame, frame_len);
		/* hush seals the same frame. */
		struct hush_record *r;
		assert_int_equal(hush_record_new(&r, rp, key, key_len,
						 counter[11] ? HUSH_SIDE_SERVER : HUSH_SIDE_CLIENT),
				 0);
		hush__record_set_counters(r, idx, 0);
		uint8_t out[128];
		size_t out_len = 0;
		memcpy(out + HUSH_RECORD_HEADER_SIZE, pt, pt_len);
		assert_int_equal(hush_record_seal(r, out, sizeof(out), pt_len, &out_len), 0);
		assert_int_equal(out_len, frame_len);
		assert_memory_equal(out, frame, frame_len);
		hush_record_free(r);
		at = b.end;
	}
	free_vectors(v, nv);
}

/* ---- Part II ---- */

/* The hex block opening at line open shows exactly want; returns it, parsed. */
static const struct block *expect_block(size_t open, const uint8_t *want, size_t want_len)
{
	static struct block b;
	parse_block(open, &b);
	uint8_t got[MAX_DATA];
	size_t got_len = block_data(&b, got, sizeof(got));
	assert_int_equal(got_len, want_len);
	assert_memory_equal(got, want, want_len);
	return &b;
}

/* Section 10: the prologue shown is hush's, and its stated length is the name's. */
static void protocol_doc_prologue_example_matches_code(void **state)
{
	(void)state;
	size_t h = find_line(find_line(0, "## 10. Hello and prologue"), "characters):");
	char name[64];
	backticked(lines[h], 0, name, sizeof(name));
	unsigned dec = 0, hex = 0;
	const char *p = strstr(lines[h], "` (");
	assert_non_null(p);
	assert_int_equal(sscanf(p, "` (%u = 0x%x characters):", &dec, &hex), 2);
	assert_int_equal(dec, strlen(name));
	assert_int_equal(hex, strlen(name));
	enum hush_noise_protocol np;
	assert_int_equal(hush_noise_protocol_from_name(name, &np), 0);
	uint8_t want[HUSH_HS_PROLOGUE_MAX];
	size_t want_len = hush__handshake_prologue(np, want);
	expect_block(next_block(h), want, want_len);
}

/* The rows of a parameter block shown one entry a line (section 12): the version, then
 * type, len and value, len being the value's size; a comment "(N bytes)" gives it too,
 * and a one-word comment on a name entry is the name. */
static void check_block_rows(const struct block *b)
{
	assert_true(b->n_rows >= 4);
	assert_int_equal(b->row[0].len, 1);
	for (size_t k = 1; k < b->n_rows; k++) {
		const struct entry *r = &b->row[k];
		assert_true(r->len >= 2);
		assert_int_equal(r->data[1], r->len - 2);
		if (strstr(r->comment, " bytes)") != NULL) {
			assert_int_equal(number_before(r->comment, " bytes)"), r->len - 2);
		}
		bool is_name = r->data[0] == HUSH_PARAM_RECORD_PROTOCOL ||
			       r->data[0] == HUSH_PARAM_APP_PROTOCOL;
		if (is_name && r->comment[0] != '\0' && strchr(r->comment, ' ') == NULL) {
			assert_int_equal(strlen(r->comment), r->len - 2);
			assert_memory_equal(r->comment, r->data + 2, r->len - 2);
		}
	}
}

/* Section 12: the example block is what hush sends with its defaults for an AESGCM
 * handshake, with the length stated, and each entry's len byte and "(N bytes)". */
static void protocol_doc_parameter_block_example_matches_code(void **state)
{
	(void)state;
	size_t h = find_line(0, "Example: hush's defaults for an `AESGCM` handshake");
	char text[1024], rp_name[64];
	paragraph(h, text, sizeof(text));
	backticked(text, 1, rp_name, sizeof(rp_name));
	size_t stated = number_before(text, " bytes:");
	struct hush_handshake_config c;
	hush_handshake_config_init(&c);
	assert_int_equal(c.protocol, HUSH_NOISE_XX_25519_AESGCM_SHA256);
	struct hush__params p;
	memset(&p, 0, sizeof(p));
	p.record_protocol = hush_noise_default_record_protocol(c.protocol);
	assert_string_equal(rp_name, hush_record_protocol_name(p.record_protocol));
	p.recv_limit = (uint32_t)c.recv_limit;
	p.max_send_frame = (uint32_t)c.max_send_frame;
	assert_null(c.app_protocol);
	uint8_t want[HUSH_PARAMS_MAX];
	size_t want_len = hush__params_encode(&p, want);
	assert_int_equal(stated, want_len);
	check_block_rows(expect_block(next_block(h), want, want_len));
}

/* Section 13: the info's label length, and the example info for the default. */
static void protocol_doc_key_info_example_matches_code(void **state)
{
	(void)state;
	size_t s13 = find_line(0, "## 13. Record keys");
	size_t l = find_line(s13, "bytes (note the final");
	assert_int_equal(number_before(lines[l], " bytes (note the final"),
			 strlen(HUSH_HS_KEY_LABEL));
	char text[1024], name[64], a[128], b[128];
	paragraph(find_line(s13, "the info is the"), text, sizeof(text));
	/* "For `NAME` the info is the N bytes `HEX` ‖ `HEX`." */
	const char *p = strstr(text, "For `");
	assert_non_null(p);
	backticked(p, 0, name, sizeof(name));
	size_t stated = number_before(text, " bytes `");
	const char *q = strstr(text, " bytes `");
	backticked(q, 0, a, sizeof(a));
	backticked(q, 1, b, sizeof(b));
	uint8_t got[128];
	long na = testlib_unhex(a, got, sizeof(got));
	assert_true(na > 0);
	long nb = testlib_unhex(b, got + na, sizeof(got) - (size_t)na);
	assert_true(nb > 0);
	char want[128];
	snprintf(want, sizeof(want), "%s%s", HUSH_HS_KEY_LABEL, name);
	assert_int_equal(stated, strlen(want));
	assert_int_equal((size_t)(na + nb), strlen(want));
	assert_memory_equal(got, want, strlen(want));
	assert_int_equal((size_t)na, strlen(HUSH_HS_KEY_LABEL));
}

/* Section 17: the inputs shown are the vectors file's. */
static void protocol_doc_example_inputs_match_vectors_file(void **state)
{
	(void)state;
	static struct vector v[8];
	size_t nv = load_vectors(HS_VECTORS, false, v, 8);
	assert_true(nv >= 2);
	static struct block b;
	parse_block(next_block(find_line(find_line(0, "## 17. Worked examples"), "The inputs are")),
		    &b);
	static const char *const keys[] = {"init_static",    "init_static_public",
					   "resp_static",    "resp_static_public",
					   "init_ephemeral", "resp_ephemeral"};
	assert_int_equal(b.n, 7);
	for (size_t k = 0; k < 6; k++) {
		uint8_t want[32];
		assert_int_equal(get_hex(&v[0], keys[k], want, sizeof(want)), 32);
		assert_entry_equals(&b.e[k], want, 32);
	}
	uint8_t psk[32];
	assert_int_equal(get_hex(&v[1], "psk", psk, sizeof(psk)), 32);
	assert_entry_equals(&b.e[6], psk, 32);
	free_vectors(v, nv);
}

/* The lengths of the messages in a flight, from their 2-byte prefixes. */
static size_t message_lengths(const uint8_t *f, size_t len, size_t *out, size_t max)
{
	size_t n = 0;
	for (size_t off = 0; off + 2 <= len;) {
		size_t l = (size_t)f[off] << 8 | f[off + 1];
		assert_true(n < max && off + 2 + l <= len);
		out[n++] = l;
		off += 2 + l;
	}
	return n;
}

/* "N + 16" in s: N is the length of something encrypted with a tag: a static key (32)
 * or the example's parameter block. */
static void check_plus_tag(const char *s, size_t params_len)
{
	for (const char *p = strstr(s, " + 16"); p != NULL; p = strstr(p + 1, " + 16")) {
		const char *q = p;
		while (q > s && isdigit((unsigned char)q[-1])) {
			q--;
		}
		if (q == p) {
			continue;
		}
		size_t n = strtoul(q, NULL, 10);
		if (n != 32 && n != params_len) {
			fail_msg(
			    "PROTOCOL.md: \"%zu + 16\" is neither a static key nor the %zu-byte "
			    "parameter block",
			    n, params_len);
		}
	}
}

/* One example of section 17 (vector x), from its heading to the next heading. */
static void check_handshake_example(size_t from, size_t to, const struct vector *x,
				    size_t msg1_of_first, size_t *msg1)
{
	char heading_name[64], rp_name[64], text[2048];
	backticked(lines[from], 0, heading_name, sizeof(heading_name));
	assert_string_equal(heading_name, get(x, "protocol"));
	size_t first = find_line(from, "Both ends:");
	paragraph(first, text, sizeof(text));
	backticked(strstr(text, "record protocol `"), 0, rp_name, sizeof(rp_name));
	assert_string_equal(rp_name, get(x, "record_protocol"));
	/* "receive limit N, max send frame N" as in the vectors. */
	const char *rl = strstr(text, "receive limit ");
	const char *ms = strstr(text, "max send frame ");
	assert_non_null(rl);
	assert_non_null(ms);
	assert_int_equal(strtoul(rl + 14, NULL, 10), strtoul(get(x, "recv_limit"), NULL, 10));
	assert_int_equal(strtoul(ms + 15, NULL, 10), strtoul(get(x, "max_send_frame"), NULL, 10));
	enum hush_noise_protocol np;
	enum hush_record_protocol rp;
	assert_int_equal(hush_noise_protocol_from_name(heading_name, &np), 0);
	assert_int_equal(hush_record_protocol_from_name(rp_name, &rp), 0);
	/* "hush's defaults" and "the default after ..." are what the code does. */
	if (strstr(lines[from], "hush's defaults") != NULL || strstr(text, "the default") != NULL) {
		assert_int_equal(hush_noise_default_record_protocol(np), rp);
	}
	if (strstr(lines[from], "hush's defaults") != NULL) {
		struct hush_handshake_config c;
		hush_handshake_config_init(&c);
		assert_int_equal(c.protocol, np);
		assert_int_equal(c.recv_limit, strtoul(get(x, "recv_limit"), NULL, 10));
		assert_int_equal(c.max_send_frame, strtoul(get(x, "max_send_frame"), NULL, 10));
		assert_null(get(x, "app_protocol"));
	}
	if (strstr(text, "never a default") != NULL) {
		assert_int_not_equal(hush_noise_default_record_protocol(np), rp);
	}

	uint8_t params[600], flight[4][MAX_DATA], hash[32], k1[32], k2[32], key[44];
	size_t params_len = get_hex(x, "init_params", params, sizeof(params));
	uint8_t resp[600];
	assert_int_equal(get_hex(x, "resp_params", resp, sizeof(resp)), params_len);
	assert_memory_equal(resp, params, params_len);
	size_t flight_len[4] = {0};
	unsigned nflights = 0;
	for (unsigned f = 1; f <= 4; f++) {
		char k[16];
		snprintf(k, sizeof(k), "flight_%u", f);
		if (get(x, k) != NULL) {
			flight_len[f - 1] = get_hex(x, k, flight[f - 1], MAX_DATA);
			nflights = f;
		}
	}
	get_hex(x, "handshake_hash", hash, sizeof(hash));
	get_hex(x, "split_k1", k1, sizeof(k1));
	get_hex(x, "split_k2", k2, sizeof(k2));
	size_t key_len = get_hex(x, "record_key", key, sizeof(key));
	size_t lens[4];
	assert_int_equal(message_lengths(flight[0], flight_len[0], lens, 4), 2);
	*msg1 = lens[1];
	unsigned flights_seen = 0, outcome_seen = 0;

	enum { NONE, FLIGHT, BLOCK } ctx = NONE;
	unsigned ctx_flight = 0;
	for (size_t i = from + 1; i < to; i++) {
		const char *l = lines[i];
		if (!starts_with(l, "```")) {
			check_plus_tag(l, params_len);
			if (strstr(l, "-byte block") != NULL) {
				assert_int_equal(number_before(l, "-byte block"), params_len);
			}
			if (strstr(l, " bytes more than in example 1") != NULL) {
				assert_int_equal(number_before(l, " bytes more than in example 1"),
						 *msg1 - msg1_of_first);
			}
			if (starts_with(l, "Flight ")) {
				ctx = FLIGHT;
				ctx_flight = (unsigned)strtoul(l + 7, NULL, 10);
				assert_true(ctx_flight >= 1 && ctx_flight <= nflights);
				size_t stated = number_before(l, " bytes)");
				if (stated != flight_len[ctx_flight - 1]) {
					fail_msg(
					    "PROTOCOL.md line %zu: flight %u is %zu bytes, not "
					    "%zu",
					    i + 1, ctx_flight, flight_len[ctx_flight - 1], stated);
				}
			} else if (starts_with(l, "Block (")) {
				ctx = BLOCK;
				assert_int_equal(number_before(l, " bytes):"), params_len);
			}
			continue;
		}
		static struct block b;
		parse_block(i, &b);
		uint8_t all[4 * MAX_DATA];
		size_t all_len = block_data(&b, all, sizeof(all));
		if (ctx == FLIGHT) {
			assert_int_equal(all_len, flight_len[ctx_flight - 1]);
			assert_memory_equal(all, flight[ctx_flight - 1], all_len);
			flights_seen |= 1u << ctx_flight;
			/* "L = N" comments give the messages' lengths in order. */
			size_t want[4], nl = message_lengths(all, all_len, want, 4), k = 0;
			for (size_t e = 0; e < b.n; e++) {
				for (const char *c = strstr(b.e[e].comment, "L = "); c != NULL;
				     c = strstr(c + 1, "L = ")) {
					assert_true(k < nl);
					assert_int_equal(strtoul(c + 4, NULL, 10), want[k++]);
				}
			}
			for (size_t e = 0; e < b.n; e++) {
				check_plus_tag(b.e[e].comment, params_len);
			}
		} else if (ctx == BLOCK) {
			assert_int_equal(all_len, params_len);
			assert_memory_equal(all, params, params_len);
			check_block_rows(&b);
		} else {
			for (size_t e = 0; e < b.n; e++) {
				const struct entry *en = &b.e[e];
				const char *last = strrchr(en->label, ' ');
				last = last != NULL ? last + 1 : en->label;
				unsigned f;
				if (sscanf(en->label, "flight %u", &f) == 1) {
					assert_true(f >= 1 && f <= nflights);
					assert_entry_equals(en, flight[f - 1], flight_len[f - 1]);
					flights_seen |= 1u << f;
				} else if (strcmp(last, "h") == 0) {
					assert_entry_equals(en, hash, 32);
					outcome_seen |= 1;
				} else if (strcmp(last, "k1") == 0) {
					assert_entry_equals(en, k1, 32);
					outcome_seen |= 2;
				} else if (strcmp(last, "k2") == 0) {
					assert_entry_equals(en, k2, 32);
					outcome_seen |= 4;
				} else if (strcmp(last, "K") == 0) {
					assert_entry_equals(en, key, key_len);
					outcome_seen |= 8;
				} else {
					fail_msg("PROTOCOL.md: unknown label \"%s\" in example %s",
						 en->label, heading_name);
				}
			}
		}
		ctx = NONE;
		i = b.end;
	}
	/* Every flight and every outcome of the example is shown and was checked. */
	assert_int_equal(flights_seen, ((1u << (nflights + 1)) - 1) & ~1u);
	assert_int_equal(outcome_seen, 15);
}

/* Section 17: every flight, size, length prefix, hash and key of the three examples is
 * the vectors file's, and the records each example names follow section 8's rule or
 * say why not. */
static void protocol_doc_handshake_examples_match_vectors_file(void **state)
{
	(void)state;
	static struct vector v[8];
	size_t nv = load_vectors(HS_VECTORS, false, v, 8);
	size_t s17 = find_line(0, "## 17. Worked examples");
	size_t msg1_first = 0;
	for (size_t k = 0; k < nv; k++) {
		char mark[48];
		snprintf(mark, sizeof(mark), "### Example %zu:", k + 1);
		size_t from = find_line(s17, mark);
		size_t to = from + 1;
		while (to < n_lines && !starts_with(lines[to], "### ") &&
		       !starts_with(lines[to], "## ") && !starts_with(lines[to], "# ")) {
			to++;
		}
		size_t msg1 = 0;
		check_handshake_example(from, to, &v[k], msg1_first, &msg1);
		if (k == 0) {
			msg1_first = msg1;
		}
	}
	/* No example in the document that the vectors file lacks. */
	char mark[48];
	snprintf(mark, sizeof(mark), "### Example %zu:", nv + 1);
	for (size_t i = s17; i < n_lines; i++) {
		assert_null(strstr(lines[i], mark));
	}
	free_vectors(v, nv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(protocol_doc_counter_examples_follow_the_rule),
	    cmocka_unit_test(protocol_doc_limit_units_match_the_record_layer),
	    cmocka_unit_test(protocol_doc_record_examples_match_vectors_and_code),
	    cmocka_unit_test(protocol_doc_prologue_example_matches_code),
	    cmocka_unit_test(protocol_doc_parameter_block_example_matches_code),
	    cmocka_unit_test(protocol_doc_key_info_example_matches_code),
	    cmocka_unit_test(protocol_doc_example_inputs_match_vectors_file),
	    cmocka_unit_test(protocol_doc_handshake_examples_match_vectors_file),
	};
	return cmocka_run_group_tests(tests, load_doc, free_doc);
}
