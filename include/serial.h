/*
 * serial: one serial port (USB-serial adapter, on-board UART) through
 * libserialport, and the lineio transport over it that serial instrument
 * drivers (MDT693B, Arduino DAC boxes, Leoni switch) speak through. It knows
 * nothing of any instrument's protocol, the loop or the config file.
 */
#ifndef WMD_SERIAL_H
#define WMD_SERIAL_H

#include <stdbool.h>
#include <stddef.h>

#include "lineio.h"

struct sp_port;

/* Longest configured or resolved device path kept (PATH_MAX is 4096, but a
 * device path that long is a config mistake, reported as -ENAMETOOLONG). */
#define SERIAL_PATH_MAX 256

enum serial_parity {
    SERIAL_PARITY_NONE = 0,
    SERIAL_PARITY_ODD,
    SERIAL_PARITY_EVEN,
};

/* How to open a port. Borrowed by serial_open for the call only. A
 * zero-initialized struct plus path and baud is 8N1 with DTR and RTS on,
 * which is what the instruments we know expect. Flow control is always off
 * (no XON/XOFF, no RTS/CTS, no DTR/DSR): none of them uses it, and a wrong
 * handshake setting silently stalls a port. */
struct serial_params {
    const char *path;          /* "/dev/ttyUSB0", "/dev/serial/by-id/usb-FTDI_..." */
    int baud;                  /* e.g. 9600, 57600, 115200; > 0 */
    int data_bits;             /* 5..8; 0 means 8 */
    enum serial_parity parity; /* NONE, ODD, EVEN */
    int stop_bits;             /* 1 or 2; 0 means 1 */
    bool dtr_off;              /* drop DTR (e.g. a board that resets while DTR is up) */
    bool rts_off;              /* drop RTS */
};

/*
 * An open port. Embedded in its owner (a device's driver state), which
 * calls serial_open and serial_close; all fields are private except path
 * and resolved, which may be read for messages. Every function here blocks
 * (each wait bounded by a finite timeout) and so runs on a pool thread, one
 * device job at a time: the struct is used by one thread at a time and has
 * no lock. Never call these on the loop thread.
 */
struct serial {
    struct sp_port *port;           /* owned; NULL when closed */
    int fd;                         /* borrowed from port, for poll(); -1 when closed */
    char path[SERIAL_PATH_MAX];     /* as configured */
    char resolved[SERIAL_PATH_MAX]; /* what path pointed at at the last open */
    /* Bytes read from the port after a stop byte, handed out by the next
     * read_until: a chunked read must not lose the start of the next reply. */
    char pending[256];
    size_t pending_off, pending_len;
};

/*
 * Open p->path and configure it. The path is resolved with realpath() at
 * every open, since libserialport 0.1.1 does not follow /dev/serial/by-id
 * links and a replugged adapter comes back under a new ttyUSB number; the
 * port is locked with flock() so a second daemon or a terminal program using
 * flock cannot share it. s needs no initialization; on failure it is left
 * closed (serial_close is harmless). Returns 0, or a negative errno-style code
 * with one line in err naming the configured and the resolved path:
 * -ENOENT (no such device: unplugged or wrong path), -EACCES/-EPERM (not in
 * group dialout), -EBUSY (locked by another process), -ENODEV (not a serial
 * port libserialport knows), -EINVAL (bad params), -ENAMETOOLONG, -EMFILE,
 * or the errno of a failed open/configure. Pool thread.
 */
int serial_open(struct serial *s, const struct serial_params *p, char *err, size_t errlen);

/* Close the port if open; s is closed afterwards. Pool thread (or the
 * owner's teardown once no job can run). */
void serial_close(struct serial *s);

/*
 * Fill io with a lineio over s (io->ctx = s, borrowed: s must stay open and
 * in place while io is used). write: full write within timeout_ms (<= 0 is
 * taken as 1 ms: a wait without end is never meant), else -ETIMEDOUT, or
 * -EIO. read_until: as lineio.h says; timeout_ms <= 0 returns only what has
 * already arrived. A port that has gone away (adapter unplugged, hung up)
 * gives -EIO from all three at once, never a hang or a spin; the owner then
 * closes and later reopens it. Pool thread.
 */
void serial_lineio(struct serial *s, struct lineio *io);

/*
 * Write the n bytes of in to out as one printable line for logs: C-style
 * escapes (\r \n \t \\ \" and \xNN for other bytes outside 0x20..0x7e), cut
 * with "..." when out (outlen bytes) is too short. out is always
 * NUL-terminated when outlen > 0. Returns strlen(out). Any thread. A thin
 * wrapper over escape_bytes (escape.h), kept for the serial API.
 */
size_t serial_escape(const char *in, size_t n, char *out, size_t outlen);

#endif
