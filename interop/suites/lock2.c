/* interop/suites/lock2.c: the two-guest lock cases, where the server alone decides conflicts.
 * Guest A (-r a) holds locks; guest B (-r b) contends. They meet through flag files in the
 * shared 9p directory (-y /sync); every wait is bounded. Cases (verdicts printed by B):
 *   A holds, B's F_SETLK is refused; B's F_GETLK reports A's range and owner;
 *   B's F_SETLKW is granted after A unlocks, by the server's GRANTED callback (B's lockd log);
 *   A's holder is SIGKILLed, B gets the lock; A's guest powers off holding a lock, boots again,
 *   its statd sends SM_NOTIFY, and B gets the lock.
 * A phase 1 ends with a hard power-off (no unlock); the host boots A again for phase 2. */
#include "lockpeer.h"
#include <signal.h>
#include <sys/reboot.h>
#include <sys/wait.h>

#define PEER_START_WAIT_SECONDS 400   /* B waits while A runs the one-guest suite first */
#define STEP_WAIT_SECONDS 120
#define BLOCKED_SEEN_WAIT_SECONDS 20
#define GRANT_WAIT_SECONDS 90          /* > the client's 30 s re-poll: a missing callback still resolves */
#define REBOOT_GRANT_WAIT_SECONDS 420
#define STEP_ALARM_SECONDS 150
#define RANGE1_START 100
#define RANGE2_START 300
#define RANGE3_START 500
#define RANGE_LEN 100
#define FILE_BYTES 1000

static char g_file[PATH_BYTES_MAX];

/* A step that hangs (dead server, missing NLM) ends the run. A signal handler would not do:
 * NFS/NLM waits are only killable, so a watchdog process marks the failure for the peer,
 * prints the FAIL line and SIGKILLs us. watchdog(secs) re-arms; watchdog(0) disarms. */
static char g_fail_flag[PATH_BYTES_MAX];
static pid_t g_watchdog = -1;
static void watchdog(unsigned secs) {
    if (g_watchdog > 0) { kill(g_watchdog, SIGKILL); waitpid(g_watchdog, NULL, 0); g_watchdog = -1; }
    if (secs == 0) return;
    pid_t parent = getpid();
    fflush(stdout);
    g_watchdog = fork();
    if (g_watchdog != 0) return;
    for (unsigned i = 0; i < secs * 5; i++) {
        if (getppid() != parent) _exit(0);
        msleep(200);
    }
    int fd = open(g_fail_flag, O_CREAT | O_WRONLY, 0644);
    if (fd >= 0) close(fd);
    printf("lock2_step_timeout: FAIL (a step hung for %u s: server dead, hung, or no NLM)\n", secs);
    fflush(stdout);
    kill(-parent, SIGKILL);   /* the whole group: holders and waiters too (NLM waits are killable) */
    kill(parent, SIGKILL);
    _exit(0);
}
static void set_fail_flag_name(const char *fail_flag) { snprintf(g_fail_flag, sizeof g_fail_flag, "%s", flag(fail_flag)); }

/* ---- guest A ---- */

struct holder { pid_t pid; int cmd_fd; };

/* Forks a process that write-locks [start, start+RANGE_LEN) and waits for 'u' (unlock + exit). */
static int start_holder(struct holder *h, off_t start) {
    int up = -1;
    if (holder_fork(g_file, start, RANGE_LEN, 0, &h->pid, &up, &h->cmd_fd) < 0) return -1;
    char c = 0;
    ssize_t n = read(up, &c, 1);
    close(up);
    if (n != 1 || c != 'y') return failf("holder could not lock [%lld,+%d)", (long long)start, RANGE_LEN);
    return 0;
}

