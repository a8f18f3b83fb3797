/*
 * fake_wlmdata: a stand-in for HighFinesse's libwlmData.so (built as
 * libwlmData.so) with the same C ABI on Linux. It is a small instrument with
 * its own clock, scripted by the test, so that only a driver that respects
 * the instrument's timing gets fresh, attributable results. It exports only
 * what wavemeter drivers call and must never be installed.
 *
 * The instrument (CLOCK_MONOTONIC; t0 = when the library was loaded):
 *  1. While it runs (FAKE_WLM_COUNT > 0 and FAKE_WLM_OPSTATE 2) it measures
 *     back to back; a measurement takes P = exposure1 + exposure2 +
 *     FAKE_WLM_READOUT_MS, with the exposures (ms) of the channel the switch
 *     is on when the measurement starts. Its exposure ends at start +
 *     exposure1 + exposure2 (the tick of its result, below).
 *  2. A measurement sees the light of the channel the switch was on when it
 *     started: a switch during an exposure spoils it (old light).
 *  3. Its result becomes visible when FAKE_WLM_PIPELINE_DEPTH - 1 further
 *     measurements have ended (depth 1: at its own end). In manual switch
 *     mode (SetSwitcherMode(0), as the driver sets it to switch by itself)
 *     it is attributed to the channel the switch is on then. So after a
 *     switch the new channel's first depth results hold the old light (the
 *     vendor's trap); the next one is the new light. In cycling mode it is
 *     attributed to the channel it measured (rule 9): no trap.
 *  4. The light of input ch is its FAKE_WLM_FREQS value, tuned by
 *     FAKE_WLM_TUNE, through FAKE_WLM_ROUTE, as it was when the measurement
 *     started; a value <= 0 is the error the measurement yields (-3
 *     underexposed, -14 out of range, ...), for that light only.
 *  5. Nothing runs in the background for results: every call first brings the
 *     instrument up to now. A change of the control file or of a TUNE/ROUTE
 *     file is placed in time by its mtime (all are replaced atomically), one
 *     made by a call (switch, analog output) at the call.
 *  6. Stopped (COUNT 0 or OPSTATE not 2), it does not measure: the measurement
 *     under way is lost, the pipeline and the results are kept, and the next
 *     measurement starts when it runs again.
 *  7. Results are read with GetFrequencyNum (THz) and GetWavelengthNum (nm,
 *     299792.458 / THz; an error value is passed as is). Before any result
 *     for ch: ErrNoValueYet -32 (ErrNoValue 0 with FAKE_WLM_NEW_ERRORS=0).
 *     Default return mode: the newest result of ch, on every call.
 *     Instantiate(cInstReturnMode 0, 1, 0, 0) makes each result readable
 *     once per function, then ErrNoNewValueYet -33 (0 with NEW_ERRORS=0)
 *     until the next; Instantiate(0, 0, 0, 0) restores the default. A result
 *     a function has returned in either mode counts as read by it.
 *  8. Instantiate(cInstNotification 1, cNotifyInstallCallbackEx 4, fn, 0)
 *     starts a thread of the fake that calls
 *     fn(int32_t ver, int32_t mode, int32_t intval, double dblval, int32_t
 *     res1), never while holding the lock the exported functions take, so fn
 *     may call them; ver is FAKE_WLM_SERIAL. Events, in order:
 *       cmiWavelengthN (42, 43, 90..95, 1130, 1355..1362 for ch 1..17) when a
 *         result becomes visible for ch N: intval = the instrument's tick
 *         (ms since t0, like Windows GetTickCount, not our clock) at the end
 *         of the measurement's exposure, dblval = nm or the error value,
 *         res1 = 0;
 *       cmiSwitcherChannel 203 when the switch moves: intval = the new
 *         channel, dblval = 0, res1 = the tick of the move;
 *       cmiTimePerMeasurement 1514 on install and when P changes: intval =
 *         P in ms, dblval = 0, res1 = 0.
 *     Instantiate(1, cNotifyRemoveCallback 1, 0, 0) (and unloading the
 *     library) stops the thread; after it returns fn is not called again.
 *     Unread events beyond 1024 are dropped, oldest first.
 *  9. Switch modes: GetSwitcherMode returns what SetSwitcherMode last set; 0
 *     is manual (the switch moves only by SetSwitcherChannel), any other
 *     value cycling, and the fake starts in 1 with no channel in use (the
 *     switch then stays put, so it measures one channel as in manual mode
 *     but without the trap). SetSwitcherSignalStates(ch, use, show) puts
 *     channel ch in the cycle or takes it out (show is only stored);
 *     GetSwitcherSignalStates(ch, &use, &show) reads them back (0/1). In
 *     cycling mode, whenever a measurement ends (after its result, if any,
 *     became visible) the switch advances by itself to the next channel in
 *     use after its own, ascending and wrapping; it stays when its own is
 *     the only one in use or none is. A move adds FAKE_WLM_CYCLE_SWITCH_MS of
 *     dead time before the next exposure starts; staying adds none. Each
 *     measurement uses its own channel's exposures (rule 1), so P varies
 *     along the cycle, and a channel in use gets a new result once a cycle:
 *     the sum of the P of the channels in use, plus their dead times. Its
 *     result keeps the light of the channel at its start (rule 2) and, when
 *     it becomes visible with the same latency as in rule 3, is filed under
 *     that channel, whatever the switch is on then. Which mode applies is
 *     decided then: after SetSwitcherMode(0) (the switch stays where it is)
 *     the results still in the pipeline are filed under the switch's
 *     channel, as after a manual switch; after SetSwitcherMode(1) those of
 *     manual measurements are filed under the channels they measured.
 *     cmiSwitcherChannel is sent on every move (res1 = the tick of the
 *     measurement's end), cmiWavelengthN per result, cmiTimePerMeasurement
 *     whenever P changes, i.e. along the cycle. SetSwitcherChannel in cycling
 *     mode is not documented by the vendor (its manual describes it for
 *     non-switch mode; pyLabLib leaves cycling mode before calling it): here
 *     the switch moves at once, the measurement under way stays that of its
 *     channel, the next one is of the channel set, without dead time (or
 *     the one waiting out a dead time starts on it as planned), and cycling
 *     goes on from there. FAKE_WLM_FOREIGN_SWITCH moves it the same way.
 * Not modelled: triggers, calibration, the switch's "show" (display only).
 *
 * Script, read on every call: the environment, overridden by the lines
 * NAME=value of the file named by FAKE_WLM_CONTROL (so a test can change it
 * while the daemon runs). Names:
 *   FAKE_WLM_FREQS     "1:384.2281,2:-3": THz per input; a value <= 0 is the
 *                      vendor error code a measurement of it yields; an
 *                      absent channel yields ErrNoValue (0)
 *   FAKE_WLM_COUNT     GetWLMCount result (default 1); 0 (server gone) also
 *                      makes every other get return ErrWlmMissing -5 and
 *                      every set ResERR_WlmMissing -1, and stops the clock
 *                      (GetOperationState and Instantiate answer as usual)
 *   FAKE_WLM_VERSION   GetWLMVersion(0), the type (default 7)
 *   FAKE_WLM_SERIAL    GetWLMVersion(1) and the callback's ver (default 4242)
 *   FAKE_WLM_OPSTATE   GetOperationState (default 2, measuring); another
 *                      value stops the clock
 *   FAKE_WLM_CHANNELS  GetChannelsCount (default 8, at most 32): channels
 *                      outside 1..CHANNELS read ErrChannelNotAvailable -10 and
 *                      are refused by sets with ResERR_ParmOutOfRange -3
 *   FAKE_WLM_PIPELINE_DEPTH  rule 3 (default 3, 1..16); FAKE_WLM_PIPELINE is
 *                      an alias (PIPELINE_DEPTH wins)
 *   FAKE_WLM_READOUT_MS  readout and evaluation time of a measurement
 *                      (default 12, >= 0; P is at least 1 ms)
 *   FAKE_WLM_NEW_ERRORS  1 (default): ErrNoValueYet/ErrNoNewValueYet as in
 *                      2023 headers; 0: ErrNoValue for both, as older ones
 *   FAKE_WLM_EXPO_MIN, FAKE_WLM_EXPO_MAX  exposure range in ms (default 1,
 *                      9999): GetExposureRange(cExpoMin 0, cExpoMax 1,
 *                      cExpo2Min 2, cExpo2Max 3) returns them and
 *                      SetExposureNum refuses values outside them with -3
 *   FAKE_WLM_AUTO_EXPOSURE  "ch:ms,...": exposure1 of ch while its exposure
 *                      mode is auto (default 37 for a channel not listed)
 *   FAKE_WLM_SWITCH_RC what SetSwitcherChannel returns (default 0); non-zero:
 *                      the switch does not move
 *   FAKE_WLM_CYCLE_SWITCH_MS  dead time of a move of the switch in cycling
 *                      mode (rule 9; default 0, >= 0)
 *   FAKE_WLM_FOREIGN_SWITCH  N > 0: every GetFrequencyNum, after its answer,
 *                      moves the switch to channel N, as another program would
 *   FAKE_WLM_BLOCK     "Name:ms" or "Name:hang": every call of the function
 *                      Name (e.g. GetFrequencyNum) first blocks, as on a frozen
 *                      wlmDataServer: for ms milliseconds, or with "hang" until
 *                      the control file's text changes; then it carries on as
 *                      usual (the instrument sees it when it ends). Logged as
 *                      "block Name ms|hang" when it starts.
 *   FAKE_WLM_TUNE      "ch:path:key:mhz_per_v[,...]": input ch's frequency
 *                      follows a fake actuator: its FAKE_WLM_FREQS value plus
 *                      mhz_per_v * V * 1e-6 THz, where V is the number after
 *                      "key=" at the start of a line of the file at path (the
 *                      state_file of tests/e2e/fakeserial.py: key "x" of an
 *                      MDT693B, "ch1" of a DAC box), read by every call; no
 *                      file, key or number: V = 0. An entry
 *                      "ch:@analog<port>:mhz_per_v" (e.g. "2:@analog1:25")
 *                      follows analog output port (1..8) instead, V being what
 *                      SetDeviationSignalNum last set there in mV, / 1000.
 *                      Entries for one channel add up; paths hold no ':' or
 *                      ','; a malformed entry is logged and ignored. A value
 *                      <= 0 in FAKE_WLM_FREQS (an error code) is not tuned.
 *   FAKE_WLM_ROUTE     "ch:path[,...]": input ch shows the light of the
 *                      fibre a switch selected: the (tuned) light of channel
 *                      N, N being the number after "position=" in the file at
 *                      path (fakeserial.py's FakeLeoni state_file); no file,
 *                      or N outside 1..32: ErrNoValue (0).
 *   FAKE_WLM_DEVIATION_RC  what SetDeviationSignalNum returns (default 0);
 *                      non-zero: the value is not stored
 *   FAKE_WLM_LOG       append one line per call: "Name args = result"
 *
 * Exposures: SetExposureNum(ch, array 1|2, ms) / GetExposureNum(ch, array,
 * 0) per channel and CCD array; array 1 starts at 10 ms, array 2 (the second
 * array's additional time) at 0. SetExposureModeNum(ch, auto) /
 * GetExposureModeNum(ch, 0): in auto mode GetExposureNum(ch, 1) and P use
 * FAKE_WLM_AUTO_EXPOSURE; the manual value comes back when auto is turned
 * off. A change applies from the next measurement.
 *
 * Analog outputs: SetDeviationSignalNum(port 1..8, mV) stores the value
 * (ResERR_ParmOutOfRange -3 for another port or a non-finite mV,
 * ResERR_WlmMissing -1 when FAKE_WLM_COUNT is 0); GetDeviationSignalNum
 * returns it (0 before any set; ErrParameterOutOfRange -28 for another port,
 * ErrWlmMissing -5 when FAKE_WLM_COUNT is 0; in-band, as the vendor does,
 * so a negative voltage and an error look alike there).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_CH 32
/* Analog outputs ("deviation" ports) of the laser-control option: WS7/WS8
 * have up to 8. */
