/*
 * act_serial_line: the actuator driver "serial_line", a DAC box (Arduino and
 * the like) that takes one text command per output change over a serial
 * line. Its protocol is configuration (serial_line.h); it owns the driver's
 * settings (lasers[].actuator) and must not know about the loop, the lock or
 * the config loader.
 */
#ifndef WMD_ACT_SERIAL_LINE_H
#define WMD_ACT_SERIAL_LINE_H

#include "serial.h"
#include "wavemeter.h"

/*
 * The keys of lasers[].actuator with "driver": "serial_line". Filled by the
 * config loader from act_serial_line.cfg (the table and defaults in
 * act_serial_line.c); kept as bytes in the laser's struct drv_settings,
 * owned by the config, read only by this driver. The strings are used as
 * they are: JSON has already turned "\r\n" into the two bytes.
 */
struct act_serial_line_settings {
    char port[SERIAL_PATH_MAX]; /* device key */
    int baud;                   /* device key */
    int data_bits;              /* 5..8, device key */
    enum serial_parity parity;  /* device key */
    int stop_bits;              /* 1 or 2, device key */
    int channel;                /* 0..255, the box's output number */
    char command[128];          /* template: {channel}, {code}, {volts} */
    char terminator[8];         /* appended to each command, device key */
    int code_min, code_max;     /* the DAC's code range */
    double volts_at_code_min;   /* V the output has at code_min */
    double volts_at_code_max;   /* V the output has at code_max */
    char reply[64];             /* "" = none expected, else the exact line */
    char reply_terminator[8];   /* ends the reply line */
    int open_delay_ms;          /* wait after opening (board reset), device key */
};

extern const struct act_driver act_serial_line;

#endif
