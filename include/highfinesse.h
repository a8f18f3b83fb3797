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

/* open: loop thread, at start-up; fails with one line naming the library
 * path or the missing server. read: pool thread, one at a time (every vendor
 * call is also serialized by the device's own mutex). close: dlclose. */
extern const struct wm_driver highfinesse_driver;

#endif
