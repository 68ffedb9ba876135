/* interop/suites/special.c: the special suite (Connectathon "special" semantics, our own code):
 * I/O on an open file after unlink / rename / chmod 0, exclusive create, negative seek, sparse
 * files, telldir/seekdir over 500 entries, sparse I/O around 2^31 and 2^32, and the
 * mkdir/rename/link/symlink/unlink/rmdir idempotency loop. Runs as root; uses uid 1000 for chmod 0. */
#include "common.h"
#include <dirent.h>
#include <grp.h>
#include <sys/wait.h>

#define CHUNK_BYTES 4096
#define OTHER_UID 1000
#define OTHER_GID 1000
#define EXCL_RACERS 8
#define SPARSE_FAR_OFFSET (10 * 1024 * 1024)
#define SEEKDIR_ENTRIES 500
#define SEEKDIR_STEP 7
#define BIG_SPAN_BYTES (64 * 1024)
#define IDEMPOTENCY_ROUNDS 100
#define SILLY_GONE_POLLS_MAX 100

static int dir_of(char *out, const char *rel) {
    if (path_in(out, rel) < 0) return -1;
    return 0;
}

static int uncache(int fd) {
    if (fdatasync(fd) < 0) return failf("fdatasync: %s", strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return 0;
}

static int c_mount(void) {
    if (ensure_mounted() < 0) return -1;
    if (make_work_dir() < 0) return -1;
    char p[PATH_BYTES_MAX];
    if (dir_of(p, "special") < 0) return -1;
    if (rm_tree(p) < 0) return -1;
    CHECK_SYS(mkdir(p, 0777), "mkdir special");
    CHECK_SYS(chmod(p, 0777), "chmod special");
    return 0;
}

static int count_silly(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) if (!strncmp(e->d_name, ".nfs", 4)) n++;
    closedir(d);
    return n;
}

static int c_unlinked_open_io(void) {
    char dir[PATH_BYTES_MAX], p[PATH_BYTES_MAX];
    if (dir_of(dir, "special/unl") < 0 || dir_of(p, "special/unl/file") < 0) return -1;
    CHECK_SYS(mkdir(dir, 0755), "mkdir");
    int fd = open(p, O_CREAT | O_EXCL | O_RDWR, 0644);
    CHECK(fd >= 0, "create: %s", strerror(errno));
    if (write_pattern(fd, 0, CHUNK_BYTES, 11) < 0) return -1;
    CHECK_SYS(unlink(p), "unlink while open");
    struct stat st;
    CHECK(stat(p, &st) < 0 && errno == ENOENT, "name still visible after unlink");
    if (write_pattern(fd, CHUNK_BYTES, CHUNK_BYTES, 11) < 0) return -1;
    if (uncache(fd) < 0) return -1;
    if (check_pattern(fd, 0, 2 * CHUNK_BYTES, 11) < 0) return -1;
    CHECK_SYS(fstat(fd, &st), "fstat after unlink");
    CHECK(st.st_size == 2 * CHUNK_BYTES, "size %lld after unlink+write", (long long)st.st_size);
    CHECK(count_silly(dir) >= 0, "readdir failed");
    close(fd);
    int n = 1;
    for (int i = 0; i < SILLY_GONE_POLLS_MAX && (n = count_silly(dir)) > 0; i++) msleep(100);
    CHECK(n == 0, "%d .nfs* silly-rename file(s) left after the last close", n);
    CHECK_SYS(rmdir(dir), "rmdir (directory not empty?)");
    return 0;
}

