/* Load generator for bench/probes.py: short TCP connections on loopback for N seconds,
 * one accepting thread, one connecting loop; prints connections per second. Loopback only,
 * bounded in time and count. Built by bench/probes.py with the system C compiler. */
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

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
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
    pthread_create(&t, NULL, acceptor, NULL);
    long n = 0;
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
