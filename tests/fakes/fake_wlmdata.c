/*
 * fake_wlmdata: a stand-in for HighFinesse's libwlmData.so (built as
 * libwlmData.so) with the same C ABI on Linux, scripted by the test. It
 * exports only what the highfinesse driver calls and must never be installed.
 *
 * Script, read on every call: the environment, overridden by the lines
 * NAME=value of the file named by FAKE_WLM_CONTROL (so a test can change it
 * while the daemon runs). Names:
 *   FAKE_WLM_FREQS     "1:384.2281,2:-3": THz per channel; a value <= 0 is
 *                      returned as is (a vendor error code); an absent
 *                      channel reads ErrNoValue (0)
 *   FAKE_WLM_COUNT     GetWLMCount result (default 1); 0 also makes every get
 *                      return ErrWlmMissing and every set ResERR_WlmMissing
 *   FAKE_WLM_VERSION   GetWLMVersion(0), the type (default 7)
 *   FAKE_WLM_SERIAL    GetWLMVersion(1) (default 4242)
 *   FAKE_WLM_OPSTATE   GetOperationState (default 2, measuring)
 *   FAKE_WLM_PIPELINE  after a switch, this many GetFrequencyNum calls still
 *                      return the previous channel's value (default 0)
 *   FAKE_WLM_SWITCH_RC what SetSwitcherChannel returns (default 0)
 *   FAKE_WLM_FOREIGN_SWITCH  N > 0: every GetFrequencyNum moves the switch to
 *                      channel N, as another program would
 *   FAKE_WLM_BLOCK     "Name:ms" or "Name:hang": every call of the function
 *                      Name (e.g. GetFrequencyNum) first blocks, as on a frozen
 *                      wlmDataServer: for ms milliseconds, or with "hang" until
 *                      the control file's text changes; then it carries on as
 *                      usual. Logged as "block Name ms|hang" when it starts.
 *   FAKE_WLM_LOG       append one line per call: "Name args = result"
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CH 32

/* The exported ABI: every "long" of wlmData.h is int32_t on Linux. */
int32_t GetWLMCount(int32_t v);
int32_t GetWLMVersion(int32_t v);
uint16_t GetOperationState(uint16_t v);
double GetFrequencyNum(int32_t num, double ignored);
int32_t SetExposureNum(int32_t num, int32_t ccd, int32_t ms);
int32_t GetExposureNum(int32_t num, int32_t ccd, int32_t ignored);
int32_t GetSwitcherMode(int32_t v);
int32_t SetSwitcherMode(int32_t mode);
int32_t GetSwitcherChannel(int32_t v);
int32_t SetSwitcherChannel(int32_t ch);

struct script {
    double freq[MAX_CH + 1];
    int count, version, serial, opstate, pipeline, switch_rc, foreign;
};

/* What the fake instrument remembers between calls. */
static struct {
    pthread_mutex_t mu;
    int32_t switch_mode, switch_channel, previous_channel;
    int stale_reads_left;
    int32_t exposure_ms[MAX_CH + 1];
} st = {PTHREAD_MUTEX_INITIALIZER, 1, 1, 1, 0, {0}};

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

static void script_load(struct script *s) {
    char control[4096], buf[1024];
    const char *freqs;

    control_read(control, sizeof(control));
    memset(s, 0, sizeof(*s));
    s->count = knob_int(control, "FAKE_WLM_COUNT", 1);
    s->version = knob_int(control, "FAKE_WLM_VERSION", 7);
    s->serial = knob_int(control, "FAKE_WLM_SERIAL", 4242);
    s->opstate = knob_int(control, "FAKE_WLM_OPSTATE", 2);
    s->pipeline = knob_int(control, "FAKE_WLM_PIPELINE", 0);
    s->switch_rc = knob_int(control, "FAKE_WLM_SWITCH_RC", 0);
    s->foreign = knob_int(control, "FAKE_WLM_FOREIGN_SWITCH", 0);
    if ((freqs = knob(control, "FAKE_WLM_FREQS", buf, sizeof(buf))) != NULL) {
        const char *p = freqs;

        while (*p != '\0') {
            char *end;
            long ch = strtol(p, &end, 10);

            if (end == p || *end != ':')
                break;
            p = end + 1;
            double v = strtod(p, &end);
            if (end == p)
                break;
            if (ch >= 1 && ch <= MAX_CH)
                s->freq[ch] = v;
            p = *end == ',' ? end + 1 : end;
        }
    }
}

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

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

static uint64_t mono_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* FAKE_WLM_BLOCK: called first by every function, with its own name. Polls
 * every 5 ms; takes no lock, so other threads' calls go on meanwhile. */
static void block_if(const char *fn) {
    char control[4096], now[4096], spec[128];
    const struct timespec tick = {0, 5000000};
    const char *v, *how;
    size_t n = strlen(fn);
    uint64_t until_ms;
    int hang;

    control_read(control, sizeof(control));
    v = knob(control, "FAKE_WLM_BLOCK", spec, sizeof(spec));
    if (v == NULL || strncmp(v, fn, n) != 0 || v[n] != ':')
        return;
    how = v + n + 1;
    hang = strcmp(how, "hang") == 0;
    until_ms = mono_ms() + (hang ? 0 : (uint64_t)strtoul(how, NULL, 10));
    trace("block %s %s", fn, how);
    for (;;) {
        if (!hang && mono_ms() >= until_ms)
            break;
        nanosleep(&tick, NULL);
        if (hang) {
            control_read(now, sizeof(now));
            if (strcmp(now, control) != 0)
                break;
        }
    }
}

