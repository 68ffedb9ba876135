/* interop/suites/basic.c: the basic suite (Connectathon "basic" semantics, our own code):
 * plain mount with v4→v3 fallback, tree create/remove, lookups across the mount point,
 * setattr/getattr, 1 MiB write/read, readdir of 200 files, rename and link counts,
 * symlink/readlink, statfs. Runs as root in the guest; the export is no_root_squash. */
#include "common.h"
#include <dirent.h>
#include <sys/statvfs.h>
#include <sys/time.h>

#define TREE_DEPTH 3
#define TREE_FANOUT 3
#define TREE_FILES_PER_DIR 3
#define ONE_MIB_BYTES (1024 * 1024)
#define READDIR_FILES 200
#define NAME_BYTES_MAX 64
#define SETATTR_UID 1234
#define SETATTR_GID 5678
#define SETATTR_ATIME 1000000000
#define SETATTR_MTIME 1200000000
#define SETATTR_SIZE 12345

/* Mounts dir with a plain `mount -t nfs` and checks the v4->v3 fallback. With -w (killloop.sh)
 * the job has made that mount already: the case checks it and creates the work directory. */
static int c_mount_plain(void) {
    char opts[2048] = "";
    if (g_opts.work) {
        CHECK(is_nfs_mounted(g_opts.dir, opts, sizeof opts), "-w %s: %s is not an nfs mount", g_opts.work, g_opts.dir);
        if (make_work_dir() < 0) return -1;
    } else {
        if (is_nfs_mounted(g_opts.dir, NULL, 0)) return failf("%s already mounted before the test", g_opts.dir);
        char cmd[PATH_BYTES_MAX * 2];
        snprintf(cmd, sizeof cmd, "mount -t nfs %s %s", g_opts.server, g_opts.dir);
        int rc = run_cmd(cmd, 120);
        if (rc < 0) return -1;
        CHECK(rc == 0, "`%s` exited %d", cmd, rc);
        CHECK(is_nfs_mounted(g_opts.dir, opts, sizeof opts), "%s is not an nfs mount after mount", g_opts.dir);
    }
    CHECK(strstr(opts, "vers=3") != NULL, "expected the v4->v3 fallback to give vers=3, options are %s", opts);
    char probe[PATH_BYTES_MAX];
    if (path_in(probe, "basic") < 0) return -1;
    if (rm_tree(probe) < 0) return -1;
    CHECK_SYS(mkdir(probe, 0755), "mkdir basic/");
    return 0;
}

static int make_tree(const char *dir, int depth, unsigned *files, unsigned *dirs) {
    char p[PATH_BYTES_MAX];
    for (int f = 0; f < TREE_FILES_PER_DIR; f++) {
        snprintf(p, sizeof p, "%s/file.%d", dir, f);
        int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0644);
        CHECK(fd >= 0, "create %s: %s", p, strerror(errno));
        CHECK(write(fd, p, strlen(p)) == (ssize_t)strlen(p), "write %s", p);
        close(fd);
        (*files)++;
    }
    if (depth == 0) return 0;
    for (int d = 0; d < TREE_FANOUT; d++) {
        snprintf(p, sizeof p, "%s/dir.%d", dir, d);
        CHECK(mkdir(p, 0755) == 0, "mkdir %s: %s", p, strerror(errno));
        (*dirs)++;
        if (make_tree(p, depth - 1, files, dirs) < 0) return -1;
    }
    return 0;
}

static int count_tree(const char *dir, unsigned *files, unsigned *dirs) {
    DIR *d = opendir(dir);
    CHECK(d != NULL, "opendir %s: %s", dir, strerror(errno));
    struct dirent *e;
    char p[PATH_BYTES_MAX];
    struct stat st;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (lstat(p, &st) < 0) { closedir(d); return failf("lstat %s: %s", p, strerror(errno)); }
        if (S_ISDIR(st.st_mode)) { (*dirs)++; if (count_tree(p, files, dirs) < 0) { closedir(d); return -1; } }
        else {
            char buf[PATH_BYTES_MAX] = "";
            int fd = open(p, O_RDONLY);
            if (fd < 0) { closedir(d); return failf("open %s: %s", p, strerror(errno)); }
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n != (ssize_t)strlen(p) || memcmp(buf, p, (size_t)n)) { closedir(d); return failf("content of %s wrong", p); }
            (*files)++;
        }
    }
    closedir(d);
    return 0;
}

