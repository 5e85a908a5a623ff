#include <hush/common.h>

const char *hush_version(void)
{
	return HUSH_VERSION_STRING;
}

unsigned hush_version_number(void)
{
	return HUSH_VERSION_NUMBER;
}
