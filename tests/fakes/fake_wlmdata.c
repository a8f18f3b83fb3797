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
 *   FAKE_WLM_TUNE      "ch:path:key:mhz_per_v[,...]": channel ch's frequency
 *                      follows a fake actuator: its FAKE_WLM_FREQS value plus
 *                      mhz_per_v * V * 1e-6 THz, where V is the number after
 *                      "key=" at the start of a line of the file at path (the
 *                      state_file of tests/e2e/fakeserial.py: key "x" of an
 *                      MDT693B, "ch1" of a DAC box), read on every
 *                      GetFrequencyNum; no file, key or number: V = 0. An entry
 *                      "ch:@analog<port>:mhz_per_v" (e.g. "2:@analog1:25")
 *                      follows analog output port (1..8) instead, V being what
 *                      SetDeviationSignalNum last set there in mV, / 1000.
 *                      Entries for one channel add up; paths hold no ':' or
 *                      ','; a malformed entry is logged and ignored. A value
 *                      <= 0 in FAKE_WLM_FREQS (an error code) is not tuned.
 *   FAKE_WLM_ROUTE     "ch:path[,...]": input ch shows the light of the
 *                      fibre a switch selected: reading ch returns the (tuned)
 *                      frequency of channel N, N being the number after
 *                      "position=" in the file at path (fakeserial.py's
 *                      FakeLeoni state_file); no file, or N outside 1..32:
 *                      ErrNoValue (0), as for an absent channel. Applies to
 *                      the previous channel's stale reads too (PIPELINE).
 *   FAKE_WLM_DEVIATION_RC  what SetDeviationSignalNum returns (default 0);
 *                      non-zero: the value is not stored
 *   FAKE_WLM_LOG       append one line per call: "Name args = result"
 *
 * Analog outputs: SetDeviationSignalNum(port 1..8, mV) stores the value
 * (ResERR_ParmOutOfRange -3 for another port or a non-finite mV,
 * ResERR_WlmMissing -1 when FAKE_WLM_COUNT is 0); GetDeviationSignalNum
 * returns it (0 before any set; ErrParameterOutOfRange -28 for another port,
 * ErrWlmMissing -5 when FAKE_WLM_COUNT is 0; in-band, as the vendor does,
 * so a negative voltage and an error look alike there).
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    int count, version, serial, opstate, pipeline, switch_rc, foreign, deviation_rc;
    int ntune, nroute;
    struct tune tune[MAX_TUNE];
    struct route route[MAX_ROUTE];
};

/* What the fake instrument remembers between calls. */
static struct {
    pthread_mutex_t mu;
    int32_t switch_mode, switch_channel, previous_channel;
    int stale_reads_left;
    int32_t exposure_ms[MAX_CH + 1];
    double analog_mv[MAX_PORT + 1];
} st = {PTHREAD_MUTEX_INITIALIZER, 1, 1, 1, 0, {0}, {0}};

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

static void script_load(struct script *s) {
    char control[4096], buf[1024], list[2048];
    const char *freqs, *spec;

    control_read(control, sizeof(control));
    memset(s, 0, sizeof(*s));
    s->count = knob_int(control, "FAKE_WLM_COUNT", 1);
    s->version = knob_int(control, "FAKE_WLM_VERSION", 7);
    s->serial = knob_int(control, "FAKE_WLM_SERIAL", 4242);
    s->opstate = knob_int(control, "FAKE_WLM_OPSTATE", 2);
    s->pipeline = knob_int(control, "FAKE_WLM_PIPELINE", 0);
    s->switch_rc = knob_int(control, "FAKE_WLM_SWITCH_RC", 0);
    s->foreign = knob_int(control, "FAKE_WLM_FOREIGN_SWITCH", 0);
    s->deviation_rc = knob_int(control, "FAKE_WLM_DEVIATION_RC", 0);
    if ((spec = knob(control, "FAKE_WLM_TUNE", list, sizeof(list))) != NULL)
        parse_list(s, LIST_TUNE, spec);
    if ((spec = knob(control, "FAKE_WLM_ROUTE", list, sizeof(list))) != NULL)
        parse_list(s, LIST_ROUTE, spec);
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
        r = shown(&s, st.previous_channel);
    } else
        r = shown(&s, num);
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

int32_t SetDeviationSignalNum(int32_t port, double mv) {
    struct script s;
    int32_t r;

    block_if("SetDeviationSignalNum");
    script_load(&s);
    r = s.count <= 0 ? -1 : s.deviation_rc;
    if (r == 0 && (port < 1 || port > MAX_PORT || !isfinite(mv)))
        r = -3; /* ResERR_ParmOutOfRange */
    if (r == 0) {
        pthread_mutex_lock(&st.mu);
        st.analog_mv[port] = mv;
        pthread_mutex_unlock(&st.mu);
    }
    trace("SetDeviationSignalNum %d %.6f = %d", (int)port, mv, (int)r);
    return r;
}

double GetDeviationSignalNum(int32_t port, double ignored) {
    struct script s;
    double r;

    block_if("GetDeviationSignalNum");
    (void)ignored;
    script_load(&s);
    if (s.count <= 0)
        r = -5; /* ErrWlmMissing */
    else if (port < 1 || port > MAX_PORT)
        r = -28; /* ErrParameterOutOfRange */
    else {
        pthread_mutex_lock(&st.mu);
        r = st.analog_mv[port];
        pthread_mutex_unlock(&st.mu);
    }
    trace("GetDeviationSignalNum %d = %.6f", (int)port, r);
    return r;
}
