/* Tests for the error table, version and allocator hook (src/common). */
#include <string.h>

#include "testlib.h"
#include "common/common-internal.h"

static void strerror_every_code_has_distinct_message_and_name(void **state)
{
	(void)state;
	static const int codes[] = {
#define CODE(name, value, msg) HUSH_##name,
		HUSH_ERRNO_MAP(CODE)
#undef CODE
	};
	for (size_t i = 0; i < HUSH_ARRAY_SIZE(codes); i++) {
		assert_true(codes[i] < 0);
		assert_string_not_equal(hush_strerror(codes[i]), "unknown error");
		assert_string_not_equal(hush_err_name(codes[i]), "UNKNOWN");
		for (size_t j = 0; j < i; j++) {
			assert_int_not_equal(codes[i], codes[j]);
			assert_string_not_equal(hush_err_name(codes[i]), hush_err_name(codes[j]));
		}
	}
}

static void strerror_known_values_match_table(void **state)
{
	(void)state;
	assert_string_equal(hush_err_name(HUSH_EAUTH), "EAUTH");
	assert_string_equal(hush_err_name(0), "OK");
	assert_string_equal(hush_strerror(0), "success");
	assert_string_equal(hush_strerror(HUSH_ENOMEM), "out of memory");
}

static void strerror_unknown_code_is_reported_as_unknown(void **state)
{
	(void)state;
	assert_string_equal(hush_strerror(-9999), "unknown error");
	assert_string_equal(hush_err_name(12345), "UNKNOWN");
}

static void version_matches_macros(void **state)
{
	(void)state;
	assert_string_equal(hush_version(), HUSH_VERSION_STRING);
	assert_int_equal(hush_version_number(), HUSH_VERSION_NUMBER);
	assert_int_equal(HUSH_VERSION_NUMBER >> 16, HUSH_VERSION_MAJOR);
}

static void allocator_hook_sees_every_call_and_can_fail(void **state)
{
	(void)state;
	struct testlib_alloc_stats st;
	testlib_alloc_install();
	void *a = hush__alloc(100);
	assert_non_null(a);
	testlib_alloc_fail_at(1);
	assert_null(hush__alloc(10));
	void *b = hush__calloc(32);
	assert_non_null(b);
	assert_int_equal(((uint8_t *)b)[31], 0);
	testlib_alloc_get(&st);
	assert_int_equal(st.calls, 3);
	assert_int_equal(st.live, 2);
	assert_int_equal(st.live_bytes, 132);
	hush__free(a, 100);
	hush__free_secret(b, 32);
	hush__free(NULL, 5);
	testlib_alloc_get(&st);
	assert_int_equal(st.live, 0);
	assert_int_equal(st.frees, 2);
	testlib_alloc_uninstall();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(strerror_every_code_has_distinct_message_and_name),
		cmocka_unit_test(strerror_known_values_match_table),
		cmocka_unit_test(strerror_unknown_code_is_reported_as_unknown),
		cmocka_unit_test(version_matches_macros),
		cmocka_unit_test(allocator_hook_sees_every_call_and_can_fail),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
