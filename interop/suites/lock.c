/* interop/suites/lock.c: the one-guest lock suite, Connectathon lock tests 1-7, 10-12 and 15
 * (semantics from REAL-CLIENTS.md, our own code). A parent sets locks with fcntl; a forked child
 * tests them with F_GETLK. On one client the kernel settles same-client conflicts itself, so
 * these cases mainly check the LOCK/UNLOCK/TEST traffic; lock2.c covers server conflicts.
 * With -k N (interop/lockfailover.sh) test 7 asks the host for kill -9 number N of the active
 * while the parent holds its lock and the child waits: it writes failoverN_now into the sync
 * directory (-y) and keeps sending NLM TESTs until the host writes failoverN_done. */
#include "lockutil.h"
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define PAGE_EDGE_START 4090
#define PAGE_EDGE_LEN 16
#define BLOCKED_OBSERVE_MS 1500
#define CHILD_WAIT_POLLS_MAX 1000
#define FAILOVER_WAIT_SECONDS 150   /* the host's kill, takeover wait (60 s) and serving line */
#define FAILOVER_TEST_GAP_MS 100

static char g_file[PATH_BYTES_MAX];

static int open_case_file(const char *name) {
    char rel[PATH_BYTES_MAX];
    snprintf(rel, sizeof rel, "lock/%s", name);
    if (path_in(g_file, rel) < 0) return -1;
    int fd = open(g_file, O_CREAT | O_RDWR, 0666);
    if (fd < 0) return failf("open %s: %s", g_file, strerror(errno));
    return fd;
}

struct probe { off_t start, len; enum want want; };
struct probes { const struct probe *p; unsigned n; };

static int run_probes(void *arg) {
    const struct probes *ps = arg;
    int fd = open(g_file, O_RDWR);
    if (fd < 0) return failf("child open: %s", strerror(errno));
    for (unsigned i = 0; i < ps->n; i++) {
        if (expect_range(fd, ps->p[i].start, ps->p[i].len, ps->p[i].want, NULL) < 0) { close(fd); return -1; }
    }
    close(fd);
    return 0;
}
#define PROBE(...) do { static const struct probe pr_[] = { __VA_ARGS__ }; \
    struct probes ps_ = { pr_, sizeof pr_ / sizeof pr_[0] }; if (in_child(run_probes, &ps_) < 0) return -1; } while (0)

static const off_t starts[] = { 0, 1, MAXEOF };
static const off_t lens[] = { 0, 1, MAXEOF };

static int grid(void *arg) {
    enum want want = *(enum want *)arg;
    int fd = open(g_file, O_RDWR);
    if (fd < 0) return failf("child open: %s", strerror(errno));
    for (unsigned i = 0; i < 3; i++)
        for (unsigned j = 0; j < 3; j++)
            if (expect_range(fd, starts[i], lens[j], want, NULL) < 0) { close(fd); return -1; }
    if (want == W_DENIED) {
        errno = 0;
        if (lock_range(fd, F_SETLK, F_WRLCK, 0, 0) == 0 || (errno != EAGAIN && errno != EACCES)) {
            close(fd);
            return failf("F_SETLK against the parent's lock: want EAGAIN/EACCES, got %s", strerror(errno));
        }
    }
    close(fd);
    return 0;
}

static int t1_unlocked(void) {
    int fd = open_case_file("t1");
    if (fd < 0) return -1;
    enum want w = W_FREE;
    int r = in_child(grid, &w);
    close(fd);
    return r;
}

static int t2_whole_file(void) {
    int fd = open_case_file("t2");
    if (fd < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 0), "lock whole file");
    enum want w = W_DENIED;
    int r = in_child(grid, &w);
    if (r == 0) {
        CHECK_SYS(lock_range(fd, F_SETLK, F_UNLCK, 0, 0), "unlock");
        w = W_FREE;
        r = in_child(grid, &w);
    }
    close(fd);
    return r;
}

static int t3_byte0(void) {
    int fd = open_case_file("t3");
    if (fd < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 1), "lock byte 0");
    PROBE({ 0, 0, W_DENIED }, { 0, 1, W_DENIED }, { 0, MAXEOF, W_DENIED }, { 1, 0, W_FREE }, { 1, 1, W_FREE },
          { 1, MAXEOF, W_FREE }, { MAXEOF, 1, W_FREE });
    close(fd);
    return 0;
}

