/* interop/suites/lockpeer.h: what the two-guest lock programs (lock2.c, lockfo.c) share
 * (header-only, static): flag files in the shared 9p directory (-y) through which the guests and
 * the host meet, every wait bounded and abandoned once a failure flag (a_failed, b_failed,
 * host_failed) appears; and the client's lockd debug log (nlm_debug, read with klogctl), which
 * shows what the server answered (BLOCKED, grace) and whether a GRANTED callback arrived. */
#ifndef INTEROP_LOCKPEER_H
#define INTEROP_LOCKPEER_H
#include "lockutil.h"
#include <signal.h>
#include <sys/klog.h>
#include <sys/wait.h>

#define KLOG_BYTES (1024 * 1024)
#define FLAG_POLL_MS 200
/* lockd debug lines (Linux 6.1 fs/lockd, printed while /proc/sys/sunrpc/nlm_debug is set). */
#define KLOG_BLOCKED "server returns status 3"        /* LCK_BLOCKED */
#define KLOG_GRANTED "GRANTED"                        /* a GRANTED or GRANTED_MSG callback */
#define KLOG_GRACE "lockd: server in grace period"    /* a DENIED_GRACE_PERIOD reply, retried in 5 s */
#define KLOG_RECLAIM "lockd: reclaiming locks for host" /* the reclaimer thread after SM_NOTIFY */

static char g_sync_path[PATH_BYTES_MAX];

/* Forks a lock holder: the child write-locks [start, start+len) of path and answers 'y' (held) or
 * 'n' on the up pipe; on 'u' from the down pipe it unlocks and exits, first answering 'k'
 * (unlocked) or 'e' on up when ack is set. EOF on down (the parent gone) exits too: exiting
 * releases the lock. The parent gets the child's pid, the read end of up and the write end of
 * down; returns -1 with g_why set when the pipes or the fork failed. */
static inline int holder_fork(const char *path, off_t start, off_t len, int ack, pid_t *pid, int *up_r, int *down_w) {
    int up[2], down[2];
    if (pipe(up) < 0 || pipe(down) < 0) return failf("pipe: %s", strerror(errno));
    fflush(stdout);
    *pid = fork();
    if (*pid < 0) return failf("fork: %s", strerror(errno));
    if (*pid == 0) {
        close(up[0]);
        close(down[1]);
        int fd = open(path, O_RDWR);
        char c = (fd >= 0 && lock_range(fd, F_SETLK, F_WRLCK, start, len) == 0) ? 'y' : 'n';
        if (write(up[1], &c, 1) != 1) _exit(1);
        while (read(down[0], &c, 1) == 1) {
            if (c != 'u') continue;
            c = lock_range(fd, F_SETLK, F_UNLCK, start, len) == 0 ? 'k' : 'e';
            if (ack && write(up[1], &c, 1) != 1) _exit(1);
            close(fd);
            _exit(0);
        }
        _exit(0);   /* parent gone: exiting releases the lock */
    }
    close(up[1]);
    close(down[0]);
    *up_r = up[0];
    *down_w = down[1];
    return 0;
}


/* The path of flag NAME in the sync directory (a static buffer: copy it before the next call). */
static inline const char *flag(const char *name) {
    snprintf(g_sync_path, sizeof g_sync_path, "%s/%s", g_opts.sync_dir, name);
    return g_sync_path;
}
static inline int have_flag(const char *name) {
    struct stat st;
    return stat(flag(name), &st) == 0;
}
static inline int set_flag(const char *name) { return touch_file(flag(name)); }

/* Waits for a flag; gives up early when a guest or the host has declared failure. */
static inline int wait_flag(const char *name, unsigned secs) {
    static const char *const fails[] = { "a_failed", "b_failed", "host_failed" };
    for (unsigned i = 0; i < secs * (1000 / FLAG_POLL_MS); i++) {
        if (have_flag(name)) return 0;
        for (unsigned f = 0; f < sizeof fails / sizeof fails[0]; f++)
            if (have_flag(fails[f])) return failf("gave up waiting for %s: %s exists", name, fails[f]);
        msleep(FLAG_POLL_MS);
    }
    return failf("waited %u s for %s", secs, name);
}

static char g_klog[KLOG_BYTES];

