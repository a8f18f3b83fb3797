/*
 * highfinesse: the HighFinesse WS6/WS7/WS8 wavemeter and its fibre switch
 * through the vendor's libwlmData.so, loaded with dlopen at start-up (build
 * machines do not have it). One read moves the switch, waits out the settle
 * and the measurement pipeline, and maps the vendor's error values to
 * statuses. It must not know about the loop, sockets or the controller.
 */
#include "highfinesse.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/*
 * Timing of one read. The WLM measures continuously and GetFrequencyNum
 * answers with its latest result, behind an undocumented pipeline about three
 * measurements deep: right after the switch moves or the exposure changes,
 * the latest results can still belong to the previous laser or exposure.
 * Rather than trust a trigger (which other labs saw fail to fire now and
 * then), we let measurement periods go by: after a switch or an exposure
 * change we poll GetFrequencyNum once per period and throw away
 * WLM_FLUSH_READS results, then return the next one; on a channel already
 * under the switch we wait one period, so a reading is never the previous
 * reading again. 3 is the pipeline depth seen in the field; a deeper pipeline
 * in another model is a change here, not in the scheduler.
 */
#define WLM_FLUSH_READS 3

/* A measurement period is the exposure plus CCD readout and evaluation;
 * HighFinesse quotes about 12 ms per channel on top of the exposure
 * (UNVERIFIED). Too long costs only rate; too short would let the flush above
 * end before the pipeline has turned over. */
#define WLM_READOUT_MS 12

/* GetOperationState: the WLM only produces results while measuring. */
#define WLM_OP_MEASUREMENT 2

/* The vendor's functions with the Linux ABI: every "long" of the Windows
 * header is 32 bits, "unsigned short" is 16 bits, plain C calling convention.
 * Never declare them with C long (64 bits here). */
typedef int32_t (*wlm_i32_fn)(int32_t);
typedef uint16_t (*wlm_u16_fn)(uint16_t);
typedef double (*wlm_get_num_fn)(int32_t num, double ignored);
typedef int32_t (*wlm_set_exposure_num_fn)(int32_t num, int32_t ccd, int32_t ms);

struct wlm_api {
    wlm_i32_fn GetWLMCount;
    wlm_i32_fn GetWLMVersion;
    wlm_u16_fn GetOperationState;
    wlm_get_num_fn GetFrequencyNum;
    wlm_set_exposure_num_fn SetExposureNum;
    wlm_i32_fn SetSwitcherMode;
    wlm_i32_fn GetSwitcherChannel;
    wlm_i32_fn SetSwitcherChannel;
};

/* dlsym hands out object pointers; they are copied into the function
 * pointers byte for byte, which POSIX guarantees to work. */
_Static_assert(sizeof(void *) == sizeof(wlm_i32_fn), "function and object pointers differ");

static const struct {
    const char *name;
    size_t offset;
} wlm_symbols[] = {
    {"GetWLMCount", offsetof(struct wlm_api, GetWLMCount)},
    {"GetWLMVersion", offsetof(struct wlm_api, GetWLMVersion)},
    {"GetOperationState", offsetof(struct wlm_api, GetOperationState)},
    {"GetFrequencyNum", offsetof(struct wlm_api, GetFrequencyNum)},
    {"SetExposureNum", offsetof(struct wlm_api, SetExposureNum)},
    {"SetSwitcherMode", offsetof(struct wlm_api, SetSwitcherMode)},
    {"GetSwitcherChannel", offsetof(struct wlm_api, GetSwitcherChannel)},
    {"SetSwitcherChannel", offsetof(struct wlm_api, SetSwitcherChannel)},
};

struct hf_dev {
    /* Serializes every vendor call: the library's thread safety is
     * undocumented, and pool jobs run on different threads. */
    pthread_mutex_t mu;
    void *lib;
    struct wlm_api api;
    const struct clock *clk;
    /* We own the switch (manual mode, moved by us) when more than one laser
     * is enabled or the only one is not on channel 1; a single laser on
     * channel 1 is a WLM without a switch, or a switch the lab runs itself. */
    bool owns_switch;
    /* Exposure last set per channel, in ms; 0 = unknown, set on next read. */
    int exposure_ms[CONFIG_MAX_LASERS + 1];
};