static int t4_byte1_edges(void) {
    int fd = open_case_file("t4");
    if (fd < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 1, 1), "lock byte 1");
    PROBE({ 0, 1, W_FREE }, { 0, 2, W_DENIED }, { 1, 1, W_DENIED }, { 1, 0, W_DENIED }, { 0, 0, W_DENIED },
          { 2, 1, W_FREE }, { 2, 0, W_FREE }, { 2, MAXEOF - 2, W_FREE }, { 0, MAXEOF, W_DENIED });
    close(fd);
    return 0;
}

static int t5_two_locks(void) {
    int fd = open_case_file("t5");
    if (fd < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 1), "lock byte 0");
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 2, 1), "lock byte 2");
    PROBE({ 1, 1, W_FREE }, { 0, 2, W_DENIED }, { 1, 2, W_DENIED }, { 0, 3, W_DENIED }, { 1, 0, W_DENIED },
          { 0, 0, W_DENIED }, { 3, 0, W_FREE });
    close(fd);
    return 0;
}

static int t6_maxeof(void) {
    int fd = open_case_file("t6");
    if (fd < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, MAXEOF, 1), "lock the byte at MAXEOF");
    PROBE({ MAXEOF, 1, W_DENIED }, { MAXEOF, 0, W_DENIED }, { MAXEOF - 1, 2, W_DENIED }, { MAXEOF - 1, 0, W_DENIED },
          { 0, 0, W_DENIED }, { MAXEOF - 1, 1, W_FREE }, { 0, MAXEOF, W_FREE }, { MAXEOF, 2, W_OVERFLOW },
          { MAXEOF - 1, 3, W_OVERFLOW });
    CHECK_SYS(lock_range(fd, F_SETLK, F_UNLCK, MAXEOF, 1), "unlock MAXEOF");
    PROBE({ MAXEOF, 1, W_FREE }, { 0, 0, W_FREE });
    close(fd);
    return 0;
}

/* -k N: the parent holds its lock across kill -9 number N of the active. Its F_GETLK of its own
 * range passes the local check (its own lock) and goes to the server as NLM TEST, so TESTs are
 * in flight when the active dies; each must answer "unlocked" (the holder is the caller). */
static int t7_failover(int fd) {
    char now[32], done[32], path[PATH_BYTES_MAX];
    snprintf(now, sizeof now, "failover%u_now", g_opts.failover_point);
    snprintf(done, sizeof done, "failover%u_done", g_opts.failover_point);
    if (snprintf(path, sizeof path, "%s/%s", g_opts.sync_dir, now) >= (int)sizeof path) return failf("sync path too long");
    if (touch_file(path) < 0) return -1;
    struct stat st;
    unsigned tests = 0;
    long longest_ms = 0;
    for (unsigned i = 0; i < FAILOVER_WAIT_SECONDS * 1000 / FAILOVER_TEST_GAP_MS; i++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (expect_range(fd, PAGE_EDGE_START, PAGE_EDGE_LEN, W_FREE, NULL) < 0) return failf("during failover: %s", g_why);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms > longest_ms) longest_ms = ms;
        tests++;
        snprintf(path, sizeof path, "%s/%s", g_opts.sync_dir, done);
        if (stat(path, &st) == 0) {
            printf("# lock_t07: %u NLM TESTs around failover %u, the longest took %ld ms\n", tests, g_opts.failover_point,
                   longest_ms);
            return 0;
        }
        snprintf(path, sizeof path, "%s/host_failed", g_opts.sync_dir);
        if (stat(path, &st) == 0) return failf("the host's failover %u failed", g_opts.failover_point);
        msleep(FAILOVER_TEST_GAP_MS);
    }
    return failf("no %s from the host within %d s", done, FAILOVER_WAIT_SECONDS);
}

