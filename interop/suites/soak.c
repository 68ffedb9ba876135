/* interop/suites/soak.c: the guest-side workloads of interop/soak.sh, and the host-side check of
 * the writer's file. Not a case suite (it prints no PASS/FAIL lines); one program, three modes:
 *
 *   soak writer -d DIR -o OUT -y SYNC -n NAME
 *     Appends fixed-size records (RECORD_BYTES, one line each: name, sequence number, FNV-1a
 *     checksum, filler) to DIR/soak-NAME.dat with plain pwrite (the kernel client sends them as
 *     UNSTABLE WRITEs), fsync (COMMIT) every RECORDS_PER_COMMIT records, and only after that fsync
 *     returned 0 writes "acked N" to OUT/acked-NAME.txt: records 1..N are acknowledged. Every
 *     READBACK_EVERY commits it reads the last READBACK_RECORDS acknowledged records back with
 *     O_DIRECT (from the server, not the page cache) and checks them.
 *   soak locker -d DIR -o OUT -y SYNC -n NAME
 *     Loops: F_SETLKW write lock on DIR/soak-lock.dat (NLM LOCK, contended by the other guest);
 *     reads "COUNTER HOLDER" with O_DIRECT; a HOLDER other than "-" is counted as a conflict (the
 *     other side's marker: two holders; its own: its last clear was undone, e.g. overwritten by a
 *     stale write); writes
 *     "COUNTER+1 NAME", fsync, holds the lock HOLD_MS, writes "COUNTER+1 -", fsync, unlocks.
 *     OUT/locker-NAME.txt always holds "sections S conflicts C" (completed critical sections).
 *   soak verify -f FILE -a ACKED -n NAME
 *     Host side: every record 1..N (N from the last "acked N" line of ACKED) must be in FILE,
 *     intact. Prints "verify NAME: acked N, lost L, first lost F" and exits 1 when L > 0.
 *
 * Writer and locker run until SYNC/stop exists (bounded by LOOP_SECONDS_MAX) and append every
 * failed call to OUT/errors-NAME.txt ("<uptime> wall <epoch> <mode> <call>: <errno name> (<errno>)"); the last
 * line of OUT/summary-<mode>-NAME.txt is "<mode> NAME: ... errors E estale S". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RECORD_BYTES 64
#define RECORDS_PER_COMMIT 4
#define READBACK_EVERY 16
#define READBACK_RECORDS 256
#define WRITE_PERIOD_MS 50
#define HOLD_MS 20
#define LOCK_PAUSE_MS_MAX 60
#define LOOP_SECONDS_MAX 7200
#define LOCK_BYTES 32
#define PATH_BYTES 512
#define DIRECT_ALIGN 4096

static const char *o_dir, *o_out, *o_sync, *o_name, *o_file, *o_acked;
static unsigned long n_errors, n_estale;
static const char *mode;

static void sleep_ms(unsigned ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double uptime_s(void) { return clock_s(CLOCK_MONOTONIC); }

/* The guest's wall clock (set from the host's at boot), to place an error against the host's logs. */
static double wall_s(void) { return clock_s(CLOCK_REALTIME); }

static void out_path(char *p, const char *what) {
    snprintf(p, PATH_BYTES, "%s/%s-%s.txt", o_out, what, o_name);
}