/* How the vendor's error values of get functions (a reading <= 0) map. */
struct wlm_get_error {
    int code;
    const char *name;
    enum wm_status status;
    int err;       /* WM_ERROR only: negative errno-style code */
    bool hopeless; /* waiting for another measurement will not help */
    const char *why;
};

static const struct wlm_get_error get_errors[] = {
    {0, "ErrNoValue", WM_ERROR, -ENODATA, false, "no result (is the WLM measuring?)"},
    {-1, "ErrNoSignal", WM_NO_SIGNAL, 0, false, NULL},
    {-2, "ErrBadSignal", WM_NO_SIGNAL, 0, false, NULL},
    {-3, "ErrLowSignal", WM_UNDEREXPOSED, 0, false, NULL},
    {-4, "ErrBigSignal", WM_OVEREXPOSED, 0, false, NULL},
    {-5, "ErrWlmMissing", WM_ERROR, -ENODEV, true, "no wavemeter server"},
    {-6, "ErrNotAvailable", WM_ERROR, -ENOTSUP, true, "not available on this WLM"},
    {-7, "InfNothingChanged", WM_ERROR, -EAGAIN, false, "nothing changed"},
    {-8, "ErrNoPulse", WM_NO_SIGNAL, 0, false, NULL},
    {-10, "ErrChannelNotAvailable", WM_ERROR, -ENXIO, true, "no such channel"},
    {-13, "ErrDiv0", WM_ERROR, -EIO, false, "division by zero in the evaluation"},
    {-14, "ErrOutOfRange", WM_ERROR, -ERANGE, false, "outside the measurement range"},
    {-15, "ErrUnitNotAvailable", WM_ERROR, -ENOTSUP, true, "unit not available"},
    {-26, "ErrTCPErr", WM_ERROR, -ENODEV, true, "TCP error talking to wlmDataServer"},
    {-28, "ErrParameterOutOfRange", WM_ERROR, -EINVAL, true, "parameter out of range"},
    {-29, "ErrStringTooLong", WM_ERROR, -EINVAL, true, "string too long"},
    {-30, "ErrInterruptedByUser", WM_ERROR, -EINTR, false, "interrupted by the user"},
    {-31, "ErrInfoAlreadyFetched", WM_ERROR, -EAGAIN, false, "already fetched"},
};

static const struct wlm_get_error *get_error_find(int code) {
    for (size_t i = 0; i < sizeof(get_errors) / sizeof(get_errors[0]); i++)
        if (get_errors[i].code == code)
            return &get_errors[i];
    return NULL;
}

/* The ResERR results of set functions. */
static const struct {
    int code;
    const char *name;
    int err;
} set_errors[] = {
    {-1, "ResERR_WlmMissing", -ENODEV},
    {-2, "ResERR_CouldNotSet", -EIO},
    {-3, "ResERR_ParmOutOfRange", -EINVAL},
    {-4, "ResERR_WlmOutOfResources", -ENOMEM},
    {-5, "ResERR_WlmInternalError", -EIO},
    {-6, "ResERR_NotAvailable", -ENOTSUP},
    {-7, "ResERR_WlmBusy", -EBUSY},
    {-8, "ResERR_NotInMeasurementMode", -EIO},
    {-9, "ResERR_OnlyInMeasurementMode", -EIO},
    {-10, "ResERR_ChannelNotAvailable", -ENXIO},
    {-11, "ResERR_ChannelTemporarilyNotAvailable", -EAGAIN},
    {-24, "ResERR_NotInSwitchMode", -EIO},
    {-25, "ResERR_OnlyInSwitchMode", -EIO},
    {-26, "ResERR_TCPErr", -ENODEV},
};

/* Name and errno-style code of a ResERR value; buf holds unknown ones. */
static const char *set_error_name(int32_t code, int *err, char *buf, size_t len) {
    for (size_t i = 0; i < sizeof(set_errors) / sizeof(set_errors[0]); i++) {
        if (set_errors[i].code == code) {
            *err = set_errors[i].err;
            return set_errors[i].name;
        }
    }
    *err = -EIO;
    snprintf(buf, len, "ResERR %d", (int)code);
    return buf;
}

