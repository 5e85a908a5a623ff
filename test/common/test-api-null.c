/*
 * include/hush.h's NULL rule, for every public function: NULL for an object or an
 * argument is never undefined. Frees and calls returning nothing do nothing, calls
 * returning an error code return HUSH_EINVAL, getters return their neutral value.
 */
#include <string.h>

#include <event2/bufferevent.h>

#include <hush.h>

#include "testlib.h"

static void api_null_frees_and_void_calls_do_nothing(void **state)
{
	(void)state;
	hush_buf_ref(NULL);
	hush_buf_release(NULL);
	hush_conn_free(NULL);
	hush_conn_set_arg(NULL, NULL);
	hush_conn_pause_reading(NULL);
	hush_conn_resume_reading(NULL);
	hush_handshake_free(NULL);
	hush_handshake_result_wipe(NULL);
	hush_keypair_free(NULL);
	hush_listener_free(NULL);
	hush_listener_pause(NULL);
	hush_listener_resume(NULL);
	hush_loop_free(NULL);
	hush_peers_free(NULL);
	hush_pool_free(NULL);
	hush_pool_set_available_cb(NULL, NULL, NULL);
	hush_record_free(NULL);
	hush_conn_config_init(NULL);
	hush_handshake_config_init(NULL);
	hush_listener_config_init(NULL);
	hush_pool_config_init(NULL);
	hush_bufferevent_config_init(NULL);
	hush_key_to_base64(NULL, NULL);
	hush_conn_get_stats(NULL, NULL);
	hush_pool_stats(NULL, NULL);
	hush_keypair_public(NULL, NULL);
}

static void api_null_getters_return_neutral_values(void **state)
{
	(void)state;
	assert_null(hush_buf_data(NULL));
	assert_int_equal(hush_buf_capacity(NULL), 0);
	assert_int_equal(hush_conn_buffers_held(NULL), 0);
	assert_int_equal(hush_conn_error(NULL), HUSH_EINVAL);
	assert_int_equal(hush_conn_fd(NULL), -1);
	assert_null(hush_conn_get_arg(NULL));
	assert_null(hush_conn_keep_data(NULL));
	assert_int_equal(hush_conn_queued(NULL), 0);
	assert_false(hush_handshake_done(NULL));
	assert_int_equal(hush_handshake_error(NULL), HUSH_EINVAL);
	assert_false(hush_handshake_wants_read(NULL));
	assert_false(hush_handshake_wants_write(NULL));
	assert_int_equal(hush_listener_handshakes(NULL), 0);
	assert_false(hush_peers_contains(NULL, NULL));
	assert_int_equal(hush_peers_count(NULL), 0);
	assert_null(hush_peers_keys(NULL));
	assert_int_equal(hush_pool_trim(NULL), 0);
	assert_int_equal(hush_record_error(NULL), HUSH_EINVAL);
	assert_int_equal(hush_record_max_frame(NULL), 0);
	assert_int_equal(hush_record_max_payload(NULL), 0);
	assert_int_equal(hush_bufferevent_get_error(NULL), HUSH_EINVAL);

	/* Getters that fill a caller's struct fill it with zeros. */
	struct hush_conn_stats cs;
	memset(&cs, 0xa5, sizeof(cs));
	hush_conn_get_stats(NULL, &cs);
	struct hush_conn_stats zero_cs;
	memset(&zero_cs, 0, sizeof(zero_cs));
	assert_memory_equal(&cs, &zero_cs, sizeof(cs));
	struct hush_pool_stats ps, zero_ps;
	memset(&ps, 0xa5, sizeof(ps));
	memset(&zero_ps, 0, sizeof(zero_ps));
	hush_pool_stats(NULL, &ps);
	assert_memory_equal(&ps, &zero_ps, sizeof(ps));
	uint8_t pub[HUSH_KEY_SIZE], zero_pub[HUSH_KEY_SIZE] = {0};
	memset(pub, 0xa5, sizeof(pub));
	hush_keypair_public(NULL, pub);
	assert_memory_equal(pub, zero_pub, sizeof(pub));
}

static void api_null_fallible_calls_return_einval(void **state)
{
	(void)state;
	size_t n = 0;
	assert_int_equal(hush_bufferevent_config_check(NULL), HUSH_EINVAL);
	assert_int_equal(hush_bufferevent_shutdown(NULL), HUSH_EINVAL);
	assert_int_equal(hush_bufferevent_peer_key(NULL, NULL), HUSH_EINVAL);
	assert_null(hush_bufferevent_socket_new(NULL, -1, NULL, 0));
	assert_null(hush_bufferevent_filter_new(NULL, NULL, 0));
	assert_int_equal(hush_conn_flush(NULL), HUSH_EINVAL);
	assert_int_equal(hush_conn_handshake_result(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_conn_new(NULL, NULL, -1, NULL, NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_conn_shutdown(NULL), HUSH_EINVAL);
	assert_int_equal(hush_conn_start_handshake(NULL, NULL, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	assert_int_equal(hush_conn_start_raw(NULL, HUSH_RP_ALTS_AES128_GCM_REKEY, NULL, 0,
					     HUSH_SIDE_CLIENT),
			 HUSH_EINVAL);
	assert_int_equal(hush_conn_write(NULL, NULL, 0), HUSH_EINVAL);
	assert_int_equal(hush_handshake_new(NULL, NULL, HUSH_SIDE_CLIENT), HUSH_EINVAL);
	assert_int_equal(hush_handshake_next(NULL, NULL, 0, &n), HUSH_EINVAL);
	assert_int_equal(hush_handshake_read(NULL, NULL, 0, &n), HUSH_EINVAL);
	assert_int_equal(hush_handshake_result(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_key_from_base64(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_keypair_generate(NULL), HUSH_EINVAL);
	assert_int_equal(hush_keypair_load(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_keypair_save(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_listener_new(NULL, NULL, -1, NULL), HUSH_EINVAL);
	assert_int_equal(hush_loop_new(NULL, NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_noise_protocol_from_name(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_peers_load(NULL, NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_peers_parse(NULL, NULL, 0, NULL), HUSH_EINVAL);
	assert_int_equal(hush_pool_acquire(NULL, 1, NULL), HUSH_EINVAL);
	assert_int_equal(hush_pool_new(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_psk_generate_file(NULL), HUSH_EINVAL);
	assert_int_equal(hush_psk_load(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_record_new(NULL, HUSH_RP_ALTS_AES128_GCM_REKEY, NULL, 0,
					 HUSH_SIDE_CLIENT),
			 HUSH_EINVAL);
	assert_int_equal(hush_record_open(NULL, NULL, 0, NULL), HUSH_EINVAL);
	assert_int_equal(hush_record_parse(NULL, NULL, 0, NULL), HUSH_EINVAL);
	assert_int_equal(hush_record_protocol_from_name(NULL, NULL), HUSH_EINVAL);
	assert_int_equal(hush_record_seal(NULL, NULL, 0, 0, NULL), HUSH_EINVAL);
	assert_int_equal(hush_record_set_limits(NULL, 0, 0), HUSH_EINVAL);
	/* Names of nothing: NULL, not a crash. */
	assert_null(hush_noise_protocol_name((enum hush_noise_protocol)99));
	assert_null(hush_record_protocol_name((enum hush_record_protocol)99));
	assert_int_equal(hush_record_key_size((enum hush_record_protocol)99), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(api_null_frees_and_void_calls_do_nothing),
	    cmocka_unit_test(api_null_getters_return_neutral_values),
	    cmocka_unit_test(api_null_fallible_calls_return_einval),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
