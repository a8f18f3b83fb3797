/*
 * highfinesse: the HighFinesse WS6/WS7/WS8 wavemeter and its fibre switch
 * through the vendor's libwlmData.so, loaded with dlopen at start-up (build
 * machines do not have it). One read moves the switch, waits out the settle
 * and the measurement pipeline, and maps the vendor's error values to
 * statuses; analog_out sets one of the laser-control outputs. Every vendor
 * call runs on the device's own thread, so a call that never returns cannot
 * hold up a pool job. It must not know about the loop, sockets or the
 * controller.
 */
#include "highfinesse.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

/* Vendor calls have no timeout of their own (they wait on wlmDataServer over
 * TCP), so the caller of a read waits for the device's thread only until
 * read_timeout_ms. The read plans its sleeps to end a reserve before that
 * deadline, leaving time for the calls after the last sleep (a few ms each on
 * a LAN): without it a read that just fits would be taken for a hung call.
 * The reserve is a tenth of the timeout, at most this, so that short timeouts
 * keep most of theirs. */
#define HF_RESERVE_MAX_MS 50

/* hf_apply_exposure's answer for a refusal that is the channel's own: the
 * reading is that channel's error, the meter goes on. */
#define HF_CHANNEL_ERROR 2

/* Beyond the periods a result should take: network and a busy Windows PC. */
#define HF_RESULT_SLACK_MS 100

/* GetOperationState: the WLM only produces results while measuring. */
#define WLM_OP_MEASUREMENT 2

/* Where labs install the vendor's Linux library (docs/HIGHFINESSE.md). */
#define HF_LIBRARY_DEFAULT "/usr/lib/libwlmData.so"

/* The laser-control option's analog outputs ("deviation" ports), 1-based.
 * Eight is the most a WS7/WS8 PID option drives (one per switch channel of
 * the 8-channel switch); the instruments.md notes give no count, so this is
 * an upper bound: a port the instrument lacks is refused by the vendor
 * (ResERR_ChannelNotAvailable or ResERR_ParmOutOfRange) at the first write,
 * with a message naming it. */
#define HF_ANALOG_PORTS 8

/* The vendor's functions with the Linux ABI: every "long" of the Windows
 * header is 32 bits, "unsigned short" is 16 bits, plain C calling convention.
 * Never declare them with C long (64 bits here). */
typedef int32_t (*wlm_i32_fn)(int32_t);
typedef uint16_t (*wlm_u16_fn)(uint16_t);
typedef double (*wlm_get_num_fn)(int32_t num, double ignored);
typedef int32_t (*wlm_set_exposure_num_fn)(int32_t num, int32_t ccd, int32_t ms);
typedef int32_t (*wlm_set_signal_num_fn)(int32_t port, double mv);
typedef int32_t (*wlm_get_exposure_num_fn)(int32_t num, int32_t ccd, int32_t ignored);
typedef int32_t (*wlm_exposure_mode_num_fn)(int32_t num, unsigned char automatic);
typedef int32_t (*wlm_signal_states_fn)(int32_t signal, int32_t use, int32_t show);
typedef int32_t (*wlm_get_signal_states_fn)(int32_t signal, int32_t *use, int32_t *show);
typedef intptr_t (*wlm_instantiate_fn)(int32_t rfc, int32_t mode, intptr_t p1, int32_t p2);
typedef void (*wlm_callback_ex_fn)(int32_t ver, int32_t mode, int32_t intval, double dblval,
                                   int32_t res1);

struct wlm_api {
    wlm_i32_fn GetWLMCount;
    wlm_i32_fn GetWLMVersion;
    wlm_u16_fn GetOperationState;
    wlm_get_num_fn GetFrequencyNum;
    wlm_set_exposure_num_fn SetExposureNum;
    wlm_i32_fn SetSwitcherMode;
    wlm_i32_fn GetSwitcherChannel;
    wlm_i32_fn SetSwitcherChannel;
    /* Optional: only libraries built with the laser-control functions have
     * it, and a lab without that option still wants readings. NULL: none. */
    wlm_set_signal_num_fn SetDeviationSignalNum;
    /* Optional, found in every library we know of but not needed to read:
     * without them the driver falls back to what it can do (see hf_probe). */
    wlm_instantiate_fn Instantiate;
    wlm_get_exposure_num_fn GetExposureNum;
    wlm_exposure_mode_num_fn SetExposureModeNum;
    wlm_i32_fn GetExposureRange;
    wlm_i32_fn GetChannelsCount;
    wlm_i32_fn GetSwitcherMode;
    wlm_signal_states_fn SetSwitcherSignalStates; /* needed by the cycling mode */
    wlm_get_signal_states_fn GetSwitcherSignalStates;
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

static const struct {
    const char *name;
    size_t offset;
} wlm_optional[] = {
    {"Instantiate", offsetof(struct wlm_api, Instantiate)},
    {"GetExposureNum", offsetof(struct wlm_api, GetExposureNum)},
    {"SetExposureModeNum", offsetof(struct wlm_api, SetExposureModeNum)},
    {"GetExposureRange", offsetof(struct wlm_api, GetExposureRange)},
    {"GetChannelsCount", offsetof(struct wlm_api, GetChannelsCount)},
    {"GetSwitcherMode", offsetof(struct wlm_api, GetSwitcherMode)},
    {"SetSwitcherSignalStates", offsetof(struct wlm_api, SetSwitcherSignalStates)},
    {"GetSwitcherSignalStates", offsetof(struct wlm_api, GetSwitcherSignalStates)},
};

/* Constants of the vendor's wlmData.h. */
#define WLM_INST_RETURN_MODE 0     /* cInstReturnMode: Instantiate's RFC */
#define WLM_INST_NOTIFICATION 1    /* cInstNotification */
#define WLM_NOTIFY_REMOVE 1        /* cNotifyRemoveCallback */
#define WLM_NOTIFY_INSTALL_EX 4    /* cNotifyInstallCallbackEx */
#define WLM_CMI_TIME_PER_MEAS 1514 /* cmiTimePerMeasurement: the period, in ms */
#define WLM_EXPO_MIN 0             /* cExpoMin .. cExpo2Max for GetExposureRange */
#define WLM_EXPO_MAX 1
#define WLM_EXPO2_MIN 2
#define WLM_EXPO2_MAX 3
#define WLM_ERR_NO_VALUE_YET (-32)
#define WLM_ERR_NO_NEW_VALUE_YET (-33)

struct hf_dev;
struct hf_job;

/* Runs on the vendor thread; returns 0 or < 0, with the details in the job. */
typedef int (*hf_job_fn)(struct hf_dev *d, struct hf_job *j);

/*
 * One piece of work for the vendor thread: the probe at open, one whole
 * read, or one analog output. Callers fill a copy; hf_run copies it into the
 * device, since the vendor thread may go on using it after a caller has
 * stopped waiting.
 */
struct hf_job {
    hf_job_fn run;
    const char *what; /* "read", ... for the messages of hf_run */
    int rc;
    char err[CONFIG_PATH_MAX + 256]; /* why the probe or an analog output failed */
    /* The probe at open. */
    char path[CONFIG_PATH_MAX]; /* the library to load */
    int nenabled;               /* lasers enabled, for the start-up log */
    const struct config *cfg;   /* the lasers, for the start-up checks (borrowed) */
    bool analog;                /* out: the library has SetDeviationSignalNum */
    /* A read. */
    struct wm_read_req req;
    uint64_t deadline_ns; /* on the device's clock: no sleep may end after it */
    struct wm_sample out;
    /* An analog output. */
    int port; /* 1-based */
    double mv;
};

/*
 * Threads: the device's vendor thread makes every call into libwlmData (its
 * thread safety is undocumented, so they are also serialized); open, read,
 * analog_out and close hand it jobs and wait for it with a deadline. A read
 * and an analog output may come from two pool threads at once (the meter and
 * the actuator of a laser are separate jobs): they take turns. Who frees the
 * device: close, after joining the vendor thread; or, if close found that
 * thread stuck in a vendor call, the vendor thread itself should the call
 * ever return (see hf_close).
 */
struct hf_dev {
    const struct clock *clk;
    /* We own the switch (manual mode, moved by us) when more than one laser
     * is enabled or the only one is not on channel 1; a single laser on
     * channel 1 is a WLM without a switch, or a switch the lab runs itself. */
    bool owns_switch;
    /* The library has SetDeviationSignalNum. Set by open, then read-only. */
    bool analog;
    pthread_t thread;

