/* Runs inside a sandbox: call syscall NR (all arguments 0) COUNT times in a tight loop and
 * print how many calls failed with the errno the first one got.
 *
 *     looper NR COUNT [wait] [vary] [until]
 *
 * With "vary" the first argument is the loop counter, so no two calls are identical.
 * With "wait": print "ready", block until a line arrives on stdin, loop, print the result,
 * block again until the next line (or EOF), then exit, so the caller can look at the
 * supervisor before and after the flood. With "until" (and "wait") COUNT is ignored: the
 * loop goes on until the next line arrives, so the flood lasts as long as the caller needs.
 * Output: "done FAILED errno ERRNO end".
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void wait_line(void) {
    char c;
    while (read(0, &c, 1) == 1 && c != '\n')
        ;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: looper NR COUNT [wait] [vary]\n");
        return 2;
    }
    long nr = atol(argv[1]);
    long count = atol(argv[2]);
    int handshake = 0, vary = 0, until = 0;
    for (int i = 3; i < argc; i++) {
        handshake |= strcmp(argv[i], "wait") == 0;
        vary |= strcmp(argv[i], "vary") == 0;
        until |= strcmp(argv[i], "until") == 0;
    }
    until &= handshake;
    if (handshake) {
        printf("ready\n");
        fflush(stdout);
        wait_line();
    }
    long failed = 0;
    int first = 0;
    struct pollfd in = {.fd = 0, .events = POLLIN};
    for (long i = 0; until || i < count; i++) {
        if (until && i % 1024 == 0 && poll(&in, 1, 0) > 0) {
            wait_line();
            break;
        }
        long r = syscall(nr, vary ? i : 0L, 0L, 0L, 0L, 0L, 0L);
        if (r == -1) {
            if (first == 0)
                first = errno;
            if (errno == first)
                failed++;
        }
    }
    printf("done %ld errno %d end\n", failed, first);
    fflush(stdout);
    if (handshake)
        wait_line();
    return 0;
}