static int c_renamed_open_io(void) {
    char a[PATH_BYTES_MAX], b[PATH_BYTES_MAX];
    if (dir_of(a, "special/ren-a") < 0 || dir_of(b, "special/ren-b") < 0) return -1;
    int fd = open(a, O_CREAT | O_EXCL | O_RDWR, 0644);
    CHECK(fd >= 0, "create: %s", strerror(errno));
    if (write_pattern(fd, 0, CHUNK_BYTES, 12) < 0) return -1;
    CHECK_SYS(rename(a, b), "rename while open");
    if (write_pattern(fd, CHUNK_BYTES, CHUNK_BYTES, 12) < 0) return -1;
    if (uncache(fd) < 0) return -1;
    if (check_pattern(fd, 0, 2 * CHUNK_BYTES, 12) < 0) return -1;
    close(fd);
    struct stat st;
    CHECK(stat(a, &st) < 0 && errno == ENOENT, "old name still exists");
    fd = open(b, O_RDONLY);
    CHECK(fd >= 0, "open new name: %s", strerror(errno));
    int r = check_pattern(fd, 0, 2 * CHUNK_BYTES, 12);
    close(fd);
    if (r < 0) return -1;
    CHECK_SYS(unlink(b), "unlink");
    return 0;
}

static int chmod0_child(const char *p) {
    int fd = open(p, O_CREAT | O_EXCL | O_RDWR, 0644);
    CHECK(fd >= 0, "create as uid %d: %s", OTHER_UID, strerror(errno));
    struct stat st;
    CHECK_SYS(fstat(fd, &st), "fstat");
    CHECK(st.st_uid == OTHER_UID, "file created by uid %d is owned by %u", OTHER_UID, st.st_uid);
    if (write_pattern(fd, 0, CHUNK_BYTES, 13) < 0) return -1;
    CHECK_SYS(fchmod(fd, 0), "fchmod 0");
    if (write_pattern(fd, CHUNK_BYTES, CHUNK_BYTES, 13) < 0) return -1;
    if (uncache(fd) < 0) return -1;
    if (check_pattern(fd, 0, 2 * CHUNK_BYTES, 13) < 0) return -1;
    close(fd);
    int fd2 = open(p, O_RDONLY);
    CHECK(fd2 < 0 && errno == EACCES, "open of a mode-0 file by its owner: want EACCES, got %s",
          fd2 < 0 ? strerror(errno) : "success");
    return 0;
}

/* In the child: become the other user, then check what a mode-0 file allows. */
static int chmod0_as_other(void *path) {
    if (setgroups(0, NULL) < 0 || setgid(OTHER_GID) < 0 || setuid(OTHER_UID) < 0)
        return failf("could not switch to uid %d: %s", OTHER_UID, strerror(errno));
    return chmod0_child(path);
}

static int c_chmod0_open_io(void) {
    char p[PATH_BYTES_MAX];
    if (dir_of(p, "special/mode0") < 0) return -1;
    if (in_child(chmod0_as_other, p) < 0) return -1;
    CHECK_SYS(unlink(p), "unlink");
    return 0;
}

static int c_exclusive_create(void) {
    char p[PATH_BYTES_MAX], q[PATH_BYTES_MAX];
    if (dir_of(p, "special/excl") < 0 || dir_of(q, "special/excl-race") < 0) return -1;
    int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0600);
    CHECK(fd >= 0, "first O_EXCL create: %s", strerror(errno));
    close(fd);
    fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0600);
    CHECK(fd < 0 && errno == EEXIST, "second O_EXCL create: want EEXIST, got %s", fd < 0 ? strerror(errno) : "success");
    struct stat st;
    CHECK_SYS(stat(p, &st), "stat");
    CHECK((st.st_mode & 0777) == 0600, "O_EXCL file has mode %o, want 600", st.st_mode & 0777);
    pid_t pids[EXCL_RACERS];
    for (int i = 0; i < EXCL_RACERS; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0, "fork");
        if (pids[i] == 0) {
            int f = open(q, O_CREAT | O_EXCL | O_WRONLY, 0644);
            if (f >= 0) _exit(0);
            _exit(errno == EEXIST ? 1 : 2);
        }
    }
    int won = 0, lost = 0, other = 0;
    for (int i = 0; i < EXCL_RACERS; i++) {
        int status;
        if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status)) { other++; continue; }
        if (WEXITSTATUS(status) == 0) won++; else if (WEXITSTATUS(status) == 1) lost++; else other++;
    }
    CHECK(won == 1 && lost == EXCL_RACERS - 1, "%d racers: %d created, %d got EEXIST, %d other errors", EXCL_RACERS, won, lost, other);
    CHECK(unlink(p) == 0 && unlink(q) == 0, "unlink: %s", strerror(errno));
    return 0;
}