    /* Vendor thread only (and close, after the join). */
    void *lib;
    struct wlm_api api;
    /* Exposure last set per channel, in ms; 0 = unknown, set on next read. */
    int exposure_ms[CONFIG_MAX_LASERS + 1];
    /* Return mode "new values only" is on: each result comes once. */
    bool read_once;
    /* The instrument cycles its switch through the lasers by itself; a
     * cycle (every enabled laser once) takes about cycle_ms (the plan at
     * open), or what the gaps between one channel's results show. */
    bool cycling;
    bool cycling_lost; /* a device error: set the cycling up again */
    uint64_t cycle_ms, cycle_seen_ms;
    uint64_t last_seen_ns[CONFIG_MAX_LASERS + 1]; /* cycling: a channel's last result */
    const struct config *cfg; /* the lasers (borrowed from the daemon, lives longer) */
    /* The switch's own use/show flags found at open, put back at close. */
    bool have_signal_states;
    int32_t signal_use[CONFIG_MAX_LASERS + 1], signal_show[CONFIG_MAX_LASERS + 1];
    /* The exposure the instrument last said it used, per channel (auto). */
    int used_exposure_ms[CONFIG_MAX_LASERS + 1];
    /* The notification callback is installed (for the measurement period). */
    bool notified;
    /* The switch mode found at open, put back at close (-1: unknown). */
    int32_t saved_switch_mode;
    /* The last value GetFrequencyNum gave per channel, bit for bit: without
     * read-once mode, the same value again is the same measurement. */
    uint64_t last_bits[CONFIG_MAX_LASERS + 1];
    bool have_last[CONFIG_MAX_LASERS + 1];

