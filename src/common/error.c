/* Error names and messages, generated from the one table in hush/common.h. */
#include <stddef.h>

#include <hush/common.h>

struct err_entry {
	int code;
	const char *name;
	const char *msg;
};

static const struct err_entry err_table[] = {{HUSH_OK, "OK", "success"},
#define HUSH_ERRNO_ENTRY(name, value, msg) {HUSH_##name, #name, msg},
					     HUSH_ERRNO_MAP(HUSH_ERRNO_ENTRY)
#undef HUSH_ERRNO_ENTRY
};

/* A linear scan: the table is short and neither function is on a hot path. */
static const struct err_entry *err_find(int err)
{
	for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
		if (err_table[i].code == err)
			return &err_table[i];
	return NULL;
}

const char *hush_strerror(int err)
{
	const struct err_entry *e = err_find(err);

	return e ? e->msg : "unknown error";
}

const char *hush_err_name(int err)
{
	const struct err_entry *e = err_find(err);

	return e ? e->name : "UNKNOWN";
}
