/* interop/suites/lockutil.h: fcntl lock helpers shared by the lock suites (header-only, static).
 * test_range() classifies an F_GETLK answer; lock_range() wraps F_SETLK/F_SETLKW. */
#ifndef INTEROP_LOCKUTIL_H
#define INTEROP_LOCKUTIL_H
#include "common.h"

#define MAXEOF ((off_t)0x7fffffffffffffffLL)
enum want { W_FREE = 0, W_DENIED = 1, W_OVERFLOW = 2 };

/* Linux rejects a range whose last byte would pass OFFSET_MAX. */
static inline int range_overflows(off_t start, off_t len) {
    return len > 0 && len - 1 > MAXEOF - start;
}

/* F_GETLK for a write lock on [start, start+len) (len 0 = to EOF); checks the verdict. */
static inline int expect_range(int fd, off_t start, off_t len, enum want want, struct flock *holder) {
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
    if (range_overflows(start, len)) want = W_OVERFLOW;
    int r = fcntl(fd, F_GETLK, &fl);
    if (want == W_OVERFLOW) {
        if (r < 0 && (errno == EINVAL || errno == EOVERFLOW)) return 0;
        return failf("F_GETLK(%lld,%lld): want EINVAL/EOVERFLOW, got %s", (long long)start, (long long)len,
                     r < 0 ? strerror(errno) : "success");
    }
    if (r < 0) return failf("F_GETLK(%lld,%lld): %s", (long long)start, (long long)len, strerror(errno));
    if (want == W_FREE && fl.l_type != F_UNLCK)
        return failf("F_GETLK(%lld,%lld): want unlocked, reported a lock at (%lld,%lld) pid %d", (long long)start,
                     (long long)len, (long long)fl.l_start, (long long)fl.l_len, fl.l_pid);
    if (want == W_DENIED && fl.l_type == F_UNLCK)
        return failf("F_GETLK(%lld,%lld): want a conflict, reported unlocked", (long long)start, (long long)len);
    if (holder) *holder = fl;
    return 0;
}

static inline int lock_range(int fd, int cmd, short type, off_t start, off_t len) {
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
    return fcntl(fd, cmd, &fl);
}
#endif