    /* Under mu. cond (CLOCK_MONOTONIC) is broadcast when a job is posted or
     * done and when the vendor thread is told to stop. */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct hf_job job;      /* callers' while neither flag is set, else the thread's */
    bool claimed;           /* a caller is waiting for its job: others wait their turn */
    bool posted;            /* job waits for the vendor thread */
    bool running;           /* the vendor thread is in job */
    bool abandoned;         /* its caller stopped waiting: the device is hung */
    bool stop;              /* close: the vendor thread exits when idle */
    bool orphaned;          /* close left; the vendor thread frees the device */
    const char *call;       /* the vendor call in progress, NULL between calls */
    uint64_t call_start_ns; /* when it started, on clk */
    const char *stuck_call; /* the call a caller gave up on, for the logs */
    uint64_t stuck_since_ns;
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

/* hopeless here means a device failure: no channel can be read (the server
 * or the wavemeter is gone). Everything else is one channel's condition, a
 * reading with that status, which never stops the others. */
static const struct wlm_get_error get_errors[] = {
    {0, "ErrNoValue", WM_ERROR, -ENODATA, false, "no result yet (is the WLM measuring?)"},
    {-1, "ErrNoSignal", WM_NO_SIGNAL, 0, false, NULL},
    {-2, "ErrBadSignal", WM_NO_SIGNAL, 0, false, NULL},
    {-3, "ErrLowSignal", WM_UNDEREXPOSED, 0, false, NULL},
    {-4, "ErrBigSignal", WM_OVEREXPOSED, 0, false, NULL},
    {-5, "ErrWlmMissing", WM_ERROR, -ENODEV, true, "no wavemeter server"},
    {-6, "ErrNotAvailable", WM_ERROR, -ENOTSUP, false, "not available on this WLM"},
    {-7, "InfNothingChanged", WM_ERROR, -EAGAIN, false, "nothing changed"},
    {-8, "ErrNoPulse", WM_NO_SIGNAL, 0, false, NULL},
    {-10, "ErrChannelNotAvailable", WM_ERROR, -ENXIO, false, "no such channel"},
    {-13, "ErrDiv0", WM_ERROR, -EIO, false, "division by zero in the evaluation"},
    {-14, "ErrOutOfRange", WM_ERROR, -ERANGE, false, "outside the measurement range"},
    {-15, "ErrUnitNotAvailable", WM_ERROR, -ENOTSUP, false, "unit not available"},
    {-26, "ErrTCPErr", WM_ERROR, -ENODEV, true, "TCP error talking to wlmDataServer"},
    {-28, "ErrParameterOutOfRange", WM_ERROR, -EINVAL, false, "parameter out of range"},
    {-29, "ErrStringTooLong", WM_ERROR, -EINVAL, false, "string too long"},
    {-30, "ErrInterruptedByUser", WM_ERROR, -EINTR, false, "interrupted by the user"},
    {-16, "ErrWOCalc", WM_ERROR, -EIO, false, "no calculation (wavelength meter not calibrated?)"},
    {-31, "ErrInfoAlreadyFetched", WM_ERROR, -EAGAIN, false, "already fetched"},
    {-32, "ErrNoValueYet", WM_ERROR, -ENODATA, false, "no result yet"},
    {-33, "ErrNoNewValueYet", WM_ERROR, -ENODATA, false, "no new result yet"},
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
    {-12, "ResERR_CalOptionNotAvailable", -ENOTSUP},
    {-13, "ResERR_CalWavelengthOutOfRange", -EINVAL},
    {-14, "ResERR_BadCalibrationSignal", -EIO},
    {-15, "ResERR_UnitNotAvailable", -ENOTSUP},
    {-16, "ResERR_FileNotFound", -ENOENT},
    {-17, "ResERR_FileCreation", -EIO},
    {-18, "ResERR_TriggerPending", -EBUSY},
    {-19, "ResERR_TriggerWaiting", -EBUSY},
    {-20, "ResERR_NoLegitimation", -EACCES},
    /* wlmDataServer refuses writes from this network client. */
    {-21, "ResERR_NoTCPLegitimation", -EACCES},
    {-22, "ResERR_NotInPulseMode", -EIO},
    {-23, "ResERR_OnlyInPulseMode", -EIO},
    {-24, "ResERR_NotInSwitchMode", -EIO},
    {-25, "ResERR_OnlyInSwitchMode", -EIO},
    {-26, "ResERR_TCPErr", -ENODEV},
    {-29, "ResERR_StringTooLong", -EINVAL},
    {-30, "ResERR_InterruptedByUser", -EINTR},
};

/* A set function's refusal that concerns only that channel (a parameter,
 * a channel or an option it lacks), not the device. */
static bool set_error_is_channel(int32_t code) {
    return code == -3 || code == -6 || code == -10 || code == -11 || code == -15;
}

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

/* Only once the vendor thread has exited, or is sure never to touch d again.
 * unload is false when a vendor call may still be running: dlclose would
 * unmap the code it runs in. */
static void hf_free(struct hf_dev *d, bool unload) {
    if (unload && d->lib != NULL)
        dlclose(d->lib);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* Vendor thread: note the call about to start (name: a string literal), so
 * that a caller that stops waiting can say which call is blocked. */
static void hf_call_begin(struct hf_dev *d, const char *name) {
    uint64_t now_ns = clock_now_ns(d->clk);

    pthread_mutex_lock(&d->mu);
    d->call = name;
    d->call_start_ns = now_ns;
    pthread_mutex_unlock(&d->mu);
}

static void hf_call_end(struct hf_dev *d) {
    pthread_mutex_lock(&d->mu);
    d->call = NULL;
    pthread_mutex_unlock(&d->mu);
}

/* Vendor thread: the vendor calls, one wrapper per signature. Call them
 * through the WLM_* macros below, which pass the function's name along. */
static int32_t hf_call_i32(struct hf_dev *d, const char *name, wlm_i32_fn fn, int32_t a) {
    int32_t r;

    hf_call_begin(d, name);
    r = fn(a);
    hf_call_end(d);
    return r;
}

static uint16_t hf_call_u16(struct hf_dev *d, const char *name, wlm_u16_fn fn, uint16_t a) {
    uint16_t r;

    hf_call_begin(d, name);
    r = fn(a);
    hf_call_end(d);
    return r;
}

static double hf_call_get_num(struct hf_dev *d, const char *name, wlm_get_num_fn fn, int32_t num) {
    double r;

    hf_call_begin(d, name);
    r = fn(num, 0.0);
    hf_call_end(d);
    return r;
}

static int32_t hf_call_set_exposure(struct hf_dev *d, int32_t num, int32_t ccd, int32_t ms) {
    int32_t r;

    hf_call_begin(d, "SetExposureNum");
    r = d->api.SetExposureNum(num, ccd, ms);
    hf_call_end(d);
    return r;
}

#define WLM_I32(d, fn, a) hf_call_i32((d), #fn, (d)->api.fn, (a))
#define WLM_U16(d, fn, a) hf_call_u16((d), #fn, (d)->api.fn, (a))
#define WLM_GET_NUM(d, fn, num) hf_call_get_num((d), #fn, (d)->api.fn, (num))

static uint64_t hf_period_ms(const struct hf_dev *d, int32_t ch, int exposure_ms, int exposure2_ms);
static int hf_apply_exposure(struct hf_dev *d, int32_t ch, int exposure_ms,
                             const struct hf_chan *hc, struct wm_sample *out);

/* Vendor thread, at open: the configured channels against what the
 * instrument has, and the exposures against its range. A mismatch fails the
 * start with the numbers. */
static int hf_probe_channels(struct hf_dev *d, struct hf_job *j) {
    const struct config *cfg = j->cfg;
    int32_t count = 0, lo = 0, hi = 0, lo2 = 0, hi2 = 0;

    if (d->api.GetChannelsCount != NULL)
        count = WLM_I32(d, GetChannelsCount, 0);
    if (d->api.GetExposureRange != NULL) {
        lo = WLM_I32(d, GetExposureRange, WLM_EXPO_MIN);
        hi = WLM_I32(d, GetExposureRange, WLM_EXPO_MAX);
        lo2 = WLM_I32(d, GetExposureRange, WLM_EXPO2_MIN);
        hi2 = WLM_I32(d, GetExposureRange, WLM_EXPO2_MAX);
    }
    for (int i = 0; i < cfg->nlasers; i++) {
        const struct laser_config *lc = &cfg->lasers[i];
        const struct hf_chan *hc = hf_chan_const(lc);
        /* Behind an external switch every laser is read on its input. */
        int ch = cfg->sw.drv.driver[0] ? cfg->sw.input : lc->channel;

        if (!lc->enabled)
            continue;
        if (count > 0 && ch > count) {
            snprintf(j->err, sizeof(j->err),
                     "laser \"%s\" is on channel %d, but the wavemeter has %d channel%s "
                     "(GetChannelsCount)",
                     lc->name, ch, (int)count, count == 1 ? "" : "s");
            return -EINVAL;
        }
        if (hc->auto_exposure || hi <= 0)
            continue;
        if (lc->exposure_ms < lo || lc->exposure_ms > hi) {
            snprintf(j->err, sizeof(j->err),
                     "laser \"%s\": exposure_ms %d is outside the wavemeter's range %d..%d ms "
                     "(GetExposureRange)",
                     lc->name, lc->exposure_ms, (int)lo, (int)hi);
            return -EINVAL;
        }
        if (hc->exposure2_ms > 0 && hi2 > 0 && (hc->exposure2_ms < lo2 || hc->exposure2_ms > hi2)) {
            snprintf(j->err, sizeof(j->err),
                     "laser \"%s\": highfinesse.exposure2_ms %d is outside the wavemeter's "
                     "range %d..%d ms for the second array (GetExposureRange)",
                     lc->name, hc->exposure2_ms, (int)lo2, (int)hi2);
            return -EINVAL;
        }
    }
    if (count > 0)
        log_info("wavemeter: %d channels, exposure %d..%d ms (second array %d..%d ms)", (int)count,
                 (int)lo, (int)hi, (int)lo2, (int)hi2);
    return 0;
}

/*
 * Vendor thread, at open, switch mode "cycling": the instrument's switch
 * takes the enabled lasers' channels in turn by itself and files each
 * result under the channel it measured, so no result has to be thrown away
 * after a switch. Every channel's exposure is set first (the cycle uses
 * each channel's own), then exactly the lasers' channels are put in use.
 */
static int hf_setup_cycling(struct hf_dev *d, char *err, size_t errlen) {
    const struct config *cfg = d->cfg;
    bool used[CONFIG_MAX_LASERS + 1] = {false};
    struct wm_sample scratch;
    char buf[24];
    int32_t res;
    int rc, nused = 0;

    if (d->api.SetSwitcherSignalStates == NULL) {
        snprintf(err, errlen,
                 "wavemeter.switch_mode \"cycling\" needs SetSwitcherSignalStates, which this "
                 "libwlmData lacks");
        return -ENOTSUP;
    }
    d->cycle_ms = 0;
    for (int i = 0; i < cfg->nlasers; i++) {
        const struct laser_config *lc = &cfg->lasers[i];
        const struct hf_chan *hc = hf_chan_const(lc);

        if (!lc->enabled)
            continue;
        used[lc->channel] = true;
        memset(&scratch, 0, sizeof(scratch));
        if (hf_apply_exposure(d, lc->channel, lc->exposure_ms, hc, &scratch) != 0 &&
            scratch.status == WM_ERROR) {
            snprintf(err, errlen, "laser \"%s\": %s", lc->name, scratch.detail);
            return scratch.err < 0 ? scratch.err : -EIO;
        }
        d->cycle_ms += hf_period_ms(d, lc->channel, lc->exposure_ms, hc->exposure2_ms);
        nused++;
    }
    /* The lab's own settings, put back at close (once: a re-setup after a
     * server restart must not save ours). */
    if (!d->have_signal_states && d->api.GetSwitcherSignalStates != NULL) {
        for (int ch = 1; ch <= CONFIG_MAX_LASERS; ch++) {
            hf_call_begin(d, "GetSwitcherSignalStates");
            res = d->api.GetSwitcherSignalStates(ch, &d->signal_use[ch], &d->signal_show[ch]);
            hf_call_end(d);
            if (res != 0)
                d->signal_use[ch] = -1; /* beyond the switch: leave it */
        }
        d->have_signal_states = true;
    }
    for (int ch = 1; ch <= CONFIG_MAX_LASERS; ch++) {
        hf_call_begin(d, "SetSwitcherSignalStates");
        res = d->api.SetSwitcherSignalStates(ch, used[ch] ? 1 : 0, used[ch] ? 1 : 0);
        hf_call_end(d);
        /* Channels beyond the switch's are refused; only ours matter. */
        if (res != 0 && used[ch]) {
            const char *name = set_error_name(res, &rc, buf, sizeof(buf));
            snprintf(err, errlen, "SetSwitcherSignalStates(%d, 1, 1): %s", ch, name);
            return rc;
        }
    }
    if ((res = WLM_I32(d, SetSwitcherMode, 1)) != 0) {
        const char *name = set_error_name(res, &rc, buf, sizeof(buf));
        snprintf(err, errlen, "cannot start the switch cycling: SetSwitcherMode(1) = %s", name);
        return rc;
    }
    d->cycling_lost = false;
    log_info("wavemeter: switch cycling through %d channels, about %llu ms a cycle", nused,
             (unsigned long long)d->cycle_ms);
    return 0;
}

/*
 * The library's notifications arrive on its own thread and carry no pointer
 * of ours, so what we take from them lives here, the driver's only global
 * state (one wavemeter per process):
 * - the measurement period (cmiTimePerMeasurement);
 * - the instrument's clock: each result notification (cmiWavelengthN)
 *   carries the instrument's ms tick at the end of that measurement's
 *   exposure, and each switch notification (cmiSwitcherChannel) the tick of
 *   the move. A move is notified as it happens, so our clock at its arrival
 *   minus its tick bounds the offset between the clocks from above; the
 *   smallest of the recent bounds is the estimate (network and scheduling
 *   delays only add).
 * - each channel's recent results with their ticks, so that a result read
 *   with GetFrequencyNum is stamped at its measurement, however late it
 *   was fetched.
 */
#define HF_NOTE_RESULTS 8  /* recent results kept per channel */
#define HF_NOTE_OFFSETS 32 /* recent clock-offset bounds kept */
#define HF_CHANNELS_MAX 17 /* cmiWavelength1..17 */

static atomic_int hf_notified_period_ms;

static struct {
    pthread_mutex_t mu;
    const struct clock *clk; /* set at open, before the callback is installed */
    struct {
        double nm;
        int64_t tick_ms; /* unwrapped */
    } results[HF_CHANNELS_MAX + 1][HF_NOTE_RESULTS];
    unsigned head[HF_CHANNELS_MAX + 1];
    int64_t offsets_ns[HF_NOTE_OFFSETS]; /* our ns minus tick ns, bounds */
    unsigned noffsets, offsets_head;
    /* The last tick of each kind, unwrapped (the vendor's are 32 bits);
     * apart, so a kind that carries something else cannot spoil the other. */
    int64_t tick_ms[2];
    bool have_tick[2];
} hf_notes = {.mu = PTHREAD_MUTEX_INITIALIZER};

enum { HF_TICK_RESULT, HF_TICK_SWITCH };

/* Which channel a cmiWavelengthN mode is, 0 if none (wlmData.h). */
static int hf_wavelength_mode_channel(int32_t mode) {
    if (mode == 42 || mode == 43)
        return mode - 41;
    if (mode >= 90 && mode <= 95)
        return mode - 87;
    if (mode == 1130)
        return 9;
    if (mode >= 1355 && mode <= 1362)
        return mode - 1345;
    return 0;
}

/* Under hf_notes.mu: the vendor's 32-bit ms tick, unwrapped. */
static int64_t hf_unwrap_tick(int kind, int32_t tick) {
    if (!hf_notes.have_tick[kind]) {
        hf_notes.tick_ms[kind] = tick;
        hf_notes.have_tick[kind] = true;
    } else {
        hf_notes.tick_ms[kind] += (int32_t)((uint32_t)tick - (uint32_t)hf_notes.tick_ms[kind]);
    }
    return hf_notes.tick_ms[kind];
}

#define WLM_CMI_SWITCHER_CHANNEL 203

static void hf_notify(int32_t ver, int32_t mode, int32_t intval, double dblval, int32_t res1) {
    int ch;

    (void)ver;
    if (mode == WLM_CMI_TIME_PER_MEAS) {
        if (intval > 0)
            atomic_store(&hf_notified_period_ms, (int)intval);
        return;
    }
    if (mode == WLM_CMI_SWITCHER_CHANNEL) {
        int64_t now_ns = (int64_t)clock_now_ns(hf_notes.clk);

        pthread_mutex_lock(&hf_notes.mu);
        hf_notes.offsets_ns[hf_notes.offsets_head] =
            now_ns - hf_unwrap_tick(HF_TICK_SWITCH, res1) * 1000000;
        hf_notes.offsets_head = (hf_notes.offsets_head + 1) % HF_NOTE_OFFSETS;
        if (hf_notes.noffsets < HF_NOTE_OFFSETS)
            hf_notes.noffsets++;
        pthread_mutex_unlock(&hf_notes.mu);
        return;
    }
    if ((ch = hf_wavelength_mode_channel(mode)) == 0 || !(dblval > 0))
        return;
    pthread_mutex_lock(&hf_notes.mu);
    hf_notes.results[ch][hf_notes.head[ch]].nm = dblval;
    hf_notes.results[ch][hf_notes.head[ch]].tick_ms = hf_unwrap_tick(HF_TICK_RESULT, intval);
    hf_notes.head[ch] = (hf_notes.head[ch] + 1) % HF_NOTE_RESULTS;
    pthread_mutex_unlock(&hf_notes.mu);
}

/*
 * When result thz of channel ch ended its exposure, on our clock: from its
 * notification and the clock offset. false when either is unknown (no
 * notifications, no switch has moved yet, or the result was not notified).
 */
static bool hf_measured_at(int32_t ch, double thz, uint64_t *end_ns) {
    double nm = 299792.458 / thz;
    bool found = false;
    int64_t tick_ms = 0, offset_ns = INT64_MAX;

    if (ch < 1 || ch > HF_CHANNELS_MAX)
        return false;
    pthread_mutex_lock(&hf_notes.mu);
    for (unsigned k = 1; k <= HF_NOTE_RESULTS && !found; k++) {
        unsigned i = (hf_notes.head[ch] + HF_NOTE_RESULTS - k) % HF_NOTE_RESULTS;
        double x = hf_notes.results[ch][i].nm;

        /* The same measurement gives the same number both ways, to a few
         * ulp of the conversion: 1e-12 tells neighbours apart (0.4 kHz). */
        if (x > 0 && fabs(x - nm) <= 1e-12 * nm) {
            found = true;
            tick_ms = hf_notes.results[ch][i].tick_ms;
        }
    }
    for (unsigned k = 0; k < hf_notes.noffsets; k++)
        if (hf_notes.offsets_ns[k] < offset_ns)
            offset_ns = hf_notes.offsets_ns[k];
    pthread_mutex_unlock(&hf_notes.mu);
    if (!found || offset_ns == INT64_MAX || tick_ms * 1000000 + offset_ns <= 0)
        return false;
    *end_ns = (uint64_t)(tick_ms * 1000000 + offset_ns);
    return true;
}

/*
 * Vendor thread, at open: the vendor's own freshness mechanisms, where the
 * library has them. Return mode "new values only" hands each result out
 * once (then ErrNoNewValueYet): a measurement can never reach a lock twice.
 * The notification callback tells the real measurement period.
 */
static void hf_probe_modes(struct hf_dev *d) {
    intptr_t r;

    if (d->api.Instantiate == NULL) {
        log_info("wavemeter: libwlmData has no Instantiate: results are told apart by value "
                 "(the same value twice is one measurement)");
        return;
    }
    hf_call_begin(d, "Instantiate");
    r = d->api.Instantiate(WLM_INST_RETURN_MODE, 1, 0, 0);
    hf_call_end(d);
    d->read_once = r != 0;
    pthread_mutex_lock(&hf_notes.mu);
    hf_notes.clk = d->clk;
    pthread_mutex_unlock(&hf_notes.mu);
    hf_call_begin(d, "Instantiate");
    r = d->api.Instantiate(WLM_INST_NOTIFICATION, WLM_NOTIFY_INSTALL_EX, (intptr_t)hf_notify, 0);
    hf_call_end(d);
    d->notified = r != 0;
    log_info("wavemeter: results %s; measurement period %s",
             d->read_once ? "read once" : "by value",
             d->notified ? "notified by the instrument" : "estimated from the exposures");
}

/*
 * Vendor thread, the job of open: load the library, find its functions and
 * check that a server answers (the library reads its ini file and connects
 * when loaded or first called, which may block like any call). Fails with
 * j->err naming the library path or the missing server.
 */
static int hf_probe(struct hf_dev *d, struct hf_job *j) {
    const char *path = j->path;
    void *analog_sym;
    int32_t count, type, serial, res;
    uint16_t op;
    int rc;

    hf_call_begin(d, "dlopen");
    dlerror(); /* dlerror is per thread: this one */
    d->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    hf_call_end(d);
    if (d->lib == NULL) {
        const char *why = dlerror();

        snprintf(j->err, sizeof(j->err),
                 "cannot load %s: %s (install the HighFinesse Linux library or set "
                 "wavemeter.library)",
                 path, why ? why : "unknown error");
        return -ENOENT;
    }
    for (size_t i = 0; i < sizeof(wlm_symbols) / sizeof(wlm_symbols[0]); i++) {
        void *sym;

        dlerror();
        if ((sym = dlsym(d->lib, wlm_symbols[i].name)) == NULL) {
            const char *why = dlerror();

            snprintf(j->err, sizeof(j->err),
                     "%s has no function %s (%s): not HighFinesse's libwlmData.so, or too old",
                     path, wlm_symbols[i].name, why ? why : "null symbol");
            return -ENOENT;
        }
        memcpy((char *)&d->api + wlm_symbols[i].offset, &sym, sizeof(sym));
    }
    /* Optional: without it the wavemeter still measures; analog_out then
     * says why it cannot. */
    analog_sym = dlsym(d->lib, "SetDeviationSignalNum");
    memcpy(&d->api.SetDeviationSignalNum, &analog_sym, sizeof(analog_sym));
    j->analog = analog_sym != NULL;
    for (size_t i = 0; i < sizeof(wlm_optional) / sizeof(wlm_optional[0]); i++) {
        void *sym = dlsym(d->lib, wlm_optional[i].name);

        memcpy((char *)&d->api + wlm_optional[i].offset, &sym, sizeof(sym));
    }
    if (!j->analog)
        log_info("wavemeter: %s has no SetDeviationSignalNum: the wavemeter's analog outputs "
                 "cannot be used",
                 path);

    if ((count = WLM_I32(d, GetWLMCount, 0)) <= 0) {
        snprintf(j->err, sizeof(j->err),
                 "no wavemeter server (GetWLMCount = %d): is wlmDataServer running and "
                 "wlmData.ini pointing at it?",
                 (int)count);
        return -ENODEV;
    }
    type = WLM_I32(d, GetWLMVersion, 0);
    serial = WLM_I32(d, GetWLMVersion, 1);
    log_info("wavemeter: HighFinesse %s%d, serial %d, via %s (%d wavemeter%s on the server)",
             type == 5 ? "LSA type " : "WS", (int)type, (int)serial, path, (int)count,
             count == 1 ? "" : "s");
    if ((op = WLM_U16(d, GetOperationState, 0)) != WLM_OP_MEASUREMENT)
        log_warnx("wavemeter: the WLM is not measuring (operation state %u): start the "
                  "measurement in the wavemeter software",
                  (unsigned)op);
    if ((rc = hf_probe_channels(d, j)) < 0)
        return rc;
    if (d->owns_switch && d->cycling) {
        d->saved_switch_mode =
            d->api.GetSwitcherMode != NULL ? WLM_I32(d, GetSwitcherMode, 0) : (int32_t)-1;
        if ((rc = hf_setup_cycling(d, j->err, sizeof(j->err))) < 0)
            return rc;
    } else if (d->owns_switch) {
        d->saved_switch_mode =
            d->api.GetSwitcherMode != NULL ? WLM_I32(d, GetSwitcherMode, 0) : (int32_t)-1;
        if ((res = WLM_I32(d, SetSwitcherMode, 0)) != 0) {
            char buf[24];
            const char *name = set_error_name(res, &rc, buf, sizeof(buf));

            snprintf(j->err, sizeof(j->err),
                     "cannot put the switch in manual mode: SetSwitcherMode(0) = %s", name);
            return rc;
        }
        log_info("wavemeter: switch in manual mode, %d channel%s enabled", j->nenabled,
                 j->nenabled == 1 ? "" : "s");
    }
    hf_probe_modes(d);
    return 0;
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

/* Map the final value of GetFrequencyNum into out. A channel's own
 * condition is a status with rc 0; only a device failure (the server or
 * the wavemeter gone) is rc < 0, which stops the meter. */
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
    if ((e = get_error_find(code)) == NULL) {
        hf_fail(out, -EIO, "GetFrequencyNum: unknown vendor error %g", v);
        return 0;
    }
    if (e->status != WM_ERROR) {
        out->status = e->status;
        return 0;
    }
    hf_fail(out, e->err, "GetFrequencyNum: %s (%d): %s", e->name, e->code, e->why);
    return e->hopeless ? e->err : 0;
}

/* The measurement period: what the instrument last notified, else the
 * exposures plus the readout. */

static uint64_t hf_period_ms(const struct hf_dev *d, int32_t ch, int exposure_ms,
                             int exposure2_ms) {
    int notified = d->notified ? atomic_load(&hf_notified_period_ms) : 0;
    int used = ch >= 0 && ch <= CONFIG_MAX_LASERS ? d->used_exposure_ms[ch] : 0;
    /* The notification tells the period of the measurement under way,
     * which may be another channel's: never plan with less than this
     * channel's own exposure (the one it last used, under auto-exposure). */
    uint64_t own = (uint64_t)(used > exposure_ms ? used
                              : exposure_ms > 0  ? exposure_ms
                                                 : 0) +
                   (uint64_t)(exposure2_ms > 0 ? exposure2_ms : 0) + WLM_READOUT_MS;

    return (uint64_t)notified > own ? (uint64_t)notified : own;
}

/*
 * Vendor thread: put channel ch's exposure settings in place where they
 * differ from what we last set (0 = unknown: after open, or after the
 * server may have restarted). Returns 1 if anything changed (the pipeline
 * then holds results of the old exposure), 0, or < 0 with out filled.
 */
static int hf_apply_exposure(struct hf_dev *d, int32_t ch, int exposure_ms,
                             const struct hf_chan *hc, struct wm_sample *out) {
    /* The cache key: auto mode, or the two exposures. */
    int want = hc && hc->auto_exposure ? -1 : exposure_ms * 10000 + (hc ? hc->exposure2_ms : 0);
    char buf[24];
    int32_t res;
    int rc;

    if (d->exposure_ms[ch] == want || (exposure_ms <= 0 && !(hc && hc->auto_exposure)))
        return 0;
    if (d->api.SetExposureModeNum != NULL) {
        hf_call_begin(d, "SetExposureModeNum");
        res = d->api.SetExposureModeNum(ch, hc && hc->auto_exposure ? 1 : 0);
        hf_call_end(d);
        if (res != 0) {
            const char *name = set_error_name(res, &rc, buf, sizeof(buf));
            hf_fail(out, rc, "SetExposureModeNum(%d, %d): %s", (int)ch, hc && hc->auto_exposure,
                    name);
            return set_error_is_channel(res) ? HF_CHANNEL_ERROR : rc;
        }
    }
    if (!(hc && hc->auto_exposure)) {
        if ((res = hf_call_set_exposure(d, ch, 1, exposure_ms)) != 0) {
            const char *name = set_error_name(res, &rc, buf, sizeof(buf));
            hf_fail(out, rc, "SetExposureNum(%d, 1, %d): %s", (int)ch, exposure_ms, name);
            return set_error_is_channel(res) ? HF_CHANNEL_ERROR : rc;
        }
        if (hc && hc->exposure2_ms > 0 &&
            (res = hf_call_set_exposure(d, ch, 2, hc->exposure2_ms)) != 0) {
            const char *name = set_error_name(res, &rc, buf, sizeof(buf));
            hf_fail(out, rc, "SetExposureNum(%d, 2, %d): %s", (int)ch, hc->exposure2_ms, name);
            return set_error_is_channel(res) ? HF_CHANNEL_ERROR : rc;
        }
    }
    d->exposure_ms[ch] = want;
    return 1;
}

/*
 * Vendor thread: wait for the next new result of channel ch and return it
 * in *v, stamped in out->t_ns at the first poll that saw it. New means: in
 * read-once mode, any result the library hands out (it gives each once);
 * otherwise a value that differs bit for bit from the last one of that
 * channel (the same value again is the same measurement). "Not yet"
 * answers (ErrNoValue 0, ErrNoValueYet, ErrNoNewValueYet) are waited out,
 * polling a few times per period. 0, or -ETIMEDOUT at the deadline.
 */
static int hf_next_result(struct hf_dev *d, int32_t ch, uint64_t period_ms, uint64_t deadline_ns,
                          uint64_t errors_from_ns, double *v, struct wm_sample *out) {
    /* A quarter period, 1 to 5 ms: a result is seen within a few ms of its
     * arrival, at a few calls per measurement. */
    uint64_t poll_ms = period_ms / 4 < 1 ? 1 : period_ms / 4 > 5 ? 5 : period_ms / 4;

    for (;;) {
        double x = WLM_GET_NUM(d, GetFrequencyNum, ch);

        *v = x; /* the last answer, for the message of a timeout */
        int code = x > 0 ? 1 : reading_code(x);
        uint64_t bits;

        if (code != 0 && code != WLM_ERR_NO_VALUE_YET && code != WLM_ERR_NO_NEW_VALUE_YET) {
            memcpy(&bits, &x, sizeof(bits));
            /* Without read-once, an error value repeats for as long as it
             * lasts: it counts once a measurement period has gone by. */
            bool fresh_error = x <= 0 && clock_now_ns(d->clk) >= errors_from_ns;
            if (d->read_once || !d->have_last[ch] || (x > 0 && bits != d->last_bits[ch]) ||
                fresh_error) {
                d->last_bits[ch] = bits;
                d->have_last[ch] = true;
                hf_stamp(d, out);
                *v = x;
                return 0;
            }
        }
        if (x <= 0 && code != INT_MIN) {
            const struct wlm_get_error *e = get_error_find(code);
            if (e != NULL && e->hopeless) {
                *v = x; /* the server is gone: no use waiting */
                hf_stamp(d, out);
                return 0;
            }
        }
        if (!hf_wait(d, deadline_ns, poll_ms))
            return -ETIMEDOUT;
    }
}

/*
 * Vendor thread: no new result came in time. If the instrument is gone or
 * not measuring, that is a device failure (< 0: the meter backs off);
 * otherwise it is this channel's condition, a reading with status error
 * (0), and the schedule goes on to the others.
 */
static int hf_no_result(struct hf_dev *d, int32_t ch, double last, int taken, int flush,
                        uint64_t wait_ms, struct wm_sample *out) {
    const struct wlm_get_error *e = get_error_find(reading_code(last));
    int32_t count = WLM_I32(d, GetWLMCount, 0);
    uint16_t op;

    hf_stamp(d, out);
    if (count <= 0)
        return hf_fail(out, -ENODEV, "no wavemeter server (GetWLMCount = %d)", (int)count);
    if ((op = WLM_U16(d, GetOperationState, 0)) != WLM_OP_MEASUREMENT)
        return hf_fail(out, -EIO, "the WLM is not measuring (operation state %u)", (unsigned)op);
    hf_fail(out, -ENODATA,
            "no new result of channel %d within %llu ms (%d of %d; GetFrequencyNum: %s (%d))",
            (int)ch, (unsigned long long)wait_ms, taken, flush + 1, e ? e->name : "?",
            reading_code(last));
    return 0;
}

/*
 * Stamp a reading at the middle of its exposure. With notifications, from
 * the instrument's own time of that result (however late we fetched it);
 * without, from when it was first seen, less the readout and the pipeline
 * ahead of it.
 */
static void hf_unlag(const struct hf_dev *d, int32_t ch, double v, struct wm_sample *out,
                     uint64_t period_ms, int exposure_ms) {
    uint64_t half_ns = (uint64_t)(exposure_ms > 0 ? exposure_ms : 0) * 500000u;
    uint64_t lag_ns, end_ns;

    /* A notified time further back than the pipeline and a few periods
     * is not this result's (an old identical value, or a tick that means
     * something else): the estimate below is then better. */
    uint64_t bound_ns =
        ((uint64_t)(WLM_FLUSH_READS + 2) * period_ms + WLM_READOUT_MS + HF_RESULT_SLACK_MS) *
        1000000u;

    if (d->notified && v > 0 && hf_measured_at(ch, v, &end_ns) && end_ns <= out->t_ns &&
        out->t_ns - end_ns <= bound_ns) {
        lag_ns = out->t_ns - end_ns + half_ns;
    } else {
        lag_ns =
            ((uint64_t)(WLM_FLUSH_READS - 1) * period_ms + WLM_READOUT_MS) * 1000000u + half_ns;
    }
    if (out->t_ns > lag_ns) {
        out->t_ns -= lag_ns;
        out->time_unix -= (double)lag_ns * 1e-9;
    }
}

/* The exposure the instrument used (auto-exposure moves it). */
static void hf_exposure_used(struct hf_dev *d, int32_t ch, struct wm_sample *out) {
    int32_t used;

    if (d->api.GetExposureNum == NULL)
        return;
    hf_call_begin(d, "GetExposureNum");
    used = d->api.GetExposureNum(ch, 1, 0);
    hf_call_end(d);
    if (used > 0) {
        out->exposure_ms = (int)used;
        d->used_exposure_ms[ch] = (int)used;
    }
}

/*
 * Vendor thread, switch mode "cycling": the next result the instrument
 * files under this channel is this channel's (it knows what it measured),
 * so a read is a wait for it: at most about one cycle.
 */
static int hf_read_cycling(struct hf_dev *d, const struct wm_read_req *req, struct wm_sample *out,
                           uint64_t deadline_ns) {
    const struct hf_chan *hc = req->chan;
    int32_t ch = req->channel;
    uint64_t period_ms = hf_period_ms(d, req->channel, req->exposure_ms, hc ? hc->exposure2_ms : 0);
    uint64_t cycle_ms = d->cycle_seen_ms > d->cycle_ms ? d->cycle_seen_ms : d->cycle_ms;
    uint64_t wait_ms = 2 * cycle_ms + HF_RESULT_SLACK_MS, chan_deadline_ns;
    const struct wlm_get_error *e;
    int flush = 0, rc;
    double v = 0;
    char why[sizeof(out->detail)];

    /* After a device error (a server restart) the cycling is set up again. */
    if (d->cycling_lost && (rc = hf_setup_cycling(d, why, sizeof(why))) < 0) {
        hf_stamp(d, out);
        return hf_fail(out, rc, "%s", why);
    }
    if ((rc = hf_apply_exposure(d, ch, req->exposure_ms, hc, out)) < 0)
        return rc;
    if (rc == HF_CHANNEL_ERROR) {
        hf_stamp(d, out);
        return 0;
    }
    if (rc > 0) {
        /* A result of the old exposure may be on its way: one more cycle. */
        flush = WLM_FLUSH_READS;
        wait_ms += (uint64_t)flush * cycle_ms;
    }
    chan_deadline_ns = clock_now_ns(d->clk) + wait_ms * 1000000u;
    if (chan_deadline_ns > deadline_ns)
        chan_deadline_ns = deadline_ns;
    for (int taken = 0; taken <= flush; taken++) {
        if (hf_next_result(d, ch, period_ms, chan_deadline_ns,
                           clock_now_ns(d->clk) + period_ms * 1000000u, &v, out) < 0)
            return hf_no_result(d, ch, v, taken, flush, wait_ms, out);
        if (v <= 0 && (e = get_error_find(reading_code(v))) != NULL && e->hopeless)
            break;
    }
    /* What a cycle really takes (auto-exposure, a slow PC): the time
     * between two results of this channel, smoothed. */
    if (d->last_seen_ns[ch] != 0 && out->t_ns > d->last_seen_ns[ch]) {
        uint64_t gap_ms = (out->t_ns - d->last_seen_ns[ch]) / 1000000u;
        if (gap_ms < 60000)
            d->cycle_seen_ms = d->cycle_seen_ms ? (3 * d->cycle_seen_ms + gap_ms) / 4 : gap_ms;
    }
    d->last_seen_ns[ch] = out->t_ns;
    hf_exposure_used(d, ch, out);
    hf_unlag(d, ch, v, out, period_ms, out->exposure_ms);
    return hf_map(v, out);
}

/* Vendor thread: one read, all of it (see docs/HIGHFINESSE.md). */
static int hf_read_calls(struct hf_dev *d, const struct wm_read_req *req, struct wm_sample *out,
                         uint64_t deadline_ns) {
    const struct hf_chan *hc = req->chan;
    int32_t ch = req->channel, res, sw_before = ch, sw_after;
    int flush = 0, taken, rc;
    uint64_t period_ms = hf_period_ms(d, req->channel, req->exposure_ms, hc ? hc->exposure2_ms : 0);
    const struct wlm_get_error *e;
    char buf[24];
    double v = 0;

    if (d->cycling)
        return hf_read_cycling(d, req, out, deadline_ns);
    if (d->owns_switch) {
        sw_before = WLM_I32(d, GetSwitcherChannel, 0);
        if (sw_before < 0 && (e = get_error_find(sw_before)) != NULL && e->hopeless)
            return hf_fail(out, e->err, "GetSwitcherChannel: %s (%d): %s", e->name, e->code,
                           e->why);
        /* Also move it back when someone else has moved it since our last
         * read, which the scheduler cannot know. */
        if (req->switched || sw_before != ch) {
            if (!req->switched)
                log_debug("wavemeter: channel %d: switch found on %d, moving it back", (int)ch,
                          (int)sw_before);
            if ((res = WLM_I32(d, SetSwitcherChannel, ch)) != 0) {
                const char *name = set_error_name(res, &rc, buf, sizeof(buf));

                hf_stamp(d, out);
                hf_fail(out, rc, "SetSwitcherChannel(%d): %s", (int)ch, name);
                /* A channel the switch lacks is that laser's error. */
                return set_error_is_channel(res) ? 0 : rc;
            }
            if (!hf_wait(d, deadline_ns, (uint64_t)(req->settle_ms > 0 ? req->settle_ms : 0)))
                return hf_fail(out, -ETIMEDOUT, "read timed out after %d ms (settle %d ms)",
                               req->timeout_ms, req->settle_ms);
            flush = WLM_FLUSH_READS;
            sw_before = WLM_I32(d, GetSwitcherChannel, 0);
        }
    }
    /* An external switch moved the light (the meter says switched, and we
     * did not move our own): the pipeline still holds the old fibre's
     * results, which must never pass for this channel's. */
    if (!d->owns_switch && req->switched)
        flush = WLM_FLUSH_READS;
    if ((rc = hf_apply_exposure(d, ch, req->exposure_ms, hc, out)) < 0)
        return rc;
    if (rc == HF_CHANNEL_ERROR) {
        hf_stamp(d, out);
        return 0;
    }
    if (rc > 0)
        flush = WLM_FLUSH_READS;

    /* After a switch or an exposure change: first take whatever result is
     * waiting now (it was measured before the change, however recently it
     * appeared), then count results as they come: the first flush of them
     * may still hold the old light or exposure; the one after is this
     * channel's. */
    if (flush > 0) {
        double x = WLM_GET_NUM(d, GetFrequencyNum, ch);

        memcpy(&d->last_bits[ch], &x, sizeof(x));
        d->have_last[ch] = true;
    }
    /* A channel that yields nothing (a vendor "no value" each time) is
     * that channel's problem: it gets a few periods beyond its flush, not
     * the whole read timeout, so it does not hold up the others. */
    uint64_t wait_ms = (uint64_t)(flush + 4) * period_ms + HF_RESULT_SLACK_MS;
    uint64_t chan_deadline_ns = clock_now_ns(d->clk) + wait_ms * 1000000u;
    if (chan_deadline_ns > deadline_ns)
        chan_deadline_ns = deadline_ns;
    for (taken = 0; taken <= flush; taken++) {
        if (hf_next_result(d, ch, period_ms, chan_deadline_ns,
                           clock_now_ns(d->clk) + period_ms * 1000000u, &v, out) < 0) {
            /* Results went to another channel: someone moved the switch. */
            if (d->owns_switch && (sw_after = WLM_I32(d, GetSwitcherChannel, 0)) != ch) {
                if (sw_after < 0 && (e = get_error_find(sw_after)) != NULL && e->hopeless) {
                    hf_stamp(d, out);
                    return hf_fail(out, e->err, "GetSwitcherChannel: %s (%d): %s", e->name, e->code,
                                   e->why);
                }
                log_debug("wavemeter: channel %d: switch on %d before and %d after the "
                          "measurement: reading straddles a switch",
                          (int)ch, (int)sw_before, (int)sw_after);
                hf_stamp(d, out);
                out->straddled = true;
                hf_fail(out, -EAGAIN, "the switch was moved to channel %d during the read",
                        (int)sw_after);
                return 0;
            }
            return hf_no_result(d, ch, v, taken, flush, wait_ms, out);
        }
        if (v <= 0 && (e = get_error_find(reading_code(v))) != NULL && e->hopeless)
            break; /* the server is gone: no use waiting out the pipeline */
    }
    hf_exposure_used(d, ch, out);
    hf_unlag(d, ch, v, out, period_ms, out->exposure_ms);

    if (d->owns_switch) {
        sw_after = WLM_I32(d, GetSwitcherChannel, 0);
        if (sw_before != ch || sw_after != ch) {
            out->straddled = true;
            log_debug("wavemeter: channel %d: switch on %d before and %d after the measurement: "
                      "reading straddles a switch",
                      (int)ch, (int)sw_before, (int)sw_after);
        }
    }
    return hf_map(v, out);
}

/* Vendor thread, the job of a read. */
static int hf_read_job(struct hf_dev *d, struct hf_job *j) {
    int rc = hf_read_calls(d, &j->req, &j->out, j->deadline_ns);

    if (rc < 0) {
        /* The server may have restarted with its own settings: set the
         * exposures again (the switch position is checked on every read),
         * and the cycling. */
        memset(d->exposure_ms, 0, sizeof(d->exposure_ms));
        d->cycling_lost = d->cycling;
        if (j->out.t_ns == 0)
            hf_stamp(d, &j->out);
    }
    return rc;
}

/* Vendor thread, the job of analog_out: one SetDeviationSignalNum. */
static int hf_analog_job(struct hf_dev *d, struct hf_job *j) {
    char buf[24];
    const char *name;
    int32_t res;
    int rc;

    hf_call_begin(d, "SetDeviationSignalNum");
    res = d->api.SetDeviationSignalNum(j->port, j->mv);
    hf_call_end(d);
    if (res == 0)
        return 0;
    name = set_error_name(res, &rc, buf, sizeof(buf));
    snprintf(j->err, sizeof(j->err), "SetDeviationSignalNum(%d, %.1f mV): %s%s", j->port, j->mv,
             name,
             res == -21 /* ResERR_NoTCPLegitimation */
                 ? ": wlmDataServer refuses writes from this client"
                 : "");
    return rc;
}

/* The vendor thread: runs the posted jobs one at a time until told to stop. */
static void *hf_thread(void *arg) {
    struct hf_dev *d = arg;
    bool orphaned;

    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->posted && !d->stop)
            pthread_cond_wait(&d->cond, &d->mu);
        if (d->stop)
            break;
        d->posted = false;
        d->running = true;
        pthread_mutex_unlock(&d->mu);
        d->job.rc = d->job.run(d, &d->job);
        pthread_mutex_lock(&d->mu);
        d->running = false;
        if (d->abandoned) {
            /* Its caller has long given up: drop the result. The server may
             * have restarted meanwhile: set the exposures again. */
            uint64_t blocked_ms = (clock_now_ns(d->clk) - d->stuck_since_ns) / 1000000u;

            d->abandoned = false;
            memset(d->exposure_ms, 0, sizeof(d->exposure_ms));
            if (!d->stop)
                log_notice("wavemeter: libwlmData call %s returned after %llu ms: reading again",
                           d->stuck_call, (unsigned long long)blocked_ms);
        }
        pthread_cond_broadcast(&d->cond);
    }
    orphaned = d->orphaned;
    pthread_mutex_unlock(&d->mu);
    if (orphaned)
        hf_free(d, false); /* hf_close has left; the process is exiting anyway */
    return NULL;
}

/*
 * Open's thread or a pool thread: run *j on the vendor thread and wait for it
 * at most timeout_ms, counting the wait for another caller's job to finish
 * (reads and analog outputs take turns, in no promised order). Returns 0
 * with *j replaced by the finished job, or -ETIMEDOUT with why filled. A job
 * still in a vendor call at the deadline is abandoned and the device is
 * hung: until that call returns, every hf_run fails at once and queues
 * nothing behind it.
 */
static int hf_run(struct hf_dev *d, struct hf_job *j, int timeout_ms, char *why, size_t whylen) {
    struct timespec ts;
    int rc = 0;

    /* On the clock the condition variable waits on (hf_open sets it), not
     * on d->clk: this is a real wait whatever clock the schedule uses. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&d->mu);
    /* Another caller's job is in flight and that caller is still waiting
     * for it: a live job, not a hung one, so wait for our turn. */
    while (d->claimed && rc == 0)
        rc = pthread_cond_timedwait(&d->cond, &d->mu, &ts);
    if (rc != 0) {
        snprintf(why, whylen, "libwlmData busy with a %s for all of %d ms (%s not started)",
                 d->claimed ? d->job.what : "job", timeout_ms, j->what);
        pthread_mutex_unlock(&d->mu);
        return -ETIMEDOUT;
    }
    if (d->running) {
        /* Nobody waits for this job: its caller gave up on it (hung). */
        if (d->call != NULL)
            snprintf(why, whylen,
                     "libwlmData call %s still blocked after %llu ms (wlmDataServer unreachable?)",
                     d->call,
                     (unsigned long long)((clock_now_ns(d->clk) - d->call_start_ns) / 1000000u));
        else
            snprintf(why, whylen, "libwlmData: the previous %s is still finishing", d->job.what);
        pthread_mutex_unlock(&d->mu);
        return -ETIMEDOUT;
    }
    d->claimed = true;
    d->job = *j;
    d->posted = true;
    pthread_cond_broadcast(&d->cond);
    while ((d->posted || d->running) && rc == 0)
        rc = pthread_cond_timedwait(&d->cond, &d->mu, &ts);

    if (!d->posted && !d->running) {
        *j = d->job; /* done, if only just at the deadline */
        rc = 0;
    } else if (d->posted) {
        /* Never started (an overloaded machine): nothing is stuck. */
        d->posted = false;
        snprintf(why, whylen, "libwlmData thread did not start the %s within %d ms", j->what,
                 timeout_ms);
        rc = -ETIMEDOUT;
    } else {
        d->abandoned = true;
        d->stuck_call = d->call != NULL ? d->call : "(between calls)";
        d->stuck_since_ns = d->call != NULL ? d->call_start_ns : clock_now_ns(d->clk);
        if (d->call != NULL)
            snprintf(why, whylen,
                     "libwlmData call %s did not return within %d ms (wlmDataServer unreachable?)",
                     d->call, timeout_ms);
        else
            snprintf(why, whylen, "libwlmData %s did not finish within %d ms", j->what, timeout_ms);
        rc = -ETIMEDOUT;
    }
    /* The next caller's turn (or its prompt failure, if this job hung). */
    d->claimed = false;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

/*
 * Loop thread, at exit or when open fails; no read or analog output is in
 * flight (the actuators that write through this device are closed first, as
 * they hold it). Joins the vendor thread when it is idle. When it is stuck
 * in a vendor call that may never return (the device is hung), close does
 * not wait for ever: it detaches the thread, hands it the device to free
 * should the call ever return, and leaves the library loaded, since dlclose
 * would unmap the code the call runs in. The process is exiting anyway.
 */
/* Vendor thread, the job of close: leave the instrument as we found it:
 * its switch mode, "always the latest" results, no callback of ours. */
static int hf_restore_job(struct hf_dev *d, struct hf_job *j) {
    (void)j;
    /* Back to the mode it had, whichever of ours it is in now, with the
     * channels the lab had in use. */
    if (d->owns_switch && d->saved_switch_mode >= 0)
        (void)WLM_I32(d, SetSwitcherMode, d->saved_switch_mode);
    if (d->have_signal_states && d->api.SetSwitcherSignalStates != NULL) {
        for (int ch = 1; ch <= CONFIG_MAX_LASERS; ch++) {
            if (d->signal_use[ch] < 0)
                continue;
            hf_call_begin(d, "SetSwitcherSignalStates");
            (void)d->api.SetSwitcherSignalStates(ch, d->signal_use[ch], d->signal_show[ch]);
            hf_call_end(d);
        }
    }
    if (d->api.Instantiate != NULL && d->notified) {
        hf_call_begin(d, "Instantiate");
        (void)d->api.Instantiate(WLM_INST_NOTIFICATION, WLM_NOTIFY_REMOVE, 0, 0);
        hf_call_end(d);
    }
    if (d->api.Instantiate != NULL && d->read_once) {
        hf_call_begin(d, "Instantiate");
        (void)d->api.Instantiate(WLM_INST_RETURN_MODE, 0, 0, 0);
        hf_call_end(d);
    }
    return 0;
}

/* A second, at most, to put things back: a hung server gets no more. */
#define HF_RESTORE_TIMEOUT_MS 1000

static void hf_close(void *dev) {
    struct hf_dev *d = dev;
    pthread_t thread;
    const char *call;
    bool stuck;

    if (d == NULL)
        return;
    if (d->lib != NULL) {
        struct hf_job j = {.run = hf_restore_job, .what = "restore at close"};
        char why[128];

        if (hf_run(d, &j, HF_RESTORE_TIMEOUT_MS, why, sizeof(why)) < 0)
            log_warnx("wavemeter: at close: %s", why);
    }
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    stuck = d->orphaned = d->running;
    call = d->call != NULL ? d->call : d->stuck_call;
    thread = d->thread;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
    if (stuck) {
        /* d now belongs to the vendor thread: touch it no more. */
        log_warnx("wavemeter: libwlmData call %s still blocked at close: leaving its thread "
                  "behind and the library loaded",
                  call != NULL ? call : "(none)");
        pthread_detach(thread);
        return;
    }
    pthread_join(thread, NULL);
    hf_free(d, true);
}

static int hf_open(const struct wm_open_args *a, void **devp, char *err, size_t errlen) {
    const struct hf_settings *s = a->settings;
    const struct config *cfg = a->cfg;
    struct hf_dev *d;
    struct hf_job j = {.run = hf_probe, .what = "start-up probe"};
    char why[sizeof(j.err)];
    pthread_condattr_t ca;
    sigset_t all, old;
    int nenabled = 0, only_channel = 0, rc;

    for (int i = 0; i < cfg->nlasers; i++) {
        if (cfg->lasers[i].enabled) {
            nenabled++;
            only_channel = cfg->lasers[i].channel;
        }
    }
    if (cfg->sw.drv.driver[0] != '\0') {
        /* An external switch picks the light: the wavemeter reads the one
         * input it feeds and never drives its own switcher. */
        nenabled = 1;
        only_channel = cfg->sw.input;
    }
    /* Before the library is loaded: it may read its ini file at once. */
    ini_check_all();

    if ((d = calloc(1, sizeof(*d))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    d->clk = a->clk;
    d->cfg = cfg;
    d->saved_switch_mode = -1;
    d->owns_switch = nenabled > 1 || (nenabled == 1 && only_channel != 1);
    /* Cycling needs a switch of ours with lasers on it; behind an external
     * switch the wavemeter reads one input. */
    d->cycling =
        s->switch_mode == HF_SWITCH_CYCLING && d->owns_switch && cfg->sw.drv.driver[0] == '\0';
    pthread_mutex_init(&d->mu, NULL);
    /* hf_run's deadlines are CLOCK_MONOTONIC: a step of the wall clock must
     * neither cut a read short nor stretch it. */
    pthread_condattr_init(&ca);
    if ((rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC)) == 0)
        rc = pthread_cond_init(&d->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        snprintf(err, errlen, "cannot make a monotonic condition variable: %s", strerror(rc));
        pthread_mutex_destroy(&d->mu);
        free(d);
        return -rc;
    }
    /* The vendor thread takes no signals: they are the loop's business, and
     * the library may not expect its calls to be interrupted (EINTR). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&d->thread, NULL, hf_thread, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the libwlmData thread: %s", strerror(rc));
        hf_free(d, false);
        return -rc;
    }

    /* Loading and the first calls are bounded by the read timeout too: a
     * server that does not answer at start-up is a start-up error. */
    snprintf(j.path, sizeof(j.path), "%s", s->library);
    j.nenabled = nenabled;
    j.cfg = cfg;
    if ((rc = hf_run(d, &j, cfg->read_timeout_ms, why, sizeof(why))) < 0) {
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    if ((rc = j.rc) < 0) {
        snprintf(err, errlen, "%s", j.err);
        goto fail;
    }
    d->analog = j.analog;
    *devp = d;
    return 0;
fail:
    hf_close(d);
    return rc;
}

/* Pool thread: hand the whole read to the vendor thread and wait for it at
 * most req->timeout_ms (see hf_run). */
static int hf_read(void *dev, const struct wm_read_req *req, struct wm_sample *out) {
    struct hf_dev *d = dev;
    struct hf_job j = {.run = hf_read_job, .what = "read", .req = *req};
    int timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : 0;
    int reserve_ms = timeout_ms / 10 < HF_RESERVE_MAX_MS ? timeout_ms / 10 : HF_RESERVE_MAX_MS;
    char why[sizeof(out->detail)];
    int rc;

    memset(out, 0, sizeof(*out));
    out->exposure_ms = req->exposure_ms;
    if (req->channel < 1 || req->channel > CONFIG_MAX_LASERS) {
        hf_stamp(d, out);
        return hf_fail(out, -EINVAL, "channel %d out of range 1..%d", req->channel,
                       CONFIG_MAX_LASERS);
    }
    j.out = *out;
    j.deadline_ns = clock_now_ns(d->clk) + (uint64_t)(timeout_ms - reserve_ms) * 1000000u;
    if ((rc = hf_run(d, &j, timeout_ms, why, sizeof(why))) < 0) {
        hf_stamp(d, out);
        return hf_fail(out, rc, "%s", why);
    }
    *out = j.out;
    return j.rc;
}

/* After a switch: settle, then WLM_FLUSH_READS thrown away and one kept, a
 * measurement period each; and the reserve kept for the hang detection. */
static int hf_worst_read_ms(int exposure_ms, int settle_ms, int timeout_ms) {
    int reserve_ms = timeout_ms / 10 < HF_RESERVE_MAX_MS ? timeout_ms / 10 : HF_RESERVE_MAX_MS;

    return settle_ms + (WLM_FLUSH_READS + 1) * (exposure_ms + WLM_READOUT_MS) + reserve_ms;
}

/*
 * Pool thread: set laser-control output `output` (1-based) to volts, the way
 * a read is run: the one SetDeviationSignalNum call goes to the vendor
 * thread, and this waits for it (and for its turn behind a read) at most
 * timeout_ms. 0, or < 0 with why: -ENOTSUP without the function, -EINVAL
 * for a bad port or value, -ETIMEDOUT, or the ResERR code's errno.
 */
static int hf_analog_out(void *dev, int output, double volts, int timeout_ms, char *why,
                         size_t whylen) {
    struct hf_dev *d = dev;
    struct hf_job j = {.run = hf_analog_job, .what = "analog output"};
    int rc;

    if (!d->analog) {
        snprintf(why, whylen,
                 "libwlmData has no SetDeviationSignalNum (library too old, or built without "
                 "laser control): analog output %d unavailable",
                 output);
        return -ENOTSUP;
    }
    if (output < 1 || output > HF_ANALOG_PORTS) {
        snprintf(why, whylen, "analog output %d out of range 1..%d", output, HF_ANALOG_PORTS);
        return -EINVAL;
    }
    if (!isfinite(volts)) {
        snprintf(why, whylen, "analog output %d: %g V is not a voltage", output, volts);
        return -EINVAL;
    }
    j.port = output;
    j.mv = volts * 1000.0; /* the vendor's unit */
    if ((rc = hf_run(d, &j, timeout_ms > 0 ? timeout_ms : 0, why, whylen)) < 0)
        return rc;
    if (j.rc < 0)
        snprintf(why, whylen, "%s", j.err);
    return j.rc;
}

/* The key table fills it, so it must fit the loader's bytes. */
_Static_assert(sizeof(struct hf_settings) <= CONFIG_SETTINGS_MAX,
               "struct hf_settings outgrew CONFIG_SETTINGS_MAX");

static const char *const hf_switch_modes[] = {"manual", "cycling", NULL};

static const struct cfg_key hf_keys[] = {
    CFG_ROW_STR("library", struct hf_settings, library, "path of the HighFinesse libwlmData.so"),
    CFG_ROW_CHOICE("switch_mode", struct hf_settings, switch_mode, hf_switch_modes,
                   "\"manual\": the daemon moves the switch, earliest deadline first; "
                   "\"cycling\": the instrument cycles through the lasers by itself"),
    CFG_ROW_END,
};

_Static_assert(sizeof(struct hf_chan) <= CONFIG_SETTINGS_MAX, "struct hf_chan too big");

static const struct cfg_key hf_chan_keys[] = {
    CFG_ROW_INT("exposure2_ms", struct hf_chan, exposure2_ms, 0, 9999,
                "additional exposure of the second CCD array (WS7/WS8), in ms; 0 = none"),
    CFG_ROW_BOOL("auto_exposure", struct hf_chan, auto_exposure,
                 "the instrument picks this channel's exposure (exposure_ms is then ignored; "
                 "readings show the one used)"),
    CFG_ROW_END,
};

static void hf_defaults(void *settings) {
    struct hf_settings *s = settings;

    memset(s, 0, sizeof(*s));
    snprintf(s->library, sizeof(s->library), "%s", HF_LIBRARY_DEFAULT);
}

const struct wm_driver highfinesse_driver = {
    .cfg =
        {
            .name = "highfinesse",
            .keys = hf_keys,
            .size = sizeof(struct hf_settings),
            .defaults = hf_defaults,
        },
    .chan = {.name = "highfinesse", .keys = hf_chan_keys, .size = sizeof(struct hf_chan)},
    /* A real wavemeter measures lasers it may not steer: a laser gets an
     * actuator only when its config names one. */
    .default_actuator = NULL,
    .worst_read_ms = hf_worst_read_ms,
    .open = hf_open,
    .close = hf_close,
    .read = hf_read,
    .analog_out = hf_analog_out,
};
