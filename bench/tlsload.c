// tlsload: the TLS load side of bench/tls.py (compare's loadgen speaks plain TCP only).
//
//   tlsload echo HOST PORT CONNS SECONDS [SIZE]   CONNS connections, each sends SIZE bytes
//                                                 (default 64, a line) and waits for the
//                                                 echo, for SECONDS after a 1 s warm-up
//   tlsload hs   HOST PORT CONCURRENCY COUNT      COUNT new connections, CONCURRENCY at a
//                                                 time: connect, full handshake, one byte
//                                                 echoed (the server finished its side),
//                                                 close
//
// Prints one JSON object: the rate, and this process's own CPU seconds per wall second
// (cpu_load: 1.0 would be one core saturated; well below it means the load side is not the
// bottleneck). Blocking sockets and one thread per connection: simple, and the OpenSSL work
// of a client is small next to an interpreted server's. No session resumption, no
// certificate verification (the server's certificate is a throwaway).
//
// Build: cc -O2 -pthread -o tlsload tlsload.c -lssl -lcrypto   (bench/tls.py does it)
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static SSL_CTX *ctx;
static struct sockaddr_in addr;
static atomic_long done_count, failures;
static atomic_int measuring, stopping;
static long target;
static int msg_size = 64;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static SSL *open_tls(int *fd_out) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return NULL;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    close(fd);
    return NULL;
  }
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) != 1) {
    SSL_free(ssl);
    close(fd);
    return NULL;
  }
  *fd_out = fd;
  return ssl;
}

static int read_full(SSL *ssl, char *buf, int n) {
  int got = 0;
  while (got < n) {
    int r = SSL_read(ssl, buf + got, n - got);
    if (r <= 0) return -1;
    got += r;
  }
  return 0;
}

static void *echo_worker(void *arg) {
  (void)arg;
  int fd;
  SSL *ssl = open_tls(&fd);
  if (!ssl) {
    atomic_fetch_add(&failures, 1);
    return NULL;
  }
  char out[65536], in[65536];
  memset(out, 'x', msg_size - 1);
  out[msg_size - 1] = '\n';
  while (!atomic_load(&stopping)) {
    if (SSL_write(ssl, out, msg_size) != msg_size || read_full(ssl, in, msg_size) < 0) {
      atomic_fetch_add(&failures, 1);
      break;
    }
    if (atomic_load(&measuring)) atomic_fetch_add(&done_count, 1);
  }
  SSL_free(ssl);
  close(fd);
  return NULL;
}

static void *hs_worker(void *arg) {
  (void)arg;
  char b = 'x';
  while (atomic_fetch_add(&done_count, 1) < target) {
    int fd;
    SSL *ssl = open_tls(&fd);
    if (!ssl || SSL_write(ssl, &b, 1) != 1 || read_full(ssl, &b, 1) < 0) {
      atomic_fetch_add(&failures, 1);
      if (ssl) {
        SSL_free(ssl);
        close(fd);
      }
      continue;
    }
    SSL_free(ssl);  // no close_notify: a client that leaves, as most do
    close(fd);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: tlsload echo HOST PORT CONNS SECONDS [SIZE]\n"
                    "       tlsload hs HOST PORT CONCURRENCY COUNT\n");
    return 2;
  }
  const char *mode = argv[1];
  addr.sin_family = AF_INET;
  addr.sin_port = htons(atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) {
    fprintf(stderr, "tlsload: %s: not an IPv4 address\n", argv[2]);
    return 2;
  }
  int n = atoi(argv[4]);
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  pthread_t *threads = calloc(n, sizeof *threads);
  if (strcmp(mode, "echo") == 0) {
    double seconds = atof(argv[5]);
    if (argc > 6) msg_size = atoi(argv[6]);
    if (msg_size < 1 || msg_size > 65536) return 2;
    for (int i = 0; i < n; i++) pthread_create(&threads[i], NULL, echo_worker, NULL);
    sleep(1);  // handshakes and warm-up, not measured
    double c0 = cpu_self(), t0 = now();
    atomic_store(&measuring, 1);
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&measuring, 0);
    double t1 = now(), c1 = cpu_self();
    long count = atomic_load(&done_count);
    atomic_store(&stopping, 1);
    for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
    printf("{\"mode\": \"echo\", \"conns\": %d, \"size\": %d, \"seconds\": %.3f, "
           "\"messages\": %ld, \"msgs_per_s\": %.1f, \"failures\": %ld, \"cpu_load\": %.3f}\n",
           n, msg_size, t1 - t0, count, count / (t1 - t0), atomic_load(&failures),
           (c1 - c0) / (t1 - t0));
  } else if (strcmp(mode, "hs") == 0) {
    target = atol(argv[5]);
    double c0 = cpu_self(), t0 = now();
    for (int i = 0; i < n; i++) pthread_create(&threads[i], NULL, hs_worker, NULL);
    for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
    double t1 = now(), c1 = cpu_self();
    long ok = target - atomic_load(&failures);
    printf("{\"mode\": \"hs\", \"concurrency\": %d, \"count\": %ld, \"seconds\": %.3f, "
           "\"handshakes_per_s\": %.1f, \"failures\": %ld, \"cpu_load\": %.3f}\n",
           n, target, t1 - t0, ok / (t1 - t0), atomic_load(&failures), (c1 - c0) / (t1 - t0));
  } else {
    fprintf(stderr, "tlsload: unknown mode %s\n", mode);
    return 2;
  }
  return 0;
}