static int c_negative_seek(void) {
    char p[PATH_BYTES_MAX];
    if (dir_of(p, "special/nseek") < 0) return -1;
    int fd = open(p, O_CREAT | O_RDWR, 0644);
    CHECK(fd >= 0, "create: %s", strerror(errno));
    errno = 0;
    CHECK(lseek(fd, -1, SEEK_SET) < 0 && errno == EINVAL, "lseek(-1, SEEK_SET): want EINVAL, got %s", strerror(errno));
    errno = 0;
    CHECK(lseek(fd, -10, SEEK_CUR) < 0 && errno == EINVAL, "lseek(-10, SEEK_CUR) at 0: want EINVAL, got %s", strerror(errno));
    char c = 'x';
    errno = 0;
    CHECK(pwrite(fd, &c, 1, -5) < 0 && errno == EINVAL, "pwrite at -5: want EINVAL, got %s", strerror(errno));
    CHECK(lseek(fd, 0, SEEK_CUR) == 0, "position moved after failed seeks");
    close(fd);
    CHECK_SYS(unlink(p), "unlink");
    return 0;
}

static int all_zero(int fd, off_t off, size_t len) {
    static char buf[CHUNK_BYTES];
    while (len > 0) {
        size_t n = len < sizeof buf ? len : sizeof buf;
        ssize_t r = pread(fd, buf, n, off);
        if (r != (ssize_t)n) return failf("hole read at %lld returned %zd", (long long)off, r);
        for (size_t i = 0; i < n; i++) if (buf[i]) return failf("non-zero byte in a hole at %lld", (long long)(off + (off_t)i));
        off += (off_t)n;
        len -= n;
    }
    return 0;
}

static int c_sparse_file(void) {
    char p[PATH_BYTES_MAX];
    if (dir_of(p, "special/sparse") < 0) return -1;
    int fd = open(p, O_CREAT | O_EXCL | O_RDWR, 0644);
    CHECK(fd >= 0, "create: %s", strerror(errno));
    if (write_pattern(fd, 0, 1, 14) < 0 || write_pattern(fd, SPARSE_FAR_OFFSET, CHUNK_BYTES, 14) < 0) return -1;
    if (uncache(fd) < 0) return -1;
    if (drop_caches() < 0) return -1;
    struct stat st;
    CHECK_SYS(fstat(fd, &st), "fstat");
    CHECK(st.st_size == SPARSE_FAR_OFFSET + CHUNK_BYTES, "size %lld", (long long)st.st_size);
    CHECK((long long)st.st_blocks * 512 < SPARSE_FAR_OFFSET / 2, "a file with a %d-byte hole uses %lld bytes",
          SPARSE_FAR_OFFSET, (long long)st.st_blocks * 512);
    if (check_pattern(fd, 0, 1, 14) < 0) return -1;
    if (all_zero(fd, 1, CHUNK_BYTES) < 0 || all_zero(fd, SPARSE_FAR_OFFSET / 2, CHUNK_BYTES) < 0 ||
        all_zero(fd, SPARSE_FAR_OFFSET - CHUNK_BYTES, CHUNK_BYTES) < 0) return -1;
    if (check_pattern(fd, SPARSE_FAR_OFFSET, CHUNK_BYTES, 14) < 0) return -1;
    close(fd);
    CHECK_SYS(unlink(p), "unlink");
    return 0;
}

struct seen { char name[64]; long pos; };