/* Appends one line to OUT/WHAT-NAME.txt (the 9p share). */
static void out_line(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_line(const char *what, const char *fmt, ...) {
    char p[PATH_BYTES];
    out_path(p, what);
    FILE *f = fopen(p, "a");
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

/* Replaces OUT/WHAT-NAME.txt with one line. */
static void out_set(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_set(const char *what, const char *fmt, ...) {
    char p[PATH_BYTES], tmp[PATH_BYTES + 8];
    out_path(p, what);
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
    rename(tmp, p);
}

static void failed(const char *call) {
    int e = errno;
    n_errors++;
    if (e == ESTALE) n_estale++;
    out_line("errors", "%.2f wall %.3f %s %s: %s (%d)", uptime_s(), wall_s(), mode, call, strerrorname_np(e) ? strerrorname_np(e) : "?", e);
}

static int stop_now(double start) {
    char p[PATH_BYTES];
    snprintf(p, sizeof p, "%s/stop", o_sync);
    return access(p, F_OK) == 0 || uptime_s() - start > LOOP_SECONDS_MAX;
}

static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* The record of sequence number SEQ (1-based) for writer NAME, RECORD_BYTES with its newline. */
static void make_record(char *rec, const char *name, unsigned long seq) {
    char head[RECORD_BYTES];
    int n = snprintf(head, sizeof head, "%s %010lu", name, seq);
    uint32_t h = fnv1a(head, (size_t)n);
    memset(rec, '.', RECORD_BYTES);
    n = snprintf(rec, RECORD_BYTES, "%s %08x ", head, h);
    rec[n] = '.';
    rec[RECORD_BYTES - 1] = '\n';
}

static void *aligned(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, DIRECT_ALIGN, bytes) != 0) return NULL;
    return p;
}

/* Reads records FIRST..LAST back with O_DIRECT; returns how many were missing or wrong, or -1
 * when the read itself failed (counted as an error, not as a loss). */
static long read_back(const char *path, unsigned long first, unsigned long last) {
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) { failed("open(O_DIRECT) for read-back"); return -1; }
    size_t bytes = (size_t)(last - first + 1) * RECORD_BYTES;
    off_t off = (off_t)(first - 1) * RECORD_BYTES;
    off_t start = off - off % DIRECT_ALIGN;
    size_t span = (size_t)(off - start) + bytes;
    span += (DIRECT_ALIGN - span % DIRECT_ALIGN) % DIRECT_ALIGN;
    char *buf = aligned(span);
    if (!buf) { close(fd); return -1; }
    memset(buf, 0, span);
    size_t got = 0;
    while (got < span) {
        ssize_t r = pread(fd, buf + got, span - got, start + (off_t)got);
        if (r < 0) { failed("pread(O_DIRECT)"); free(buf); close(fd); return -1; }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    long bad = 0;
    char want[RECORD_BYTES];
    for (unsigned long s = first; s <= last; s++) {
        make_record(want, o_name, s);
        size_t at = (size_t)(off - start) + (size_t)(s - first) * RECORD_BYTES;
        if (at + RECORD_BYTES > got || memcmp(buf + at, want, RECORD_BYTES) != 0) bad++;
    }
    free(buf);
    return bad;
}

static int writer(void) {
    char path[PATH_BYTES], rec[RECORD_BYTES];
    snprintf(path, sizeof path, "%s/soak-%s.dat", o_dir, o_name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { failed("open"); return 1; }
    double start = uptime_s();
    unsigned long seq = 0, acked = 0, commits = 0, lost = 0, readbacks = 0;
    while (!stop_now(start)) {
        seq++;
        make_record(rec, o_name, seq);
        if (pwrite(fd, rec, RECORD_BYTES, (off_t)(seq - 1) * RECORD_BYTES) != RECORD_BYTES) {
            failed("pwrite");
            seq--;
            sleep_ms(WRITE_PERIOD_MS);
            continue;
        }
        if (seq % RECORDS_PER_COMMIT == 0) {
            if (fsync(fd) < 0) {
                /* The records since the last ack stay unacknowledged; they are written again. */
                failed("fsync");
                seq = acked;
                continue;
            }
            acked = seq;
            commits++;
            out_line("acked", "acked %lu", acked);
            if (commits % READBACK_EVERY == 0) {
                unsigned long first = acked > READBACK_RECORDS ? acked - READBACK_RECORDS + 1 : 1;
                long bad = read_back(path, first, acked);
                readbacks++;
                if (bad > 0) {
                    lost += (unsigned long)bad;
                    out_line("errors", "%.2f wall %.3f writer read-back %lu..%lu: %ld records missing or wrong", uptime_s(), wall_s(), first, acked, bad);
                }
            }
        }
        sleep_ms(WRITE_PERIOD_MS);
    }
    if (acked < seq && fsync(fd) == 0) {
        acked = seq;
        out_line("acked", "acked %lu", acked);
    }
    long bad = acked ? read_back(path, 1, acked) : 0;
    if (bad > 0) lost += (unsigned long)bad;
    close(fd);
    out_line("summary-writer", "writer %s: acked %lu, commits %lu, read-backs %lu, lost in read-backs %lu, final read-back lost %ld, errors %lu estale %lu",
             o_name, acked, commits, readbacks + 1, lost, bad, n_errors, n_estale);
    return 0;
}

/* Whole-file write lock (F_SETLKW) or unlock on FD. */
static int lock_file(int fd, short type) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    return fcntl(fd, type == F_UNLCK ? F_SETLK : F_SETLKW, &fl);
}

static int put_counter(int dfd, char *buf, unsigned long counter, const char *holder) {
    memset(buf, ' ', DIRECT_ALIGN);
    int n = snprintf(buf, LOCK_BYTES, "%lu %s", counter, holder);
    buf[n] = ' ';
    buf[LOCK_BYTES - 1] = '\n';
    if (pwrite(dfd, buf, DIRECT_ALIGN, 0) != DIRECT_ALIGN) { failed("pwrite(counter)"); return -1; }
    if (fsync(dfd) < 0) { failed("fsync(counter)"); return -1; }
    return 0;
}

static int locker(void) {
    char path[PATH_BYTES];
    snprintf(path, sizeof path, "%s/soak-lock.dat", o_dir);
    /* Two descriptors of one file for the process's lifetime: closing either would drop the lock. */
    int lfd = open(path, O_RDWR);
    int dfd = open(path, O_RDWR | O_DIRECT);
    char *buf = aligned(DIRECT_ALIGN);
    if (lfd < 0 || dfd < 0 || !buf) { failed("open(lock file)"); return 1; }
    double start = uptime_s();
    unsigned long sections = 0, conflicts = 0;
    srand((unsigned)getpid());
    out_set("locker", "sections 0 conflicts 0");
    while (!stop_now(start)) {
        if (lock_file(lfd, F_WRLCK) < 0) { failed("fcntl(F_SETLKW)"); sleep_ms(HOLD_MS); continue; }
        ssize_t r = pread(dfd, buf, DIRECT_ALIGN, 0);
        unsigned long counter = 0;
        char holder[LOCK_BYTES] = "";
        if (r < 0) {
            failed("pread(counter)");
        } else {
            buf[r < LOCK_BYTES ? r : LOCK_BYTES - 1] = '\0';
            if (sscanf(buf, "%lu %31s", &counter, holder) != 2) {
                out_line("errors", "%.2f wall %.3f locker unreadable counter file: '%.31s'", uptime_s(), wall_s(), buf);
                n_errors++;
            } else if (strcmp(holder, "-") != 0) {
                conflicts++;
                out_line("errors", "%.2f wall %.3f locker holds the lock and sees holder '%s' (counter %lu, %s)", uptime_s(), wall_s(), holder,
                         counter, strcmp(holder, o_name) == 0 ? "its own marker: its last clear was undone" : "the other's marker: two holders");
            }
        }
        int ok = r >= 0 && put_counter(dfd, buf, counter + 1, o_name) == 0;
        sleep_ms(HOLD_MS);
        ok = ok && put_counter(dfd, buf, counter + 1, "-") == 0;
        if (lock_file(lfd, F_UNLCK) < 0) failed("fcntl(F_UNLCK)");
        if (ok) sections++;
        out_set("locker", "sections %lu conflicts %lu", sections, conflicts);
        sleep_ms((unsigned)(rand() % (LOCK_PAUSE_MS_MAX + 1)));
    }
    out_line("summary-locker", "locker %s: sections %lu, conflicts %lu, errors %lu estale %lu", o_name, sections, conflicts, n_errors, n_estale);
    return 0;
}

static int verify(void) {
    FILE *a = fopen(o_acked, "r");
    unsigned long acked = 0, v;
    char line[128];
    if (a) {
        while (fgets(line, sizeof line, a))
            if (sscanf(line, "acked %lu", &v) == 1 && v > acked) acked = v;
        fclose(a);
    }
    FILE *f = fopen(o_file, "r");
    unsigned long lost = 0, first = 0;
    char rec[RECORD_BYTES], want[RECORD_BYTES];
    for (unsigned long s = 1; s <= acked; s++) {
        make_record(want, o_name, s);
        if (!f || fseeko(f, (off_t)(s - 1) * RECORD_BYTES, SEEK_SET) != 0 || fread(rec, 1, RECORD_BYTES, f) != RECORD_BYTES ||
            memcmp(rec, want, RECORD_BYTES) != 0) {
            if (!lost) first = s;
            lost++;
        }
    }
    if (f) fclose(f);
    printf("verify %s: acked %lu, lost %lu, first lost %lu\n", o_name, acked, lost, first);
    return lost ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) goto usage;
    mode = argv[1];
    int c;
    optind = 2;
    while ((c = getopt(argc, argv, "d:o:y:n:f:a:")) != -1) {
        switch (c) {
        case 'd': o_dir = optarg; break;
        case 'o': o_out = optarg; break;
        case 'y': o_sync = optarg; break;
        case 'n': o_name = optarg; break;
        case 'f': o_file = optarg; break;
        case 'a': o_acked = optarg; break;
        default: goto usage;
        }
    }
    if (!o_name) goto usage;
    if (strcmp(mode, "verify") == 0 && o_file && o_acked) return verify();
    if (!o_dir || !o_out || !o_sync) goto usage;
    if (strcmp(mode, "writer") == 0) return writer();
    if (strcmp(mode, "locker") == 0) return locker();
usage:
    fprintf(stderr, "usage: soak writer|locker -d DIR -o OUT -y SYNC -n NAME | soak verify -f FILE -a ACKED -n NAME\n");
    return 2;
}