#define MAX_PORT 8
/* Entries of FAKE_WLM_TUNE and FAKE_WLM_ROUTE: more than any test needs. */
#define MAX_TUNE 16
#define MAX_ROUTE 8
/* A temp-dir path (fakeserial's are about 80 bytes), and a state file key. */
#define PATH_CAP 256
#define KEY_CAP 32
/* The deepest pipeline: far beyond the 3 measurements seen in the field. */
#define MAX_DEPTH 16
/* Exposure of array 1 before any SetExposureNum: the WLM software keeps one
 * per channel; any plausible value will do, and tests set their own. */
#define INITIAL_EXPOSURE_MS 10
#define AUTO_EXPOSURE_MS 37
/* Events waiting for the callback thread: minutes of results even at the
 * shortest period, if the callback is slow; older ones are dropped. */
#define EVENT_CAP 1024
/* Events handed to the callback per unlocked stretch. */
#define EVENT_BATCH 64
/* How often the callback thread looks at a stopped instrument. */
#define IDLE_POLL_MS 20
/* How long unloading waits for the callback thread, which may be stuck in
 * the callback of an interpreter shutting down, before leaving it behind. */
#define UNLOAD_WAIT_MS 1000

#define NS_PER_MS INT64_C(1000000)
#define NS_PER_S INT64_C(1000000000)

