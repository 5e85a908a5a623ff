/*
 * hush-bench --plot: the SVG chart of IdleConnMemory, heap against idle connections per
 * variant, drawn from the final results.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "hush-bench.h"

/* ------------------------------------------------------------------------------------ */
/* The SVG chart of IdleConnMemory                                                      */
/* ------------------------------------------------------------------------------------ */

#define PLOT_MAX_SERIES 8
#define PLOT_MAX_POINTS 8

struct series {
	char name[48];
	size_t n;
	double x[PLOT_MAX_POINTS]; /* connections */
	double y[PLOT_MAX_POINTS]; /* heap bytes, the larger side */
	double per_conn;	   /* B/conn at the largest N */
};

/* An axis from 0 to *top in *ticks steps of 1, 2 or 5 times a power of ten, *top >= v. */
static void nice_axis(double v, double *top, int *ticks)
{
	if (v <= 0) {
		*top = 1;
		*ticks = 1;
		return;
	}
	double raw = v / 5, p = pow(10, floor(log10(raw)));
	static const double steps[] = {1, 2, 5, 10};
	double step = 10 * p;
	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		if (steps[i] * p >= raw * (1 - 1e-9)) {
			step = steps[i] * p;
			break;
		}
	}
	*ticks = (int)ceil(v / step - 1e-9);
	*top = step * *ticks;
}

int plot_write(const char *path)
{
	static const char *colors[PLOT_MAX_SERIES] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a",
						      "#66a61e", "#e6ab02", "#a6761d", "#666666"};
	struct series s[PLOT_MAX_SERIES];
	size_t ns = 0;
	double xmax = 0, ymax = 0;

	for (size_t i = 0; i < final_results.n; i++) {
		const struct result *r = &final_results.v[i];
		const char *prefix = "IdleConnMemory/";
		if (strncmp(r->name, prefix, strlen(prefix)) != 0) {
			continue;
		}
		const char *var = r->name + strlen(prefix);
		const char *slash = strstr(var, "/N=");
		if (slash == NULL || r->nm == 0 || strcmp(r->m[0].unit, "B/conn") != 0) {
			continue;
		}
		size_t vl = (size_t)(slash - var);
		size_t k;
		for (k = 0; k < ns; k++) {
			if (strlen(s[k].name) == vl && strncmp(s[k].name, var, vl) == 0) {
				break;
			}
		}
		if (k == ns) {
			if (ns == PLOT_MAX_SERIES) {
				continue;
			}
			memset(&s[ns], 0, sizeof(s[ns]));
			snprintf(s[ns].name, sizeof(s[ns].name), "%.*s", (int)vl, var);
			ns++;
		}
		if (s[k].n == PLOT_MAX_POINTS) {
			continue;
		}
		double n = atof(slash + 3);
		s[k].x[s[k].n] = n;
		s[k].y[s[k].n] = r->m[0].value * n;
		s[k].per_conn = r->m[0].value;
		xmax = n > xmax ? n : xmax;
		ymax = s[k].y[s[k].n] > ymax ? s[k].y[s[k].n] : ymax;
		s[k].n++;
	}
	if (ns == 0) {
		fprintf(stderr, "hush-bench: --plot: no IdleConnMemory results to draw\n");
		return -1;
	}
	FILE *f = fopen(path, "w");
	if (f == NULL) {
		fprintf(stderr, "hush-bench: --plot: %s: %s\n", path, strerror(errno));
		return -1;
	}
	const double W = 940, H = 500, L = 80, R = 560, T = 74, B = 440;
	int xticks, yticks;
	double ymb;
	nice_axis(xmax, &xmax, &xticks);
	nice_axis(ymax / 1e6, &ymb, &yticks);
	fprintf(f,
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		"viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
		W, H, W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f,
		"<text x=\"%.0f\" y=\"24\" font-size=\"15\" font-weight=\"bold\">Heap held by idle "
		"connections (larger of server and client side)</text>\n",
		L);
	char cpu[200];
	cpu_model(cpu, sizeof(cpu));
	fprintf(f,
		"<text x=\"%.0f\" y=\"42\" fill=\"#555\">measured by hush-bench%s: heap counted "
		"by the allocator hooks of hush, OpenSSL and libevent</text>\n",
		L, opt.quick ? " --quick" : "");
	fprintf(f,
		"<text x=\"%.0f\" y=\"58\" fill=\"#555\">%s, libevent %s, %s, %ld cores</text>\n",
		L, OpenSSL_version(OPENSSL_VERSION), event_get_version(), cpu,
		sysconf(_SC_NPROCESSORS_ONLN));
	for (int i = 0; i <= xticks; i++) {
		double px = L + (R - L) * i / xticks;
		fprintf(f,
			"<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>\n",
			px, T, px, B);
		fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n", px,
			B + 18, xmax * i / xticks);
	}
	for (int i = 0; i <= yticks; i++) {
		double py = B - (B - T) * i / yticks;
		fprintf(f,
			"<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
			L, py, R, py);
		fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6,
			py + 4, ymb * i / yticks);
	}
	fprintf(f,
		"<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
		"stroke=\"#333\"/>\n",
		L, T, R - L, B - T);
	fprintf(f,
		"<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">idle established "
		"connections</text>\n",
		(L + R) / 2, B + 40);
	fprintf(f,
		"<text transform=\"translate(22 %.0f) rotate(-90)\" text-anchor=\"middle\">heap "
		"(MB)</text>\n",
		(T + B) / 2);
	for (size_t k = 0; k < ns; k++) {
		const char *c = colors[k];
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
		for (size_t i = 0; i < s[k].n; i++) {
			fprintf(f, "%s%.1f,%.1f", i ? " " : "", L + (R - L) * s[k].x[i] / xmax,
				B - (B - T) * (s[k].y[i] / 1e6) / ymb);
		}
		fprintf(f, "\"/>\n");
		for (size_t i = 0; i < s[k].n; i++) {
			fprintf(f,
				"<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s: "
				"%.0f connections, %.2f MB</title></circle>\n",
				L + (R - L) * s[k].x[i] / xmax,
				B - (B - T) * (s[k].y[i] / 1e6) / ymb, c, s[k].name, s[k].x[i],
				s[k].y[i] / 1e6);
		}
		double ly = T + 10 + 22 * (double)k;
		fprintf(f,
			"<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
			"stroke-width=\"3\"/>\n",
			R + 20, ly, R + 44, ly, c);
		fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">%s: %.0f B/conn at N=%.0f</text>\n", R + 52,
			ly + 4, s[k].name, s[k].per_conn, s[k].x[s[k].n - 1]);
	}
	fprintf(f, "</svg>\n");
	if (fclose(f) != 0) {
		fprintf(stderr, "hush-bench: --plot: %s: write failed\n", path);
		return -1;
	}
	return 0;
}