struct t7_arg { int ready_fd; };
static int t7_child(void *arg) {
    struct t7_arg *a = arg;
    int fd = open(g_file, O_RDWR);
    if (fd < 0) return failf("child open: %s", strerror(errno));
    if (lock_range(fd, F_SETLKW, F_WRLCK, PAGE_EDGE_START, PAGE_EDGE_LEN) < 0) return failf("child F_SETLKW: %s", strerror(errno));
    char c = 'g';
    if (write(a->ready_fd, &c, 1) != 1) return failf("child: pipe write");
    if (check_pattern(fd, PAGE_EDGE_START, PAGE_EDGE_LEN, 72) < 0) return failf("child sees stale data: %s", g_why);
    if (write_pattern(fd, PAGE_EDGE_START, PAGE_EDGE_LEN, 73) < 0 || fsync(fd) < 0) return -1;
    if (lock_range(fd, F_SETLK, F_UNLCK, PAGE_EDGE_START, PAGE_EDGE_LEN) < 0) return failf("child unlock: %s", strerror(errno));
    close(fd);
    return 0;
}

static int t7_mutual_exclusion(void) {
    int fd = open_case_file("t7");
    if (fd < 0) return -1;
    CHECK_SYS(ftruncate(fd, 0), "truncate");
    if (write_pattern(fd, 0, 2 * PAGE_EDGE_START, 71) < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, PAGE_EDGE_START, PAGE_EDGE_LEN), "parent lock across the page edge");
    int p[2];
    CHECK_SYS(pipe(p), "pipe");
    CHECK_SYS(fcntl(p[0], F_SETFL, O_NONBLOCK), "nonblock");
    struct t7_arg a = { p[1] };
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) { close(p[0]); int r = t7_child(&a); if (r < 0) printf("t7 child: %s\n", g_why); _exit(r < 0 ? 1 : 0); }
    close(p[1]);
    msleep(BLOCKED_OBSERVE_MS);
    char c;
    CHECK(read(p[0], &c, 1) != 1, "the child got the lock while the parent held it");
    if (g_opts.failover_point > 0) {
        if (t7_failover(fd) < 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); return -1; }
        msleep(BLOCKED_OBSERVE_MS);
        CHECK(read(p[0], &c, 1) != 1, "the child got the lock after the failover while the parent held it");
    }
    if (write_pattern(fd, PAGE_EDGE_START, PAGE_EDGE_LEN, 72) < 0 || fsync(fd) < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_UNLCK, PAGE_EDGE_START, PAGE_EDGE_LEN), "parent unlock");
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (see its line above)");
    CHECK_SYS(lock_range(fd, F_SETLKW, F_WRLCK, PAGE_EDGE_START, PAGE_EDGE_LEN), "parent relock");
    if (check_pattern(fd, PAGE_EDGE_START, PAGE_EDGE_LEN, 73) < 0) return failf("parent sees stale data: %s", g_why);
    if (check_pattern(fd, 0, PAGE_EDGE_START, 71) < 0) return -1;
    close(fd);
    return 0;
}

static int t10_split_coalesce(void) {
    int fd = open_case_file("t10");
    if (fd < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 100), "lock [0,100)");
    CHECK_SYS(lock_range(fd, F_SETLK, F_UNLCK, 40, 20), "unlock [40,60)");
    PROBE({ 40, 20, W_FREE }, { 39, 1, W_DENIED }, { 60, 1, W_DENIED }, { 0, 40, W_DENIED }, { 60, 40, W_DENIED },
          { 100, 0, W_FREE });
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 40, 10), "lock [40,50)");
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 50, 10), "lock [50,60)");
    PROBE({ 40, 20, W_DENIED }, { 0, 100, W_DENIED }, { 100, 0, W_FREE });
    CHECK_SYS(lock_range(fd, F_SETLK, F_UNLCK, 0, 100), "unlock [0,100)");
    PROBE({ 0, 0, W_FREE });
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 10), "lock [0,10)");
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 10, 10), "lock [10,20)");
    CHECK_SYS(lock_range(fd, F_SETLK, F_UNLCK, 5, 10), "unlock [5,15)");
    PROBE({ 5, 10, W_FREE }, { 4, 1, W_DENIED }, { 15, 1, W_DENIED }, { 20, 0, W_FREE });
    close(fd);
    return 0;
}