static int c_telldir_seekdir_500(void) {
    char dir[PATH_BYTES_MAX], p[PATH_BYTES_MAX];
    if (dir_of(dir, "special/seekdir") < 0) return -1;
    CHECK_SYS(mkdir(dir, 0755), "mkdir");
    for (int i = 0; i < SEEKDIR_ENTRIES; i++) {
        snprintf(p, sizeof p, "%s/f%04d", dir, i);
        int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0644);
        CHECK(fd >= 0, "create %s: %s", p, strerror(errno));
        close(fd);
    }
    if (drop_caches() < 0) return -1;
    static struct seen s[SEEKDIR_ENTRIES + 2];
    static unsigned hits[SEEKDIR_ENTRIES];
    memset(hits, 0, sizeof hits);
    int n = 0;
    DIR *d = opendir(dir);
    CHECK(d != NULL, "opendir: %s", strerror(errno));
    for (;;) {
        long pos = telldir(d);
        struct dirent *e = readdir(d);
        if (!e) break;
        if (n >= SEEKDIR_ENTRIES + 2) { closedir(d); return failf("more than %d entries", SEEKDIR_ENTRIES + 2); }
        snprintf(s[n].name, sizeof s[n].name, "%s", e->d_name);
        s[n].pos = pos;
        int k;
        if (sscanf(e->d_name, "f%d", &k) == 1 && k >= 0 && k < SEEKDIR_ENTRIES) hits[k]++;
        n++;
    }
    if (n != SEEKDIR_ENTRIES + 2) { closedir(d); return failf("%d entries, want %d", n, SEEKDIR_ENTRIES + 2); }
    for (int i = 0; i < SEEKDIR_ENTRIES; i++) if (hits[i] != 1) { closedir(d); return failf("f%04d listed %u times", i, hits[i]); }
    /* Same stream: seek back to saved positions, in a scattered order. */
    for (int i = n - 1; i >= 0; i -= SEEKDIR_STEP) {
        seekdir(d, s[i].pos);
        struct dirent *e = readdir(d);
        if (!e || strcmp(e->d_name, s[i].name)) {
            closedir(d);
            return failf("same stream: seekdir(%ld) gave '%s', want '%s'", s[i].pos, e ? e->d_name : "(end)", s[i].name);
        }
    }
    closedir(d);
    /* A new stream: cookies from the first one still position correctly. */
    d = opendir(dir);
    CHECK(d != NULL, "reopen: %s", strerror(errno));
    for (int i = 1; i < n; i += SEEKDIR_STEP) {
        seekdir(d, s[i].pos);
        struct dirent *e = readdir(d);
        if (!e || strcmp(e->d_name, s[i].name)) {
            closedir(d);
            return failf("new stream: seekdir(%ld) gave '%s', want '%s'", s[i].pos, e ? e->d_name : "(end)", s[i].name);
        }
    }
    /* Resume to the end from the middle: the rest is listed once, in order. */
    seekdir(d, s[n / 2].pos);
    for (int i = n / 2; i < n; i++) {
        struct dirent *e = readdir(d);
        if (!e || strcmp(e->d_name, s[i].name)) { closedir(d); return failf("resume from the middle diverged at %d", i); }
    }
    CHECK(readdir(d) == NULL, "entries after the end");
    closedir(d);
    return rm_tree(dir);
}