/* From the vendor's wlmData.h. */
enum {
    cInstCheckForWLM = -1,
    cInstReturnMode = 0,
    cInstNotification = 1,
    cNotifyRemoveCallback = 1,
    cNotifyInstallCallbackEx = 4,
    cExpoMin = 0,
    cExpoMax = 1,
    cExpo2Min = 2,
    cExpo2Max = 3,
    cmiSwitcherChannel = 203,
    cmiTimePerMeasurement = 1514,
    ErrNoValue = 0,
    ErrWlmMissing = -5,
    ErrChannelNotAvailable = -10,
    ErrParameterOutOfRange = -28,
    ErrNoValueYet = -32,
    ErrNoNewValueYet = -33,
    ResERR_WlmMissing = -1,
    ResERR_ParmOutOfRange = -3,
};

/* The exported ABI: every "long" of wlmData.h is int32_t on Linux. */
typedef void (*wlm_callback_ex)(int32_t ver, int32_t mode, int32_t intval, double dblval,
                                int32_t res1);
intptr_t Instantiate(int32_t rfc, int32_t mode, intptr_t p1, int32_t p2);
int32_t GetWLMCount(int32_t v);
int32_t GetWLMVersion(int32_t v);
uint16_t GetOperationState(uint16_t v);
int32_t GetChannelsCount(int32_t v);
double GetFrequencyNum(int32_t num, double ignored);
double GetWavelengthNum(int32_t num, double ignored);
int32_t SetExposureNum(int32_t num, int32_t ccd, int32_t ms);
int32_t GetExposureNum(int32_t num, int32_t ccd, int32_t ignored);
int32_t GetExposureRange(int32_t what);
int32_t SetExposureModeNum(int32_t num, bool on);
int32_t GetExposureModeNum(int32_t num, bool ignored);
int32_t GetSwitcherMode(int32_t v);
int32_t SetSwitcherMode(int32_t mode);
int32_t GetSwitcherChannel(int32_t v);
int32_t SetSwitcherChannel(int32_t ch);
int32_t GetSwitcherSignalStates(int32_t signal, int32_t *use, int32_t *show);
int32_t SetSwitcherSignalStates(int32_t signal, int32_t use, int32_t show);
int32_t SetDeviationSignalNum(int32_t port, double mv);
double GetDeviationSignalNum(int32_t port, double ignored);

/* One FAKE_WLM_TUNE entry: channel ch follows analog output port (1..8),
 * or, when port is 0, the number after "key=" in the file at path. */
struct tune {
    int ch, port;
    char path[PATH_CAP], key[KEY_CAP];
    double mhz_per_v;
};

/* One FAKE_WLM_ROUTE entry: input ch shows channel "position=" of path. */
struct route {
    int ch;
    char path[PATH_CAP];
};

struct script {
    double freq[MAX_CH + 1];
    int auto_ms[MAX_CH + 1];
    int count, version, serial, opstate, switch_rc, foreign, deviation_rc, cycle_switch_ms;
    int channels, depth, readout_ms, new_errors, expo_min, expo_max;
    int ntune, nroute;
    struct tune tune[MAX_TUNE];
    struct route route[MAX_ROUTE];
};

/* A measurement's outcome on its way through the pipeline. */
struct result {
    double value;        /* THz, or the error value (<= 0) */
    int64_t expo_end_ns; /* when its exposure ended */
    int ch;              /* the switch's channel when it started */
};

struct event {
    int32_t mode, intval, res1;
    double dblval;
};

/* The instrument. Every field is under mu; the callback thread owns none. */
static struct {
    pthread_mutex_t mu;
    struct script s; /* as loaded by the latest call */
    int32_t switch_mode, switch_channel;
    bool use[MAX_CH + 1], show[MAX_CH + 1]; /* SetSwitcherSignalStates */
    bool set_by_call;                   /* the switch, since the measurement under way started */
    int32_t exposure_ms[MAX_CH + 1][3]; /* [ch][array 1|2] */
    bool auto_exposure[MAX_CH + 1];
    double analog_mv[MAX_PORT + 1];
    /* The clock: everything up to sim_ns has happened. */
    int64_t t0_ns, sim_ns;
    bool observed;
    bool running;             /* as of sim_ns */
    double light[MAX_CH + 1]; /* on each input as of sim_ns */
    bool measuring;
    struct {
        int ch;
        double light;
        int64_t start_ns, expo_end_ns, end_ns; /* start_ns > sim_ns: dead time */
    } cur;
    int32_t period_ms; /* of the latest measurement started */
    struct result pipe[MAX_DEPTH];
    int npipe;
    struct {
        bool have;
        double value;
        uint64_t seq;
    } res[MAX_CH + 1];
    uint64_t freq_read[MAX_CH + 1], wl_read[MAX_CH + 1]; /* seq last returned */
    bool read_once;
    /* Notifications. gen changes whenever a callback thread is started or
     * told to stop; a thread runs while gen is the one it was started with. */
    pthread_cond_t cond; /* events queued, gen changed, a thread ended */
    wlm_callback_ex callback;
    pthread_t thread;
    bool thread_on;
    unsigned gen;
    int threads_alive;
    struct event ev[EVENT_CAP];
    int ev_head, ev_n;
} st = {.mu = PTHREAD_MUTEX_INITIALIZER, .switch_mode = 1, .switch_channel = 1};

/* The value of NAME from the control file's text, else the environment. */
static const char *knob(const char *control, const char *name, char *buf, size_t len) {
    size_t n = strlen(name);
    const char *p = control;

    while (p != NULL && *p != '\0') {
        const char *eol = strchr(p, '\n');
        size_t linelen = eol ? (size_t)(eol - p) : strlen(p);

        if (linelen > n && strncmp(p, name, n) == 0 && p[n] == '=') {
            size_t vlen = linelen - n - 1;

            if (vlen >= len)
                vlen = len - 1;
            memcpy(buf, p + n + 1, vlen);
            buf[vlen] = '\0';
            while (vlen > 0 && (buf[vlen - 1] == '\r' || buf[vlen - 1] == ' '))
                buf[--vlen] = '\0';
            return buf;
        }
        p = eol ? eol + 1 : NULL;
    }
    return getenv(name);
}

static int knob_int(const char *control, const char *name, int dflt) {
    char buf[64];
    const char *v = knob(control, name, buf, sizeof(buf));

    return v != NULL && *v != '\0' ? atoi(v) : dflt;
}

