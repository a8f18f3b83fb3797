/*
 * highfinesse: the HighFinesse WS6/WS7/WS8 wavemeter (driver "highfinesse")
 * through the vendor's libwlmData.so, loaded at run time from
 * wavemeter.library. On Linux that library is a network client of
 * wlmDataServer on the Windows PC that runs the wavemeter; see
 * docs/HIGHFINESSE.md for the set-up and what one read does.
 */
#ifndef WMD_HIGHFINESSE_H
#define WMD_HIGHFINESSE_H

#include "wavemeter.h"

/* Every call into the library runs on one thread the device owns, created
 * in open: the vendor's calls have no timeout of their own, and their thread
 * safety is undocumented. open: loop thread, at start-up, bounded by
 * wavemeter.read_timeout_ms; fails with one line naming the library path or
 * the missing or silent server. read: pool thread, one at a time; hands the
 * whole read to the device's thread and waits at most req->timeout_ms, then
 * fails with -ETIMEDOUT; while a vendor call stays blocked, reads fail at
 * once. close: loop thread; joins that thread and dlcloses, or, when it is
 * still blocked in a vendor call, detaches it and leaves the library loaded. */
extern const struct wm_driver highfinesse_driver;

#endif
