/* interop/suites/lockfo.c: two guests contend for one lock across kill -9 of the active hanfs
 * node (interop/lockfailover.sh, check a). Guest A (-r a) write-locks [100,200) of a file under
 * the export; guest B (-r b) checks that its F_SETLK is refused, then writes failoverN_now
 * (-k N) into the sync directory (-y); the host kills the active, waits for the new one to serve
 * and writes failoverN_done (or host_failed). After that B's F_SETLK must still be refused and
 * its F_GETLK must report A's range; B starts F_SETLKW (LCK_BLOCKED in its lockd log), A
 * unlocks, and B's F_SETLKW must be granted by the server's GRANTED callback within
 * GRANT_WAIT_SECONDS (B's lockd log shows the callback, not the 30 s re-poll).
 * -m classic: the server runs a grace period and sends SM_NOTIFY after the failover; A's kernel
 * must then reclaim its lock (lockd's reclaimer in A's log) and B must still be refused.
 * Every NFS/NLM call runs in a child process under a time bound (-t), so both guests always
 * reach the failover point and their summary even against a server without NLM. Each guest
 * ends with "# grace replies seen by this client: N" (lockd's DENIED_GRACE_PERIOD retries). */
#include "lockpeer.h"
#include <poll.h>

#define PEER_START_WAIT_SECONDS 180   /* both guests boot at once; A also mounts and locks */
#define FAILOVER_WAIT_SECONDS 150     /* the host's kill, takeover wait (60 s) and serving line */
#define GRANT_WAIT_SECONDS 90         /* > the client's 30 s re-poll: a missing callback still resolves */
#define PEER_DONE_WAIT_SECONDS 120
#define RANGE_START 100
#define RANGE_LEN 100
#define FILE_BYTES 1000
#define NAME_BYTES_MAX 32

static char g_file[PATH_BYTES_MAX];
static char g_now[NAME_BYTES_MAX], g_done[NAME_BYTES_MAX];

static int classic(void) { return !strcmp(g_opts.mode, "classic"); }

static void print_grace_count(void) {
    printf("# grace replies seen by this client: %d\n", klog_count(KLOG_GRACE));
}

/* ---- guest A ---- */

static int a_create(void *arg) {
    (void)arg;
    char dir[PATH_BYTES_MAX];
    if (path_in(dir, "lockfo") < 0) return -1;
    if (rm_tree(dir) < 0) return -1;
    CHECK_SYS(mkdir(dir, 0777), "mkdir lockfo");
    int fd = open(g_file, O_CREAT | O_RDWR, 0666);
    CHECK(fd >= 0, "create %s: %s", g_file, strerror(errno));
    if (write_pattern(fd, 0, FILE_BYTES, 90) < 0) { close(fd); return -1; }
    CHECK_SYS(fsync(fd), "fsync");
    close(fd);
    return 0;
}

/* The holder process (holder_fork with ack) write-locks the range, answers 'y' or 'n' on up; on
 * 'u' from down it unlocks and answers 'k' (unlocked) or 'e'. */
struct holder { pid_t pid; int up, down; };

/* One byte from fd within secs: 1 read, 0 EOF or error, -1 timeout. */
static int read_bounded(int fd, char *c, unsigned secs) {
    struct pollfd p = { fd, POLLIN, 0 };
    int pr = poll(&p, 1, (int)(secs * 1000));
    if (pr == 0) return -1;
    return pr > 0 && read(fd, c, 1) == 1 ? 1 : 0;
}

static void holder_kill(struct holder *h) {
    if (h->pid <= 0) return;
    kill(h->pid, SIGKILL);
    waitpid(h->pid, NULL, 0);
    h->pid = -1;
}

static int holder_start(struct holder *h) {
    if (holder_fork(g_file, RANGE_START, RANGE_LEN, 1, &h->pid, &h->up, &h->down) < 0) return -1;
    char c = 0;
    int r = read_bounded(h->up, &c, g_opts.case_timeout_s);
    if (r == 1 && c == 'y') return 0;
    holder_kill(h);
    if (r < 0) return failf("F_SETLK [%d,+%d) did not return within %u s (no NLM, or the server hangs)", RANGE_START,
                            RANGE_LEN, g_opts.case_timeout_s);
    return failf("F_SETLK [%d,+%d) failed in the holder", RANGE_START, RANGE_LEN);
}

