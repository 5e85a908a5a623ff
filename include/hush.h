/*
 * hush.h: the whole public API of hush. Each header below is one module's manual; these
 * rules hold for every function of all of them, and a function's own comment mentions
 * them only where it departs from them.
 *
 * Errors. A function that can fail returns 0 or a negative HUSH_E* code (hush/common.h;
 * hush_strerror() and hush_err_name() name it). On failure its outputs (the *out of a
 * constructor, a caller's buffer) are untouched and it took ownership of nothing,
 * unless its comment says which. A connection, record context or handshake that failed
 * keeps its error: later calls on it return the same code (hush_conn_error(),
 * hush_record_error(), hush_handshake_error()).
 *
 * NULL. Passing NULL for an object or an argument is never undefined behaviour:
 * - *_free() and calls that return nothing do nothing;
 * - calls that return an int error code return HUSH_EINVAL, without effect;
 * - getters return their neutral value: 0, false, NULL, -1 for a descriptor, and
 *   HUSH_EINVAL for an error getter (hush_conn_error(NULL)); getters that fill a
 *   caller's struct fill it with zeros.
 *
 * Callbacks. No callback runs from inside the call that caused it: hush reports events,
 * data and write readiness from its loop's event_base (the bufferevent adapter follows
 * libevent's own rules for bufferevents instead). A call that fails has scheduled no
 * callback. Callbacks may call back into hush on the same object, free it included,
 * unless their comment says otherwise.
 *
 * Threads. A hush_loop, and every connection, listener and bufferevent on it, is used
 * from the thread that runs the loop's event_base (hush/loop.h); one hush_pool may be
 * shared by every thread, and a kept pool buffer may be released from any thread.
 * Configurations, key pairs and peers lists may be shared read-only by any number of
 * threads. Thread-safe functions say so; hush_bufferevent_* documents what
 * BEV_OPT_THREADSAFE adds.
 */
#ifndef HUSH_H
#define HUSH_H

#include <hush/common.h>
#include <hush/pool.h>
#include <hush/record.h>
#include <hush/loop.h>
#include <hush/conn.h>
#include <hush/bufferevent.h>
#include <hush/keys.h>
#include <hush/handshake.h>
#include <hush/listener.h>

#endif /* HUSH_H */
