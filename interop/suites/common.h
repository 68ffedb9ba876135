/* interop/suites/common.h: the shared case runner for our Connectathon-style suites.
 * Each case runs in a forked child with a time bound; it prints "NAME: PASS" or
 * "NAME: FAIL (reason)". After the first timed-out case the server is presumed dead and the
 * remaining cases fail at once. summary() prints "N passed, N failed" alone on a line. */
#ifndef INTEROP_COMMON_H
#define INTEROP_COMMON_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define WHY_BYTES_MAX 400
#define PATH_BYTES_MAX 512
#define CASE_TIMEOUT_SECONDS_DEFAULT 120

struct opts {
    const char *dir;       /* the NFS mount point, e.g. /mnt */
    const char *server;    /* SERVER:/export, for cases that mount */
    const char *sync_dir;  /* two-guest coordination directory (lock2) */
    const char *role;      /* "a" or "b" (lock2) */
    const char *phase;     /* lock2 A: "1" before the power-off, "2" after the reboot */
    unsigned case_timeout_s;
    unsigned failover_point; /* lockfailover.sh: N > 0 asks the host for kill -9 number N (flag files) */
    const char *mode;        /* lockfailover.sh: "transparent" or "classic" lock recovery */
    const char *work;        /* killloop.sh: files go under dir/work (one name per iteration); the mount
                              * cases then check the existing mount and create it. NULL: files under dir */
};
extern struct opts g_opts;

/* Set by a failing check inside a case (child process). */
extern char g_why[WHY_BYTES_MAX];
int failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(cond, ...) do { if (!(cond)) return failf(__VA_ARGS__); } while (0)
#define CHECK_SYS(expr, what) do { if ((expr) < 0) return failf("%s: %s", (what), strerror(errno)); } while (0)

typedef int (*case_fn)(void);
void parse_opts(int argc, char **argv);
void run_case(const char *name, case_fn fn);
/* Records a case verdict computed outside run_case (e.g. from a helper process). */
void report(const char *name, int ok, const char *why);
int summary(void);

/* Helpers. Each returns 0 on success or -1 with g_why set. */
int path_in(char *out, const char *rel);           /* out = dir/rel or dir/work/rel (PATH_BYTES_MAX) */
int make_work_dir(void);                           /* mkdir dir/work (with -w; an existing one is fine) */
int write_pattern(int fd, off_t off, size_t len, unsigned seed);
int check_pattern(int fd, off_t off, size_t len, unsigned seed);
int rm_tree(const char *path);
int drop_caches(void);
int run_cmd(const char *cmd, unsigned timeout_s);  /* sh -c cmd; returns exit status or -1 */
int is_nfs_mounted(const char *dir, char *opts_out, size_t opts_len);
int ensure_mounted(void);                          /* plain `mount -t nfs` if not mounted */
int wait_file(const char *path, unsigned timeout_s);
int touch_file(const char *path);
void msleep(unsigned ms);
/* Runs fn(arg) in a child process; 0 if it succeeded, else -1 with the child's reason in g_why. */
typedef int (*child_fn)(void *arg);
int in_child(child_fn fn, void *arg);
/* The same with a time bound: on timeout the child's process group is SIGKILLed (NFS and NLM
 * waits are killable) and -1 is returned with g_why saying so. */
int in_child_bounded(child_fn fn, void *arg, unsigned timeout_s);

#endif