static int t11_close_releases(void) {
    int fd = open_case_file("t11");
    if (fd < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 0), "lock");
    PROBE({ 0, 0, W_DENIED });
    int fd2 = open(g_file, O_RDONLY);
    CHECK(fd2 >= 0, "second open: %s", strerror(errno));
    close(fd2);
    PROBE({ 0, 0, W_FREE });
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 0), "relock");
    int fd3 = dup(fd);
    CHECK(fd3 >= 0, "dup");
    close(fd3);
    PROBE({ 0, 0, W_FREE });
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 0), "relock 2");
    if (write_pattern(fd, 0, 8192, 74) < 0) return -1;
    CHECK_SYS(ftruncate(fd, 100), "ftruncate");
    PROBE({ 0, 0, W_DENIED });
    close(fd);
    PROBE({ 0, 0, W_FREE });
    return 0;
}

static int t12_killed_holder(void) {
    int fd = open_case_file("t12");
    if (fd < 0) return -1;
    int p[2];
    CHECK_SYS(pipe(p), "pipe");
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(p[0]);
        int cfd = open(g_file, O_RDWR);
        char c = (cfd >= 0 && lock_range(cfd, F_SETLK, F_WRLCK, 0, 0) == 0) ? 'y' : 'n';
        if (write(p[1], &c, 1) != 1) _exit(1);
        for (;;) pause();
    }
    close(p[1]);
    char c = 0;
    CHECK(read(p[0], &c, 1) == 1 && c == 'y', "the holder could not lock");
    close(p[0]);
    int r = expect_range(fd, 0, 0, W_DENIED, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    if (r < 0) return -1;
    CHECK_SYS(lock_range(fd, F_SETLK, F_WRLCK, 0, 0), "lock after the holder was killed");
    CHECK_SYS(lock_range(fd, F_SETLK, F_UNLCK, 0, 0), "unlock");
    close(fd);
    return 0;
}

static int t15_second_descriptor(void) {
    int fd1 = open_case_file("t15");
    if (fd1 < 0) return -1;
    CHECK_SYS(ftruncate(fd1, 0), "truncate");
    int fd2 = open(g_file, O_RDWR);
    CHECK(fd2 >= 0, "second open: %s", strerror(errno));
    CHECK_SYS(lock_range(fd2, F_SETLK, F_WRLCK, 0, 0), "lock via fd2");
    PROBE({ 0, 0, W_DENIED });
    CHECK_SYS(lock_range(fd2, F_SETLK, F_UNLCK, 0, 0), "unlock via fd2");
    PROBE({ 0, 0, W_FREE });
    close(fd2);
    if (write_pattern(fd1, 0, 10000, 75) < 0) return -1;
    close(fd1);
    fd1 = open(g_file, O_RDWR);
    CHECK(fd1 >= 0, "reopen: %s", strerror(errno));
    if (check_pattern(fd1, 0, 10000, 75) < 0) return -1;
    close(fd1);
    PROBE({ 0, 0, W_FREE });
    return 0;
}

static int t0_setup(void) {
    if (ensure_mounted() < 0) return -1;
    char p[PATH_BYTES_MAX];
    if (path_in(p, "lock") < 0) return -1;
    if (rm_tree(p) < 0) return -1;
    CHECK_SYS(mkdir(p, 0777), "mkdir lock");
    return 0;
}

int main(int argc, char **argv) {
    parse_opts(argc, argv);
    run_case("lock_setup", t0_setup);
    run_case("lock_t01_test_unlocked", t1_unlocked);
    run_case("lock_t02_whole_file", t2_whole_file);
    run_case("lock_t03_byte0", t3_byte0);
    run_case("lock_t04_byte1_edges", t4_byte1_edges);
    run_case("lock_t05_two_locks", t5_two_locks);
    run_case("lock_t06_maxeof", t6_maxeof);
    run_case("lock_t07_mutual_exclusion", t7_mutual_exclusion);
    run_case("lock_t10_split_coalesce", t10_split_coalesce);
    run_case("lock_t11_close_releases", t11_close_releases);
    run_case("lock_t12_killed_holder", t12_killed_holder);
    run_case("lock_t15_second_descriptor", t15_second_descriptor);
    return summary();
}
