/* A native child for the staged-writes tests: each action changes the workspace the way an
 * agent's native tool would, and prints "<action> OK" or "<action> ERR <errno name>", so the
 * test can judge from the host side what landed where (nothing in the real workspace, until
 * capgate apply).
 *   staged_probe write PATH TEXT | append PATH TEXT | read PATH | unlink PATH | rename OLD NEW
 *                | symlink TARGET PATH | link OLD NEW | chmod PATH OCTAL | mkdir PATH
 *                | rmdir PATH | mkfifo PATH | sleep SECONDS   (several actions in a row)     */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void done(const char *action, int rc) {
    if (rc < 0) printf("%s ERR %s\n", action, strerrorname_np(errno));
    else printf("%s OK\n", action);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int two = i + 2 < argc, one = i + 1 < argc;
        if ((!strcmp(a, "write") || !strcmp(a, "append")) && two) {
            const char *p = argv[++i], *text = argv[++i];
            int fd = open(p, O_WRONLY | O_CREAT | (strcmp(a, "write") ? O_APPEND : O_TRUNC), 0644);
            int rc = fd < 0 ? -1 : (int)write(fd, text, strlen(text));
            if (fd >= 0) close(fd);
            done(a, rc);
        } else if (!strcmp(a, "read") && one) {
            char buf[4096];
            int fd = open(argv[++i], O_RDONLY);
            ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
            if (fd >= 0) close(fd);
            if (n < 0) { done(a, -1); continue; }
            buf[n] = 0;
            for (ssize_t k = 0; k < n; k++) if (buf[k] == '\n') buf[k] = ' ';
            printf("read OK [%s]\n", buf);
        } else if (!strcmp(a, "unlink") && one) done(a, unlink(argv[++i]));
        else if (!strcmp(a, "rename") && two) { i += 2; done(a, rename(argv[i - 1], argv[i])); }
        else if (!strcmp(a, "symlink") && two) { i += 2; done(a, symlink(argv[i - 1], argv[i])); }
        else if (!strcmp(a, "link") && two) { i += 2; done(a, link(argv[i - 1], argv[i])); }
        else if (!strcmp(a, "chmod") && two) { i += 2; done(a, chmod(argv[i - 1], (mode_t)strtol(argv[i], NULL, 8))); }
        else if (!strcmp(a, "mkdir") && one) done(a, mkdir(argv[++i], 0755));
        else if (!strcmp(a, "rmdir") && one) done(a, rmdir(argv[++i]));
        else if (!strcmp(a, "mkfifo") && one) done(a, mkfifo(argv[++i], 0644));
        else if (!strcmp(a, "sleep") && one) { sleep((unsigned)atoi(argv[++i])); printf("sleep OK\n"); }
        else { printf("%s ERR EINVAL\n", a); }
    }
    return 0;
}
