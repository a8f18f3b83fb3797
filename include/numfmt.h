/*
 * numfmt: reals as answers write them, fast. The same text as jansson with
 * JSON_REAL_PRECISION(15) (what every answer uses): "%.15g", ".0" added to
 * what would read as an integer, no '+' and no leading zeros in an
 * exponent; 17 digits near DBL_MAX, where 15 would round past it (as the
 * answers do, see jsonrpc.c). A pure module; it exists because glibc's printf takes about a
 * microsecond per real, and a history answer holds four per reading.
 */
#ifndef WMD_NUMFMT_H
#define WMD_NUMFMT_H

#include <stddef.h>

/* Longest text numfmt_real writes, NUL included. */
#define NUMFMT_REAL_MAX 32

/* Write x (finite) into buf (NUMFMT_REAL_MAX bytes); returns the length.
 * Numbers from 1e-4 to 1e15 in magnitude take a fast path in integer
 * arithmetic on a 64-bit-mantissa long double product, rounded as printf
 * rounds (a product exactly halfway goes to printf); the rest go through
 * snprintf. Any thread. */
size_t numfmt_real(char *buf, double x);

#endif
