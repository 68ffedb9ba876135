/* interop/suites/common.c: case runner and file helpers shared by every suite (see common.h). */
#include "common.h"
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define PATTERN_CHUNK_BYTES 65536
#define MOUNT_TIMEOUT_SECONDS 90
#define KILL_REAP_TRIES_MAX 50
/* Left by a suite whose case timed out, so later suites in the same boot fail at once. */
#define SERVER_DEAD_MARKER "/run/interop-server-dead"

struct opts g_opts = { "/mnt", "10.99.0.1:/export", "/sync", "a", "1", CASE_TIMEOUT_SECONDS_DEFAULT, 0, "transparent", NULL };
char g_why[WHY_BYTES_MAX];
static unsigned g_passed, g_failed;
static int g_server_dead;

int failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_why, sizeof g_why, fmt, ap);
    va_end(ap);
    return -1;
}

void parse_opts(int argc, char **argv) {
    int c;
    while ((c = getopt(argc, argv, "d:s:y:r:p:t:k:m:w:")) != -1) {
        switch (c) {
        case 'd': g_opts.dir = optarg; break;
        case 's': g_opts.server = optarg; break;
        case 'y': g_opts.sync_dir = optarg; break;
        case 'r': g_opts.role = optarg; break;
        case 'p': g_opts.phase = optarg; break;
        case 't': g_opts.case_timeout_s = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'k': g_opts.failover_point = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'm': g_opts.mode = optarg; break;
        case 'w':
            if (!optarg[0] || strchr(optarg, '/') || !strcmp(optarg, ".") || !strcmp(optarg, "..")) {
                fprintf(stderr, "%s: -w takes one directory name, not a path: %s\n", argv[0], optarg);
                exit(2);
            }
            g_opts.work = optarg;
            break;
        default:
            fprintf(stderr, "usage: %s [-d mountdir] [-s server:/export] [-t case_timeout_s] "
                            "[-y syncdir -r a|b -p phase] [-k failover_point] [-m transparent|classic] [-w workdir]\n", argv[0]);
            exit(2);
        }
    }
    if (g_opts.case_timeout_s == 0) g_opts.case_timeout_s = CASE_TIMEOUT_SECONDS_DEFAULT;
    if (access(SERVER_DEAD_MARKER, F_OK) == 0) g_server_dead = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
}

void report(const char *name, int ok, const char *why) {
    if (ok) { g_passed++; printf("%s: PASS\n", name); }
    else { g_failed++; printf("%s: FAIL (%s)\n", name, why && why[0] ? why : "no reason given"); }
    fflush(stdout);
}

/* Reads a child's reason from fd (the read end of its pipe) into why (cap bytes, NUL-terminated)
 * until EOF (the child and its writers finished), a full buffer or timeout_s; closes fd.
 * Returns 1 when the time bound passed first. */
static int read_why_bounded(int fd, char *why, size_t cap, unsigned timeout_s) {
    struct pollfd p = { fd, POLLIN, 0 };
    size_t got = 0;
    int timed_out = 0;
    time_t deadline = time(NULL) + (time_t)timeout_s;
    for (;;) {
        time_t now = time(NULL);
        if (now >= deadline) { timed_out = 1; break; }
        int pr = poll(&p, 1, (int)((deadline - now) * 1000));
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) { timed_out = (pr == 0); break; }
        ssize_t n = read(fd, why + got, cap - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
        if (got >= cap - 1) break;
    }
    why[got] = 0;
    close(fd);
    return timed_out;
}

/* SIGKILLs a timed-out child's process group (NFS and NLM waits are killable) and reaps it,
 * waiting at most KILL_REAP_TRIES_MAX * 100 ms. */
static void kill_group_and_reap(pid_t pid, int *status) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    for (int i = 0; i < KILL_REAP_TRIES_MAX && waitpid(pid, status, WNOHANG) == 0; i++) msleep(100);
}

