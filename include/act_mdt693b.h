/*
 * act_mdt693b: the actuator driver "mdt693b", one axis of a Thorlabs
 * MDT693B/694B piezo controller per laser, over the serial module and the
 * mdt693b protocol layer. It owns the driver's settings (lasers[].actuator)
 * and must not know about the loop, the lock or the config loader.
 */
#ifndef WMD_ACT_MDT693B_H
#define WMD_ACT_MDT693B_H

#include "serial.h"
#include "wavemeter.h"

/*
 * The keys of lasers[].actuator with "driver": "mdt693b". Filled by the
 * config loader from act_mdt693b.cfg (the table and defaults in
 * act_mdt693b.c); kept as bytes in the laser's struct drv_settings, owned
 * by the config, read only by this driver.
 */
struct act_mdt693b_settings {
    char port[SERIAL_PATH_MAX];  /* "/dev/serial/by-id/usb-FTDI_...", device key */
    int baud;                    /* 115200, device key */
    char axis[2];                /* "x", "y" or "z" */
    double readback_tolerance_v; /* |read-back - set| above this is a failed write */
};

extern const struct act_driver act_mdt693b;

#endif
