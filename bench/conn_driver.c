/* Load generator for bench/probes.py, loopback only, bounded in time and count; built by
 * bench/probes.py with the system C compiler.
 *   conn_driver SECONDS [conn [PORT]]      short TCP connections (one accepting thread, one
 *                                          connecting loop): prints connections per second
 *   conn_driver SECONDS pingpong [PORT]    one byte back and forth over one TCP connection
 *                                          between two threads (every round trip: 2 writes,
 *                                          2 reads, 2 wake-ups): prints round trips per second
 * The server listens on 127.0.0.1:PORT (default: a port the kernel picks), as a service on a
 * fixed port does; its clients use ephemeral ports. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int srv;

static void *acceptor(void *arg) {
    (void)arg;
    for (;;) {
        int c = accept(srv, NULL, NULL);
        if (c < 0)
            return NULL;
        close(c);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int peer;

static void *echo(void *arg) {
    (void)arg;
    char b;
    while (read(peer, &b, 1) == 1)
        if (write(peer, &b, 1) != 1)
            break;
    return NULL;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    int pingpong = argc > 2 && argv[2][0] == 'p';
    int port = argc > 3 ? atoi(argv[3]) : 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons(port > 0 && port < 65536 ? port : 0)};
    socklen_t len = sizeof(a);
    int one = 1;
    srv = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(srv, (struct sockaddr *)&a, sizeof(a)) || listen(srv, 4096) ||
        getsockname(srv, (struct sockaddr *)&a, &len)) {
        perror("listen");
        return 1;
    }
    pthread_t t;
    long n = 0;
    if (pingpong) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof(a)) || (peer = accept(srv, NULL, NULL)) < 0) {
            perror("connect");
            return 1;
        }
        pthread_create(&t, NULL, echo, NULL);
        char b = 'x';
        double start = now(), end = start + seconds;
        while (n < 500000000 && (n % 64 || now() < end)) {
            if (write(c, &b, 1) != 1 || read(c, &b, 1) != 1)
                break;
            n++;
        }
        printf("%.1f\n", n / (now() - start));
        close(c);
        return 0;
    }
    pthread_create(&t, NULL, acceptor, NULL);
    double start = now(), end = start + seconds;
    while (now() < end && n < 50000000) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof(a)) == 0)
            n++;
        close(c);
    }
    printf("%.1f\n", n / (now() - start));
    return 0;
}
