/* Error names and messages, generated from the one table in hush/common.h. */
#include <hush/common.h>

const char *hush_strerror(int err)
{
	switch (err) {
	case HUSH_OK:
		return "success";
#define HUSH_ERRNO_MSG(name, value, msg) \
	case HUSH_##name:                 \
		return msg;
		HUSH_ERRNO_MAP(HUSH_ERRNO_MSG)
#undef HUSH_ERRNO_MSG
	default:
		return "unknown error";
	}
}

const char *hush_err_name(int err)
{
	switch (err) {
	case HUSH_OK:
		return "OK";
#define HUSH_ERRNO_NAME(name, value, msg) \
	case HUSH_##name:                  \
		return #name;
		HUSH_ERRNO_MAP(HUSH_ERRNO_NAME)
#undef HUSH_ERRNO_NAME
	default:
		return "UNKNOWN";
	}
}
