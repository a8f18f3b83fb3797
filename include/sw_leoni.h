/*
 * sw_leoni: the switch driver "leoni", a Leoni eol/mol 1xN fibre switch in
 * front of the wavemeter, over the serial module and the leoni protocol
 * layer. It owns the driver's settings (wavemeter.switch) and must not know
 * about the loop, the scheduler or the config loader.
 */
#ifndef WMD_SW_LEONI_H
#define WMD_SW_LEONI_H

#include "serial.h"
#include "wavemeter.h"

/* The keys of wavemeter.switch with "driver": "leoni". Filled by the config
 * loader from sw_leoni.cfg (table and defaults in sw_leoni.c); owned by the
 * config, read only by this driver. */
struct sw_leoni_settings {
    char port[SERIAL_PATH_MAX]; /* "/dev/serial/by-id/usb-..." */
    int baud;                   /* 57600 */
};

extern const struct sw_driver sw_leoni;

#endif