static int a_phase1(void) {
    struct holder h1, h2, h3;
    set_fail_flag_name("a_failed");
    watchdog(g_opts.case_timeout_s);
    int ok = ensure_mounted() == 0;
    char dir[PATH_BYTES_MAX];
    if (ok && path_in(dir, "lock2") == 0) {
        rm_tree(dir);
        ok = mkdir(dir, 0777) == 0 || (failf("mkdir lock2: %s", strerror(errno)), 0);
    }
    if (ok && path_in(g_file, "lock2/file") == 0) {
        int fd = open(g_file, O_CREAT | O_RDWR, 0666);
        ok = fd >= 0 && write_pattern(fd, 0, FILE_BYTES, 80) == 0 && fsync(fd) == 0;
        if (fd >= 0) close(fd);
        if (!ok && !g_why[0]) failf("create %s: %s", g_file, strerror(errno));
    }
    ok = ok && start_holder(&h1, RANGE1_START) == 0 && start_holder(&h2, RANGE2_START) == 0;
    report("lock2_a_hold_two_ranges", ok, g_why);
    if (!ok) { set_flag("a_failed"); return summary(); }
    set_flag("a_held");
    watchdog(0);

    /* B blocks on range 1; A unlocks it; the server must grant B with a callback. */
    ok = wait_flag("b_waiting1", STEP_WAIT_SECONDS) == 0;
    if (ok) ok = write(h1.cmd_fd, "u", 1) == 1 || (failf("holder 1 gone"), 0);
    waitpid(h1.pid, NULL, 0);
    report("lock2_a_unlock_range1", ok, g_why);
    set_flag("a_unlocked1");

    /* B blocks on range 2; A's holder is killed. */
    ok = wait_flag("b_waiting2", STEP_WAIT_SECONDS) == 0;
    kill(h2.pid, SIGKILL);
    waitpid(h2.pid, NULL, 0);
    report("lock2_a_kill_holder2", ok, g_why);
    set_flag("a_killed2");

    /* A fresh holder on range 3; B blocks on it; then A's guest powers off without unlocking. */
    watchdog(g_opts.case_timeout_s);
    ok = start_holder(&h3, RANGE3_START) == 0;
    watchdog(0);
    if (ok) set_flag("a_held3");
    ok = ok && wait_flag("b_waiting3", STEP_WAIT_SECONDS) == 0;
    report("lock2_a_hold_range3_then_power_off", ok, g_why);
    if (!ok) { set_flag("a_failed"); return summary(); }
    int rc = summary();
    fflush(stdout);
    set_flag("a_poweroff");
    sync();
    msleep(1000);           /* let tee copy our output to the share */
    reboot(RB_POWER_OFF);   /* holder 3 never unlocks */
    return rc;
}

static int a_phase2(void) {
    /* init started rpc.statd, which ran sm-notify from the statd state kept on the share. */
    set_flag("a_rebooted");
    int ok = wait_flag("b_done", REBOOT_GRANT_WAIT_SECONDS) == 0;
    report("lock2_a_rebooted", ok, g_why);
    return summary();
}

/* ---- guest B ---- */

static int b_setlk_refused(int fd) {
    errno = 0;
    CHECK(lock_range(fd, F_SETLK, F_WRLCK, RANGE1_START + 50, 10) < 0 && (errno == EAGAIN || errno == EACCES),
          "F_SETLK inside A's range: want EAGAIN/EACCES, got %s", errno ? strerror(errno) : "granted");
    errno = 0;
    CHECK(lock_range(fd, F_SETLK, F_RDLCK, 0, 0) < 0 && (errno == EAGAIN || errno == EACCES),
          "F_SETLK read lock over the whole file: want EAGAIN/EACCES, got %s", errno ? strerror(errno) : "granted");
    CHECK(lock_range(fd, F_SETLK, F_WRLCK, RANGE1_START + RANGE_LEN, RANGE2_START - RANGE1_START - RANGE_LEN) == 0,
          "F_SETLK on the free gap between A's ranges: %s", strerror(errno));
    CHECK_SYS(lock_range(fd, F_SETLK, F_UNLCK, RANGE1_START + RANGE_LEN, RANGE2_START - RANGE1_START - RANGE_LEN), "unlock gap");
    return 0;
}

static int b_getlk_holder(int fd) {
    struct flock h1, h2, again;
    if (expect_range(fd, RANGE1_START + 50, 10, W_DENIED, &h1) < 0) return -1;
    CHECK(h1.l_type == F_WRLCK && h1.l_start == RANGE1_START && h1.l_len == RANGE_LEN,
          "F_GETLK reported type %d range (%lld,%lld), want write lock (%d,%d)", h1.l_type, (long long)h1.l_start,
          (long long)h1.l_len, RANGE1_START, RANGE_LEN);
    if (expect_range(fd, RANGE2_START, 1, W_DENIED, &h2) < 0) return -1;
    CHECK(h2.l_start == RANGE2_START && h2.l_len == RANGE_LEN, "second range reported as (%lld,%lld)",
          (long long)h2.l_start, (long long)h2.l_len);
    CHECK(h1.l_pid != 0 && h2.l_pid != 0, "holder pid not reported (%d, %d)", h1.l_pid, h2.l_pid);
    CHECK(h1.l_pid != h2.l_pid, "two holder processes reported with the same pid %d", h1.l_pid);
    if (expect_range(fd, RANGE1_START + RANGE_LEN - 1, 1, W_DENIED, &again) < 0) return -1;
    CHECK(again.l_pid == h1.l_pid, "the same holder reported as pid %d then %d", h1.l_pid, again.l_pid);
    return expect_range(fd, RANGE1_START + RANGE_LEN, RANGE2_START - RANGE1_START - RANGE_LEN, W_FREE, NULL);
}