static int c_tree_create_remove(void) {
    char top[PATH_BYTES_MAX];
    if (path_in(top, "basic/tree") < 0) return -1;
    CHECK_SYS(mkdir(top, 0755), "mkdir tree");
    unsigned files = 0, dirs = 0, f2 = 0, d2 = 0;
    if (make_tree(top, TREE_DEPTH, &files, &dirs) < 0) return -1;
    if (drop_caches() < 0) return -1;
    if (count_tree(top, &f2, &d2) < 0) return -1;
    CHECK(f2 == files && d2 == dirs, "walked %u files/%u dirs, created %u/%u", f2, d2, files, dirs);
    if (rm_tree(top) < 0) return -1;
    struct stat st;
    CHECK(lstat(top, &st) < 0 && errno == ENOENT, "tree still exists after removal");
    return 0;
}

static int c_lookup_mountpoint(void) {
    struct stat mnt, parent, root, dotdot, via;
    char p[PATH_BYTES_MAX];
    CHECK_SYS(stat(g_opts.dir, &mnt), "stat mount point");
    CHECK_SYS(stat("/", &root), "stat /");
    snprintf(p, sizeof p, "%s/..", g_opts.dir);
    CHECK_SYS(stat(p, &parent), "stat mnt/..");
    CHECK(parent.st_dev == root.st_dev && parent.st_ino == root.st_ino, "%s/.. is not / (lookup of .. did not cross the mount point)", g_opts.dir);
    CHECK(mnt.st_dev != root.st_dev, "mount point has the root fs's st_dev");
    if (path_in(p, "basic/lk") < 0) return -1;
    CHECK_SYS(mkdir(p, 0755), "mkdir basic/lk");
    if (path_in(p, "basic/lk/../lk/./..") < 0) return -1;
    struct stat basic, lk;
    CHECK_SYS(stat(p, &via), "stat basic/lk/../lk/./..");
    char b[PATH_BYTES_MAX];
    if (path_in(b, "basic") < 0) return -1;
    CHECK_SYS(stat(b, &basic), "stat basic");
    CHECK(via.st_ino == basic.st_ino && via.st_dev == basic.st_dev, "dot-dot walk resolved to the wrong directory");
    if (path_in(p, "basic/lk/..") < 0) return -1;
    CHECK_SYS(stat(p, &dotdot), "stat basic/lk/..");
    CHECK(dotdot.st_ino == basic.st_ino, "basic/lk/.. != basic");
    if (path_in(p, "basic/lk") < 0) return -1;
    CHECK_SYS(stat(p, &lk), "stat lk");
    CHECK(lk.st_dev == mnt.st_dev, "objects in the export have a different st_dev than its root");
    /* basic/lk sits one level deeper under a work directory (-w) */
    const char *up_export = g_opts.work ? "../../.." : "../..";
    const char *up_root = g_opts.work ? "../../../.." : "../../..";
    CHECK_SYS(chdir(p), "chdir lk");
    CHECK_SYS(stat(up_export, &via), "stat .. up to the export root from lk");
    CHECK(via.st_ino == mnt.st_ino && via.st_dev == mnt.st_dev, "%s from basic/lk is not the export root", up_export);
    CHECK_SYS(stat(up_root, &via), "stat .. up to / from lk");
    CHECK(via.st_ino == root.st_ino && via.st_dev == root.st_dev, "%s from basic/lk is not /", up_root);
    CHECK_SYS(chdir("/"), "chdir /");
    CHECK(stat(b, &via) == 0 && stat(p, &via) == 0, "lookup after chdir failed");
    errno = 0;
    if (path_in(p, "basic/does-not-exist") < 0) return -1;
    CHECK(stat(p, &via) < 0 && errno == ENOENT, "lookup of a missing name: want ENOENT, got %s", strerror(errno));
    if (path_in(p, "basic/lk") < 0) return -1;
    CHECK_SYS(rmdir(p), "rmdir lk");
    return 0;
}