static int holder_unlock(struct holder *h) {
    char c = 0;
    if (write(h->down, "u", 1) != 1) return failf("the holder is gone");
    int r = read_bounded(h->up, &c, g_opts.case_timeout_s);
    if (r == 1 && c == 'k') { waitpid(h->pid, NULL, 0); h->pid = -1; return 0; }
    holder_kill(h);
    if (r < 0) return failf("F_UNLCK did not return within %u s", g_opts.case_timeout_s);
    return failf("F_UNLCK failed in the holder");
}

/* Waits (bounded) until the kernel log holds more than `before` occurrences of needle. */
static int wait_klog(const char *needle, int before, unsigned secs) {
    for (unsigned i = 0; i < secs * (1000 / FLAG_POLL_MS); i++) {
        if (klog_count(needle) > before) return 0;
        msleep(FLAG_POLL_MS);
    }
    return failf("no \"%s\" in the kernel log within %u s", needle, secs);
}

static int a_main(void) {
    struct holder h = { -1, -1, -1 };
    unsigned ct = g_opts.case_timeout_s;
    set_nlm_debug("32767");
    klogctl(5 /* SYSLOG_ACTION_CLEAR */, NULL, 0);
    int held = ensure_mounted() == 0 && path_in(g_file, "lockfo/file") == 0 && in_child_bounded(a_create, NULL, ct) == 0 &&
               holder_start(&h) == 0;
    report("lockfo_a_setlk_write_lock", held, g_why);
    set_flag(held ? "a_held" : "a_nolock");

    /* B asks the host for the failover once it has seen A's lock refuse it. */
    g_why[0] = 0;
    int reclaim_before = klog_count(KLOG_RECLAIM);
    int failed_over = wait_flag(g_done, PEER_START_WAIT_SECONDS + 2 * ct + FAILOVER_WAIT_SECONDS) == 0;
    if (!failed_over) printf("# guest A: no failover: %s\n", g_why);
    if (classic()) {
        g_why[0] = 0;
        int ok = held && failed_over && wait_klog(KLOG_RECLAIM, reclaim_before, ct) == 0;
        if (ok) print_last_klog_line(KLOG_RECLAIM);
        report("lockfo_a_reclaimed_after_sm_notify", ok,
               !held ? "not run: A holds no lock" : !failed_over ? "not run: no failover" : g_why);
    } else {
        printf("# guest A: lockd reclaims after the failover: %d (transparent mode needs none)\n",
               klog_count(KLOG_RECLAIM) - reclaim_before);
    }

    /* B blocks behind A's lock on the new active; then A unlocks. */
    g_why[0] = 0;
    if (wait_flag("b_waiting", 3 * ct) < 0) printf("# guest A: %s; unlocking anyway\n", g_why);
    g_why[0] = 0;
    int unlocked = held && holder_unlock(&h) == 0;
    report("lockfo_a_unlock_after_failover", unlocked, held ? g_why : "not run: A holds no lock");
    set_flag("a_unlocked");
    holder_kill(&h);
    g_why[0] = 0;
    if (wait_flag("b_done", GRANT_WAIT_SECONDS + PEER_DONE_WAIT_SECONDS) < 0) printf("# guest A: %s\n", g_why);
    print_grace_count();
    set_nlm_debug("0");
    return summary();
}

/* ---- guest B ---- */

/* F_SETLK inside A's range is refused; with want_holder, F_GETLK reports A's exact range. */
static int b_refused(void *arg) {
    int want_holder = *(int *)arg;
    int fd = open(g_file, O_RDWR);
    CHECK(fd >= 0, "open %s: %s", g_file, strerror(errno));
    errno = 0;
    int r = lock_range(fd, F_SETLK, F_WRLCK, RANGE_START + 10, 10);
    CHECK(r < 0 && (errno == EAGAIN || errno == EACCES), "F_SETLK inside A's range: want EAGAIN/EACCES, got %s",
          r == 0 ? "granted" : strerror(errno));
    if (want_holder) {
        struct flock fl = { 0 };
        if (expect_range(fd, RANGE_START + 10, 10, W_DENIED, &fl) < 0) return -1;
        CHECK(fl.l_type == F_WRLCK && fl.l_start == RANGE_START && fl.l_len == RANGE_LEN,
              "F_GETLK reported type %d range (%lld,%lld), want a write lock (%d,%d)", fl.l_type, (long long)fl.l_start,
              (long long)fl.l_len, RANGE_START, RANGE_LEN);
    }
    close(fd);
    return 0;
}