int32_t GetWLMCount(int32_t v) {
    struct script s;

    block_if("GetWLMCount");
    (void)v;
    script_load(&s);
    trace("GetWLMCount = %d", s.count);
    return s.count;
}

int32_t GetWLMVersion(int32_t v) {
    struct script s;
    int32_t r;

    block_if("GetWLMVersion");
    script_load(&s);
    r = s.count <= 0 ? -5 : v == 0 ? s.version : v == 1 ? s.serial : 0;
    trace("GetWLMVersion %d = %d", (int)v, (int)r);
    return r;
}

uint16_t GetOperationState(uint16_t v) {
    struct script s;

    block_if("GetOperationState");
    (void)v;
    script_load(&s);
    trace("GetOperationState = %d", s.opstate);
    return (uint16_t)s.opstate;
}

double GetFrequencyNum(int32_t num, double ignored) {
    struct script s;
    double r;

    block_if("GetFrequencyNum");
    (void)ignored;
    script_load(&s);
    pthread_mutex_lock(&st.mu);
    if (s.count <= 0)
        r = -5; /* ErrWlmMissing */
    else if (num < 1 || num > MAX_CH)
        r = -10; /* ErrChannelNotAvailable */
    else if (st.stale_reads_left > 0) {
        st.stale_reads_left--;
        r = s.freq[st.previous_channel];
    } else
        r = s.freq[num];
    if (s.foreign > 0 && s.foreign <= MAX_CH)
        st.switch_channel = s.foreign;
    pthread_mutex_unlock(&st.mu);
    trace("GetFrequencyNum %d = %.9f", (int)num, r);
    return r;
}

int32_t SetExposureNum(int32_t num, int32_t ccd, int32_t ms) {
    struct script s;
    int32_t r = 0;

    block_if("SetExposureNum");
    script_load(&s);
    if (s.count <= 0)
        r = -1;
    else if (num < 1 || num > MAX_CH || ccd < 1 || ccd > 2 || ms < 1)
        r = -3; /* ResERR_ParmOutOfRange */
    else {
        pthread_mutex_lock(&st.mu);
        st.exposure_ms[num] = ms;
        pthread_mutex_unlock(&st.mu);
    }
    trace("SetExposureNum %d %d %d = %d", (int)num, (int)ccd, (int)ms, (int)r);
    return r;
}

int32_t GetExposureNum(int32_t num, int32_t ccd, int32_t ignored) {
    int32_t r;

    block_if("GetExposureNum");
    (void)ccd, (void)ignored;
    pthread_mutex_lock(&st.mu);
    r = num >= 1 && num <= MAX_CH ? st.exposure_ms[num] : -10;
    pthread_mutex_unlock(&st.mu);
    trace("GetExposureNum %d = %d", (int)num, (int)r);
    return r;
}

int32_t GetSwitcherMode(int32_t v) {
    int32_t r;

    block_if("GetSwitcherMode");
    (void)v;
    pthread_mutex_lock(&st.mu);
    r = st.switch_mode;
    pthread_mutex_unlock(&st.mu);
    trace("GetSwitcherMode = %d", (int)r);
    return r;
}

int32_t SetSwitcherMode(int32_t mode) {
    struct script s;
    int32_t r = 0;

    block_if("SetSwitcherMode");
    script_load(&s);
    if (s.count <= 0) {
        r = -1;
    } else {
        pthread_mutex_lock(&st.mu);
        st.switch_mode = mode;
        pthread_mutex_unlock(&st.mu);
    }
    trace("SetSwitcherMode %d = %d", (int)mode, (int)r);
    return r;
}

int32_t GetSwitcherChannel(int32_t v) {
    struct script s;
    int32_t r;

    block_if("GetSwitcherChannel");
    (void)v;
    script_load(&s);
    pthread_mutex_lock(&st.mu);
    r = s.count <= 0 ? -5 : st.switch_channel;
    pthread_mutex_unlock(&st.mu);
    trace("GetSwitcherChannel = %d", (int)r);
    return r;
}

int32_t SetSwitcherChannel(int32_t ch) {
    struct script s;
    int32_t r;

    block_if("SetSwitcherChannel");
    script_load(&s);
    r = s.count <= 0 ? -1 : s.switch_rc;
    if (r == 0 && (ch < 1 || ch > MAX_CH))
        r = -10; /* ResERR_ChannelNotAvailable */
    if (r == 0) {
        pthread_mutex_lock(&st.mu);
        if (ch != st.switch_channel) {
            st.previous_channel = st.switch_channel;
            st.switch_channel = ch;
            st.stale_reads_left = s.pipeline;
        }
        pthread_mutex_unlock(&st.mu);
    }
    trace("SetSwitcherChannel %d = %d", (int)ch, (int)r);
    return r;
}