void run_case(const char *name, case_fn fn) {
    int fds[2];
    char why[WHY_BYTES_MAX] = "";
    if (g_server_dead) { report(name, 0, "not run: an earlier case in this boot timed out (server dead or hung)"); return; }
    if (pipe(fds) < 0) { report(name, 0, "pipe failed"); return; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) { report(name, 0, "fork failed"); close(fds[0]); close(fds[1]); return; }
    if (pid == 0) {
        close(fds[0]);
        setpgid(0, 0);
        g_why[0] = 0;
        int r = fn();
        if (r != 0 && !g_why[0]) snprintf(g_why, sizeof g_why, "case returned %d", r);
        ssize_t n = write(fds[1], g_why, strlen(g_why));
        (void)n;
        _exit(r == 0 ? 0 : 1);
    }
    close(fds[1]);
    setpgid(pid, pid);
    int timed_out = read_why_bounded(fds[0], why, sizeof why, g_opts.case_timeout_s);
    int status = 0;
    if (timed_out) {
        kill_group_and_reap(pid, &status);
        g_server_dead = 1;
        int mfd = open(SERVER_DEAD_MARKER, O_CREAT | O_WRONLY, 0644);
        if (mfd >= 0) close(mfd);
        char msg[WHY_BYTES_MAX];
        snprintf(msg, sizeof msg, "timed out after %u s%s%s", g_opts.case_timeout_s, why[0] ? ": " : "", why);
        report(name, 0, msg);
        return;
    }
    /* The pipe closed; the child is exiting. Bound the wait anyway. */
    int reaped = 0;
    for (int i = 0; i < KILL_REAP_TRIES_MAX * 10; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) { reaped = 1; break; }
        msleep(100);
    }
    if (!reaped) { kill(-pid, SIGKILL); g_server_dead = 1; report(name, 0, "case process did not exit"); return; }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) report(name, 1, NULL);
    else if (WIFSIGNALED(status)) {
        char msg[WHY_BYTES_MAX];
        snprintf(msg, sizeof msg, "killed by signal %d", WTERMSIG(status));
        report(name, 0, msg);
    } else report(name, 0, why);
}

int summary(void) {
    printf("%u passed, %u failed\n", g_passed, g_failed);
    fflush(stdout);
    return g_failed == 0 ? 0 : 1;
}

void msleep(unsigned ms) {
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

int path_in(char *out, const char *rel) {
    int n = g_opts.work ? snprintf(out, PATH_BYTES_MAX, "%s/%s/%s", g_opts.dir, g_opts.work, rel)
                        : snprintf(out, PATH_BYTES_MAX, "%s/%s", g_opts.dir, rel);
    if (n < 0 || n >= PATH_BYTES_MAX) return failf("path too long: %s", rel);
    return 0;
}

int make_work_dir(void) {
    if (!g_opts.work) return 0;
    char p[PATH_BYTES_MAX];
    struct stat st;
    int n = snprintf(p, sizeof p, "%s/%s", g_opts.dir, g_opts.work);
    if (n < 0 || n >= (int)sizeof p) return failf("path too long: %s", g_opts.work);
    if (mkdir(p, 0777) == 0) return 0;
    if (errno != EEXIST) return failf("mkdir %s: %s", p, strerror(errno));
    if (stat(p, &st) < 0) return failf("stat %s: %s", p, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return failf("%s exists and is not a directory", p);
    return 0;
}

static unsigned char pattern_byte(off_t off, unsigned seed) {
    uint64_t x = (uint64_t)off * 2654435761u + seed * 40503u;
    return (unsigned char)(x ^ (x >> 13) ^ (x >> 29));
}

int write_pattern(int fd, off_t off, size_t len, unsigned seed) {
    static unsigned char buf[PATTERN_CHUNK_BYTES];
    while (len > 0) {
        size_t n = len < sizeof buf ? len : sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = pattern_byte(off + (off_t)i, seed);
        ssize_t w = pwrite(fd, buf, n, off);
        if (w < 0) return failf("pwrite at %lld: %s", (long long)off, strerror(errno));
        if ((size_t)w != n) return failf("short pwrite at %lld: %zd of %zu", (long long)off, w, n);
        off += (off_t)n;
        len -= n;
    }
    return 0;
}

int check_pattern(int fd, off_t off, size_t len, unsigned seed) {
    static unsigned char buf[PATTERN_CHUNK_BYTES];
    while (len > 0) {
        size_t n = len < sizeof buf ? len : sizeof buf;
        ssize_t r = pread(fd, buf, n, off);
        if (r < 0) return failf("pread at %lld: %s", (long long)off, strerror(errno));
        if ((size_t)r != n) return failf("short pread at %lld: %zd of %zu", (long long)off, r, n);
        for (size_t i = 0; i < n; i++) {
            if (buf[i] != pattern_byte(off + (off_t)i, seed))
                return failf("data mismatch at offset %lld: got 0x%02x want 0x%02x", (long long)(off + (off_t)i),
                             buf[i], pattern_byte(off + (off_t)i, seed));
        }
        off += (off_t)n;
        len -= n;
    }
    return 0;
}

int rm_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : failf("lstat %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0) return failf("unlink %s: %s", path, strerror(errno));
        return 0;
    }
    DIR *d = opendir(path);
    if (!d) return failf("opendir %s: %s", path, strerror(errno));
    struct dirent *e;
    char sub[PATH_BYTES_MAX];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= (int)sizeof sub) { closedir(d); return failf("path too long"); }
        if (rm_tree(sub) < 0) { closedir(d); return -1; }
    }
    closedir(d);
    if (rmdir(path) < 0) return failf("rmdir %s: %s", path, strerror(errno));
    return 0;
}