static void ini_trim(char **s) {
    char *end;

    while (**s == ' ' || **s == '\t')
        (*s)++;
    end = *s + strlen(*s);
    while (end > *s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
        *--end = '\0';
}

/*
 * Look at one wlmData.ini the library may read. An errormode with the 8 bit
 * makes the library exit the host process on an error (the vendor's example
 * file has 9), which a daemon cannot survive, so it is worth a warning before
 * the first vendor call can trigger it. A file we cannot read is no news: the
 * library decides where it looks (precedence UNVERIFIED).
 */
static void ini_check(const char *path) {
    FILE *f = fopen(path, "r");
    char line[256], address[64] = "", port[16] = "";
    int lineno = 0;

    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *s = line, *key, *val, *eq, *end;
        long mode;

        lineno++;
        ini_trim(&s);
        if (*s == ';' || *s == '#' || *s == '[' || (eq = strchr(s, '=')) == NULL)
            continue;
        *eq = '\0';
        key = s;
        val = eq + 1;
        ini_trim(&key);
        ini_trim(&val);
        if (strcasecmp(key, "address") == 0) {
            snprintf(address, sizeof(address), "%s", val);
        } else if (strcasecmp(key, "port") == 0) {
            snprintf(port, sizeof(port), "%s", val);
        } else if (strcasecmp(key, "errormode") == 0) {
            mode = strtol(val, &end, 0);
            if (end != val && (mode & 8) != 0)
                log_warnx("wavemeter: %s:%d: errormode=%ld has the 8 bit set: the HighFinesse "
                          "library will exit wavemeterd on its first error; use a mode without "
                          "it, such as 1 or 5 (docs/HIGHFINESSE.md)",
                          path, lineno, mode);
        }
    }
    fclose(f);
    log_info("wavemeter: %s: server address %s, port %s", path, address[0] ? address : "(unset)",
             port[0] ? port : "(default)");
}

static void ini_check_all(void) {
    const char *home = getenv("HOME");
    char path[CONFIG_PATH_MAX + 64];

    ini_check("wlmData.ini");
    if (home != NULL && home[0] != '\0') {
        snprintf(path, sizeof(path), "%s/.config/HighFinesse/wlmData.ini", home);
        ini_check(path);
    }
}