/* The control file's text, "" when there is none. */
static void control_read(char *buf, size_t len) {
    const char *path = getenv("FAKE_WLM_CONTROL");
    FILE *f;

    buf[0] = '\0';
    if (path != NULL && (f = fopen(path, "r")) != NULL) {
        size_t n = fread(buf, 1, len - 1, f);

        buf[n] = '\0';
        fclose(f);
    }
}

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Copies the len bytes at p into buf (cap bytes) as a string; 0 when they
 * do not fit or are empty. */
static int copy_field(char *buf, size_t cap, const char *p, size_t len) {
    if (len == 0 || len >= cap)
        return 0;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return 1;
}

/* Strict: the whole of text is one number (strtol/strtod take a prefix). */
static int whole_long(const char *text, long *out) {
    char *end;

    *out = strtol(text, &end, 10);
    return end != text && *end == '\0';
}

static int whole_double(const char *text, double *out) {
    char *end;

    *out = strtod(text, &end);
    return end != text && *end == '\0' && isfinite(*out);
}

/* One FAKE_WLM_TUNE entry, "ch:path:key:mhz_per_v" or
 * "ch:@analog<port>:mhz_per_v", in item (modified). 1 when well formed. */
static int parse_tune(char *item, struct tune *t) {
    char *field[4];
    int nf = 0;
    long ch, port;

    field[nf++] = item;
    for (char *p = item; *p != '\0' && nf < 4; p++)
        if (*p == ':') {
            *p = '\0';
            field[nf++] = p + 1;
        }
    memset(t, 0, sizeof(*t));
    if (!whole_long(field[0], &ch) || ch < 1 || ch > MAX_CH)
        return 0;
    t->ch = (int)ch;
    if (nf == 3 && strncmp(field[1], "@analog", 7) == 0) {
        if (!whole_long(field[1] + 7, &port) || port < 1 || port > MAX_PORT)
            return 0;
        t->port = (int)port;
        return whole_double(field[2], &t->mhz_per_v);
    }
    return nf == 4 && copy_field(t->path, sizeof(t->path), field[1], strlen(field[1])) &&
           copy_field(t->key, sizeof(t->key), field[2], strlen(field[2])) &&
           whole_double(field[3], &t->mhz_per_v);
}

/* One FAKE_WLM_ROUTE entry, "ch:path", in item (modified). */
static int parse_route(char *item, struct route *r) {
    char *colon = strchr(item, ':');
    long ch;

    if (colon == NULL)
        return 0;
    *colon = '\0';
    if (!whole_long(item, &ch) || ch < 1 || ch > MAX_CH)
        return 0;
    r->ch = (int)ch;
    return copy_field(r->path, sizeof(r->path), colon + 1, strlen(colon + 1));
}

enum list { LIST_TUNE, LIST_ROUTE };

/* Splits the comma-separated list spec into FAKE_WLM_TUNE or FAKE_WLM_ROUTE
 * entries; a malformed or surplus entry is logged, then skipped. */
static void parse_list(struct script *s, enum list which, const char *spec) {
    const char *name = which == LIST_TUNE ? "FAKE_WLM_TUNE" : "FAKE_WLM_ROUTE";
    const char *p = spec;

    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[PATH_CAP + KEY_CAP + 64];
        int ok = 0;

        if (copy_field(item, sizeof(item), p, len)) {
            if (which == LIST_TUNE && s->ntune < MAX_TUNE && parse_tune(item, &s->tune[s->ntune])) {
                s->ntune++;
                ok = 1;
            } else if (which == LIST_ROUTE && s->nroute < MAX_ROUTE &&
                       parse_route(item, &s->route[s->nroute])) {
                s->nroute++;
                ok = 1;
            }
        }
        if (!ok && len > 0)
            trace("%s: bad or surplus entry \"%.*s\" ignored", name, (int)len, p);
        p = comma ? comma + 1 : p + len;
    }
}

