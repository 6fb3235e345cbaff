/*
 * Crash-loop child for the crash-to-restart latency benchmark.
 *
 * On start it appends "S <CLOCK_MONOTONIC ns>\n" to the output file, sleeps
 * ~50 ms (long enough for every supervisor to consider it running), appends
 * "E <CLOCK_MONOTONIC ns>\n" and exits with status 1.
 *
 * The output file is argv[1], or the HLBENCH_OUT environment variable.
 * Each line is written with a single write(2) on an O_APPEND descriptor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL +
           (unsigned long long)ts.tv_nsec;
}

static void mark(int fd, char tag)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%c %llu\n", tag, now_ns());
    if (n > 0) {
        ssize_t w;
        do {
            w = write(fd, buf, (size_t)n);
        } while (w < 0 && errno == EINTR);
    }
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : getenv("HLBENCH_OUT");
    if (path == NULL || *path == '\0')
        _exit(2);

    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        _exit(3);

    mark(fd, 'S');

    struct timespec nap = {0, 50 * 1000 * 1000};
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR)
        ;

    mark(fd, 'E');
    _exit(1);
}