static int c_setattr_getattr(void) {
    char p[PATH_BYTES_MAX];
    if (path_in(p, "basic/attr") < 0) return -1;
    int fd = open(p, O_CREAT | O_EXCL | O_RDWR, 0644);
    CHECK(fd >= 0, "create: %s", strerror(errno));
    close(fd);
    CHECK_SYS(chmod(p, 0751), "chmod 0751");
    CHECK_SYS(chown(p, SETATTR_UID, SETATTR_GID), "chown");
    struct timeval tv[2] = { { SETATTR_ATIME, 0 }, { SETATTR_MTIME, 0 } };
    CHECK_SYS(utimes(p, tv), "utimes");
    CHECK_SYS(truncate(p, SETATTR_SIZE), "truncate");
    for (int pass = 0; pass < 2; pass++) {
        struct stat st;
        if (pass == 1 && drop_caches() < 0) return -1;
        CHECK_SYS(stat(p, &st), "stat");
        const char *when = pass ? "after dropping caches" : "from cache";
        CHECK((st.st_mode & 07777) == 0751, "mode %o %s, want 751", st.st_mode & 07777, when);
        CHECK(st.st_uid == SETATTR_UID && st.st_gid == SETATTR_GID, "owner %u:%u %s", st.st_uid, st.st_gid, when);
        CHECK(st.st_atime == SETATTR_ATIME, "atime %lld %s", (long long)st.st_atime, when);
        CHECK(st.st_size == SETATTR_SIZE, "size %lld %s", (long long)st.st_size, when);
        CHECK(S_ISREG(st.st_mode) && st.st_nlink == 1, "type/nlink wrong %s", when);
        /* truncate after utimes changes mtime to now; ctime must not precede it */
        CHECK(st.st_mtime > SETATTR_MTIME && st.st_ctime >= st.st_mtime, "mtime/ctime not updated by truncate %s", when);
    }
    CHECK_SYS(utimes(p, tv), "utimes 2");
    CHECK_SYS(drop_caches(), "drop caches");
    struct stat st;
    CHECK_SYS(stat(p, &st), "stat 2");
    CHECK(st.st_mtime == SETATTR_MTIME && st.st_atime == SETATTR_ATIME, "times %lld/%lld after utimes", (long long)st.st_atime, (long long)st.st_mtime);
    CHECK_SYS(unlink(p), "unlink");
    return 0;
}

