/* A systemd-style child for the liveness benchmarks.
 *
 *   hangchild hang FILE   append "S <ns>" at start, send READY=1, beat 5 times 20 ms apart,
 *                         append "B <ns>" at the last beat, then hang (no more beats;
 *                         SIGUSR2, the report request, is handled and changes nothing).
 *   hangchild beat        send READY=1, then WATCHDOG=1 every 100 ms for ever.
 *
 * Times are CLOCK_MONOTONIC nanoseconds. NOTIFY_SOCKET may be a path or "@abstract".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <stddef.h>
#include <signal.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fd = -1;
static struct sockaddr_un addr;
static socklen_t addrlen;

static void notify(const char *msg) {
    sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&addr, addrlen);
}

static void record(const char *path, char tag) {
    char line[64];
    int n = snprintf(line, sizeof line, "%c %lld\n", tag, now_ns());
    int out = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (out >= 0) {
        if (write(out, line, (size_t)n) < 0) { /* nothing to do */ }
        close(out);
    }
}

static void on_report(int sig) {
    (void)sig; /* a real program would write its report here; this one keeps hanging */
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    const char *sock = getenv("NOTIFY_SOCKET");
    if (argc < 2 || !sock || strlen(sock) >= sizeof addr.sun_path) return 2;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, sock);
    addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sock));
    if (sock[0] == '@') addr.sun_path[0] = '\0';
    if (strcmp(argv[1], "hang") == 0 && argc >= 3) {
        signal(SIGUSR2, on_report);
        record(argv[2], 'S');
        notify("READY=1");
        for (int i = 0; i < 5; i++) {
            notify("WATCHDOG=1");
            if (i < 4) nap_ms(20);
        }
        record(argv[2], 'B');
        for (;;) pause();
    }
    notify("READY=1");
    for (;;) {
        notify("WATCHDOG=1");
        nap_ms(100);
    }
}