static int c_bigfile_2g_4g(void) {
    char p[PATH_BYTES_MAX];
    if (dir_of(p, "special/big") < 0) return -1;
    const off_t two_g = (off_t)1 << 31, four_g = (off_t)1 << 32;
    const off_t at[] = { two_g - BIG_SPAN_BYTES / 2, four_g - BIG_SPAN_BYTES / 2, four_g + 1024 * 1024 };
    int fd = open(p, O_CREAT | O_EXCL | O_RDWR, 0644);
    CHECK(fd >= 0, "create: %s", strerror(errno));
    for (unsigned i = 0; i < sizeof at / sizeof at[0]; i++) if (write_pattern(fd, at[i], BIG_SPAN_BYTES, 15 + i) < 0) return -1;
    if (uncache(fd) < 0) return -1;
    if (drop_caches() < 0) return -1;
    struct stat st;
    CHECK_SYS(fstat(fd, &st), "fstat");
    off_t want = four_g + 1024 * 1024 + BIG_SPAN_BYTES;
    CHECK(st.st_size == want, "size %lld, want %lld", (long long)st.st_size, (long long)want);
    for (unsigned i = 0; i < sizeof at / sizeof at[0]; i++) if (check_pattern(fd, at[i], BIG_SPAN_BYTES, 15 + i) < 0) return -1;
    if (all_zero(fd, two_g + BIG_SPAN_BYTES, CHUNK_BYTES) < 0) return -1;
    CHECK_SYS(ftruncate(fd, two_g + 1), "ftruncate to 2^31+1");
    if (uncache(fd) < 0) return -1;
    CHECK_SYS(fstat(fd, &st), "fstat 2");
    CHECK(st.st_size == two_g + 1, "size after truncate %lld", (long long)st.st_size);
    if (check_pattern(fd, two_g - BIG_SPAN_BYTES / 2, BIG_SPAN_BYTES / 2 + 1, 15) < 0) return -1;
    char c;
    CHECK(pread(fd, &c, 1, two_g + 1) == 0, "read at EOF after truncate returned data");
    close(fd);
    CHECK_SYS(unlink(p), "unlink");
    return 0;
}

static int c_idempotency_loop(void) {
    char d1[PATH_BYTES_MAX], d2[PATH_BYTES_MAX], f[PATH_BYTES_MAX], g[PATH_BYTES_MAX], s[PATH_BYTES_MAX], top[PATH_BYTES_MAX];
    if (dir_of(top, "special/idem") < 0) return -1;
    CHECK_SYS(mkdir(top, 0755), "mkdir idem");
    snprintf(d1, sizeof d1, "%s/d1", top);
    snprintf(d2, sizeof d2, "%s/d2", top);
    snprintf(f, sizeof f, "%s/d2/f", top);
    snprintf(g, sizeof g, "%s/d2/g", top);
    snprintf(s, sizeof s, "%s/d2/s", top);
    for (int i = 0; i < IDEMPOTENCY_ROUNDS; i++) {
        CHECK(mkdir(d1, 0755) == 0, "round %d: mkdir: %s", i, strerror(errno));
        CHECK(rename(d1, d2) == 0, "round %d: rename dir: %s", i, strerror(errno));
        int fd = open(f, O_CREAT | O_EXCL | O_WRONLY, 0644);
        CHECK(fd >= 0, "round %d: create: %s", i, strerror(errno));
        close(fd);
        CHECK(link(f, g) == 0, "round %d: link: %s", i, strerror(errno));
        CHECK(symlink("f", s) == 0, "round %d: symlink: %s", i, strerror(errno));
        CHECK(unlink(f) == 0 && unlink(g) == 0 && unlink(s) == 0, "round %d: unlink: %s", i, strerror(errno));
        CHECK(rmdir(d2) == 0, "round %d: rmdir: %s", i, strerror(errno));
    }
    CHECK_SYS(rmdir(top), "rmdir idem (not empty?)");
    return 0;
}

static int c_cleanup(void) {
    char p[PATH_BYTES_MAX];
    if (dir_of(p, "special") < 0) return -1;
    return rm_tree(p);
}

int main(int argc, char **argv) {
    parse_opts(argc, argv);
    run_case("special_mount", c_mount);
    run_case("special_unlinked_open_io", c_unlinked_open_io);
    run_case("special_renamed_open_io", c_renamed_open_io);
    run_case("special_chmod0_open_io", c_chmod0_open_io);
    run_case("special_exclusive_create", c_exclusive_create);
    run_case("special_negative_seek", c_negative_seek);
    run_case("special_sparse_file", c_sparse_file);
    run_case("special_telldir_seekdir_500", c_telldir_seekdir_500);
    run_case("special_bigfile_2g_4g", c_bigfile_2g_4g);
    run_case("special_idempotency_loop", c_idempotency_loop);
    run_case("special_cleanup", c_cleanup);
    return summary();
}