static void hf_free(struct hf_dev *d) {
    if (d->lib != NULL)
        dlclose(d->lib);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static int hf_open(const struct config *cfg, const struct clock *clk, void **devp, char *err,
                   size_t errlen) {
    const char *path = cfg->wlm_library;
    struct hf_dev *d;
    int nenabled = 0, only_channel = 0, rc;
    int32_t count, type, serial, res;
    uint16_t op;

    for (int i = 0; i < cfg->nlasers; i++) {
        if (cfg->lasers[i].enabled) {
            nenabled++;
            only_channel = cfg->lasers[i].channel;
        }
    }
    /* Before the library is loaded: it may read its ini file at once. */
    ini_check_all();

    if ((d = calloc(1, sizeof(*d))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&d->mu, NULL);
    d->clk = clk;
    d->owns_switch = nenabled > 1 || (nenabled == 1 && only_channel != 1);

    dlerror();
    if ((d->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
        const char *why = dlerror();

        snprintf(err, errlen,
                 "cannot load %s: %s (install the HighFinesse Linux library or set "
                 "wavemeter.library)",
                 path, why ? why : "unknown error");
        rc = -ENOENT;
        goto fail;
    }
    for (size_t i = 0; i < sizeof(wlm_symbols) / sizeof(wlm_symbols[0]); i++) {
        void *sym;

        dlerror();
        if ((sym = dlsym(d->lib, wlm_symbols[i].name)) == NULL) {
            const char *why = dlerror();

            snprintf(err, errlen,
                     "%s has no function %s (%s): not HighFinesse's libwlmData.so, or too old",
                     path, wlm_symbols[i].name, why ? why : "null symbol");
            rc = -ENOENT;
            goto fail;
        }
        memcpy((char *)&d->api + wlm_symbols[i].offset, &sym, sizeof(sym));
    }

    if ((count = d->api.GetWLMCount(0)) <= 0) {
        snprintf(err, errlen,
                 "no wavemeter server (GetWLMCount = %d): is wlmDataServer running and "
                 "wlmData.ini pointing at it?",
                 (int)count);
        rc = -ENODEV;
        goto fail;
    }
    type = d->api.GetWLMVersion(0);
    serial = d->api.GetWLMVersion(1);
    log_info("wavemeter: HighFinesse %s%d, serial %d, via %s (%d wavemeter%s on the server)",
             type == 5 ? "LSA type " : "WS", (int)type, (int)serial, path, (int)count,
             count == 1 ? "" : "s");
    if ((op = d->api.GetOperationState(0)) != WLM_OP_MEASUREMENT)
        log_warnx("wavemeter: the WLM is not measuring (operation state %u): start the "
                  "measurement in the wavemeter software",
                  (unsigned)op);
    if (d->owns_switch) {
        if ((res = d->api.SetSwitcherMode(0)) != 0) {
            char buf[24];
            const char *name = set_error_name(res, &rc, buf, sizeof(buf));

            snprintf(err, errlen, "cannot put the switch in manual mode: SetSwitcherMode(0) = %s",
                     name);
            goto fail;
        }
        log_info("wavemeter: switch in manual mode, %d channel%s enabled", nenabled,
                 nenabled == 1 ? "" : "s");
    }
    *devp = d;
    return 0;
fail:
    hf_free(d);
    return rc;
}

static void hf_close(void *dev) {
    if (dev != NULL)
        hf_free(dev);
}

/* Sleep ms on the device's clock unless that would pass the deadline. */
static bool hf_wait(const struct hf_dev *d, uint64_t deadline_ns, uint64_t ms) {
    uint64_t ns = ms * 1000000u;

    if (clock_now_ns(d->clk) + ns > deadline_ns)
        return false;
    if (ns > 0)
        d->clk->sleep_ns(d->clk->ctx, ns);
    return true;
}

static void hf_stamp(const struct hf_dev *d, struct wm_sample *out) {
    out->t_ns = clock_now_ns(d->clk);
    out->time_unix = d->clk->wall_s(d->clk->ctx);
}

/* Fill out as a WM_ERROR with its detail; returns err for the caller. */
static int hf_fail(struct wm_sample *out, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int hf_fail(struct wm_sample *out, int err, const char *fmt, ...) {
    va_list ap;

    out->status = WM_ERROR;
    out->err = err;
    va_start(ap, fmt);
    vsnprintf(out->detail, sizeof(out->detail), fmt, ap);
    va_end(ap);
    return err;
}

/* The vendor code a reading <= 0 carries; values are small negative integers. */
static int reading_code(double v) {
    return v > -1e6 ? (int)v : INT_MIN;
}

/* Map the final value of GetFrequencyNum into out. Returns 0 or < 0. */
static int hf_map(double v, struct wm_sample *out) {
    const struct wlm_get_error *e;
    int code;

    if (v > 0 && isfinite(v)) {
        out->status = WM_OK;
        out->frequency_thz = v;
        return 0;
    }
    if (!isfinite(v))
        return hf_fail(out, -EIO, "GetFrequencyNum: not a number");
    code = reading_code(v);
    if ((e = get_error_find(code)) == NULL)
        return hf_fail(out, -EIO, "GetFrequencyNum: unknown vendor error %g", v);
    if (e->status != WM_ERROR) {
        out->status = e->status;
        return 0;
    }
    return hf_fail(out, e->err, "GetFrequencyNum: %s (%d): %s", e->name, e->code, e->why);
}

static int hf_read_locked(struct hf_dev *d, const struct wm_read_req *req, struct wm_sample *out,
                          uint64_t deadline_ns) {
    const struct wlm_api *api = &d->api;
    int32_t ch = req->channel, res, sw_before = ch, sw_after;
    int flush = 0, polls, rc;
    uint64_t period_ms = (uint64_t)(req->exposure_ms > 0 ? req->exposure_ms : 0) + WLM_READOUT_MS;
    const struct wlm_get_error *e;
    char buf[24];
    double v = 0;

    if (d->owns_switch) {
        sw_before = api->GetSwitcherChannel(0);
        if (sw_before < 0 && (e = get_error_find(sw_before)) != NULL && e->hopeless)
            return hf_fail(out, e->err, "GetSwitcherChannel: %s (%d): %s", e->name, e->code,
                           e->why);
        /* Also move it back when someone else has moved it since our last
         * read, which the scheduler cannot know. */
        if (req->switched || sw_before != ch) {
            if (!req->switched)
                log_debug("wavemeter: channel %d: switch found on %d, moving it back", (int)ch,
                          (int)sw_before);
            if ((res = api->SetSwitcherChannel(ch)) != 0) {
                const char *name = set_error_name(res, &rc, buf, sizeof(buf));

                return hf_fail(out, rc, "SetSwitcherChannel(%d): %s", (int)ch, name);
            }
            if (!hf_wait(d, deadline_ns, (uint64_t)(req->settle_ms > 0 ? req->settle_ms : 0)))
                return hf_fail(out, -ETIMEDOUT, "read timed out after %d ms (settle %d ms)",
                               req->timeout_ms, req->settle_ms);
            flush = WLM_FLUSH_READS;
            sw_before = api->GetSwitcherChannel(0);
        }
    }
    if (req->exposure_ms > 0 && d->exposure_ms[ch] != req->exposure_ms) {
        if ((res = api->SetExposureNum(ch, 1, req->exposure_ms)) != 0) {
            const char *name = set_error_name(res, &rc, buf, sizeof(buf));

            return hf_fail(out, rc, "SetExposureNum(%d, 1, %d): %s", (int)ch, req->exposure_ms,
                           name);
        }
        d->exposure_ms[ch] = req->exposure_ms;
        flush = WLM_FLUSH_READS;
    }

    /* One period per poll; the first flush results are thrown away. */
    for (polls = 0; polls <= flush; polls++) {
        if (!hf_wait(d, deadline_ns, period_ms))
            return hf_fail(out, -ETIMEDOUT,
                           "read timed out after %d ms (%d of %d measurements of %llu ms)",
                           req->timeout_ms, polls, flush + 1, (unsigned long long)period_ms);
        /* The result was complete before this call: its time, near enough. */
        hf_stamp(d, out);
        v = api->GetFrequencyNum(ch, 0.0);
        if (v <= 0 && (e = get_error_find(reading_code(v))) != NULL && e->hopeless)
            break; /* the server is gone: no use waiting out the pipeline */
    }

    if (d->owns_switch) {
        sw_after = api->GetSwitcherChannel(0);
        if (sw_before != ch || sw_after != ch) {
            out->straddled = true;
            log_debug("wavemeter: channel %d: switch on %d before and %d after the measurement: "
                      "reading straddles a switch",
                      (int)ch, (int)sw_before, (int)sw_after);
        }
    }
    return hf_map(v, out);
}

static int hf_read(void *dev, const struct wm_read_req *req, struct wm_sample *out) {
    struct hf_dev *d = dev;
    uint64_t start_ns = clock_now_ns(d->clk);
    uint64_t deadline_ns =
        start_ns + (uint64_t)(req->timeout_ms > 0 ? req->timeout_ms : 0) * 1000000u;
    int rc;

    memset(out, 0, sizeof(*out));
    out->exposure_ms = req->exposure_ms;
    if (req->channel < 1 || req->channel > CONFIG_MAX_LASERS) {
        hf_stamp(d, out);
        return hf_fail(out, -EINVAL, "channel %d out of range 1..%d", req->channel,
                       CONFIG_MAX_LASERS);
    }
    pthread_mutex_lock(&d->mu);
    rc = hf_read_locked(d, req, out, deadline_ns);
    if (rc < 0) {
        /* The server may have restarted with its own settings: set the
         * exposures again (the switch position is checked on every read). */
        memset(d->exposure_ms, 0, sizeof(d->exposure_ms));
        if (out->t_ns == 0)
            hf_stamp(d, out);
    }
    pthread_mutex_unlock(&d->mu);
    return rc;
}

const struct wm_driver highfinesse_driver = {
    .name = "highfinesse",
    .open = hf_open,
    .close = hf_close,
    .read = hf_read,
};