static int b_contend(off_t start, const char *waiting_flag, unsigned grant_secs, int need_callback) {
    struct waiter w = { -1, -1 };
    int granted_before = klog_count(KLOG_GRANTED);
    int blocked_before = klog_count(KLOG_BLOCKED);
    if (start_waiter(&w, g_file, start, RANGE_LEN) < 0) return -1;
    int blocked = wait_blocked(&w, blocked_before, BLOCKED_SEEN_WAIT_SECONDS);
    set_flag(waiting_flag);
    if (blocked < 0) { kill(w.pid, SIGKILL); waitpid(w.pid, NULL, 0); return -1; }
    if (wait_granted(&w, grant_secs) < 0) return -1;
    if (need_callback) {
        CHECK(klog_count(KLOG_GRANTED) > granted_before,
              "granted, but no GRANTED callback reached the client's lockd (it re-polled instead)");
        print_last_klog_line(KLOG_GRANTED);
    }
    return 0;
}

static int b_main(void) {
    int ok;
    set_fail_flag_name("b_failed");
    watchdog(PEER_START_WAIT_SECONDS + STEP_ALARM_SECONDS);
    ok = ensure_mounted() == 0 && path_in(g_file, "lock2/file") == 0;
    if (ok) {
        for (unsigned i = 0; i < PEER_START_WAIT_SECONDS; i++) {
            struct stat st;
            if (stat(flag("a_held"), &st) == 0) break;
            if (stat(flag("a_failed"), &st) == 0) { failf("guest A failed its setup"); ok = 0; break; }
            msleep(1000);
        }
        if (ok) ok = wait_flag("a_held", 1) == 0;
    }
    report("lock2_b_peer_ready", ok, g_why);
    if (!ok) {
        /* Name every two-guest case, so a report always lists the same cases. */
        static const char *const cases[] = { "lock2_setlk_refused", "lock2_getlk_reports_holder",
            "lock2_setlkw_granted_by_callback", "lock2_killed_holder_released", "lock2_reboot_sm_notify_released" };
        for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) report(cases[i], 0, "not run: the peer is not ready");
        return summary();
    }
    watchdog(0);
    set_nlm_debug("32767");
    klogctl(5 /* SYSLOG_ACTION_CLEAR */, NULL, 0);

    watchdog(g_opts.case_timeout_s);
    int fd = open(g_file, O_RDWR);
    report("lock2_setlk_refused", fd >= 0 && b_setlk_refused(fd) == 0, fd >= 0 ? g_why : strerror(errno));
    g_why[0] = 0;
    report("lock2_getlk_reports_holder", fd >= 0 && b_getlk_holder(fd) == 0, g_why);
    watchdog(0);

    g_why[0] = 0;
    report("lock2_setlkw_granted_by_callback", b_contend(RANGE1_START, "b_waiting1", GRANT_WAIT_SECONDS, 1) == 0, g_why);
    g_why[0] = 0;
    report("lock2_killed_holder_released", b_contend(RANGE2_START, "b_waiting2", GRANT_WAIT_SECONDS, 0) == 0, g_why);
    g_why[0] = 0;
    ok = wait_flag("a_held3", STEP_WAIT_SECONDS) == 0 && b_contend(RANGE3_START, "b_waiting3", REBOOT_GRANT_WAIT_SECONDS, 0) == 0;
    report("lock2_reboot_sm_notify_released", ok, g_why);
    set_flag("b_done");
    if (fd >= 0) close(fd);
    set_nlm_debug("0");
    return summary();
}

int main(int argc, char **argv) {
    parse_opts(argc, argv);
    setpgid(0, 0);   /* the watchdog kills this group */
    if (!strcmp(g_opts.role, "b")) return b_main();
    if (!strcmp(g_opts.phase, "2")) return a_phase2();
    return a_phase1();
}