/* Waits for a_held or a_nolock (bounded); 1 if A holds its lock. */
static int b_wait_peer(void) {
    for (unsigned i = 0; i < PEER_START_WAIT_SECONDS * (1000 / FLAG_POLL_MS); i++) {
        if (have_flag("a_held")) return 1;
        if (have_flag("a_nolock")) return failf("guest A could not take its lock"), 0;
        if (have_flag("a_failed")) return failf("guest A failed"), 0;
        msleep(FLAG_POLL_MS);
    }
    return failf("guest A did not lock within %d s", PEER_START_WAIT_SECONDS), 0;
}

static int b_main(void) {
    unsigned ct = g_opts.case_timeout_s;
    char why_peer[WHY_BYTES_MAX] = "";
    set_nlm_debug("32767");
    klogctl(5 /* SYSLOG_ACTION_CLEAR */, NULL, 0);
    int ready = ensure_mounted() == 0 && path_in(g_file, "lockfo/file") == 0;
    ready = ready && b_wait_peer();
    if (!ready) snprintf(why_peer, sizeof why_peer, "not run: %s", g_why);

    int no_holder = 0;
    g_why[0] = 0;
    report("lockfo_b_setlk_refused_before_failover", ready && in_child_bounded(b_refused, &no_holder, ct) == 0,
           ready ? g_why : why_peer);

    /* The failover point: the host kills the active and writes g_done once the new one serves. */
    set_flag(g_now);
    g_why[0] = 0;
    int failed_over = wait_flag(g_done, FAILOVER_WAIT_SECONDS) == 0;
    char why_fo[WHY_BYTES_MAX];
    snprintf(why_fo, sizeof why_fo, "not run: no failover: %s", g_why);
    const char *skip = !ready ? why_peer : !failed_over ? why_fo : NULL;

    /* Classic mode: during the grace period the client retries every 5 s (bounded by ct). */
    int with_holder = 1;
    g_why[0] = 0;
    report("lockfo_b_setlk_refused_after_failover", !skip && in_child_bounded(b_refused, &with_holder, ct) == 0,
           skip ? skip : g_why);

    struct waiter w = { -1, -1 };
    int granted_before = klog_count(KLOG_GRANTED);
    int blocked_before = klog_count(KLOG_BLOCKED);
    g_why[0] = 0;
    int blocked = !skip && start_waiter(&w, g_file, RANGE_START, RANGE_LEN) == 0 && wait_blocked(&w, blocked_before, ct) == 0;
    set_flag("b_waiting");
    report("lockfo_b_setlkw_blocked_after_failover", blocked, skip ? skip : g_why);

    g_why[0] = 0;
    int granted = 0;
    if (blocked) {
        granted = wait_flag("a_unlocked", 2 * ct) == 0 && wait_granted(&w, GRANT_WAIT_SECONDS) == 0;
        if (granted && klog_count(KLOG_GRANTED) <= granted_before) {
            failf("granted, but no GRANTED callback reached the client's lockd (it re-polled instead)");
            granted = 0;
        }
        if (granted) print_last_klog_line(KLOG_GRANTED);
    }
    waiter_kill(&w);
    report("lockfo_b_setlkw_granted_by_callback", granted, blocked ? g_why : "not run: F_SETLKW was not blocked");
    set_flag("b_done");
    print_grace_count();
    set_nlm_debug("0");
    return summary();
}

int main(int argc, char **argv) {
    parse_opts(argc, argv);
    setpgid(0, 0);
    unsigned point = g_opts.failover_point ? g_opts.failover_point : 1;
    snprintf(g_now, sizeof g_now, "failover%u_now", point);
    snprintf(g_done, sizeof g_done, "failover%u_done", point);
    if (!strcmp(g_opts.role, "b")) return b_main();
    return a_main();
}
