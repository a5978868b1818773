/* A native child for the round-7 review of the namespace backend: filesystem moves the audit
 * hooks cannot see. One line per action, "<action> OK <detail>" or "<action> ERR <errno name>".
 *   review7_probe read PATH | write PATH TEXT | mkdir PATH | rename OLD NEW | symlink TARGET PATH
 *               | deepread DIR NAME DEPTH FILE | deepwrite DIR NAME DEPTH FILE TEXT
 * deepread/deepwrite walk DEPTH directories called NAME below DIR with openat (relative: no
 * path is ever longer than NAME), then read or create FILE there. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void err(const char *action) { printf("%s ERR %s\n", action, strerrorname_np(errno)); }

static void show(const char *action, int fd) {
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) { err(action); return; }
    buf[n] = 0;
    for (ssize_t k = 0; k < n; k++) if (buf[k] == '\n') buf[k] = ' ';
    printf("%s OK %zd [%s]\n", action, n, buf);
}

static int descend(const char *dir, const char *name, int depth) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    for (int k = 0; fd >= 0 && k < depth; k++) {
        int next = openat(fd, name, O_RDONLY | O_DIRECTORY);
        close(fd);
        fd = next;
    }
    return fd;
}

static void put(const char *action, int dirfd, const char *path, const char *text) {
    int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (fd < 0) { err(action); return; }
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    if (n < 0) { err(action); return; }
    printf("%s OK %zd\n", action, n);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "read") && i + 1 < argc) {
            int fd = open(argv[++i], O_RDONLY);
            if (fd < 0) { err(a); continue; }
            show(a, fd);
        } else if (!strcmp(a, "write") && i + 2 < argc) {
            const char *p = argv[++i], *text = argv[++i];
            put(a, AT_FDCWD, p, text);
        } else if (!strcmp(a, "mkdir") && i + 1 < argc) {
            if (mkdir(argv[++i], 0755) < 0) { err(a); continue; }
            printf("mkdir OK\n");
        } else if (!strcmp(a, "rename") && i + 2 < argc) {
            const char *from = argv[++i], *to = argv[++i];
            if (rename(from, to) < 0) { err(a); continue; }
            printf("rename OK\n");
        } else if (!strcmp(a, "symlink") && i + 2 < argc) {
            const char *target = argv[++i], *path = argv[++i];
            if (symlink(target, path) < 0) { err(a); continue; }
            printf("symlink OK\n");
        } else if ((!strcmp(a, "deepread") && i + 4 < argc) || (!strcmp(a, "deepwrite") && i + 5 < argc)) {
            const char *dir = argv[++i], *name = argv[++i];
            int depth = atoi(argv[++i]);
            const char *file = argv[++i];
            int fd = descend(dir, name, depth);
            if (fd < 0) { err(a); if (a[4] == 'w') i++; continue; }
            if (!strcmp(a, "deepread")) {
                int f = openat(fd, file, O_RDONLY);
                close(fd);
                if (f < 0) { err(a); continue; }
                show(a, f);
            } else {
                put(a, fd, file, argv[++i]);
                close(fd);
            }
        } else {
            printf("%s ERR usage\n", a);
        }
    }
    return 0;
}