int drop_caches(void) {
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0) return failf("open drop_caches: %s", strerror(errno));
    ssize_t w = write(fd, "3\n", 2);
    close(fd);
    if (w != 2) return failf("write drop_caches failed");
    return 0;
}

int run_cmd(const char *cmd, unsigned timeout_s) {
    pid_t pid = fork();
    if (pid < 0) return failf("fork: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status;
    for (unsigned i = 0; i < timeout_s * 10; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        msleep(100);
    }
    kill(-pid, SIGKILL);
    for (int i = 0; i < KILL_REAP_TRIES_MAX && waitpid(pid, &status, WNOHANG) == 0; i++) msleep(100);
    return failf("command timed out after %u s: %s", timeout_s, cmd);
}

int is_nfs_mounted(const char *dir, char *opts_out, size_t opts_len) {
    FILE *f = fopen("/proc/mounts", "r");
    if (!f) return 0;
    char dev[PATH_BYTES_MAX], mnt[PATH_BYTES_MAX], type[64], opts[2048];
    int found = 0;
    while (fscanf(f, "%511s %511s %63s %2047s %*d %*d", dev, mnt, type, opts) == 4) {
        if (!strcmp(mnt, dir) && !strncmp(type, "nfs", 3)) {
            found = 1;
            if (opts_out) snprintf(opts_out, opts_len, "%s", opts);
        }
    }
    fclose(f);
    return found;
}

int ensure_mounted(void) {
    if (is_nfs_mounted(g_opts.dir, NULL, 0)) return 0;
    char cmd[PATH_BYTES_MAX * 2];
    snprintf(cmd, sizeof cmd, "mount -t nfs %s %s", g_opts.server, g_opts.dir);
    int rc = run_cmd(cmd, MOUNT_TIMEOUT_SECONDS);
    if (rc < 0) return -1;
    if (rc != 0) return failf("`%s` exited %d", cmd, rc);
    if (!is_nfs_mounted(g_opts.dir, NULL, 0)) return failf("`%s` succeeded but %s is not an nfs mount", cmd, g_opts.dir);
    return 0;
}

int wait_file(const char *path, unsigned timeout_s) {
    struct stat st;
    for (unsigned i = 0; i < timeout_s * 5; i++) {
        if (stat(path, &st) == 0) return 0;
        msleep(200);
    }
    return failf("waited %u s for %s", timeout_s, path);
}

int touch_file(const char *path) {
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) return failf("create %s: %s", path, strerror(errno));
    fsync(fd);
    close(fd);
    return 0;
}

/* Forks a child that runs fn(arg) (in a process group of its own when own_group) and, when it
 * fails, writes its reason (g_why) to the pipe before exiting 1. Returns the child's pid with
 * *why_fd the pipe's read end, or -1 with g_why set. */
static pid_t fork_child(child_fn fn, void *arg, int own_group, int *why_fd) {
    int fds[2];
    if (pipe(fds) < 0) return failf("pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return failf("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        if (own_group) setpgid(0, 0);
        g_why[0] = 0;
        int r = fn(arg);
        if (r < 0) { ssize_t w = write(fds[1], g_why, strlen(g_why)); (void)w; }
        _exit(r < 0 ? 1 : 0);
    }
    close(fds[1]);
    if (own_group) setpgid(pid, pid);
    *why_fd = fds[0];
    return pid;
}

/* Runs fn(arg) in a child process; returns its verdict with the child's reason in g_why. */
int in_child(child_fn fn, void *arg) {
    int why_fd;
    pid_t pid = fork_child(fn, arg, 0, &why_fd);
    if (pid < 0) return -1;
    char why[WHY_BYTES_MAX] = "";
    ssize_t n = read(why_fd, why, sizeof why - 1);
    why[n > 0 ? n : 0] = 0;
    close(why_fd);
    int status;
    if (waitpid(pid, &status, 0) != pid) return failf("waitpid: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    return failf("child: %s", why[0] ? why : "died");
}

int in_child_bounded(child_fn fn, void *arg, unsigned timeout_s) {
    int why_fd;
    pid_t pid = fork_child(fn, arg, 1, &why_fd);
    if (pid < 0) return -1;
    char why[WHY_BYTES_MAX] = "";
    int timed_out = read_why_bounded(why_fd, why, sizeof why, timeout_s);
    int status = 0;
    if (timed_out) {
        kill_group_and_reap(pid, &status);
        return failf("timed out after %u s%s%s", timeout_s, why[0] ? ": " : "", why);
    }
    int reaped = 0;
    for (int i = 0; i < KILL_REAP_TRIES_MAX * 10; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) { reaped = 1; break; }
        msleep(100);
    }
    if (!reaped) { kill(-pid, SIGKILL); return failf("child did not exit after closing its pipe"); }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFSIGNALED(status)) return failf("child killed by signal %d", WTERMSIG(status));
    return failf("%s", why[0] ? why : "child failed");
}
