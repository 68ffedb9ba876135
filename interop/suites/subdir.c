/* interop/suites/subdir.c: mounting a directory below the export (issue 12 item 1), as knfsd
 * allows: the kernel client mounts SERVER:/export/sub/dir, reads and writes there, and
 * `showmount -a` lists the path it asked for; a path that climbs out of the export with `..` or
 * through a symlink (absolute or relative) is refused; after umount the rmtab row is gone.
 * The export itself is mounted on -d (as the other suites do) to build the tree and to check
 * that both mounts see the same files. */
#include "common.h"

#include <sys/mount.h>

#define SUB_MOUNT_DIR "/mnt2"
#define MOUNT_SECONDS_MAX 60
#define SHOWMOUNT_OUT "/tmp/showmount.txt"
#define SHOWMOUNT_BYTES_MAX 8192

static char g_host[PATH_BYTES_MAX]; /* SERVER part of -s SERVER:/export */
static char g_export[PATH_BYTES_MAX]; /* /export part */

static int split_server(void) {
    const char *colon = strchr(g_opts.server, ':');
    if (!colon || colon == g_opts.server) return failf("-s %s is not SERVER:/export", g_opts.server);
    snprintf(g_host, sizeof g_host, "%.*s", (int)(colon - g_opts.server), g_opts.server);
    snprintf(g_export, sizeof g_export, "%s", colon + 1);
    return 0;
}

/* mount_sub REL: `mount -t nfs HOST:/export/REL /mnt2`; returns mount's exit status or -1. */
static int mount_sub(const char *rel) {
    char cmd[PATH_BYTES_MAX * 3];
    snprintf(cmd, sizeof cmd, "mount -t nfs -o vers=3,proto=tcp,nolock %s:%s/%s %s", g_host, g_export, rel,
             SUB_MOUNT_DIR);
    return run_cmd(cmd, MOUNT_SECONDS_MAX);
}

/* showmount_lists PATH: 1 if `showmount -a HOST` has a line ending in ":PATH", 0 if not, -1 on error. */
static int showmount_lists(const char *path) {
    char cmd[PATH_BYTES_MAX * 2];
    snprintf(cmd, sizeof cmd, "showmount -a %s > %s 2>&1", g_host, SHOWMOUNT_OUT);
    int rc = run_cmd(cmd, MOUNT_SECONDS_MAX);
    if (rc < 0) return -1;
    if (rc != 0) return failf("`%s` exited %d", cmd, rc);
    FILE *f = fopen(SHOWMOUNT_OUT, "r");
    if (!f) return failf("open %s: %s", SHOWMOUNT_OUT, strerror(errno));
    char line[PATH_BYTES_MAX * 2], want[PATH_BYTES_MAX + 2];
    snprintf(want, sizeof want, ":%s", path);
    int found = 0;
    size_t read = 0;
    while (!found && read < SHOWMOUNT_BYTES_MAX && fgets(line, sizeof line, f)) {
        read += strlen(line);
        line[strcspn(line, "\n")] = 0;
        size_t n = strlen(line), w = strlen(want);
        found = n >= w && !strcmp(line + n - w, want);
    }
    fclose(f);
    return found;
}

static int c_mount(void) { return ensure_mounted(); }

/* The tree: sub/dir (the mount target), sub/out -> / (an absolute symlink) and sub/up -> ../..
 * (a relative one that climbs out of the export). */
static int c_tree(void) {
    char p[PATH_BYTES_MAX];
    const char *dirs[] = {"sub", "sub/dir"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        CHECK(path_in(p, dirs[i]) == 0, "%s", g_why);
        CHECK(mkdir(p, 0777) == 0 || errno == EEXIST, "mkdir %s: %s", p, strerror(errno));
        CHECK_SYS(chmod(p, 0777), p);
    }
    const char *links[][2] = {{"sub/out", "/"}, {"sub/up", "../.."}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        CHECK(path_in(p, links[i][0]) == 0, "%s", g_why);
        unlink(p);
        CHECK(symlink(links[i][1], p) == 0, "symlink %s -> %s: %s", p, links[i][1], strerror(errno));
    }
    CHECK(path_in(p, "sub/dir/from-export") == 0, "%s", g_why);
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK_SYS(fd, p);
    int rc = write_pattern(fd, 0, 4096, 11);
    close(fd);
    return rc;
}

static int c_mount_subdir(void) {
    CHECK(mkdir(SUB_MOUNT_DIR, 0755) == 0 || errno == EEXIST, "mkdir %s: %s", SUB_MOUNT_DIR, strerror(errno));
    int rc = mount_sub("sub/dir");
    CHECK(rc >= 0, "%s", g_why);
    CHECK(rc == 0, "mount of %s:%s/sub/dir exited %d", g_host, g_export, rc);
    CHECK(is_nfs_mounted(SUB_MOUNT_DIR, NULL, 0), "%s is not an nfs mount after mount succeeded", SUB_MOUNT_DIR);
    return 0;
}