static int c_write_read_1mib(void) {
    char p[PATH_BYTES_MAX];
    if (path_in(p, "basic/big") < 0) return -1;
    int fd = open(p, O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK(fd >= 0, "create: %s", strerror(errno));
    if (write_pattern(fd, 0, ONE_MIB_BYTES, 7) < 0) { close(fd); return -1; }
    CHECK_SYS(fsync(fd), "fsync");
    close(fd);
    if (drop_caches() < 0) return -1;
    struct stat st;
    CHECK_SYS(stat(p, &st), "stat");
    CHECK(st.st_size == ONE_MIB_BYTES, "size %lld after writing 1 MiB", (long long)st.st_size);
    fd = open(p, O_RDONLY);
    CHECK(fd >= 0, "reopen: %s", strerror(errno));
    int r = check_pattern(fd, 0, ONE_MIB_BYTES, 7);
    char c;
    if (r == 0 && pread(fd, &c, 1, ONE_MIB_BYTES) != 0) r = failf("read past EOF returned data");
    close(fd);
    if (r < 0) return -1;
    CHECK_SYS(unlink(p), "unlink");
    return 0;
}

static int c_readdir_200(void) {
    char dir[PATH_BYTES_MAX], p[PATH_BYTES_MAX];
    if (path_in(dir, "basic/rd") < 0) return -1;
    CHECK_SYS(mkdir(dir, 0755), "mkdir rd");
    for (int i = 0; i < READDIR_FILES; i++) {
        snprintf(p, sizeof p, "%s/entry-with-a-longish-name-%03d", dir, i);
        int fd = open(p, O_CREAT | O_EXCL | O_WRONLY, 0644);
        CHECK(fd >= 0, "create %s: %s", p, strerror(errno));
        close(fd);
    }
    if (drop_caches() < 0) return -1;
    unsigned seen[READDIR_FILES] = { 0 };
    unsigned dot = 0, dotdot = 0, total = 0;
    DIR *d = opendir(dir);
    CHECK(d != NULL, "opendir: %s", strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        total++;
        int n;
        if (!strcmp(e->d_name, ".")) dot++;
        else if (!strcmp(e->d_name, "..")) dotdot++;
        else if (sscanf(e->d_name, "entry-with-a-longish-name-%d", &n) == 1 && n >= 0 && n < READDIR_FILES) seen[n]++;
        else { closedir(d); return failf("unexpected entry '%s'", e->d_name); }
    }
    closedir(d);
    CHECK(dot == 1 && dotdot == 1, "'.' seen %u times, '..' %u times", dot, dotdot);
    for (int i = 0; i < READDIR_FILES; i++) CHECK(seen[i] == 1, "entry %d seen %u times", i, seen[i]);
    CHECK(total == READDIR_FILES + 2, "%u entries, want %d", total, READDIR_FILES + 2);
    return rm_tree(dir);
}

static int c_rename_links(void) {
    char a[PATH_BYTES_MAX], b[PATH_BYTES_MAX], c[PATH_BYTES_MAX], sub[PATH_BYTES_MAX], top[PATH_BYTES_MAX];
    struct stat st;
    if (path_in(top, "basic/rn") < 0 || path_in(a, "basic/rn/a") < 0 || path_in(b, "basic/rn/b") < 0 ||
        path_in(sub, "basic/rn/sub") < 0 || path_in(c, "basic/rn/sub/c") < 0) return -1;
    CHECK_SYS(mkdir(top, 0755), "mkdir rn");
    CHECK_SYS(stat(top, &st), "stat rn");
    CHECK(st.st_nlink == 2, "new dir nlink %lu, want 2", (unsigned long)st.st_nlink);
    CHECK_SYS(mkdir(sub, 0755), "mkdir sub");
    if (drop_caches() < 0) return -1;
    CHECK_SYS(stat(top, &st), "stat rn");
    CHECK(st.st_nlink == 3, "dir with one subdir has nlink %lu, want 3", (unsigned long)st.st_nlink);
    int fd = open(a, O_CREAT | O_EXCL | O_WRONLY, 0644);
    CHECK(fd >= 0, "create a: %s", strerror(errno));
    CHECK(write(fd, "hello", 5) == 5, "write a");
    close(fd);
    CHECK_SYS(link(a, b), "link a b");
    CHECK_SYS(stat(a, &st), "stat a");
    CHECK(st.st_nlink == 2, "nlink after link %lu, want 2", (unsigned long)st.st_nlink);
    struct stat sb;
    CHECK_SYS(stat(b, &sb), "stat b");
    CHECK(sb.st_ino == st.st_ino, "link has a different inode");
    CHECK_SYS(rename(b, c), "rename b -> sub/c");
    CHECK(stat(b, &sb) < 0 && errno == ENOENT, "old name b still exists after rename");
    if (drop_caches() < 0) return -1;
    CHECK_SYS(stat(c, &sb), "stat sub/c");
    CHECK(sb.st_ino == st.st_ino && sb.st_nlink == 2, "renamed link: ino/nlink wrong (nlink %lu)", (unsigned long)sb.st_nlink);
    CHECK_SYS(unlink(a), "unlink a");
    CHECK_SYS(stat(c, &sb), "stat c");
    CHECK(sb.st_nlink == 1, "nlink after unlink %lu, want 1", (unsigned long)sb.st_nlink);
    /* rename over an existing file replaces it */
    fd = open(a, O_CREAT | O_EXCL | O_WRONLY, 0644);
    CHECK(fd >= 0, "create a again: %s", strerror(errno));
    close(fd);
    CHECK_SYS(rename(c, a), "rename sub/c over a");
    CHECK_SYS(stat(a, &sb), "stat a");
    CHECK(sb.st_ino == st.st_ino && sb.st_size == 5, "rename over existing did not replace the target");
    /* rename of a directory moves its ".." */
    char sub2[PATH_BYTES_MAX], dd[PATH_BYTES_MAX];
    if (path_in(sub2, "basic/sub-moved") < 0 || path_in(dd, "basic/sub-moved/..") < 0) return -1;
    CHECK_SYS(rename(sub, sub2), "rename dir");
    struct stat bs, ds;
    char basic[PATH_BYTES_MAX];
    if (path_in(basic, "basic") < 0) return -1;
    CHECK_SYS(stat(basic, &bs), "stat basic");
    CHECK_SYS(stat(dd, &ds), "stat sub-moved/..");
    CHECK(ds.st_ino == bs.st_ino, "'..' of a moved directory is not its new parent");
    CHECK_SYS(stat(top, &st), "stat rn");
    CHECK(st.st_nlink == 2, "nlink of rn after moving its subdir out: %lu, want 2", (unsigned long)st.st_nlink);
    CHECK_SYS(rmdir(sub2), "rmdir");
    return rm_tree(top);
}

static int c_symlink_readlink(void) {
    char l[PATH_BYTES_MAX], f[PATH_BYTES_MAX], l2[PATH_BYTES_MAX], buf[PATH_BYTES_MAX];
    const char *target = "some/relative/../target path with spaces";
    if (path_in(l, "basic/sl") < 0 || path_in(f, "basic/slf") < 0 || path_in(l2, "basic/sl2") < 0) return -1;
    CHECK_SYS(symlink(target, l), "symlink");
    if (drop_caches() < 0) return -1;
    struct stat st;
    CHECK_SYS(lstat(l, &st), "lstat");
    CHECK(S_ISLNK(st.st_mode), "not a symlink (mode %o)", st.st_mode);
    CHECK(st.st_size == (off_t)strlen(target), "symlink size %lld, want %zu", (long long)st.st_size, strlen(target));
    ssize_t n = readlink(l, buf, sizeof buf);
    CHECK(n == (ssize_t)strlen(target) && !memcmp(buf, target, (size_t)n), "readlink gave '%.*s'", (int)(n > 0 ? n : 0), buf);
    int fd = open(f, O_CREAT | O_EXCL | O_WRONLY, 0644);
    CHECK(fd >= 0, "create: %s", strerror(errno));
    CHECK(write(fd, "via-link", 8) == 8, "write");
    close(fd);
    CHECK_SYS(symlink("slf", l2), "symlink to file");
    fd = open(l2, O_RDONLY);
    CHECK(fd >= 0, "open through symlink: %s", strerror(errno));
    n = read(fd, buf, sizeof buf);
    close(fd);
    CHECK(n == 8 && !memcmp(buf, "via-link", 8), "read through symlink gave wrong data");
    CHECK(unlink(l) == 0 && unlink(l2) == 0 && unlink(f) == 0, "cleanup: %s", strerror(errno));
    return 0;
}

static int c_statfs(void) {
    struct statvfs s;
    CHECK_SYS(statvfs(g_opts.dir, &s), "statvfs");
    CHECK(s.f_bsize > 0 && s.f_frsize > 0, "block size 0");
    CHECK(s.f_blocks > 0, "f_blocks 0");
    CHECK(s.f_bfree <= s.f_blocks && s.f_bavail <= s.f_bfree, "free %llu avail %llu blocks %llu inconsistent",
          (unsigned long long)s.f_bfree, (unsigned long long)s.f_bavail, (unsigned long long)s.f_blocks);
    CHECK(s.f_ffree <= s.f_files, "ffree > files");
    CHECK(s.f_namemax >= 255, "namemax %lu", (unsigned long)s.f_namemax);
    return 0;
}

static int c_cleanup(void) {
    char p[PATH_BYTES_MAX];
    if (path_in(p, "basic") < 0) return -1;
    return rm_tree(p);
}

int main(int argc, char **argv) {
    parse_opts(argc, argv);
    run_case("basic_mount_plain", c_mount_plain);
    run_case("basic_tree_create_remove", c_tree_create_remove);
    run_case("basic_lookup_mountpoint", c_lookup_mountpoint);
    run_case("basic_setattr_getattr", c_setattr_getattr);
    run_case("basic_write_read_1mib", c_write_read_1mib);
    run_case("basic_readdir_200", c_readdir_200);
    run_case("basic_rename_links", c_rename_links);
    run_case("basic_symlink_readlink", c_symlink_readlink);
    run_case("basic_statfs", c_statfs);
    run_case("basic_cleanup", c_cleanup);
    return summary();
}
