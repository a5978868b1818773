/* A native child for the sandbox tests: does each action it is given and prints one line per
 * action, "OK <detail>" or "ERR <errno name>", so the test can judge from the host side what a
 * program the audit hooks cannot see managed to do.
 *   native_probe read PATH | write PATH TEXT | append PATH TEXT | create PATH | chmod PATH OCTAL
 *                | unix PATH | tcp PORT | list PATH | exec PATH (run it with no arguments: "exec OK
 *                <exit status>" or "exec ERR <errno of execve>") | ... (several actions in a row) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void err(const char *action) { printf("%s ERR %s\n", action, strerrorname_np(errno)); }

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN); /* a listener that closes at once must not end the probe */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "read") && i + 1 < argc) {
            const char *p = argv[++i];
            int fd = open(p, O_RDONLY);
            if (fd < 0) { err(a); continue; }
            char buf[4096];
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n < 0) { err(a); continue; }
            buf[n] = 0;
            for (ssize_t k = 0; k < n; k++) if (buf[k] == '\n') buf[k] = ' ';
            printf("read OK %zd [%s]\n", n, buf);
        } else if ((!strcmp(a, "write") || !strcmp(a, "append")) && i + 2 < argc) {
            const char *p = argv[++i], *text = argv[++i];
            int flags = O_WRONLY | O_CREAT | (strcmp(a, "write") ? O_APPEND : O_TRUNC);
            int fd = open(p, flags, 0644);
            if (fd < 0) { err(a); continue; }
            ssize_t n = write(fd, text, strlen(text));
            close(fd);
            if (n < 0) { err(a); continue; }
            printf("%s OK %zd\n", a, n);
        } else if (!strcmp(a, "create") && i + 1 < argc) {
            int fd = open(argv[++i], O_WRONLY | O_CREAT | O_EXCL, 0755);
            if (fd < 0) { err(a); continue; }
            close(fd);
            printf("create OK\n");
        } else if (!strcmp(a, "chmod") && i + 2 < argc) {
            const char *p = argv[++i];
            mode_t m = (mode_t)strtol(argv[++i], NULL, 8);
            if (chmod(p, m) < 0) { err(a); continue; }
            printf("chmod OK\n");
        } else if (!strcmp(a, "unix") && i + 1 < argc) {
            int s = socket(AF_UNIX, SOCK_STREAM, 0);
            struct sockaddr_un sa = {.sun_family = AF_UNIX};
            strncpy(sa.sun_path, argv[++i], sizeof sa.sun_path - 1);
            if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) { err(a); close(s); continue; }
            (void)!write(s, "probe\n", 6); /* connected is the answer; the listener may close at once */
            close(s);
            printf("unix OK\n");
        } else if (!strcmp(a, "tcp") && i + 1 < argc) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[++i]))};
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) { err(a); close(s); continue; }
            (void)!write(s, "probe\n", 6);
            close(s);
            printf("tcp OK\n");
        } else if (!strcmp(a, "list") && i + 1 < argc) {
            DIR *d = opendir(argv[++i]);
            if (!d) { err(a); continue; }
            int n = 0;
            while (readdir(d)) n++;
            closedir(d);
            printf("list OK %d\n", n);
        } else if (!strcmp(a, "exec") && i + 1 < argc) {
            const char *p = argv[++i];
            int fds[2];
            if (pipe2(fds, O_CLOEXEC) < 0) { err(a); continue; }
            pid_t pid = fork();
            if (pid < 0) { err(a); close(fds[0]); close(fds[1]); continue; }
            if (pid == 0) {
                close(fds[0]);
                execl(p, p, (char *)NULL);
                int e = errno; /* only reached when execve failed: tell the parent why */
                if (write(fds[1], &e, sizeof e) < 0) _exit(126);
                _exit(127);
            }
            close(fds[1]);
            int e = 0, status = 0;
            ssize_t got = read(fds[0], &e, sizeof e);
            close(fds[0]);
            waitpid(pid, &status, 0);
            if (got == (ssize_t)sizeof e) { errno = e; err(a); continue; }
            printf("exec OK %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        } else if (!strcmp(a, "environ") && i + 1 < argc) {
            /* Search every /proc/PID/environ this process can read for a needle. */
            const char *needle = argv[++i];
            DIR *d = opendir("/proc");
            int found = 0, seen = 0;
            struct dirent *e;
            while (d && (e = readdir(d))) {
                if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
                char path[300], buf[65536];
                snprintf(path, sizeof path, "/proc/%s/environ", e->d_name);
                int fd = open(path, O_RDONLY);
                if (fd < 0) continue;
                ssize_t n = read(fd, buf, sizeof buf - 1);
                close(fd);
                if (n <= 0) continue;
                seen++;
                buf[n] = 0;
                for (ssize_t k = 0; k < n; k++) if (!buf[k]) buf[k] = '\n';
                if (strstr(buf, needle)) found++;
            }
            if (d) closedir(d);
            printf("environ OK seen=%d found=%d\n", seen, found);
        } else {
            printf("%s ERR usage\n", a);
        }
    }
    return 0;
}