/* Read what was written through the export, write through the subdirectory mount, and read it
 * back through the export mount. */
static int c_read_write(void) {
    int fd = open(SUB_MOUNT_DIR "/from-export", O_RDONLY);
    CHECK_SYS(fd, SUB_MOUNT_DIR "/from-export");
    int rc = check_pattern(fd, 0, 4096, 11);
    close(fd);
    CHECK(rc == 0, "%s", g_why);
    fd = open(SUB_MOUNT_DIR "/from-subdir", O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK_SYS(fd, SUB_MOUNT_DIR "/from-subdir");
    rc = write_pattern(fd, 0, 65536, 12);
    if (rc == 0 && fsync(fd) < 0) rc = failf("fsync: %s", strerror(errno));
    close(fd);
    CHECK(rc == 0, "%s", g_why);
    CHECK(drop_caches() == 0, "%s", g_why);
    char p[PATH_BYTES_MAX];
    CHECK(path_in(p, "sub/dir/from-subdir") == 0, "%s", g_why);
    fd = open(p, O_RDONLY);
    CHECK_SYS(fd, p);
    rc = check_pattern(fd, 0, 65536, 12);
    close(fd);
    return rc;
}

static int c_showmount_lists_subdir(void) {
    char path[PATH_BYTES_MAX + 16];
    snprintf(path, sizeof path, "%s/sub/dir", g_export);
    int found = showmount_lists(path);
    CHECK(found >= 0, "%s", g_why);
    CHECK(found == 1, "`showmount -a %s` does not list %s (see %s)", g_host, path, SHOWMOUNT_OUT);
    return 0;
}

/* umount.nfs, not umount(2): the helper sends MOUNT's UMNT, which removes the rmtab row. */
static int c_umount_subdir(void) {
    int rc = run_cmd("umount.nfs " SUB_MOUNT_DIR, MOUNT_SECONDS_MAX);
    CHECK(rc >= 0, "%s", g_why);
    CHECK(rc == 0, "umount.nfs %s exited %d", SUB_MOUNT_DIR, rc);
    char path[PATH_BYTES_MAX + 16];
    snprintf(path, sizeof path, "%s/sub/dir", g_export);
    int found = showmount_lists(path);
    CHECK(found >= 0, "%s", g_why);
    CHECK(found == 0, "`showmount -a %s` still lists %s after umount (UMNT)", g_host, path);
    return 0;
}

/* Each escape must be refused by the server: mount fails and nothing is mounted. */
static int refused(const char *rel) {
    int rc = mount_sub(rel);
    CHECK(rc >= 0, "%s", g_why);
    if (rc == 0 || is_nfs_mounted(SUB_MOUNT_DIR, NULL, 0)) {
        umount(SUB_MOUNT_DIR);
        return failf("mount of %s:%s/%s succeeded; it must be refused", g_host, g_export, rel);
    }
    return 0;
}
static int c_refuse_dotdot(void) { return refused("sub/../.."); }
static int c_refuse_dotdot_etc(void) { return refused("../etc"); }
static int c_refuse_absolute_symlink(void) { return refused("sub/out"); }
static int c_refuse_relative_symlink(void) { return refused("sub/up"); }
static int c_refuse_missing(void) { return refused("sub/nonexistent"); }

static int c_cleanup(void) {
    char p[PATH_BYTES_MAX];
    CHECK(path_in(p, "sub") == 0, "%s", g_why);
    return rm_tree(p);
}

int main(int argc, char **argv) {
    parse_opts(argc, argv);
    /* Cases run in forked children: what they all need is set here, in the parent. */
    if (split_server() < 0) {
        fprintf(stderr, "subdir: %s\n", g_why);
        return 2;
    }
    run_case("subdir_mount_export", c_mount);
    run_case("subdir_tree", c_tree);
    run_case("subdir_mount_sub_dir", c_mount_subdir);
    run_case("subdir_read_write", c_read_write);
    run_case("subdir_showmount_lists_path", c_showmount_lists_subdir);
    run_case("subdir_umount_forgets_path", c_umount_subdir);
    run_case("subdir_refuse_dotdot_out", c_refuse_dotdot);
    run_case("subdir_refuse_dotdot_etc", c_refuse_dotdot_etc);
    run_case("subdir_refuse_absolute_symlink", c_refuse_absolute_symlink);
    run_case("subdir_refuse_relative_symlink", c_refuse_relative_symlink);
    run_case("subdir_refuse_missing", c_refuse_missing);
    run_case("subdir_cleanup", c_cleanup);
    return summary();
}