/* Occurrences of NEEDLE in the kernel log (-1 if it cannot be read). */
static inline int klog_count(const char *needle) {
    int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, g_klog, sizeof g_klog - 1);
    if (n < 0) return -1;
    g_klog[n] = 0;
    int count = 0;
    for (const char *p = g_klog; (p = strstr(p, needle)) != NULL; p += strlen(needle)) count++;
    return count;
}

static inline int set_nlm_debug(const char *value) {
    int fd = open("/proc/sys/sunrpc/nlm_debug", O_WRONLY);
    if (fd < 0) return -1;
    ssize_t w = write(fd, value, strlen(value));
    close(fd);
    return w > 0 ? 0 : -1;
}

/* Evidence for the log: "# klog: <line>" (not a case line; the reports ignore it). Uses the
 * buffer of the last klog_count(). */
static inline void print_last_klog_line(const char *needle) {
    const char *last = NULL;
    for (const char *p = g_klog; (p = strstr(p, needle)) != NULL; p += strlen(needle)) last = p;
    if (!last) return;
    const char *b = last, *e = last;
    while (b > g_klog && b[-1] != '\n') b--;
    while (*e && *e != '\n') e++;
    printf("# klog: %.*s\n", (int)(e - b), b);
}

/* A process blocked in F_SETLKW; it writes 'y' to done_fd once granted (then unlocks and exits),
 * 'n' if the call failed. */
struct waiter { pid_t pid; int done_fd; };

static inline int start_waiter(struct waiter *w, const char *path, off_t start, off_t len) {
    int up[2];
    if (pipe(up) < 0) return failf("pipe: %s", strerror(errno));
    fflush(stdout);
    w->pid = fork();
    if (w->pid < 0) return failf("fork: %s", strerror(errno));
    if (w->pid == 0) {
        close(up[0]);
        int fd = open(path, O_RDWR);
        char c = (fd >= 0 && lock_range(fd, F_SETLKW, F_WRLCK, start, len) == 0) ? 'y' : 'n';
        if (write(up[1], &c, 1) != 1) _exit(1);
        if (fd >= 0) { lock_range(fd, F_SETLK, F_UNLCK, start, len); close(fd); }
        _exit(0);
    }
    close(up[1]);
    w->done_fd = up[0];
    fcntl(w->done_fd, F_SETFL, O_NONBLOCK);
    return 0;
}

/* 1 = granted, 0 = still waiting, -1 = the waiter failed. */
static inline int waiter_state(struct waiter *w) {
    char c;
    ssize_t n = read(w->done_fd, &c, 1);
    if (n == 1) return c == 'y' ? 1 : -1;
    if (n == 0) return -1;
    return 0;
}

static inline void waiter_kill(struct waiter *w) {
    if (w->pid <= 0) return;
    kill(w->pid, SIGKILL);
    waitpid(w->pid, NULL, 0);
    w->pid = -1;
}

/* Waits until the waiter's LOCK got LCK_BLOCKED from the server (lockd debug log), bounded. */
static inline int wait_blocked(struct waiter *w, int blocked_before, unsigned secs) {
    for (unsigned i = 0; i < secs * (1000 / FLAG_POLL_MS); i++) {
        int st = waiter_state(w);
        if (st != 0) return failf(st > 0 ? "granted while the other guest still held the lock"
                                         : "the F_SETLKW process failed");
        if (klog_count(KLOG_BLOCKED) > blocked_before) return 0;
        msleep(FLAG_POLL_MS);
    }
    return failf("no LCK_BLOCKED reply seen in %u s", secs);
}

/* Waits (bounded) for the waiter's grant; kills it on timeout. */
static inline int wait_granted(struct waiter *w, unsigned secs) {
    for (unsigned i = 0; i < secs * (1000 / FLAG_POLL_MS); i++) {
        int st = waiter_state(w);
        if (st > 0) { waitpid(w->pid, NULL, 0); w->pid = -1; return 0; }
        if (st < 0) { waitpid(w->pid, NULL, 0); w->pid = -1; return failf("the F_SETLKW process failed"); }
        msleep(FLAG_POLL_MS);
    }
    waiter_kill(w);
    return failf("F_SETLKW not granted within %u s", secs);
}
#endif
