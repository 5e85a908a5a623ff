/* hush.h: the whole public API of hush. */
#ifndef HUSH_H
#define HUSH_H

#include <hush/common.h>
#include <hush/pool.h>
#include <hush/record.h>

#endif /* HUSH_H */