static void trace(const char *fmt, ...) {
    const char *path = getenv("FAKE_WLM_LOG");
    va_list ap;
    FILE *f;

    if (path == NULL || (f = fopen(path, "a")) == NULL)
        return;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static int64_t clock_ns(clockid_t id) {
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* FAKE_WLM_BLOCK: called first by every function, with its own name. Polls
 * every 5 ms; takes no lock, so other threads' calls go on meanwhile. */
static void block_if(const char *fn) {
    char control[4096], now[4096], spec[128];
    const struct timespec tick = {0, 5000000};
    const char *v, *how;
    size_t n = strlen(fn);
    int64_t until_ns;
    int hang;

    control_read(control, sizeof(control));
    v = knob(control, "FAKE_WLM_BLOCK", spec, sizeof(spec));
    if (v == NULL || strncmp(v, fn, n) != 0 || v[n] != ':')
        return;
    how = v + n + 1;
    hang = strcmp(how, "hang") == 0;
    until_ns = clock_ns(CLOCK_MONOTONIC) + (hang ? 0 : strtol(how, NULL, 10) * NS_PER_MS);
    trace("block %s %s", fn, how);
    for (;;) {
        if (!hang && clock_ns(CLOCK_MONOTONIC) >= until_ns)
            break;
        nanosleep(&tick, NULL);
        if (hang) {
            control_read(now, sizeof(now));
            if (strcmp(now, control) != 0)
                break;
        }
    }
}

/* The number after "key=" at the start of a line of the file at path, or
 * 0 when there is no file, no such line or no number. The fakes replace
 * their files atomically, so a read never sees half a file. */
static double file_value(const char *path, const char *key) {
    char text[4096];
    size_t n, klen = strlen(key);
    const char *p = text;
    FILE *f = fopen(path, "r");

    if (f == NULL)
        return 0.0;
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    while (p != NULL && *p != '\0') {
        if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
            char *end;
            double v = strtod(p + klen + 1, &end);

            return end != p + klen + 1 && isfinite(v) ? v : 0.0;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    return 0.0;
}

/* Channel ch's frequency (1 <= ch <= MAX_CH): FAKE_WLM_FREQS plus what the
 * FAKE_WLM_TUNE entries for ch add. st.mu held (analog outputs). */
static double tuned(const struct script *s, int ch) {
    double mhz = 0.0;

    if (s->freq[ch] <= 0)
        return s->freq[ch];
    for (int i = 0; i < s->ntune; i++) {
        const struct tune *t = &s->tune[i];

        if (t->ch == ch)
            mhz += t->mhz_per_v *
                   (t->port > 0 ? st.analog_mv[t->port] / 1000.0 : file_value(t->path, t->key));
    }
    return s->freq[ch] + mhz * 1e-6;
}

/* What input ch shows: with a FAKE_WLM_ROUTE entry, the channel its switch
 * selected (ErrNoValue when that is unknown); else its own. st.mu held. */
static double shown(const struct script *s, int ch) {
    for (int i = 0; i < s->nroute; i++) {
        if (s->route[i].ch == ch) {
            double pos = file_value(s->route[i].path, "position");

            if (!(pos >= 1 && pos <= MAX_CH) || pos != (double)(int)pos)
                return 0; /* ErrNoValue */
            return tuned(s, (int)pos);
        }
    }
    return tuned(s, ch);
}

/* "ch:value,..." into v[1..MAX_CH]; stops at the first malformed entry. */
static void parse_values(const char *spec, double *v) {
    const char *p = spec;

    while (*p != '\0') {
        char *end;
        long ch = strtol(p, &end, 10);

        if (end == p || *end != ':')
            break;
        p = end + 1;
        double x = strtod(p, &end);
        if (end == p)
            break;
        if (ch >= 1 && ch <= MAX_CH)
            v[ch] = x;
        p = *end == ',' ? end + 1 : end;
    }
}

static int clamp_int(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

static void script_load(struct script *s) {
    char control[4096], buf[1024], list[2048];
    const char *spec;
    double auto_ms[MAX_CH + 1];

    control_read(control, sizeof(control));
    memset(s, 0, sizeof(*s));
    s->count = knob_int(control, "FAKE_WLM_COUNT", 1);
    s->version = knob_int(control, "FAKE_WLM_VERSION", 7);
    s->serial = knob_int(control, "FAKE_WLM_SERIAL", 4242);
    s->opstate = knob_int(control, "FAKE_WLM_OPSTATE", 2);
    s->switch_rc = knob_int(control, "FAKE_WLM_SWITCH_RC", 0);
    s->foreign = knob_int(control, "FAKE_WLM_FOREIGN_SWITCH", 0);
    s->deviation_rc = knob_int(control, "FAKE_WLM_DEVIATION_RC", 0);
    s->cycle_switch_ms = clamp_int(knob_int(control, "FAKE_WLM_CYCLE_SWITCH_MS", 0), 0, 100000);
    s->channels = clamp_int(knob_int(control, "FAKE_WLM_CHANNELS", 8), 0, MAX_CH);
    s->depth =
        knob_int(control, "FAKE_WLM_PIPELINE_DEPTH", knob_int(control, "FAKE_WLM_PIPELINE", 3));
    s->depth = clamp_int(s->depth, 1, MAX_DEPTH);
    s->readout_ms = clamp_int(knob_int(control, "FAKE_WLM_READOUT_MS", 12), 0, 100000);
    s->new_errors = knob_int(control, "FAKE_WLM_NEW_ERRORS", 1) != 0;
    s->expo_min = knob_int(control, "FAKE_WLM_EXPO_MIN", 1);
    s->expo_max = knob_int(control, "FAKE_WLM_EXPO_MAX", 9999);
    for (int ch = 0; ch <= MAX_CH; ch++)
        auto_ms[ch] = AUTO_EXPOSURE_MS;
    if ((spec = knob(control, "FAKE_WLM_AUTO_EXPOSURE", buf, sizeof(buf))) != NULL)
        parse_values(spec, auto_ms);
    for (int ch = 0; ch <= MAX_CH; ch++)
        s->auto_ms[ch] = auto_ms[ch] >= 0 && auto_ms[ch] <= 100000 ? (int)auto_ms[ch] : 0;
    if ((spec = knob(control, "FAKE_WLM_TUNE", list, sizeof(list))) != NULL)
        parse_list(s, LIST_TUNE, spec);
    if ((spec = knob(control, "FAKE_WLM_ROUTE", list, sizeof(list))) != NULL)
        parse_list(s, LIST_ROUTE, spec);
    if ((spec = knob(control, "FAKE_WLM_FREQS", buf, sizeof(buf))) != NULL)
        parse_values(spec, s->freq);
}

/* ---- The instrument's clock. Everything below runs with st.mu held. ---- */

/* The instrument's tick at t: ms since t0, as GetTickCount would count. */
static int32_t tick_ms(int64_t t_ns) {
    return (int32_t)((t_ns - st.t0_ns) / NS_PER_MS);
}

static bool channel_ok(int32_t ch) {
    return ch >= 1 && ch <= st.s.channels;
}

/* The exposure (ms) of channel ch's CCD array 1 or 2 as the WLM uses it. */
static int32_t exposure_now(int ch, int array) {
    if (array == 1 && st.auto_exposure[ch])
        return st.s.auto_ms[ch];
    return st.exposure_ms[ch][array];
}

/* cmiWavelength1..17, or 0 for a channel that has none. */
static int32_t cmi_wavelength(int ch) {
    if (ch == 1 || ch == 2)
        return 41 + ch;
    if (ch >= 3 && ch <= 8)
        return 87 + ch;
    if (ch == 9)
        return 1130;
    if (ch >= 10 && ch <= 17)
        return 1345 + ch;
    return 0;
}

static double to_nm(double thz) {
    return thz > 0 ? 299792.458 / thz : thz;
}

/* Queues an event for the callback thread, if there is one. */
static void notify(int32_t mode, int32_t intval, double dblval, int32_t res1) {
    if (st.callback == NULL)
        return;
    if (st.ev_n == EVENT_CAP) {
        st.ev_head = (st.ev_head + 1) % EVENT_CAP;
        st.ev_n--;
    }
    st.ev[(st.ev_head + st.ev_n) % EVENT_CAP] =
        (struct event){.mode = mode, .intval = intval, .res1 = res1, .dblval = dblval};
    st.ev_n++;
    pthread_cond_broadcast(&st.cond);
}

/* A measurement starts at t on the switch's channel, seeing its light
 * (light[] by input). */
static void measurement_start(int64_t t, const double *light) {
    int ch = st.switch_channel;
    int32_t expo_ms = exposure_now(ch, 1) + exposure_now(ch, 2);
    int32_t period_ms = expo_ms + st.s.readout_ms;

    if (period_ms < 1)
        period_ms = 1;
    st.measuring = true;
    st.set_by_call = false;
    st.cur.ch = ch;
    st.cur.light = light[ch];
    st.cur.start_ns = t;
    st.cur.expo_end_ns = t + expo_ms * NS_PER_MS;
    st.cur.end_ns = t + period_ms * NS_PER_MS;
    if (period_ms != st.period_ms) {
        st.period_ms = period_ms;
        notify(cmiTimePerMeasurement, period_ms, 0.0, 0);
    }
}

/* The result r becomes visible: in manual mode under the channel the
 * switch is on now, in cycling mode under the one it measured. */
static void result_show(struct result r) {
    int ch = st.switch_mode != 0 ? r.ch : st.switch_channel;
    int32_t mode = cmi_wavelength(ch);

    st.res[ch].have = true;
    st.res[ch].value = r.value;
    st.res[ch].seq++;
    if (mode != 0)
        notify(mode, tick_ms(r.expo_end_ns), to_nm(r.value), 0);
}

/* The measurement under way ends: into the pipeline, which lets out what
 * has now waited depth - 1 measurements. */
static void measurement_end(void) {
    st.pipe[st.npipe++] = (struct result){st.cur.light, st.cur.expo_end_ns, st.cur.ch};
    while (st.npipe > st.s.depth - 1) {
        struct result r = st.pipe[0];

        memmove(&st.pipe[0], &st.pipe[1], (size_t)(st.npipe - 1) * sizeof(st.pipe[0]));
        st.npipe--;
        result_show(r);
    }
}

/* The switch moves to ch at t (the instrument's move or a call's). */
static void switch_move(int32_t ch, int64_t t) {
    if (ch == st.switch_channel)
        return;
    st.switch_channel = ch;
    notify(cmiSwitcherChannel, ch, 0.0, tick_ms(t));
}

/* Cycling mode: the channel in use after the switch's, ascending and
 * wrapping; the switch's own when it is the only one in use or none is. */
static int32_t cycle_next(void) {
    int n = st.s.channels;

    for (int i = 1; i <= n; i++) {
        int32_t ch = (int32_t)((st.switch_channel - 1 + i) % n + 1);

        if (st.use[ch])
            return ch;
    }
    return st.switch_channel;
}

/* Runs the instrument from st.sim_ns to t, running or not, with this light
 * on each input all along (light[] by input). Only cycling moves the switch
 * meanwhile, at the end of a measurement. */
static void advance(int64_t t, bool running, const double *light) {
    if (!running) {
        st.measuring = false;
    } else {
        /* One waiting out a dead time starts with what holds then. */
        if (!st.measuring || st.cur.start_ns > st.sim_ns)
            measurement_start(st.measuring ? st.cur.start_ns : st.sim_ns, light);
        while (st.cur.end_ns <= t) {
            int64_t next_ns = st.cur.end_ns;
            int32_t ch;

            measurement_end();
            /* A channel set by a call is measured before cycling goes on. */
            if (st.switch_mode != 0 && !st.set_by_call &&
                (ch = cycle_next()) != st.switch_channel) {
                switch_move(ch, next_ns);
                next_ns += st.s.cycle_switch_ms * NS_PER_MS;
            }
            measurement_start(next_ns, light);
        }
    }
    if (t > st.sim_ns)
        st.sim_ns = t;
}

/* What each input shows now (light[1..MAX_CH]). */
static void lights_now(double *light) {
    light[0] = 0;
    for (int ch = 1; ch <= MAX_CH; ch++)
        light[ch] = shown(&st.s, ch);
}

/* When the file at path last changed, on the monotonic clock. */
static int64_t changed_ns(const char *path, int64_t mono_now, int64_t real_now) {
    struct stat sb;

    if (path == NULL || stat(path, &sb) != 0)
        return INT64_MIN;
    return mono_now - (real_now - ((int64_t)sb.st_mtim.tv_sec * NS_PER_S + sb.st_mtim.tv_nsec));
}

/* When the script or the files it follows last changed (monotonic). */
static int64_t inputs_changed_ns(const struct script *s, int64_t mono_now) {
    int64_t real_now = clock_ns(CLOCK_REALTIME), t;
    int64_t latest = changed_ns(getenv("FAKE_WLM_CONTROL"), mono_now, real_now);

    for (int i = 0; i < s->ntune; i++)
        if (s->tune[i].port == 0 && (t = changed_ns(s->tune[i].path, mono_now, real_now)) > latest)
            latest = t;
    for (int i = 0; i < s->nroute; i++)
        if ((t = changed_ns(s->route[i].path, mono_now, real_now)) > latest)
            latest = t;
    return latest;
}

/*
 * Brings the instrument up to now; every exported function calls it first.
 * The script and the light just read hold from when their files changed;
 * before that, what the previous call saw.
 */
static void observe(void) {
    int64_t now, change;
    bool running;
    double light[MAX_CH + 1];

    script_load(&st.s);
    now = clock_ns(CLOCK_MONOTONIC);
    if (now < st.sim_ns)
        now = st.sim_ns;
    running = st.s.count > 0 && st.s.opstate == 2;
    lights_now(light);
    change = st.observed ? inputs_changed_ns(&st.s, now) : st.sim_ns;
    if (change < st.sim_ns)
        change = st.sim_ns;
    if (change > now)
        change = now;
    advance(change, st.running, st.light);
    advance(now, running, light);
    st.running = running;
    memcpy(st.light, light, sizeof(st.light));
    st.observed = true;
}

/* A call moves the switch to ch now (after observe). In cycling mode the
 * next measurement is of ch: one waiting out a dead time starts on it as
 * planned, and the end of the one under way does not advance the switch. */
static void switch_set(int32_t ch) {
    switch_move(ch, st.sim_ns);
    if (st.measuring && st.cur.start_ns > st.sim_ns)
        measurement_start(st.cur.start_ns, st.light);
    else
        st.set_by_call = true;
}

/* ---- Notifications ---- */

/* The callback thread: observes the instrument at every measurement's end
 * and hands the queued events to the callback with the lock released. */
static void *callback_thread(void *arg) {
    unsigned gen = (unsigned)(uintptr_t)arg;
    struct event batch[EVENT_BATCH];

    pthread_mutex_lock(&st.mu);
    while (st.gen == gen) {
        wlm_callback_ex fn = st.callback;
        int32_t ver;
        int n = 0;

        observe();
        ver = st.s.serial;
        while (n < EVENT_BATCH && st.ev_n > 0) {
            batch[n++] = st.ev[st.ev_head];
            st.ev_head = (st.ev_head + 1) % EVENT_CAP;
            st.ev_n--;
        }
        if (n > 0 && fn != NULL) {
            pthread_mutex_unlock(&st.mu);
            for (int i = 0; i < n; i++)
                fn(ver, batch[i].mode, batch[i].intval, batch[i].dblval, batch[i].res1);
            pthread_mutex_lock(&st.mu);
            continue;
        }
        int64_t wake_ns = st.measuring ? st.cur.end_ns : st.sim_ns + IDLE_POLL_MS * NS_PER_MS;
        struct timespec wake = {(time_t)(wake_ns / NS_PER_S), (long)(wake_ns % NS_PER_S)};

        if (st.gen == gen && st.ev_n == 0)
            pthread_cond_timedwait(&st.cond, &st.mu, &wake);
    }
    st.threads_alive--;
    pthread_cond_broadcast(&st.cond);
    pthread_mutex_unlock(&st.mu);
    return NULL;
}

/* Installs fn, starting the thread if there is none. 1, or 0 on failure. */
static int callback_install(wlm_callback_ex fn) {
    st.callback = fn;
    if (st.thread_on)
        return 1;
    st.gen++;
    if (pthread_create(&st.thread, NULL, callback_thread, (void *)(uintptr_t)st.gen) != 0) {
        st.callback = NULL;
        return 0;
    }
    st.thread_on = true;
    st.threads_alive++;
    if (st.period_ms > 0)
        notify(cmiTimePerMeasurement, st.period_ms, 0.0, 0);
    return 1;
}

/* Removes the callback; returns once the thread has ended, or, when
 * unloading, after UNLOAD_WAIT_MS at most. Takes st.mu itself. */
static void callback_remove(bool unloading) {
    pthread_t thread;
    bool on;

    pthread_mutex_lock(&st.mu);
    on = st.thread_on;
    thread = st.thread;
    st.callback = NULL;
    st.ev_n = 0;
    if (on) {
        st.thread_on = false;
        st.gen++;
        pthread_cond_broadcast(&st.cond);
    }
    if (on && unloading) {
        int64_t until = clock_ns(CLOCK_MONOTONIC) + UNLOAD_WAIT_MS * NS_PER_MS;
        struct timespec ts = {(time_t)(until / NS_PER_S), (long)(until % NS_PER_S)};

        while (st.threads_alive > 0 && pthread_cond_timedwait(&st.cond, &st.mu, &ts) != ETIMEDOUT)
            ;
        on = st.threads_alive == 0;
    }
    pthread_mutex_unlock(&st.mu);
    if (!on)
        return;
    if (pthread_equal(thread, pthread_self()))
        pthread_detach(thread); /* removed from within the callback */
    else
        pthread_join(thread, NULL);
}

static void fake_load(void) __attribute__((constructor));
static void fake_load(void) {
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&st.cond, &attr);
    pthread_condattr_destroy(&attr);
    st.t0_ns = st.sim_ns = clock_ns(CLOCK_MONOTONIC);
    for (int ch = 0; ch <= MAX_CH; ch++)
        st.exposure_ms[ch][1] = INITIAL_EXPOSURE_MS;
}

static void fake_unload(void) __attribute__((destructor));
static void fake_unload(void) {
    callback_remove(true);
}

/* ---- The exported functions: block_if, observe, answer, trace. ---- */

intptr_t Instantiate(int32_t rfc, int32_t mode, intptr_t p1, int32_t p2) {
    intptr_t r = 0;
    bool remove = false;

    block_if("Instantiate");
    pthread_mutex_lock(&st.mu);
    observe();
    if (rfc == cInstCheckForWLM) {
        r = st.s.count > 0;
    } else if (rfc == cInstReturnMode && (mode == 0 || mode == 1)) {
        st.read_once = mode == 1;
        r = 1;
    } else if (rfc == cInstNotification && mode == cNotifyInstallCallbackEx && p1 != 0) {
        r = callback_install((wlm_callback_ex)p1);
    } else if (rfc == cInstNotification && mode == cNotifyRemoveCallback) {
        remove = true;
        r = 1;
    }
    pthread_mutex_unlock(&st.mu);
    if (remove)
        callback_remove(false);
    trace("Instantiate %d %d %s %d = %" PRIdPTR, (int)rfc, (int)mode, p1 != 0 ? "fn" : "0", (int)p2,
          r);
    return r;
}

int32_t GetWLMCount(int32_t v) {
    int32_t r;

    block_if("GetWLMCount");
    (void)v;
    pthread_mutex_lock(&st.mu);
    observe();
    r = st.s.count;
    pthread_mutex_unlock(&st.mu);
    trace("GetWLMCount = %d", (int)r);
    return r;
}

int32_t GetWLMVersion(int32_t v) {
    int32_t r;

    block_if("GetWLMVersion");
    pthread_mutex_lock(&st.mu);
    observe();
    r = st.s.count <= 0 ? ErrWlmMissing : v == 0 ? st.s.version : v == 1 ? st.s.serial : 0;
    pthread_mutex_unlock(&st.mu);
    trace("GetWLMVersion %d = %d", (int)v, (int)r);
    return r;
}

uint16_t GetOperationState(uint16_t v) {
    int r;

    block_if("GetOperationState");
    (void)v;
    pthread_mutex_lock(&st.mu);
    observe();
    r = st.s.opstate;
    pthread_mutex_unlock(&st.mu);
    trace("GetOperationState = %d", r);
    return (uint16_t)r;
}

int32_t GetChannelsCount(int32_t v) {
    int32_t r;

    block_if("GetChannelsCount");
    (void)v;
    pthread_mutex_lock(&st.mu);
    observe();
    r = st.s.count <= 0 ? ErrWlmMissing : st.s.channels;
    pthread_mutex_unlock(&st.mu);
    trace("GetChannelsCount = %d", (int)r);
    return r;
}

/* GetFrequencyNum and GetWavelengthNum: ch's result in THz, read-once
 * bookkeeping in *read. st.mu held, after observe. */
static double result_get(int32_t ch, uint64_t *read) {
    if (st.s.count <= 0)
        return ErrWlmMissing;
    if (!channel_ok(ch))
        return ErrChannelNotAvailable;
    if (!st.res[ch].have)
        return st.s.new_errors ? ErrNoValueYet : ErrNoValue;
    if (st.read_once && read[ch] == st.res[ch].seq)
        return st.s.new_errors ? ErrNoNewValueYet : ErrNoValue;
    read[ch] = st.res[ch].seq;
    return st.res[ch].value;
}

double GetFrequencyNum(int32_t num, double ignored) {
    double r;

    block_if("GetFrequencyNum");
    (void)ignored;
    pthread_mutex_lock(&st.mu);
    observe();
    r = result_get(num, st.freq_read);
    if (st.s.count > 0 && channel_ok(st.s.foreign))
        switch_set(st.s.foreign);
    pthread_mutex_unlock(&st.mu);
    trace("GetFrequencyNum %d = %.9f", (int)num, r);
    return r;
}

double GetWavelengthNum(int32_t num, double ignored) {
    double r;

    block_if("GetWavelengthNum");
    (void)ignored;
    pthread_mutex_lock(&st.mu);
    observe();
    r = to_nm(result_get(num, st.wl_read));
    pthread_mutex_unlock(&st.mu);
    trace("GetWavelengthNum %d = %.9f", (int)num, r);
    return r;
}

int32_t SetExposureNum(int32_t num, int32_t ccd, int32_t ms) {
    int32_t r = 0;

    block_if("SetExposureNum");
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ResERR_WlmMissing;
    else if (!channel_ok(num) || ccd < 1 || ccd > 2 || ms < st.s.expo_min || ms > st.s.expo_max)
        r = ResERR_ParmOutOfRange;
    else
        st.exposure_ms[num][ccd] = ms;
    pthread_mutex_unlock(&st.mu);
    trace("SetExposureNum %d %d %d = %d", (int)num, (int)ccd, (int)ms, (int)r);
    return r;
}

int32_t GetExposureNum(int32_t num, int32_t ccd, int32_t ignored) {
    int32_t r;

    block_if("GetExposureNum");
    (void)ignored;
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ErrWlmMissing;
    else if (!channel_ok(num))
        r = ErrChannelNotAvailable;
    else if (ccd < 1 || ccd > 2)
        r = ErrParameterOutOfRange;
    else
        r = exposure_now(num, ccd);
    pthread_mutex_unlock(&st.mu);
    trace("GetExposureNum %d %d = %d", (int)num, (int)ccd, (int)r);
    return r;
}

int32_t GetExposureRange(int32_t what) {
    int32_t r;

    block_if("GetExposureRange");
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ErrWlmMissing;
    else if (what == cExpoMin || what == cExpo2Min)
        r = st.s.expo_min;
    else if (what == cExpoMax || what == cExpo2Max)
        r = st.s.expo_max;
    else
        r = ErrParameterOutOfRange;
    pthread_mutex_unlock(&st.mu);
    trace("GetExposureRange %d = %d", (int)what, (int)r);
    return r;
}

int32_t SetExposureModeNum(int32_t num, bool on) {
    int32_t r = 0;

    block_if("SetExposureModeNum");
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ResERR_WlmMissing;
    else if (!channel_ok(num))
        r = ResERR_ParmOutOfRange;
    else
        st.auto_exposure[num] = on;
    pthread_mutex_unlock(&st.mu);
    trace("SetExposureModeNum %d %d = %d", (int)num, (int)on, (int)r);
    return r;
}

int32_t GetExposureModeNum(int32_t num, bool ignored) {
    int32_t r;

    block_if("GetExposureModeNum");
    (void)ignored;
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ErrWlmMissing;
    else if (!channel_ok(num))
        r = ErrChannelNotAvailable;
    else
        r = st.auto_exposure[num];
    pthread_mutex_unlock(&st.mu);
    trace("GetExposureModeNum %d = %d", (int)num, (int)r);
    return r;
}

int32_t GetSwitcherMode(int32_t v) {
    int32_t r;

    block_if("GetSwitcherMode");
    (void)v;
    pthread_mutex_lock(&st.mu);
    observe();
    r = st.s.count <= 0 ? ErrWlmMissing : st.switch_mode;
    pthread_mutex_unlock(&st.mu);
    trace("GetSwitcherMode = %d", (int)r);
    return r;
}

int32_t SetSwitcherMode(int32_t mode) {
    int32_t r = 0;

    block_if("SetSwitcherMode");
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ResERR_WlmMissing;
    else
        st.switch_mode = mode;
    pthread_mutex_unlock(&st.mu);
    trace("SetSwitcherMode %d = %d", (int)mode, (int)r);
    return r;
}

int32_t GetSwitcherChannel(int32_t v) {
    int32_t r;

    block_if("GetSwitcherChannel");
    (void)v;
    pthread_mutex_lock(&st.mu);
    observe();
    r = st.s.count <= 0 ? ErrWlmMissing : st.switch_channel;
    pthread_mutex_unlock(&st.mu);
    trace("GetSwitcherChannel = %d", (int)r);
    return r;
}

int32_t SetSwitcherChannel(int32_t ch) {
    int32_t r;

    block_if("SetSwitcherChannel");
    pthread_mutex_lock(&st.mu);
    observe();
    r = st.s.count <= 0 ? ResERR_WlmMissing : st.s.switch_rc;
    if (r == 0 && !channel_ok(ch))
        r = ResERR_ParmOutOfRange;
    if (r == 0)
        switch_set(ch);
    pthread_mutex_unlock(&st.mu);
    trace("SetSwitcherChannel %d = %d", (int)ch, (int)r);
    return r;
}

/* The vendor's Use and Show are 0 or 1; *use and *show are left alone on an
 * error, and a NULL one is not written. */
int32_t GetSwitcherSignalStates(int32_t signal, int32_t *use, int32_t *show) {
    int32_t r = 0, u = 0, v = 0;

    block_if("GetSwitcherSignalStates");
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ErrWlmMissing;
    else if (!channel_ok(signal))
        r = ErrChannelNotAvailable;
    else {
        u = st.use[signal];
        v = st.show[signal];
    }
    pthread_mutex_unlock(&st.mu);
    if (r == 0 && use != NULL)
        *use = u;
    if (r == 0 && show != NULL)
        *show = v;
    trace("GetSwitcherSignalStates %d = %d %d %d", (int)signal, (int)r, (int)u, (int)v);
    return r;
}

int32_t SetSwitcherSignalStates(int32_t signal, int32_t use, int32_t show) {
    int32_t r = 0;

    block_if("SetSwitcherSignalStates");
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ResERR_WlmMissing;
    else if (!channel_ok(signal))
        r = ResERR_ParmOutOfRange;
    else {
        st.use[signal] = use != 0;
        st.show[signal] = show != 0;
    }
    pthread_mutex_unlock(&st.mu);
    trace("SetSwitcherSignalStates %d %d %d = %d", (int)signal, (int)use, (int)show, (int)r);
    return r;
}

int32_t SetDeviationSignalNum(int32_t port, double mv) {
    int32_t r;

    block_if("SetDeviationSignalNum");
    pthread_mutex_lock(&st.mu);
    observe();
    r = st.s.count <= 0 ? ResERR_WlmMissing : st.s.deviation_rc;
    if (r == 0 && (port < 1 || port > MAX_PORT || !isfinite(mv)))
        r = ResERR_ParmOutOfRange;
    if (r == 0) {
        st.analog_mv[port] = mv;
        lights_now(st.light); /* the laser moves now */
    }
    pthread_mutex_unlock(&st.mu);
    trace("SetDeviationSignalNum %d %.6f = %d", (int)port, mv, (int)r);
    return r;
}

double GetDeviationSignalNum(int32_t port, double ignored) {
    double r;

    block_if("GetDeviationSignalNum");
    (void)ignored;
    pthread_mutex_lock(&st.mu);
    observe();
    if (st.s.count <= 0)
        r = ErrWlmMissing;
    else if (port < 1 || port > MAX_PORT)
        r = ErrParameterOutOfRange;
    else
        r = st.analog_mv[port];
    pthread_mutex_unlock(&st.mu);
    trace("GetDeviationSignalNum %d = %.6f", (int)port, r);
    return r;
}
