/* hush.h: the whole public API of hush. */
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
